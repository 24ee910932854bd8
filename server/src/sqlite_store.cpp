// The SQLite implementation of the server store (store.hpp). docs/server-store.md has the
// full picture; the essentials:
//
// File and durability: one SQLite file in WAL mode, so reader connections read a committed
// snapshot while the single writer writes. synchronous=FULL: in WAL mode, NORMAL only syncs
// the WAL at checkpoints, so a commit that returned could still vanish on power loss; FULL
// fsyncs the WAL at every commit, and the sync protocol acknowledges a push only after its
// commit returned. The server groups many pushes into one transaction, so this costs one fsync
// per group, not per item.
// The server's writer defers that fsync to another thread instead (defer_sync, "Deferred sync"
// below): synchronous=NORMAL, and the store worker delivers no reply before its group is synced.
//
// Schema migrations: meta('schema_migration') holds the version applied; `migrations` below
// lists every step, in order, each a SQL script. The writer applies the missing steps at open,
// all in one transaction (a crash mid-way leaves the previous version). To change the schema,
// append a step; never edit a released one. Readers refuse a file that is not fully migrated.
//
// Sequence: meta('last_seq') is the one counter of record changes. Within a transaction the
// writer counts in memory (m_seq: the last number this transaction gave out), so a put_record
// neither reads nor writes meta; the transaction writes meta once, just before its COMMIT
// (flush_seq). A savepoint remembers m_seq at its start and a rollback to it restores that
// value, so a rolled-back write gives its number back; a whole rollback forgets m_seq (meta
// was never written), and so does the end of the transaction: the first put of the next one
// reads meta, so the counter survives restarts and tombstone purges (max(seq) would not:
// purging the newest tombstone would let a number be reused and a cursor skip a change).
// Readers of last_seq inside the writer's transaction get m_seq (seq_now).
// records.seq is the sequence of a record's latest change (UNIQUE);
// moves.seq is the sequence of the change that moved a record between areas. The change feed is the
// merge of both, ordered by seq (see changes()).
//
// Scope rule: an area code A covers A and every code starting with "A/". In SQL:
// `area = A OR substr(area, 1, length(A) + 1) = A || '/'` (not LIKE: '%' and '_' in a code
// would be wildcards). The scope's codes are bound as one JSON array and expanded with
// json_each into a materialized CTE, so one cached statement serves any number of areas.
//
// Transactions: begin() nests with a counter (BEGIN IMMEDIATE at the outermost level, so the
// write lock is taken up front and never upgraded); user savepoints are named fs_sp, the
// store's own per-method savepoints fs_op. rollback() rolls everything back at once and dooms
// the outer levels, whose writes then fail instead of silently autocommitting.
#include <fcntl.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/rand.h>

#include <algorithm>
#include <atomic>
#include <boost/json.hpp>
#include <condition_variable>
#include <cstdint>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "fieldsync/server/store.hpp"
#include "sqlite_db.hpp"

namespace fieldsync::server {

namespace {

using protocol::protocol_errc;
using sqlite::Connection;
using sqlite::Stmt;

// --- Schema -----------------------------------------------------------------------------

struct Migration {
    int version;
    const char* sql;
};

// Every schema step, in order. Append; never edit a released step.
constexpr Migration migrations[] = {
    {1, R"sql(
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value ANY
) STRICT;
INSERT INTO meta(key, value) VALUES ('last_seq', 0), ('purge_seq', 0);

CREATE TABLE schemas (
    version INTEGER PRIMARY KEY,
    json    TEXT NOT NULL
) STRICT;

CREATE TABLE records (
    collection     TEXT NOT NULL,
    id             BLOB NOT NULL CHECK (length(id) = 16),
    area           TEXT NOT NULL,
    seq            INTEGER NOT NULL,
    schema_version INTEGER NOT NULL,
    deleted        INTEGER NOT NULL DEFAULT 0,
    updated_at_ms  INTEGER NOT NULL,
    state          BLOB NOT NULL,
    PRIMARY KEY (collection, id)
) STRICT;
CREATE UNIQUE INDEX records_seq ON records(seq);
CREATE INDEX records_area ON records(area);
CREATE INDEX records_tombstones ON records(updated_at_ms) WHERE deleted = 1;

CREATE TABLE moves (
    seq        INTEGER PRIMARY KEY,
    collection TEXT NOT NULL,
    record_id  BLOB NOT NULL CHECK (length(record_id) = 16),
    from_area  TEXT NOT NULL,
    to_area    TEXT NOT NULL
) STRICT;

CREATE TABLE users (
    id            INTEGER PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE CHECK (name <> ''),
    display_name  TEXT NOT NULL DEFAULT '',
    role          TEXT NOT NULL CHECK (role IN ('enumerator', 'supervisor', 'admin')),
    disabled      INTEGER NOT NULL DEFAULT 0,
    password_hash TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL
) STRICT;

CREATE TABLE assignments (
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    area    TEXT NOT NULL,
    PRIMARY KEY (user_id, area)
) STRICT;

CREATE TABLE tokens (
    token_hash    TEXT PRIMARY KEY,
    user_id       INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at_ms INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    revoked       INTEGER NOT NULL DEFAULT 0
) STRICT;
CREATE INDEX tokens_user ON tokens(user_id);

CREATE TABLE devices (
    id              TEXT PRIMARY KEY,
    replica         BLOB NOT NULL UNIQUE CHECK (length(replica) = 16),
    user_id         INTEGER NOT NULL REFERENCES users(id),
    app_version     TEXT NOT NULL DEFAULT '',
    last_seen_ms    INTEGER NOT NULL DEFAULT 0,
    last_cursor     INTEGER NOT NULL DEFAULT 0,
    records_sent    INTEGER NOT NULL DEFAULT 0,
    scope_signature TEXT NOT NULL DEFAULT ''
) STRICT;
CREATE INDEX devices_user ON devices(user_id);

CREATE TABLE areas (
    code    TEXT PRIMARY KEY,
    parent  TEXT NOT NULL DEFAULT '',
    level   TEXT NOT NULL,
    name_en TEXT NOT NULL DEFAULT '',
    name_zh TEXT NOT NULL DEFAULT ''
) STRICT;

CREATE TABLE conflicts (
    id              INTEGER PRIMARY KEY,
    collection      TEXT NOT NULL,
    record_id       BLOB NOT NULL CHECK (length(record_id) = 16),
    field           TEXT NOT NULL,
    area            TEXT NOT NULL,
    open            INTEGER NOT NULL DEFAULT 1,
    opened_at_ms    INTEGER NOT NULL,
    values_json     TEXT NOT NULL,
    resolved_by     TEXT NOT NULL DEFAULT '',
    resolved_at_ms  INTEGER NOT NULL DEFAULT 0,
    resolution_json TEXT NOT NULL DEFAULT '',
    note            TEXT NOT NULL DEFAULT ''
) STRICT;
CREATE UNIQUE INDEX conflicts_one_open ON conflicts(collection, record_id, field) WHERE open = 1;
CREATE INDEX conflicts_record ON conflicts(collection, record_id);
CREATE INDEX conflicts_opened ON conflicts(open, opened_at_ms);

CREATE TABLE audit (
    id         INTEGER PRIMARY KEY,
    seq        INTEGER NOT NULL,
    at_ms      INTEGER NOT NULL,
    user_name  TEXT NOT NULL,
    device     TEXT NOT NULL,
    collection TEXT NOT NULL,
    record_id  BLOB NOT NULL CHECK (length(record_id) = 16),
    summary    TEXT NOT NULL
) STRICT;
CREATE INDEX audit_record ON audit(collection, record_id, seq);
)sql"},
    // Step 1 let purge_tombstones delete a record while its conflicts stayed open. From step
    // 2 on, an open conflict's record exists (purge_tombstones closes them first), so a record
    // that does not exist has no open conflicts and its first write need not look for any.
    {2, R"sql(
UPDATE conflicts SET open = 0, resolved_by = 'fieldsync',
    resolved_at_ms = CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER),
    note = 'closed: the record was purged (a deleted record past the tombstone retention)'
WHERE open = 1 AND NOT EXISTS (
    SELECT 1 FROM records r WHERE r.collection = conflicts.collection AND r.id = conflicts.record_id);
)sql"},
    // Step 3 files audit entries under the record's first sequence number instead of its
    // random id. The old index (collection, record_id, seq) put every new record's first entry
    // on a random page, so each commit wrote about one more random page per record; a new
    // record's first sequence number is the newest, so its entry now goes to the end of the
    // index. `records.first_seq` is the sequence of the record's creation (put_record sets it
    // on insert and never changes it); `audit.record_key` is that number for the record the
    // entry belongs to. An existing record's key is its oldest audit entry's sequence (its
    // own sequence when it has none); entries of records purged since keep the same grouping.
    {3, R"sql(
ALTER TABLE records ADD COLUMN first_seq INTEGER NOT NULL DEFAULT 0;
ALTER TABLE audit ADD COLUMN record_key INTEGER NOT NULL DEFAULT 0;
UPDATE audit SET record_key = (
    SELECT min(a.seq) FROM audit a
    WHERE a.collection = audit.collection AND a.record_id = audit.record_id);
UPDATE records SET first_seq = coalesce((
    SELECT min(a.seq) FROM audit a
    WHERE a.collection = records.collection AND a.record_id = records.id), seq);
DROP INDEX audit_record;
CREATE INDEX audit_by_record ON audit(record_key, seq);
)sql"},
    // {4, R"sql( ALTER TABLE ... )sql"},   <- the next schema change goes here
};

constexpr int latest_migration = migrations[std::size(migrations) - 1].version;

