// The local replica: identity and persistence, validated writes, the outbox committed with the
// write, queries, conflict views, observers, and concurrent use from two threads.
#include <doctest/doctest.h>

#include <sqlite3.h>

#include <atomic>
#include <set>
#include <thread>

#include "sdk_test_support.hpp"

using namespace fstest;
using fieldsync::ChangeNotice;
using fieldsync::ChangeOrigin;
using fieldsync::Filter;
using fieldsync::SyncStatus;

namespace {

bool contains(const std::string& haystack, const std::string& needle) {
    return haystack.find(needle) != std::string::npos;
}

/// Runs SQL on the replica file through a second connection (to inspect or sabotage it).
void raw_sql(const fs::path& file, const std::string& sql) {
    sqlite3* db = nullptr;
    REQUIRE(sqlite3_open(file.string().c_str(), &db) == SQLITE_OK);
    char* err = nullptr;
    const int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err);
    const std::string msg = err ? err : "";
    sqlite3_free(err);
    sqlite3_close(db);
    REQUIRE_MESSAGE(rc == SQLITE_OK, msg);
}

std::int64_t raw_count(const fs::path& file, const std::string& sql) {
    sqlite3* db = nullptr;
    REQUIRE(sqlite3_open(file.string().c_str(), &db) == SQLITE_OK);
    sqlite3_stmt* s = nullptr;
    REQUIRE(sqlite3_prepare_v2(db, sql.c_str(), -1, &s, nullptr) == SQLITE_OK);
    REQUIRE(sqlite3_step(s) == SQLITE_ROW);
    const std::int64_t n = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    sqlite3_close(db);
    return n;
}

}  // namespace

