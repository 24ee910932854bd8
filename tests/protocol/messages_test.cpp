// Unit tests of the wire messages (SPEC.md §5): round trips, deterministic encoding, and the
// decoder's refusals, each with the path it must name.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "fieldsync/protocol/messages.hpp"

using namespace fieldsync::protocol;

namespace {

// Writes one map key and its value.
void kv(CborWriter& w, std::string_view key, std::string_view text) {
    w.text(key);
    w.text(text);
}
void kv(CborWriter& w, std::string_view key, std::uint64_t v) {
    w.text(key);
    w.uint(v);
}

constexpr std::uint64_t max_u64 = std::numeric_limits<std::uint64_t>::max();

Id128 id_of(std::uint8_t tag, std::uint8_t n) {
    Id128 id;
    id.bytes[0] = tag;
    id.bytes[15] = n;
    return id;
}

HlcTimestamp ts(std::uint64_t ms) {
    return HlcTimestamp::from_parts(ms, 0);
}

// A household with every kind of field state, and "_deleted".
RecordState household() {
    RecordState s;
    s.collection = "households";
    s.id = Id128::parse("0190f3c2-7a1b-7c00-8000-000000000001").value();
    Update u(s, id_of(0xa0, 1), ts(1717000000000), "enumerator-07");
    REQUIRE(u.set("head_name", MergeRule::review, std::string("巴特尔")));
    REQUIRE(u.set("gps", MergeRule::lww, GeoPoint{397234567, 1099876543}));
    REQUIRE(u.add_element("assistance", std::string("lambs_for_ewes")));
    REQUIRE(u.add_to_counter("visit_count", 2));
    return s;
}

// A record with a review conflict and a delete concurrent with an edit.
RecordState conflicted() {
    RecordState base = household();
    RecordState a = base, b = base;
    {
        Update u(a, id_of(0xa0, 2), ts(1717000100000), "bater");
        REQUIRE(u.set("income", MergeRule::review, std::int64_t{4200}));
        u.mark_deleted();
    }
    {
        Update u(b, id_of(0xa0, 3), ts(1717000200000), "chen");
        REQUIRE(u.set("income", MergeRule::review, std::int64_t{3900}));
    }
    REQUIRE(a.join(b));
    return a;
}

std::vector<Message> samples() {
    std::vector<Message> out;
    Hello hello;
    hello.device = id_of(0xd0, 1);
    hello.replica = id_of(0xe0, 1);
    hello.app = "fieldsync-demo/0.1 (android 13)";
    hello.auth = PasswordAuth{"enumerator-07", "s3cret"};
    hello.schema_version = 3;
    hello.cursor = 1200;
    hello.clock = 1717000000123;
    out.push_back(hello);
    hello.auth = TokenAuth{"tok-abc"};
    hello.version = 2;
    hello.min_version = 1;
    out.push_back(hello);

    Welcome welcome;
    welcome.user = "enumerator-07";
    welcome.role = "enumerator";
    welcome.scope = {"ordos/hanggin", "ordos/dalad/shulinzhao"};
    welcome.schema_version = 4;
    welcome.schema = R"({"version":4})";
    welcome.server_time = 1717000000456;
    welcome.token = "tok-abc";
    welcome.limits = {4u << 20, 500};
    out.push_back(welcome);
    welcome.schema.reset();
    welcome.token.reset();
    welcome.scope.clear();
    out.push_back(welcome);

    out.push_back(Push{7, {PushItem{3, household()}, PushItem{4, conflicted()}}});
    out.push_back(PushAck{7,
                          {ItemResult{}, ItemResult{false, "forbidden", "outside your areas"},
                           ItemResult{false, "validation_failed", ""}},
                          1301,
                          1717000000789});
    out.push_back(Pull{1200, 100});
    out.push_back(Changes{1200, 1302, true, {ChangeItem{1301, 3, household()}}});
    out.push_back(Changes{1302, 1302, false, {}});
    out.push_back(Notify{1302, 1303, {ChangeItem{1303, 4, conflicted()}}});
    out.push_back(
        Revoke{1304, {RecordRef{"households", household().id}, RecordRef{"visits", id_of(1, 2)}}});
    out.push_back(DigestRequest{});
    Digest digest{1304, 2, {}};
    digest.digest[0] = 0xab;
    digest.digest[31] = 0x01;
    out.push_back(digest);
    out.push_back(
        ErrorMessage{"validation_failed", "push.items[0].rec.f.income: not an integer", 7, false});
    out.push_back(ErrorMessage{"unsupported_version", "this server speaks protocol 1..1",
                               std::nullopt, true});
    return out;
}

Message decoded(const Bytes& b, const MessageLimits& limits = {}) {
    auto r = decode_message(b, limits);
    if (!r) FAIL(r.error().message);
    return std::move(r).value();
}

Error failure(const Bytes& b, const MessageLimits& limits = {}) {
    auto r = decode_message(b, limits);
    REQUIRE_FALSE(r.ok());
    return r.error();
}

bool starts_with(const std::string& s, const std::string& prefix) {
    return s.rfind(prefix, 0) == 0;
}

// The top-level map of an encoded message as (key, raw key bytes, raw value bytes).
struct RawEntry {
    std::string key;
    Bytes key_bytes;
    Bytes value;
};

Bytes slice(const Bytes& b, std::size_t from, std::size_t to) {
    return Bytes(b.begin() + static_cast<std::ptrdiff_t>(from),
                 b.begin() + static_cast<std::ptrdiff_t>(to));
}

std::vector<RawEntry> split_map(const Bytes& b) {
    CborReader r(b);
    auto n = r.read_map();
    REQUIRE(n.ok());
    std::vector<RawEntry> out;
    for (std::size_t i = 0; i < *n; ++i) {
        RawEntry e;
        const std::size_t k0 = r.position();
        e.key = std::string(r.read_text().value());
        const std::size_t v0 = r.position();
        REQUIRE(r.skip());
        e.key_bytes = slice(b, k0, v0);
        e.value = slice(b, v0, r.position());
        out.push_back(std::move(e));
    }
    return out;
}

Bytes join_map(const std::vector<RawEntry>& entries) {
    CborWriter w;
    w.map(entries.size());
    for (const auto& e : entries) {
        w.raw(e.key_bytes);
        w.raw(e.value);
    }
    return w.take();
}

Bytes text_item(std::string_view s) {
    CborWriter w;
    w.text(s);
    return w.take();
}

Bytes uint_item(std::uint64_t v) {
    CborWriter w;
    w.uint(v);
    return w.take();
}

// Checks that every map in `b` lists its keys in strictly increasing bytewise order of their
// encodings (RFC 8949 §4.2.1) and that `b` holds exactly one item.
void check_canonical(CborReader& r, const Bytes& b) {
    auto it = r.next();
    REQUIRE(it.ok());
    if (it->type == CborType::array) {
        for (std::size_t i = 0; i < it->count; ++i)
            check_canonical(r, b);
    } else if (it->type == CborType::map) {
        Bytes prev;
        for (std::size_t i = 0; i < it->count; ++i) {
            const std::size_t k0 = r.position();
            check_canonical(r, b);
            Bytes key = slice(b, k0, r.position());
            if (i > 0) CHECK(prev < key);
            prev = std::move(key);
            check_canonical(r, b);
        }
    }
}

}  // namespace

