// Replica internals shared by replica.cpp and sync_engine.cpp. Never installed.
//
// File format (SQLite, WAL, synchronous=FULL; PRAGMA user_version = migration level):
//
//   meta(key TEXT PRIMARY KEY, value)        -- one row per setting:
//       replica_id, device_id (16-byte blobs, made on first open, never changed)
//       created_ms, hlc (last timestamp issued or observed), change_counter (last local change
//       number), cursor (server pull cursor), clock_offset_ms, user, role, scope (areas joined
//       by '\n'), schema_json, schema_version, token, rebootstrap (0/1), last_sync_ms,
//       last_error_code, last_error_message, last_error_ms
//   records(collection, id BLOB(16), area, deleted, conflicted, acked, seen, state BLOB)
//       a rowid table, key (collection, id) as an index (format 2; format 1 was WITHOUT ROWID)
//       state   = protocol::encode_record (canonical bytes: equal states, equal bytes)
//       acked   = the highest counter of this replica's dots that the server is known to hold
//                 (from push_ack ok, or seen in a pulled state): entries of this replica with a
//                 higher counter are "pending" (the only ones a restamp may touch)
//       seen    = re-bootstrap mark: 0 when a re-bootstrap starts, 1 when the full pull sends it
//   outbox(collection, id, change, schema_version, status, code, reason)
//       one row per record holding writes the server has not acknowledged.
//       change  = the local change number of the record's latest write (meta change_counter is
//                 incremented per write): a push remembers it, and the push_ack removes the row
//                 only if it is unchanged (a record edited meanwhile stays pending)
//       status  = 0 pending, 1 rejected (code, reason from the server)
//
// Invariants: a local write commits its record row, its outbox row and meta hlc/change_counter
// in one transaction; a pulled page commits its joined rows and meta cursor in one transaction.
//
// Locking: ReplicaImpl::mutex guards db, clock, schema and the session fields. Public entry points
// lock it for one transaction and call observers after unlocking.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "fieldsync/protocol/messages.hpp"
#include "fieldsync/replica.hpp"
#include "sqlite.hpp"

namespace fieldsync {

/// The per-record key used across the engine.
struct RecordKey {
    std::string collection;
    RecordId id;
    auto operator<=>(const RecordKey&) const = default;
};

/// What hello needs.
struct HelloState {
    protocol::Id128 device;
    ReplicaId replica;
    std::uint32_t schema_version = 0;
    std::uint64_t cursor = 0;
    std::string token;
    std::string user;
    std::uint64_t raw_clock = 0;  ///< the device's uncorrected wall clock
    bool rebootstrap = false;     ///< an interrupted re-bootstrap must restart
    std::size_t outbox = 0;       ///< records pending or rejected
};

/// The outcome of storing a welcome.
struct SessionOutcome {
    bool schema_updated = false;
    std::optional<Error> schema_error;  ///< the welcome's schema could not be adopted
    std::size_t requeued = 0;           ///< unsupported_version rejections made pending again
};

/// One record selected for a push.
struct PushCandidate {
    RecordKey key;
    std::uint64_t change = 0;       ///< the outbox change number at push time
    std::uint64_t own_counter = 0;  ///< this replica's counter in the pushed context
    std::uint32_t schema_version = 0;
    protocol::RecordState state;
};

struct PushSelection {
    std::vector<PushCandidate> items;
    std::vector<RecordKey> too_large;  ///< alone bigger than max_frame: marked rejected
    std::size_t restamped = 0;         ///< records restamped because stamped too far ahead
};

/// The outcome of a push_ack.
struct AckOutcome {
    std::size_t acked = 0;          ///< ok, removed from the outbox
    std::size_t still_pending = 0;  ///< ok, but edited since the push
    std::size_t rejected = 0;
    std::string first_reason;            ///< of the first rejection
    std::vector<RecordKey> clock_drift;  ///< to restamp and push again
    std::vector<RecordKey> retry_later;  ///< busy/internal: keep pending, not this session
};

struct ApplyOutcome {
    std::size_t joined = 0;   ///< states received
    std::size_t changed = 0;  ///< local records whose state changed
};

struct RevokeOutcome {
    std::size_t removed = 0;
    std::size_t had_pending = 0;  ///< of which had writes not uploaded (lost: out of scope)
};

struct LocalDigest {
    std::uint64_t cursor = 0;
    std::uint64_t count = 0;
    std::array<std::uint8_t, 32> digest{};
    std::size_t outbox = 0;  ///< pending + rejected records (the digest is meaningless if > 0)
};

namespace detail {

struct ReplicaImpl {
    // --- Immutable after open
    std::filesystem::path path;
    ReplicaOptions options;
    ReplicaId replica_id;
    protocol::Id128 device_id;

