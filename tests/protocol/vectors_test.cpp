// The test vectors of SPEC.md §9: protocol/vectors/*.txt, and their generator.
//
// "Vectors: every file ..." reads each file on its own (as a client in another language would)
// and checks it against the codec. "Vectors: the files are what the generator writes" rebuilds
// every vector from the definitions below and compares the text, so a change of the encoding
// cannot slip through without a visible change of the checked-in vectors.
//
// Regenerate (after a deliberate change of the wire format):
//   FIELDSYNC_WRITE_VECTORS=1 build/bin/protocol_tests -tc='Vectors: regenerate*'
// This rewrites protocol/vectors/*.txt and the seed corpus tests/fuzz/corpus/messages/.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "fieldsync/protocol/messages.hpp"
#include "fieldsync/protocol/value.hpp"

using namespace fieldsync::protocol;
namespace fs = std::filesystem;

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

const fs::path vectors_dir = fs::path(FIELDSYNC_SOURCE_DIR) / "protocol" / "vectors";
const fs::path corpus_dir =
    fs::path(FIELDSYNC_SOURCE_DIR) / "tests" / "fuzz" / "corpus" / "messages";

struct VectorSpec {
    std::string name;
    std::string kind;  // "message" or "record"
    std::string description;
    Bytes bytes;
    std::string error;  // expected code, empty for a valid vector
    std::string path;   // expected path of the error
};

Id128 hex_id(const char* hex) {
    return Id128::parse(hex).value();
}

const Id128 device_a = hex_id("5d1f0c3e8a7b4e2f9c6d0a1b2c3d4e5f");
const ReplicaId tablet_a = hex_id("a1b2c3d4e5f60718293a4b5c6d7e8f90");
const ReplicaId tablet_b = hex_id("b7c6d5e4f30211203f4e5d6c7b8a9988");
const ReplicaId server = hex_id("0f0e0d0c0b0a09080706050403020100");

HlcTimestamp at(std::uint64_t ms, std::uint64_t logical = 0) {
    return HlcTimestamp::from_parts(ms, logical);
}

// A household written by two tablets and the server, with every kind of field state.
RecordState record_full() {
    RecordState s;
    s.collection = "households";
    s.id = make_uuid_v7(1717000000000, {1, 2, 3, 4, 5, 6, 7, 8, 9, 10});
    {
        Update u(s, tablet_a, at(1717000000000), "enumerator-07");
        REQUIRE(u.set("head_name", MergeRule::review, std::string("巴特尔")));
        REQUIRE(u.set("poverty_status", MergeRule::review, std::string("national_line")));
        REQUIRE(u.set("gps", MergeRule::lww, GeoPoint{397234567, 1099876543}));
        REQUIRE(u.set("members", MergeRule::lww, std::int64_t{4}));
        REQUIRE(u.add_element("assistance", std::string("lambs_for_ewes")));
        REQUIRE(u.add_element("assistance", std::string("land_adoption")));
        REQUIRE(u.add_to_counter("visit_count", 1));
    }
    {
        Update u(s, tablet_b, at(1717000500000, 2), "enumerator-12");
        REQUIRE(u.remove_element("assistance", std::string("land_adoption")));
        REQUIRE(u.add_element("assistance", std::string("tourism_jobs")));
        REQUIRE(u.add_to_counter("visit_count", 2));
        REQUIRE(u.set("notes", MergeRule::lww, std::string("re-check after lambing season")));
    }
    {
        Update u(s, server, at(1717000900000), "supervisor-02");
        REQUIRE(u.add_to_counter("visit_count", -1));  // a double-counted visit
        REQUIRE(u.set("reviewed", MergeRule::lww, true));
        REQUIRE(u.set("exit_date", MergeRule::lww, Value{}));
    }
    return s;
}