TEST_CASE("Replica: open creates the identity once; reopen keeps ids, cursor and clock") {
    ReplicaFixture f;
    const auto replica_id = f.replica->replica_id();
    const auto device_id = f.replica->device_id();
    CHECK_FALSE(replica_id.is_nil());
    CHECK_FALSE(device_id.is_nil());
    CHECK(replica_id != device_id);
    CHECK((replica_id.bytes[6] >> 4) == 4);  // UUIDv4 form

    auto info = f.replica->sync_info();
    REQUIRE(info.ok());
    CHECK(info->schema_version == 0);
    CHECK(info->cursor == 0);
    CHECK(info->user.empty());
    CHECK(f.replica->schema() == nullptr);

    f.sync({}, 42);
    auto id = f.household("Bater");
    const auto issued = f.view("households", id).state.fields.at("head_name");
    const auto ts = std::get<p::ReviewState>(issued).entries.at(0).ts;
    CHECK(ts.wall_ms() == t0);

    f.reopen();
    CHECK(f.replica->replica_id() == replica_id);
    CHECK(f.replica->device_id() == device_id);
    info = f.replica->sync_info();
    REQUIRE(info.ok());
    CHECK(info->cursor == 42);
    CHECK(info->user == "enum-a");
    CHECK(info->role == "enumerator");
    CHECK(info->scope == std::vector<std::string>{village_a});
    CHECK(info->schema_version == demo_schema().version());
    CHECK(info->has_token);
    CHECK(info->last_sync_ms == t0);
    CHECK(info->pending == 1);
    CHECK(info->clock >= ts);
    REQUIRE(f.replica->schema() != nullptr);
    CHECK(*f.replica->schema() == demo_schema());

    SUBCASE("the clock never moves backwards, even when the device clock does") {
        f.clock.set(t0 - 3'600'000);
        f.reopen();
        REQUIRE(f.replica->update("households", id, {{"notes", std::string("later")}}));
        const auto notes = f.view("households", id).state.fields.at("notes");
        CHECK(std::get<p::LwwState>(notes).entry.ts > ts);
    }
    SUBCASE("a device id given at creation is kept; later ones are ignored") {
        TempDir other;
        fieldsync::ReplicaOptions o;
        o.device_id = test_id(0xdd, 7);
        {
            auto r = Replica::open(other.path() / "r.db", o);
            REQUIRE(r.ok());
            CHECK((*r)->device_id() == test_id(0xdd, 7));
        }
        o.device_id = test_id(0xdd, 8);
        auto again = Replica::open(other.path() / "r.db", o);
        REQUIRE(again.ok());
        CHECK((*again)->device_id() == test_id(0xdd, 7));
    }
    SUBCASE("a file from a newer SDK is refused, naming both versions") {
        f.replica.reset();
        raw_sql(f.file(), "PRAGMA user_version = 99");
        auto r = Replica::open(f.file(), f.options());
        CHECK(errc_of(r) == p::protocol_errc::unsupported_version);
        CHECK(contains(r.error().message, "99"));
    }
    SUBCASE("a format-1 file (records WITHOUT ROWID) is migrated with its records") {
        f.sync({}, 42);
        const auto hh = f.household("Bater");
        const auto before = f.view("households", hh).state;
        f.replica.reset();
        // Back to the layout of format 1, as an older SDK left it.
        raw_sql(f.file(),
                "CREATE TABLE r1(collection TEXT NOT NULL, id BLOB NOT NULL, "
                "area TEXT NOT NULL DEFAULT '', deleted INTEGER NOT NULL DEFAULT 0, "
                "conflicted INTEGER NOT NULL DEFAULT 0, acked INTEGER NOT NULL DEFAULT 0, "
                "seen INTEGER NOT NULL DEFAULT 1, state BLOB NOT NULL, "
                "PRIMARY KEY(collection, id)) WITHOUT ROWID;"
                "INSERT INTO r1 SELECT collection, id, area, deleted, conflicted, acked, seen, "
                "state FROM records; DROP TABLE records; ALTER TABLE r1 RENAME TO records;"
                "CREATE INDEX records_by_area ON records(collection, area);"
                "PRAGMA user_version = 1;");
        const std::string without_rowid =
            "SELECT count(*) FROM sqlite_schema WHERE name = 'records' AND sql LIKE "
            "'%WITHOUT ROWID%'";
        REQUIRE(raw_count(f.file(), without_rowid) == 1);
        f.reopen();
        CHECK(f.view("households", hh).state == before);
        CHECK(f.view("households", hh).sync == SyncStatus::pending);  // the outbox row stays
        CHECK(f.replica->sync_info().value().cursor == 42);
        f.replica.reset();
        CHECK(raw_count(f.file(), without_rowid) == 0);
        CHECK(raw_count(f.file(), "SELECT user_version FROM pragma_user_version") == 2);
        CHECK(raw_count(f.file(), "SELECT count(*) FROM sqlite_schema WHERE name = "
                                  "'records_by_area'") == 1);
    }
    SUBCASE("the file is in WAL mode") {
        f.replica.reset();
        CHECK(raw_count(f.file(),
                        "SELECT count(*) FROM pragma_journal_mode WHERE journal_mode = 'wal'") ==
              1);
    }
}

TEST_CASE("Replica: writes before the first sync are refused") {
    ReplicaFixture f;
    auto r = f.replica->create("households", {{"village", village_a}});
    CHECK(errc_of(r) == p::protocol_errc::validation_failed);
    CHECK(contains(r.error().message, "sync once to receive the survey schema"));
    auto j = f.replica->create_json("households", {{"village", "\"x\""}});
    CHECK(errc_of(j) == p::protocol_errc::validation_failed);
    CHECK(f.replica->count("households").value() == 0);
}

