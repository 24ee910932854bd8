// The server's durable store, behind one interface (LiteCore's DataFile is the model).
//
// One Store object is one connection to the database. It is NOT thread-safe: the server opens
// one writer Store, used only by the store's writer thread (which groups commits), and one or
// more reader Stores, each owned by one reader thread. SQLite in WAL mode lets readers run
// while the writer writes. A PostgreSQL store will implement the same interface; the store
// tests are written against the interface so they can run on both (tests/server/store_test).
//
// Data model (docs/server-store.md has the SQL):
//   records   one row per record: canonical state, collection, id, area, seq (the server
//             sequence of its latest change: the change feed is "records ordered by seq"),
//             schema version, deleted flag. Deleted records stay as tombstones until purged.
//   moves     one row per area change of a record (seq, from, to): how revocations are found.
//   users, assignments (user -> area codes), tokens (hashed), devices (replica binding),
//   areas (city > banner > sumu/town > gaqa/village; codes are paths "ordos/hanggin/xini"),
//   conflicts (open/resolved per record field), audit (every accepted change), schemas.
// Area scope: an assignment of area A covers A and every area whose code starts with "A/".
//
// Errors: every method returns Status/Result with protocol_errc::internal and SQLite's message
// for environment failures (disk full, corruption), and specific codes where the caller must
// react (e.g. invalid_value for a duplicate user name). Nothing is half-applied: callers wrap
// related writes in begin()/commit(), and each push item in a savepoint.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "fieldsync/protocol/cbor.hpp"
#include "fieldsync/protocol/error.hpp"
#include "fieldsync/protocol/ids.hpp"