// --- SQL ----------------------------------------------------------------------------------
// Statements are cached by their text, so each lives in static storage.

// Closes the open conflicts of the tombstones purge_tombstones(?1) is about to delete.
constexpr const char* sql_close_purged_conflicts = R"sql(
UPDATE conflicts SET open = 0, resolved_by = 'fieldsync',
    resolved_at_ms = CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER),
    note = 'closed: the record was purged (a deleted record past the tombstone retention)'
WHERE open = 1 AND EXISTS (
    SELECT 1 FROM records r WHERE r.collection = conflicts.collection
        AND r.id = conflicts.record_id AND r.deleted = 1 AND r.updated_at_ms < ?1))sql";

// `scope(a)`: the scope's area codes, from the JSON array bound to `param`, computed once.
std::string with_scope(const char* param) {
    return std::string("WITH scope(a) AS MATERIALIZED (SELECT value FROM json_each(") + param +
           ")) ";
}
// True when the scope covers the area in column `col` (see the scope rule above).
std::string in_scope(const char* col) {
    return std::string("EXISTS (SELECT 1 FROM scope WHERE ") + col + " = scope.a OR substr(" + col +
           ", 1, length(scope.a) + 1) = scope.a || '/')";
}

// Binds ?1-?8 of the records row insert (put_record, insert_record): the row of `w` at `seq`.
template <class Q>
void bind_record_row(Q& q, const RecordWrite& w, std::uint64_t seq) {
    q.bind_text(1, w.collection)
        .bind_id(2, w.id)
        .bind_text(3, w.area)
        .bind_u64(4, seq)
        .bind_int(5, w.schema_version)
        .bind_bool(6, w.deleted)
        .bind_int(7, w.at_ms)
        .bind_blob_ref(8, w.state);
}

constexpr const char* record_cols =
    "r.collection, r.id, r.area, r.seq, r.schema_version, r.deleted, r.updated_at_ms, r.state";

const std::string sql_get_record =
    std::string("SELECT ") + record_cols + " FROM records r WHERE r.collection = ?1 AND r.id = ?2";
const std::string sql_changes_records = with_scope("?2") + "SELECT " + record_cols +
                                        " FROM records r WHERE r.seq > ?1 AND " +
                                        in_scope("r.area") + " ORDER BY r.seq LIMIT ?3";
const std::string sql_changes_moves =
    with_scope("?2") +
    "SELECT m.seq, m.collection, m.record_id, m.from_area, m.to_area FROM moves m "
    "WHERE m.seq > ?1 AND " +
    in_scope("m.from_area") + " AND NOT " + in_scope("m.to_area") + " ORDER BY m.seq LIMIT ?3";
const std::string sql_query_records =
    with_scope("?1") + "SELECT " + record_cols +
    " FROM records r WHERE (?2 = '' OR r.collection = ?2) AND r.seq > ?3 "
    "AND (?4 OR r.deleted = 0) "
    "AND (?5 = '' OR r.area = ?5 OR substr(r.area, 1, length(?5) + 1) = ?5 || '/') AND " +
    in_scope("r.area") + " ORDER BY r.seq LIMIT ?6";
const std::string sql_for_each_record = with_scope("?1") + "SELECT " + record_cols +
                                        " FROM records r WHERE (?2 = '' OR r.collection = ?2) "
                                        "AND " +
                                        in_scope("r.area") + " ORDER BY r.collection, r.id";

constexpr const char* conflict_cols =
    "id, collection, record_id, field, area, open, opened_at_ms, values_json, resolved_by, "
    "resolved_at_ms, resolution_json, note";
const std::string sql_list_conflicts =
    std::string("SELECT ") + conflict_cols +
    " FROM conflicts WHERE (?1 IS NULL OR open = ?1) "
    "AND (?2 = '' OR area = ?2 OR substr(area, 1, length(?2) + 1) = ?2 || '/') "
    "AND (?3 = '' OR field = ?3) AND (?4 = 0 OR opened_at_ms < ?4) "
    "ORDER BY opened_at_ms, id LIMIT ?5 OFFSET ?6";
const std::string sql_get_conflict =
    std::string("SELECT ") + conflict_cols + " FROM conflicts WHERE id = ?1";

constexpr const char* user_cols =
    "id, name, display_name, role, disabled, password_hash, created_at_ms";
const std::string sql_user_by_name =
    std::string("SELECT ") + user_cols + " FROM users WHERE name = ?1";
const std::string sql_user_by_id = std::string("SELECT ") + user_cols + " FROM users WHERE id = ?1";
const std::string sql_list_users = std::string("SELECT ") + user_cols + " FROM users ORDER BY name";

constexpr const char* device_cols =
    "id, replica, user_id, app_version, last_seen_ms, last_cursor, records_sent, scope_signature";
const std::string sql_device = std::string("SELECT ") + device_cols + " FROM devices WHERE id = ?1";
const std::string sql_device_by_replica =
    std::string("SELECT ") + device_cols + " FROM devices WHERE replica = ?1";
const std::string sql_list_devices =
    std::string("SELECT ") + device_cols + " FROM devices ORDER BY id";

// --- Helpers ------------------------------------------------------------------------------

Error invalid(std::string message) {
    return Error{protocol_errc::invalid_value, std::move(message)};
}
Error internal(std::string message) {
    return Error{protocol_errc::internal, std::move(message)};
}

std::int64_t clamp_limit(std::size_t limit) noexcept {
    constexpr std::size_t max_limit = std::size_t{1} << 30;
    return static_cast<std::int64_t>(std::clamp<std::size_t>(limit, 1, max_limit));
}

std::string scope_json(const Scope& scope) {
    boost::json::array a;
    a.reserve(scope.areas.size());
    for (const auto& area : scope.areas)
        a.emplace_back(boost::json::string_view(area));
    return boost::json::serialize(a);
}

StoredRecord read_record(const Stmt& q) {
    StoredRecord r;
    r.collection = q.col_text(0);
    r.id = q.col_id(1);
    r.area = q.col_text(2);
    r.seq = q.col_u64(3);
    r.schema_version = static_cast<std::uint32_t>(q.col_int(4));
    r.deleted = q.col_bool(5);
    r.updated_at_ms = q.col_int(6);
    r.state = q.col_blob(7);
    return r;
}

Conflict read_conflict(const Stmt& q) {
    Conflict c;
    c.id = q.col_int(0);
    c.collection = q.col_text(1);
    c.record = q.col_id(2);
    c.field = q.col_text(3);
    c.area = q.col_text(4);
    c.open = q.col_bool(5);
    c.opened_at_ms = q.col_int(6);
    c.values_json = q.col_text(7);
    c.resolved_by = q.col_text(8);
    c.resolved_at_ms = q.col_int(9);
    c.resolution_json = q.col_text(10);
    c.note = q.col_text(11);
    return c;
}

Result<User> read_user(const Stmt& q, std::string_view op) {
    User u;
    u.id = q.col_int(0);
    u.name = q.col_text(1);
    u.display_name = q.col_text(2);
    const std::string role = q.col_text(3);
    auto parsed = parse_role(role);
    if (!parsed)
        return internal(std::string(op) + ": user " + u.name + " has unknown role '" + role + "'");
    u.role = *parsed;
    u.disabled = q.col_bool(4);
    u.password_hash = q.col_text(5);
    u.created_at_ms = q.col_int(6);
    return u;
}

Device read_device(const Stmt& q) {
    Device d;
    d.id = q.col_text(0);
    d.replica = q.col_id(1);
    d.user_id = q.col_int(2);
    d.app_version = q.col_text(3);
    d.last_seen_ms = q.col_int(4);
    d.last_cursor = q.col_u64(5);
    d.records_sent = q.col_u64(6);
    d.scope_signature = q.col_text(7);
    return d;
}

Token read_token(const Stmt& q) {
    Token t;
    t.token_hash = q.col_text(0);
    t.user_id = q.col_int(1);
    t.created_at_ms = q.col_int(2);
    t.expires_at_ms = q.col_int(3);
    t.revoked = q.col_bool(4);
    return t;
}

// --- Deferred sync -------------------------------------------------------------------------
// With defer_sync(), the writer runs synchronous=NORMAL: a commit appends its frames to the
// WAL without an fsync (checkpoints still sync the WAL before copying it, and the database
// after). SqliteSyncer then fsyncs the WAL file through a descriptor of its own: on Linux,
// fsync flushes the file, whichever descriptor wrote it. The WAL is a log with a checksum
// chain, so what a crash keeps of unsynced commits is a prefix of whole commits.
// Checkpoints: the writer's WAL hook (which replaces SQLite's automatic checkpoint) counts the
// commits that wrote, for the syncer. Once the log holds SqliteOptions::checkpoint_pages
// (1,000, as SQLite's wal_autocheckpoint) it asks the Checkpointer: a thread with a connection
// of its own that runs PASSIVE checkpoints (copying the log into the database file, with their
// fsyncs) while the writer goes on. A helper alone cannot bound the log: the log starts over
// only at a commit whose transaction began after a checkpoint had copied all of it, and a busy
// writer begins its next transaction right after it commits. So when the log reaches
// SqliteOptions::wal_limit_pages, the writer, right after its commit, waits for the helper's
// copy and checkpoints the rest itself (as SQLite's automatic checkpoint would: nothing
// commits meanwhile, so the log is wholly copied and the next commit starts it over). The log
// thus stays under the limit plus one transaction, and the writer copies only the tail the
// helper had not reached. Without defer_sync, the writer checkpoints at checkpoint_pages.

std::string errno_text(int e) {
    return std::error_code(e, std::generic_category()).message();
}