TEST_CASE("Replica: writes are validated before anything changes, with precise errors") {
    ReplicaFixture f;
    f.sync();
    auto id = f.household("Bater");
    const auto before = f.view("households", id).state;

    auto expect_refused = [&](const auto& result, p::protocol_errc code,
                              std::vector<std::string> words) {
        CHECK(errc_of(result) == code);
        for (const auto& w : words)
            CHECK_MESSAGE(contains(result.error().message, w),
                          "'" << w << "' missing from: " << result.error().message);
        CHECK(f.replica->count("households").value() == 1);
        CHECK(f.view("households", id).state == before);
        CHECK(f.replica->pending_count().value() == 1);
    };

    SUBCASE("unknown collection") {
        expect_refused(f.replica->create("farms", {{"village", village_a}}),
                       p::protocol_errc::validation_failed, {"farms", "not a collection"});
    }
    SUBCASE("unknown field") {
        expect_refused(f.replica->update("households", id, {{"income", std::int64_t{5}}}),
                       p::protocol_errc::validation_failed, {"households", "income", "no field"});
    }
    SUBCASE("an enum code the field does not have") {
        expect_refused(
            f.replica->update("households", id, {{"poverty_status", std::string("rich")}}),
            p::protocol_errc::validation_failed, {"households", "poverty_status", "rich"});
    }
    SUBCASE("an integer out of range") {
        expect_refused(f.replica->update("households", id, {{"members_count", std::int64_t{45}}}),
                       p::protocol_errc::validation_failed, {"households", "members_count", "45"});
    }
    SUBCASE("the wrong kind of value") {
        expect_refused(f.replica->update("households", id, {{"members_count", std::string("4")}}),
                       p::protocol_errc::validation_failed, {"households", "members_count"});
    }
    SUBCASE("a required field missing on create") {
        expect_refused(
            f.replica->create("households", {{"village", village_a},
                                             {"poverty_status", std::string("marginal")}}),
            p::protocol_errc::validation_failed, {"households", "head_name"});
    }
    SUBCASE("a required field cleared") {
        expect_refused(f.replica->update("households", id, {{"head_name", Value{}}}),
                       p::protocol_errc::validation_failed, {"households", "head_name"});
    }
    SUBCASE("a set operation on a field that is not a set") {
        expect_refused(
            f.replica->add_to_set("households", id, "poverty_status", std::string("marginal")),
            p::protocol_errc::validation_failed, {"households", "poverty_status", "add_to_set"});
    }
    SUBCASE("an unknown code added to a set") {
        expect_refused(f.replica->add_to_set("households", id, "assistance", std::string("cash")),
                       p::protocol_errc::validation_failed, {"households", "assistance", "cash"});
    }
    SUBCASE("a zero increment") {
        expect_refused(f.replica->increment("households", id, "visit_count", 0),
                       p::protocol_errc::validation_failed, {"households", "visit_count"});
    }
    SUBCASE("bad JSON for a field") {
        expect_refused(
            f.replica->update_json("households", id, {{"identified_on", "\"2024-13-01\""}}),
            p::protocol_errc::validation_failed, {"households", "identified_on"});
        expect_refused(f.replica->update_json("households", id, {{"gps", "[1,2]"}}),
                       p::protocol_errc::validation_failed, {"households", "gps"});
    }
    SUBCASE("an area outside the user's scope") {
        expect_refused(f.replica->update("households", id, {{"village", other_banner}}),
                       p::protocol_errc::forbidden, {other_banner, "outside your assigned areas"});
    }
    SUBCASE("no such record") {
        expect_refused(
            f.replica->update("households", test_id(9, 9), {{"notes", std::string("x")}}),
            p::protocol_errc::invalid_value, {"no such record"});
    }
    SUBCASE("an update with no fields") {
        expect_refused(f.replica->update("households", id, {}), p::protocol_errc::invalid_value,
                       {"no fields"});
    }
}

TEST_CASE("Replica: each write is one update with this replica's dot, the clock and the user") {
    ReplicaFixture f;
    f.sync({}, 0, "enum-a");
    auto id = f.household("Bater");
    f.clock.advance(1000);
    REQUIRE(f.replica->update("households", id,
                              {{"members_count", std::int64_t{4}}, {"notes", std::string("n")}}));
    const auto state = f.view("households", id).state;
    CHECK(state.context.get(f.replica->replica_id()) == 2);
    const auto& members = std::get<p::ReviewState>(state.fields.at("members_count")).entries.at(0);
    const auto& notes = std::get<p::LwwState>(state.fields.at("notes")).entry;
    CHECK(members.dot == p::Dot{f.replica->replica_id(), 2});
    CHECK(notes.dot == members.dot);  // one update, one dot
    CHECK(notes.ts == members.ts);
    CHECK(members.ts.wall_ms() == t0 + 1000);
    CHECK(members.by == "enum-a");
    CHECK((id.bytes[6] >> 4) == 7);  // UUIDv7
}