namespace fieldsync::server {

using protocol::Bytes;
using protocol::Error;
using protocol::RecordId;
using protocol::ReplicaId;
using protocol::Result;
using protocol::Status;

enum class Role : std::uint8_t { enumerator = 0, supervisor = 1, admin = 2 };
const char* to_string(Role r) noexcept;
std::optional<Role> parse_role(std::string_view s) noexcept;

/// The areas a user may read and write. Empty for nobody; admins hold the root area(s).
struct Scope {
    std::vector<std::string> areas;  ///< assigned area codes
    /// True when `area` equals an assigned code or lies below one ("a/b" covers "a/b/c").
    bool covers(std::string_view area) const noexcept;
};

struct StoredRecord {
    std::string collection;
    RecordId id;
    std::string area;
    std::uint64_t seq = 0;             ///< server sequence of the latest change
    std::uint32_t schema_version = 0;  ///< schema version of the latest accepted write
    bool deleted = false;
    std::int64_t updated_at_ms = 0;
    Bytes state;  ///< canonical encoding (protocol::encode_record)
};

/// What put_record writes. seq is assigned by the store.
struct RecordWrite {
    std::string collection;
    RecordId id;
    std::string area;
    std::uint32_t schema_version = 0;
    bool deleted = false;
    std::int64_t at_ms = 0;
    Bytes state;
    /// The record's area as the caller just read it in this transaction ("" = no stored
    /// record), so that put_record need not read it again; std::nullopt: put_record reads it.
    std::optional<std::string> current_area;
};

struct AuditEntry {
    std::uint64_t seq = 0;  ///< the change's server sequence
    std::int64_t at_ms = 0;
    std::string user;
    std::string device;  ///< device id text form, or "console"/"api"
    std::string collection;
    RecordId id;
    std::string summary;  ///< JSON text: the fields changed and their new values
};

struct Move {
    std::uint64_t seq = 0;
    std::string collection;
    RecordId id;
    std::string from_area;
    std::string to_area;
};

/// One page of the change feed. `limit` counts records plus moves. The page covers the
/// sequence range (since, next_cursor]: every change in that range that concerns the scope is
/// in it, so resuming from next_cursor skips nothing and repeats nothing. When `more` is false,
/// next_cursor is last_seq() (the range up to it had nothing else for this scope).
/// A move whose record is back in scope later in the same page is left out (the record
/// itself is in `records`); at most one move per record per page.
struct ChangesPage {
    std::vector<StoredRecord> records;  ///< in scope, seq > since, ordered by seq
    std::vector<Move> moves_out;        ///< seq > since, from an area in scope to one outside
    std::uint64_t next_cursor = 0;      ///< resume from here
    bool more = false;
};

struct User {
    std::int64_t id = 0;
    std::string name;  ///< login name, unique
    std::string display_name;
    Role role = Role::enumerator;
    bool disabled = false;
    std::string password_hash;  ///< "pbkdf2-sha256$<iterations>$<salt hex>$<hash hex>"
    std::vector<std::string> areas;
    std::int64_t created_at_ms = 0;
};

struct Token {
    std::string token_hash;  ///< SHA-256 hex of the bearer token; the token itself is never stored
    std::int64_t user_id = 0;
    std::int64_t created_at_ms = 0;
    std::int64_t expires_at_ms = 0;
    bool revoked = false;
};

struct Device {
    std::string id;  ///< device id, text form
    ReplicaId replica;
    std::int64_t user_id = 0;
    std::string app_version;
    std::int64_t last_seen_ms = 0;
    std::uint64_t last_cursor = 0;
    std::uint64_t records_sent = 0;
    std::string scope_signature;  ///< the scope it last synced with (to detect shrinking)
};

struct Area {
    std::string code;    ///< "ordos/ejin-horo/altan-xire/longhuqu"
    std::string parent;  ///< "" for the root
    std::string level;   ///< city, banner, town, village
    std::string name_en;
    std::string name_zh;
};

struct ConflictValue {
    std::string value_json;  ///< the competing value as JSON
    std::string by;          ///< author user name
    std::string replica;     ///< replica id text
    std::uint64_t ts = 0;    ///< HLC timestamp
};

struct Conflict {
    std::int64_t id = 0;
    std::string collection;
    RecordId record;
    std::string field;
    std::string area;
    bool open = true;
    std::int64_t opened_at_ms = 0;
    std::string values_json;  ///< JSON array of the competing values with who/when
    std::string resolved_by;
    std::int64_t resolved_at_ms = 0;
    std::string resolution_json;  ///< the chosen value as JSON
    std::string note;
};

struct ConflictFilter {
    std::optional<bool> open;
    std::string area_prefix;  ///< "" = any; otherwise a Scope-style prefix
    std::string field;
    std::int64_t older_than_ms = 0;  ///< Unix ms: only conflicts opened before it; 0 = any age
    std::size_t limit = 100;
    std::size_t offset = 0;
};

struct RecordQuery {
    std::string collection;   ///< "" = every collection
    Scope scope;              ///< only records whose area the scope covers
    std::string area_prefix;  ///< narrower filter, "" = whole scope
    bool include_deleted = false;
    std::uint64_t after_seq = 0;  ///< paging: records with seq > after_seq, ordered by seq
    std::size_t limit = 100;
};

/// Makes a store's commits durable from a thread other than the committing one, so that the
/// store's thread can run its next transaction while the disk syncs (Store::defer_sync).
class Syncer {
public:
    virtual ~Syncer() = default;
    /// Blocks until every transaction the store committed before the call is durable (it
    /// survives power loss). Returns true when it synced, false when nothing was committed
    /// since the last sync (then it returns at once). Failure (internal, naming the file and
    /// the system's reason): no commit since the last successful sync may be taken as durable,
    /// and the caller must stop acknowledging writes (after a failed fsync the kernel may have
    /// dropped the data). \note One thread at a time; it may run while the store's own thread
    /// uses the store.
    virtual Result<bool> sync() = 0;
};

class Store {
public:
    virtual ~Store() = default;
    Store() = default;
    Store(const Store&) = delete;
    Store& operator=(const Store&) = delete;

    // --- Transactions (writer only). begin/commit nest: only the outermost commits.
    // Without begin(), each write method is its own transaction, durable when it returns (after
    // defer_sync(): once synced, like every commit). A write method that
    // fails leaves nothing of itself behind: its statements run in an internal savepoint or,
    // while the caller holds a savepoint(), in the caller's, whose rollback_savepoint() (which
    // the caller owes after any failure) removes them.
    /// Starts a write transaction (outermost: takes the write lock) or nests one level.
    virtual Status begin() = 0;
    /// Ends one level; the outermost commits durably (on return the data survives power loss;
    /// after defer_sync(), only once the Syncer synced it). If the outermost commit fails,
    /// everything is rolled back and the error returned; a following rollback() is a harmless
    /// no-op. Committing a transaction that an inner rollback() (or SQLite itself, after an I/O
    /// error) already rolled back fails with internal.
    virtual Status commit() = 0;
    /// Rolls the whole transaction back at once, whatever the nesting level; the outer levels
    /// must still end (their commit() fails, their rollback() is a no-op), and writes before
    /// they end fail rather than autocommit. No-op outside a transaction.
    virtual void rollback() noexcept = 0;
    /// Savepoints isolate one push item inside a group commit. Only inside begin()/commit()
    /// (fails with internal otherwise); they nest.
    virtual Status savepoint() = 0;
    /// Keeps the innermost savepoint's writes (they commit with the transaction).
    virtual Status release_savepoint() = 0;
    /// Undoes the innermost savepoint's writes and ends it. No-op without a savepoint.
    virtual void rollback_savepoint() noexcept = 0;
    /// Switches this writer to commits that return before they are durable, and returns the
    /// Syncer that makes them durable. From then on, a commit() that returned may still vanish
    /// on power loss until a later Syncer::sync() returned; it vanishes whole, and with every
    /// commit after it, never partly. Whoever calls this must sync before acknowledging a
    /// commit, and before showing a device anything a commit wrote (a lost change's sequence
    /// number would be given out again). Returns nullptr when the store cannot do this (its
    /// commits stay durable when they return); fails (internal) inside a transaction or on a
    /// reader. Call it once, right after opening, on the store's thread.
    virtual Result<std::unique_ptr<Syncer>> defer_sync() { return std::unique_ptr<Syncer>(); }

