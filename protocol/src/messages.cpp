// The wire messages' codec. The format is SPEC.md §5 (prose and field tables) and
// protocol/fieldsync.cddl; the CBOR profile and the limits are SPEC.md §2.
//
// Encoding: each message is one map whose keys are written in deterministic order (RFC 8949
// §4.2.1: shorter encoded key first, then bytewise). The order is spelled out by hand in each
// encoder below, as a comment above it, and a unit test walks every encoded message to check it.
//
// Decoding is two passes over the same bytes, both with a pull reader that allocates nothing:
//   1. find "t" among the top-level keys (skipping the values before it), and look up the type;
//   2. decode that type's map, keys in any order; unknown keys are skipped (SPEC.md §2.3),
//      known keys are type-checked, required keys must be present, and every key read is
//      remembered so that a duplicate is reported as malformed once the map is done.
// Every list of the message itself is checked against MessageLimits::max_items, and every map
// against max_entries, before anything is reserved; record states are decoded by decode_record on
// the same reader, so the depth, string and entry limits apply inside them too. Errors carry the
// path of the item being read ("push.items[3].rec.ctx"), kept in one string that grows and shrinks
// as the decoder descends and returns.
#include "fieldsync/protocol/messages.hpp"

#include <algorithm>
#include <utility>

#include "fieldsync/protocol/value.hpp"

