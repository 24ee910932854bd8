// The local replica: one SQLite file on the tablet holding every record in the user's scope,
// the writes not yet uploaded (the outbox), and the sync bookkeeping.
//
// What a Replica guarantees (docs/sdk.md has the long form):
//
//  - Durability. Every write returns only after its SQLite transaction committed with
//    synchronous=FULL in WAL mode: what the enumerator typed survives an app crash, a killed
//    process and a power cut. The new record state and its outbox entry are committed in the
//    same transaction, so a write is never stored without being queued for upload, nor queued
//    without being stored.
//  - Validation first. A write is checked against the survey schema received from the server
//    before anything changes; a refused write changes nothing and names the collection, the
//    field and the reason (protocol_errc::validation_failed). Before the first sync there is no
//    schema and every write is refused ("sync once to receive the survey schema").
//  - Identity. The replica id (which issues the dots of every local write, SPEC.md §3.1) and the
//    device id are random 128-bit values made on first open and kept for the life of the file.
//    A replica file must never be copied to another device.
//  - Clock. Local writes are stamped by a hybrid logical clock whose physical time is the
//    device clock corrected by the offset learned from the server at each sync (SPEC.md §3.2).
//    The clock is persisted with every write and restored on open: it never moves backwards
//    (the one exception is the sync engine's restamp after `clock_drift`, see sync_engine.hpp).
//
// Threading. A Replica is internally synchronized: every public member is thread-safe. One
// mutex guards the SQLite connection, so the app's UI thread may read and write while the sync
// engine applies downloaded pages on a background thread; each call holds the mutex only for
// its own transaction. Observer callbacks run after the transaction committed, outside the
// mutex, on the thread that made the change, and must not block (post to your UI thread).
//
// Ownership. Replica::open returns a shared_ptr: the app and the sync engine each hold one; the
// file closes when the last holder lets go. Results are returned by value and own their data.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "fieldsync/protocol/error.hpp"
#include "fieldsync/protocol/hlc.hpp"
#include "fieldsync/protocol/ids.hpp"
#include "fieldsync/protocol/record.hpp"
#include "fieldsync/protocol/schema.hpp"
#include "fieldsync/protocol/value.hpp"

