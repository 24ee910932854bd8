// The bad-input catalogue: one TEST_CASE per kind of hostile input, each asserting the error the
// protocol (protocol/SPEC.md §2, §4.4, §7) or the API (docs/api.md "Errors") documents, and that
// the store did not change: every row of every table is compared before and after
// (Fixture::dump, security_fixture.hpp). Sync sessions must survive a bad frame once
// authenticated (SPEC.md §7) and be closed before (nothing is trusted yet).
//
// The fixture here has small limits so the limit cases stay cheap: 64 KiB frames, 5 items per
// push, 64 KiB HTTP bodies.
#include <cstring>
#include <set>

#include "security_fixture.hpp"
#include "static_files.hpp"

using namespace sectest;

namespace {

Fixture::Options small_limits() {
    Fixture::Options o;
    o.max_frame = 64 * 1024;
    o.max_batch = 5;
    o.max_body = 64 * 1024;
    return o;
}

// A frame built by hand (for inputs the encoder would never produce).
template <class F>
p::Bytes cbor(F&& fn) {
    p::CborWriter w;
    fn(w);
    return w.take();
}

p::Bytes cat(p::Bytes a, std::initializer_list<std::uint8_t> b) {
    a.insert(a.end(), b.begin(), b.end());
    return a;
}

// Replaces the first occurrence of `from` in `b` with `to`.
p::Bytes patch(p::Bytes b, const p::Bytes& from, const p::Bytes& to) {
    auto it = std::search(b.begin(), b.end(), from.begin(), from.end());
    REQUIRE_MESSAGE(it != b.end(), "pattern not found in the frame");
    const auto at = it - b.begin();
    b.erase(b.begin() + at, b.begin() + at + static_cast<std::ptrdiff_t>(from.size()));
    b.insert(b.begin() + at, to.begin(), to.end());
    return b;
}

// bstr(16) as encoded: head 0x50 then the bytes.
p::Bytes id_bytes(const p::Id128& id) {
    p::Bytes b{0x50};
    b.insert(b.end(), id.bytes.begin(), id.bytes.end());
    return b;
}

// {"t": "pull", "since": 0, "limit": 10} plus `extra` more pairs written by `more`.
template <class F>
p::Bytes pull_with(std::size_t extra, F&& more) {
    return cbor([&](p::CborWriter& w) {
        w.map(3 + extra);
        w.text("t");
        w.text("pull");
        w.text("since");
        w.uint(0);
        w.text("limit");
        w.uint(10);
        more(w);
    });
}

// An authenticated enum-a tablet that has pulled everything (so later pulls change nothing in
// the devices table), and the store as it stands.
struct Session {
    Fixture& f;
    Tablet& t;
    std::map<std::string, std::string> before;
    std::vector<p::ChangeItem> held;

    explicit Session(Fixture& fx, const std::string& user = "enum-a", std::uint32_t n = 10)
        : f(fx), t(fx.connect(user, n)) {
        held = t.pull_all();
        before = f.dump();
    }
    p::RecordState state_of(const p::RecordId& id) {
        for (const auto& it : held)
            if (it.record.id == id) return it.record;
        FAIL("the tablet holds no record " << id.to_string());
        return {};
    }
    /// Sends a frame that must be refused with `code` (not fatal); the store must be unchanged
    /// and the session must still answer.
    p::ErrorMessage refuse(p::Bytes frame, const std::string& code,
                           const std::string& path_prefix = "") {
        t.send_raw(std::move(frame));
        auto e = t.next_error();
        CHECK(e.code == code);
        CHECK_FALSE(e.fatal);
        CHECK_FALSE(t.closed);
        if (!path_prefix.empty())
            CHECK_MESSAGE(e.message.rfind(path_prefix, 0) == 0, "message: " << e.message);
        check_unchanged(before, f.dump());
        alive();
        return e;
    }
    /// The session still works: a pull from the current cursor answers with changes.
    void alive() {
        t.send(p::Pull{0, 1});
        CHECK(t.next_as<p::Changes>().since == 0);
        before = f.dump();  // the pull records the device's cursor
    }
    /// Pushes one item that must be refused with `code`, its reason containing `words`; the
    /// store must be unchanged.
    void refuse_item(p::RecordState r, const std::string& code, const std::string& words,
                     std::uint64_t sv = 1) {
        auto res = t.push_one(std::move(r), sv);
        CHECK_FALSE(res.ok);
        CHECK(res.code == code);
        CHECK_MESSAGE(res.reason.find(words) != std::string::npos, "reason: " << res.reason);
        check_unchanged(before, f.dump());
    }
};

// A tablet that has not said hello yet; `frame` is its first message and must end the session.
p::ErrorMessage refuse_before_hello(Fixture& f, p::Bytes frame, const std::string& code,
                                    std::uint32_t n = 50) {
    auto before = f.dump();
    Tablet& t = f.tablet("enum-a", n);
    t.send_raw(std::move(frame));
    auto e = t.next_error();
    CHECK(e.code == code);
    CHECK(e.fatal);
    CHECK(t.closed);
    check_unchanged(before, f.dump());
    return e;
}

// An HTTP request that must fail with `status` and `code` and change nothing.
Reply refuse_http(Fixture& f, unsigned status, const std::string& code, const std::string& method,
                  const std::string& target, const std::string& body = "",
                  const std::string& token = "",
                  const std::string& content_type = "application/json",
                  const std::string& authorization = "") {
    auto before = f.dump();
    Reply r = f.http(method, target, body, token, content_type, authorization);
    INFO(method << " " << target << " " << body.substr(0, 80) << " -> " << r.status << " "
                << r.raw.substr(0, 300));
    CHECK(r.status == status);
    CHECK(r.code() == code);
    CHECK_FALSE(r.message().empty());
    check_unchanged(before, f.dump());
    return r;
}

}  // namespace

// =============================================================================================
// Sync: frames that are not well-formed messages
// =============================================================================================

TEST_CASE("Bad input: a truncated CBOR frame is malformed; the session goes on") {
    Fixture f(small_limits());
    Session s(f);
    p::Push push{7, {p::PushItem{1, household(s.t, 100, village_a)}}};
    p::Bytes frame = p::encode_message(push);
    for (std::size_t cut : {std::size_t{1}, frame.size() / 2, frame.size() - 1}) {
        CAPTURE(cut);
        s.refuse(p::Bytes(frame.begin(), frame.begin() + static_cast<std::ptrdiff_t>(cut)),
                 "malformed");
    }
}