    // --- Guarded by mutex
    mutable std::mutex mutex;
    std::unique_ptr<sdk_detail::Db> db;
    protocol::HybridClock clock;
    std::shared_ptr<const protocol::Schema> schema;
    std::string user;
    std::vector<std::string> scope;
    std::uint64_t change_counter = 0;

    /// Server time - device time. Read by the clock source without the mutex.
    std::atomic<std::int64_t> offset_ms{0};

    // --- Observers (own mutex, so callbacks run without the replica's lock)
    std::mutex observers_mutex;
    std::map<ObserverToken, std::shared_ptr<ChangeObserver>> observers;
    ObserverToken next_token = 1;

    explicit ReplicaImpl(ReplicaOptions o);

    std::uint64_t raw_now() const;
    std::uint64_t corrected_now() const;
    /// Calls every observer (never with `mutex` held). Empty notices are skipped.
    void notify(const ChangeNotice& n);

    // --- Engine-facing operations. Each locks, runs one transaction, unlocks, notifies.
    Result<HelloState> hello_state();
    /// Stores the welcome: user, role, scope, schema (if sent and loadable), clock offset,
    /// token. Failure: internal only (a bad schema is reported in the outcome).
    Result<SessionOutcome> begin_session(const protocol::Welcome& w);
    /// Recomputes the offset from a server time received now.
    void observe_server_time(std::uint64_t server_time);
    Status clear_token();
    /// Pending records not excluded by `skip` (key -> change already tried this session; a
    /// record is eligible again when its change grew), oldest change first, at most
    /// `max_items` and about `max_bytes` of encoded states. Restamps entries stamped more
    /// than max_drift ahead of corrected time first.
    Result<PushSelection> select_push(std::size_t max_items, std::size_t max_bytes,
                                      const std::map<RecordKey, std::uint64_t>& skip);
    /// Marks records rejected (if unchanged since `change`) with code and reason.
    Status mark_rejected(const std::vector<std::pair<PushCandidate, protocol::ItemResult>>& items);
    Result<AckOutcome> apply_push_results(const std::vector<PushCandidate>& items,
                                          const std::vector<protocol::ItemResult>& results);
    /// Restamps this replica's unacknowledged entries of `keys` with fresh ticks of the
    /// corrected clock; resets the clock first when it runs more than max_drift ahead of
    /// corrected time. Returns how many records changed.
    Result<std::size_t> restamp(const std::vector<RecordKey>& keys, bool force_reset);
    /// Joins downloaded states and stores `cursor`, in one transaction.
    Result<ApplyOutcome> apply_remote(const std::vector<protocol::ChangeItem>& items,
                                      std::uint64_t cursor);
    Result<RevokeOutcome> revoke(const std::vector<protocol::RecordRef>& records);
    /// Persists only the re-bootstrap flag: the server asked for one, and the wish must survive
    /// a session that ends before begin_rebootstrap runs (the server may not ask again).
    Status request_rebootstrap();
    /// Persists the re-bootstrap flag, cursor 0, and clears every record's seen mark.
    Status begin_rebootstrap();
    /// Drops records not seen by the full pull and not in the outbox; clears the flag.
    Result<std::size_t> finish_rebootstrap();
    Result<LocalDigest> local_digest();
    Result<std::size_t> outbox_count();
    /// Records the session's end state: a completed sync (clears the last error) or an error.
    void record_sync_completed();
    void record_error(const Error& e);

    // --- Helpers that expect `mutex` held.
    /// Inside a write transaction: merges meta hlc and change_counter into the in-memory copies
    /// (another connection to the same file may have advanced them).
    Status refresh_locked();
    Result<std::optional<std::pair<protocol::RecordState, std::int64_t>>> load_locked(
        std::string_view collection, const RecordId& id);
    Status put_record_locked(const protocol::RecordState& s, std::int64_t acked,
                             std::optional<bool> seen);
    Status set_meta_locked(const char* key, std::int64_t v);
    Status set_meta_locked(const char* key, std::string_view v);
    Status set_meta_blob_locked(const char* key, protocol::ByteView v);
    Result<std::optional<std::int64_t>> meta_int_locked(const char* key);
    Result<std::optional<std::string>> meta_text_locked(const char* key);
    Result<std::optional<protocol::Bytes>> meta_blob_locked(const char* key);
    Result<std::size_t> restamp_locked(const std::vector<RecordKey>& keys, bool force_reset,
                                       ChangeNotice& notice);
};

/// The engine's way in to a Replica's internals.
struct ReplicaAccess {
    static ReplicaImpl& impl(Replica& r) noexcept { return *r.m_impl; }
};

}  // namespace detail

}  // namespace fieldsync