namespace fieldsync {

using protocol::Error;
using protocol::protocol_errc;
using protocol::RecordId;
using protocol::ReplicaId;
using protocol::Result;
using protocol::Status;
using protocol::Value;

namespace detail {
struct ReplicaImpl;
struct ReplicaAccess;
}  // namespace detail

/// Typed field values of one write: field name -> value. What a value means depends on the
/// field's merge rule (docs/sdk.md, "Writes"): lww/review fields take the new value (null
/// clears an optional field); a set field (type multi) takes one element to add; a counter
/// field takes the delta to add.
using FieldValues = std::map<std::string, Value>;

/// The same as JSON text per field: field name -> one JSON value, converted by the field's type
/// with protocol::value_from_json (a date is "2024-05-01", a geo point {"lat":..,"lon":..}).
/// A multi field also accepts a JSON array of codes: the set then becomes exactly those codes
/// (missing ones are added, the others removed).
using JsonFields = std::map<std::string, std::string>;

/// Options of Replica::open.
struct ReplicaOptions {
    /// The device's uncorrected wall clock, Unix ms. Empty: the system clock. Tests inject a
    /// protocol::ManualClock. The replica adds the offset learned from the server.
    protocol::ClockSource clock;
    /// A remote timestamp more than this far ahead of the corrected local time is still joined
    /// (data is never dropped) but does not move the local clock (hlc.hpp). Local entries more
    /// than this far ahead are restamped before upload (SPEC.md §3.2).
    std::uint64_t max_drift_ms = 5 * 60 * 1000;
    /// The device id to record when the file is created (e.g. the platform's install id).
    /// Empty: 16 random bytes. Ignored when the file already exists.
    std::optional<protocol::Id128> device_id;
    /// How long a call waits for another process holding the file's write lock.
    int busy_timeout_ms = 5000;
    /// Fills `n` bytes with randomness for new replica, device and record ids. Empty: OpenSSL's
    /// RAND_bytes. Only deterministic simulations replace it; production code never should.
    std::function<void(std::uint8_t* out, std::size_t n)> random;
};

/// Where a record stands with the server.
enum class SyncStatus : std::uint8_t {
    synced = 0,    ///< the server holds every local write of the record
    pending = 1,   ///< local writes wait in the outbox for upload (or for their push_ack)
    rejected = 2,  ///< the server refused the record; see reject_code/reject_reason. It stays
                   ///< local, is not uploaded again until it is written again (which may fix
                   ///< it), and is never dropped silently
};
/// "synced", "pending", "rejected". \note Thread-safe.
const char* to_string(SyncStatus s) noexcept;

/// One value held by a review field in conflict: who wrote it and when.
struct CompetingValue {
    Value value;
    std::string by;             ///< author (user name)
    ReplicaId replica;          ///< the replica that wrote it
    protocol::HlcTimestamp ts;  ///< when (ts.wall_ms() is Unix ms, server-corrected)
    bool operator==(const CompetingValue&) const = default;
};

/// What a reader sees of one field.
struct FieldReading {
    protocol::MergeRule rule = protocol::MergeRule::lww;
    /// lww: the value; review: the provisional value (the latest write, SPEC.md §3.5); counter:
    /// the total; set: null (see `elements`).
    Value value;
    std::vector<Value> elements;  ///< set: the present elements, ordered
    bool conflict = false;        ///< review: concurrent writes left several distinct values
    std::vector<CompetingValue> competing;  ///< review in conflict: every held value
    bool declared = true;  ///< false for a field this device's schema does not know (written
                           ///< under a newer schema; kept and uploaded untouched)
};

/// A snapshot of one record. A plain value: it does not change when the replica does.
struct RecordView {
    std::string collection;
    RecordId id;
    std::string area;              ///< the record's area code ("" when it has none yet)
    bool deleted = false;          ///< the provisional value of "_deleted"
    bool delete_conflict = false;  ///< a delete and an edit were concurrent: a supervisor decides
    std::map<std::string, FieldReading> fields;  ///< every written field except "_deleted"
    std::vector<std::string> conflicts;          ///< review fields in conflict, "_deleted" included
    SyncStatus sync = SyncStatus::synced;
    std::string reject_code;      ///< when rejected: the server's code ("validation_failed", ...)
    std::string reject_reason;    ///< when rejected: the server's explanation, naming the field
    protocol::RecordState state;  ///< the full replicated state (for tools and the C API)