/// Runs PASSIVE checkpoints of one database on a thread and connection of its own, when
/// asked (see "Checkpoints" above). request() may be called from any thread; the destructor
/// stops and joins the thread. A failed checkpoint loses nothing (the log keeps the data) and
/// is tried again at the next request.
class Checkpointer {
public:
    /// Opens a connection to `db_path` and starts the thread; nullptr when the connection
    /// cannot be opened (the writer then checkpoints itself).
    static std::unique_ptr<Checkpointer> start(const char* db_path) {
        sqlite3* raw = nullptr;
        const int rc =
            sqlite3_open_v2(db_path, &raw, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, nullptr);
        sqlite::DbPtr db(raw);
        if (rc != SQLITE_OK) return nullptr;
        // The same durability as the writer's checkpoints: sync the log before copying it and
        // the database file after.
        if (sqlite3_exec(db.get(),
                         "PRAGMA synchronous = FULL; PRAGMA fullfsync = ON; "
                         "PRAGMA checkpoint_fullfsync = ON;",
                         nullptr, nullptr, nullptr) != SQLITE_OK)
            return nullptr;
        return std::unique_ptr<Checkpointer>(new Checkpointer(std::move(db)));
    }
    ~Checkpointer() {
        {
            std::lock_guard lock(m_mutex);
            m_stopping = true;
        }
        m_wake.notify_one();
        m_thread.join();
    }
    Checkpointer(const Checkpointer&) = delete;
    Checkpointer& operator=(const Checkpointer&) = delete;

    void request() noexcept {
        {
            std::lock_guard lock(m_mutex);
            if (m_requested) return;
            m_requested = true;
        }
        m_wake.notify_one();
    }

    /// Waits for the checkpoint in progress, if any, then runs `fn` while no other starts:
    /// SQLite lets one checkpoint run at a time and fails the others at once.
    template <class Fn>
    void exclusive(Fn&& fn) {
        std::unique_lock lock(m_mutex);
        m_idle.wait(lock, [&] { return !m_running; });
        fn();
    }

private:
    explicit Checkpointer(sqlite::DbPtr db) : m_db(std::move(db)) {
        m_thread = std::thread([this] { run(); });
    }
    void run() {
        std::unique_lock lock(m_mutex);
        for (;;) {
            m_wake.wait(lock, [&] { return m_requested || m_stopping; });
            if (m_stopping) return;
            m_requested = false;
            m_running = true;
            lock.unlock();
            (void)sqlite3_wal_checkpoint_v2(m_db.get(), nullptr, SQLITE_CHECKPOINT_PASSIVE, nullptr,
                                            nullptr);
            lock.lock();
            m_running = false;
            m_idle.notify_all();
        }
    }

    sqlite::DbPtr m_db;  // used by m_thread only
    std::mutex m_mutex;
    std::condition_variable m_wake;
    std::condition_variable m_idle;  // m_running went false
    bool m_requested = false;
    bool m_running = false;  // a checkpoint is under way on m_thread
    bool m_stopping = false;
    std::thread m_thread;  // last: started once the rest is ready
};

/// What the writer's WAL hook tells the syncer; shared, as either may outlive the other.
struct WalCounters {
    std::atomic<std::uint64_t> commits{0};  ///< commits that wrote to the WAL
    // Set on the writer's thread (open, defer_sync, ~SqliteStore); read by its hook.
    Checkpointer* checkpointer = nullptr;
    int checkpoint_pages = 1000;
    int limit_pages = 16000;
};

int wal_hook(void* arg, sqlite3* db, const char* schema, int pages) {
    auto* counters = static_cast<WalCounters*>(arg);
    counters->commits.fetch_add(1);
    // `pages` is the length of the log, copied or not (see "Checkpoints" above).
    Checkpointer* helper = counters->checkpointer;
    if (pages < counters->checkpoint_pages) return SQLITE_OK;
    if (!helper)
        (void)sqlite3_wal_checkpoint(db, schema);
    else if (pages < counters->limit_pages)
        helper->request();
    else  // the writer waits for the helper's copy, then copies the rest
        helper->exclusive([&] { (void)sqlite3_wal_checkpoint(db, schema); });
    return SQLITE_OK;
}

class SqliteSyncer final : public Syncer {
public:
    SqliteSyncer(std::string wal, std::shared_ptr<WalCounters> counters)
        : m_wal(std::move(wal)), m_counters(std::move(counters)) {}
    ~SqliteSyncer() override {
        if (m_fd >= 0) ::close(m_fd);
    }
    SqliteSyncer(const SqliteSyncer&) = delete;
    SqliteSyncer& operator=(const SqliteSyncer&) = delete;

    Result<bool> sync() override {
        // The hook counts every commit that wrote (it runs inside COMMIT, on the writer's
        // thread, before the writer hands the group over): none since the last sync, no fsync.
        const std::uint64_t commits = m_counters->commits.load();
        if (commits == m_synced_commits) return false;
        // SQLite deletes the WAL only when the last connection closes; should it be made anew
        // all the same, the descriptor must follow the name.
        struct stat now {};
        if (m_fd >= 0 &&
            (::stat(m_wal.c_str(), &now) != 0 || now.st_ino != m_ino || now.st_dev != m_dev)) {
            ::close(m_fd);
            m_fd = -1;
        }
        if (m_fd < 0) {
            const int fd = ::open(m_wal.c_str(), O_RDONLY | O_CLOEXEC);
            if (fd < 0) return failure("cannot open", errno);
            struct stat st {};
            if (::fstat(fd, &st) != 0) {
                const int e = errno;
                ::close(fd);
                return failure("cannot stat", e);
            }
            // The WAL's entry in its folder must be durable too (once per file).
            const std::string dir = std::filesystem::path(m_wal).parent_path().string();
            const int dfd =
                ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
            if (dfd < 0 || ::fsync(dfd) != 0) {
                const int e = errno;
                if (dfd >= 0) ::close(dfd);
                ::close(fd);
                return failure("cannot sync the folder of", e);
            }
            ::close(dfd);
            m_fd = fd;
            m_ino = st.st_ino;
            m_dev = st.st_dev;
        }
#ifdef __APPLE__
        // A plain fsync does not flush the drive's cache there (what PRAGMA fullfsync is for).
        if (::fcntl(m_fd, F_FULLFSYNC) != 0) return failure("fsync failed for", errno);
#else
        if (::fdatasync(m_fd) != 0) return failure("fsync failed for", errno);
#endif
        m_synced_commits = commits;
        return true;
    }

private:
    Error failure(const char* what, int e) const {
        return internal(std::string("sync: ") + what + " the write-ahead log " + m_wal + ": " +
                        errno_text(e) + "; commits since the last sync may not be durable");
    }

    std::string m_wal;
    std::shared_ptr<WalCounters> m_counters;  // set by the writer's WAL hook
    std::uint64_t m_synced_commits = 0;       // m_counters->commits at the last fsync
    int m_fd = -1;
    ino_t m_ino = 0;
    dev_t m_dev = 0;
};

// --- The store ----------------------------------------------------------------------------

class SqliteStore final : public Store {
public:
    SqliteStore(Connection conn, const SqliteOptions& options, ReplicaId replica)
        : m_conn(std::move(conn)), m_read_only(options.read_only), m_replica(replica) {
        m_wal->checkpoint_pages = std::max(1, options.checkpoint_pages);
        m_wal->limit_pages = std::max(m_wal->checkpoint_pages, options.wal_limit_pages);
    }

    ~SqliteStore() override {
        // An open transaction is abandoned: nothing uncommitted survives a close.
        if (m_conn.in_transaction()) (void)m_conn.exec("close", "ROLLBACK");
        if (m_conn.get()) sqlite3_wal_hook(m_conn.get(), nullptr, nullptr);  // see defer_sync
        m_wal->checkpointer = nullptr;
        m_checkpointer.reset();  // joins its thread before the writer's connection closes
    }

    // --- Transactions

    Status begin() override {
        if (m_read_only) return read_only_error("begin");
        if (m_depth == 0) {
            if (m_conn.in_transaction())
                return internal("begin: a transaction is already open on the connection");
            if (auto st = m_conn.cached("begin", "BEGIN IMMEDIATE").run(); !st) return st;
            m_doomed = false;
            m_savepoints = 0;
            m_seq_marks.clear();
            m_seq.reset();
            m_created.reset();
        }
        ++m_depth;
        return {};
    }

    Status commit() override {
        if (m_depth == 0)
            return internal("commit: no transaction is open (begin() was not called)");
        --m_depth;
        if (m_depth > 0) {
            if (m_doomed) return doomed_error("commit");
            return {};
        }
        const bool doomed = m_doomed || !m_conn.in_transaction();
        m_doomed = false;
        m_savepoints = 0;
        m_seq_marks.clear();
        m_created.reset();
        // The counter goes into meta with the rest of the transaction (see "Sequence").
        Status flushed = doomed ? Status{} : flush_seq("commit");
        m_seq.reset();
        if (!flushed) {
            if (m_conn.in_transaction()) (void)m_conn.cached("rollback", "ROLLBACK").run();
            return flushed;
        }
        if (doomed) {
            if (m_conn.in_transaction()) (void)m_conn.cached("rollback", "ROLLBACK").run();
            return internal(
                "commit: the transaction was rolled back (by an inner rollback() or by SQLite "
                "after an earlier error); nothing was committed");
        }
        if (auto st = m_conn.cached("commit", "COMMIT").run(); !st) {
            if (m_conn.in_transaction()) (void)m_conn.cached("rollback", "ROLLBACK").run();
            return st;
        }
        return {};
    }