TEST_SUITE_BEGIN("Messages");

TEST_CASE("Messages: every type round-trips byte for byte") {
    const auto all = samples();
    std::vector<bool> covered(std::variant_size_v<Message>, false);
    for (const auto& m : all) {
        CAPTURE(message_type(m));
        covered[m.index()] = true;
        const Bytes b = encode_message(m);
        const Message back = decoded(b);
        CHECK(back == m);
        CHECK(encode_message(back) == b);
        CborReader r(b);
        check_canonical(r, b);
        CHECK(r.at_end());
        // The writer overload appends.
        CborWriter w;
        w.uint(1);
        encode_message(w, m);
        CHECK(Bytes(w.data().begin() + 1, w.data().end()) == b);
    }
    CHECK(std::all_of(covered.begin(), covered.end(), [](bool c) { return c; }));
}

TEST_CASE("a change item's pre-encoded state is sent as it is, byte for byte") {
    ChangeItem decoded_form{7, 2, household()};
    ChangeItem stored_form;
    stored_form.seq = 7;
    stored_form.schema_version = 2;
    stored_form.encoded_record = encode_record(household());
    CHECK(encode_message(Changes{0, 7, false, {stored_form}}) ==
          encode_message(Changes{0, 7, false, {decoded_form}}));
    CHECK(encode_message(Notify{0, 7, {stored_form}}) ==
          encode_message(Notify{0, 7, {decoded_form}}));
    auto back = decode_message(encode_message(Changes{0, 7, false, {stored_form}}));
    REQUIRE(back.ok());
    const auto& items = std::get<Changes>(*back).items;
    REQUIRE(items.size() == 1);
    CHECK(items[0] == decoded_form);
    CHECK(items[0].encoded_record.empty());  // never decoded into
}

TEST_CASE("Messages: type names") {
    CHECK(message_type(Hello{}) == "hello");
    CHECK(message_type(PushAck{}) == "push_ack");
    CHECK(message_type(DigestRequest{}) == "digest_request");
    CHECK(message_type(ErrorMessage{}) == "error");
    CHECK(to_hex(encode_message(DigestRequest{})) ==
          "a16174"
          "6e"
          "6469676573745f72657175657374");
}

