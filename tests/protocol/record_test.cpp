// Unit tests of the record model: updates, joins of each rule, reads, encoding, invariants.
#include <doctest/doctest.h>

#include "fieldsync/protocol/record.hpp"

using namespace fieldsync::protocol;

namespace {

ReplicaId rid(std::uint8_t n) {
    ReplicaId r;
    r.bytes[15] = n;
    return r;
}

RecordState household() {
    RecordState s;
    s.collection = "households";
    s.id = Id128::parse("0190f3c2-7a1b-7c00-8000-000000000001").value();
    return s;
}

HlcTimestamp ts(std::uint64_t ms) {
    return HlcTimestamp::from_parts(ms, 0);
}

RecordState joined(RecordState a, const RecordState& b) {
    REQUIRE(a.join(b));
    return a;
}

}  // namespace

TEST_CASE("Record: an update draws one dot and re-asserts liveness") {
    RecordState s = household();
    {
        Update u(s, rid(1), ts(1000), "alice");
        CHECK(u.dot() == Dot{rid(1), 1});
        REQUIRE(u.set("head_name", MergeRule::review, std::string("Bater")));
        REQUIRE(u.set("village", MergeRule::lww, std::string("ordos/hanggin/xini/shengli")));
        REQUIRE(u.add_element("assistance", std::string("land_adoption")));
        REQUIRE(u.add_to_counter("visit_count", 1));
    }
    CHECK(s.context.get(rid(1)) == 1);
    CHECK_FALSE(s.is_deleted());
    CHECK(s.conflicts().empty());
    CHECK(s.view("head_name")->value == Value{std::string("Bater")});
    CHECK(s.view("visit_count")->value == Value{std::int64_t{1}});
    CHECK(s.view("assistance")->elements == std::vector<Value>{std::string("land_adoption")});
    CHECK_FALSE(s.view("missing").has_value());
    CHECK(s.check_invariants());
}

TEST_CASE("Record: concurrent review writes are kept and flagged; a resolution collapses them") {
    RecordState base = household();
    {
        Update u(base, rid(1), ts(1000), "alice");
        REQUIRE(u.set("poverty_status", MergeRule::review, std::string("national_line")));
    }
    RecordState a = base, b = base;
    {
        Update u(a, rid(2), ts(2000), "bater");
        REQUIRE(u.set("poverty_status", MergeRule::review, std::string("dibao_line")));
    }
    {
        Update u(b, rid(3), ts(1500), "chen");
        REQUIRE(u.set("poverty_status", MergeRule::review, std::string("marginal")));
    }
    RecordState ab = joined(a, b);
    auto v = ab.view("poverty_status");
    REQUIRE(v);
    CHECK(v->conflict);
    CHECK(v->competing.size() == 2);
    CHECK(v->value == Value{std::string("dibao_line")});  // greatest timestamp is provisional
    CHECK(ab.conflicts() == std::vector<std::string>{"poverty_status"});

    SUBCASE("resolution on the server collapses the register on every replica (L6)") {
        RecordState server = ab;
        {
            Update u(server, rid(9), ts(3000), "supervisor");
            REQUIRE(u.set("poverty_status", MergeRule::review, std::string("marginal")));
        }
        CHECK(server.conflicts().empty());
        RecordState a2 = joined(a, server);
        RecordState b2 = joined(b, server);
        CHECK(encode_record(a2) == encode_record(b2));
        CHECK(a2.view("poverty_status")->competing.size() == 1);
        CHECK(a2.view("poverty_status")->value == Value{std::string("marginal")});
    }
    SUBCASE("equal concurrent values are not a conflict") {
        RecordState c = base;
        {
            Update u(c, rid(4), ts(1700), "dana");
            REQUIRE(u.set("poverty_status", MergeRule::review, std::string("dibao_line")));
        }
        auto j = joined(a, c);
        CHECK(j.view("poverty_status")->competing.size() == 2);
        CHECK_FALSE(j.view("poverty_status")->conflict);
    }
}