TEST_CASE("Replica: a write and its outbox entry commit in the same transaction") {
    ReplicaFixture f;
    f.sync();
    auto id = f.household("Bater");
    CHECK(f.replica->pending_count().value() == 1);
    CHECK(f.view("households", id).pending());
    CHECK(raw_count(f.file(), "SELECT count(*) FROM outbox") == 1);
    REQUIRE(f.replica->update("households", id, {{"phone", std::string("13800000000")}}));
    CHECK(f.replica->pending_count().value() == 1);  // one entry per record

    // Make the outbox insert fail inside the write's transaction: the record row must not be
    // stored either.
    raw_sql(f.file(),
            "CREATE TRIGGER sabotage BEFORE INSERT ON outbox BEGIN "
            "SELECT RAISE(ABORT, 'disk on fire'); END;");
    auto r = f.replica->create("households", {{"village", village_a},
                                              {"head_name", std::string("Sarnai")},
                                              {"poverty_status", std::string("marginal")}});
    CHECK(errc_of(r) == p::protocol_errc::internal);
    CHECK(contains(r.error().message, "disk on fire"));
    CHECK(f.replica->count("households").value() == 1);
    CHECK(raw_count(f.file(), "SELECT count(*) FROM records") == 1);

    // And the other way round: a failing record write leaves no outbox entry behind.
    raw_sql(f.file(), "DROP TRIGGER sabotage;");
    raw_sql(f.file(),
            "CREATE TRIGGER sabotage2 BEFORE UPDATE ON records BEGIN "
            "SELECT RAISE(ABORT, 'disk on fire'); END;");
    raw_sql(f.file(), "DELETE FROM outbox;");
    auto u = f.replica->update("households", id, {{"phone", std::string("1")}});
    CHECK(errc_of(u) == p::protocol_errc::internal);
    CHECK(raw_count(f.file(), "SELECT count(*) FROM outbox") == 0);
    raw_sql(f.file(), "DROP TRIGGER sabotage2;");

    // The clock and the change counter survive the failures: the next write still works.
    REQUIRE(f.replica->update("households", id, {{"phone", std::string("2")}}));
    CHECK(f.replica->pending_count().value() == 1);
}

TEST_CASE("Replica: the JSON convenience converts by field type") {
    ReplicaFixture f;
    f.sync();
    auto id = f.replica->create_json("households",
                                     {{"village", "\"" + village_a + "\""},
                                      {"head_name", "\"Oyun\""},
                                      {"poverty_status", "\"dibao_line\""},
                                      {"identified_on", "\"2016-03-01\""},
                                      {"gps", "{\"lat\": 39.6087, \"lon\": 109.7813}"},
                                      {"members_count", "5"},
                                      {"assistance", "[\"land_adoption\", \"tourism_jobs\"]"},
                                      {"visit_count", "2"}});
    REQUIRE_MESSAGE(id.ok(), (id.ok() ? "" : id.error().message));
    auto v = f.view("households", *id);
    CHECK(*v.value("identified_on") == Value{std::string("2016-03-01")});
    CHECK(*v.value("gps") == Value{p::GeoPoint{396087000, 1097813000}});
    CHECK(*v.value("members_count") == Value{std::int64_t{5}});
    CHECK(*v.value("visit_count") == Value{std::int64_t{2}});
    CHECK(v.fields.at("assistance").elements ==
          std::vector<Value>{std::string("land_adoption"), std::string("tourism_jobs")});

    SUBCASE("an array replaces the whole set; one code adds") {
        REQUIRE(f.replica->update_json(
            "households", *id, {{"assistance", "[\"tourism_jobs\", \"enriched_farmers_loan\"]"}}));
        CHECK(
            f.view("households", *id).fields.at("assistance").elements ==
            std::vector<Value>{std::string("enriched_farmers_loan"), std::string("tourism_jobs")});
        REQUIRE(f.replica->update_json("households", *id, {{"assistance", "\"land_adoption\""}}));
        CHECK(f.view("households", *id).fields.at("assistance").elements.size() == 3);
    }
    SUBCASE("null clears an optional field") {
        REQUIRE(f.replica->update_json("households", *id, {{"gps", "null"}}));
        CHECK(std::holds_alternative<std::monostate>(*f.view("households", *id).value("gps")));
    }
    SUBCASE("set and counter operations") {
        REQUIRE(f.replica->remove_from_set("households", *id, "assistance",
                                           std::string("land_adoption")));
        REQUIRE(f.replica->increment("households", *id, "visit_count", -1));
        auto w = f.view("households", *id);
        CHECK(w.fields.at("assistance").elements ==
              std::vector<Value>{std::string("tourism_jobs")});
        CHECK(*w.value("visit_count") == Value{std::int64_t{1}});
        const auto dots = w.state.context.get(f.replica->replica_id());
        // Adding a present element, removing an absent one: nothing written.
        REQUIRE(
            f.replica->add_to_set("households", *id, "assistance", std::string("tourism_jobs")));
        REQUIRE(f.replica->remove_from_set("households", *id, "assistance",
                                           std::string("land_adoption")));
        CHECK(f.view("households", *id).state.context.get(f.replica->replica_id()) == dots);
    }
}