TEST_CASE("Messages: edge values round-trip") {
    SUBCASE("max integers everywhere") {
        Hello h;
        h.version = max_u64;
        h.min_version = 1;
        h.schema_version = max_u64;
        h.cursor = max_u64;
        h.clock = max_u64;
        h.auth = TokenAuth{""};
        std::vector<Message> ms{h,
                                Pull{max_u64, max_u64},
                                PushAck{max_u64, {}, max_u64, max_u64},
                                Changes{max_u64, max_u64, false, {}},
                                Notify{0, max_u64, {}},
                                Revoke{max_u64, {}},
                                ErrorMessage{"busy", "", max_u64, true}};
        Digest d{max_u64, max_u64, {}};
        d.digest.fill(0xff);
        ms.push_back(d);
        Welcome w;
        w.role = "admin";
        w.version = max_u64;
        w.schema_version = max_u64;
        w.server_time = max_u64;
        w.limits = {max_u64, max_u64};
        ms.push_back(w);
        for (const auto& m : ms) {
            CAPTURE(message_type(m));
            CHECK(decoded(encode_message(m)) == m);
        }
    }
    SUBCASE("empty lists and empty strings") {
        Welcome w;
        w.role = "admin";
        w.schema = "";
        w.token = "";
        std::vector<Message> ms{w, Push{0, {}}, PushAck{0, {}, 0, 0}, Revoke{0, {}},
                                ErrorMessage{"internal", "", std::nullopt, false}};
        for (const auto& m : ms) {
            CAPTURE(message_type(m));
            CHECK(decoded(encode_message(m)) == m);
        }
    }
    SUBCASE("unicode text") {
        Hello h;
        h.app = "田野同步 📋 v1";
        h.auth = PasswordAuth{"巴特尔", "пароль"};
        CHECK(decoded(encode_message(h)) == Message{h});
        Welcome w;
        w.user = "Өлзий";
        w.role = "supervisor";
        w.scope = {"鄂尔多斯市", "杭锦旗"};
        CHECK(decoded(encode_message(w)) == Message{w});
    }
    SUBCASE("v_min is sent only when lower than v") {
        Hello h;
        h.version = 1;
        h.min_version = 1;
        CHECK(to_diagnostic(encode_message(h))->find("v_min") == std::string::npos);
        h.version = 3;
        CHECK(to_diagnostic(encode_message(h))->find("\"v_min\": 1") != std::string::npos);
    }
}

TEST_CASE("Messages: keys in any order are accepted; unknown keys are ignored") {
    for (const auto& m : samples()) {
        CAPTURE(message_type(m));
        const Bytes canonical = encode_message(m);
        auto entries = split_map(canonical);
        SUBCASE("reversed order") {
            std::reverse(entries.begin(), entries.end());
            const Bytes b = join_map(entries);
            CHECK(decoded(b) == m);
            CHECK(encode_message(decoded(b)) == canonical);
        }
        SUBCASE("extra keys of every kind, before and after") {
            CborWriter nested;
            nested.map(2);
            nested.text("x");
            nested.array(2);
            nested.bytes(Bytes{1, 2, 3});
            nested.int64(-5);
            nested.text("y");
            nested.null();
            entries.insert(entries.begin(), RawEntry{"a", text_item("a"), nested.take()});
            entries.push_back(RawEntry{"zz_future", text_item("zz_future"), text_item("later")});
            CHECK(decoded(join_map(entries)) == m);
        }
    }
    SUBCASE("unknown keys inside nested maps") {
        CborWriter w;
        w.map(4);
        kv(w, "t", "push");
        kv(w, "batch", 1);
        w.text("items");
        w.array(1);
        w.map(3);
        kv(w, "sv", 3);
        w.text("rec");
        encode_record(w, household());
        kv(w, "note", "from v2");
        kv(w, "priority", 9);
        CHECK(decoded(w.data()) == Message{Push{1, {PushItem{3, household()}}}});
    }
}

TEST_CASE("Messages: a message must be a map with a known \"t\"") {
    SUBCASE("unknown type") {
        CborWriter w;
        w.map(1);
        w.text("t");
        w.text("gossip");
        auto e = failure(w.data());
        CHECK(e.code == protocol_errc::unknown_message);
        CHECK(starts_with(e.message, "message.t: unknown message type \"gossip\""));
    }
    SUBCASE("missing type") {
        CborWriter w;
        w.map(1);
        w.text("since");
        w.uint(1);
        auto e = failure(w.data());
        CHECK(e.code == protocol_errc::missing_field);
        CHECK(e.message == "message.t: missing (message type)");
    }
    SUBCASE("type is not text") {
        CborWriter w;
        w.map(1);
        w.text("t");
        w.uint(1);
        auto e = failure(w.data());
        CHECK(e.code == protocol_errc::wrong_type);
        CHECK(e.message == "message.t: expected a text string, found a unsigned integer");
    }
    SUBCASE("not a map") {
        CborWriter w;
        w.array(0);
        auto e = failure(w.data());
        CHECK(e.code == protocol_errc::wrong_type);
        CHECK(starts_with(e.message, "message: expected a map"));
    }
    SUBCASE("empty input") {
        auto e = failure(Bytes{});
        CHECK(e.code == protocol_errc::malformed);
        CHECK(starts_with(e.message, "message: "));
    }
    SUBCASE("key that is not text") {
        CborWriter w;
        w.map(2);
        w.text("t");
        w.text("pull");
        w.uint(1);
        w.uint(1);
        auto e = failure(w.data());
        CHECK(e.code == protocol_errc::wrong_type);
        CHECK(starts_with(e.message, "pull: map keys must be text strings"));
    }
    SUBCASE("a type after other keys is found") {
        CborWriter w;
        w.map(3);
        kv(w, "limit", 5);
        kv(w, "since", 9);
        kv(w, "t", "pull");
        CHECK(decoded(w.data()) == Message{Pull{9, 5}});
    }
}