    /// True when local writes wait for upload (sync == pending).
    bool pending() const noexcept { return sync == SyncStatus::pending; }
    /// The field's provisional value, or nullptr when the field was never written.
    const Value* value(std::string_view field) const;
    /// protocol::record_to_json of the state. \note Thread-compatible.
    std::string to_json() const;
};

/// Which records list() and count() return. Every condition must hold.
struct Filter {
    /// Only records whose area is this code or lies under it ("ordos/dalad" matches
    /// "ordos/dalad/x", not "ordos/dalad-2"). "" = any area.
    std::string area_prefix;
    /// Field == value on the provisional value (review, lww, counter); for a set field: the
    /// element is present.
    std::map<std::string, Value> equals;
    bool include_deleted = false;  ///< also tombstones (deleted records)
    bool only_conflicts = false;   ///< only records with a review field in conflict
    bool only_unsynced = false;    ///< only pending or rejected records
    std::size_t limit = 0;         ///< at most this many (0 = no limit)
    std::size_t offset = 0;        ///< skip this many matches first
};

/// A record the server refused, as listed by Replica::rejected().
struct RejectedRecord {
    std::string collection;
    RecordId id;
    std::string code;    ///< "validation_failed", "forbidden", "unsupported_version", ...
    std::string reason;  ///< the server's explanation
};

/// Sync bookkeeping, as stored in the replica.
struct SyncInfo {
    protocol::Id128 device_id;
    ReplicaId replica_id;
    std::string user;                  ///< signed-in user (from the last welcome), "" before
    std::string role;                  ///< "enumerator", "supervisor", "admin", "" before
    std::vector<std::string> scope;    ///< the user's area codes
    std::uint32_t schema_version = 0;  ///< 0 = no schema yet
    std::uint64_t cursor = 0;          ///< the server cursor pulled up to (0 = none)
    std::int64_t clock_offset_ms = 0;  ///< server time - device time, from the last sync
    protocol::HlcTimestamp clock;      ///< the last timestamp issued or observed
    bool has_token = false;            ///< a session token is stored for reconnects
    std::uint64_t last_sync_ms = 0;    ///< corrected Unix ms of the last completed pull, 0 = never
    std::optional<Error> last_error;   ///< the last sync error, cleared by a completed sync
    std::uint64_t last_error_ms = 0;   ///< when it happened (corrected Unix ms)
    std::size_t pending = 0;           ///< records waiting for upload
    std::size_t rejected = 0;          ///< records the server refused
};

/// Why observers are called.
enum class ChangeOrigin : std::uint8_t {
    local_write = 0,  ///< create/update/remove/... through this Replica
    remote = 1,       ///< the sync engine joined downloaded states (pull pages, notify)
    revoked = 2,      ///< records left the user's scope (or a re-bootstrap dropped them)
    sync_status = 3,  ///< upload status changed (acknowledged, rejected, restamped)
};

/// The records one committed transaction changed.
struct ChangeNotice {
    ChangeOrigin origin = ChangeOrigin::local_write;
    /// collection -> ids changed in it (each once, ascending).
    std::map<std::string, std::vector<RecordId>> records;
};

/// Called after a transaction committed, on the thread that made the change, outside the
/// replica's lock (it may read the replica). Must not block and must not throw.
using ChangeObserver = std::function<void(const ChangeNotice&)>;
/// Identifies a registered observer; 0 is never issued.
using ObserverToken = std::uint64_t;

/// The local replica. See the file comment for guarantees and threading.
class Replica {
public:
    /// Opens the replica file at `path`, creating it (with a new replica id and device id)
    /// when it does not exist, and applying schema migrations when it was written by an older
    /// SDK. Sets WAL mode and synchronous=FULL.
    /// Success: the open replica (shared: hand copies to the sync engine).
    /// Failure: internal with a message naming the file and SQLite's reason (unreadable,
    /// corrupt, locked past busy_timeout_ms); unsupported_version when the file was migrated by
    /// a newer SDK (the message names both versions).
    /// \note Thread-safe.
    static Result<std::shared_ptr<Replica>> open(const std::filesystem::path& path,
                                                 ReplicaOptions options = {});

    /// Closes the file. Outstanding RecordViews stay valid (they are copies).
    ~Replica();
    Replica(const Replica&) = delete;
    Replica& operator=(const Replica&) = delete;

    // --- Identity and status ------------------------------------------------------------------

    /// The replica id (issues the dots of local writes). \note Thread-safe.
    ReplicaId replica_id() const;
    /// The device id sent in hello. \note Thread-safe.
    protocol::Id128 device_id() const;
    /// The file path given to open(). \note Thread-safe.
    const std::filesystem::path& path() const noexcept;
    /// The survey schema received from the server, or nullptr before the first sync.
    /// The Schema is immutable and shared: it stays valid after a newer one replaced it.
    /// \note Thread-safe.
    std::shared_ptr<const protocol::Schema> schema() const;
    /// Sync bookkeeping. Failure: internal (SQLite). \note Thread-safe.
    Result<SyncInfo> sync_info() const;
    /// The corrected physical time (device clock + learned offset), Unix ms. \note Thread-safe.
    std::uint64_t now_ms() const;