TEST_CASE("Record: delete concurrent with an edit is a conflict (L10)") {
    RecordState base = household();
    {
        Update u(base, rid(1), ts(1000), "alice");
        REQUIRE(u.set("notes", MergeRule::lww, std::string("x")));
    }
    RecordState a = base, b = base;
    {
        Update u(a, rid(1), ts(2000), "alice");
        u.mark_deleted();
    }
    {
        Update u(b, rid(2), ts(2100), "bater");
        REQUIRE(u.set("notes", MergeRule::lww, std::string("y")));
    }
    auto j = joined(a, b);
    CHECK(j.conflicts() == std::vector<std::string>{std::string(deleted_field)});
    SUBCASE("a delete that saw the edit is not a conflict") {
        RecordState c = joined(a, b);
        {
            Update u(c, rid(3), ts(3000), "sup");
            u.mark_deleted();
        }
        CHECK(c.conflicts().empty());
        CHECK(c.is_deleted());
    }
}

TEST_CASE("Record: lww picks the greatest timestamp, then the replica") {
    RecordState base = household();
    RecordState a = base, b = base;
    {
        Update u(a, rid(1), ts(5000), "a");
        REQUIRE(u.set("notes", MergeRule::lww, std::string("late")));
    }
    {
        Update u(b, rid(2), ts(4000), "b");
        REQUIRE(u.set("notes", MergeRule::lww, std::string("early")));
    }
    CHECK(joined(a, b).view("notes")->value == Value{std::string("late")});
    CHECK(joined(b, a).view("notes")->value == Value{std::string("late")});
    RecordState c = base;
    {
        Update u(c, rid(3), ts(5000), "c");
        REQUIRE(u.set("notes", MergeRule::lww, std::string("tie")));
    }
    CHECK(joined(a, c).view("notes")->value ==
          Value{std::string("tie")});  // same ts: higher replica
}

TEST_CASE("Record: sets are add-wins; counters sum") {
    RecordState base = household();
    {
        Update u(base, rid(1), ts(1000), "a");
        REQUIRE(u.add_element("assistance", std::string("tourism_jobs")));
        REQUIRE(u.add_to_counter("visit_count", 2));
    }
    RecordState a = base, b = base;
    {
        Update u(a, rid(1), ts(2000), "a");
        REQUIRE(u.remove_element("assistance", std::string("tourism_jobs")));
        REQUIRE(u.add_to_counter("visit_count", -1));
    }
    {
        Update u(b, rid(2), ts(2000), "b");
        REQUIRE(u.add_element("assistance", std::string("tourism_jobs")));
        REQUIRE(u.add_to_counter("visit_count", 5));
    }
    auto j = joined(a, b);
    CHECK(j.view("assistance")->elements.size() == 1);
    CHECK(j.view("visit_count")->value == Value{std::int64_t{6}});
    SUBCASE("a remove that saw the add removes it everywhere") {
        RecordState c = j;
        {
            Update u(c, rid(3), ts(3000), "c");
            REQUIRE(u.remove_element("assistance", std::string("tourism_jobs")));
        }
        CHECK(joined(a, joined(b, c)).view("assistance")->elements.empty());
    }
}

