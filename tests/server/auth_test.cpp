// Password hashes, tokens and the login throttle (auth.hpp). The throttle runs on a fake
// clock: plain integers passed in.
#include <doctest/doctest.h>

#include <cstdint>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "fieldsync/server/auth.hpp"

using namespace fieldsync::server;

namespace {

// A low iteration count keeps the suite fast; the format and the check are the same.
constexpr int fast = 1000;

std::vector<std::string> split(const std::string& s) {
    std::vector<std::string> out;
    std::size_t start = 0;
    for (;;) {
        auto end = s.find('$', start);
        out.push_back(s.substr(start, end == std::string::npos ? end : end - start));
        if (end == std::string::npos) return out;
        start = end + 1;
    }
}

bool is_lower_hex(const std::string& s) {
    return s.find_first_not_of("0123456789abcdef") == std::string::npos;
}

}  // namespace

TEST_CASE("Auth: a password hash verifies the right password only") {
    const std::string h = hash_password("correct horse", fast);
    auto parts = split(h);
    REQUIRE(parts.size() == 4);
    CHECK(parts[0] == "pbkdf2-sha256");
    CHECK(parts[1] == "1000");
    CHECK(parts[2].size() == 32);  // 16-byte salt
    CHECK(parts[3].size() == 64);  // 32-byte hash
    CHECK(is_lower_hex(parts[2]));
    CHECK(is_lower_hex(parts[3]));

    CHECK(verify_password("correct horse", h));
    CHECK_FALSE(verify_password("correct horse ", h));
    CHECK_FALSE(verify_password("Correct horse", h));
    CHECK_FALSE(verify_password("", h));

    // Empty and non-ASCII passwords work too.
    CHECK(verify_password("", hash_password("", fast)));
    CHECK(verify_password("密码-нууц үг", hash_password("密码-нууц үг", fast)));
}

TEST_CASE("Auth: the default hash uses 210000 iterations") {
    const std::string h = hash_password("pw");
    CHECK(split(h)[1] == "210000");
    CHECK(verify_password("pw", h));
}

TEST_CASE("Auth: the same password hashes differently each time (random salt)") {
    const std::string a = hash_password("same", fast);
    const std::string b = hash_password("same", fast);
    CHECK(a != b);
    CHECK(split(a)[2] != split(b)[2]);
    CHECK(verify_password("same", a));
    CHECK(verify_password("same", b));
}

TEST_CASE("Auth: a known PBKDF2-HMAC-SHA256 vector verifies") {
    // RFC 7914 §11: PBKDF2-HMAC-SHA256, P="passwd", S="salt", c=1, dkLen=64.
    const std::string stored =
        "pbkdf2-sha256$1$73616c74$"
        "55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc"
        "49ca9cccf179b645991664b39d77ef317c71b845b1e30bd509112041d3a19783";
    CHECK(verify_password("passwd", stored));
    CHECK_FALSE(verify_password("passwd2", stored));
}

TEST_CASE("Auth: malformed stored hashes never verify") {
    const std::string good = hash_password("pw", fast);
    const auto p = split(good);
    const std::vector<std::string> bad = {
        "",
        "pw",
        "pbkdf2-sha256",
        "pbkdf2-sha256$1000$" + p[2],
        "pbkdf2-sha1$1000$" + p[2] + "$" + p[3],
        "pbkdf2-sha256$1000$" + p[2] + "$" + p[3] + "$extra",
        "pbkdf2-sha256$$" + p[2] + "$" + p[3],
        "pbkdf2-sha256$0$" + p[2] + "$" + p[3],
        "pbkdf2-sha256$-5$" + p[2] + "$" + p[3],
        "pbkdf2-sha256$01000$" + p[2] + "$" + p[3],
        "pbkdf2-sha256$1e3$" + p[2] + "$" + p[3],
        "pbkdf2-sha256$99999999999$" + p[2] + "$" + p[3],
        "pbkdf2-sha256$1000$$" + p[3],
        "pbkdf2-sha256$1000$" + p[2] + "$",
        "pbkdf2-sha256$1000$" + p[2] + "x$" + p[3],
        "pbkdf2-sha256$1000$" + p[2] + "$" + p[3].substr(1),
        "pbkdf2-sha256$1000$" + p[2] + "$" + p[3].substr(0, 30),  // 15 bytes: too short
        "pbkdf2-sha256$1000$" + p[2] + "$zz" + p[3].substr(2),
        "pbkdf2-sha256$1001$" + p[2] + "$" + p[3],  // wrong parameters: no match
    };
    for (const auto& s : bad) {
        CAPTURE(s);
        CHECK_FALSE(verify_password("pw", s));
    }
    CHECK(verify_password("pw", good));
    // Upper-case hex is accepted (it is the same hash).
    std::string upper = good;
    for (std::size_t i = good.rfind('$'); i < upper.size(); ++i)
        if (upper[i] >= 'a' && upper[i] <= 'f') upper[i] = static_cast<char>(upper[i] - 32);
    CHECK(verify_password("pw", upper));

    CHECK_THROWS_AS(hash_password("pw", 0), std::invalid_argument);
}

