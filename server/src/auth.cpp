// See auth.hpp for the formats and the throttle rule.
#include "fieldsync/server/auth.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <climits>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace fieldsync::server {

namespace {

constexpr std::string_view scheme = "pbkdf2-sha256";
constexpr std::size_t salt_bytes = 16;
constexpr std::size_t hash_bytes = 32;
constexpr int max_iterations = 10'000'000;

std::string to_hex(const std::uint8_t* p, std::size_t n) {
    static constexpr char digits[] = "0123456789abcdef";
    std::string out(n * 2, '\0');
    for (std::size_t i = 0; i < n; ++i) {
        out[2 * i] = digits[p[i] >> 4];
        out[2 * i + 1] = digits[p[i] & 0x0f];
    }
    return out;
}

int hex_digit(char c) noexcept {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

std::optional<std::vector<std::uint8_t>> from_hex(std::string_view s) {
    if (s.empty() || s.size() % 2 != 0) return std::nullopt;
    std::vector<std::uint8_t> out(s.size() / 2);
    for (std::size_t i = 0; i < out.size(); ++i) {
        const int hi = hex_digit(s[2 * i]), lo = hex_digit(s[2 * i + 1]);
        if (hi < 0 || lo < 0) return std::nullopt;
        out[i] = static_cast<std::uint8_t>(hi << 4 | lo);
    }
    return out;
}

bool pbkdf2(std::string_view password, const std::uint8_t* salt, std::size_t salt_len,
            int iterations, std::uint8_t* out, std::size_t out_len) noexcept {
    if (password.size() > static_cast<std::size_t>(INT_MAX)) return false;
    return PKCS5_PBKDF2_HMAC(password.data(), static_cast<int>(password.size()), salt,
                             static_cast<int>(salt_len), iterations, EVP_sha256(),
                             static_cast<int>(out_len), out) == 1;
}

void random_bytes(std::uint8_t* p, std::size_t n) {
    if (RAND_bytes(p, static_cast<int>(n)) != 1)
        throw std::runtime_error("the random generator failed (RAND_bytes)");
}

}  // namespace

std::string hash_password(std::string_view password, int iterations) {
    if (iterations < 1 || iterations > max_iterations)
        throw std::invalid_argument("hash_password: iterations must be in 1..10000000");
    std::array<std::uint8_t, salt_bytes> salt{};
    random_bytes(salt.data(), salt.size());
    std::array<std::uint8_t, hash_bytes> hash{};
    if (!pbkdf2(password, salt.data(), salt.size(), iterations, hash.data(), hash.size()))
        throw std::runtime_error("hash_password: PBKDF2 failed");
    return std::string(scheme) + "$" + std::to_string(iterations) + "$" +
           to_hex(salt.data(), salt.size()) + "$" + to_hex(hash.data(), hash.size());
}

bool verify_password(std::string_view password, std::string_view stored) {
    // scheme$iterations$salt$hash: exactly four parts.
    std::array<std::string_view, 4> parts;
    std::size_t n = 0;
    for (std::size_t start = 0;;) {
        const std::size_t end = stored.find('$', start);
        if (n == parts.size()) return false;
        parts[n++] = stored.substr(start, end == std::string_view::npos ? end : end - start);
        if (end == std::string_view::npos) break;
        start = end + 1;
    }
    if (n != parts.size() || parts[0] != scheme) return false;

    int iterations = 0;
    const auto& it = parts[1];
    if (it.empty() || it.size() > 8 || it[0] == '0') return false;
    if (!std::all_of(it.begin(), it.end(), [](char c) { return c >= '0' && c <= '9'; }))
        return false;
    auto [end, ec] = std::from_chars(it.data(), it.data() + it.size(), iterations);
    if (ec != std::errc{} || end != it.data() + it.size()) return false;
    if (iterations < 1 || iterations > max_iterations) return false;

    auto salt = from_hex(parts[2]);
    auto expected = from_hex(parts[3]);
    if (!salt || salt->size() > 64) return false;
    if (!expected || expected->size() < 16 || expected->size() > 64) return false;

    std::vector<std::uint8_t> actual(expected->size());
    if (!pbkdf2(password, salt->data(), salt->size(), iterations, actual.data(), actual.size()))
        return false;
    return CRYPTO_memcmp(actual.data(), expected->data(), actual.size()) == 0;
}

std::string new_token() {
    std::array<std::uint8_t, 32> raw{};
    random_bytes(raw.data(), raw.size());
    static constexpr char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    std::string out;
    out.reserve(43);
    std::size_t i = 0;
    for (; i + 3 <= raw.size(); i += 3) {
        const std::uint32_t v = std::uint32_t{raw[i]} << 16 | std::uint32_t{raw[i + 1]} << 8 |
                                std::uint32_t{raw[i + 2]};
        out += alphabet[v >> 18 & 63];
        out += alphabet[v >> 12 & 63];
        out += alphabet[v >> 6 & 63];
        out += alphabet[v & 63];
    }
    // 32 = 10 * 3 + 2: two bytes left, three characters, no padding.
    const std::uint32_t v = std::uint32_t{raw[i]} << 16 | std::uint32_t{raw[i + 1]} << 8;
    out += alphabet[v >> 18 & 63];
    out += alphabet[v >> 12 & 63];
    out += alphabet[v >> 6 & 63];
    return out;
}

std::string token_hash(std::string_view token) {
    std::array<std::uint8_t, EVP_MAX_MD_SIZE> md{};
    unsigned int len = 0;
    if (EVP_Digest(token.data(), token.size(), md.data(), &len, EVP_sha256(), nullptr) != 1)
        throw std::runtime_error("token_hash: SHA-256 failed");
    return to_hex(md.data(), len);
}

// --- LoginThrottle ---------------------------------------------------------------------------

std::int64_t LoginThrottle::delay(unsigned level) const noexcept {
    std::int64_t d = m_options.base_delay_ms;
    for (unsigned i = 1; i < level && d < m_options.max_delay_ms; ++i)
        d *= 2;
    return std::min(d, m_options.max_delay_ms);
}

bool LoginThrottle::allow(std::string_view key, std::int64_t now_ms) const {
    return retry_after_ms(key, now_ms) == 0;
}

std::int64_t LoginThrottle::retry_after_ms(std::string_view key, std::int64_t now_ms) const {
    std::lock_guard lock(m_mutex);
    auto it = m_entries.find(key);
    if (it == m_entries.end() || now_ms >= it->second.locked_until) return 0;
    return it->second.locked_until - now_ms;
}

void LoginThrottle::record_failure(std::string_view key, std::int64_t now_ms) {
    std::lock_guard lock(m_mutex);
    auto it = m_entries.find(key);
    if (it == m_entries.end()) it = m_entries.emplace(std::string(key), Entry{}).first;
    Entry& e = it->second;
    // Cooled down: a whole window passed since the last lock ended.
    if (e.level > 0 && now_ms >= e.locked_until + m_options.window_ms) e.level = 0;
    // Failures older than the window no longer count.
    const std::int64_t horizon = now_ms - m_options.window_ms;
    e.failures.erase(e.failures.begin(), std::find_if(e.failures.begin(), e.failures.end(),
                                                      [&](std::int64_t t) { return t > horizon; }));
    e.failures.push_back(now_ms);
    if (e.failures.size() > std::max<std::size_t>(m_options.max_failures, 1))
        e.failures.erase(e.failures.begin());
    if (e.level > 0 || e.failures.size() >= m_options.max_failures) {
        ++e.level;
        e.locked_until = std::max(e.locked_until, now_ms + delay(e.level));
    }
    // Sweep when over max_keys, but not again on every failure while most keys are still hot:
    // only once the map doubled since the last sweep, or a window has passed (keys cool down).
    if (m_entries.size() > m_options.max_keys &&
        (m_entries.size() > m_sweep_at || now_ms - m_last_sweep_ms >= m_options.window_ms))
        sweep(now_ms);
}

void LoginThrottle::record_success(std::string_view key) {
    std::lock_guard lock(m_mutex);
    if (auto it = m_entries.find(key); it != m_entries.end()) m_entries.erase(it);
}

std::size_t LoginThrottle::size() const {
    std::lock_guard lock(m_mutex);
    return m_entries.size();
}

void LoginThrottle::sweep(std::int64_t now_ms) {
    const std::int64_t horizon = now_ms - m_options.window_ms;
    for (auto it = m_entries.begin(); it != m_entries.end();) {
        const Entry& e = it->second;
        const bool cool = now_ms >= e.locked_until + m_options.window_ms &&
                          (e.failures.empty() || e.failures.back() <= horizon);
        it = cool ? m_entries.erase(it) : std::next(it);
    }
    m_sweep_at = 2 * m_entries.size();
    m_last_sweep_ms = now_ms;
}

}  // namespace fieldsync::server