// Another household, where tablet A edited the poverty status and income and then deleted the
// record while tablet B, offline, recorded different values: three fields hold competing values.
RecordState record_conflict() {
    RecordState base;
    base.collection = "households";
    base.id = make_uuid_v7(1717000000001, {11, 12, 13, 14, 15, 16, 17, 18, 19, 20});
    {
        Update u(base, tablet_a, at(1717000000001), "enumerator-07");
        REQUIRE(u.set("poverty_status", MergeRule::review, std::string("national_line")));
        REQUIRE(u.set("income", MergeRule::review, std::int64_t{3900}));
    }
    RecordState a = base, b = base;
    {
        Update u(a, tablet_a, at(1717100000000), "enumerator-07");
        REQUIRE(u.set("poverty_status", MergeRule::review, std::string("dibao_line")));
        REQUIRE(u.set("income", MergeRule::review, std::int64_t{4200}));
    }
    {
        Update u(a, tablet_a, at(1717100060000), "enumerator-07");
        u.mark_deleted();
    }
    {
        Update u(b, tablet_b, at(1717100030000), "enumerator-12");
        REQUIRE(u.set("poverty_status", MergeRule::review, std::string("exited")));
        REQUIRE(u.set("income", MergeRule::review, std::int64_t{12500}));
    }
    REQUIRE(a.join(b));
    return a;
}

Bytes bytes_of(const Message& m) {
    return encode_message(m);
}

// Rewrites the top-level map of `msg`: `edit(writer, key, value bytes)` re-emits each entry.
template <class Edit>
Bytes rewrite(const Bytes& msg, std::size_t new_count, Edit edit) {
    CborReader r(msg);
    const std::size_t n = r.read_map().value();
    CborWriter w;
    w.map(new_count);
    for (std::size_t i = 0; i < n; ++i) {
        const std::string key(r.read_text().value());
        const std::size_t v0 = r.position();
        REQUIRE(r.skip());
        edit(w, key,
             Bytes(msg.begin() + static_cast<std::ptrdiff_t>(v0),
                   msg.begin() + static_cast<std::ptrdiff_t>(r.position())));
    }
    return w.take();
}