TEST_CASE("Replica: delete, restore and edits of deleted records") {
    ReplicaFixture f;
    f.sync();
    auto id = f.household("Bater");
    REQUIRE(f.replica->remove("households", id));
    CHECK(f.view("households", id).deleted);
    CHECK(f.replica->count("households").value() == 0);
    Filter all;
    all.include_deleted = true;
    CHECK(f.replica->count("households", all).value() == 1);
    auto u = f.replica->update("households", id, {{"notes", std::string("x")}});
    CHECK(errc_of(u) == p::protocol_errc::invalid_value);
    CHECK(contains(u.error().message, "restore()"));
    const auto dots = f.view("households", id).state.context.get(f.replica->replica_id());
    REQUIRE(f.replica->remove("households", id));  // already deleted: nothing written
    CHECK(f.view("households", id).state.context.get(f.replica->replica_id()) == dots);
    REQUIRE(f.replica->restore("households", id));
    CHECK_FALSE(f.view("households", id).deleted);
    REQUIRE(f.replica->update("households", id, {{"notes", std::string("back")}}));
}

TEST_CASE("Replica: list, count and filters") {
    ReplicaFixture f;
    f.sync({}, 0, "enum-a", {"ordos/ejin-horo/altan-xire"});
    std::vector<p::RecordId> a, b;
    for (int i = 0; i < 5; ++i) {
        f.clock.advance(10);
        a.push_back(
            f.household("A" + std::to_string(i), village_a, i % 2 ? "marginal" : "dibao_line"));
    }
    for (int i = 0; i < 3; ++i) {
        f.clock.advance(10);
        b.push_back(f.household("B" + std::to_string(i), village_b));
    }
    // A village whose code extends village_a's is not under it.
    REQUIRE(f.replica
                ->create("households", {{"village", village_a + "-2"},
                                        {"head_name", std::string("C")},
                                        {"poverty_status", std::string("not_poor")}})
                .ok());
    REQUIRE(f.replica->add_to_set("households", a[1], "assistance", std::string("tourism_jobs")));
    REQUIRE(f.replica->remove("households", a[4]));

    CHECK(f.replica->count("households").value() == 8);
    CHECK(f.replica->count("members").value() == 0);

    Filter by_area;
    by_area.area_prefix = village_a;
    auto in_a = f.replica->list("households", by_area);
    REQUIRE(in_a.ok());
    REQUIRE(in_a->size() == 4);
    for (std::size_t i = 0; i < 4; ++i)
        CHECK((*in_a)[i].id == a[i]);  // ordered by id (time)
    by_area.include_deleted = true;
    CHECK(f.replica->count("households", by_area).value() == 5);
    by_area.area_prefix = "ordos/ejin-horo";
    CHECK(f.replica->count("households", by_area).value() == 9);

    Filter eq;
    eq.equals["poverty_status"] = std::string("marginal");
    CHECK(f.replica->count("households", eq).value() == 2);
    eq.equals["assistance"] = std::string("tourism_jobs");
    auto hits = f.replica->list("households", eq);
    REQUIRE(hits->size() == 1);
    CHECK(hits->front().id == a[1]);

    Filter page;
    page.area_prefix = village_a;
    page.limit = 2;
    page.offset = 1;
    auto p1 = f.replica->list("households", page);
    REQUIRE(p1->size() == 2);
    CHECK((*p1)[0].id == a[1]);
    CHECK((*p1)[1].id == a[2]);
    page.equals["poverty_status"] = std::string("dibao_line");  // a0, a2 (a4 deleted)
    page.offset = 1;
    auto p2 = f.replica->list("households", page);
    REQUIRE(p2->size() == 1);
    CHECK((*p2)[0].id == a[2]);

    Filter unsynced;
    unsynced.only_unsynced = true;
    CHECK(f.replica->count("households", unsynced).value() == 8);
}