TEST_CASE("Record: shown_value is what the view shows, read in place") {
    RecordState a = household();
    {
        Update u(a, rid(1), ts(1000), "alice");
        REQUIRE(u.set("village", MergeRule::lww, std::string("ordos/hanggin/xini/shengli")));
        REQUIRE(u.set("poverty_status", MergeRule::review, std::string("dibao_line")));
        REQUIRE(u.add_element("assistance", std::string("land_adoption")));
        REQUIRE(u.add_to_counter("visit_count", 5));
    }
    RecordState b = household();
    {
        Update u(b, rid(2), ts(2000), "bao");  // later: the provisional status
        REQUIRE(u.set("poverty_status", MergeRule::review, std::string("not_poor")));
        REQUIRE(u.add_to_counter("visit_count", -2));
    }
    const RecordState s = joined(a, b);
    for (const auto& [name, state] : s.fields) {
        CAPTURE(name);
        Value scratch;
        const Value* shown = shown_value(state, scratch);
        const auto v = s.view(name);
        REQUIRE(v);
        if (rule_of(state) == MergeRule::set) {
            CHECK(shown == nullptr);
        } else {
            REQUIRE(shown != nullptr);
            CHECK(*shown == v->value);
        }
    }
    Value scratch;
    const Value* status = shown_value(s.fields.at("poverty_status"), scratch);
    REQUIRE(status);
    CHECK(*status == Value{std::string("not_poor")});
    CHECK(status == &std::get<ReviewState>(s.fields.at("poverty_status")).entries.back().value);
    const Value* visits = shown_value(s.fields.at("visit_count"), scratch);
    CHECK(visits == &scratch);  // a counter's sum is computed
    CHECK(scratch == Value{std::int64_t{3}});
    CHECK(shown_value(FieldState{ReviewState{}}, scratch) == nullptr);  // no entries: null
}

TEST_CASE("Record: wrong rule for a field is refused") {
    RecordState s = household();
    Update u(s, rid(1), ts(1), "a");
    REQUIRE(u.set("notes", MergeRule::lww, std::string("x")));
    auto st = u.add_element("notes", std::string("y"));
    CHECK_FALSE(st);
    CHECK(st.error().code == protocol_errc::invalid_value);
    CHECK_FALSE(u.set("notes", MergeRule::review, std::string("x")));
    CHECK_FALSE(u.set("assistance", MergeRule::set, std::string("x")));
    CHECK_FALSE(u.set(deleted_field, MergeRule::review, true));
    CHECK_FALSE(u.add_to_counter("notes", 1));
}

TEST_CASE("Record: mismatched rules join to the higher rule (L11)") {
    RecordState a = household(), b = household();
    {
        Update u(a, rid(1), ts(1), "a");
        REQUIRE(u.set("x", MergeRule::lww, std::int64_t{1}));
    }
    {
        Update u(b, rid(2), ts(1), "b");
        REQUIRE(u.add_to_counter("x", 3));
    }
    CHECK(rule_of(joined(a, b).fields.at("x")) == MergeRule::counter);
    CHECK(encode_record(joined(a, b)) == encode_record(joined(b, a)));
}

TEST_CASE("Record: joining different records fails and changes nothing") {
    RecordState a = household(), b = household();
    b.id.bytes[0] ^= 1;
    RecordState before = a;
    auto st = a.join(b);
    CHECK_FALSE(st);
    CHECK(st.error().message.find("different records") != std::string::npos);
    CHECK(a == before);
}

TEST_CASE("Record: canonical encoding round-trips and is deterministic (L4)") {
    RecordState s = household();
    {
        Update u(s, rid(2), ts(1504999999000), "enumerator-07");
        REQUIRE(u.set("head_name", MergeRule::review, std::string("巴特尔")));
        REQUIRE(u.set("gps", MergeRule::lww, GeoPoint{397234567, 1099876543}));
        REQUIRE(u.set("members_count", MergeRule::review, std::int64_t{-4}));
        REQUIRE(u.add_element("assistance", std::string("lambs_for_ewes")));
        REQUIRE(u.add_element("assistance", std::string("land_adoption")));
        REQUIRE(u.add_to_counter("visit_count", 3));
    }
    Bytes b = encode_record(s);
    auto back = decode_record(b);
    REQUIRE(back.ok());
    CHECK(*back == s);
    CHECK(encode_record(*back) == b);
    CHECK(record_digest(s) == record_digest(*back));
    // Field names in canonical order: shorter first ("gps" < "_deleted" < "assistance" ...).
    auto diag = to_diagnostic(b).value();
    CHECK(diag.find("\"gps\"") < diag.find("\"_deleted\""));
    CHECK(diag.find("\"_deleted\"") < diag.find("\"head_name\""));

    SUBCASE("unknown fields survive a round trip untouched") {
        RecordState t = s;
        {
            Update u(t, rid(3), ts(1505000000000), "newer-app");
            REQUIRE(u.set("field_from_v9", MergeRule::lww, std::string("kept")));
        }
        auto back2 = decode_record(encode_record(t));
        REQUIRE(back2.ok());
        CHECK(back2->view("field_from_v9")->value == Value{std::string("kept")});
    }
}