TEST_CASE("Bad input: bytes that are not CBOR, or nothing at all") {
    Fixture f(small_limits());
    SUBCASE("before hello the connection ends (close 1002) and nothing is stored") {
        refuse_before_hello(f, {0xff}, "malformed");
        CHECK(f.tablets.back()->close_code == 1002);
        refuse_before_hello(f, {}, "malformed", 51);
        refuse_before_hello(f, {0x1c}, "malformed", 52);  // reserved additional info
    }
    SUBCASE("after hello the error is not fatal") {
        Session s(f);
        s.refuse({0xff}, "malformed");
        s.refuse({}, "malformed");
        s.refuse({0x1c, 0x00}, "malformed");
    }
}

TEST_CASE("Bad input: bytes after the message map") {
    Fixture f(small_limits());
    Session s(f);
    s.refuse(cat(p::encode_message(p::Pull{0, 10}), {0x00}), "malformed");
    s.refuse(cat(p::encode_message(p::Pull{0, 10}), {0xa0}), "malformed");
}

TEST_CASE("Bad input: a frame over max_frame is refused before it is decoded") {
    Fixture f(small_limits());
    // A pull carrying 70 KiB in an unknown key (skippable, but the frame is too big).
    const std::string big(70 * 1024, 'x');
    p::Bytes frame = pull_with(1, [&](p::CborWriter& w) {
        w.text("padding");
        w.text(big);
    });
    SUBCASE("after hello: limit_exceeded, not fatal") {
        Session s(f);
        auto e = s.refuse(frame, "limit_exceeded");
        CHECK(e.message.find("65536") != std::string::npos);
    }
    SUBCASE("before hello: fatal") {
        refuse_before_hello(f, frame, "limit_exceeded");
    }
    SUBCASE("a push whose record state is too big is refused whole") {
        Session s(f);
        auto rec = household(s.t, 101, village_a);
        edit(s.t, rec, "notes", p::MergeRule::lww, std::string(70 * 1024, 'n'), t0 - 1000);
        s.refuse(p::encode_message(p::Push{1, {p::PushItem{1, rec}}}), "limit_exceeded");
    }
}

TEST_CASE("Bad input: nesting deeper than 32 levels") {
    Fixture f(small_limits());
    Session s(f);
    // Inside a key nobody knows: skipped values count against the depth limit too (§2.3).
    s.refuse(pull_with(1,
                       [](p::CborWriter& w) {
                           w.text("deep");
                           for (int i = 0; i < 40; ++i)
                               w.array(1);
                           w.uint(0);
                       }),
             "limit_exceeded", "pull.deep");
    // Inside a record state: an unknown field whose value nests 40 maps.
    // An unknown key of a push item nesting 40 maps: {"sv", "zz": {"k": {"k": ...}}, "rec"}.
    auto rec = household(s.t, 102, village_a);
    p::Bytes deep = cbor([&](p::CborWriter& w) {
        w.map(3);
        w.text("t");
        w.text("push");
        w.text("batch");
        w.uint(1);
        w.text("items");
        w.array(1);
        w.map(3);
        w.text("sv");
        w.uint(1);
        w.text("zz");
        for (int i = 0; i < 40; ++i) {
            w.map(1);
            w.text("k");
        }
        w.uint(0);
        w.text("rec");
        w.raw(p::encode_record(rec));
    });
    s.refuse(deep, "limit_exceeded", "push.items[0].zz");
}

TEST_CASE("Bad input: huge array and map counts are refused before anything is reserved") {
    Fixture f(small_limits());
    Session s(f);
    SUBCASE("push.items declaring 4294967295 entries") {
        p::Bytes frame = cbor([](p::CborWriter& w) {
            w.map(3);
            w.text("t");
            w.text("push");
            w.text("batch");
            w.uint(1);
            w.text("items");
        });
        s.refuse(cat(frame, {0x9a, 0xff, 0xff, 0xff, 0xff}), "limit_exceeded", "push.items");
    }
    SUBCASE("push.items with 1001 entries (over the list limit of 1000)") {
        p::Bytes frame = cbor([](p::CborWriter& w) {
            w.map(3);
            w.text("t");
            w.text("push");
            w.text("batch");
            w.uint(1);
            w.text("items");
            w.array(1001);
        });
        frame.insert(frame.end(), 1001, 0x00);
        s.refuse(frame, "limit_exceeded", "push.items");
    }
    SUBCASE("an unknown key holding an array of 2^40 entries") {
        p::Bytes frame = pull_with(1, [](p::CborWriter& w) { w.text("zz"); });
        s.refuse(cat(frame, {0x9b, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00}),
                 "limit_exceeded");
    }
    SUBCASE("a map declaring more pairs than the bytes left can hold") {
        // 1000 pairs need at least 2000 bytes; 3 follow (SPEC.md §2.2: malformed).
        s.refuse({0xb9, 0x03, 0xe8, 0x61, 0x74, 0x00}, "malformed");
    }
}

TEST_CASE("Bad input: a push over the server's max_batch is refused whole, with ref") {
    Fixture f(small_limits());
    Session s(f);
    p::Push push;
    push.batch = 4242;
    for (std::uint32_t i = 0; i < 6; ++i)
        push.items.push_back(p::PushItem{1, household(s.t, 200 + i, village_a)});
    auto e = s.refuse(p::encode_message(push), "limit_exceeded", "push.items");
    REQUIRE(e.ref.has_value());
    CHECK(*e.ref == 4242);
}

TEST_CASE("Bad input: items of the wrong CBOR type") {
    Fixture f(small_limits());
    Session s(f);
    s.refuse(cbor([](p::CborWriter& w) {
                 w.map(3);
                 w.text("t");
                 w.text("pull");
                 w.text("since");
                 w.uint(0);
                 w.text("limit");
                 w.text("ten");
             }),
             "wrong_type", "pull.limit");
    s.refuse(cbor([](p::CborWriter& w) {
                 w.map(3);
                 w.text("t");
                 w.text("push");
                 w.text("batch");
                 w.uint(1);
                 w.text("items");
                 w.map(0);
             }),
             "wrong_type", "push.items");
    s.refuse(cbor([](p::CborWriter& w) {  // a map key that is not text
                 w.map(3);
                 w.text("t");
                 w.text("pull");
                 w.uint(1);
                 w.uint(0);
                 w.text("limit");
                 w.uint(10);
             }),
             "wrong_type");
    s.refuse(cbor([](p::CborWriter& w) { w.array(0); }), "wrong_type");  // not a map
    s.refuse(cbor([](p::CborWriter& w) {                                 // "t" is not text
                 w.map(1);
                 w.text("t");
                 w.uint(3);
             }),
             "wrong_type");
}