    void rollback() noexcept override {
        if (m_depth == 0) return;
        m_seq.reset();
        m_seq_marks.clear();
        m_created.reset();
        if (!m_doomed && m_conn.in_transaction()) {
            try {
                (void)m_conn.cached("rollback", "ROLLBACK").run();
            } catch (...) {
                // Out of memory preparing ROLLBACK: the exec below needs no allocation of ours.
                (void)sqlite3_exec(m_conn.get(), "ROLLBACK", nullptr, nullptr, nullptr);
            }
        }
        m_savepoints = 0;
        --m_depth;
        m_doomed = m_depth > 0;
    }

    Status savepoint() override {
        if (m_depth == 0) return internal("savepoint: no transaction is open (call begin() first)");
        if (auto st = check_writable("savepoint"); !st) return st;
        if (auto st = m_conn.cached("savepoint", "SAVEPOINT fs_sp").run(); !st) return st;
        ++m_savepoints;
        m_seq_marks.push_back(m_seq);
        return {};
    }

    Status release_savepoint() override {
        if (m_savepoints == 0) return internal("release_savepoint: no savepoint is open");
        if (auto st = check_writable("release_savepoint"); !st) return st;
        if (auto st = m_conn.cached("release_savepoint", "RELEASE fs_sp").run(); !st) return st;
        --m_savepoints;
        if (!m_seq_marks.empty()) m_seq_marks.pop_back();
        return {};
    }

    void rollback_savepoint() noexcept override {
        if (m_savepoints == 0) return;
        --m_savepoints;
        m_created.reset();
        // The rolled-back writes give their numbers back.
        if (!m_seq_marks.empty()) {
            m_seq = m_seq_marks.back();
            m_seq_marks.pop_back();
        } else {
            m_seq.reset();
        }
        try {
            auto a = m_conn.cached("rollback_savepoint", "ROLLBACK TO fs_sp").run();
            auto b = m_conn.cached("rollback_savepoint", "RELEASE fs_sp").run();
            if (a && b) return;
        } catch (...) {
        }
        // SQLite rolled the whole transaction back (I/O error, out of memory): the outer
        // levels must not go on writing.
        if (!m_conn.in_transaction()) {
            m_savepoints = 0;
            m_seq_marks.clear();
            m_seq.reset();
            m_doomed = m_depth > 0;
        }
    }

    Result<std::unique_ptr<Syncer>> defer_sync() override {
        if (m_read_only) return read_only_error("defer_sync");
        if (m_conn.in_transaction())
            return internal("defer_sync: a transaction is open; call it right after opening");
        {
            auto q = m_conn.cached("defer_sync", "PRAGMA journal_mode");
            auto row = q.next();
            if (!row) return row.error();
            if (!*row || q.col_text(0) != "wal")
                return internal("defer_sync: the database is not in WAL mode");
        }
        const char* main = sqlite3_db_filename(m_conn.get(), "main");
        if (!main || !*main) return internal("defer_sync: the database has no file");
        const char* wal = sqlite3_filename_wal(main);
        if (!wal || !*wal) return internal("defer_sync: SQLite names no write-ahead log");
        if (auto st = m_conn.exec("defer_sync", "PRAGMA synchronous = NORMAL"); !st)
            return st.error();
        // The hook replaces (and does the work of) the automatic checkpoint ("Deferred sync").
        if (!m_checkpointer) m_checkpointer = Checkpointer::start(main);
        m_wal->checkpointer = m_checkpointer.get();
        sqlite3_wal_hook(m_conn.get(), wal_hook, m_wal.get());
        return std::unique_ptr<Syncer>(new SqliteSyncer(wal, m_wal));
    }

    // --- Meta

    ReplicaId server_replica() override { return m_replica; }

    Result<std::uint64_t> last_seq() override { return seq_now("last_seq"); }
    Result<std::uint64_t> purge_seq() override { return meta_u64("purge_seq", "purge_seq"); }

    // --- Schemas

    Status put_schema(std::uint32_t version, const std::string& json) override {
        constexpr std::string_view op = "put_schema";
        if (auto st = check_writable(op); !st) return st;
        auto existing = schema(version);
        if (!existing) return existing.error();
        if (*existing) {
            if (**existing == json) return {};
            return invalid("put_schema: schema version " + std::to_string(version) +
                           " is already stored with different content; a published version "
                           "never changes, so give the new schema a higher version");
        }
        return m_conn.cached(op, "INSERT INTO schemas(version, json) VALUES (?1, ?2)")
            .bind_int(1, version)
            .bind_text(2, json)
            .run();
    }

    Result<std::optional<std::pair<std::uint32_t, std::string>>> current_schema() override {
        auto q = m_conn.cached("current_schema",
                               "SELECT version, json FROM schemas ORDER BY version DESC LIMIT 1");
        auto row = q.next();
        if (!row) return row.error();
        if (!*row) return std::optional<std::pair<std::uint32_t, std::string>>{};
        return std::optional{
            std::make_pair(static_cast<std::uint32_t>(q.col_int(0)), q.col_text(1))};
    }

    Result<std::optional<std::string>> schema(std::uint32_t version) override {
        auto q = m_conn.cached("schema", "SELECT json FROM schemas WHERE version = ?1");
        q.bind_int(1, version);
        auto row = q.next();
        if (!row) return row.error();
        if (!*row) return std::optional<std::string>{};
        return std::optional{q.col_text(0)};
    }

    // --- Records and the change feed

    Result<std::optional<StoredRecord>> get_record(const std::string& collection,
                                                   const RecordId& id) override {
        auto q = m_conn.cached("get_record", sql_get_record);
        q.bind_text(1, collection).bind_id(2, id);
        auto row = q.next();
        if (!row) return row.error();
        if (!*row) return std::optional<StoredRecord>{};
        return std::optional{read_record(q)};
    }

    Result<std::uint64_t> put_record(const RecordWrite& w) override {
        constexpr std::string_view op = "put_record";
        if (w.collection.empty()) return invalid("put_record: the collection name is empty");
        if (auto st = check_writable(op); !st) return st.error();
        m_created.reset();
        OpScope scope(*this, op);
        if (!scope.ok()) return scope.error();

        std::optional<std::string> old_area;
        if (w.current_area) {
            if (!w.current_area->empty()) old_area = *w.current_area;
        } else {
            auto q =
                m_conn.cached(op, "SELECT area FROM records WHERE collection = ?1 AND id = ?2");
            q.bind_text(1, w.collection).bind_id(2, w.id);
            auto row = q.next();
            if (!row) return row.error();
            if (*row) old_area = q.col_text(0);
        }
        // The next number (see "Sequence" above); meta is written at COMMIT. A failure below
        // rolls this scope back, which restores m_seq.
        auto last = seq_now(op);
        if (!last) return last.error();
        const std::uint64_t seq = *last + 1;
        m_seq = seq;
        {
            auto q = m_conn.cached(
                op,
                "INSERT INTO records(collection, id, area, seq, schema_version, deleted, "
                "updated_at_ms, state, first_seq) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?4) "
                "ON CONFLICT(collection, id) DO UPDATE SET area = excluded.area, "
                "seq = excluded.seq, schema_version = excluded.schema_version, "
                "deleted = excluded.deleted, updated_at_ms = excluded.updated_at_ms, "
                "state = excluded.state");
            bind_record_row(q, w, seq);
            if (auto st = q.run(); !st) return st.error();
        }
        if (old_area && *old_area != w.area) {
            auto q = m_conn.cached(op,
                                   "INSERT INTO moves(seq, collection, record_id, from_area, "
                                   "to_area) VALUES (?1, ?2, ?3, ?4, ?5)");
            q.bind_u64(1, seq)
                .bind_text(2, w.collection)
                .bind_id(3, w.id)
                .bind_text(4, *old_area)
                .bind_text(5, w.area);
            if (auto st = q.run(); !st) return st.error();
        }
        if (auto st = scope.release(); !st) return st.error();
        // The caller read no stored record in its transaction: this write created the record,
        // with first_seq = seq. (Outside a transaction the hint could outlive the record.)
        if (w.current_area && w.current_area->empty() && m_conn.in_transaction())
            m_created = Created{w.collection, w.id, seq};
        return seq;
    }

    Result<std::uint64_t> insert_record(const RecordWrite& w) override {
        constexpr std::string_view op = "insert_record";
        if (w.collection.empty()) return invalid("insert_record: the collection name is empty");
        if (auto st = check_writable(op); !st) return st.error();
        m_created.reset();
        OpScope scope(*this, op);
        if (!scope.ok()) return scope.error();
        auto last = seq_now(op);
        if (!last) return last.error();
        const std::uint64_t seq = *last + 1;
        auto q = m_conn.cached(
            op,
            "INSERT INTO records(collection, id, area, seq, schema_version, deleted, "
            "updated_at_ms, state, first_seq) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?4) "
            "ON CONFLICT(collection, id) DO NOTHING");
        bind_record_row(q, w, seq);
        if (auto st = q.run(); !st) return st.error();
        if (q.changes() == 0) return std::uint64_t{0};  // it exists; the number is not taken
        m_seq = seq;  // see "Sequence" above; a failure below rolls the scope back
        if (auto st = scope.release(); !st) return st.error();
        if (m_conn.in_transaction()) m_created = Created{w.collection, w.id, seq};
        return seq;
    }