TEST_CASE("Messages: every required key of every type is required") {
    for (const auto& m : samples()) {
        const Bytes b = encode_message(m);
        const auto entries = split_map(b);
        const std::string type(message_type(m));
        for (std::size_t i = 0; i < entries.size(); ++i) {
            const std::string& key = entries[i].key;
            // Optional keys.
            if (key == "t" || key == "v_min" || (key == "schema" && type == "welcome") ||
                key == "token" || key == "ref")
                continue;
            CAPTURE(type);
            CAPTURE(key);
            auto fewer = entries;
            fewer.erase(fewer.begin() + static_cast<std::ptrdiff_t>(i));
            auto e = failure(join_map(fewer));
            CHECK(e.code == protocol_errc::missing_field);
            CHECK(starts_with(e.message, type + "." + key + ": missing"));
        }
    }
    SUBCASE("inside nested maps") {
        CborWriter w;
        w.map(3);
        kv(w, "t", "push");
        kv(w, "batch", 1);
        w.text("items");
        w.array(2);
        w.map(2);
        kv(w, "sv", 3);
        w.text("rec");
        encode_record(w, household());
        w.map(1);
        kv(w, "sv", 3);
        auto e = failure(w.data());
        CHECK(e.code == protocol_errc::missing_field);
        CHECK(e.message == "push.items[1].rec: missing (record state)");
    }
}

TEST_CASE("Messages: a value of the wrong type is refused, naming its key") {
    for (const auto& m : samples()) {
        const Bytes b = encode_message(m);
        const auto entries = split_map(b);
        const std::string type(message_type(m));
        for (std::size_t i = 0; i < entries.size(); ++i) {
            if (entries[i].key == "t") continue;
            CAPTURE(type);
            CAPTURE(entries[i].key);
            auto changed = entries;
            const bool was_uint =
                CborReader(entries[i].value).peek_type().value() == CborType::unsigned_int;
            changed[i].value = was_uint ? text_item("7") : uint_item(7);
            auto e = failure(join_map(changed));
            CHECK(e.code == protocol_errc::wrong_type);
            CHECK(starts_with(e.message, type + "." + entries[i].key + ": expected a"));
        }
    }
}

TEST_CASE("Messages: errors inside record states carry the whole path") {
    CborWriter w;
    w.map(3);
    kv(w, "t", "push");
    kv(w, "batch", 1);
    w.text("items");
    w.array(4);
    for (int i = 0; i < 3; ++i) {
        w.map(2);
        kv(w, "sv", 3);
        w.text("rec");
        encode_record(w, household());
    }
    w.map(2);
    kv(w, "sv", 3);
    w.text("rec");
    w.map(4);
    kv(w, "c", "households");
    w.text("f");
    w.map(0);
    w.text("id");
    w.bytes(household().id.bytes);
    kv(w, "ctx", "oops");
    auto e = failure(w.data());
    CHECK(e.code == protocol_errc::wrong_type);
    CHECK(e.message == "push.items[3].rec.ctx: expected a map, found a text string");

    SUBCASE("a dot not covered by the context (L12)") {
        RecordState bad = household();
        std::get<LwwState>(bad.fields.at("gps")).entry.dot.counter = 9;
        auto e2 = failure(encode_message(Notify{1, 2, {ChangeItem{2, 3, bad}}}));
        CHECK(e2.code == protocol_errc::invalid_value);
        CHECK(starts_with(e2.message, "notify.items[0].rec.f.gps: "));
    }
    SUBCASE("a record that is not a map") {
        CborWriter x;
        x.map(5);
        kv(x, "t", "changes");
        x.text("more");
        x.boolean(false);
        x.text("items");
        x.array(1);
        x.map(3);
        kv(x, "sv", 1);
        x.text("rec");
        x.array(0);
        kv(x, "seq", 1);
        kv(x, "since", 0);
        kv(x, "cursor", 0);
        auto e4 = failure(x.data());
        CHECK(e4.code == protocol_errc::wrong_type);
        CHECK(e4.message == "changes.items[0].rec: expected a map, found a array");
    }
}