TEST_CASE("Bad input: a required key is missing") {
    Fixture f(small_limits());
    Session s(f);
    s.refuse(cbor([](p::CborWriter& w) {
                 w.map(2);
                 w.text("t");
                 w.text("pull");
                 w.text("since");
                 w.uint(0);
             }),
             "missing_field", "pull.limit");
    s.refuse(cbor([](p::CborWriter& w) {
                 w.map(1);
                 w.text("since");
                 w.uint(0);
             }),
             "missing_field");
    s.refuse(cbor([](p::CborWriter& w) {  // an item without its record
                 w.map(3);
                 w.text("t");
                 w.text("push");
                 w.text("batch");
                 w.uint(1);
                 w.text("items");
                 w.array(1);
                 w.map(1);
                 w.text("sv");
                 w.uint(1);
             }),
             "missing_field", "push.items[0].rec");
}

TEST_CASE("Bad input: an unknown message type is answered with unknown_message (SPEC.md §2.3)") {
    Fixture f(small_limits());
    const p::Bytes gossip = cbor([](p::CborWriter& w) {
        w.map(2);
        w.text("t");
        w.text("gossip");
        w.text("peers");
        w.array(0);
    });
    SUBCASE("after hello: not fatal, the session goes on") {
        Session s(f);
        auto e = s.refuse(gossip, "unknown_message", "message.t");
        CHECK(e.message.find("gossip") != std::string::npos);
    }
    SUBCASE("before hello: nothing is trusted, the connection ends") {
        refuse_before_hello(f, gossip, "unknown_message");
    }
}

TEST_CASE("Bad input: messages only a server sends, and a second hello") {
    Fixture f(small_limits());
    Session s(f);
    p::Welcome w;
    w.user = "admin";
    w.role = "admin";
    w.limits.max_batch = 1;
    w.limits.max_frame = 1;
    s.refuse(p::encode_message(w), "unexpected_message");
    s.refuse(p::encode_message(p::Changes{0, 5, false, {}}), "unexpected_message");
    s.refuse(p::encode_message(p::Notify{0, 5, {}}), "unexpected_message");
    s.refuse(p::encode_message(p::PushAck{1, {}, 5, t0}), "unexpected_message");
    s.refuse(p::encode_message(p::Revoke{5, {}}), "unexpected_message");
    s.refuse(p::encode_message(s.t.make_hello(p::PasswordAuth{"admin", "admin-password"})),
             "unexpected_message", "hello");
    // The second hello did not turn the session into the administrator's.
    auto res = s.t.push_one(household(s.t, 300, village_h));
    CHECK(res.code == "forbidden");
}

TEST_CASE("Bad input: unknown keys are skipped, in messages and record states (SPEC.md §2.3)") {
    Fixture f(small_limits());
    SUBCASE("hello with a key from a future version") {
        Tablet& t = f.tablet("enum-a", 60);
        p::Bytes hello =
            p::encode_message(t.make_hello(p::PasswordAuth{"enum-a", "enum-a-password"}));
        // The message map's head: a map of n pairs (n < 24) is one byte 0xa0 + n.
        REQUIRE((hello[0] & 0xe0) == 0xa0);
        hello[0] = static_cast<std::uint8_t>(hello[0] + 1);
        hello = cat(hello, {0x62, 'z', 'z', 0xa1, 0x61, 'k', 0x80});  // "zz": {"k": []}
        t.send_raw(hello);
        CHECK(t.next_as<p::Welcome>().user == "enum-a");
    }
    SUBCASE("pull with an unknown key") {
        Session s(f);
        s.t.send_raw(pull_with(1, [](p::CborWriter& w) {
            w.text("priority");
            w.map(1);
            w.text("level");
            w.uint(9);
        }));
        CHECK(s.t.next_as<p::Changes>().items.size() == 1);  // enum-a's village holds one record
    }
    SUBCASE("a push item and a record state with unknown keys; a field the schema lacks") {
        Session s(f);
        auto rec = household(s.t, 310, village_a);
        edit(s.t, rec, "zz_future_field", p::MergeRule::lww, std::string("kept"), t0 - 1000);
        p::Bytes state = p::encode_record(rec);
        REQUIRE((state[0] & 0xe0) == 0xa0);
        state[0] = static_cast<std::uint8_t>(state[0] + 1);
        state = cat(state, {0x62, 'z', 'z', 0x01});  // "zz": 1 in the record map
        p::Bytes frame = cbor([&](p::CborWriter& w) {
            w.map(3);
            w.text("t");
            w.text("push");
            w.text("batch");
            w.uint(1);
            w.text("items");
            w.array(1);
            w.map(3);
            w.text("sv");
            w.uint(1);
            w.text("rec");
            w.raw(state);
            w.text("origin");
            w.text("import");
        });
        s.t.send_raw(frame);
        auto ack = s.t.next_as<p::PushAck>();
        REQUIRE(ack.results.size() == 1);
        CHECK(ack.results[0].ok);
        f.with_store([&](Store& st) {
            auto row = st.get_record("households", rec.id).value();
            REQUIRE(row);
            auto stored = p::decode_record(row->state).value();
            CHECK(stored == rec);  // the unknown field is kept as it came; the unknown key dropped
        });
    }
}

TEST_CASE("Bad input: floats, tags, undefined and indefinite lengths are outside the profile") {
    Fixture f(small_limits());
    Session s(f);
    auto pull_limit = [](std::initializer_list<std::uint8_t> limit) {
        p::Bytes b = cbor([](p::CborWriter& w) {
            w.map(3);
            w.text("t");
            w.text("pull");
            w.text("since");
            w.uint(0);
            w.text("limit");
        });
        return cat(b, limit);
    };
    s.refuse(pull_limit({0xfb, 0x40, 0x24, 0, 0, 0, 0, 0, 0}), "malformed", "pull.limit");  // 10.0
    s.refuse(pull_limit({0xf9, 0x49, 0x00}), "malformed", "pull.limit");       // half float
    s.refuse(pull_limit({0xc1, 0x0a}), "malformed", "pull.limit");             // tag 1
    s.refuse(pull_limit({0xf7}), "malformed", "pull.limit");                   // undefined
    s.refuse(pull_limit({0xf0}), "malformed", "pull.limit");                   // simple(16)
    s.refuse({0xbf, 0x61, 't', 0x64, 'p', 'u', 'l', 'l', 0xff}, "malformed");  // map(*)
    s.refuse(pull_with(1,
                       [](p::CborWriter& w) {
                           w.text("zz");
                           w.raw(p::Bytes{0x7f, 0x61, 'a', 0xff});  // text(*)
                       }),
             "malformed");
}