namespace fieldsync::protocol {

namespace {

// Index == Message variant index.
constexpr std::string_view type_names[] = {
    "hello",  "welcome", "push",           "push_ack", "pull",  "changes",
    "notify", "revoke",  "digest_request", "digest",   "error",
};
static_assert(std::size(type_names) == std::variant_size_v<Message>);

template <class... F>
struct Overloaded : F... {
    using F::operator()...;
};
template <class... F>
Overloaded(F...) -> Overloaded<F...>;

}  // namespace

std::string_view message_type(const Message& m) noexcept {
    return type_names[m.index()];
}

CborLimits MessageLimits::cbor_limits() const noexcept {
    CborLimits l;
    l.max_input_bytes = max_frame_bytes;
    l.max_depth = max_depth;
    l.max_items = std::max(max_items, max_entries);
    l.max_string_bytes = max_string;
    return l;
}

std::optional<protocol_errc> parse_errc(std::string_view name) noexcept {
    for (int c = 1; c <= static_cast<int>(protocol_errc::busy); ++c) {
        if (name == to_string(static_cast<protocol_errc>(c))) return static_cast<protocol_errc>(c);
    }
    return std::nullopt;
}

ErrorMessage make_error_message(const Error& e, bool fatal, std::optional<std::uint64_t> ref) {
    ErrorMessage m;
    m.code = e.code.category() == protocol_category()
                 ? to_string(static_cast<protocol_errc>(e.code.value()))
                 : to_string(protocol_errc::internal);
    m.message = e.message;
    m.ref = ref;
    m.fatal = fatal;
    return m;
}

Result<std::uint64_t> negotiate_version(const Hello& hello, std::uint64_t min_supported,
                                        std::uint64_t max_supported) {
    const std::uint64_t lo = std::max(hello.min_version, min_supported);
    const std::uint64_t hi = std::min(hello.version, max_supported);
    if (lo > hi || hello.min_version > hello.version) {
        return Error{protocol_errc::unsupported_version,
                     "hello.v: the client speaks protocol " + std::to_string(hello.min_version) +
                         ".." + std::to_string(hello.version) + ", this server speaks " +
                         std::to_string(min_supported) + ".." + std::to_string(max_supported)};
    }
    return hi;
}

// ---------------------------------------------------------------------------------------------
// Scope digest: 256-bit big-endian arithmetic modulo 2^256 (SPEC.md §6.3).

void ScopeDigest::add(const std::array<std::uint8_t, 32>& d) noexcept {
    unsigned carry = 0;
    for (std::size_t i = 32; i-- > 0;) {
        const unsigned sum = unsigned{m_sum[i]} + d[i] + carry;
        m_sum[i] = static_cast<std::uint8_t>(sum);
        carry = sum >> 8;
    }
    ++m_count;
}

void ScopeDigest::remove(const std::array<std::uint8_t, 32>& d) noexcept {
    unsigned borrow = 0;
    for (std::size_t i = 32; i-- > 0;) {
        const unsigned sub = unsigned{d[i]} + borrow;
        borrow = m_sum[i] < sub ? 1 : 0;
        m_sum[i] = static_cast<std::uint8_t>(unsigned{m_sum[i]} + (borrow << 8) - sub);
    }
    --m_count;
}

// ---------------------------------------------------------------------------------------------
// Encoding. Above each encoder: its keys in deterministic order.

namespace {

void key_uint(CborWriter& w, std::string_view key, std::uint64_t v) {
    w.text(key);
    w.uint(v);
}

void key_text(CborWriter& w, std::string_view key, std::string_view v) {
    w.text(key);
    w.text(v);
}

ByteView as_bytes(const Id128& id) {
    return id.bytes;
}

// t, v, app, auth, clock, v_min, cursor, device, schema, replica
void encode(CborWriter& w, const Hello& m) {
    const bool with_min = m.min_version != m.version;
    w.map(with_min ? 10 : 9);
    key_text(w, "t", "hello");
    key_uint(w, "v", m.version);
    key_text(w, "app", m.app);
    w.text("auth");
    std::visit(Overloaded{[&](const PasswordAuth& a) {
                              // user, password
                              w.map(2);
                              key_text(w, "user", a.user);
                              key_text(w, "password", a.password);
                          },
                          [&](const TokenAuth& a) {
                              w.map(1);
                              key_text(w, "token", a.token);
                          }},
               m.auth);
    key_uint(w, "clock", m.clock);
    if (with_min) key_uint(w, "v_min", m.min_version);
    key_uint(w, "cursor", m.cursor);
    w.text("device");
    w.bytes(as_bytes(m.device));
    key_uint(w, "schema", m.schema_version);
    w.text("replica");
    w.bytes(as_bytes(m.replica));
}

// t, v, role, user, scope, token?, limits, schema?, server_time, schema_version
void encode(CborWriter& w, const Welcome& m) {
    w.map(8 + (m.token ? 1 : 0) + (m.schema ? 1 : 0));
    key_text(w, "t", "welcome");
    key_uint(w, "v", m.version);
    key_text(w, "role", m.role);
    key_text(w, "user", m.user);
    w.text("scope");
    w.array(m.scope.size());
    for (const auto& area : m.scope)
        w.text(area);
    if (m.token) key_text(w, "token", *m.token);
    w.text("limits");
    // max_batch, max_frame
    w.map(2);
    key_uint(w, "max_batch", m.limits.max_batch);
    key_uint(w, "max_frame", m.limits.max_frame);
    if (m.schema) key_text(w, "schema", *m.schema);
    key_uint(w, "server_time", m.server_time);
    key_uint(w, "schema_version", m.schema_version);
}

// t, batch, items; item: sv, rec
void encode(CborWriter& w, const Push& m) {
    w.map(3);
    key_text(w, "t", "push");
    key_uint(w, "batch", m.batch);
    w.text("items");
    w.array(m.items.size());
    for (const auto& item : m.items) {
        w.map(2);
        key_uint(w, "sv", item.schema_version);
        w.text("rec");
        encode_record(w, item.record);
    }
}

// t, batch, cursor, results, server_time; result: ok, code?, reason?
void encode(CborWriter& w, const PushAck& m) {
    w.map(5);
    key_text(w, "t", "push_ack");
    key_uint(w, "batch", m.batch);
    key_uint(w, "cursor", m.cursor);
    w.text("results");
    w.array(m.results.size());
    for (const auto& r : m.results) {
        const bool with_reason = !r.ok && !r.reason.empty();
        w.map(r.ok ? 1 : (with_reason ? 3 : 2));
        w.text("ok");
        w.boolean(r.ok);
        if (!r.ok) key_text(w, "code", r.code);
        if (with_reason) key_text(w, "reason", r.reason);
    }
    key_uint(w, "server_time", m.server_time);
}

// t, limit, since
void encode(CborWriter& w, const Pull& m) {
    w.map(3);
    key_text(w, "t", "pull");
    key_uint(w, "limit", m.limit);
    key_uint(w, "since", m.since);
}

// item: sv, rec, seq
void encode_change_items(CborWriter& w, const std::vector<ChangeItem>& items) {
    w.text("items");
    w.array(items.size());
    for (const auto& item : items) {
        w.map(3);
        key_uint(w, "sv", item.schema_version);
        w.text("rec");
        if (!item.encoded_record.empty())
            w.raw(item.encoded_record);
        else
            encode_record(w, item.record);
        key_uint(w, "seq", item.seq);
    }
}

// t, more, items, since, cursor
void encode(CborWriter& w, const Changes& m) {
    w.map(5);
    key_text(w, "t", "changes");
    w.text("more");
    w.boolean(m.more);
    encode_change_items(w, m.items);
    key_uint(w, "since", m.since);
    key_uint(w, "cursor", m.cursor);
}

// t, items, since, cursor
void encode(CborWriter& w, const Notify& m) {
    w.map(4);
    key_text(w, "t", "notify");
    encode_change_items(w, m.items);
    key_uint(w, "since", m.since);
    key_uint(w, "cursor", m.cursor);
}

// t, cursor, records; record: [collection, id]
void encode(CborWriter& w, const Revoke& m) {
    w.map(3);
    key_text(w, "t", "revoke");
    key_uint(w, "cursor", m.cursor);
    w.text("records");
    w.array(m.records.size());
    for (const auto& r : m.records) {
        w.array(2);
        w.text(r.collection);
        w.bytes(as_bytes(r.id));
    }
}

// t
void encode(CborWriter& w, const DigestRequest&) {
    w.map(1);
    key_text(w, "t", "digest_request");
}

// t, count, cursor, digest
void encode(CborWriter& w, const Digest& m) {
    w.map(4);
    key_text(w, "t", "digest");
    key_uint(w, "count", m.count);
    key_uint(w, "cursor", m.cursor);
    w.text("digest");
    w.bytes(m.digest);
}

// t, ref?, code, fatal, message
void encode(CborWriter& w, const ErrorMessage& m) {
    w.map(m.ref ? 5 : 4);
    key_text(w, "t", "error");
    if (m.ref) key_uint(w, "ref", *m.ref);
    key_text(w, "code", m.code);
    w.text("fatal");
    w.boolean(m.fatal);
    key_text(w, "message", m.message);
}

}  // namespace

void encode_message(CborWriter& w, const Message& m) {
    std::visit([&](const auto& msg) { encode(w, msg); }, m);
}

Bytes encode_message(const Message& m) {
    CborWriter w(256);
    encode_message(w, m);
    return w.take();
}

// ---------------------------------------------------------------------------------------------
// Decoding

namespace {

#define FIELDSYNC_TRY(var, expr)                     \
    auto var##_r = (expr);                           \
    if (!var##_r) return std::move(var##_r).error(); \
    auto var = std::move(var##_r).value()

// Unique names, so that a check inside a lambda passed to a check does not shadow it.
#define FIELDSYNC_CAT2(a, b) a##b
#define FIELDSYNC_CAT(a, b) FIELDSYNC_CAT2(a, b)
#define FIELDSYNC_CHECK(expr) FIELDSYNC_CHECK_N(expr, FIELDSYNC_CAT(status_, __COUNTER__))
#define FIELDSYNC_CHECK_N(expr, name)                                  \
    do {                                                               \
        if (auto name = (expr); !name) return std::move(name).error(); \
    } while (false)

// Deterministic key order: shorter first, then bytewise (equal lengths give equal head bytes).
bool key_less(std::string_view a, std::string_view b) {
    return a.size() != b.size() ? a.size() < b.size() : a < b;
}

// Joins a path and an error message relative to it. Relative messages start with "[i]", ".x" or
// "x: " (a path, no spaces, then a colon), as decode_record and decode_value write them;
// anything else is a plain message.
std::string join_path(std::string_view path, std::string_view msg) {
    std::string out(path);
    if (msg.empty()) return out;
    if (msg.front() == '[' || msg.front() == '.') {
        out += msg;
        return out;
    }
    const auto colon = msg.find(": ");
    if (colon != std::string_view::npos && colon > 0 &&
        msg.substr(0, colon).find(' ') == std::string_view::npos) {
        out += '.';
    } else {
        out += ": ";
    }
    out += msg;
    return out;
}

// A key as it appears in a path: at most 64 bytes, cut on a UTF-8 boundary.
std::string_view path_key(std::string_view key) {
    if (key.size() <= 64) return key;
    std::size_t n = 64;
    while (n > 0 && (static_cast<unsigned char>(key[n]) & 0xc0) == 0x80)
        --n;
    return key.substr(0, n);
}

bool valid_code(std::string_view code) {
    if (code.empty() || code.size() > 64) return false;
    return std::all_of(code.begin(), code.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
    });
}

bool valid_collection(std::string_view c) {
    return !c.empty() && c.size() <= 64 && is_valid_utf8(c);
}

// Restores the decoder's path when it goes out of scope.
class PathGuard {
public:
    PathGuard(std::string& path, std::size_t len) noexcept : m_path(path), m_len(len) {}
    ~PathGuard() { m_path.resize(m_len); }
    PathGuard(const PathGuard&) = delete;
    PathGuard& operator=(const PathGuard&) = delete;

private:
    std::string& m_path;
    std::size_t m_len;
};

class Decoder {
public:
    Decoder(ByteView bytes, const MessageLimits& limits, std::string_view root)
        : m_r(bytes, limits.cbor_limits()), m_limits(limits), m_path(root) {}

    CborReader& reader() noexcept { return m_r; }
    const std::string& path() const noexcept { return m_path; }

    Error fail(protocol_errc c, std::string_view what) const {
        return Error{c, m_path + ": " + std::string(what)};
    }
    Error wrap(const Error& e) const { return Error{e.code, join_path(m_path, e.message)}; }
    Error missing(std::string_view key, std::string_view what) const {
        return Error{protocol_errc::missing_field,
                     m_path + "." + std::string(key) + ": missing (" + std::string(what) + ")"};
    }

    [[nodiscard]] PathGuard key(std::string_view k) {
        const std::size_t len = m_path.size();
        m_path += '.';
        m_path += path_key(k);
        return PathGuard(m_path, len);
    }
    [[nodiscard]] PathGuard index(std::size_t i) {
        const std::size_t len = m_path.size();
        m_path += '[';
        m_path += std::to_string(i);
        m_path += ']';
        return PathGuard(m_path, len);
    }

    Result<std::uint64_t> read_uint() {
        auto r = m_r.read_uint();
        if (!r) return wrap(r.error());
        return *r;
    }
    Result<bool> read_bool() {
        auto r = m_r.read_bool();
        if (!r) return wrap(r.error());
        return *r;
    }
    Result<std::string> read_text() {
        auto r = m_r.read_text();
        if (!r) return wrap(r.error());
        if (!is_valid_utf8(*r))
            return fail(protocol_errc::invalid_value, "text is not valid UTF-8");
        return std::string(*r);
    }
    Result<Id128> read_id() {
        auto r = m_r.read_bytes();
        if (!r) return wrap(r.error());
        auto id = Id128::from_bytes(*r);
        if (!id) return wrap(id.error());
        return *id;
    }
    Result<std::uint64_t> read_version() {
        FIELDSYNC_TRY(v, read_uint());
        if (v == 0) return fail(protocol_errc::invalid_value, "protocol versions start at 1");
        return v;
    }
    Result<RecordState> read_record() {
        auto r = decode_record(m_r);
        if (!r) return wrap(r.error());
        return std::move(r).value();
    }

    // Reads a map of the message (not of a record). `on_key(key)` reads the value of a known
    // key and returns true, or returns false to have the value skipped.
    template <class F>
    Status read_map(F&& on_key) {
        auto n = m_r.read_map();
        if (!n) return wrap(n.error());
        FIELDSYNC_CHECK(check_count(*n, m_limits.max_entries, "map"));
        FIELDSYNC_CHECK(enter());
        // Key buffers are reused per nesting level: no allocation per map after warm-up.
        // Indexed, not held by reference: nested maps may grow m_keys.
        const std::size_t level = m_map_level++;
        if (m_keys.size() <= level) m_keys.resize(level + 1);
        m_keys[level].clear();
        m_keys[level].reserve(*n);
        bool ordered = true;
        for (std::size_t i = 0; i < *n; ++i) {
            auto k = m_r.read_text();
            if (!k) {
                if (k.error().code == protocol_errc::wrong_type)
                    return fail(protocol_errc::wrong_type,
                                "map keys must be text strings; " + k.error().message);
                return wrap(k.error());
            }
            if (!is_valid_utf8(*k))
                return fail(protocol_errc::invalid_value, "a key is not valid UTF-8");
            if (!m_keys[level].empty() && !key_less(m_keys[level].back(), *k)) ordered = false;
            m_keys[level].push_back(*k);
            auto guard = key(*k);
            Result<bool> known = on_key(*k);
            if (!known) return std::move(known).error();
            if (!*known) {
                if (auto s = m_r.skip(); !s) return wrap(s.error());
            }
        }
        --m_map_level;
        m_r.leave();
        if (!ordered) {
            auto& keys = m_keys[level];
            std::sort(keys.begin(), keys.end());
            auto dup = std::adjacent_find(keys.begin(), keys.end());
            if (dup != keys.end()) {
                auto guard = key(*dup);
                return fail(protocol_errc::malformed, "duplicate key");
            }
        }
        return {};
    }

    // Reads a list of the message into `out`, one element per `read_one()` call.
    template <class T, class F>
    Status read_list(std::vector<T>& out, F&& read_one) {
        auto n = m_r.read_array();
        if (!n) return wrap(n.error());
        FIELDSYNC_CHECK(check_count(*n, m_limits.max_items, "list"));
        FIELDSYNC_CHECK(enter());
        out.clear();
        out.reserve(*n);  // at most max_items
        for (std::size_t i = 0; i < *n; ++i) {
            auto guard = index(i);
            Result<T> one = read_one();
            if (!one) return std::move(one).error();
            out.push_back(std::move(one).value());
        }
        m_r.leave();
        return {};
    }

    // Fails unless the whole input has been read.
    Status finish() const {
        if (!m_r.at_end())
            return fail(protocol_errc::malformed,
                        std::to_string(m_r.remaining()) + " bytes follow the message's map");
        return {};
    }

private:
    Status check_count(std::size_t n, std::size_t limit, const char* what) const {
        if (n > limit)
            return fail(protocol_errc::limit_exceeded,
                        std::string(what) + " of " + std::to_string(n) +
                            " entries exceeds the limit of " + std::to_string(limit));
        return {};
    }
    Status enter() {
        if (auto s = m_r.enter(); !s) return wrap(s.error());
        return {};
    }

    CborReader m_r;
    const MessageLimits& m_limits;
    std::string m_path;
    std::vector<std::vector<std::string_view>> m_keys;  // one buffer per map nesting level
    std::size_t m_map_level = 0;
};

// The set of required keys seen so far in one map: bit i = key i of the decoder's list.
class Seen {
public:
    void mark(unsigned bit) noexcept { m_bits |= 1u << bit; }
    bool has(unsigned bit) const noexcept { return (m_bits >> bit) & 1u; }

private:
    unsigned m_bits = 0;
};

// ---- hello (since protocol 1) ----

Result<Auth> decode_auth(Decoder& d) {
    std::optional<std::string> user, password, token;
    FIELDSYNC_CHECK(d.read_map([&](std::string_view k) -> Result<bool> {
        std::optional<std::string>* slot = k == "user"       ? &user
                                           : k == "password" ? &password
                                           : k == "token"    ? &token
                                                             : nullptr;
        if (!slot) return false;
        FIELDSYNC_TRY(s, d.read_text());
        *slot = std::move(s);
        return true;
    }));
    if (token && (user || password))
        return d.fail(protocol_errc::invalid_value, "either user and password, or token; not both");
    if (token) return Auth{TokenAuth{std::move(*token)}};
    if (!user && !password)
        return d.fail(protocol_errc::missing_field, "no credentials (user and password, or token)");
    if (!user) return d.missing("user", "user name");
    if (!password) return d.missing("password", "password");
    return Auth{PasswordAuth{std::move(*user), std::move(*password)}};
}

Result<Message> decode_hello(Decoder& d) {
    Hello m;
    Seen seen;
    bool has_min = false;
    FIELDSYNC_CHECK(d.read_map([&](std::string_view k) -> Result<bool> {
        if (k == "v") {
            FIELDSYNC_TRY(v, d.read_version());
            m.version = v;
            seen.mark(0);
        } else if (k == "v_min") {
            FIELDSYNC_TRY(v, d.read_version());
            m.min_version = v;
            has_min = true;
        } else if (k == "device") {
            FIELDSYNC_TRY(id, d.read_id());
            m.device = id;
            seen.mark(1);
        } else if (k == "replica") {
            FIELDSYNC_TRY(id, d.read_id());
            m.replica = id;
            seen.mark(2);
        } else if (k == "app") {
            FIELDSYNC_TRY(s, d.read_text());
            m.app = std::move(s);
            seen.mark(3);
        } else if (k == "auth") {
            FIELDSYNC_TRY(a, decode_auth(d));
            m.auth = std::move(a);
            seen.mark(4);
        } else if (k == "schema") {
            FIELDSYNC_TRY(v, d.read_uint());
            m.schema_version = v;
            seen.mark(5);
        } else if (k == "cursor") {
            FIELDSYNC_TRY(v, d.read_uint());
            m.cursor = v;
            seen.mark(6);
        } else if (k == "clock") {
            FIELDSYNC_TRY(v, d.read_uint());
            m.clock = v;
            seen.mark(7);
        } else {
            return false;
        }
        return true;
    }));
    if (!seen.has(0)) return d.missing("v", "protocol version");
    if (!seen.has(1)) return d.missing("device", "device id");
    if (!seen.has(2)) return d.missing("replica", "replica id");
    if (!seen.has(3)) return d.missing("app", "app name and version");
    if (!seen.has(4)) return d.missing("auth", "credentials");
    if (!seen.has(5)) return d.missing("schema", "schema version held, 0 for none");
    if (!seen.has(6)) return d.missing("cursor", "last stored cursor, 0 for none");
    if (!seen.has(7)) return d.missing("clock", "device wall clock");
    if (!has_min) {
        m.min_version = m.version;
    } else if (m.min_version > m.version) {
        auto g = d.key("v_min");
        return d.fail(protocol_errc::invalid_value, "greater than v");
    }
    return Message{std::move(m)};
}

// ---- welcome (since protocol 1) ----

Result<SessionLimits> decode_session_limits(Decoder& d) {
    SessionLimits l;
    Seen seen;
    FIELDSYNC_CHECK(d.read_map([&](std::string_view k) -> Result<bool> {
        if (k == "max_frame") {
            FIELDSYNC_TRY(v, d.read_uint());
            l.max_frame = v;
            seen.mark(0);
        } else if (k == "max_batch") {
            FIELDSYNC_TRY(v, d.read_uint());
            l.max_batch = v;
            seen.mark(1);
        } else {
            return false;
        }
        return true;
    }));
    if (!seen.has(0)) return d.missing("max_frame", "largest frame, bytes");
    if (!seen.has(1)) return d.missing("max_batch", "most items per push");
    return l;
}

Result<Message> decode_welcome(Decoder& d) {
    Welcome m;
    Seen seen;
    FIELDSYNC_CHECK(d.read_map([&](std::string_view k) -> Result<bool> {
        if (k == "v") {
            FIELDSYNC_TRY(v, d.read_version());
            m.version = v;
            seen.mark(0);
        } else if (k == "user") {
            FIELDSYNC_TRY(s, d.read_text());
            m.user = std::move(s);
            seen.mark(1);
        } else if (k == "role") {
            FIELDSYNC_TRY(s, d.read_text());
            if (s.empty()) return d.fail(protocol_errc::invalid_value, "empty role");
            m.role = std::move(s);
            seen.mark(2);
        } else if (k == "scope") {
            FIELDSYNC_CHECK(d.read_list(m.scope, [&] { return d.read_text(); }));
            seen.mark(3);
        } else if (k == "schema_version") {
            FIELDSYNC_TRY(v, d.read_uint());
            m.schema_version = v;
            seen.mark(4);
        } else if (k == "server_time") {
            FIELDSYNC_TRY(v, d.read_uint());
            m.server_time = v;
            seen.mark(5);
        } else if (k == "limits") {
            FIELDSYNC_TRY(l, decode_session_limits(d));
            m.limits = l;
            seen.mark(6);
        } else if (k == "schema") {
            FIELDSYNC_TRY(s, d.read_text());
            m.schema = std::move(s);
        } else if (k == "token") {
            FIELDSYNC_TRY(s, d.read_text());
            m.token = std::move(s);
        } else {
            return false;
        }
        return true;
    }));
    if (!seen.has(0)) return d.missing("v", "protocol version");
    if (!seen.has(1)) return d.missing("user", "user name");
    if (!seen.has(2)) return d.missing("role", "role");
    if (!seen.has(3)) return d.missing("scope", "area codes");
    if (!seen.has(4)) return d.missing("schema_version", "server's schema version");
    if (!seen.has(5)) return d.missing("server_time", "server wall clock");
    if (!seen.has(6)) return d.missing("limits", "server limits");
    return Message{std::move(m)};
}

// ---- push (since protocol 1) ----

Result<PushItem> decode_push_item(Decoder& d) {
    PushItem item;
    Seen seen;
    FIELDSYNC_CHECK(d.read_map([&](std::string_view k) -> Result<bool> {
        if (k == "sv") {
            FIELDSYNC_TRY(v, d.read_uint());
            item.schema_version = v;
            seen.mark(0);
        } else if (k == "rec") {
            FIELDSYNC_TRY(r, d.read_record());
            item.record = std::move(r);
            seen.mark(1);
        } else {
            return false;
        }
        return true;
    }));
    if (!seen.has(0)) return d.missing("sv", "schema version of the write");
    if (!seen.has(1)) return d.missing("rec", "record state");
    return item;
}

Result<Message> decode_push(Decoder& d) {
    Push m;
    Seen seen;
    FIELDSYNC_CHECK(d.read_map([&](std::string_view k) -> Result<bool> {
        if (k == "batch") {
            FIELDSYNC_TRY(v, d.read_uint());
            m.batch = v;
            seen.mark(0);
        } else if (k == "items") {
            FIELDSYNC_CHECK(d.read_list(m.items, [&] { return decode_push_item(d); }));
            seen.mark(1);
        } else {
            return false;
        }
        return true;
    }));
    if (!seen.has(0)) return d.missing("batch", "batch id");
    if (!seen.has(1)) return d.missing("items", "record states");
    return Message{std::move(m)};
}

// ---- push_ack (since protocol 1) ----

Result<ItemResult> decode_item_result(Decoder& d) {
    ItemResult r;
    bool has_ok = false, has_code = false;
    FIELDSYNC_CHECK(d.read_map([&](std::string_view k) -> Result<bool> {
        if (k == "ok") {
            FIELDSYNC_TRY(v, d.read_bool());
            r.ok = v;
            has_ok = true;
        } else if (k == "code") {
            FIELDSYNC_TRY(s, d.read_text());
            if (!valid_code(s))
                return d.fail(protocol_errc::invalid_value,
                              "an error code is 1 to 64 characters of a-z, 0-9 and _");
            r.code = std::move(s);
            has_code = true;
        } else if (k == "reason") {
            FIELDSYNC_TRY(s, d.read_text());
            r.reason = std::move(s);
        } else {
            return false;
        }
        return true;
    }));
    if (!has_ok) return d.missing("ok", "accepted or not");
    if (!r.ok && !has_code) return d.missing("code", "why the item was rejected");
    if (r.ok && (has_code || !r.reason.empty()))
        return d.fail(protocol_errc::invalid_value, "an accepted item has no code or reason");
    return r;
}

Result<Message> decode_push_ack(Decoder& d) {
    PushAck m;
    Seen seen;
    FIELDSYNC_CHECK(d.read_map([&](std::string_view k) -> Result<bool> {
        if (k == "batch") {
            FIELDSYNC_TRY(v, d.read_uint());
            m.batch = v;
            seen.mark(0);
        } else if (k == "results") {
            FIELDSYNC_CHECK(d.read_list(m.results, [&] { return decode_item_result(d); }));
            seen.mark(1);
        } else if (k == "cursor") {
            FIELDSYNC_TRY(v, d.read_uint());
            m.cursor = v;
            seen.mark(2);
        } else if (k == "server_time") {
            FIELDSYNC_TRY(v, d.read_uint());
            m.server_time = v;
            seen.mark(3);
        } else {
            return false;
        }
        return true;
    }));
    if (!seen.has(0)) return d.missing("batch", "batch id");
    if (!seen.has(1)) return d.missing("results", "one result per item");
    if (!seen.has(2)) return d.missing("cursor", "server cursor after the commit");
    if (!seen.has(3)) return d.missing("server_time", "server wall clock");
    return Message{std::move(m)};
}

// ---- pull (since protocol 1) ----

Result<Message> decode_pull(Decoder& d) {
    Pull m;
    Seen seen;
    FIELDSYNC_CHECK(d.read_map([&](std::string_view k) -> Result<bool> {
        if (k == "since") {
            FIELDSYNC_TRY(v, d.read_uint());
            m.since = v;
            seen.mark(0);
        } else if (k == "limit") {
            FIELDSYNC_TRY(v, d.read_uint());
            if (v == 0)
                return d.fail(protocol_errc::invalid_value, "a page holds at least 1 record");
            m.limit = v;
            seen.mark(1);
        } else {
            return false;
        }
        return true;
    }));
    if (!seen.has(0)) return d.missing("since", "cursor");
    if (!seen.has(1)) return d.missing("limit", "most records per page");
    return Message{std::move(m)};
}

// ---- changes and notify (since protocol 1) ----

Result<ChangeItem> decode_change_item(Decoder& d) {
    ChangeItem item;
    Seen seen;
    FIELDSYNC_CHECK(d.read_map([&](std::string_view k) -> Result<bool> {
        if (k == "seq") {
            FIELDSYNC_TRY(v, d.read_uint());
            item.seq = v;
            seen.mark(0);
        } else if (k == "sv") {
            FIELDSYNC_TRY(v, d.read_uint());
            item.schema_version = v;
            seen.mark(1);
        } else if (k == "rec") {
            FIELDSYNC_TRY(r, d.read_record());
            item.record = std::move(r);
            seen.mark(2);
        } else {
            return false;
        }
        return true;
    }));
    if (!seen.has(0)) return d.missing("seq", "server sequence");
    if (!seen.has(1)) return d.missing("sv", "schema version");
    if (!seen.has(2)) return d.missing("rec", "record state");
    return item;
}

Result<Message> decode_changes(Decoder& d) {
    Changes m;
    Seen seen;
    FIELDSYNC_CHECK(d.read_map([&](std::string_view k) -> Result<bool> {
        if (k == "since") {
            FIELDSYNC_TRY(v, d.read_uint());
            m.since = v;
            seen.mark(0);
        } else if (k == "cursor") {
            FIELDSYNC_TRY(v, d.read_uint());
            m.cursor = v;
            seen.mark(1);
        } else if (k == "more") {
            FIELDSYNC_TRY(v, d.read_bool());
            m.more = v;
            seen.mark(2);
        } else if (k == "items") {
            FIELDSYNC_CHECK(d.read_list(m.items, [&] { return decode_change_item(d); }));
            seen.mark(3);
        } else {
            return false;
        }
        return true;
    }));
    if (!seen.has(0)) return d.missing("since", "the pull's cursor");
    if (!seen.has(1)) return d.missing("cursor", "cursor to resume from");
    if (!seen.has(2)) return d.missing("more", "whether another page follows");
    if (!seen.has(3)) return d.missing("items", "changed records");
    return Message{std::move(m)};
}

Result<Message> decode_notify(Decoder& d) {
    Notify m;
    Seen seen;
    FIELDSYNC_CHECK(d.read_map([&](std::string_view k) -> Result<bool> {
        if (k == "since") {
            FIELDSYNC_TRY(v, d.read_uint());
            m.since = v;
            seen.mark(0);
        } else if (k == "cursor") {
            FIELDSYNC_TRY(v, d.read_uint());
            m.cursor = v;
            seen.mark(1);
        } else if (k == "items") {
            FIELDSYNC_CHECK(d.read_list(m.items, [&] { return decode_change_item(d); }));
            seen.mark(2);
        } else {
            return false;
        }
        return true;
    }));
    if (!seen.has(0)) return d.missing("since", "cursor the changes follow");
    if (!seen.has(1)) return d.missing("cursor", "cursor after the changes");
    if (!seen.has(2)) return d.missing("items", "changed records");
    return Message{std::move(m)};
}

// ---- revoke (since protocol 1) ----

Result<RecordRef> decode_record_ref(Decoder& d) {
    auto n = d.reader().read_array();
    if (!n) return d.wrap(n.error());
    if (*n != 2)
        return d.fail(
            protocol_errc::invalid_value,
            "a record reference is [collection, id], got an array of " + std::to_string(*n));
    if (auto s = d.reader().enter(); !s) return d.wrap(s.error());
    RecordRef ref;
    {
        auto g = d.index(0);
        FIELDSYNC_TRY(c, d.read_text());
        if (!valid_collection(c))
            return d.fail(protocol_errc::invalid_value, "a collection name is 1 to 64 bytes");
        ref.collection = std::move(c);
    }
    {
        auto g = d.index(1);
        FIELDSYNC_TRY(id, d.read_id());
        ref.id = id;
    }
    d.reader().leave();
    return ref;
}

Result<Message> decode_revoke(Decoder& d) {
    Revoke m;
    Seen seen;
    FIELDSYNC_CHECK(d.read_map([&](std::string_view k) -> Result<bool> {
        if (k == "cursor") {
            FIELDSYNC_TRY(v, d.read_uint());
            m.cursor = v;
            seen.mark(0);
        } else if (k == "records") {
            FIELDSYNC_CHECK(d.read_list(m.records, [&] { return decode_record_ref(d); }));
            seen.mark(1);
        } else {
            return false;
        }
        return true;
    }));
    if (!seen.has(0)) return d.missing("cursor", "cursor of the revocation");
    if (!seen.has(1)) return d.missing("records", "revoked records");
    return Message{std::move(m)};
}

// ---- digest_request and digest (since protocol 1) ----

Result<Message> decode_digest_request(Decoder& d) {
    FIELDSYNC_CHECK(d.read_map([](std::string_view) -> Result<bool> { return false; }));
    return Message{DigestRequest{}};
}

Result<Message> decode_digest(Decoder& d) {
    Digest m;
    Seen seen;
    FIELDSYNC_CHECK(d.read_map([&](std::string_view k) -> Result<bool> {
        if (k == "cursor") {
            FIELDSYNC_TRY(v, d.read_uint());
            m.cursor = v;
            seen.mark(0);
        } else if (k == "count") {
            FIELDSYNC_TRY(v, d.read_uint());
            m.count = v;
            seen.mark(1);
        } else if (k == "digest") {
            auto b = d.reader().read_bytes();
            if (!b) return d.wrap(b.error());
            if (b->size() != m.digest.size())
                return d.fail(protocol_errc::invalid_value,
                              "a digest is 32 bytes, got " + std::to_string(b->size()));
            std::copy(b->begin(), b->end(), m.digest.begin());
            seen.mark(2);
        } else {
            return false;
        }
        return true;
    }));
    if (!seen.has(0)) return d.missing("cursor", "cursor the digest is valid at");
    if (!seen.has(1)) return d.missing("count", "records in scope");
    if (!seen.has(2)) return d.missing("digest", "scope digest");
    return Message{std::move(m)};
}

// ---- error (since protocol 1) ----

Result<Message> decode_error(Decoder& d) {
    ErrorMessage m;
    Seen seen;
    FIELDSYNC_CHECK(d.read_map([&](std::string_view k) -> Result<bool> {
        if (k == "code") {
            FIELDSYNC_TRY(s, d.read_text());
            if (!valid_code(s))
                return d.fail(protocol_errc::invalid_value,
                              "an error code is 1 to 64 characters of a-z, 0-9 and _");
            m.code = std::move(s);
            seen.mark(0);
        } else if (k == "message") {
            FIELDSYNC_TRY(s, d.read_text());
            m.message = std::move(s);
            seen.mark(1);
        } else if (k == "fatal") {
            FIELDSYNC_TRY(v, d.read_bool());
            m.fatal = v;
            seen.mark(2);
        } else if (k == "ref") {
            FIELDSYNC_TRY(v, d.read_uint());
            m.ref = v;
        } else {
            return false;
        }
        return true;
    }));
    if (!seen.has(0)) return d.missing("code", "error code");
    if (!seen.has(1)) return d.missing("message", "what was wrong");
    if (!seen.has(2)) return d.missing("fatal", "whether the connection closes");
    return Message{std::move(m)};
}

// Index == Message variant index == type_names index. Every type: since protocol 1.
using DecodeFn = Result<Message> (*)(Decoder&);
constexpr DecodeFn decoders[] = {
    decode_hello,          decode_welcome, decode_push,   decode_push_ack,
    decode_pull,           decode_changes, decode_notify, decode_revoke,
    decode_digest_request, decode_digest,  decode_error,
};
static_assert(std::size(decoders) == std::variant_size_v<Message>);

// Pass 1: the index of the message type named by "t".
Result<std::size_t> find_type(ByteView bytes, const MessageLimits& limits) {
    Decoder d(bytes, limits, "message");
    CborReader& r = d.reader();
    auto n = r.read_map();
    if (!n) return d.wrap(n.error());
    if (auto s = r.enter(); !s) return d.wrap(s.error());
    for (std::size_t i = 0; i < *n; ++i) {
        auto k = r.read_text();
        if (!k) return d.wrap(k.error());
        auto g = d.key(is_valid_utf8(*k) ? *k : std::string_view("?"));
        if (*k != "t") {
            if (auto s = r.skip(); !s) return d.wrap(s.error());
            continue;
        }
        auto t = r.read_text();
        if (!t) return d.wrap(t.error());
        for (std::size_t idx = 0; idx < std::size(type_names); ++idx) {
            if (*t == type_names[idx]) return idx;
        }
        std::string shown =
            is_valid_utf8(*t) && t->size() <= 64 ? " \"" + std::string(*t) + "\"" : "";
        return d.fail(protocol_errc::unknown_message, "unknown message type" + shown +
                                                          " (this peer speaks protocol " +
                                                          std::to_string(protocol_version) + ")");
    }
    return d.missing("t", "message type");
}

#undef FIELDSYNC_TRY
#undef FIELDSYNC_CHECK
#undef FIELDSYNC_CHECK_N
#undef FIELDSYNC_CAT
#undef FIELDSYNC_CAT2

}  // namespace

Result<Message> decode_message(ByteView bytes, const MessageLimits& limits) {
    if (bytes.size() > limits.max_frame_bytes) {
        return Error{protocol_errc::limit_exceeded,
                     "message: frame of " + std::to_string(bytes.size()) +
                         " bytes exceeds the limit of " + std::to_string(limits.max_frame_bytes)};
    }
    auto type = find_type(bytes, limits);
    if (!type) return std::move(type).error();
    Decoder d(bytes, limits, type_names[*type]);
    Result<Message> m = decoders[*type](d);
    if (!m) return m;
    if (auto s = d.finish(); !s) return std::move(s).error();
    return m;
}

}  // namespace fieldsync::protocol