std::vector<VectorSpec> build_vectors() {
    std::vector<VectorSpec> v;
    const RecordState full = record_full();
    const RecordState conflict = record_conflict();

    // ---- records (SPEC.md §3.4)
    v.push_back({"record_full", "record",
                 "A household written by tablet A, tablet B and the server: review (head_name, "
                 "poverty_status), lww (gps, members, notes, reviewed, exit_date = null), set "
                 "(assistance; land_adoption removed by B after seeing A's add), counter "
                 "(visit_count = 1 + 2 - 1 = 2) and _deleted = [false] written by the last update.",
                 encode_record(full), "", ""});
    v.push_back({"record_conflict", "record",
                 "A household in conflict: tablet A set poverty_status = dibao_line and income = "
                 "4200 and then deleted the record, while tablet B concurrently set poverty_status "
                 "= exited and income = 12500. poverty_status, income and _deleted each hold two "
                 "entries (a supervisor resolves them, SPEC.md §3.5).",
                 encode_record(conflict), "", ""});

    // ---- messages (SPEC.md §5)
    Hello hello;
    hello.device = device_a;
    hello.replica = tablet_a;
    hello.app = "fieldsync-demo/0.1.0 (android 13)";
    hello.auth = PasswordAuth{"enumerator-07", "correct horse"};
    hello.schema_version = 0;
    hello.cursor = 0;
    hello.clock = 1717000000123;
    v.push_back({"hello_password", "message",
                 "First contact of a new tablet: no schema, no cursor, user name and password.",
                 bytes_of(hello), "", ""});
    hello.auth = TokenAuth{"sess-9f8e7d6c5b4a"};
    hello.schema_version = 3;
    hello.cursor = 1200;
    v.push_back({"hello_token", "message",
                 "Reconnect with the session token from an earlier welcome; the tablet holds "
                 "schema 3 and cursor 1200.",
                 bytes_of(hello), "", ""});
    hello.version = 2;
    hello.min_version = 1;
    v.push_back({"hello_version_range", "message",
                 "A client that speaks protocols 1 to 2 (v_min is sent because it is lower than "
                 "v); a protocol-1 server answers with v = 1.",
                 bytes_of(hello), "", ""});

    Welcome welcome;
    welcome.user = "enumerator-07";
    welcome.role = "enumerator";
    welcome.scope = {"ordos/ejin-horo/altan-xire", "ordos/dalad/shulinzhao/bayan"};
    welcome.schema_version = 4;
    welcome.schema = R"({"name":"household-survey","version":4})";
    welcome.server_time = 1717000000456;
    welcome.token = "sess-9f8e7d6c5b4a";
    welcome.limits = {4194304, 500};
    v.push_back({"welcome", "message",
                 "The server accepts: schema 4 is sent because the tablet held another version; "
                 "a session token for reconnects.",
                 bytes_of(welcome), "", ""});
    welcome.schema.reset();
    welcome.token.reset();
    welcome.role = "supervisor";
    welcome.user = "supervisor-02";
    welcome.scope = {"ordos/ejin-horo"};
    v.push_back({"welcome_same_schema", "message",
                 "The device already holds the current schema, so there is no \"schema\" key; "
                 "no token.",
                 bytes_of(welcome), "", ""});

    v.push_back({"push", "message",
                 "Batch 17 with both record states of the record vectors, written under schema 4.",
                 bytes_of(Push{17, {PushItem{4, full}, PushItem{4, conflict}}}), "", ""});
    v.push_back({"push_ack", "message",
                 "The server's answer to a batch of three: accepted; refused as forbidden with a "
                 "reason; refused as validation_failed without one.",
                 bytes_of(PushAck{17,
                                  {ItemResult{},
                                   ItemResult{false, "forbidden",
                                              "area ordos/otog is outside your assigned areas"},
                                   ItemResult{false, "validation_failed", ""}},
                                  1302,
                                  1717000001000}),
                 "", ""});
    v.push_back({"pull", "message", "Ask for up to 100 changes after cursor 1200.",
                 bytes_of(Pull{1200, 100}), "", ""});
    v.push_back({"changes", "message",
                 "One page of one change; more pages follow (more = true): pull again from 1301.",
                 bytes_of(Changes{1200, 1301, true, {ChangeItem{1301, 4, full}}}), "", ""});
    v.push_back({"changes_last_page", "message",
                 "The last, empty page: the client is up to date at cursor 1302.",
                 bytes_of(Changes{1302, 1302, false, {}}), "", ""});
    v.push_back({"notify", "message", "A live change while connected, following cursor 1302.",
                 bytes_of(Notify{1302, 1303, {ChangeItem{1303, 4, conflict}}}), "", ""});
    v.push_back({"revoke", "message",
                 "Two records left the device's scope at cursor 1304 and must be removed.",
                 bytes_of(Revoke{1304,
                                 {RecordRef{"households", full.id},
                                  RecordRef{"visits", make_uuid_v7(1717000000002, {})}}}),
                 "", ""});
    v.push_back({"digest_request", "message", "Ask for the digest of the scope.",
                 bytes_of(DigestRequest{}), "", ""});
    ScopeDigest scope;
    scope.add(full);
    scope.add(conflict);
    v.push_back({"digest", "message",
                 "The digest of a scope holding exactly the states of record_full and "
                 "record_conflict (SPEC.md §6.3): the sum mod 2^256 of their SHA-256 digests.",
                 bytes_of(Digest{1304, scope.count(), scope.value()}), "", ""});
    v.push_back(
        {"error", "message", "A non-fatal error about push batch 17.",
         bytes_of(ErrorMessage{"validation_failed",
                               "push.items[0].rec.f.income: expected an integer", 17, false}),
         "", ""});
    v.push_back({"error_fatal", "message",
                 "The server refuses the protocol version and closes the connection.",
                 bytes_of(ErrorMessage{"unsupported_version",
                                       "hello.v: the client speaks protocol 2..2, this server "
                                       "speaks 1..1",
                                       std::nullopt, true}),
                 "", ""});

    // ---- valid, but not as an encoder writes them: re-encoding gives the "canonical" bytes
    {
        CborWriter w;
        w.map(5);
        kv(w, "t", "pull");
        w.text("hint");
        w.map(1);
        w.text("prefer");
        w.array(2);
        w.text("households");
        w.int64(-1);
        kv(w, "limit", 100);
        kv(w, "since", 1200);
        w.text("zz_from_v9");
        w.bytes(Bytes{0xca, 0xfe});
        v.push_back({"unknown_keys_ignored", "message",
                     "Keys unknown to the receiver, of any type, are skipped: this is pull "
                     "{since 1200, limit 100}.",
                     w.take(), "", ""});
    }
    {
        CborWriter w;
        w.map(3);
        kv(w, "since", 1200);
        w.raw(from_hex("65"
                       "6c696d6974"
                       "1864")
                  .value());  // "limit": 100 as a one-byte-argument head
        kv(w, "t", "pull");
        v.push_back({"non_canonical_accepted", "message",
                     "Keys out of order and an integer in a longer form than needed are accepted; "
                     "re-encoding gives the canonical bytes.",
                     w.take(), "", ""});
    }

    // ---- invalid
    auto bad = [&](std::string name, std::string description, Bytes b, std::string code,
                   std::string path) {
        v.push_back({"invalid_" + std::move(name), "message", std::move(description), std::move(b),
                     std::move(code), std::move(path)});
    };
    {
        CborWriter w;
        w.map(1);
        kv(w, "t", "gossip");
        bad("unknown_type", "A message type this protocol version does not know.", w.take(),
            "unknown_message", "message.t");
    }
    {
        CborWriter w;
        w.map(2);
        kv(w, "limit", 100);
        kv(w, "since", 0);
        bad("missing_type", "A map without \"t\".", w.take(), "missing_field", "message.t");
    }
    {
        CborWriter w;
        w.array(2);
        kv(w, "t", "pull");
        bad("not_a_map", "A frame is one map, not an array.", w.take(), "wrong_type", "message");
    }
    Hello h;
    h.device = device_a;
    h.replica = tablet_a;
    h.app = "fieldsync-demo/0.1.0";
    h.auth = TokenAuth{"sess-9f8e7d6c5b4a"};
    h.clock = 1717000000123;
    const Bytes hb = bytes_of(h);
    bad("missing_device", "hello without \"device\".",
        rewrite(hb, 8,
                [](CborWriter& w, const std::string& k, const Bytes& val) {
                    if (k == "device") return;
                    w.text(k);
                    w.raw(val);
                }),
        "missing_field", "hello.device");
    bad("short_replica", "hello whose replica id has 15 bytes instead of 16.",
        rewrite(hb, 9,
                [](CborWriter& w, const std::string& k, const Bytes& val) {
                    w.text(k);
                    if (k == "replica")
                        w.bytes(Bytes(15, 0xa1));
                    else
                        w.raw(val);
                }),
        "invalid_value", "hello.replica");
    {
        Hello u = h;
        u.app = std::string("fieldsync\xc3\x28");
        bad("bad_utf8", "hello whose app text is not valid UTF-8 (0xc3 0x28).", bytes_of(u),
            "invalid_value", "hello.app");
    }
    {
        CborWriter w;
        w.map(3);
        kv(w, "t", "pull");
        kv(w, "limit", 100);
        kv(w, "since", "1200");
        bad("wrong_type", "pull whose since is a text string.", w.take(), "wrong_type",
            "pull.since");
    }
    {
        CborWriter w;
        w.map(4);
        kv(w, "t", "pull");
        kv(w, "limit", 100);
        kv(w, "limit", 5);
        kv(w, "since", 1200);
        bad("duplicate_key", "pull with \"limit\" twice.", w.take(), "malformed", "pull.limit");
    }
    {
        Bytes b = bytes_of(Pull{1200, 100});
        b.push_back(0x00);
        bad("trailing_bytes", "A pull followed by one more byte in the same frame.", b, "malformed",
            "pull");
    }
    {
        Bytes b = bytes_of(Pull{1200, 100});
        b.pop_back();
        bad("truncated", "A pull missing its last byte.", b, "malformed", "pull.since");
    }
    {
        // records: an indefinite-length array, which the CBOR profile excludes (SPEC.md §2.1)
        CborWriter x;
        x.map(3);
        kv(x, "t", "revoke");
        kv(x, "cursor", 1304);
        x.text("records");
        x.raw(from_hex("9fff").value());
        bad("indefinite_length", "revoke whose records list has indefinite length.", x.take(),
            "malformed", "revoke.records");
    }
    {
        CborWriter w;
        w.map(3);
        kv(w, "t", "pull");
        w.text("limit");
        w.raw(from_hex("f95640").value());  // 100.0 as a half float
        kv(w, "since", 1200);
        bad("float", "pull whose limit is a floating-point number.", w.take(), "malformed",
            "pull.limit");
    }
    {
        CborWriter w;
        w.map(3);
        kv(w, "t", "push");
        kv(w, "batch", 17);
        w.text("items");
        w.array(1);
        w.map(2);
        kv(w, "sv", 4);
        w.text("rec");
        w.map(4);
        kv(w, "c", "households");
        w.text("f");
        w.map(0);
        w.text("id");
        w.bytes(full.id.bytes);
        kv(w, "ctx", "none");
        bad("record_ctx", "push whose record state has a text string as its causal context.",
            w.take(), "wrong_type", "push.items[0].rec.ctx");
    }
    {
        RecordState s = full;
        std::get<LwwState>(s.fields.at("notes")).entry.dot.counter = 5;  // B's context is 1
        bad("uncovered_dot",
            "push whose record holds a dot its context does not cover (merge law L12).",
            bytes_of(Push{17, {PushItem{4, s}}}), "invalid_value", "push.items[0].rec.f.notes");
    }
    bad("huge_count",
        "push whose items list declares 4294967295 entries in a 26-byte frame: refused before "
        "anything is reserved.",
        from_hex("a36174647075736865626174636811656974656d739affffffff").value(), "limit_exceeded",
        "push.items");
    {
        CborWriter w;
        w.map(4);
        kv(w, "t", "pull");
        w.text("deep");
        for (int i = 0; i < 40; ++i)
            w.array(1);
        w.uint(0);
        kv(w, "limit", 100);
        kv(w, "since", 1200);
        bad("deep_nesting",
            "pull with an unknown key nesting 40 arrays: skipped values count against the depth "
            "limit (32) too.",
            w.take(), "limit_exceeded", "pull.deep");
    }
    {
        CborWriter w;
        w.map(5);
        kv(w, "t", "push_ack");
        kv(w, "batch", 17);
        kv(w, "cursor", 1302);
        w.text("results");
        w.array(1);
        w.map(1);
        w.text("ok");
        w.boolean(false);
        kv(w, "server_time", 1717000001000);
        bad("result_without_code", "push_ack with a refused item that does not say why.", w.take(),
            "missing_field", "push_ack.results[0].code");
    }
    return v;
}