    // The feed is two streams ordered by seq: records in scope (each at its latest change) and
    // moves out of scope. Both are read from one snapshot, `lim + 1` rows each, and merged; the
    // page takes the first `lim` events, so its range (since, next_cursor] is complete for this
    // scope. With nothing left, next_cursor jumps to last_seq (read in the same snapshot): the
    // rest of the range held nothing for this scope.
    Result<ChangesPage> changes(std::uint64_t since, const Scope& scope,
                                std::size_t limit) override {
        constexpr std::string_view op = "changes";
        const std::int64_t lim = clamp_limit(limit);
        ReadScope snapshot(*this, op);
        if (!snapshot.ok()) return snapshot.error();
        const std::string areas = scope_json(scope);

        std::vector<StoredRecord> records;
        {
            auto q = m_conn.cached(op, sql_changes_records);
            q.bind_u64(1, since).bind_text(2, areas).bind_int(3, lim + 1);
            for (;;) {
                auto row = q.next();
                if (!row) return row.error();
                if (!*row) break;
                records.push_back(read_record(q));
            }
        }
        std::vector<Move> moves;
        {
            auto q = m_conn.cached(op, sql_changes_moves);
            q.bind_u64(1, since).bind_text(2, areas).bind_int(3, lim + 1);
            for (;;) {
                auto row = q.next();
                if (!row) return row.error();
                if (!*row) break;
                Move m;
                m.seq = q.col_u64(0);
                m.collection = q.col_text(1);
                m.id = q.col_id(2);
                m.from_area = q.col_text(3);
                m.to_area = q.col_text(4);
                moves.push_back(std::move(m));
            }
        }

        // Merge: take events in seq order until `lim`, then any event sharing the last seq.
        std::size_t i = 0, j = 0;
        std::int64_t taken = 0;
        std::uint64_t cutoff = since;
        auto next_seq = [&]() -> std::optional<std::uint64_t> {
            std::optional<std::uint64_t> s;
            if (i < records.size()) s = records[i].seq;
            if (j < moves.size() && (!s || moves[j].seq < *s)) s = moves[j].seq;
            return s;
        };
        for (auto s = next_seq(); s && (taken < lim || *s == cutoff); s = next_seq()) {
            if (i < records.size() && records[i].seq == *s)
                ++i;
            else
                ++j;
            ++taken;
            cutoff = *s;
        }
        ChangesPage page;
        page.more = i < records.size() || j < moves.size();
        if (page.more) {
            page.next_cursor = cutoff;
        } else {
            auto last = seq_now(op);
            if (!last) return last.error();
            page.next_cursor = std::max(since, *last);
        }
        records.resize(i);
        moves.resize(j);

        // One move per record (its latest in the page), and none for a record whose current
        // state, back in scope, is in the page after it.
        std::map<std::pair<std::string, RecordId>, std::uint64_t> record_seq;
        for (const auto& r : records)
            record_seq[{r.collection, r.id}] = r.seq;
        std::map<std::pair<std::string, RecordId>, std::size_t> latest_move;
        for (std::size_t k = 0; k < moves.size(); ++k)
            latest_move[{moves[k].collection, moves[k].id}] = k;
        for (std::size_t k = 0; k < moves.size(); ++k) {
            const auto key = std::make_pair(moves[k].collection, moves[k].id);
            if (latest_move[key] != k) continue;
            if (auto it = record_seq.find(key); it != record_seq.end() && it->second > moves[k].seq)
                continue;
            page.moves_out.push_back(std::move(moves[k]));
        }
        page.records = std::move(records);
        return page;
    }

    Result<std::vector<StoredRecord>> query_records(const RecordQuery& rq) override {
        auto q = m_conn.cached("query_records", sql_query_records);
        q.bind_text(1, scope_json(rq.scope))
            .bind_text(2, rq.collection)
            .bind_u64(3, rq.after_seq)
            .bind_bool(4, rq.include_deleted)
            .bind_text(5, rq.area_prefix)
            .bind_int(6, clamp_limit(rq.limit));
        std::vector<StoredRecord> out;
        for (;;) {
            auto row = q.next();
            if (!row) return row.error();
            if (!*row) break;
            out.push_back(read_record(q));
        }
        return out;
    }

    Status for_each_record(const Scope& scope, const std::string& collection,
                           const std::function<bool(const StoredRecord&)>& fn) override {
        constexpr std::string_view op = "for_each_record";
        ReadScope snapshot(*this, op);
        if (!snapshot.ok()) return snapshot.error();
        // A private statement: `fn` may call back into the store while this one is stepping.
        auto q = m_conn.once(op, sql_for_each_record);
        q.bind_text(1, scope_json(scope)).bind_text(2, collection);
        for (;;) {
            auto row = q.next();
            if (!row) return row.error();
            if (!*row) break;
            if (!fn(read_record(q))) break;
        }
        return {};
    }

    Result<std::size_t> purge_tombstones(std::int64_t before_ms) override {
        constexpr std::string_view op = "purge_tombstones";
        if (auto st = check_writable(op); !st) return st.error();
        OpScope scope(*this, op);
        if (!scope.ok()) return scope.error();
        std::uint64_t max_seq = 0;
        {
            auto q = m_conn.cached(op,
                                   "SELECT max(seq) FROM records WHERE deleted = 1 AND "
                                   "updated_at_ms < ?1");
            q.bind_int(1, before_ms);
            auto row = q.next();
            if (!row) return row.error();
            if (!*row || q.col_is_null(0)) return std::size_t{0};  // nothing to purge
            max_seq = q.col_u64(0);
        }
        {
            // An open conflict's record exists (see the migrations): the conflicts of a purged
            // tombstone are closed with it, so a record that does not exist has none open.
            auto q = m_conn.cached(op, sql_close_purged_conflicts);
            q.bind_int(1, before_ms);
            if (auto st = q.run(); !st) return st.error();
        }
        std::size_t purged = 0;
        {
            auto q =
                m_conn.cached(op, "DELETE FROM records WHERE deleted = 1 AND updated_at_ms < ?1");
            q.bind_int(1, before_ms);
            if (auto st = q.run(); !st) return st.error();
            purged = static_cast<std::size_t>(q.changes());
        }
        {
            auto q =
                m_conn.cached(op, "UPDATE meta SET value = max(value, ?1) WHERE key = 'purge_seq'");
            q.bind_u64(1, max_seq);
            if (auto st = q.run(); !st) return st.error();
        }
        {
            // A cursor below purge_seq must re-bootstrap, so older moves serve nobody.
            auto q = m_conn.cached(
                op,
                "DELETE FROM moves WHERE seq <= (SELECT value FROM meta WHERE key = 'purge_seq')");
            if (auto st = q.run(); !st) return st.error();
        }
        if (auto st = scope.release(); !st) return st.error();
        return purged;
    }

    // --- Audit

    Status append_audit(const AuditEntry& e) override {
        constexpr std::string_view op = "append_audit";
        if (auto st = check_writable(op); !st) return st;
        // Filed under the record's first sequence number (migration 3): known when
        // put_record or insert_record has just created the record, else read from its row. (One
        // INSERT ... SELECT would do both, but SQLite gives a statement that may write several rows
        // a statement journal: a fifth of this method's time.)
        std::uint64_t key = 0;
        if (m_created && m_created->id == e.id && m_created->collection == e.collection) {
            key = m_created->seq;
        } else {
            auto q = m_conn.cached(
                op, "SELECT first_seq FROM records WHERE collection = ?1 AND id = ?2");
            q.bind_text(1, e.collection).bind_id(2, e.id);
            auto row = q.next();
            if (!row) return row.error();
            if (!*row) {
                return invalid("append_audit: there is no record " + e.collection + "/" +
                               e.id.to_string() +
                               "; write the record (put_record or insert_record) before its entry");
            }
            key = q.col_u64(0);
        }
        return m_conn
            .cached(op,
                    "INSERT INTO audit(seq, at_ms, user_name, device, collection, record_id, "
                    "summary, record_key) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)")
            .bind_u64(1, e.seq)
            .bind_int(2, e.at_ms)
            .bind_text(3, e.user)
            .bind_text(4, e.device)
            .bind_text(5, e.collection)
            .bind_id(6, e.id)
            .bind_text_ref(7, e.summary)
            .bind_u64(8, key)
            .run();
    }

    Result<std::vector<AuditEntry>> audit_for(const std::string& collection, const RecordId& id,
                                              std::size_t limit) override {
        auto q = m_conn.cached("audit_for",
                               "SELECT seq, at_ms, user_name, device, collection, record_id, "
                               "summary FROM audit WHERE record_key = (SELECT first_seq FROM "
                               "records WHERE collection = ?1 AND id = ?2) AND collection = ?1 "
                               "AND record_id = ?2 ORDER BY seq DESC, id DESC LIMIT ?3");
        q.bind_text(1, collection).bind_id(2, id).bind_int(3, clamp_limit(limit));
        std::vector<AuditEntry> out;
        for (;;) {
            auto row = q.next();
            if (!row) return row.error();
            if (!*row) break;
            AuditEntry e;
            e.seq = q.col_u64(0);
            e.at_ms = q.col_int(1);
            e.user = q.col_text(2);
            e.device = q.col_text(3);
            e.collection = q.col_text(4);
            e.id = q.col_id(5);
            e.summary = q.col_text(6);
            out.push_back(std::move(e));
        }
        return out;
    }

    // --- Conflicts