TEST_CASE("Bad input: a key twice in one map") {
    Fixture f(small_limits());
    Session s(f);
    s.refuse(cbor([](p::CborWriter& w) {
                 w.map(4);
                 w.text("t");
                 w.text("pull");
                 w.text("since");
                 w.uint(0);
                 w.text("limit");
                 w.uint(10);
                 w.text("limit");
                 w.uint(500);
             }),
             "malformed", "pull.limit");
}

TEST_CASE("Bad input: ids that are not 16 bytes, or all zeros") {
    Fixture f(small_limits());
    SUBCASE("hello.device of 15 bytes: fatal, no device is bound") {
        Tablet& t = f.tablet("enum-a", 61);
        p::Bytes hello =
            p::encode_message(t.make_hello(p::PasswordAuth{"enum-a", "enum-a-password"}));
        p::Bytes shorter{0x4f};
        shorter.insert(shorter.end(), t.device_id.bytes.begin(), t.device_id.bytes.end() - 1);
        auto e = refuse_before_hello(f, patch(hello, id_bytes(t.device_id), shorter),
                                     "invalid_value", 62);
        CHECK(e.message.rfind("hello.device", 0) == 0);
    }
    SUBCASE("an all-zero device or replica id: fatal") {
        Tablet& t = f.tablet("enum-a", 63);
        p::Hello h = t.make_hello(p::PasswordAuth{"enum-a", "enum-a-password"});
        h.replica = p::Id128{};
        refuse_before_hello(f, p::encode_message(h), "invalid_value", 64);
        h.replica = t.replica;
        h.device = p::Id128{};
        refuse_before_hello(f, p::encode_message(h), "invalid_value", 65);
    }
    SUBCASE("a record id of 17 bytes, an entry's replica of 15 bytes: the frame is refused") {
        Session s(f);
        auto rec = household(s.t, 320, village_a);
        p::Bytes frame = p::encode_message(p::Push{1, {p::PushItem{1, rec}}});
        p::Bytes longer{0x51};
        longer.insert(longer.end(), rec.id.bytes.begin(), rec.id.bytes.end());
        longer.push_back(0x00);
        s.refuse(patch(frame, id_bytes(rec.id), longer), "invalid_value", "push.items[0].rec");
        p::Bytes shorter{0x4f};
        shorter.insert(shorter.end(), s.t.replica.bytes.begin(), s.t.replica.bytes.end() - 1);
        s.refuse(patch(frame, id_bytes(s.t.replica), shorter), "invalid_value",
                 "push.items[0].rec");
    }
}

TEST_CASE("Bad input: text that is not UTF-8") {
    Fixture f(small_limits());
    SUBCASE("in a record (a push): refused whole, nothing stored") {
        Session s(f);
        auto rec = household(s.t, 330, village_a, std::string("Ba\xc3\x28ter"));
        s.refuse(p::encode_message(p::Push{1, {p::PushItem{1, rec}}}), "invalid_value",
                 "push.items[0].rec");
    }
    SUBCASE("in hello: fatal") {
        Tablet& t = f.tablet("enum-a", 66);
        p::Hello h = t.make_hello(p::PasswordAuth{"enum-a", "enum-a-password"});
        h.app = "survey\xff";
        refuse_before_hello(f, p::encode_message(h), "invalid_value", 67);
    }
}

// =============================================================================================
// Sync: well-formed pushes that break the rules (per-item results, SPEC.md §4.3, §4.4, §6.1)
// =============================================================================================

TEST_CASE("Bad input: writes outside the user's scope") {
    Fixture f(small_limits());
    Session s(f);
    SUBCASE("a new record in another banner") {
        s.refuse_item(household(s.t, 400, village_h), "forbidden", "outside your assigned areas");
    }
    SUBCASE("an edit of a record that lies in another banner") {
        p::RecordState other;
        f.with_store([&](Store& st) {
            other = p::decode_record(st.get_record("households", f.rec_h).value()->state).value();
        });
        edit(s.t, other, "head_name", p::MergeRule::review, std::string("Taken over"), t0 - 1000);
        s.refuse_item(other, "forbidden", "belongs to area " + village_h);
    }
    SUBCASE("moving a record of mine to another banner") {
        p::RecordState mine = s.state_of(f.rec_a);
        edit(s.t, mine, "village", p::MergeRule::lww, village_h, t0 - 1000);
        s.refuse_item(mine, "forbidden", "after merging");
    }
    SUBCASE("a record whose area field is not an area code") {
        auto rec = household(s.t, 401, "../../etc");
        s.refuse_item(rec, "validation_failed", "village");
    }
}

TEST_CASE("Bad input: a device claiming another device's replica id") {
    Fixture f(small_limits());
    auto before = f.dump();
    SUBCASE("a replica bound to another device") {
        Tablet& thief = f.tablet("enum-a", 70);
        thief.replica = id_of(0xe0, 3);  // enum-h's first tablet (seed)
        thief.send(thief.make_hello(p::PasswordAuth{"enum-a", "enum-a-password"}));
        auto e = thief.next_error();
        CHECK(e.code == "replica_conflict");
        CHECK(e.fatal);
        CHECK(thief.closed);
    }
    SUBCASE("the server's own replica id (that API writes carry)") {
        Tablet& thief = f.tablet("sup-ejin", 71);
        thief.replica = f.server_replica;
        thief.send(thief.make_hello(p::PasswordAuth{"sup-ejin", "sup-ejin-password"}));
        auto e = thief.next_error();
        CHECK(e.code == "replica_conflict");
        CHECK(e.fatal);
    }
    check_unchanged(before, f.dump());
}