std::string render(const VectorSpec& s) {
    std::ostringstream o;
    o << "name: " << s.name << "\n";
    o << "kind: " << s.kind << "\n";
    o << "description: " << s.description << "\n";
    // Text that is not UTF-8 cannot be shown in diagnostic notation (and the file is UTF-8).
    if (auto d = to_diagnostic(s.bytes); d && is_valid_utf8(*d)) o << "diagnostic: " << *d << "\n";
    o << "hex: " << to_hex(s.bytes) << "\n";
    if (s.error.empty() && s.kind == "message") {
        auto m = decode_message(s.bytes);
        REQUIRE_MESSAGE(m.ok(), s.name << ": " << m.error().message);
        const Bytes canonical = encode_message(*m);
        if (canonical != s.bytes) o << "canonical: " << to_hex(canonical) << "\n";
    }
    if (!s.error.empty()) {
        o << "error: " << s.error << "\n";
        o << "path: " << s.path << "\n";
    }
    return o.str();
}

std::string read_text_file(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    std::ostringstream o;
    o << in.rdbuf();
    return o.str();
}

// "key: value" lines; '#' starts a comment line.
std::map<std::string, std::string> parse_vector(const std::string& text) {
    std::map<std::string, std::string> out;
    std::istringstream in(text);
    std::string line;
    while (std::getline(in, line)) {
        if (line.empty() || line[0] == '#') continue;
        const auto colon = line.find(": ");
        REQUIRE_MESSAGE(colon != std::string::npos, "bad line: " << line);
        REQUIRE_MESSAGE(out.emplace(line.substr(0, colon), line.substr(colon + 2)).second,
                        "repeated key: " << line);
    }
    return out;
}