TEST_CASE("Record: decoding rejects broken states with a path") {
    RecordState s = household();
    {
        Update u(s, rid(1), ts(1), "a");
        REQUIRE(u.set("notes", MergeRule::lww, std::string("x")));
    }
    Bytes good = encode_record(s);

    SUBCASE("truncated at every length") {
        for (std::size_t n = 0; n < good.size(); ++n) {
            auto r = decode_record(ByteView(good.data(), n));
            CHECK_FALSE(r.ok());
        }
    }
    SUBCASE("a dot not covered by the context (L12)") {
        RecordState bad = s;
        std::get<LwwState>(bad.fields.at("notes")).entry.dot.counter = 7;
        auto r = decode_record(encode_record(bad));
        REQUIRE_FALSE(r.ok());
        CHECK(r.error().message.find("f.notes") != std::string::npos);
        CHECK(r.error().message.find("not covered") != std::string::npos);
    }
    SUBCASE("trailing bytes") {
        Bytes b = good;
        b.push_back(0);
        CHECK(decode_record(b).error().code == protocol_errc::malformed);
    }
    SUBCASE("wrong type names the key") {
        CborWriter w;
        w.map(4);
        w.text("c");
        w.text("households");
        w.text("f");
        w.map(0);
        w.text("id");
        w.text("not-bytes");
        w.text("ctx");
        w.map(0);
        auto r = decode_record(w.data());
        REQUIRE_FALSE(r.ok());
        CHECK(r.error().code == protocol_errc::wrong_type);
        CHECK(r.error().message.rfind("id: ", 0) == 0);
    }
    SUBCASE("missing key") {
        CborWriter w;
        w.map(1);
        w.text("c");
        w.text("households");
        auto r = decode_record(w.data());
        REQUIRE_FALSE(r.ok());
        CHECK(r.error().code == protocol_errc::missing_field);
    }
    SUBCASE("unknown merge rule code") {
        CborWriter w;
        w.map(4);
        w.text("c");
        w.text("households");
        w.text("f");
        w.map(1);
        w.text("x");
        w.array(2);
        w.uint(9);
        w.null();
        w.text("id");
        w.bytes(s.id.bytes);
        w.text("ctx");
        w.map(0);
        auto r = decode_record(w.data());
        REQUIRE_FALSE(r.ok());
        CHECK(r.error().message.find("f.x[0]") == 0);
    }
}

TEST_CASE("VersionVector: merge, covers, text form") {
    VersionVector a, b;
    a.raise(rid(1), 3);
    b.raise(rid(2), 5);
    b.raise(rid(1), 1);
    a.merge(b);
    CHECK(a.get(rid(1)) == 3);
    CHECK(a.get(rid(2)) == 5);
    CHECK(a.covers(Dot{rid(2), 5}));
    CHECK_FALSE(a.covers(Dot{rid(2), 6}));
    CHECK(a.dominates(b));
    CHECK_FALSE(b.dominates(a));
    CHECK(a.to_string() == "3@00000000000000000000000000000001;5@00000000000000000000000000000002");
    CHECK(a.next(rid(3)) == Dot{rid(3), 1});
}