TEST_CASE("Bad input: dots of another replica, and dots that skip ahead") {
    Fixture f(small_limits());
    Session s(f);
    SUBCASE("a new dot of another replica is forbidden") {
        p::RecordState r = s.state_of(f.rec_a);
        Tablet other;  // enum-a's second seeded tablet: replica id_of(0xe0, 2)
        other.replica = id_of(0xe0, 2);
        other.user = "enum-a";
        edit(other, r, "head_name", p::MergeRule::review, std::string("Forged"), t0 - 1000);
        s.refuse_item(r, "forbidden", "may only introduce writes of its own replica");
    }
    SUBCASE("another replica's counter far ahead, with no entry at all") {
        p::RecordState r = s.state_of(f.rec_a);
        r.context.raise(id_of(0xe0, 2), 1'000'000);
        s.refuse_item(r, "forbidden", "may only introduce writes of its own replica");
    }
    SUBCASE("the device's own replica skipping ahead is its own business: accepted") {
        p::RecordState r = s.state_of(f.rec_a);
        p::Update u(r, s.t.replica, p::HlcTimestamp::from_parts(t0 - 1000, 0), "enum-a",
                    /*counter_floor=*/1'000'000);
        REQUIRE(u.set("members_count", p::MergeRule::review, std::int64_t{4}));
        auto res = s.t.push_one(r);
        CHECK(res.ok);
        f.with_store([&](Store& st) {
            auto stored =
                p::decode_record(st.get_record("households", f.rec_a).value()->state).value();
            CHECK(stored.context.get(s.t.replica) == 1'000'001);
            CHECK(stored.context.get(id_of(0xe0, 1)) == 2);  // the other tablets' counters:
            CHECK(stored.context.get(id_of(0xe0, 2)) == 1);  // untouched
        });
    }
}

TEST_CASE("Bad input: rewriting a write the server already holds, under its old dot") {
    // SPEC.md §4.4: a push may only introduce writes of the pushing replica and user. An entry
    // whose dot the server has seen is not new, so the authorship and clock checks skip it; it
    // must therefore be exactly the entry the server holds. Otherwise the join (greater
    // timestamp wins) would let a device rewrite anyone's earlier answer.
    Fixture f(small_limits());
    Session s(f);
    SUBCASE("a review entry's value, same dot, later timestamp") {
        p::RecordState r = s.state_of(f.rec_a);
        auto& e = std::get<p::ReviewState>(r.fields.at("head_name")).entries.at(0);
        e.value = std::string("Rewritten");
        e.ts = p::HlcTimestamp::from_parts(t0, 9);
        s.refuse_item(r, "forbidden", "head_name");
    }
    SUBCASE("an lww entry re-signed by another user, stamped a year ahead") {
        p::RecordState r = s.state_of(f.rec_a);
        auto& e = std::get<p::LwwState>(r.fields.at("village")).entry;
        e.by = "sup-ejin";
        e.ts = p::HlcTimestamp::from_parts(t0 + 365ull * 24 * 3600 * 1000, 0);
        s.refuse_item(r, "forbidden", "village");
    }
    SUBCASE("another replica's counter slot raised without a write of it") {
        p::RecordState r = s.state_of(f.rec_a);
        p::CounterState c;
        c.slots[id_of(0xe0, 2)] = p::CounterState::Slot{1'000'000, 0};
        r.fields["visit_count"] = c;
        s.refuse_item(r, "forbidden", "visit_count");
    }
    SUBCASE("the device's own write: re-stamped it may come again, changed it may not") {
        // SPEC.md §3.2: a client re-stamps entries the server has not acknowledged; after a lost
        // push_ack the server may hold them already, under the same dot.
        auto mine = household(s.t, 450, village_a, "Bater", t0 - 2000);
        REQUIRE(s.t.push_one(mine).ok);
        s.before = f.dump();
        auto with_ts = [&](p::RecordState r, p::HlcTimestamp ts) {
            for (auto& [name, st] : r.fields) {
                if (auto* l = std::get_if<p::LwwState>(&st)) l->entry.ts = ts;
                if (auto* rv = std::get_if<p::ReviewState>(&st))
                    for (auto& e : rv->entries)
                        e.ts = ts;
            }
            return r;
        };
        auto changed = mine;
        std::get<p::ReviewState>(changed.fields.at("head_name")).entries.at(0).value =
            std::string("Other answer");
        s.refuse_item(changed, "forbidden", "head_name");
        s.refuse_item(with_ts(mine, p::HlcTimestamp::from_parts(t0 + 365ull * 24 * 3600 * 1000, 0)),
                      "forbidden", "the server already holds");
        auto restamped = with_ts(mine, p::HlcTimestamp::from_parts(t0 - 500, 0));
        CHECK(s.t.push_one(restamped).ok);
        f.with_store([&](Store& st) {
            auto stored =
                p::decode_record(st.get_record("households", mine.id).value()->state).value();
            CHECK(stored == restamped);
        });
    }
    SUBCASE("legitimate pushes still pass: a replay, a stale copy, and a new edit") {
        p::RecordState current = s.state_of(f.rec_a);
        CHECK(s.t.push_one(current).ok);
        check_unchanged(s.before, f.dump());  // a replay changes nothing
        // The state as first pushed, before the two conflicting answers: older, but honest.
        Tablet& a1 = *f.tablets.at(0);
        p::RecordState stale = household(a1, 1, village_a);
        CHECK(s.t.push_one(stale).ok);
        check_unchanged(s.before, f.dump());
        edit(s.t, current, "notes", p::MergeRule::lww, std::string("new note"), t0 - 1000);
        p::CounterState mine;
        mine.slots[s.t.replica] = p::CounterState::Slot{1, 0};
        current.fields["visit_count"] = mine;
        CHECK(s.t.push_one(current).ok);
    }
}

TEST_CASE("Bad input: a new write signed by another user") {
    Fixture f(small_limits());
    Session s(f);
    auto r = household(s.t, 410, village_a);
    std::get<p::ReviewState>(r.fields.at("head_name")).entries[0].by = "sup-ejin";
    s.refuse_item(r, "forbidden", "signed by");
}

TEST_CASE("Bad input: timestamps far in the future") {
    Fixture f(small_limits());
    Session s(f);
    SUBCASE("a year ahead") {
        s.refuse_item(household(s.t, 420, village_a, "Bater", t0 + 365ull * 24 * 3600 * 1000),
                      "clock_drift", "ahead of the server's clock");
    }
    SUBCASE("11 minutes ahead (the bound is 10)") {
        s.refuse_item(household(s.t, 421, village_a, "Bater", t0 + 11 * 60 * 1000), "clock_drift",
                      "ahead of the server's clock");
    }
    SUBCASE("the largest wall time a timestamp can hold") {
        s.refuse_item(household(s.t, 422, village_a, "Bater", p::HlcTimestamp::max_wall_ms),
                      "clock_drift", "ahead of the server's clock");
    }
}