std::vector<fs::path> vector_files() {
    std::vector<fs::path> files;
    if (fs::is_directory(vectors_dir)) {
        for (const auto& e : fs::directory_iterator(vectors_dir))
            if (e.path().extension() == ".txt") files.push_back(e.path());
    }
    std::sort(files.begin(), files.end());
    return files;
}

}  // namespace

TEST_SUITE_BEGIN("Vectors");

TEST_CASE("Vectors: every file decodes, re-encodes and fails as it says") {
    const auto files = vector_files();
    REQUIRE(files.size() >= 20);
    int valid = 0, invalid = 0;
    for (const auto& file : files) {
        CAPTURE(file.filename().string());
        auto v = parse_vector(read_text_file(file));
        REQUIRE(v.count("name"));
        REQUIRE(v.count("kind"));
        REQUIRE(v.count("description"));
        REQUIRE(v.count("hex"));
        CHECK(v["name"] == file.stem().string());
        const Bytes bytes = from_hex(v["hex"]).value();
        if (v.count("diagnostic")) {
            CHECK(to_diagnostic(bytes).value() == v["diagnostic"]);
        } else {
            // Omitted only when the bytes are not well-formed or hold text that is not UTF-8.
            auto d = to_diagnostic(bytes);
            CHECK((!d.ok() || !is_valid_utf8(*d)));
        }
        if (v.count("error")) {
            ++invalid;
            REQUIRE(v.count("path"));
            const auto want = parse_errc(v["error"]);
            REQUIRE(want.has_value());
            REQUIRE(v["kind"] == "message");
            auto m = decode_message(bytes);
            REQUIRE_FALSE(m.ok());
            CHECK(m.error().code == *want);
            CHECK_MESSAGE(m.error().message.rfind(v["path"] + ": ", 0) == 0, m.error().message);
            continue;
        }
        ++valid;
        const Bytes canonical = v.count("canonical") ? from_hex(v["canonical"]).value() : bytes;
        if (v["kind"] == "record") {
            auto r = decode_record(bytes);
            REQUIRE_MESSAGE(r.ok(), r.error().message);
            CHECK(encode_record(*r) == canonical);
        } else {
            REQUIRE(v["kind"] == "message");
            auto m = decode_message(bytes);
            REQUIRE_MESSAGE(m.ok(), m.error().message);
            CHECK(encode_message(*m) == canonical);
            CHECK(decode_message(canonical).ok());
        }
    }
    MESSAGE(valid << " valid and " << invalid << " invalid vectors");
    CHECK(valid >= 15);
    CHECK(invalid >= 10);
}