    // --- Meta
    /// The server's own replica id (made at first open, kept forever).
    virtual ReplicaId server_replica() = 0;
    /// Highest sequence assigned so far.
    virtual Result<std::uint64_t> last_seq() = 0;
    /// Sequence below which tombstones were purged (0 = never).
    virtual Result<std::uint64_t> purge_seq() = 0;

    // --- Schemas
    /// Stores a schema version. A stored version is immutable (devices cache it by number):
    /// storing the same text again is a no-op, different text for a stored version fails with
    /// invalid_value.
    virtual Status put_schema(std::uint32_t version, const std::string& json) = 0;
    /// The newest schema: version and JSON; nullopt when none was stored.
    virtual Result<std::optional<std::pair<std::uint32_t, std::string>>> current_schema() = 0;
    virtual Result<std::optional<std::string>> schema(std::uint32_t version) = 0;

    // --- Records and the change feed
    virtual Result<std::optional<StoredRecord>> get_record(const std::string& collection,
                                                           const RecordId& id) = 0;
    /// Inserts or replaces the record row with a new sequence, records a Move if the area
    /// changed, and returns the new sequence.
    virtual Result<std::uint64_t> put_record(const RecordWrite& w) = 0;
    /// Inserts the record when no record with its collection and id exists (a creation: the
    /// caller need not read first), and returns its new sequence; returns 0, writing nothing
    /// and taking no number, when one exists. `w.current_area` is ignored.
    virtual Result<std::uint64_t> insert_record(const RecordWrite& w) = 0;
    /// The change feed after cursor `since` for `scope`: at most `limit` (at least 1) records
    /// plus moves, read from one snapshot. See ChangesPage for the cursor rules.
    virtual Result<ChangesPage> changes(std::uint64_t since, const Scope& scope,
                                        std::size_t limit) = 0;
    /// Records matching `q`, ordered by seq.
    virtual Result<std::vector<StoredRecord>> query_records(const RecordQuery& q) = 0;
    /// Calls `fn` for every live-or-deleted record in scope (for digests and exports), in
    /// (collection, id) order; `collection` "" means every collection. Stops early if fn
    /// returns false. One snapshot; `fn` may read from this Store but must not write to it.
    virtual Status for_each_record(const Scope& scope, const std::string& collection,
                                   const std::function<bool(const StoredRecord&)>& fn) = 0;
    /// Deletes tombstones whose last change is older than `before_ms`; raises purge_seq to the
    /// highest purged seq and drops the moves at or below it (a cursor below purge_seq must
    /// re-bootstrap anyway). Their open conflicts are closed (resolved_by "fieldsync"), so a
    /// record that does not exist never has an open conflict. Returns how many tombstones
    /// were deleted.
    virtual Result<std::size_t> purge_tombstones(std::int64_t before_ms) = 0;

    // --- Audit
    /// Appends one entry to the audit trail of the stored record `e.collection`/`e.id`, which
    /// must exist: write the record (put_record or insert_record) first, in the same
    /// transaction. Fails with invalid_value, writing nothing, when there is no such record.
    virtual Status append_audit(const AuditEntry& e) = 0;
    /// The newest `limit` audit entries of one stored record, newest first; none for a record
    /// that does not exist (a purged record's entries are no longer reachable).
    virtual Result<std::vector<AuditEntry>> audit_for(const std::string& collection,
                                                      const RecordId& id, std::size_t limit) = 0;