TEST_CASE("Messages: ids, digests and codes must have their exact form") {
    auto hello_with = [](std::string_view key, Bytes value) {
        Hello h;
        h.auth = TokenAuth{"t"};
        auto entries = split_map(encode_message(h));
        for (auto& e : entries)
            if (e.key == key) e.value = value;
        return join_map(entries);
    };
    auto bstr = [](std::size_t n) {
        CborWriter w;
        w.bytes(Bytes(n, 0x11));
        return w.take();
    };
    SUBCASE("device id of 15 bytes") {
        auto e = failure(hello_with("device", bstr(15)));
        CHECK(e.code == protocol_errc::invalid_value);
        CHECK(e.message == "hello.device: an id is 16 bytes, got 15");
    }
    SUBCASE("replica id of 17 bytes") {
        auto e = failure(hello_with("replica", bstr(17)));
        CHECK(e.code == protocol_errc::invalid_value);
        CHECK(e.message == "hello.replica: an id is 16 bytes, got 17");
    }
    SUBCASE("record id in a revoke") {
        CborWriter w;
        w.map(3);
        kv(w, "t", "revoke");
        kv(w, "cursor", 1);
        w.text("records");
        w.array(1);
        w.array(2);
        w.text("households");
        w.bytes(Bytes(3, 0));
        auto e = failure(w.data());
        CHECK(e.code == protocol_errc::invalid_value);
        CHECK(e.message == "revoke.records[0][1]: an id is 16 bytes, got 3");
    }
    SUBCASE("record reference of the wrong shape or collection") {
        CborWriter w;
        w.map(3);
        kv(w, "t", "revoke");
        kv(w, "cursor", 1);
        w.text("records");
        w.array(1);
        w.array(1);
        w.text("households");
        auto e = failure(w.data());
        CHECK(e.code == protocol_errc::invalid_value);
        CHECK(starts_with(e.message, "revoke.records[0]: a record reference is [collection, id]"));
        CHECK(failure(encode_message(Revoke{1, {RecordRef{"", Id128{}}}})).message ==
              "revoke.records[0][0]: a collection name is 1 to 64 bytes");
    }
    SUBCASE("record id inside a pushed state") {
        CborWriter w;
        w.map(3);
        kv(w, "t", "push");
        kv(w, "batch", 1);
        w.text("items");
        w.array(1);
        w.map(2);
        kv(w, "sv", 1);
        w.text("rec");
        w.map(4);
        kv(w, "c", "households");
        w.text("f");
        w.map(0);
        w.text("id");
        w.bytes(Bytes(8, 1));
        w.text("ctx");
        w.map(0);
        auto e = failure(w.data());
        CHECK(e.code == protocol_errc::invalid_value);
        CHECK(e.message == "push.items[0].rec.id: an id is 16 bytes, got 8");
    }
    SUBCASE("digest of 31 bytes") {
        auto entries = split_map(encode_message(Digest{}));
        for (auto& e : entries)
            if (e.key == "digest") e.value = bstr(31);
        auto e = failure(join_map(entries));
        CHECK(e.code == protocol_errc::invalid_value);
        CHECK(e.message == "digest.digest: a digest is 32 bytes, got 31");
    }
    SUBCASE("error codes are snake_case names") {
        auto e = failure(encode_message(ErrorMessage{"Not Found", "x", std::nullopt, false}));
        CHECK(e.code == protocol_errc::invalid_value);
        CHECK(starts_with(e.message, "error.code: "));
        CHECK(failure(encode_message(ErrorMessage{"", "x", std::nullopt, false})).code ==
              protocol_errc::invalid_value);
        // A code this version does not know is still a valid message (a newer peer's code).
        CHECK(decoded(encode_message(ErrorMessage{"quota_exceeded", "x", std::nullopt, false})) ==
              Message{ErrorMessage{"quota_exceeded", "x", std::nullopt, false}});
    }
}