    // --- Writes -------------------------------------------------------------------------------
    // Every write: validated against the schema before anything changes; one protocol::Update
    // (one dot of this replica, one HLC tick of the corrected clock, author = the signed-in
    // user); the new state, the clock and the outbox entry committed in one transaction; then
    // observers are called with ChangeOrigin::local_write.
    // Common failures: validation_failed (no schema yet: "sync once to receive the survey
    // schema"; unknown collection or field; a value the field does not accept; a required field
    // left empty: the message names collection, field and reason), forbidden (the record's area
    // is outside the user's scope), invalid_value (no such record; the record is deleted),
    // internal (SQLite; nothing was written). All \note Thread-safe.

    /// Creates a record with a new UUIDv7 id. Every required field must be given.
    /// Success: the new id.
    Result<RecordId> create(std::string_view collection, const FieldValues& fields);
    /// create() with JSON values per field.
    Result<RecordId> create_json(std::string_view collection, const JsonFields& fields);
    /// Writes the given fields of an existing, non-deleted record (at least one field).
    /// On a review field in conflict, the write covers every competing value: it resolves the
    /// conflict once synced (SPEC.md §3.5, "Resolution").
    Status update(std::string_view collection, const RecordId& id, const FieldValues& fields);
    /// update() with JSON values per field.
    Status update_json(std::string_view collection, const RecordId& id, const JsonFields& fields);
    /// Deletes a record (writes "_deleted" = true). Deleting a deleted record without a delete
    /// conflict succeeds and writes nothing; with one, it confirms the delete.
    Status remove(std::string_view collection, const RecordId& id);
    /// Un-deletes a record (writes "_deleted" = false); also how a delete conflict is settled in
    /// favour of the edit. A live record without a delete conflict: succeeds, writes nothing.
    Status restore(std::string_view collection, const RecordId& id);
    /// Adds one element to a set field (type multi). Adding a present element succeeds and
    /// writes nothing.
    Status add_to_set(std::string_view collection, const RecordId& id, std::string_view field,
                      const Value& element);
    /// Removes one element from a set field. Removing an absent element succeeds and writes
    /// nothing.
    Status remove_from_set(std::string_view collection, const RecordId& id, std::string_view field,
                           const Value& element);
    /// Adds `delta` (may be negative, not zero) to a counter field.
    Status increment(std::string_view collection, const RecordId& id, std::string_view field,
                     std::int64_t delta);

    // --- Queries ------------------------------------------------------------------------------
    // Reads see every committed write (the UI's own and the engine's) and never block on the
    // network. Failure: internal (SQLite, or a stored state that no longer decodes). All
    // \note Thread-safe.

    /// One record, deleted ones included. Success: the view, or nullopt when the replica holds
    /// no record with that id in that collection.
    Result<std::optional<RecordView>> get(std::string_view collection, const RecordId& id) const;
    /// The records of one collection matching `filter`, ordered by id (creation time for
    /// UUIDv7 ids).
    Result<std::vector<RecordView>> list(std::string_view collection,
                                         const Filter& filter = {}) const;
    /// How many records list() would return without limit and offset.
    Result<std::size_t> count(std::string_view collection, const Filter& filter = {}) const;
    /// Records waiting for upload (status pending; rejected ones are not counted).
    Result<std::size_t> pending_count() const;
    /// Every record the server refused, oldest write first.
    Result<std::vector<RejectedRecord>> rejected() const;

    // --- Observers ----------------------------------------------------------------------------

    /// Registers `observer` (see ChangeObserver for the calling contract). Returns its token.
    /// \note Thread-safe.
    ObserverToken add_observer(ChangeObserver observer);
    /// Unregisters. A call already in progress on another thread may still finish after this
    /// returns; no new call starts. Unknown tokens are ignored. \note Thread-safe.
    void remove_observer(ObserverToken token);

private:
    explicit Replica(std::unique_ptr<detail::ReplicaImpl> impl);
    friend struct detail::ReplicaAccess;
    std::unique_ptr<detail::ReplicaImpl> m_impl;
};

}  // namespace fieldsync