    Result<ConflictChange> reconcile_conflicts(const std::string& collection, const RecordId& id,
                                               const std::string& area,
                                               const std::vector<OpenField>& open_fields,
                                               const std::string& by, const std::string& note,
                                               std::int64_t at_ms,
                                               const std::string& resolution_json) override {
        constexpr std::string_view op = "reconcile_conflicts";
        if (auto st = check_writable(op); !st) return st.error();
        OpScope scope(*this, op);
        if (!scope.ok()) return scope.error();

        struct Existing {
            std::int64_t id;
            std::string values_json;
            std::string area;
        };
        std::map<std::string, Existing> open;  // field -> its open conflict
        {
            auto q = m_conn.cached(op,
                                   "SELECT id, field, values_json, area FROM conflicts WHERE "
                                   "collection = ?1 AND record_id = ?2 AND open = 1");
            q.bind_text(1, collection).bind_id(2, id);
            for (;;) {
                auto row = q.next();
                if (!row) return row.error();
                if (!*row) break;
                open[q.col_text(1)] = Existing{q.col_int(0), q.col_text(2), q.col_text(3)};
            }
        }
        ConflictChange change;
        std::map<std::string, bool> wanted;
        for (const auto& f : open_fields) {
            wanted[f.field] = true;
            auto it = open.find(f.field);
            if (it == open.end()) {
                auto q = m_conn.cached(op,
                                       "INSERT INTO conflicts(collection, record_id, field, area, "
                                       "open, opened_at_ms, values_json) "
                                       "VALUES (?1, ?2, ?3, ?4, 1, ?5, ?6) RETURNING id");
                q.bind_text(1, collection)
                    .bind_id(2, id)
                    .bind_text(3, f.field)
                    .bind_text(4, area)
                    .bind_int(5, at_ms)
                    .bind_text(6, f.values_json);
                auto row = q.next();
                if (!row) return row.error();
                open[f.field] = Existing{q.col_int(0), f.values_json, area};
                ++change.opened;
            } else if (it->second.values_json != f.values_json || it->second.area != area) {
                auto q = m_conn.cached(
                    op, "UPDATE conflicts SET values_json = ?2, area = ?3 WHERE id = ?1");
                q.bind_int(1, it->second.id).bind_text(2, f.values_json).bind_text(3, area);
                if (auto st = q.run(); !st) return st.error();
                it->second.values_json = f.values_json;
                it->second.area = area;
            }
        }
        for (const auto& [field, existing] : open) {
            if (wanted.count(field)) continue;
            auto q = m_conn.cached(op,
                                   "UPDATE conflicts SET open = 0, resolved_by = ?2, "
                                   "resolved_at_ms = ?3, resolution_json = ?4, note = ?5 "
                                   "WHERE id = ?1");
            q.bind_int(1, existing.id)
                .bind_text(2, by)
                .bind_int(3, at_ms)
                .bind_text(4, resolution_json)
                .bind_text(5, note);
            if (auto st = q.run(); !st) return st.error();
            ++change.closed;
        }
        if (auto st = scope.release(); !st) return st.error();
        return change;
    }

    Result<std::vector<Conflict>> list_conflicts(const ConflictFilter& f) override {
        auto q = m_conn.cached("list_conflicts", sql_list_conflicts);
        if (f.open)
            q.bind_bool(1, *f.open);
        else
            q.bind_null(1);
        q.bind_text(2, f.area_prefix)
            .bind_text(3, f.field)
            .bind_int(4, f.older_than_ms)
            .bind_int(5, clamp_limit(f.limit))
            .bind_u64(6, f.offset);
        std::vector<Conflict> out;
        for (;;) {
            auto row = q.next();
            if (!row) return row.error();
            if (!*row) break;
            out.push_back(read_conflict(q));
        }
        return out;
    }

    Result<std::optional<Conflict>> get_conflict(std::int64_t id) override {
        auto q = m_conn.cached("get_conflict", sql_get_conflict);
        q.bind_int(1, id);
        auto row = q.next();
        if (!row) return row.error();
        if (!*row) return std::optional<Conflict>{};
        return std::optional{read_conflict(q)};
    }

    Result<std::size_t> count_open_conflicts() override {
        auto q =
            m_conn.cached("count_open_conflicts", "SELECT count(*) FROM conflicts WHERE open = 1");
        auto row = q.next();
        if (!row) return row.error();
        return static_cast<std::size_t>(q.col_int(0));
    }

    // --- Users

    Result<std::int64_t> add_user(const User& u) override {
        constexpr std::string_view op = "add_user";
        if (u.name.empty()) return invalid("add_user: the user name is empty");
        if (auto st = check_writable(op); !st) return st.error();
        OpScope scope(*this, op);
        if (!scope.ok()) return scope.error();
        std::int64_t id = 0;
        {
            auto q = m_conn.cached(op,
                                   "INSERT INTO users(name, display_name, role, disabled, "
                                   "password_hash, created_at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6) "
                                   "RETURNING id");
            q.bind_text(1, u.name)
                .bind_text(2, u.display_name)
                .bind_text(3, to_string(u.role))
                .bind_bool(4, u.disabled)
                .bind_text(5, u.password_hash)
                .bind_int(6, u.created_at_ms);
            auto row = q.next();
            if (!row) {
                if (q.extended_code() == SQLITE_CONSTRAINT_UNIQUE) return name_taken(op, u.name);
                return row.error();
            }
            id = q.col_int(0);
        }
        if (auto st = write_assignments(op, id, u.areas); !st) return st.error();
        if (auto st = scope.release(); !st) return st.error();
        return id;
    }

    Status update_user(const User& u) override {
        constexpr std::string_view op = "update_user";
        if (u.name.empty()) return invalid("update_user: the user name is empty");
        if (auto st = check_writable(op); !st) return st;
        OpScope scope(*this, op);
        if (!scope.ok()) return scope.error();
        {
            auto q = m_conn.cached(op,
                                   "UPDATE users SET name = ?2, display_name = ?3, role = ?4, "
                                   "disabled = ?5, password_hash = ?6 WHERE id = ?1");
            q.bind_int(1, u.id)
                .bind_text(2, u.name)
                .bind_text(3, u.display_name)
                .bind_text(4, to_string(u.role))
                .bind_bool(5, u.disabled)
                .bind_text(6, u.password_hash);
            if (auto st = q.run(); !st) {
                if (q.extended_code() == SQLITE_CONSTRAINT_UNIQUE) return name_taken(op, u.name);
                return st;
            }
            if (q.changes() == 0)
                return invalid("update_user: there is no user with id " + std::to_string(u.id));
        }
        {
            auto q = m_conn.cached(op, "DELETE FROM assignments WHERE user_id = ?1");
            q.bind_int(1, u.id);
            if (auto st = q.run(); !st) return st;
        }
        if (auto st = write_assignments(op, u.id, u.areas); !st) return st;
        return scope.release();
    }

    Result<std::optional<User>> user_by_name(const std::string& name) override {
        return find_user("user_by_name", sql_user_by_name, [&](Stmt& q) { q.bind_text(1, name); });
    }

    Result<std::optional<User>> user_by_id(std::int64_t id) override {
        return find_user("user_by_id", sql_user_by_id, [&](Stmt& q) { q.bind_int(1, id); });
    }

    Result<std::vector<User>> list_users() override {
        constexpr std::string_view op = "list_users";
        ReadScope snapshot(*this, op);
        if (!snapshot.ok()) return snapshot.error();
        std::vector<User> users;
        std::map<std::int64_t, std::size_t> index;
        {
            auto q = m_conn.cached(op, sql_list_users);
            for (;;) {
                auto row = q.next();
                if (!row) return row.error();
                if (!*row) break;
                auto u = read_user(q, op);
                if (!u) return u.error();
                index[u->id] = users.size();
                users.push_back(std::move(*u));
            }
        }
        auto q = m_conn.cached(op, "SELECT user_id, area FROM assignments ORDER BY user_id, area");
        for (;;) {
            auto row = q.next();
            if (!row) return row.error();
            if (!*row) break;
            if (auto it = index.find(q.col_int(0)); it != index.end())
                users[it->second].areas.push_back(q.col_text(1));
        }
        return users;
    }

    // --- Tokens

    Status put_token(const Token& t) override {
        constexpr std::string_view op = "put_token";
        if (auto st = check_writable(op); !st) return st;
        auto q = m_conn.cached(op,
                               "INSERT INTO tokens(token_hash, user_id, created_at_ms, "
                               "expires_at_ms, revoked) VALUES (?1, ?2, ?3, ?4, ?5)");
        q.bind_text(1, t.token_hash)
            .bind_int(2, t.user_id)
            .bind_int(3, t.created_at_ms)
            .bind_int(4, t.expires_at_ms)
            .bind_bool(5, t.revoked);
        auto st = q.run();
        if (!st && q.extended_code() == SQLITE_CONSTRAINT_FOREIGNKEY)
            return invalid("put_token: there is no user with id " + std::to_string(t.user_id));
        if (!st && q.extended_code() == SQLITE_CONSTRAINT_PRIMARYKEY)
            return invalid("put_token: a token with this hash is already stored");
        return st;
    }

    Result<std::optional<Token>> token(const std::string& token_hash) override {
        auto q = m_conn.cached("token",
                               "SELECT token_hash, user_id, created_at_ms, expires_at_ms, revoked "
                               "FROM tokens WHERE token_hash = ?1");
        q.bind_text(1, token_hash);
        auto row = q.next();
        if (!row) return row.error();
        if (!*row) return std::optional<Token>{};
        return std::optional{read_token(q)};
    }

    Status revoke_token(const std::string& token_hash) override {
        constexpr std::string_view op = "revoke_token";
        if (auto st = check_writable(op); !st) return st;
        return m_conn.cached(op, "UPDATE tokens SET revoked = 1 WHERE token_hash = ?1")
            .bind_text(1, token_hash)
            .run();
    }