TEST_CASE("Messages: values out of their domain") {
    SUBCASE("text must be UTF-8") {
        Hello h;
        h.auth = TokenAuth{"t"};
        h.app = std::string("app\xff");
        auto e = failure(encode_message(h));
        CHECK(e.code == protocol_errc::invalid_value);
        CHECK(e.message == "hello.app: text is not valid UTF-8");
        Welcome w;
        w.role = "admin";
        w.scope = {"ok", std::string("\xed\xa0\x80")};  // a surrogate
        CHECK(failure(encode_message(w)).message == "welcome.scope[1]: text is not valid UTF-8");
    }
    SUBCASE("keys must be UTF-8") {
        CborWriter w;
        w.map(2);
        kv(w, "t", "pull");
        w.text(std::string("\xc0\xaf"));
        w.uint(1);
        auto e = failure(w.data());
        CHECK(e.code == protocol_errc::invalid_value);
        CHECK(e.message == "pull: a key is not valid UTF-8");
    }
    SUBCASE("protocol versions") {
        Hello h;
        h.auth = TokenAuth{"t"};
        h.version = 0;
        h.min_version = 0;
        CHECK(failure(encode_message(h)).message == "hello.v: protocol versions start at 1");
        h.version = 2;
        h.min_version = 3;
        auto e = failure(encode_message(h));
        CHECK(e.code == protocol_errc::invalid_value);
        CHECK(e.message == "hello.v_min: greater than v");
    }
    SUBCASE("credentials") {
        auto hello_auth = [](CborWriter auth) {
            Hello h;
            h.auth = TokenAuth{"t"};
            auto entries = split_map(encode_message(h));
            for (auto& e : entries)
                if (e.key == "auth") e.value = auth.take();
            return join_map(entries);
        };
        CborWriter both;
        both.map(2);
        kv(both, "user", "u");
        kv(both, "token", "t");
        auto e = failure(hello_auth(std::move(both)));
        CHECK(e.code == protocol_errc::invalid_value);
        CHECK(starts_with(e.message, "hello.auth: either user and password, or token"));
        CborWriter none;
        none.map(0);
        e = failure(hello_auth(std::move(none)));
        CHECK(e.code == protocol_errc::missing_field);
        CHECK(starts_with(e.message, "hello.auth: no credentials"));
        CborWriter user_only;
        user_only.map(1);
        kv(user_only, "user", "u");
        e = failure(hello_auth(std::move(user_only)));
        CHECK(e.code == protocol_errc::missing_field);
        CHECK(e.message == "hello.auth.password: missing (password)");
        CborWriter wrong;
        wrong.map(1);
        kv(wrong, "token", 5);
        e = failure(hello_auth(std::move(wrong)));
        CHECK(e.code == protocol_errc::wrong_type);
        CHECK(starts_with(e.message, "hello.auth.token: expected a text string"));
    }
    SUBCASE("pull limit is at least 1") {
        auto e = failure(encode_message(Pull{0, 0}));
        CHECK(e.code == protocol_errc::invalid_value);
        CHECK(e.message == "pull.limit: a page holds at least 1 record");
    }
    SUBCASE("item results: code with failures only, and always with one") {
        auto e =
            failure(encode_message(PushAck{1, {ItemResult{}, ItemResult{false, "", ""}}, 0, 0}));
        CHECK(e.code == protocol_errc::invalid_value);  // empty code
        CHECK(starts_with(e.message, "push_ack.results[1].code: "));
        CborWriter w;
        w.map(5);
        kv(w, "t", "push_ack");
        kv(w, "batch", 1);
        kv(w, "cursor", 1);
        w.text("results");
        w.array(2);
        w.map(1);
        w.text("ok");
        w.boolean(false);
        w.map(2);
        w.text("ok");
        w.boolean(true);
        kv(w, "code", "forbidden");
        kv(w, "server_time", 1);
        e = failure(w.data());
        CHECK(e.code == protocol_errc::missing_field);
        CHECK(e.message == "push_ack.results[0].code: missing (why the item was rejected)");
    }
}

TEST_CASE("Messages: duplicate keys are malformed") {
    for (const auto& m : samples()) {
        const auto entries = split_map(encode_message(m));
        for (std::size_t i = 0; i < entries.size(); ++i) {
            CAPTURE(message_type(m));
            CAPTURE(entries[i].key);
            auto dup = entries;
            dup.push_back(entries[i]);
            auto e = failure(join_map(dup));
            CHECK(e.code == protocol_errc::malformed);
            CHECK(e.message ==
                  std::string(message_type(m)) + "." + entries[i].key + ": duplicate key");
        }
    }
    SUBCASE("unknown keys too, and inside nested maps") {
        CborWriter w;
        w.map(5);
        kv(w, "t", "pull");
        kv(w, "x", 1);
        kv(w, "limit", 1);
        kv(w, "since", 1);
        kv(w, "x", 2);
        CHECK(failure(w.data()).message == "pull.x: duplicate key");
        CborWriter v;
        v.map(3);
        kv(v, "t", "push");
        kv(v, "batch", 1);
        v.text("items");
        v.array(1);
        v.map(3);
        kv(v, "sv", 3);
        v.text("rec");
        encode_record(v, household());
        kv(v, "sv", 4);
        CHECK(failure(v.data()).message == "push.items[0].sv: duplicate key");
    }
}