TEST_CASE("Replica: conflict views show every competing value with who and when") {
    ReplicaFixture f;
    f.sync();
    const p::ReplicaId other = test_id(0xee, 1);
    // A household both tablets know (from the server).
    p::RecordState base = remote_household(other, 1, village_a, "enum-b", t0 - 10'000);
    f.sync({p::ChangeItem{5, 1, base}}, 5);
    CHECK(f.view("households", base.id).sync == SyncStatus::synced);

    // Offline, the other tablet records dibao_line and then deletes; this one records marginal.
    p::RecordState theirs = base;
    {
        p::Update u(theirs, other, p::HlcTimestamp::from_parts(t0 + 5'000, 0), "enum-b");
        REQUIRE(u.set("poverty_status", p::MergeRule::review, std::string("not_poor")));
    }
    f.clock.set(t0 + 1'000);
    REQUIRE(
        f.replica->update("households", base.id, {{"poverty_status", std::string("marginal")}}));
    CHECK(f.view("households", base.id).pending());

    std::vector<ChangeNotice> notices;
    auto token = f.replica->add_observer([&](const ChangeNotice& n) { notices.push_back(n); });
    f.sync({p::ChangeItem{6, 1, theirs}}, 6);
    f.replica->remove_observer(token);

    auto v = f.view("households", base.id);
    const auto& status = v.fields.at("poverty_status");
    CHECK(status.conflict);
    CHECK(status.value == Value{std::string("not_poor")});  // provisional: the latest write
    REQUIRE(status.competing.size() == 2);
    std::set<std::string> who;
    for (const auto& c : status.competing)
        who.insert(c.by + "=" + p::to_display(c.value));
    CHECK(who == std::set<std::string>{"enum-a=\"marginal\"", "enum-b=\"not_poor\""});
    CHECK(v.conflicts == std::vector<std::string>{"poverty_status"});
    CHECK_FALSE(v.fields.at("head_name").conflict);
    Filter conflicted;
    conflicted.only_conflicts = true;
    CHECK(f.replica->count("households", conflicted).value() == 1);
    CHECK(contains(v.to_json(), "\"conflicts\""));
    REQUIRE_FALSE(notices.empty());
    bool saw_remote = false;
    for (const auto& n : notices)
        if (n.origin == ChangeOrigin::remote && n.records.count("households")) saw_remote = true;
    CHECK(saw_remote);

    // A third write covers both values: the conflict is resolved.
    REQUIRE(
        f.replica->update("households", base.id, {{"poverty_status", std::string("dibao_line")}}));
    auto r = f.view("households", base.id);
    CHECK_FALSE(r.fields.at("poverty_status").conflict);
    CHECK(r.conflicts.empty());

    SUBCASE("a delete concurrent with an edit is a delete conflict") {
        p::RecordState gone = theirs;
        {
            p::Update u(gone, other, p::HlcTimestamp::from_parts(t0 + 6'000, 0), "enum-b");
            u.mark_deleted();
        }
        f.sync({p::ChangeItem{7, 1, gone}}, 7);
        auto d = f.view("households", base.id);
        CHECK(d.delete_conflict);
        CHECK(std::find(d.conflicts.begin(), d.conflicts.end(), "_deleted") != d.conflicts.end());
        REQUIRE(f.replica->restore("households", base.id));  // the edit wins
        CHECK_FALSE(f.view("households", base.id).delete_conflict);
        CHECK_FALSE(f.view("households", base.id).deleted);
    }
}

TEST_CASE("Replica: observers are told of local writes on the writing thread") {
    ReplicaFixture f;
    f.sync();
    std::vector<ChangeNotice> seen;
    std::vector<std::thread::id> threads;
    auto token = f.replica->add_observer([&](const ChangeNotice& n) {
        seen.push_back(n);
        threads.push_back(std::this_thread::get_id());
        // Observers run outside the replica's lock: reading from one must not deadlock.
        CHECK(f.replica->count("households").ok());
    });
    auto id = f.household("Bater");
    REQUIRE(seen.size() == 1);
    CHECK(seen[0].origin == ChangeOrigin::local_write);
    CHECK(seen[0].records.at("households") == std::vector<p::RecordId>{id});
    CHECK(threads[0] == std::this_thread::get_id());

    std::thread other([&] {
        CHECK(f.replica->update("households", id, {{"notes", std::string("t")}}));
    });
    const auto other_id = other.get_id();
    other.join();
    REQUIRE(seen.size() == 2);
    CHECK(threads[1] == other_id);

    // A refused write notifies nobody; a removed observer is not called.
    CHECK_FALSE(
        f.replica->update("households", id, {{"poverty_status", std::string("rich")}}).ok());
    CHECK(seen.size() == 2);
    f.replica->remove_observer(token);
    f.household("Sarnai");
    CHECK(seen.size() == 2);
}

TEST_CASE("Replica: two threads read and write at once") {
    ReplicaFixture f;
    f.sync();
    constexpr int per_thread = 60;
    std::atomic<int> failures{0};
    std::atomic<bool> done{false};
    auto writer = [&](const std::string& prefix) {
        for (int i = 0; i < per_thread; ++i) {
            auto id =
                f.replica->create("households", {{"village", village_a},
                                                 {"head_name", prefix + std::to_string(i)},
                                                 {"poverty_status", std::string("marginal")}});
            if (!id) {
                ++failures;
                continue;
            }
            if (!f.replica->update("households", *id, {{"members_count", std::int64_t{3}}}))
                ++failures;
            if (!f.replica->get("households", *id).ok()) ++failures;
        }
    };
    std::thread reader([&] {
        while (!done) {
            auto n = f.replica->count("households");
            auto l = f.replica->list("households", Filter{});
            if (!n || !l || l->size() < *n) ++failures;  // writes only add records
        }
    });
    std::thread w1(writer, "ui-");
    std::thread w2(writer, "bg-");
    w1.join();
    w2.join();
    done = true;
    reader.join();
    CHECK(failures == 0);
    CHECK(f.replica->count("households").value() == 2 * per_thread);
    CHECK(f.replica->pending_count().value() == 2 * per_thread);
    f.reopen();
    CHECK(f.replica->count("households").value() == 2 * per_thread);
}

TEST_CASE("Replica: two connections to one file never draw the same dot") {
    ReplicaFixture f;
    f.sync();
    auto id = f.household("Bater");
    auto second = Replica::open(f.file(), f.options());
    REQUIRE(second.ok());
    constexpr int per_thread = 40;
    std::atomic<int> failures{0};
    auto bump = [&](std::shared_ptr<Replica> r) {
        for (int i = 0; i < per_thread; ++i)
            if (!r->increment("households", id, "visit_count", 1)) ++failures;
    };
    std::thread t1(bump, f.replica);
    std::thread t2(bump, *second);
    t1.join();
    t2.join();
    CHECK(failures == 0);
    const auto v = f.view("households", id);
    CHECK(*v.value("visit_count") == Value{std::int64_t{2 * per_thread}});
    CHECK(v.state.context.get(f.replica->replica_id()) == 1 + 2 * per_thread);
}