TEST_CASE("Vectors: every message type and every field-state kind is covered") {
    std::set<std::string> types;
    std::set<MergeRule> rules;
    bool deleted_conflict = false;
    for (const auto& file : vector_files()) {
        auto v = parse_vector(read_text_file(file));
        if (v.count("error")) continue;
        const Bytes bytes = from_hex(v["hex"]).value();
        if (v["kind"] == "message") {
            types.insert(std::string(message_type(decode_message(bytes).value())));
        } else {
            auto r = decode_record(bytes).value();
            for (const auto& [name, state] : r.fields)
                rules.insert(rule_of(state));
            for (const auto& c : r.conflicts())
                deleted_conflict |= c == deleted_field;
        }
    }
    CHECK(types.size() == std::variant_size_v<Message>);
    CHECK(rules.size() == 4);
    CHECK(deleted_conflict);
}

TEST_CASE("Vectors: the digest vector is the digest of the record vectors") {
    auto record = [](const char* name) {
        auto v = parse_vector(read_text_file(vectors_dir / (std::string(name) + ".txt")));
        return decode_record(from_hex(v["hex"]).value()).value();
    };
    ScopeDigest d;
    d.add(record("record_conflict"));  // order does not matter
    d.add(record("record_full"));
    auto v = parse_vector(read_text_file(vectors_dir / "digest.txt"));
    auto m = decode_message(from_hex(v["hex"]).value()).value();
    const auto& digest = std::get<Digest>(m);
    CHECK(digest.digest == d.value());
    CHECK(digest.count == 2);
}

TEST_CASE("Vectors: the files are what the generator writes") {
    std::set<std::string> expected;
    for (const auto& spec : build_vectors()) {
        CAPTURE(spec.name);
        expected.insert(spec.name + ".txt");
        const fs::path file = vectors_dir / (spec.name + ".txt");
        REQUIRE_MESSAGE(fs::exists(file), "missing; regenerate with FIELDSYNC_WRITE_VECTORS=1");
        CHECK_MESSAGE(read_text_file(file) == render(spec),
                      "stale; regenerate with FIELDSYNC_WRITE_VECTORS=1");
        if (!spec.error.empty()) {
            auto m = decode_message(spec.bytes);
            REQUIRE_FALSE(m.ok());
            CHECK(to_string(static_cast<protocol_errc>(m.error().code.value())) == spec.error);
        }
    }
    for (const auto& file : vector_files())
        CHECK_MESSAGE(expected.count(file.filename().string()), file << " has no generator entry");
}

TEST_CASE("Vectors: regenerate" *
          doctest::skip(std::getenv("FIELDSYNC_WRITE_VECTORS") == nullptr)) {
    fs::create_directories(vectors_dir);
    fs::create_directories(corpus_dir);
    for (const auto& spec : build_vectors()) {
        std::ofstream(vectors_dir / (spec.name + ".txt"), std::ios::binary) << render(spec);
        std::ofstream corpus(corpus_dir / (spec.name + ".cbor"), std::ios::binary);
        corpus.write(reinterpret_cast<const char*>(spec.bytes.data()),
                     static_cast<std::streamsize>(spec.bytes.size()));
    }
    MESSAGE("wrote " << build_vectors().size() << " vectors to " << vectors_dir);
}

TEST_SUITE_END();