TEST_CASE("Messages: truncated or extended input fails cleanly") {
    for (const auto& m : samples()) {
        CAPTURE(message_type(m));
        const Bytes b = encode_message(m);
        for (std::size_t n = 0; n < b.size(); ++n) {
            auto r = decode_message(ByteView(b.data(), n));
            REQUIRE_FALSE(r.ok());
            CHECK(r.error().code == protocol_errc::malformed);
        }
        Bytes longer = b;
        longer.push_back(0x00);
        auto e = failure(longer);
        CHECK(e.code == protocol_errc::malformed);
        CHECK(e.message == std::string(message_type(m)) + ": 1 bytes follow the message's map");
        longer.insert(longer.end(), b.begin(), b.end());  // two messages in one frame
        CHECK(failure(longer).code == protocol_errc::malformed);
    }
}

TEST_CASE("Messages: limits are enforced before anything is reserved") {
    SUBCASE("frame size") {
        MessageLimits lim;
        const Bytes b = encode_message(Pull{1, 1});
        lim.max_frame_bytes = b.size() - 1;
        auto e = failure(b, lim);
        CHECK(e.code == protocol_errc::limit_exceeded);
        CHECK(starts_with(e.message, "message: frame of "));
        lim.max_frame_bytes = b.size();
        CHECK(decode_message(b, lim).ok());
    }
    SUBCASE("item counts") {
        MessageLimits lim;
        lim.max_items = 2;
        Push p{1, {PushItem{1, household()}, PushItem{1, household()}}};
        CHECK(decode_message(encode_message(p), lim).ok());
        p.items.push_back(PushItem{1, household()});
        auto e = failure(encode_message(p), lim);
        CHECK(e.code == protocol_errc::limit_exceeded);
        CHECK(e.message == "push.items: list of 3 entries exceeds the limit of 2");
        Revoke r{1, {{"a", {}}, {"b", {}}, {"c", {}}}};
        CHECK(failure(encode_message(r), lim).message ==
              "revoke.records: list of 3 entries exceeds the limit of 2");
        Changes c{0,
                  1,
                  false,
                  {ChangeItem{1, 1, household()}, ChangeItem{2, 1, household()},
                   ChangeItem{3, 1, household()}}};
        CHECK(failure(encode_message(c), lim).code == protocol_errc::limit_exceeded);
        // Maps of the message are bounded by max_entries.
        lim.max_entries = 2;
        CHECK(failure(encode_message(Pull{1, 1}), lim).message ==
              "message: map of 3 entries at byte 0 exceeds the limit of 2");
    }
    SUBCASE("a count the bytes cannot hold") {
        // {"t": "push", "batch": 1, "items": array of 2^32-1} and nothing after.
        auto b = from_hex("a36174647075736865626174636801656974656d739affffffff").value();
        auto e = failure(b);
        CHECK(e.code == protocol_errc::limit_exceeded);
        MessageLimits lim;
        lim.max_items = std::numeric_limits<std::size_t>::max();
        lim.max_entries = std::numeric_limits<std::size_t>::max();
        e = failure(b, lim);
        CHECK(e.code == protocol_errc::malformed);
        CHECK(starts_with(e.message, "push.items: array at byte "));
    }
    SUBCASE("string length") {
        MessageLimits lim;
        lim.max_string = 12;  // keys are strings too: "schema_version" comes after "schema"
        Welcome w;
        w.role = "admin";
        w.schema = std::string(13, 'x');
        auto e = failure(encode_message(w), lim);
        CHECK(e.code == protocol_errc::limit_exceeded);
        CHECK(starts_with(e.message, "welcome.schema: text string of 13 bytes"));
    }
    SUBCASE("deep nesting in an unknown key") {
        CborWriter w;
        w.map(4);
        kv(w, "t", "pull");
        w.text("deep");
        for (int i = 0; i < 200; ++i)
            w.array(1);
        w.uint(0);
        kv(w, "limit", 1);
        kv(w, "since", 1);
        auto e = failure(w.data());
        CHECK(e.code == protocol_errc::limit_exceeded);
        CHECK(starts_with(e.message, "pull.deep: nesting deeper than 32"));
        MessageLimits lim;
        lim.max_depth = 300;
        CHECK(decoded(w.data(), lim) == Message{Pull{1, 1}});
    }
    SUBCASE("depth counts the record's levels") {
        MessageLimits lim;
        lim.max_depth = 4;  // message, items, item, rec: the record's fields are one too many
        auto e = failure(encode_message(Push{1, {PushItem{1, household()}}}), lim);
        CHECK(e.code == protocol_errc::limit_exceeded);
        CHECK(starts_with(e.message, "push.items[0].rec"));
    }
}

TEST_CASE("Messages: profile violations inside a message") {
    auto pull_with_since = [](const char* raw_hex) {
        CborWriter w;
        w.map(3);
        kv(w, "t", "pull");
        kv(w, "limit", 1);
        w.text("since");
        w.raw(from_hex(raw_hex).value());
        return w.take();
    };
    for (const char* hex : {"9f01ff", "f93c00", "fb3ff0000000000000", "c11a514b67b0", "f7", "1c",
                            "5f41ff", "7f6161ff", "bf6161ff"}) {
        CAPTURE(hex);
        auto e = failure(pull_with_since(hex));
        CHECK(e.code == protocol_errc::malformed);
        CHECK(starts_with(e.message, "pull.since: "));
    }
}