    Status revoke_user_tokens(std::int64_t user_id) override {
        constexpr std::string_view op = "revoke_user_tokens";
        if (auto st = check_writable(op); !st) return st;
        return m_conn.cached(op, "UPDATE tokens SET revoked = 1 WHERE user_id = ?1")
            .bind_int(1, user_id)
            .run();
    }

    // --- Devices

    Result<std::optional<Device>> device(const std::string& id) override {
        auto q = m_conn.cached("device", sql_device);
        q.bind_text(1, id);
        auto row = q.next();
        if (!row) return row.error();
        if (!*row) return std::optional<Device>{};
        return std::optional{read_device(q)};
    }

    Result<std::optional<Device>> device_by_replica(const ReplicaId& replica) override {
        auto q = m_conn.cached("device_by_replica", sql_device_by_replica);
        q.bind_id(1, replica);
        auto row = q.next();
        if (!row) return row.error();
        if (!*row) return std::optional<Device>{};
        return std::optional{read_device(q)};
    }

    Status note_device_push(const std::string& id, std::uint64_t records,
                            std::int64_t at_ms) override {
        constexpr std::string_view op = "note_device_push";
        if (auto st = check_writable(op); !st) return st;
        return m_conn
            .cached(op,
                    "UPDATE devices SET records_sent = records_sent + ?2, last_seen_ms = ?3 "
                    "WHERE id = ?1")
            .bind_text(1, id)
            .bind_u64(2, records)
            .bind_int(3, at_ms)
            .run();
    }

    Status put_device(const Device& d) override {
        constexpr std::string_view op = "put_device";
        if (d.id.empty()) return invalid("put_device: the device id is empty");
        if (auto st = check_writable(op); !st) return st;
        int code = SQLITE_OK;
        {
            auto q = m_conn.cached(
                op,
                "INSERT INTO devices(id, replica, user_id, app_version, last_seen_ms, "
                "last_cursor, records_sent, scope_signature) "
                "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT(id) DO UPDATE SET "
                "replica = excluded.replica, user_id = excluded.user_id, "
                "app_version = excluded.app_version, last_seen_ms = excluded.last_seen_ms, "
                "last_cursor = excluded.last_cursor, records_sent = excluded.records_sent, "
                "scope_signature = excluded.scope_signature");
            q.bind_text(1, d.id)
                .bind_id(2, d.replica)
                .bind_int(3, d.user_id)
                .bind_text(4, d.app_version)
                .bind_int(5, d.last_seen_ms)
                .bind_u64(6, d.last_cursor)
                .bind_u64(7, d.records_sent)
                .bind_text(8, d.scope_signature);
            auto st = q.run();
            if (st) return st;
            code = q.extended_code();
            if (code != SQLITE_CONSTRAINT_UNIQUE && code != SQLITE_CONSTRAINT_FOREIGNKEY) return st;
        }
        if (code == SQLITE_CONSTRAINT_FOREIGNKEY)
            return invalid("put_device: there is no user with id " + std::to_string(d.user_id));
        std::string owner = "another device";
        if (auto other = device_by_replica(d.replica); other && *other)
            owner = "device " + (*other)->id;
        return Error{
            protocol_errc::replica_conflict,
            "put_device: replica " + d.replica.to_string() + " is already bound to " + owner};
    }

    Result<std::vector<Device>> list_devices() override {
        auto q = m_conn.cached("list_devices", sql_list_devices);
        std::vector<Device> out;
        for (;;) {
            auto row = q.next();
            if (!row) return row.error();
            if (!*row) break;
            out.push_back(read_device(q));
        }
        return out;
    }

    // --- Areas

    Status put_area(const Area& a) override {
        constexpr std::string_view op = "put_area";
        if (a.code.empty()) return invalid("put_area: the area code is empty");
        if (auto st = check_writable(op); !st) return st;
        return m_conn
            .cached(op,
                    "INSERT INTO areas(code, parent, level, name_en, name_zh) VALUES "
                    "(?1, ?2, ?3, ?4, ?5) ON CONFLICT(code) DO UPDATE SET parent = "
                    "excluded.parent, level = excluded.level, name_en = excluded.name_en, "
                    "name_zh = excluded.name_zh")
            .bind_text(1, a.code)
            .bind_text(2, a.parent)
            .bind_text(3, a.level)
            .bind_text(4, a.name_en)
            .bind_text(5, a.name_zh)
            .run();
    }

    Result<std::vector<Area>> list_areas() override {
        auto q = m_conn.cached("list_areas",
                               "SELECT code, parent, level, name_en, name_zh FROM areas "
                               "ORDER BY code");
        std::vector<Area> out;
        for (;;) {
            auto row = q.next();
            if (!row) return row.error();
            if (!*row) break;
            out.push_back(
                Area{q.col_text(0), q.col_text(1), q.col_text(2), q.col_text(3), q.col_text(4)});
        }
        return out;
    }

private:
    // Makes one method's statements atomic: its own transaction when none is open (BEGIN
    // IMMEDIATE ... COMMIT: a commit of its own, durable as every commit is), else a savepoint
    // inside the caller's. Destroyed without release(): everything it did is undone.
    class OpScope {
    public:
        OpScope(SqliteStore& store, std::string_view op) : m_store(store), m_op(op) {
            m_own_txn = !store.m_conn.in_transaction();
            if (m_own_txn) store.m_seq.reset();  // another process may have written meanwhile
            if (!m_own_txn && store.m_savepoints > 0 && !store.m_doomed) {
                // Inside the caller's savepoint, which the caller rolls back after a failure
                // (store.hpp): a savepoint of our own would only cost two more statements.
                m_borrowed = true;
                return;
            }
            auto st =
                store.m_conn.cached(op, m_own_txn ? "BEGIN IMMEDIATE" : "SAVEPOINT fs_op").run();
            if (!st) m_error = std::move(st).error();
            m_active = m_error.message.empty();
            m_seq_mark = store.m_seq;
        }
        ~OpScope() {
            if (m_borrowed || !m_active) return;
            auto& c = m_store.m_conn;
            m_store.m_created.reset();
            // Rolled back below: its numbers are given back.
            if (m_own_txn || !c.in_transaction())
                m_store.m_seq.reset();
            else
                m_store.m_seq = m_seq_mark;
            if (!c.in_transaction()) return;  // SQLite already rolled everything back
            if (m_own_txn) {
                (void)c.cached(m_op, "ROLLBACK").run();
            } else {
                (void)c.cached(m_op, "ROLLBACK TO fs_op").run();
                (void)c.cached(m_op, "RELEASE fs_op").run();
            }
        }
        OpScope(const OpScope&) = delete;
        OpScope& operator=(const OpScope&) = delete;

        bool ok() const noexcept { return m_borrowed || m_active; }
        const Error& error() const noexcept { return m_error; }
        Status release() {
            if (m_borrowed) return {};
            if (m_own_txn) {
                // The counter goes into meta with the rest (see "Sequence"); a failure leaves
                // m_active, so the destructor rolls back.
                if (auto st = m_store.flush_seq(m_op); !st) return st;
            }
            auto st = m_store.m_conn.cached(m_op, m_own_txn ? "COMMIT" : "RELEASE fs_op").run();
            if (st) m_active = false;
            if (m_own_txn && st) m_store.m_seq.reset();  // the transaction ended
            return st;
        }

    private:
        SqliteStore& m_store;
        std::string_view m_op;
        bool m_own_txn = false;
        bool m_borrowed = false;  // running inside the caller's savepoint
        bool m_active = false;
        std::optional<std::uint64_t> m_seq_mark;  // m_seq when the savepoint began
        Error m_error;
    };

    // Reads several statements from one snapshot: a read transaction when none is open.
    class ReadScope {
    public:
        ReadScope(SqliteStore& store, std::string_view op) : m_store(store), m_op(op) {
            if (store.m_conn.in_transaction()) return;
            auto st = store.m_conn.cached(op, "BEGIN").run();
            if (!st)
                m_error = std::move(st).error();
            else
                m_own = true;
        }
        ~ReadScope() {
            if (m_own && m_store.m_conn.in_transaction())
                (void)m_store.m_conn.cached(m_op, "COMMIT").run();
        }
        ReadScope(const ReadScope&) = delete;
        ReadScope& operator=(const ReadScope&) = delete;

        bool ok() const noexcept { return m_error.message.empty(); }
        const Error& error() const noexcept { return m_error; }

    private:
        SqliteStore& m_store;
        std::string_view m_op;
        bool m_own = false;
        Error m_error;
    };

    static Error read_only_error(std::string_view op) {
        return internal(std::string(op) + ": the store was opened read-only");
    }
    static Error doomed_error(std::string_view op) {
        return internal(std::string(op) +
                        ": the transaction was already rolled back (by rollback() or by SQLite "
                        "after an error); end every begin() level before writing again");
    }
    static Error name_taken(std::string_view op, const std::string& name) {
        return invalid(std::string(op) + ": the user name '" + name +
                       "' is already taken; choose another");
    }

    // Before any write: a read-only connection, or a transaction that is already rolled back
    // while begin() levels are still open, must fail rather than write (or autocommit).
    Status check_writable(std::string_view op) {
        if (m_read_only) return read_only_error(op);
        if (m_depth > 0 && !m_conn.in_transaction()) m_doomed = true;
        if (m_doomed) return doomed_error(op);
        return {};
    }

    // The last sequence number given out: this transaction's (m_seq), else meta's.
    Result<std::uint64_t> seq_now(std::string_view op) {
        if (m_seq && m_conn.in_transaction()) return *m_seq;
        return meta_u64(op, "last_seq");
    }

