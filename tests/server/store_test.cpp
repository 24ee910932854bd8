// The server store, tested through the Store interface so that every implementation runs the
// same cases (LiteCore's N_WAY): each TEST_CASE_TEMPLATE runs once per factory in
// StoreFactories. Only SQLite exists today; a PostgreSQL factory joins the list later.
// SQLite-specific checks (the file's meta table, refusing newer files) are at the end.
#include <doctest/doctest.h>
#include <sqlite3.h>
#include <stdlib.h>  // mkdtemp

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "fieldsync/protocol/schema.hpp"
#include "fieldsync/server/store.hpp"

namespace p = fieldsync::protocol;
namespace fs = std::filesystem;
using namespace fieldsync::server;

namespace {

// --- Fixture ------------------------------------------------------------------------------

/// A fresh directory under the system temp dir, removed with everything in it afterwards.
class TempDir {
public:
    TempDir() {
        std::string tmpl = (fs::temp_directory_path() / "fieldsync-store-XXXXXX").string();
        REQUIRE(mkdtemp(tmpl.data()) != nullptr);
        m_path = tmpl;
    }
    ~TempDir() {
        std::error_code ec;
        fs::remove_all(m_path, ec);
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    const fs::path& path() const { return m_path; }

private:
    fs::path m_path;
};

/// Opens SQLite stores in a directory (the writer migrates; readers are read-only).
struct SqliteFactory {
    static Result<std::unique_ptr<Store>> open(const fs::path& dir, bool read_only) {
        SqliteOptions o;
        o.read_only = read_only;
        o.busy_timeout_ms = 2000;
        return open_sqlite_store(dir / "store.db", o);
    }
};

}  // namespace

TYPE_TO_STRING(SqliteFactory);

// Every store implementation the suite runs against.
#define FIELDSYNC_STORE_FACTORIES SqliteFactory

namespace {

/// One temp directory and its writer store; reopen() and reader() for durability and WAL
/// checks.
template <class Factory>
struct StoreFixture {
    TempDir dir;
    std::unique_ptr<Store> store;