TEST_CASE("Messages: random corruption never crashes and decodes consistently") {
    std::mt19937_64 rng(20240601);
    MESSAGE("seed 20240601");
    const auto all = samples();
    int decoded_ok = 0;
    for (int round = 0; round < 3000; ++round) {
        Bytes b = encode_message(all[rng() % all.size()]);
        const int flips = 1 + static_cast<int>(rng() % 4);
        for (int f = 0; f < flips; ++f) {
            const std::size_t at = rng() % b.size();
            switch (rng() % 3) {
                case 0:
                    b[at] = static_cast<std::uint8_t>(rng());
                    break;
                case 1:
                    b.erase(b.begin() + static_cast<std::ptrdiff_t>(at));
                    break;
                default:
                    b.insert(b.begin() + static_cast<std::ptrdiff_t>(at),
                             static_cast<std::uint8_t>(rng()));
                    break;
            }
            if (b.empty()) b.push_back(0xa0);
        }
        auto r = decode_message(b);
        if (r) {
            ++decoded_ok;
            const Bytes again = encode_message(*r);
            auto r2 = decode_message(again);
            REQUIRE(r2.ok());
            CHECK(*r2 == *r);
            CHECK(encode_message(*r2) == again);
        } else {
            CHECK_FALSE(r.error().message.empty());
        }
    }
    MESSAGE("decoded after corruption: " << decoded_ok);
}

TEST_CASE("Messages: version negotiation") {
    Hello h;
    h.version = 1;
    h.min_version = 1;
    CHECK(negotiate_version(h).value() == 1);
    h.version = 5;
    h.min_version = 1;
    CHECK(negotiate_version(h).value() == protocol_version);  // newer client, older server
    CHECK(negotiate_version(h, 1, 3).value() == 3);
    h.min_version = 2;
    auto r = negotiate_version(h, 1, 1);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == protocol_errc::unsupported_version);
    CHECK(r.error().message == "hello.v: the client speaks protocol 2..5, this server speaks 1..1");
    h.version = 1;
    h.min_version = 1;
    CHECK_FALSE(negotiate_version(h, 2, 3).ok());  // client too old
}

TEST_CASE("Messages: error codes and error messages") {
    for (int c = 1; c <= static_cast<int>(protocol_errc::busy); ++c) {
        const auto e = static_cast<protocol_errc>(c);
        CHECK(parse_errc(to_string(e)) == e);
    }
    CHECK_FALSE(parse_errc("quota_exceeded").has_value());
    CHECK_FALSE(parse_errc("").has_value());
    auto m = make_error_message(Error{protocol_errc::forbidden, "push.items[0]: outside scope"},
                                false, 7);
    CHECK(m == ErrorMessage{"forbidden", "push.items[0]: outside scope", 7, false});
    auto other = make_error_message(Error{std::make_error_code(std::errc::io_error), "disk"}, true);
    CHECK(other.code == "internal");
    CHECK(other.fatal);
    CHECK(decoded(encode_message(m)) == Message{m});
}

TEST_CASE("Messages: the scope digest is an order-independent sum") {
    const RecordState a = household(), b = conflicted();
    RecordState c = household();
    c.id.bytes[15] = 9;
    ScopeDigest x, y;
    x.add(a);
    x.add(b);
    x.add(c);
    y.add(c);
    y.add(a);
    y.add(b);
    CHECK(x.value() == y.value());
    CHECK(x.count() == 3);
    y.remove(a);
    CHECK(y.count() == 2);
    ScopeDigest z;
    z.add(b);
    z.add(c);
    CHECK(y.value() == z.value());
    y.remove(b);
    y.remove(c);
    CHECK(y.value() == std::array<std::uint8_t, 32>{});
    SUBCASE("carries and borrows across every byte") {
        std::array<std::uint8_t, 32> ones;
        ones.fill(0xff);
        std::array<std::uint8_t, 32> one{};
        one[31] = 1;
        ScopeDigest d;
        d.add(ones);
        d.add(one);
        CHECK(d.value() == std::array<std::uint8_t, 32>{});  // 2^256 - 1 + 1 = 0 mod 2^256
        d.remove(one);
        CHECK(d.value() == ones);
        d.remove(ones);
        CHECK(d.value() == std::array<std::uint8_t, 32>{});
        CHECK(d.count() == 0);
    }
    SUBCASE("a record counted twice is visible (unlike XOR)") {
        ScopeDigest once, twice;
        once.add(a);
        twice.add(a);
        twice.add(a);
        twice.remove(a);
        CHECK(once.value() == twice.value());
        twice.add(a);
        CHECK(twice.value() != ScopeDigest{}.value());
        CHECK(twice.value() != once.value());
    }
}

TEST_SUITE_END();