TEST_CASE("Bad input: text with control characters and SQL is stored literally, never run") {
    Fixture f(small_limits());
    Session s(f);
    const std::string head = "Robert'); DROP TABLE records;--";
    const std::string notes = std::string("\x01\x07\x1b[2J\r\n\t'; DELETE FROM users; --\" ") +
                              std::string(1, '\0') + "end \xe4\xb8\xad";
    auto rec = household(s.t, 430, village_a, head);
    edit(s.t, rec, "notes", p::MergeRule::lww, notes, t0 - 1000);
    REQUIRE(s.t.push_one(rec).ok);
    auto after = f.dump();
    // Every table is still there, with the same users and one more record.
    CHECK(after.size() == s.before.size());
    CHECK(after.at("users") == s.before.at("users"));
    CHECK(after.at("records").rfind("3 rows", 0) == 0);  // 2 seeded + this one
    // The API gives back exactly what was written.
    Reply r =
        f.http("GET", "/api/records/households/" + rec.id.to_string(), "", f.token_for("enum-a"));
    REQUIRE(r.status == 200);
    CHECK(r.body.at("fields").at("head_name").as_string() == head);
    CHECK(r.body.at("fields").at("notes").as_string() == notes);
    SUBCASE("through the API too") {
        const std::string sql =
            "x' OR '1'='1'; UPDATE users SET role='admin' WHERE name='enum-a';--";
        Reply put = f.http("PUT", "/api/records/households/" + rec.id.to_string(),
                           json::serialize(json::object{{"fields", json::object{{"notes", sql}}}}),
                           f.token_for("sup-ejin"));
        REQUIRE(put.status == 200);
        CHECK(put.body.at("fields").at("notes").as_string() == sql);
        CHECK(f.dump().at("users") == s.before.at("users"));
        // A search with SQL wildcards and quotes matches literally (nothing here).
        Reply q = f.http("GET", "/api/records?q=%25'%20OR%201%3D1--", "", f.token_for("admin"));
        REQUIRE(q.status == 200);
        CHECK(q.body.at("records").as_array().empty());
    }
    SUBCASE("a collection name that is SQL is not a collection") {
        auto bad = household(s.t, 431, village_a);
        bad.collection = "households; DROP TABLE records";
        auto res = s.t.push_one(bad);
        CHECK(res.code == "validation_failed");
        CHECK(f.dump().at("records") == after.at("records"));
    }
}

TEST_CASE("Bad input: text a spreadsheet would run is exported as text") {
    Fixture f(small_limits());
    Session s(f);
    const std::string head = "=HYPERLINK(\"http://evil.example/\",\"x\")";
    auto rec = household(s.t, 440, village_a, head);
    REQUIRE(s.t.push_one(rec).ok);
    Reply r = f.http("GET", "/api/export?collection=households&format=csv&area=" + village_a, "",
                     f.token_for("sup-ejin"));
    REQUIRE(r.status == 200);
    const std::string csv = drain(r.stream);
    CHECK(csv.find("'=HYPERLINK(") != std::string::npos);
    CHECK(csv.find(",=HYPERLINK(") == std::string::npos);
    CHECK(csv.find(",\"=HYPERLINK(") == std::string::npos);
}

// =============================================================================================
// HTTP API
// =============================================================================================

TEST_CASE("Bad input: malformed JSON bodies") {
    Fixture f(small_limits());
    const std::string admin = f.token_for("admin");
    auto r = refuse_http(f, 400, "invalid_json", "POST", "/api/login",
                         "{\"user\": \"enum-a\",\n  \"password\":");
    CHECK(r.body.at("error").at("line").to_number<std::int64_t>() == 2);
    CHECK(r.body.at("error").at("column").is_number());
    refuse_http(f, 400, "invalid_json", "POST", "/api/login", R"({"user":"a","password":"b"} x)");
    refuse_http(f, 400, "invalid_json", "POST", "/api/login", "");
    refuse_http(f, 400, "invalid_json", "POST", "/api/login", "   \r\n");
    refuse_http(f, 400, "invalid_json", "POST", "/api/login", R"({"user":'enum-a'})");
    refuse_http(f, 400, "invalid_json", "POST", "/api/login",
                "{\"user\":\"\xc3\x28\",\"password\":\"x\"}");
    refuse_http(f, 400, "invalid_json", "POST", "/api/users",
                std::string(40, '[') + std::string(40, ']'), admin);
    refuse_http(f, 400, "invalid_json", "POST", "/api/users", std::string(100000 / 2, '['), admin);
}

TEST_CASE("Bad input: JSON of the wrong types") {
    Fixture f(small_limits());
    const std::string admin = f.token_for("admin");
    const std::string sup = f.token_for("sup-ejin");
    auto msg = [](const Reply& r) { return r.message(); };
    CHECK(msg(refuse_http(f, 400, "bad_request", "POST", "/api/login",
                          R"({"user":5,"password":"x"})"))
              .find("body.user: expected a string, got a number") != std::string::npos);
    CHECK(msg(refuse_http(f, 400, "bad_request", "POST", "/api/login", R"(["enum-a","x"])"))
              .find("body: expected a JSON object, got an array") != std::string::npos);
    CHECK(
        msg(refuse_http(
                f, 400, "bad_request", "POST", "/api/users",
                R"({"name":"n1","role":"enumerator","areas":"ordos","password":"a long passphrase"})",
                admin))
            .find("body.areas: expected an array of strings, got a string") != std::string::npos);
    CHECK(msg(refuse_http(
                  f, 400, "bad_request", "POST", "/api/users",
                  R"({"name":"n1","role":"enumerator","areas":[1],"password":"a long passphrase"})",
                  admin))
              .find("body.areas[0]: expected a string") != std::string::npos);
    refuse_http(f, 400, "bad_request", "PUT", "/api/users/enum-h", R"({"disabled":"yes"})", admin);
    refuse_http(f, 400, "bad_request", "PUT", "/api/users/enum-h", R"({"disabled":null})", admin);
    auto v = refuse_http(f, 400, "validation_failed", "PUT",
                         "/api/records/households/" + f.rec_a.to_string(),
                         R"({"fields":{"members_count":"five"}})", sup);
    CHECK(v.body.at("error").at("field").as_string() == "members_count");
    refuse_http(f, 400, "validation_failed", "PUT",
                "/api/records/households/" + f.rec_a.to_string(),
                R"({"fields":{"members_count":1.5}})", sup);
    refuse_http(f, 400, "validation_failed", "PUT",
                "/api/records/households/" + f.rec_a.to_string(),
                R"({"fields":{"poverty_status":"rich"}})", sup);
    refuse_http(f, 400, "bad_request", "PUT", "/api/records/households/" + f.rec_a.to_string(),
                R"({"fields":"poverty_status"})", sup);
    refuse_http(f, 400, "bad_request", "POST",
                "/api/conflicts/" + std::to_string(f.conflict_a) + "/resolve", R"({"choice":"1"})",
                sup);
    refuse_http(f, 400, "bad_request", "POST",
                "/api/conflicts/" + std::to_string(f.conflict_a) + "/resolve", R"({"choice":99})",
                sup);
    refuse_http(f, 400, "bad_request", "POST",
                "/api/conflicts/" + std::to_string(f.conflict_a) + "/resolve",
                R"({"choice":0,"value":"dibao_line"})", sup);
}