    StoreFixture() { reopen(); }
    void close() { store.reset(); }
    void reopen() {
        store.reset();
        auto r = Factory::open(dir.path(), false);
        REQUIRE_MESSAGE(r.ok(), (r.ok() ? "" : r.error().message));
        store = std::move(*r);
    }
    std::unique_ptr<Store> reader() {
        auto r = Factory::open(dir.path(), true);
        REQUIRE_MESSAGE(r.ok(), (r.ok() ? "" : r.error().message));
        return std::move(*r);
    }
    Store& s() { return *store; }
};

// --- Helpers ------------------------------------------------------------------------------

p::Id128 id_of(std::uint8_t kind, std::uint32_t n) {
    p::Id128 id;
    id.bytes[0] = kind;
    id.bytes[12] = static_cast<std::uint8_t>(n >> 24);
    id.bytes[13] = static_cast<std::uint8_t>(n >> 16);
    id.bytes[14] = static_cast<std::uint8_t>(n >> 8);
    id.bytes[15] = static_cast<std::uint8_t>(n);
    return id;
}
RecordId rid(std::uint32_t n) {
    return id_of(0x01, n);
}
ReplicaId replica_of(std::uint32_t n) {
    return id_of(0x02, n);
}

RecordWrite rw(const std::string& collection, std::uint32_t n, const std::string& area,
               std::int64_t at_ms = 1000, bool deleted = false) {
    RecordWrite w;
    w.collection = collection;
    w.id = rid(n);
    w.area = area;
    w.schema_version = 3;
    w.deleted = deleted;
    w.at_ms = at_ms;
    w.state = Bytes{0xa1, 0x61, static_cast<std::uint8_t>('a' + n % 26), 0x18,
                    static_cast<std::uint8_t>(n % 256)};
    return w;
}

std::uint64_t put(Store& s, const RecordWrite& w) {
    auto r = s.put_record(w);
    REQUIRE_MESSAGE(r.ok(), (r.ok() ? "" : r.error().message));
    return *r;
}

void ok(const Status& st) {
    REQUIRE_MESSAGE(st.ok(), (st.ok() ? "" : st.error().message));
}

template <class T>
T ok(Result<T> r) {
    REQUIRE_MESSAGE(r.ok(), (r.ok() ? "" : r.error().message));
    return std::move(*r);
}

Scope scope_of(std::vector<std::string> areas) {
    return Scope{std::move(areas)};
}

User user_named(const std::string& name, std::vector<std::string> areas = {},
                Role role = Role::enumerator) {
    User u;
    u.name = name;
    u.display_name = "Display " + name;
    u.role = role;
    u.password_hash = "pbkdf2-sha256$1$00$00";
    u.areas = std::move(areas);
    u.created_at_ms = 42;
    return u;
}

using Key = std::pair<std::string, RecordId>;

/// Pulls every page after `since` and returns (records by key -> seq, moved-out keys, cursor).
struct Pulled {
    std::vector<StoredRecord> records;
    std::vector<Move> moves;
    std::uint64_t cursor = 0;
    int pages = 0;
};
Pulled pull_all(Store& s, std::uint64_t since, const Scope& scope, std::size_t limit) {
    Pulled out;
    out.cursor = since;
    for (int guard = 0; guard < 10000; ++guard) {
        auto page = ok(s.changes(out.cursor, scope, limit));
        ++out.pages;
        CHECK(page.records.size() + page.moves_out.size() <= limit);
        CHECK(page.next_cursor >= out.cursor);
        for (const auto& r : page.records) {
            CHECK(r.seq > out.cursor);
            CHECK(r.seq <= page.next_cursor);
        }
        for (const auto& m : page.moves_out) {
            CHECK(m.seq > out.cursor);
            CHECK(m.seq <= page.next_cursor);
        }
        out.records.insert(out.records.end(), page.records.begin(), page.records.end());
        out.moves.insert(out.moves.end(), page.moves_out.begin(), page.moves_out.end());
        out.cursor = page.next_cursor;
        if (!page.more) return out;
    }
    FAIL("changes() never reported the end");
    return out;
}

}  // namespace

// --- Opening and meta ---------------------------------------------------------------------

TEST_CASE_TEMPLATE("Store: a fresh store is migrated and reopening keeps data and identity", F,
                   FIELDSYNC_STORE_FACTORIES) {
    StoreFixture<F> fx;
    CHECK(ok(fx.s().last_seq()) == 0);
    CHECK(ok(fx.s().purge_seq()) == 0);
    const ReplicaId replica = fx.s().server_replica();
    CHECK_FALSE(replica.is_nil());
    CHECK_FALSE(ok(fx.s().current_schema()).has_value());

    put(fx.s(), rw("households", 1, "ordos/hanggin/xini"));
    ok(fx.s().put_area(Area{"ordos", "", "city", "Ordos", "鄂尔多斯"}));

    fx.reopen();
    CHECK(fx.s().server_replica() == replica);
    CHECK(ok(fx.s().last_seq()) == 1);
    auto rec = ok(fx.s().get_record("households", rid(1)));
    REQUIRE(rec);
    CHECK(rec->area == "ordos/hanggin/xini");
    auto areas = ok(fx.s().list_areas());
    REQUIRE(areas.size() == 1);
    CHECK(areas[0].name_zh == "鄂尔多斯");

    // A second reopen changes nothing either (migrations are not re-applied).
    fx.reopen();
    CHECK(fx.s().server_replica() == replica);
    CHECK(ok(fx.s().get_record("households", rid(1))).has_value());
    // Readers see the same identity.
    auto reader = fx.reader();
    CHECK(reader->server_replica() == replica);
}

TEST_CASE_TEMPLATE("Store: schemas are stored by version and immutable", F,
                   FIELDSYNC_STORE_FACTORIES) {
    StoreFixture<F> fx;
    ok(fx.s().put_schema(1, R"({"version":1})"));
    ok(fx.s().put_schema(2, R"({"version":2})"));
    auto cur = ok(fx.s().current_schema());
    REQUIRE(cur);
    CHECK(cur->first == 2);
    CHECK(cur->second == R"({"version":2})");
    CHECK(ok(fx.s().schema(1)) == std::optional<std::string>(R"({"version":1})"));
    CHECK_FALSE(ok(fx.s().schema(7)).has_value());

    ok(fx.s().put_schema(1, R"({"version":1})"));  // same text: no-op
    auto changed = fx.s().put_schema(1, R"({"version":1,"x":true})");
    REQUIRE_FALSE(changed.ok());
    CHECK(changed.error().code == p::protocol_errc::invalid_value);
    CHECK(changed.error().message.find("schema version 1") != std::string::npos);
}

// --- Records ------------------------------------------------------------------------------

TEST_CASE_TEMPLATE("Store: records are put, read back and replaced", F, FIELDSYNC_STORE_FACTORIES) {
    StoreFixture<F> fx;
    Store& s = fx.s();
    CHECK_FALSE(ok(s.get_record("households", rid(1))).has_value());

    const auto seq1 = put(s, rw("households", 1, "ordos/hanggin/xini", 1000));
    auto r = ok(s.get_record("households", rid(1)));
    REQUIRE(r);
    CHECK(r->collection == "households");
    CHECK(r->id == rid(1));
    CHECK(r->area == "ordos/hanggin/xini");
    CHECK(r->seq == seq1);
    CHECK(r->schema_version == 3);
    CHECK_FALSE(r->deleted);
    CHECK(r->updated_at_ms == 1000);
    CHECK(r->state == rw("households", 1, "").state);

    // The same id in another collection is another record.
    put(s, rw("members", 1, "ordos/hanggin/xini"));
    CHECK(ok(s.get_record("members", rid(1))).has_value());

    RecordWrite w = rw("households", 1, "ordos/hanggin/xini", 2000, true);
    w.state = Bytes{0xa0};
    w.schema_version = 4;
    const auto seq3 = put(s, w);
    r = ok(s.get_record("households", rid(1)));
    REQUIRE(r);
    CHECK(r->seq == seq3);
    CHECK(r->deleted);
    CHECK(r->schema_version == 4);
    CHECK(r->updated_at_ms == 2000);
    CHECK(r->state == Bytes{0xa0});

    auto bad = s.put_record(rw("", 9, "ordos"));
    REQUIRE_FALSE(bad.ok());
    CHECK(bad.error().code == p::protocol_errc::invalid_value);
}

TEST_CASE_TEMPLATE("Store: insert_record creates a record, or takes nothing when it exists", F,
                   FIELDSYNC_STORE_FACTORIES) {
    StoreFixture<F> fx;
    Store& s = fx.s();
    ok(s.begin());
    const auto first = ok(s.insert_record(rw("households", 1, "ordos/a")));
    CHECK(first == 1);
    // Its audit entry finds it (the record it has just created).
    AuditEntry a;
    a.seq = first;
    a.user = "ana";
    a.collection = "households";
    a.id = rid(1);
    a.summary = "{}";
    ok(s.append_audit(a));
    auto again = rw("households", 1, "ordos/b");
    again.state = Bytes{0xa0};
    CHECK(ok(s.insert_record(again)) == 0);  // exists: nothing written, no number taken
    ok(s.commit());
    auto stored = ok(s.get_record("households", rid(1)));
    REQUIRE(stored);
    CHECK(stored->area == "ordos/a");
    CHECK(stored->seq == 1);
    CHECK(ok(s.last_seq()) == 1);
    CHECK(put(s, rw("households", 2, "ordos/a")) == 2);  // the next number is still 2
    CHECK(ok(s.audit_for("households", rid(1), 10)).size() == 1);
    CHECK_FALSE(s.insert_record(rw("", 3, "ordos/a")).ok());
}

TEST_CASE_TEMPLATE("Store: sequence numbers strictly increase and rolled-back ones are reused", F,
                   FIELDSYNC_STORE_FACTORIES) {
    StoreFixture<F> fx;
    Store& s = fx.s();
    std::uint64_t prev = 0;
    for (std::uint32_t i = 0; i < 50; ++i) {
        const auto seq = put(s, rw("households", i % 7, "ordos/a", 1000 + i));
        CHECK(seq > prev);
        prev = seq;
    }
    CHECK(ok(s.last_seq()) == prev);

    ok(s.begin());
    CHECK(put(s, rw("households", 100, "ordos/a")) == prev + 1);
    s.rollback();
    CHECK(ok(s.last_seq()) == prev);
    CHECK(put(s, rw("households", 101, "ordos/a")) == prev + 1);

    // Inside one transaction: consecutive numbers; a rolled-back savepoint gives its numbers
    // back, a released one keeps them, and last_seq follows the numbers handed out.
    prev = ok(s.last_seq());
    ok(s.begin());
    CHECK(put(s, rw("households", 110, "ordos/a")) == prev + 1);
    CHECK(put(s, rw("households", 111, "ordos/a")) == prev + 2);
    ok(s.savepoint());
    CHECK(put(s, rw("households", 112, "ordos/a")) == prev + 3);
    CHECK(put(s, rw("households", 113, "ordos/a")) == prev + 4);
    s.rollback_savepoint();
    CHECK(ok(s.last_seq()) == prev + 2);
    ok(s.savepoint());
    CHECK(put(s, rw("households", 114, "ordos/a")) == prev + 3);
    ok(s.release_savepoint());
    CHECK(ok(s.last_seq()) == prev + 3);
    CHECK_FALSE(s.put_record(rw("", 9, "ordos")).ok());  // refused: takes no number
    CHECK(put(s, rw("households", 115, "ordos/a")) == prev + 4);
    // Nested savepoints: each rollback goes back to the numbers given out when it began.
    ok(s.savepoint());
    CHECK(put(s, rw("households", 130, "ordos/a")) == prev + 5);
    ok(s.savepoint());
    CHECK(put(s, rw("households", 131, "ordos/a")) == prev + 6);
    s.rollback_savepoint();
    CHECK(ok(s.last_seq()) == prev + 5);
    CHECK(put(s, rw("households", 132, "ordos/a")) == prev + 6);
    s.rollback_savepoint();
    CHECK(ok(s.last_seq()) == prev + 4);
    // The change feed read inside the transaction ends at the last number given out.
    CHECK(ok(s.changes(prev, scope_of({"ordos"}), 100)).next_cursor == prev + 4);
    ok(s.commit());
    CHECK(ok(s.last_seq()) == prev + 4);
    {
        // The counter reached meta with the commit: another connection reads it.
        auto other = F::open(fx.dir.path(), false);
        REQUIRE(other.ok());
        CHECK(ok((*other)->last_seq()) == prev + 4);
    }
    CHECK_FALSE(ok(s.get_record("households", rid(130))).has_value());
    CHECK_FALSE(ok(s.get_record("households", rid(112))).has_value());
    CHECK(ok(s.get_record("households", rid(114)))->seq == prev + 3);
    // The next transaction starts from meta, not from what the last one remembered.
    ok(s.begin());
    CHECK(put(s, rw("households", 116, "ordos/a")) == prev + 5);
    s.rollback();
    CHECK(put(s, rw("households", 116, "ordos/a")) == prev + 5);
    prev += 5;

    // Another writer of the same file (an admin tool) between two transactions: numbers go on
    // from its last one, never reuse it.
    {
        auto other = F::open(fx.dir.path(), false);
        REQUIRE(other.ok());
        CHECK(put(**other, rw("households", 117, "ordos/a")) == prev + 1);
    }
    ok(s.begin());
    CHECK(put(s, rw("households", 118, "ordos/a")) == prev + 2);
    ok(s.commit());

    // The counter survives reopening even when the newest change was purged.
    put(s, rw("households", 101, "ordos/a", 1000, true));
    const auto top = ok(s.last_seq());
    CHECK(ok(s.purge_tombstones(5000)) == 1);
    fx.reopen();
    CHECK(ok(fx.s().last_seq()) == top);
    CHECK(put(fx.s(), rw("households", 102, "ordos/a")) == top + 1);
}

// --- Change feed --------------------------------------------------------------------------

TEST_CASE_TEMPLATE("Store: changes() filters by scope with prefix semantics", F,
                   FIELDSYNC_STORE_FACTORIES) {
    StoreFixture<F> fx;
    Store& s = fx.s();
    const std::vector<std::string> areas = {
        "ordos/hang",    "ordos/hang/a", "ordos/hang/a/b", "ordos/hanggin/x",
        "ordos/hanggin", "ordos/han",    "ordos",          "ordos/h_ng/x",
        "ordos/h%ng",    "ordos/hangX",  "other/hang",     "ordos/hang%/x",
    };
    std::uint32_t n = 0;
    for (const auto& a : areas)
        put(s, rw("households", ++n, a));

    auto areas_for = [&](const Scope& scope) {
        std::set<std::string> got;
        auto page = ok(s.changes(0, scope, 100));
        CHECK_FALSE(page.more);
        CHECK(page.next_cursor == ok(s.last_seq()));
        for (const auto& r : page.records)
            got.insert(r.area);
        return got;
    };
    CHECK(areas_for(scope_of({"ordos/hang"})) ==
          std::set<std::string>{"ordos/hang", "ordos/hang/a", "ordos/hang/a/b"});
    CHECK(areas_for(scope_of({"ordos/hanggin"})) ==
          std::set<std::string>{"ordos/hanggin", "ordos/hanggin/x"});
    // '_' and '%' are plain characters, not LIKE wildcards.
    CHECK(areas_for(scope_of({"ordos/h_ng"})) == std::set<std::string>{"ordos/h_ng/x"});
    CHECK(areas_for(scope_of({"ordos/h%ng"})) == std::set<std::string>{"ordos/h%ng"});
    CHECK(areas_for(scope_of({"ordos/hang%"})) == std::set<std::string>{"ordos/hang%/x"});
    CHECK(areas_for(scope_of({"ordos/hang", "other"})) ==
          std::set<std::string>{"ordos/hang", "ordos/hang/a", "ordos/hang/a/b", "other/hang"});
    CHECK(areas_for(scope_of({"ordos"})).size() == areas.size() - 1);
    CHECK(areas_for(scope_of({})).empty());
    CHECK(areas_for(scope_of({"ordos/hang/a/b/c"})).empty());

    // The SQL rule agrees with protocol::area_contains on every pair.
    for (const auto& sc : areas) {
        std::set<std::string> expected;
        for (const auto& a : areas)
            if (p::area_contains(sc, a)) expected.insert(a);
        CHECK_MESSAGE(areas_for(scope_of({sc})) == expected, "scope " << sc);
    }
}

TEST_CASE_TEMPLATE("Store: changes() pages resume from next_cursor without gaps or repeats", F,
                   FIELDSYNC_STORE_FACTORIES) {
    StoreFixture<F> fx;
    Store& s = fx.s();
    const Scope scope = scope_of({"ordos/hanggin"});
    std::vector<std::uint64_t> in_scope_seqs;
    for (std::uint32_t i = 1; i <= 23; ++i) {
        const bool in = i % 3 != 0;
        const auto seq = put(s, rw("households", i, in ? "ordos/hanggin/x" : "ordos/dalad/y"));
        if (in) in_scope_seqs.push_back(seq);
    }
    for (std::size_t limit : {1u, 2u, 3u, 5u, 7u, 100u}) {
        CAPTURE(limit);
        auto all = pull_all(s, 0, scope, limit);
        std::vector<std::uint64_t> got;
        for (const auto& r : all.records)
            got.push_back(r.seq);
        CHECK(got == in_scope_seqs);
        CHECK(all.moves.empty());
        CHECK(all.cursor == ok(s.last_seq()));
        // `more` is exact (each stream reads one row past the page): no empty last page.
        CHECK(all.pages == static_cast<int>((in_scope_seqs.size() + limit - 1) / limit));
    }
    SUBCASE("an exactly full last page knows it is the last, and skips to last_seq") {
        put(s, rw("households", 90, "ordos/dalad/y"));  // out of scope, after the last match
        auto page = ok(s.changes(0, scope, in_scope_seqs.size()));
        CHECK(page.records.size() == in_scope_seqs.size());
        CHECK_FALSE(page.more);
        CHECK(page.next_cursor == ok(s.last_seq()));
        CHECK(page.next_cursor > in_scope_seqs.back());
        auto short_page = ok(s.changes(0, scope, in_scope_seqs.size() - 1));
        CHECK(short_page.more);
        CHECK(short_page.next_cursor == in_scope_seqs[in_scope_seqs.size() - 2]);
        auto last = ok(s.changes(short_page.next_cursor, scope, 10));
        CHECK(last.records.size() == 1);
        CHECK_FALSE(last.more);
        CHECK(last.next_cursor == ok(s.last_seq()));
    }
    SUBCASE("a record changed again appears once, at its latest seq") {
        const auto again = put(s, rw("households", 1, "ordos/hanggin/x", 5000));
        auto all = pull_all(s, 0, scope, 4);
        std::size_t count = 0;
        for (const auto& r : all.records)
            if (r.id == rid(1)) {
                ++count;
                CHECK(r.seq == again);
            }
        CHECK(count == 1);
    }
    SUBCASE("limit 0 is treated as 1; a cursor past the end stays put") {
        auto page = ok(s.changes(0, scope, 0));
        CHECK(page.records.size() == 1);
        auto past = ok(s.changes(1000, scope, 10));
        CHECK(past.records.empty());
        CHECK_FALSE(past.more);
        CHECK(past.next_cursor == 1000);
    }
}

TEST_CASE_TEMPLATE("Store: moves out of scope appear once, in their own sequence slot", F,
                   FIELDSYNC_STORE_FACTORIES) {
    StoreFixture<F> fx;
    Store& s = fx.s();
    const Scope scope = scope_of({"ordos/hang"});
    put(s, rw("households", 1, "ordos/hang/a"));
    put(s, rw("households", 2, "ordos/hang/b"));
    const auto cursor = ok(s.last_seq());

    const auto moved = put(s, rw("households", 1, "ordos/hanggin/z"));  // out of scope
    put(s, rw("households", 2, "ordos/hang/c"));                        // moved within scope

    auto page = ok(s.changes(cursor, scope, 10));
    CHECK_FALSE(page.more);
    REQUIRE(page.moves_out.size() == 1);
    CHECK(page.moves_out[0].seq == moved);
    CHECK(page.moves_out[0].collection == "households");
    CHECK(page.moves_out[0].id == rid(1));
    CHECK(page.moves_out[0].from_area == "ordos/hang/a");
    CHECK(page.moves_out[0].to_area == "ordos/hanggin/z");
    REQUIRE(page.records.size() == 1);
    CHECK(page.records[0].id == rid(2));
    CHECK(page.records[0].area == "ordos/hang/c");

    // Pulled one event at a time, the move is its own page and is never repeated.
    auto one_by_one = pull_all(s, cursor, scope, 1);
    CHECK(one_by_one.moves.size() == 1);
    CHECK(one_by_one.records.size() == 1);
    CHECK(ok(s.changes(page.next_cursor, scope, 10)).moves_out.empty());

    // Later changes to the record, outside the scope, do not show up at all.
    const auto after = ok(s.last_seq());
    put(s, rw("households", 1, "ordos/hanggin/z", 9000));
    auto later = ok(s.changes(after, scope, 10));
    CHECK(later.records.empty());
    CHECK(later.moves_out.empty());

    SUBCASE("a record moved out and back in within one page comes as a record, not a move") {
        const auto before = ok(s.last_seq());
        put(s, rw("households", 2, "ordos/dalad/q"));    // out
        put(s, rw("households", 2, "ordos/hang/back"));  // back in
        auto pg = ok(s.changes(before, scope, 10));
        CHECK(pg.moves_out.empty());
        REQUIRE(pg.records.size() == 1);
        CHECK(pg.records[0].area == "ordos/hang/back");
        // Split across pages, the client sees the move first and then the record.
        auto split = pull_all(s, before, scope, 1);
        CHECK(split.moves.size() == 1);
        CHECK(split.records.size() == 1);
    }
    SUBCASE("moved out twice within one page: one move") {
        const auto before = ok(s.last_seq());
        put(s, rw("households", 2, "ordos/dalad/q"));  // out
        put(s, rw("households", 2, "ordos/hang/d"));   // in
        put(s, rw("households", 2, "ordos/dalad/r"));  // out again
        auto pg = ok(s.changes(before, scope, 10));
        REQUIRE(pg.moves_out.size() == 1);
        CHECK(pg.moves_out[0].to_area == "ordos/dalad/r");
        CHECK(pg.records.empty());
    }
}

// A client model pulls after every batch of random writes; in the end it must hold exactly
// the records the scope covers (moves remove, records add), whatever the page size.
TEST_CASE_TEMPLATE("Store: a client following changes() converges to its scope (random)", F,
                   FIELDSYNC_STORE_FACTORIES) {
    StoreFixture<F> fx;
    Store& s = fx.s();
    // FIELDSYNC_SEED=<n> replays a failing run.
    const char* fixed = std::getenv("FIELDSYNC_SEED");
    const std::uint32_t seed = fixed ? static_cast<std::uint32_t>(std::strtoul(fixed, nullptr, 10))
                                     : std::random_device{}();
    INFO("seed " << seed << " (set FIELDSYNC_SEED to replay)");
    std::mt19937 rng(seed);
    const std::vector<std::string> areas = {
        "ordos/hang",      "ordos/hang/a", "ordos/hang/a/b", "ordos/hanggin",
        "ordos/hanggin/x", "ordos/dalad",  "ordos/dalad/c",  "ordos"};
    const std::vector<Scope> scopes = {scope_of({"ordos/hang"}), scope_of({"ordos/hanggin"}),
                                       scope_of({"ordos/hang/a", "ordos/dalad"}),
                                       scope_of({"ordos"})};
    struct Client {
        Scope scope;
        std::size_t limit;
        std::uint64_t cursor = 0;
        std::map<Key, std::uint64_t> held;
    };
    std::vector<Client> clients;
    for (const auto& sc : scopes)
        for (std::size_t limit : {1u, 3u, 50u})
            clients.push_back(Client{sc, limit, 0, {}});

    for (int round = 0; round < 12; ++round) {
        const int writes = static_cast<int>(rng() % 12);
        for (int w = 0; w < writes; ++w) {
            const auto n = static_cast<std::uint32_t>(rng() % 15);
            const auto& area = areas[rng() % areas.size()];
            put(s, rw(n % 2 ? "households" : "visits", n, area, 1000 + round, rng() % 5 == 0));
        }
        for (auto& c : clients) {
            auto got = pull_all(s, c.cursor, c.scope, c.limit);
            // Within one pull, apply in seq order (moves and records interleaved).
            std::vector<std::pair<std::uint64_t, const void*>> order;
            std::map<std::uint64_t, const Move*> moves;
            std::map<std::uint64_t, const StoredRecord*> recs;
            for (const auto& m : got.moves)
                moves[m.seq] = &m;
            for (const auto& r : got.records)
                recs[r.seq] = &r;
            auto mi = moves.begin();
            auto ri = recs.begin();
            while (mi != moves.end() || ri != recs.end()) {
                if (ri == recs.end() || (mi != moves.end() && mi->first < ri->first)) {
                    c.held.erase({mi->second->collection, mi->second->id});
                    ++mi;
                } else {
                    c.held[{ri->second->collection, ri->second->id}] = ri->first;
                    ++ri;
                }
            }
            c.cursor = got.cursor;
        }
    }
    for (const auto& c : clients) {
        std::map<Key, std::uint64_t> expected;
        for (const char* coll : {"households", "visits"}) {
            for (std::uint32_t n = 0; n < 15; ++n) {
                auto r = ok(s.get_record(coll, rid(n)));
                if (!r) continue;
                bool covered = false;
                for (const auto& a : c.scope.areas)
                    covered = covered || p::area_contains(a, r->area);
                if (covered) expected[{coll, rid(n)}] = r->seq;
            }
        }
        CAPTURE(c.limit);
        CAPTURE(c.scope.areas.front());
        CHECK(c.held == expected);
        CHECK(c.cursor == ok(s.last_seq()));
    }
}

TEST_CASE_TEMPLATE("Store: query_records filters and pages by seq", F, FIELDSYNC_STORE_FACTORIES) {
    StoreFixture<F> fx;
    Store& s = fx.s();
    put(s, rw("households", 1, "ordos/hang/a"));
    put(s, rw("households", 2, "ordos/hang/b", 1000, true));
    put(s, rw("households", 3, "ordos/hang/b"));
    put(s, rw("visits", 4, "ordos/hang/b"));
    put(s, rw("households", 5, "ordos/hanggin/c"));
    put(s, rw("households", 6, "ordos/hang/b/c"));

    RecordQuery q;
    q.collection = "households";
    q.scope = scope_of({"ordos/hang"});
    auto ids = [&](const RecordQuery& rq) {
        std::vector<std::uint32_t> out;
        for (const auto& r : ok(s.query_records(rq)))
            out.push_back(r.id.bytes[15]);
        return out;
    };
    CHECK(ids(q) == std::vector<std::uint32_t>{1, 3, 6});
    q.include_deleted = true;
    CHECK(ids(q) == std::vector<std::uint32_t>{1, 2, 3, 6});
    q.area_prefix = "ordos/hang/b";
    CHECK(ids(q) == std::vector<std::uint32_t>{2, 3, 6});
    q.area_prefix = "ordos/hanggin";  // outside the scope: the scope still applies
    CHECK(ids(q).empty());
    q.area_prefix.clear();
    q.collection.clear();  // every collection
    CHECK(ids(q) == std::vector<std::uint32_t>{1, 2, 3, 4, 6});
    q.limit = 2;
    CHECK(ids(q) == std::vector<std::uint32_t>{1, 2});
    auto first = ok(s.query_records(q));
    q.after_seq = first.back().seq;
    CHECK(ids(q) == std::vector<std::uint32_t>{3, 4});
    q.scope = scope_of({});
    CHECK(ids(q).empty());
}

TEST_CASE_TEMPLATE("Store: for_each_record visits the scope in (collection, id) order", F,
                   FIELDSYNC_STORE_FACTORIES) {
    StoreFixture<F> fx;
    Store& s = fx.s();
    put(s, rw("visits", 2, "ordos/hang/a"));
    put(s, rw("households", 9, "ordos/hang/a"));
    put(s, rw("households", 3, "ordos/hang", 1000, true));
    put(s, rw("households", 4, "ordos/hanggin"));
    put(s, rw("households", 1, "ordos/hang/b"));

    std::vector<std::pair<std::string, std::uint32_t>> seen;
    ok(s.for_each_record(scope_of({"ordos/hang"}), "", [&](const StoredRecord& r) {
        seen.emplace_back(r.collection, r.id.bytes[15]);
        // Reading from the store inside the callback is allowed.
        CHECK(ok(s.get_record(r.collection, r.id)).has_value());
        return true;
    }));
    CHECK(seen == std::vector<std::pair<std::string, std::uint32_t>>{
                      {"households", 1}, {"households", 3}, {"households", 9}, {"visits", 2}});

    seen.clear();
    ok(s.for_each_record(scope_of({"ordos"}), "households", [&](const StoredRecord& r) {
        seen.emplace_back(r.collection, r.id.bytes[15]);
        return seen.size() < 2;  // stop early
    }));
    CHECK(seen.size() == 2);

    seen.clear();
    ok(s.for_each_record(scope_of({}), "", [&](const StoredRecord& r) {
        seen.emplace_back(r.collection, r.id.bytes[15]);
        return true;
    }));
    CHECK(seen.empty());
}

TEST_CASE_TEMPLATE("Store: purge_tombstones deletes old tombstones and raises purge_seq", F,
                   FIELDSYNC_STORE_FACTORIES) {
    StoreFixture<F> fx;
    Store& s = fx.s();
    put(s, rw("households", 1, "ordos/a", 1000, true));
    const auto old_tomb = put(s, rw("households", 2, "ordos/a", 2000, true));
    put(s, rw("households", 3, "ordos/a", 1500));                           // live, old: kept
    const auto fresh = put(s, rw("households", 4, "ordos/a", 9000, true));  // recent: kept
    put(s, rw("households", 5, "ordos/a", 1000));
    put(s, rw("households", 5, "ordos/b", 1000));  // a move, below the purge point
    const auto last = ok(s.last_seq());
    // Open conflicts on a tombstone to be purged and on one that stays.
    ok(s.reconcile_conflicts("households", rid(2), "ordos/a", {{"status", "[1,2]"}}, "", "", 5,
                             ""));
    ok(s.reconcile_conflicts("households", rid(4), "ordos/a", {{"status", "[1,2]"}}, "", "", 5,
                             ""));

    CHECK(ok(s.purge_tombstones(1000)) == 0);  // strictly older than the cutoff
    CHECK(ok(s.purge_seq()) == 0);

    CHECK(ok(s.purge_tombstones(5000)) == 2);
    CHECK(ok(s.purge_seq()) == old_tomb);
    CHECK_FALSE(ok(s.get_record("households", rid(1))).has_value());
    CHECK_FALSE(ok(s.get_record("households", rid(2))).has_value());
    CHECK(ok(s.get_record("households", rid(3))).has_value());
    CHECK(ok(s.get_record("households", rid(4))).has_value());
    CHECK(ok(s.last_seq()) == last);
    // The purged record's conflict is closed with it; the other stays open.
    {
        ConflictFilter open;
        open.open = true;
        auto still = ok(s.list_conflicts(open));
        REQUIRE(still.size() == 1);
        CHECK(still[0].record == rid(4));
        ConflictFilter closed;
        closed.open = false;
        auto gone = ok(s.list_conflicts(closed));
        REQUIRE(gone.size() == 1);
        CHECK(gone[0].record == rid(2));
        CHECK(gone[0].resolved_by == "fieldsync");
        CHECK(gone[0].resolved_at_ms > 0);
        CHECK(gone[0].note.find("purged") != std::string::npos);
    }

    // Nothing more to purge: purge_seq stays.
    CHECK(ok(s.purge_tombstones(5000)) == 0);
    CHECK(ok(s.purge_seq()) == old_tomb);

    // purge_seq only rises.
    CHECK(ok(s.purge_tombstones(10000)) == 1);
    CHECK(ok(s.purge_seq()) == fresh);
    put(s, rw("households", 6, "ordos/a", 1, true));
    CHECK(ok(s.purge_tombstones(10000)) == 1);
    CHECK(ok(s.purge_seq()) > fresh);

    // Moves at or below purge_seq are gone with them (older cursors re-bootstrap).
    CHECK(ok(s.changes(0, scope_of({"ordos/a"}), 100)).moves_out.empty());
}

// --- Transactions -------------------------------------------------------------------------

TEST_CASE_TEMPLATE("Store: deferred sync: commits return, the syncer makes them durable", F,
                   FIELDSYNC_STORE_FACTORIES) {
    StoreFixture<F> fx;
    Store& s = fx.s();
    {
        ok(s.begin());
        auto inside = s.defer_sync();
        CHECK_FALSE(inside.ok());  // only outside a transaction
        s.rollback();
    }
    CHECK_FALSE(fx.reader()->defer_sync().ok());  // a reader has nothing to sync
    auto syncer = ok(s.defer_sync());
    REQUIRE(syncer);
    ok(s.begin());
    const auto seq = put(s, rw("households", 1, "ordos/a"));
    ok(s.commit());
    CHECK(ok(syncer->sync()));        // synced
    CHECK_FALSE(ok(syncer->sync()));  // nothing committed since: no fsync
    ok(s.begin());
    (void)ok(s.get_record("households", rid(1)));
    ok(s.commit());  // a transaction that wrote nothing
    CHECK_FALSE(ok(syncer->sync()));
    // Another thread syncs while this one writes (the store worker's pattern).
    std::thread t([&] {
        for (int i = 0; i < 20; ++i)
            CHECK(syncer->sync().ok());
    });
    for (std::uint32_t i = 2; i < 40; ++i) {
        ok(s.begin());
        put(s, rw("households", i, "ordos/a"));
        ok(s.commit());
    }
    t.join();
    (void)ok(syncer->sync());

    // A thread syncs all along while this one writes on (checkpoints run meanwhile: see the
    // next test for them).
    std::atomic<bool> writing{true};
    std::atomic<int> sync_failures{0};
    std::thread syncing([&] {
        while (writing) {
            if (!syncer->sync().ok()) ++sync_failures;
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
    });
    std::uint32_t n = 40;
    for (int i = 0; i < 1500; ++i, ++n) {
        ok(s.begin());
        for (int k = 0; k < 4; ++k)
            put(s, rw("households", n * 4 + static_cast<std::uint32_t>(k), "ordos/a"));
        ok(s.commit());
    }
    writing = false;
    syncing.join();
    CHECK(sync_failures.load() == 0);
    (void)ok(syncer->sync());

    syncer.reset();
    fx.reopen();
    CHECK(ok(fx.s().get_record("households", rid(1)))->seq == seq);
    CHECK(ok(fx.s().last_seq()) == seq + 38 + 1500 * 4);
}

TEST_CASE(
    "SqliteStore: after defer_sync a helper thread checkpoints, and the WAL stays under "
    "its limit") {
    TempDir dir;
    SqliteOptions o;
    o.checkpoint_pages = 50;
    o.wal_limit_pages = 300;
    auto opened = open_sqlite_store(dir.path() / "store.db", o);
    REQUIRE(opened.ok());
    std::unique_ptr<Store> store = std::move(*opened);
    auto syncer = ok(store->defer_sync());
    const fs::path db = dir.path() / "store.db";
    const fs::path wal = dir.path() / "store.db-wal";
    std::uint32_t n = 0;
    auto commit_four = [&] {
        ok(store->begin());
        for (int k = 0; k < 4; ++k)
            put(*store, rw("households", ++n, "ordos/a"));
        ok(store->commit());
    };
    commit_four();
    const auto db_before = fs::file_size(db);

    // Past checkpoint_pages, below the limit: the writer stops writing, and the log is copied
    // into the database file all the same, by the helper.
    while (fs::file_size(wal) < 60 * 4096)
        commit_four();
    bool copied = false;
    for (int i = 0; i < 1000 && !copied; ++i) {
        copied = fs::file_size(db) > db_before;
        if (!copied) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    CHECK_MESSAGE(copied, "no checkpoint within 10 s of the log passing checkpoint_pages");

    // A writer that never pauses: the helper alone would let the log grow (it starts over only
    // after a checkpoint that ends between a commit and the next BEGIN); at the limit the
    // writer finishes the copy itself, so the log stays under the limit plus one transaction.
    std::uintmax_t largest = 0;
    for (int i = 0; i < 3000; ++i) {
        commit_four();
        largest = std::max(largest, fs::file_size(wal));
    }
    CHECK_MESSAGE(largest < 320u * (4096 + 24), "the WAL grew to " << largest << " bytes");
    CHECK(ok(syncer->sync()));

    syncer.reset();
    store.reset();
    opened = open_sqlite_store(dir.path() / "store.db", o);
    REQUIRE(opened.ok());
    CHECK(ok((*opened)->last_seq()) == n);
    CHECK(ok((*opened)->get_record("households", rid(n))).has_value());
}

TEST_CASE_TEMPLATE("Store: a rolled-back savepoint leaves nothing behind", F,
                   FIELDSYNC_STORE_FACTORIES) {
    StoreFixture<F> fx;
    Store& s = fx.s();
    const auto uid = ok(s.add_user(user_named("ana", {"ordos/hang"})));

    ok(s.begin());
    const auto kept = put(s, rw("households", 1, "ordos/hang"));

    ok(s.savepoint());
    put(s, rw("households", 2, "ordos/hang"));
    put(s, rw("households", 1, "ordos/dalad"));  // a move
    AuditEntry a;
    a.seq = kept + 1;
    a.user = "ana";
    a.collection = "households";
    a.id = rid(2);
    a.summary = "{}";
    ok(s.append_audit(a));
    ok(s.add_user(user_named("bo")));
    ok(s.reconcile_conflicts("households", rid(1), "ordos/hang", {{"income", "[1,2]"}}, "", "", 5,
                             ""));
    Token t;
    t.token_hash = "h1";
    t.user_id = uid;
    ok(s.put_token(t));
    s.rollback_savepoint();

    ok(s.savepoint());  // a released savepoint keeps its writes
    const auto second = put(s, rw("households", 3, "ordos/hang"));
    ok(s.savepoint());  // nested: the inner one is undone, the outer kept
    put(s, rw("households", 4, "ordos/hang"));
    s.rollback_savepoint();
    ok(s.release_savepoint());
    ok(s.commit());

    CHECK(second == kept + 1);  // the rolled-back change gave its number back
    CHECK(ok(s.last_seq()) == second);
    auto r1 = ok(s.get_record("households", rid(1)));
    REQUIRE(r1);
    CHECK(r1->area == "ordos/hang");
    CHECK_FALSE(ok(s.get_record("households", rid(2))).has_value());
    CHECK(ok(s.get_record("households", rid(3))).has_value());
    CHECK_FALSE(ok(s.get_record("households", rid(4))).has_value());
    CHECK(ok(s.audit_for("households", rid(2), 10)).empty());
    CHECK_FALSE(ok(s.user_by_name("bo")).has_value());
    CHECK(ok(s.count_open_conflicts()) == 0);
    CHECK_FALSE(ok(s.token("h1")).has_value());
    auto page = ok(s.changes(0, scope_of({"ordos/hang"}), 100));
    CHECK(page.moves_out.empty());
    CHECK(page.records.size() == 2);

    SUBCASE("savepoints need a transaction") {
        auto st = s.savepoint();
        REQUIRE_FALSE(st.ok());
        CHECK(st.error().message.find("begin()") != std::string::npos);
        CHECK_FALSE(s.release_savepoint().ok());
        s.rollback_savepoint();  // no-op
    }
}

TEST_CASE_TEMPLATE("Store: begin/commit nest and only the outermost commit publishes", F,
                   FIELDSYNC_STORE_FACTORIES) {
    StoreFixture<F> fx;
    Store& s = fx.s();
    auto reader = fx.reader();

    ok(s.begin());
    ok(s.begin());
    put(s, rw("households", 1, "ordos/a"));
    ok(s.commit());  // inner
    CHECK_FALSE(ok(reader->get_record("households", rid(1))).has_value());
    ok(s.commit());  // outer
    CHECK(ok(reader->get_record("households", rid(1))).has_value());

    auto stray = s.commit();
    REQUIRE_FALSE(stray.ok());
    CHECK(stray.error().code == p::protocol_errc::internal);
    s.rollback();  // no-op outside a transaction
    CHECK(ok(s.get_record("households", rid(1))).has_value());
}

TEST_CASE_TEMPLATE("Store: rollback undoes the transaction, and dooms the outer levels", F,
                   FIELDSYNC_STORE_FACTORIES) {
    StoreFixture<F> fx;
    Store& s = fx.s();
    ok(s.begin());
    put(s, rw("households", 1, "ordos/a"));
    s.rollback();
    CHECK_FALSE(ok(s.get_record("households", rid(1))).has_value());
    CHECK(ok(s.last_seq()) == 0);

    ok(s.begin());
    put(s, rw("households", 2, "ordos/a"));
    ok(s.begin());
    put(s, rw("households", 3, "ordos/a"));
    s.rollback();  // inner: rolls everything back now
    CHECK_FALSE(ok(s.get_record("households", rid(2))).has_value());
    // The outer level is still open but doomed: writes fail instead of autocommitting.
    auto w = s.put_record(rw("households", 4, "ordos/a"));
    REQUIRE_FALSE(w.ok());
    CHECK(w.error().message.find("rolled back") != std::string::npos);
    auto c = s.commit();
    REQUIRE_FALSE(c.ok());
    CHECK(c.error().message.find("rolled back") != std::string::npos);
    CHECK_FALSE(ok(s.get_record("households", rid(4))).has_value());

    // Usable again afterwards.
    ok(s.begin());
    put(s, rw("households", 5, "ordos/a"));
    ok(s.commit());
    CHECK(ok(s.get_record("households", rid(5))).has_value());
}

TEST_CASE_TEMPLATE("Store: a reader sees committed data while the writer holds a transaction", F,
                   FIELDSYNC_STORE_FACTORIES) {
    StoreFixture<F> fx;
    Store& s = fx.s();
    put(s, rw("households", 1, "ordos/a"));
    auto reader = fx.reader();

    ok(s.begin());
    put(s, rw("households", 2, "ordos/a"));
    put(s, rw("households", 1, "ordos/b"));
    // The reader is not blocked and sees the last commit only.
    auto r1 = ok(reader->get_record("households", rid(1)));
    REQUIRE(r1);
    CHECK(r1->area == "ordos/a");
    CHECK_FALSE(ok(reader->get_record("households", rid(2))).has_value());
    CHECK(ok(reader->last_seq()) == 1);
    auto page = ok(reader->changes(0, scope_of({"ordos"}), 10));
    CHECK(page.records.size() == 1);
    CHECK(page.next_cursor == 1);
    ok(s.commit());

    CHECK(ok(reader->get_record("households", rid(2))).has_value());
    CHECK(ok(reader->last_seq()) == 3);

    // Readers cannot write.
    auto w = reader->put_record(rw("households", 9, "ordos/a"));
    REQUIRE_FALSE(w.ok());
    CHECK(w.error().message.find("read-only") != std::string::npos);
    CHECK_FALSE(reader->begin().ok());
}

TEST_CASE_TEMPLATE("Store: committed writes survive a reopen, uncommitted ones do not", F,
                   FIELDSYNC_STORE_FACTORIES) {
    StoreFixture<F> fx;
    ok(fx.s().begin());
    put(fx.s(), rw("households", 1, "ordos/a"));
    ok(fx.s().commit());
    put(fx.s(), rw("households", 2, "ordos/a"));  // autocommitted on its own

    ok(fx.s().begin());
    put(fx.s(), rw("households", 3, "ordos/a"));
    ok(fx.s().add_user(user_named("ghost")));
    fx.close();  // never committed

    fx.reopen();
    CHECK(ok(fx.s().get_record("households", rid(1))).has_value());
    CHECK(ok(fx.s().get_record("households", rid(2))).has_value());
    CHECK_FALSE(ok(fx.s().get_record("households", rid(3))).has_value());
    CHECK_FALSE(ok(fx.s().user_by_name("ghost")).has_value());
    CHECK(ok(fx.s().last_seq()) == 2);
}

// --- Audit and conflicts ------------------------------------------------------------------

TEST_CASE_TEMPLATE("Store: audit entries are kept per record, newest first", F,
                   FIELDSYNC_STORE_FACTORIES) {
    StoreFixture<F> fx;
    Store& s = fx.s();
    put(s, rw("households", 1, "ordos/a"));
    put(s, rw("households", 2, "ordos/a"));
    put(s, rw("members", 3, "ordos/a"));
    for (std::uint64_t i = 1; i <= 5; ++i) {
        AuditEntry e;
        e.seq = i;
        e.at_ms = static_cast<std::int64_t>(1000 * i);
        e.user = "ana";
        e.device = i % 2 ? "console" : "0190f3c2-7a1b-7c00-8000-0000000000ff";
        e.collection = "households";
        e.id = rid(i == 3 ? 2 : 1);
        e.summary = R"({"fields":{"income":)" + std::to_string(i) + "}}";
        ok(s.append_audit(e));
    }
    auto all = ok(s.audit_for("households", rid(1), 10));
    REQUIRE(all.size() == 4);
    CHECK(all[0].seq == 5);
    CHECK(all[3].seq == 1);
    CHECK(all[0].at_ms == 5000);
    CHECK(all[0].user == "ana");
    CHECK(all[0].device == "console");
    CHECK(all[1].device == "0190f3c2-7a1b-7c00-8000-0000000000ff");
    CHECK(all[0].collection == "households");
    CHECK(all[0].id == rid(1));
    CHECK(all[0].summary == R"({"fields":{"income":5}})");
    CHECK(ok(s.audit_for("households", rid(1), 2)).size() == 2);
    CHECK(ok(s.audit_for("households", rid(2), 10)).size() == 1);
    CHECK(ok(s.audit_for("members", rid(1), 10)).empty());
    CHECK(ok(s.audit_for("members", rid(3), 10)).empty());

    // An entry belongs to a stored record: one for a record that does not exist is refused
    // and writes nothing.
    AuditEntry stray;
    stray.seq = 9;
    stray.user = "ana";
    stray.collection = "households";
    stray.id = rid(7);
    stray.summary = "{}";
    auto refused = s.append_audit(stray);
    REQUIRE_FALSE(refused.ok());
    CHECK(refused.error().message.find("no record households/") != std::string::npos);
    put(s, rw("households", 7, "ordos/a"));
    CHECK(ok(s.audit_for("households", rid(7), 10)).empty());
    // Nor for a record whose creation was rolled back just before.
    ok(s.begin());
    ok(s.savepoint());
    RecordWrite fresh = rw("households", 8, "ordos/a");
    fresh.current_area = "";  // the caller read no stored record: a creation
    put(s, fresh);
    s.rollback_savepoint();
    stray.id = rid(8);
    CHECK_FALSE(s.append_audit(stray).ok());
    ok(s.commit());
    CHECK(ok(s.audit_for("households", rid(8), 10)).empty());
    // Later writes of a record keep their entries with it, whatever was created in between.
    put(s, rw("households", 1, "ordos/b"));
    stray.id = rid(1);
    stray.seq = 9;
    ok(s.append_audit(stray));
    auto again = ok(s.audit_for("households", rid(1), 10));
    REQUIRE(again.size() == 5);
    CHECK(again[0].seq == 9);
}

TEST_CASE_TEMPLATE("Store: reconcile_conflicts opens, updates and closes per field", F,
                   FIELDSYNC_STORE_FACTORIES) {
    StoreFixture<F> fx;
    Store& s = fx.s();
    using OF = Store::OpenField;
    const std::string area = "ordos/hang/a";

    auto c = ok(s.reconcile_conflicts("households", rid(1), area,
                                      {OF{"income", R"([1,2])"}, OF{"status", R"(["a","b"])"}}, "",
                                      "", 1000, ""));
    CHECK(c.opened == 2);
    CHECK(c.closed == 0);
    CHECK(ok(s.count_open_conflicts()) == 2);

    // The same list again: nothing changes.
    c = ok(s.reconcile_conflicts("households", rid(1), area,
                                 {OF{"income", R"([1,2])"}, OF{"status", R"(["a","b"])"}}, "", "",
                                 2000, ""));
    CHECK(c.opened == 0);
    CHECK(c.closed == 0);

    // New competing values update the open conflict in place.
    c = ok(s.reconcile_conflicts("households", rid(1), area,
                                 {OF{"income", R"([1,2,3])"}, OF{"status", R"(["a","b"])"}}, "", "",
                                 3000, ""));
    CHECK(c.opened == 0);
    CHECK(c.closed == 0);
    auto open = ok(s.list_conflicts(ConflictFilter{true, "", "income", 0, 100, 0}));
    REQUIRE(open.size() == 1);
    CHECK(open[0].values_json == R"([1,2,3])");
    CHECK(open[0].opened_at_ms == 1000);
    const auto income_id = open[0].id;

    // A field no longer in conflict is closed as resolved.
    c = ok(s.reconcile_conflicts("households", rid(1), area, {OF{"status", R"(["a","b"])"}},
                                 "sup-ordos", "settled at the township office", 4000, "2"));
    CHECK(c.opened == 0);
    CHECK(c.closed == 1);
    auto closed = ok(s.get_conflict(income_id));
    REQUIRE(closed);
    CHECK_FALSE(closed->open);
    CHECK(closed->collection == "households");
    CHECK(closed->record == rid(1));
    CHECK(closed->field == "income");
    CHECK(closed->area == area);
    CHECK(closed->resolved_by == "sup-ordos");
    CHECK(closed->resolved_at_ms == 4000);
    CHECK(closed->resolution_json == "2");
    CHECK(closed->note == "settled at the township office");
    CHECK(ok(s.count_open_conflicts()) == 1);
    CHECK_FALSE(ok(s.get_conflict(9999)).has_value());

    // Re-opening the same field makes a new conflict; the old one stays as history.
    c = ok(s.reconcile_conflicts("households", rid(1), area,
                                 {OF{"income", R"([4,5])"}, OF{"status", R"(["a","b"])"}}, "", "",
                                 5000, ""));
    CHECK(c.opened == 1);
    CHECK(ok(s.count_open_conflicts()) == 2);

    // Other records and areas for the filters.
    ok(s.reconcile_conflicts("households", rid(2), "ordos/hanggin/x", {OF{"income", "[7,8]"}}, "",
                             "", 500, ""));
    ok(s.reconcile_conflicts("members", rid(3), "ordos/hang", {OF{"name", R"(["x","y"])"}}, "", "",
                             6000, ""));

    SUBCASE("list_conflicts filters") {
        ConflictFilter f;
        CHECK(ok(s.list_conflicts(f)).size() == 5);  // 4 open + the closed income one
        f.open = true;
        auto all_open = ok(s.list_conflicts(f));
        CHECK(all_open.size() == 4);
        // Oldest first.
        CHECK(all_open.front().opened_at_ms == 500);
        CHECK(std::is_sorted(all_open.begin(), all_open.end(), [](const auto& a, const auto& b) {
            return a.opened_at_ms < b.opened_at_ms;
        }));
        f.open = false;
        CHECK(ok(s.list_conflicts(f)).size() == 1);
        f.open.reset();
        f.area_prefix = "ordos/hang";
        CHECK(ok(s.list_conflicts(f)).size() == 4);  // not "ordos/hanggin/x"
        f.area_prefix = "ordos/hang/a";
        CHECK(ok(s.list_conflicts(f)).size() == 3);
        f.area_prefix = "ordos/hanggin";
        CHECK(ok(s.list_conflicts(f)).size() == 1);
        f.area_prefix.clear();
        f.field = "income";
        CHECK(ok(s.list_conflicts(f)).size() == 3);
        f.field.clear();
        f.older_than_ms = 1000;  // opened before 1000
        auto old = ok(s.list_conflicts(f));
        REQUIRE(old.size() == 1);
        CHECK(old[0].record == rid(2));
        f.older_than_ms = 0;
        f.limit = 2;
        f.offset = 1;
        auto paged = ok(s.list_conflicts(f));
        REQUIRE(paged.size() == 2);
        CHECK(paged[0].opened_at_ms == 1000);
    }
}

// --- Users, tokens, devices, areas --------------------------------------------------------

TEST_CASE_TEMPLATE("Store: users are added, found, updated and listed", F,
                   FIELDSYNC_STORE_FACTORIES) {
    StoreFixture<F> fx;
    Store& s = fx.s();
    const auto ana = ok(s.add_user(user_named("ana", {"ordos/hang/b", "ordos/hang/a"})));
    const auto bo = ok(s.add_user(user_named("bo", {}, Role::supervisor)));
    CHECK(ana != bo);

    auto u = ok(s.user_by_name("ana"));
    REQUIRE(u);
    CHECK(u->id == ana);
    CHECK(u->name == "ana");
    CHECK(u->display_name == "Display ana");
    CHECK(u->role == Role::enumerator);
    CHECK_FALSE(u->disabled);
    CHECK(u->password_hash == "pbkdf2-sha256$1$00$00");
    CHECK(u->created_at_ms == 42);
    CHECK(u->areas == std::vector<std::string>{"ordos/hang/a", "ordos/hang/b"});
    CHECK(ok(s.user_by_id(bo))->name == "bo");
    CHECK_FALSE(ok(s.user_by_name("nobody")).has_value());
    CHECK_FALSE(ok(s.user_by_id(12345)).has_value());

    // Update replaces every field and the areas.
    User changed = *u;
    changed.display_name = "Ana B.";
    changed.role = Role::admin;
    changed.disabled = true;
    changed.password_hash = "pbkdf2-sha256$2$11$22";
    changed.areas = {"ordos"};
    ok(s.update_user(changed));
    u = ok(s.user_by_id(ana));
    REQUIRE(u);
    CHECK(u->display_name == "Ana B.");
    CHECK(u->role == Role::admin);
    CHECK(u->disabled);
    CHECK(u->password_hash == "pbkdf2-sha256$2$11$22");
    CHECK(u->areas == std::vector<std::string>{"ordos"});

    auto users = ok(s.list_users());
    REQUIRE(users.size() == 2);
    CHECK(users[0].name == "ana");
    CHECK(users[0].areas == std::vector<std::string>{"ordos"});
    CHECK(users[1].name == "bo");
    CHECK(users[1].areas.empty());
    CHECK(users[1].role == Role::supervisor);

    SUBCASE("a duplicate name is invalid_value with a clear message") {
        auto dup = s.add_user(user_named("ana"));
        REQUIRE_FALSE(dup.ok());
        CHECK(dup.error().code == p::protocol_errc::invalid_value);
        CHECK(dup.error().message ==
              "add_user: the user name 'ana' is already taken; choose another");
        CHECK(ok(s.list_users()).size() == 2);

        User rename = *ok(s.user_by_id(bo));
        rename.name = "ana";
        auto st = s.update_user(rename);
        REQUIRE_FALSE(st.ok());
        CHECK(st.error().code == p::protocol_errc::invalid_value);
        CHECK(st.error().message.find("'ana' is already taken") != std::string::npos);
        CHECK(ok(s.user_by_id(bo))->name == "bo");
    }
    SUBCASE("unknown ids and empty names are invalid_value") {
        User ghost = user_named("ghost");
        ghost.id = 999;
        auto st = s.update_user(ghost);
        REQUIRE_FALSE(st.ok());
        CHECK(st.error().code == p::protocol_errc::invalid_value);
        CHECK(st.error().message.find("999") != std::string::npos);
        auto empty = s.add_user(user_named(""));
        REQUIRE_FALSE(empty.ok());
        CHECK(empty.error().code == p::protocol_errc::invalid_value);
    }
}

TEST_CASE_TEMPLATE("Store: tokens are stored by hash and revoked", F, FIELDSYNC_STORE_FACTORIES) {
    StoreFixture<F> fx;
    Store& s = fx.s();
    const auto ana = ok(s.add_user(user_named("ana")));
    const auto bo = ok(s.add_user(user_named("bo")));
    for (const auto& [hash, user] :
         std::vector<std::pair<std::string, std::int64_t>>{{"h1", ana}, {"h2", ana}, {"h3", bo}}) {
        Token t;
        t.token_hash = hash;
        t.user_id = user;
        t.created_at_ms = 100;
        t.expires_at_ms = 200;
        ok(s.put_token(t));
    }
    auto t = ok(s.token("h1"));
    REQUIRE(t);
    CHECK(t->token_hash == "h1");
    CHECK(t->user_id == ana);
    CHECK(t->created_at_ms == 100);
    CHECK(t->expires_at_ms == 200);
    CHECK_FALSE(t->revoked);
    CHECK_FALSE(ok(s.token("nope")).has_value());

    ok(s.revoke_token("h1"));
    CHECK(ok(s.token("h1"))->revoked);
    CHECK_FALSE(ok(s.token("h2"))->revoked);
    ok(s.revoke_user_tokens(ana));
    CHECK(ok(s.token("h2"))->revoked);
    CHECK_FALSE(ok(s.token("h3"))->revoked);
    ok(s.revoke_token("unknown"));  // no-op
    ok(s.revoke_user_tokens(4242));

    Token orphan;
    orphan.token_hash = "h9";
    orphan.user_id = 4242;
    auto st = s.put_token(orphan);
    REQUIRE_FALSE(st.ok());
    CHECK(st.error().code == p::protocol_errc::invalid_value);
}

TEST_CASE_TEMPLATE("Store: devices are bound to one replica each", F, FIELDSYNC_STORE_FACTORIES) {
    StoreFixture<F> fx;
    Store& s = fx.s();
    const auto ana = ok(s.add_user(user_named("ana")));
    Device d;
    d.id = "dev-1";
    d.replica = replica_of(1);
    d.user_id = ana;
    d.app_version = "1.0.0";
    d.last_seen_ms = 77;
    d.last_cursor = 12;
    d.records_sent = 3;
    d.scope_signature = "ordos/hang\n";
    ok(s.put_device(d));

    auto got = ok(s.device("dev-1"));
    REQUIRE(got);
    CHECK(got->id == "dev-1");
    CHECK(got->replica == replica_of(1));
    CHECK(got->user_id == ana);
    CHECK(got->app_version == "1.0.0");
    CHECK(got->last_seen_ms == 77);
    CHECK(got->last_cursor == 12);
    CHECK(got->records_sent == 3);
    CHECK(got->scope_signature == "ordos/hang\n");
    CHECK(ok(s.device_by_replica(replica_of(1)))->id == "dev-1");
    CHECK_FALSE(ok(s.device("dev-x")).has_value());
    CHECK_FALSE(ok(s.device_by_replica(replica_of(9))).has_value());

    // Updating the same device is fine.
    d.last_cursor = 40;
    ok(s.put_device(d));
    CHECK(ok(s.device("dev-1"))->last_cursor == 40);

    // Another device claiming the same replica is refused.
    Device other = d;
    other.id = "dev-2";
    auto st = s.put_device(other);
    REQUIRE_FALSE(st.ok());
    CHECK(st.error().code == p::protocol_errc::replica_conflict);
    CHECK(st.error().message.find("dev-1") != std::string::npos);
    CHECK_FALSE(ok(s.device("dev-2")).has_value());

    other.replica = replica_of(2);
    ok(s.put_device(other));
    auto all = ok(s.list_devices());
    REQUIRE(all.size() == 2);
    CHECK(all[0].id == "dev-1");
    CHECK(all[1].id == "dev-2");

    Device orphan = other;
    orphan.id = "dev-3";
    orphan.replica = replica_of(3);
    orphan.user_id = 999;
    auto fk = s.put_device(orphan);
    REQUIRE_FALSE(fk.ok());
    CHECK(fk.error().code == p::protocol_errc::invalid_value);
}

TEST_CASE_TEMPLATE("Store: areas are upserted and listed by code", F, FIELDSYNC_STORE_FACTORIES) {
    StoreFixture<F> fx;
    Store& s = fx.s();
    ok(s.put_area(Area{"ordos/hanggin", "ordos", "banner", "Hanggin", "杭锦旗"}));
    ok(s.put_area(Area{"ordos", "", "city", "Ordos", "鄂尔多斯"}));
    ok(s.put_area(Area{"ordos/hanggin/xini", "ordos/hanggin", "town", "Xini", "锡尼镇"}));
    ok(s.put_area(Area{"ordos/hanggin", "ordos", "banner", "Hanggin Banner", "杭锦旗"}));
    auto areas = ok(s.list_areas());
    REQUIRE(areas.size() == 3);
    CHECK(areas[0].code == "ordos");
    CHECK(areas[0].parent.empty());
    CHECK(areas[1].code == "ordos/hanggin");
    CHECK(areas[1].name_en == "Hanggin Banner");
    CHECK(areas[1].level == "banner");
    CHECK(areas[2].parent == "ordos/hanggin");
    CHECK_FALSE(s.put_area(Area{"", "", "city", "", ""}).ok());
}

// --- SQLite specifics ---------------------------------------------------------------------

namespace {

struct RawDb {
    sqlite3* db = nullptr;
    explicit RawDb(const fs::path& path) { REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK); }
    ~RawDb() { sqlite3_close(db); }
    RawDb(const RawDb&) = delete;
    RawDb& operator=(const RawDb&) = delete;
    std::string text(const char* sql) {
        sqlite3_stmt* s = nullptr;
        REQUIRE(sqlite3_prepare_v2(db, sql, -1, &s, nullptr) == SQLITE_OK);
        std::string out;
        if (sqlite3_step(s) == SQLITE_ROW && sqlite3_column_text(s, 0))
            out = reinterpret_cast<const char*>(sqlite3_column_text(s, 0));
        sqlite3_finalize(s);
        return out;
    }
    void exec(const char* sql) {
        REQUIRE(sqlite3_exec(db, sql, nullptr, nullptr, nullptr) == SQLITE_OK);
    }
};

// Turns a file of the current migration back into one of migration 2 (undoes step 3).
void downgrade_to_migration_2(RawDb& raw) {
    raw.exec("DROP INDEX audit_by_record");
    raw.exec("ALTER TABLE audit DROP COLUMN record_key");
    raw.exec("ALTER TABLE records DROP COLUMN first_seq");
    raw.exec("CREATE INDEX audit_record ON audit(collection, record_id, seq)");
    raw.exec("UPDATE meta SET value = 2 WHERE key = 'schema_migration'");
}

}  // namespace

TEST_CASE("SqliteStore: the file records its migration and runs in WAL mode") {
    TempDir dir;
    const auto path = dir.path() / "store.db";
    {
        auto s = open_sqlite_store(path);
        REQUIRE(s.ok());
    }
    {
        RawDb raw(path);
        CHECK(raw.text("SELECT value FROM meta WHERE key = 'schema_migration'") == "3");
        CHECK(raw.text("PRAGMA journal_mode") == "wal");
        CHECK(raw.text("SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name IN "
                       "('meta','schemas','records','moves','users','assignments','tokens',"
                       "'devices','areas','conflicts','audit')") == "11");
        CHECK(raw.text("SELECT length(value) FROM meta WHERE key = 'server_replica'") == "16");
    }
    // Reopening leaves the version alone.
    {
        auto s = open_sqlite_store(path);
        REQUIRE(s.ok());
    }
    RawDb raw(path);
    CHECK(raw.text("SELECT value FROM meta WHERE key = 'schema_migration'") == "3");
}

TEST_CASE("SqliteStore: migration 2 closes the open conflicts of records that no longer exist") {
    TempDir dir;
    const auto path = dir.path() / "store.db";
    {
        auto s = open_sqlite_store(path);
        REQUIRE(s.ok());
        put(**s, rw("households", 1, "ordos/a"));
        ok((*s)->reconcile_conflicts("households", rid(1), "ordos/a", {{"status", "[1,2]"}}, "", "",
                                     5, ""));
    }
    {
        // A file of migration 1 whose purge left a conflict open (step 1 did).
        RawDb raw(path);
        downgrade_to_migration_2(raw);
        raw.exec(
            "INSERT INTO conflicts(collection, record_id, field, area, open, opened_at_ms, "
            "values_json) VALUES ('households', zeroblob(16), 'status', 'ordos/a', 1, 5, "
            "'[]')");
        raw.exec("UPDATE meta SET value = 1 WHERE key = 'schema_migration'");
    }
    auto s = open_sqlite_store(path);
    REQUIRE(s.ok());
    ConflictFilter open;
    open.open = true;
    auto still = ok((*s)->list_conflicts(open));
    REQUIRE(still.size() == 1);
    CHECK(still[0].record == rid(1));
    ConflictFilter closed;
    closed.open = false;
    auto gone = ok((*s)->list_conflicts(closed));
    REQUIRE(gone.size() == 1);
    CHECK(gone[0].record == RecordId{});
    CHECK(gone[0].resolved_by == "fieldsync");
    RawDb raw(path);
    CHECK(raw.text("SELECT value FROM meta WHERE key = 'schema_migration'") == "3");
}

TEST_CASE("SqliteStore: migration 3 keeps every record's audit entries, purged ones apart") {
    TempDir dir;
    const auto path = dir.path() / "store.db";
    auto entry = [](std::uint32_t n, std::uint64_t seq) {
        AuditEntry e;
        e.seq = seq;
        e.at_ms = static_cast<std::int64_t>(seq);
        e.user = "ana";
        e.device = "console";
        e.collection = "households";
        e.id = rid(n);
        e.summary = "{\"n\":" + std::to_string(seq) + "}";
        return e;
    };
    {
        auto s = open_sqlite_store(path);
        REQUIRE(s.ok());
        const auto one = put(**s, rw("households", 1, "ordos/a"));
        ok((*s)->append_audit(entry(1, one)));
        put(**s, rw("households", 2, "ordos/a"));  // a record without entries
    }
    {
        // Migration 2 files entries by (collection, record_id): add the shapes step 3 meets.
        RawDb raw(path);
        downgrade_to_migration_2(raw);
        const char* insert =
            "INSERT INTO audit(seq, at_ms, user_name, device, collection, record_id, summary) "
            "VALUES (?1, ?1, 'ana', 'console', 'households', ?2, '{}')";
        auto add = [&](std::int64_t seq, const RecordId& id) {
            sqlite3_stmt* st = nullptr;
            REQUIRE(sqlite3_prepare_v2(raw.db, insert, -1, &st, nullptr) == SQLITE_OK);
            sqlite3_bind_int64(st, 1, seq);
            sqlite3_bind_blob(st, 2, id.bytes.data(), 16, SQLITE_TRANSIENT);
            CHECK(sqlite3_step(st) == SQLITE_DONE);
            sqlite3_finalize(st);
        };
        add(5, rid(1));  // a later change of record 1
        add(3, rid(9));  // a record purged since: its entries stay, unreachable
        add(4, rid(9));
    }
    auto s = open_sqlite_store(path);
    REQUIRE_MESSAGE(s.ok(), (s.ok() ? "" : s.error().message));
    auto one = ok((*s)->audit_for("households", rid(1), 10));
    REQUIRE(one.size() == 2);
    CHECK(one[0].seq == 5);
    CHECK(one[1].seq == 1);
    CHECK(one[1].summary == "{\"n\":1}");
    CHECK(ok((*s)->audit_for("households", rid(2), 10)).empty());
    CHECK(ok((*s)->audit_for("households", rid(9), 10)).empty());

    // New writes after the migration join the old entries of their record.
    const auto seq = put(**s, rw("households", 1, "ordos/b"));
    ok((*s)->append_audit(entry(1, seq)));
    const auto two = put(**s, rw("households", 2, "ordos/b"));
    ok((*s)->append_audit(entry(2, two)));
    CHECK(ok((*s)->audit_for("households", rid(1), 10)).size() == 3);
    CHECK(ok((*s)->audit_for("households", rid(2), 10)).size() == 1);

    RawDb raw(path);
    CHECK(raw.text("SELECT value FROM meta WHERE key = 'schema_migration'") == "3");
    CHECK(raw.text("SELECT group_concat(record_key) FROM (SELECT record_key FROM audit "
                   "ORDER BY id)") == "1,1,3,3,1,2");
    CHECK(raw.text("SELECT count(*) FROM sqlite_schema WHERE name = 'audit_record'") == "0");
    // A record's entries are found through the new index, not by scanning the table.
    sqlite3_stmt* plan = nullptr;
    REQUIRE(
        sqlite3_prepare_v2(raw.db,
                           "EXPLAIN QUERY PLAN SELECT seq, summary FROM audit WHERE record_key = 1 "
                           "ORDER BY seq DESC, id DESC",
                           -1, &plan, nullptr) == SQLITE_OK);
    std::string details;
    while (sqlite3_step(plan) == SQLITE_ROW)
        details += reinterpret_cast<const char*>(sqlite3_column_text(plan, 3));
    sqlite3_finalize(plan);
    INFO(details);
    CHECK(details.find("USING INDEX audit_by_record") != std::string::npos);
    CHECK(details.find("TEMP B-TREE") == std::string::npos);
}

TEST_CASE("SqliteStore: a file from a newer fieldsync is refused") {
    TempDir dir;
    const auto path = dir.path() / "store.db";
    { REQUIRE(open_sqlite_store(path).ok()); }
    {
        RawDb raw(path);
        raw.exec("UPDATE meta SET value = 99 WHERE key = 'schema_migration'");
    }
    auto s = open_sqlite_store(path);
    REQUIRE_FALSE(s.ok());
    CHECK(s.error().code == p::protocol_errc::unsupported_version);
    CHECK(s.error().message.find("99") != std::string::npos);
    SqliteOptions ro;
    ro.read_only = true;
    auto r = open_sqlite_store(path, ro);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == p::protocol_errc::unsupported_version);
}

TEST_CASE("SqliteStore: open failures name the file and SQLite's reason") {
    TempDir dir;
    SqliteOptions ro;
    ro.read_only = true;
    auto missing = open_sqlite_store(dir.path() / "absent.db", ro);
    REQUIRE_FALSE(missing.ok());
    CHECK(missing.error().code == p::protocol_errc::internal);
    CHECK(missing.error().message.find("absent.db") != std::string::npos);
    CHECK(missing.error().message.find("unable to open") != std::string::npos);

    auto no_dir = open_sqlite_store(dir.path() / "no" / "such" / "dir.db");
    REQUIRE_FALSE(no_dir.ok());
    CHECK(no_dir.error().message.find("dir.db") != std::string::npos);

    const auto junk = dir.path() / "junk.db";
    {
        std::ofstream out(junk, std::ios::binary);
        out << std::string(4096, 'x');
    }
    auto bad = open_sqlite_store(junk);
    REQUIRE_FALSE(bad.ok());
    CHECK(bad.error().message.find("junk.db") != std::string::npos);
    CHECK(bad.error().message.find("not a database") != std::string::npos);
}

TEST_CASE("Store: roles have stable text names") {
    for (auto r : {Role::enumerator, Role::supervisor, Role::admin})
        CHECK(parse_role(to_string(r)) == r);
    CHECK(std::string(to_string(Role::supervisor)) == "supervisor");
    CHECK_FALSE(parse_role("root").has_value());
    CHECK_FALSE(parse_role("").has_value());
}