    // Writes the transaction's counter to meta; called just before COMMIT.
    Status flush_seq(std::string_view op) {
        if (!m_seq || !m_conn.in_transaction()) return {};
        auto q = m_conn.cached(op, "UPDATE meta SET value = ?1 WHERE key = 'last_seq'");
        q.bind_u64(1, *m_seq);
        if (auto st = q.run(); !st) return st;
        if (q.changes() != 1) return internal(std::string(op) + ": meta.last_seq is missing");
        return {};
    }

    Result<std::uint64_t> meta_u64(std::string_view op, std::string_view key) {
        auto q = m_conn.cached(op, "SELECT value FROM meta WHERE key = ?1");
        q.bind_text(1, key);
        auto row = q.next();
        if (!row) return row.error();
        if (!*row) return internal(std::string(op) + ": meta." + std::string(key) + " is missing");
        return q.col_u64(0);
    }

    Status write_assignments(std::string_view op, std::int64_t user_id,
                             const std::vector<std::string>& areas) {
        for (const auto& area : areas) {
            auto q = m_conn.cached(
                op, "INSERT OR IGNORE INTO assignments(user_id, area) VALUES (?1, ?2)");
            q.bind_int(1, user_id).bind_text(2, area);
            if (auto st = q.run(); !st) return st;
        }
        return {};
    }

    template <class Bind>
    Result<std::optional<User>> find_user(std::string_view op, std::string_view sql, Bind&& bind) {
        ReadScope snapshot(*this, op);
        if (!snapshot.ok()) return snapshot.error();
        std::optional<User> user;
        {
            auto q = m_conn.cached(op, sql);
            bind(q);
            auto row = q.next();
            if (!row) return row.error();
            if (!*row) return user;
            auto u = read_user(q, op);
            if (!u) return u.error();
            user = std::move(*u);
        }
        auto q = m_conn.cached(op, "SELECT area FROM assignments WHERE user_id = ?1 ORDER BY area");
        q.bind_int(1, user->id);
        for (;;) {
            auto row = q.next();
            if (!row) return row.error();
            if (!*row) break;
            user->areas.push_back(q.col_text(0));
        }
        return user;
    }

    Connection m_conn;
    bool m_read_only = false;
    ReplicaId m_replica;
    int m_depth = 0;        // begin() levels open
    int m_savepoints = 0;   // user savepoints open
    bool m_doomed = false;  // rolled back while begin() levels remain
    // The last sequence number this transaction gave out, not yet in meta (see "Sequence");
    // empty when it gave none, after a whole rollback and at the end of the transaction.
    std::optional<std::uint64_t> m_seq;
    std::vector<std::optional<std::uint64_t>> m_seq_marks;  // m_seq at each open fs_sp
    // The record the last put_record or insert_record created in this transaction (its
    // first_seq is that write's seq), for the append_audit that follows; forgotten at the next
    // record write, at every rollback and at the end of the transaction.
    struct Created {
        std::string collection;
        RecordId id;
        std::uint64_t seq = 0;
    };
    std::optional<Created> m_created;

    // Counted by defer_sync's WAL hook; shared with the Syncer, which may outlive this store
    // or die before it.
    std::shared_ptr<WalCounters> m_wal = std::make_shared<WalCounters>();
    std::unique_ptr<Checkpointer> m_checkpointer;  // set by defer_sync
};

// --- Opening --------------------------------------------------------------------------------

Error open_error(const std::filesystem::path& path, const std::string& what) {
    return internal("open_sqlite_store: " + path.string() + ": " + what);
}

Result<std::string> pragma_text(Connection& c, const char* sql) {
    auto q = c.once("pragma", sql);
    auto row = q.next();
    if (!row) return row.error();
    return *row ? q.col_text(0) : std::string();
}

// The migration version recorded in the file: 0 for a new (empty) file.
Result<int> migration_version(Connection& c) {
    {
        auto q = c.once("schema_migration",
                        "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'meta'");
        auto row = q.next();
        if (!row) return row.error();
        if (!*row) return 0;
    }
    auto q = c.once("schema_migration", "SELECT value FROM meta WHERE key = 'schema_migration'");
    auto row = q.next();
    if (!row) return row.error();
    return *row ? static_cast<int>(q.col_int(0)) : 0;
}

Status check_version(const std::filesystem::path& path, int version) {
    if (version > latest_migration) {
        return Error{protocol_errc::unsupported_version,
                     "open_sqlite_store: " + path.string() + ": the store is at schema migration " +
                         std::to_string(version) + ", newer than this server's " +
                         std::to_string(latest_migration) + "; run a newer fieldsync-server"};
    }
    return {};
}

// Applies the missing migrations and creates the server replica id, in one transaction.
Status migrate(Connection& c, const std::filesystem::path& path) {
    if (auto st = c.exec("migrate", "BEGIN IMMEDIATE"); !st)
        return open_error(path, st.error().message);
    auto fail = [&](const std::string& what) -> Status {
        (void)c.exec("migrate", "ROLLBACK");
        return open_error(path, what);
    };
    auto version = migration_version(c);
    if (!version) return fail(version.error().message);
    if (auto st = check_version(path, *version); !st) {
        (void)c.exec("migrate", "ROLLBACK");
        return st;
    }
    for (const auto& m : migrations) {
        if (m.version <= *version) continue;
        if (auto st = c.exec("migration " + std::to_string(m.version), m.sql); !st)
            return fail(st.error().message);
        auto q = c.once("migrate",
                        "INSERT INTO meta(key, value) VALUES ('schema_migration', ?1) "
                        "ON CONFLICT(key) DO UPDATE SET value = excluded.value");
        q.bind_int(1, m.version);
        if (auto st = q.run(); !st) return fail(st.error().message);
    }
    {
        auto q = c.once("server_replica", "SELECT 1 FROM meta WHERE key = 'server_replica'");
        auto row = q.next();
        if (!row) return fail(row.error().message);
        if (!*row) {
            ReplicaId replica;
            if (RAND_bytes(replica.bytes.data(), static_cast<int>(replica.bytes.size())) != 1)
                return fail("server_replica: the random generator failed (RAND_bytes)");
            auto ins = c.once("server_replica",
                              "INSERT INTO meta(key, value) VALUES ('server_replica', ?1)");
            ins.bind_id(1, replica);
            if (auto st = ins.run(); !st) return fail(st.error().message);
        }
    }
    if (auto st = c.exec("migrate", "COMMIT"); !st) return fail(st.error().message);
    return {};
}

}  // namespace

bool configure_sqlite_process() noexcept {
    // SQLITE_MISUSE when SQLite is already initialized: nothing changes then.
    return sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0) == SQLITE_OK;
}

Result<std::unique_ptr<Store>> open_sqlite_store(const std::filesystem::path& path,
                                                 const SqliteOptions& options) {
    const int flags =
        (options.read_only ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE) |
        SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_EXRESCODE;
    sqlite3* raw = nullptr;
    const int rc = sqlite3_open_v2(path.c_str(), &raw, flags, nullptr);
    sqlite::DbPtr db(raw);
    if (rc != SQLITE_OK) {
        return open_error(path, db ? sqlite3_errmsg(db.get()) : sqlite3_errstr(rc));
    }
    sqlite3_extended_result_codes(db.get(), 1);
    sqlite3_busy_timeout(db.get(), options.busy_timeout_ms);
    Connection c(std::move(db));

    if (!options.read_only) {
        // WAL: readers see the last commit while the writer writes. Persistent in the file.
        auto mode = pragma_text(c, "PRAGMA journal_mode = WAL");
        if (!mode) return open_error(path, mode.error().message);
        if (*mode != "wal")
            return open_error(path, "cannot switch to WAL mode (journal_mode is " + *mode + ")");
        // FULL, not NORMAL: in WAL mode NORMAL syncs only at checkpoints, so a returned commit
        // could be lost on power failure; an acknowledged push must survive it. fullfsync makes
        // the sync reach the platter on macOS (a no-op elsewhere).
        if (auto st = c.exec("pragma",
                             "PRAGMA synchronous = FULL; PRAGMA fullfsync = ON; "
                             "PRAGMA checkpoint_fullfsync = ON; PRAGMA foreign_keys = ON; PRAGMA "
                             "cache_size = -65536; PRAGMA temp_store = MEMORY;");
            !st)
            return open_error(path, st.error().message);
        if (auto st = migrate(c, path); !st) return st.error();
    } else {
        if (auto st = c.exec("pragma", "PRAGMA foreign_keys = ON; PRAGMA query_only = ON;"); !st)
            return open_error(path, st.error().message);
        auto mode = pragma_text(c, "PRAGMA journal_mode");
        if (!mode) return open_error(path, mode.error().message);
        if (*mode != "wal")
            return open_error(path, "the store is not in WAL mode; open the writer first");
        auto version = migration_version(c);
        if (!version) return open_error(path, version.error().message);
        if (auto st = check_version(path, *version); !st) return st.error();
        if (*version < latest_migration) {
            return open_error(path, "the store is at schema migration " + std::to_string(*version) +
                                        ", not " + std::to_string(latest_migration) +
                                        "; open the writer first (it migrates)");
        }
    }

    ReplicaId replica;
    {
        auto q = c.once("server_replica", "SELECT value FROM meta WHERE key = 'server_replica'");
        auto row = q.next();
        if (!row) return open_error(path, row.error().message);
        if (!*row) return open_error(path, "meta.server_replica is missing");
        replica = q.col_id(0);
        if (replica.is_nil()) return open_error(path, "meta.server_replica is not a 16-byte id");
    }
    return std::unique_ptr<Store>(new SqliteStore(std::move(c), options, replica));
}

}  // namespace fieldsync::server