TEST_CASE("Bad input: unknown keys in JSON bodies are errors, not ignored") {
    Fixture f(small_limits());
    const std::string admin = f.token_for("admin");
    CHECK(refuse_http(f, 400, "bad_request", "POST", "/api/login",
                      R"({"user":"enum-a","password":"enum-a-password","role":"admin"})")
              .message()
              .find("body.role: unknown key") != std::string::npos);
    refuse_http(f, 400, "bad_request", "PUT", "/api/users/enum-h", R"({"diabled":true})", admin);
    refuse_http(f, 400, "validation_failed", "PUT",
                "/api/records/households/" + f.rec_a.to_string(), R"({"fields":{"is_admin":true}})",
                admin);
}

TEST_CASE("Bad input: a body over max_body_bytes") {
    Fixture f(small_limits());
    refuse_http(f, 413, "payload_too_large", "POST", "/api/login",
                R"({"user":"enum-a","password":")" + std::string(70 * 1024, 'x') + R"("})");
    refuse_http(f, 413, "payload_too_large", "PUT", "/api/schema", std::string(70 * 1024, ' '),
                f.token_for("admin"));
}

TEST_CASE("Bad input: query strings") {
    Fixture f(small_limits());
    const std::string t = f.token_for("sup-ejin");
    refuse_http(f, 400, "bad_request", "GET", "/api/records?limt=10", "", t);
    refuse_http(f, 400, "bad_request", "GET", "/api/records?limit=0", "", t);
    refuse_http(f, 400, "bad_request", "GET", "/api/records?limit=-1", "", t);
    refuse_http(f, 400, "bad_request", "GET", "/api/records?limit=abc", "", t);
    refuse_http(f, 400, "bad_request", "GET", "/api/records?limit=501", "", t);
    refuse_http(f, 400, "bad_request", "GET", "/api/records?limit=99999999999999999999999", "", t);
    refuse_http(f, 400, "bad_request", "GET", "/api/records?area=..%2F..%2Fetc", "", t);
    refuse_http(f, 400, "bad_request", "GET", "/api/records?area=ordos%27%20OR%201%3D1", "", t);
    refuse_http(f, 400, "bad_request", "GET", "/api/records?area=%zz", "", t);
    refuse_http(f, 400, "bad_request", "GET", "/api/records?area=ordos%00", "", t);
    refuse_http(f, 400, "bad_request", "GET", "/api/records?q=%ff%fe", "", t);
    refuse_http(f, 400, "bad_request", "GET", "/api/records?field.poverty_status=rich", "", t);
    refuse_http(f, 400, "bad_request", "GET", "/api/conflicts?status=everything", "", t);
    refuse_http(f, 400, "bad_request", "GET", "/api/export?format=xlsx", "", t);
    refuse_http(f, 400, "bad_request", "GET", "/api/export?collection=users", "", t);
}

TEST_CASE("Bad input: hostile paths on the API") {
    Fixture f(small_limits());
    const std::string admin = f.token_for("admin");
    refuse_http(f, 404, "not_found", "GET", "/api/records/households/not-an-id", "", admin);
    refuse_http(f, 404, "not_found", "GET", "/api/records/households/..%2F..%2Fusers", "", admin);
    refuse_http(f, 404, "not_found", "GET", "/api/records/users/" + f.rec_a.to_string(), "", admin);
    refuse_http(f, 404, "not_found", "GET", "/api/records/households/" + f.rec_a.to_string() + "/x",
                "", admin);
    refuse_http(f, 404, "not_found", "GET", "/api/conflicts/-1", "", admin);
    refuse_http(f, 404, "not_found", "GET", "/api/conflicts/1e3", "", admin);
    refuse_http(f, 404, "not_found", "GET", "/api/conflicts/99999999999999999999", "", admin);
    refuse_http(f, 404, "not_found", "PUT", "/api/users/..%2Fadmin", R"({"display_name":"x"})",
                admin);
    refuse_http(f, 404, "not_found", "GET", "/api/../console/index.html", "", admin);
    refuse_http(f, 400, "bad_request", "GET", "/api/records/households/%ff", "", admin);
    refuse_http(f, 400, "bad_request", "GET", "/api/records/households/%00", "", admin);
    auto r = refuse_http(f, 405, "method_not_allowed", "DELETE", "/api/users", "", admin);
    bool allow = false;
    for (const auto& [k, v] : r.headers)
        allow = allow || k == "Allow";
    CHECK(allow);
}