    // --- Conflicts
    /// Makes the open conflicts of one record equal `open_fields` (with their competing values):
    /// opens new ones, updates values of existing ones, and closes (as resolved by `by`, with
    /// the resolution and note) those no longer in the list. Returns how many were opened and
    /// closed.
    struct ConflictChange {
        std::size_t opened = 0;
        std::size_t closed = 0;
    };
    struct OpenField {
        std::string field;
        std::string values_json;
    };
    virtual Result<ConflictChange> reconcile_conflicts(const std::string& collection,
                                                       const RecordId& id, const std::string& area,
                                                       const std::vector<OpenField>& open_fields,
                                                       const std::string& by,
                                                       const std::string& note, std::int64_t at_ms,
                                                       const std::string& resolution_json) = 0;
    /// Conflicts matching `f`, oldest opened first (then by id).
    virtual Result<std::vector<Conflict>> list_conflicts(const ConflictFilter& f) = 0;
    virtual Result<std::optional<Conflict>> get_conflict(std::int64_t id) = 0;
    virtual Result<std::size_t> count_open_conflicts() = 0;

    // --- Users, tokens, devices, areas
    /// Adds a user (u.id is ignored) and returns the new id. A name that is empty or already
    /// taken fails with invalid_value.
    virtual Result<std::int64_t> add_user(const User& u) = 0;
    /// By id: all fields incl. areas (replaced), except created_at_ms. Unknown id or a name
    /// taken by another user fails with invalid_value.
    virtual Status update_user(const User& u) = 0;
    /// Users carry their areas sorted by code; list_users orders by name.
    virtual Result<std::optional<User>> user_by_name(const std::string& name) = 0;
    virtual Result<std::optional<User>> user_by_id(std::int64_t id) = 0;
    virtual Result<std::vector<User>> list_users() = 0;

    /// Stores a new token; its user must exist (invalid_value otherwise).
    virtual Status put_token(const Token& t) = 0;
    virtual Result<std::optional<Token>> token(const std::string& token_hash) = 0;
    /// Revoking an unknown token (or a user without tokens) succeeds and does nothing.
    virtual Status revoke_token(const std::string& token_hash) = 0;
    virtual Status revoke_user_tokens(std::int64_t user_id) = 0;

    virtual Result<std::optional<Device>> device(const std::string& id) = 0;
    virtual Result<std::optional<Device>> device_by_replica(const ReplicaId& replica) = 0;
    /// Inserts or replaces the device with id d.id. Its user must exist (invalid_value); a
    /// replica bound to another device fails with replica_conflict.
    virtual Status put_device(const Device& d) = 0;
    /// Adds `records` to the device's records_sent and sets its last_seen_ms (one statement,
    /// for every push). An unknown device is not an error: nothing changes.
    virtual Status note_device_push(const std::string& id, std::uint64_t records,
                                    std::int64_t at_ms) = 0;
    virtual Result<std::vector<Device>> list_devices() = 0;

    /// Inserts or replaces the area with code a.code.
    virtual Status put_area(const Area& a) = 0;
    /// Every area, ordered by code.
    virtual Result<std::vector<Area>> list_areas() = 0;
};

/// Options of the SQLite store.
struct SqliteOptions {
    bool read_only = false;  ///< reader connections
    int busy_timeout_ms = 5000;
    /// Write-ahead log pages (4 KiB each) at which a checkpoint copies the log into the
    /// database file: on a thread of its own after Store::defer_sync, else on the writer.
    int checkpoint_pages = 1000;
    /// After defer_sync: the log length at which the writer stops to finish the checkpoint
    /// itself, so the log starts over. The log can exceed it by one transaction.
    int wal_limit_pages = 16000;
};

/// Process-wide SQLite settings for a server process: turns off SQLite's memory statistics,
/// which take a global mutex on every allocation the store makes. Call it first in main(),
/// before any thread uses SQLite; later calls (SQLite already in use) change nothing. Returns
/// true when the settings were applied.
bool configure_sqlite_process() noexcept;

/// Opens (creating and migrating if needed) the SQLite store at `path`. The writer must be
/// opened first (it applies migrations; a reader of an unmigrated file fails). Fails with
/// internal and a message naming the file and SQLite's reason, or unsupported_version when the
/// file was migrated by a newer fieldsync. \note The returned Store belongs to the calling
/// thread (it may be handed to another thread, but used by one at a time).
Result<std::unique_ptr<Store>> open_sqlite_store(const std::filesystem::path& path,
                                                 const SqliteOptions& options = {});

}  // namespace fieldsync::server