TEST_CASE("Auth: tokens are 43 base64url characters, unique, and stored as SHA-256 hex") {
    std::set<std::string> seen;
    for (int i = 0; i < 200; ++i) {
        const std::string t = new_token();
        CHECK(t.size() == 43);
        CHECK(t.find_first_not_of(
                  "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") ==
              std::string::npos);
        seen.insert(t);
    }
    CHECK(seen.size() == 200);

    const std::string h = token_hash("abc");
    CHECK(h == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    CHECK(token_hash("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    const std::string t = new_token();
    CHECK(token_hash(t) == token_hash(t));
    CHECK(token_hash(t).size() == 64);
    CHECK(is_lower_hex(token_hash(t)));
    CHECK(token_hash(t) != token_hash(new_token()));
}

TEST_CASE("Auth: the login throttle locks after 5 failures, for longer each time") {
    LoginThrottle th;  // defaults: 5 failures / 15 min, 30 s doubling up to 15 min
    const std::string key = "user:ana";
    std::int64_t now = 1'000'000;

    for (int i = 0; i < 4; ++i) {
        CHECK(th.allow(key, now));
        th.record_failure(key, now);
        now += 1000;
    }
    CHECK(th.allow(key, now));
    th.record_failure(key, now);  // 5th
    CHECK_FALSE(th.allow(key, now));
    CHECK(th.retry_after_ms(key, now) == 30'000);
    CHECK_FALSE(th.allow(key, now + 29'999));
    CHECK(th.allow(key, now + 30'000));

    // Other keys are unaffected.
    CHECK(th.allow("user:bo", now));
    CHECK(th.allow("peer:10.0.0.7", now));

    // The next failure after the lock locks again, twice as long: 60 s, 120 s, ...
    std::int64_t expected = 60'000;
    for (int i = 0; i < 8; ++i) {
        now += th.retry_after_ms(key, now);
        CHECK(th.allow(key, now));
        th.record_failure(key, now);
        CHECK(th.retry_after_ms(key, now) == std::min<std::int64_t>(expected, 15 * 60'000));
        expected *= 2;
    }
    // Capped at 15 minutes.
    CHECK(th.retry_after_ms(key, now) == 15 * 60'000);

    SUBCASE("a success forgets everything") {
        th.record_success(key);
        CHECK(th.allow(key, now));
        for (int i = 0; i < 4; ++i)
            th.record_failure(key, now);
        CHECK(th.allow(key, now));
    }
    SUBCASE("after a quiet window following the lock, the key is cool again") {
        now += th.retry_after_ms(key, now) + 15 * 60'000;
        th.record_failure(key, now);
        CHECK(th.allow(key, now));  // one failure of a fresh count
    }
}

TEST_CASE("Auth: failures spread over more than the window do not lock") {
    LoginThrottle th;
    const std::string key = "peer:10.1.2.3";
    std::int64_t now = 0;
    for (int i = 0; i < 20; ++i) {
        CHECK(th.allow(key, now));
        th.record_failure(key, now);
        now += 4 * 60'000;  // 4 per 16 minutes: never 5 within 15
    }
    CHECK(th.allow(key, now));
}

TEST_CASE("Auth: throttle options and sweeping of cool keys") {
    LoginThrottleOptions o;
    o.max_failures = 2;
    o.window_ms = 1000;
    o.base_delay_ms = 100;
    o.max_delay_ms = 250;
    o.max_keys = 10;
    LoginThrottle th(o);
    th.record_failure("k", 0);
    CHECK(th.allow("k", 0));
    th.record_failure("k", 10);
    CHECK(th.retry_after_ms("k", 10) == 100);
    th.record_failure("k", 110);
    CHECK(th.retry_after_ms("k", 110) == 200);
    th.record_failure("k", 310);
    CHECK(th.retry_after_ms("k", 310) == 250);

    // Many one-off keys long ago are swept once the map grows past max_keys.
    for (int i = 0; i < 30; ++i)
        th.record_failure("old" + std::to_string(i), 0);
    CHECK(th.size() > 10);
    th.record_failure("new", 1'000'000);
    CHECK(th.size() <= 2);  // "new" (and nothing cool survives)
    CHECK(th.allow("k", 1'000'000));
}

TEST_CASE("Auth: the throttle is safe to use from several threads") {
    LoginThrottle th;
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
        threads.emplace_back([&th, t] {
            for (int i = 0; i < 500; ++i) {
                const std::string key = "user:" + std::to_string((t * 500 + i) % 7);
                (void)th.allow(key, i);
                th.record_failure(key, i);
                if (i % 50 == 0) th.record_success(key);
            }
        });
    }
    for (auto& t : threads)
        t.join();
    CHECK(th.size() <= 7);
}