TEST_CASE("Bad input: SQL in user names and logins") {
    Fixture f(small_limits());
    const std::string admin = f.token_for("admin");
    refuse_http(
        f, 400, "validation_failed", "POST", "/api/users",
        R"({"name":"x'; DROP TABLE users; --","role":"admin","password":"a long passphrase"})",
        admin);
    refuse_http(f, 401, "unauthenticated", "POST", "/api/login",
                R"({"user":"' OR '1'='1","password":"' OR '1'='1"})");
    refuse_http(f, 401, "unauthenticated", "POST", "/api/login",
                R"({"user":"admin' --","password":"x"})");
}

TEST_CASE("Bad input: a hostile CSV import changes nothing") {
    Fixture f(small_limits());
    const std::string admin = f.token_for("admin");
    const std::string header = "code,parent,level,name_en,name_zh\r\n";
    refuse_http(f, 400, "validation_failed", "POST", "/api/areas/import",
                header + "ordos/dalad,ordos,banner,\"Dalad,dalate\r\n", admin, "text/csv");
    auto r = refuse_http(f, 400, "validation_failed", "POST", "/api/areas/import",
                         header + "ordos/dalad,ordos,banner,Dalad,\r\n../../etc,,banner,x,\r\n",
                         admin, "text/csv");
    CHECK(r.body.at("error").at("problems").as_array().size() == 1);
    refuse_http(f, 400, "validation_failed", "POST", "/api/areas/import",
                header + "ordos/dalad,ordos,banner,Dalad,\r\nordos/dalad,ordos,banner,Dalad,\r\n",
                admin, "text/csv");
    refuse_http(f, 400, "bad_request", "POST", "/api/areas/import",
                header + "ordos/dalad,ordos,banner,Da\xffl,\r\n", admin, "text/csv");
    refuse_http(f, 415, "unsupported_media_type", "POST", "/api/areas/import",
                header + "ordos/dalad,ordos,banner,Dalad,\r\n", admin, "application/x-sh");
}

TEST_CASE("Bad input: expired, revoked, forged and malformed tokens") {
    Fixture f(small_limits());
    SUBCASE("HTTP") {
        const std::string expiring = f.token_for("sup-ejin", 60 * 1000);
        const std::string revoked = f.token_for("sup-ejin");
        REQUIRE(f.http("POST", "/api/logout", "", revoked).status == 200);
        f.now += 61 * 1000;
        CHECK(refuse_http(f, 401, "unauthenticated", "GET", "/api/me", "", expiring)
                  .message()
                  .find("expired") != std::string::npos);
        CHECK(refuse_http(f, 401, "unauthenticated", "GET", "/api/me", "", revoked)
                  .message()
                  .find("revoked") != std::string::npos);
        CHECK(refuse_http(f, 401, "unauthenticated", "GET", "/api/me", "", new_token())
                  .message()
                  .find("not valid") != std::string::npos);
        const std::string good = f.token_for("sup-ejin");
        // The hash of a token is not a token (a copy of the tokens table hands out nothing).
        refuse_http(f, 401, "unauthenticated", "GET", "/api/me", "", token_hash(good));
        refuse_http(f, 401, "unauthenticated", "GET", "/api/me", "", good + "x");
        refuse_http(f, 401, "unauthenticated", "GET", "/api/me", "", "", "application/json",
                    "Basic c3VwLWVqaW46c3VwLWVqaW4tcGFzc3dvcmQ=");
        refuse_http(f, 401, "unauthenticated", "GET", "/api/me", "", "", "application/json",
                    "Bearer " + std::string(600, 'a'));
        refuse_http(f, 401, "unauthenticated", "GET", "/api/me", "", "", "application/json",
                    "Bearer");
        refuse_http(f, 401, "unauthenticated", "GET", "/api/me", "", "", "application/json",
                    "Bearer \xff\xfe");
        CHECK(f.http("GET", "/api/me", "", good).status == 200);  // the control
    }
    SUBCASE("sync hello") {
        const std::string expiring = f.token_for("enum-a", 60 * 1000);
        const std::string revoked = f.token_for("enum-a");
        REQUIRE(f.http("POST", "/api/logout", "", revoked).status == 200);
        f.now += 61 * 1000;
        std::uint32_t n = 80;
        for (const std::string& token :
             {expiring, revoked, new_token(), std::string(5000, 'x'), token_hash(f.off_token)}) {
            Tablet& t = f.tablet("enum-a", ++n);
            CAPTURE(token.size());
            refuse_before_hello(f, p::encode_message(t.make_hello(p::TokenAuth{token})),
                                "unauthenticated", ++n);
        }
        // The disabled user's unrevoked token is refused too, and so is its password; a refused
        // hello stores nothing (no session token is issued for it).
        Tablet& t = f.tablet("enum-off", 99);
        refuse_before_hello(f, p::encode_message(t.make_hello(p::TokenAuth{f.off_token})),
                            "unauthenticated", 98);
        refuse_before_hello(
            f, p::encode_message(t.make_hello(p::PasswordAuth{"enum-off", "enum-off-password"})),
            "unauthenticated", 97);
    }
}

// =============================================================================================
// The console's static files (server/src/static_files.hpp), without sockets
// =============================================================================================

TEST_CASE("Bad input: path traversal on the static console route") {
    const fs::path base = fs::temp_directory_path() /
                          ("fieldsync-static-test-" + std::to_string(std::random_device{}()));
    const fs::path root = base / "console";
    fs::create_directories(root / "sub");
    fs::create_directories(root / ".git");
    auto write = [](const fs::path& file, const std::string& text) {
        std::ofstream out(file, std::ios::binary);
        out << text;
    };
    write(root / "index.html", "index");
    write(root / "app.js", "js");
    write(root / "sub" / "index.html", "sub");
    write(root / ".git" / "config", "secret");
    write(root / ".env", "secret");
    write(base / "secret.txt", "secret");
    std::error_code ec;
    fs::create_symlink(base / "secret.txt", root / "link.txt", ec);
    const bool have_link = !ec;

    auto served = [&](std::string_view rel) -> std::string {
        auto f = resolve_static(root, rel);
        return f ? read_text(f->path) : std::string("<refused>");
    };
    // Served.
    CHECK(served("") == "index");
    CHECK(served("app.js") == "js");
    CHECK(served("sub/") == "sub");
    CHECK(served("./sub//index.html") == "sub");
    CHECK(served("app.js?x=../../secret.txt") == "js");  // the query is not part of the path
    CHECK(served("%61pp.js") == "js");
    // Refused, all alike.
    for (const char* bad : {"../secret.txt",
                            "..",
                            "sub/../../secret.txt",
                            "%2e%2e/secret.txt",
                            "%2E%2E%2Fsecret.txt",
                            "sub/%2e%2e/%2e%2e/secret.txt",
                            "..%2fsecret.txt",
                            "..%5csecret.txt",
                            "..\\secret.txt",
                            "sub\\..\\..\\secret.txt",
                            ".git/config",
                            ".env",
                            "%2egit/config",
                            "app.js%00.png",
                            "app.js%00",
                            "%zz",
                            "%2",
                            "%",
                            "/etc/passwd",
                            "%2fetc%2fpasswd",
                            "missing.html",
                            "sub/../../console/../secret.txt"}) {
        CAPTURE(bad);
        CHECK(served(bad) == "<refused>");
    }
    if (have_link) CHECK(served("link.txt") == "<refused>");  // a link pointing outside
    CHECK_FALSE(resolve_static("", "index.html").has_value());
    fs::remove_all(base, ec);
}
