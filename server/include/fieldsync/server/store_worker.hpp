// The store's single writer: one thread that owns the writer Store, runs every sync session's
// frames and every API call that touches the store, and groups their commits.
//
// Group commit: the thread takes every job queued since it last looked (up to
// `max_group`), runs them inside one transaction (each push item in its own savepoint), commits
// once, and only then delivers the replies. N concurrent pushes cost one fsync instead of N,
// and no acknowledgement leaves before its data is durable. If the commit fails, every reply of
// the group is replaced by an `internal` error, so nothing un-durable is ever acknowledged.
//
// Overlapped sync (when the store offers Store::defer_sync, as SQLite does): the commit
// returns before the fsync, and a second thread, the sync thread, fsyncs and then delivers the
// group's replies, while the worker already runs the next group. Groups are delivered in the
// order they committed; a group is delivered only after an fsync that began after its commit
// (one fsync covers every group committed before it), so no reply, not even a pull or a
// notify, shows a device anything that a power loss could still take back (its sequence
// number could be given out again). A failed fsync is final: the groups waiting for it and
// every later one get errors instead of replies, the worker refuses further groups, and the
// server must be restarted (SQLite then keeps a prefix of whole commits).
//
// After a group that wrote, live sessions whose scope the changes touched are caught up
// (notify/revoke frames), on the worker thread; their frames go out with the group's replies.
//
// Threading: every public member is thread-safe. Callbacks (`SendFn`, job completions) run on
// the sync thread (the worker thread without overlapped sync) and must not block: the network
// layer posts them to the connection's strand. The store is never touched by I/O threads.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>
#include <vector>

#include "fieldsync/protocol/hlc.hpp"
#include "fieldsync/protocol/schema.hpp"
#include "fieldsync/server/auth.hpp"
#include "fieldsync/server/store.hpp"
#include "fieldsync/server/sync_session.hpp"

namespace fieldsync::server {

/// Counters for /metrics. Updated on the worker and sync threads, read from anywhere.
struct WorkerStats {
    std::atomic<std::uint64_t> groups{0};
    std::atomic<std::uint64_t> jobs{0};
    std::atomic<std::uint64_t> commits_failed{0};
    std::atomic<std::uint64_t> pushes{0};
    std::atomic<std::uint64_t> pulls{0};
    std::atomic<std::uint64_t> items_accepted{0};
    std::atomic<std::uint64_t> items_rejected{0};
    std::atomic<std::uint64_t> merges{0};  ///< items that changed a stored record
    std::atomic<std::uint64_t> commit_us_total{0};
    /// Overlapped sync: fsyncs of the write-ahead log, and the sync thread's time in them.
    std::atomic<std::uint64_t> syncs{0};
    std::atomic<std::uint64_t> sync_us_total{0};
    std::atomic<std::uint64_t> syncs_failed{0};
    /// Time the worker spent running groups (handling, commit, replies): busy, not waiting.
    std::atomic<std::uint64_t> busy_us_total{0};
    /// The worker thread's CPU time in those groups (busy minus waits on I/O and locks).
    std::atomic<std::uint64_t> busy_cpu_us_total{0};
    std::atomic<std::uint64_t> queue_depth{0};
    std::atomic<std::uint64_t> sessions{0};
    std::atomic<std::uint64_t> open_conflicts{0};
};

class StoreWorker {
public:
    /// What every reply says once a sync failed (the detail goes to Options::on_sync_failure).
    static constexpr const char* not_durable_message =
        "the server could not make its data durable (a disk error): whether the latest changes "
        "were saved is unknown, and it accepts nothing more until an administrator checks the "
        "disk and restarts it";
    using SessionId = std::uint64_t;
    /// Receives a session's output after its group committed (and was synced). Runs on the
    /// sync thread (the worker thread when the store cannot defer its syncs).
    using SendFn = std::function<void(SyncOutput)>;
    /// A job that runs inside the group transaction; returns true when it wrote.
    using Job = std::function<bool(Store&, const protocol::Schema&)>;
    /// Runs after the job's group committed and was synced (ok), or failed to commit or to
    /// sync (!ok, with what that means for the group's writes). On the same thread as SendFn.
    using Done = std::function<void(const Status&)>;

    struct Options {
        std::size_t max_group = 256;
        SyncLimits limits;
        std::function<std::uint64_t()> now_ms;  ///< defaults to the system clock
        /// Overlap each group's fsync with the next group (see above) when the store can.
        bool overlap_sync = true;
        /// Tests: runs on the sync thread before each fsync; an error counts as the fsync's.
        std::function<Status()> before_sync;
        /// Told (on the sync thread, once) when a sync failed: the server logs it.
        std::function<void(const Error&)> on_sync_failure;
    };

    /// Takes the writer store and the current schema; starts the thread.
    StoreWorker(std::unique_ptr<Store> writer, protocol::Schema schema, Options options);
    /// Stops (see stop()).
    ~StoreWorker();
    StoreWorker(const StoreWorker&) = delete;
    StoreWorker& operator=(const StoreWorker&) = delete;

    /// Opens a session; `send` receives its replies. Returns its id.
    SessionId open_session(std::string peer, SendFn send);
    /// Queues one frame of a session. Frames of one session are handled in order. The frame
    /// is decoded here, on the calling thread (the I/O threads), so that the worker only
    /// applies. \note Thread-safe.
    void frame(SessionId id, protocol::Bytes frame);
    /// Forgets a session (its queued frames are dropped).
    void close_session(SessionId id);
    /// Queues a job (HTTP API calls that read or write the store).
    void post(Job job, Done done);
    /// Runs `fn` on the worker thread and waits for it (startup, admin tools, tests).
    Status run_sync(Job job);

    /// Replaces the schema (after it was stored). Runs on the worker; thread-safe to call.
    void set_schema(protocol::Schema schema);
    /// The schema in force (a copy). \note Thread-safe.
    protocol::Schema schema() const;

    /// Finishes every queued job, commits, delivers every reply, and joins the threads.
    /// Idempotent.
    void stop();

    // --- For jobs, on the worker thread only ------------------------------------------------
    /// The server replica's hybrid clock (stamps supervisors' writes made through the API).
    protocol::HybridClock& clock() noexcept { return m_clock; }
    /// The server's own replica id (the author replica of API writes).
    const protocol::ReplicaId& server_replica() const noexcept { return m_server_replica; }
    /// Tells the worker that a job changed records in `area`: after the commit, live sessions
    /// whose scope covers it are caught up.
    void touch_area(std::string area) { m_ctx.touched_areas.push_back(std::move(area)); }
    /// Tells the worker that a job changed the account `name` (disabled, password, areas,
    /// role): after the commit, its open sync sessions are re-checked and ended or told to
    /// re-bootstrap (SyncSession::recheck_user).
    void user_changed(std::string name) { m_changed_users.push_back(std::move(name)); }
    /// Limits in force.
    const SyncLimits& limits() const noexcept { return m_options.limits; }

    const WorkerStats& stats() const noexcept { return m_stats; }
    LoginThrottle& throttle() noexcept { return m_throttle; }

private:
    struct Item {
        enum Kind { session_frame, api_job } kind;
        SessionId session = 0;
        /// Decoded by frame() on the caller's (I/O) thread, not on the worker.
        std::optional<protocol::Result<protocol::Message>> message;
        PreparedPush prepared;  ///< SyncSession::prepare, also on the caller's thread
        Job job;
        Done done;
    };
    /// Where a session's output goes; shared with the sync thread, which skips it once the
    /// session closed.
    struct Sink {
        explicit Sink(SendFn fn) : send(std::move(fn)) {}
        SendFn send;
        std::atomic<bool> open{true};
    };
    struct SessionSlot {
        std::unique_ptr<SyncSession> session;
        std::shared_ptr<Sink> sink;
    };
    /// One reply of a group: a session's output, or a job's completion and status.
    struct Delivery {
        std::shared_ptr<Sink> sink;
        SyncOutput out;
        Done done;
        Status status;
    };
    /// A committed group's replies, waiting for the sync that makes the group durable.
    struct Handoff {
        std::vector<Delivery> deliveries;
        /// The group committed: ask the Syncer (which knows whether anything was written and
        /// returns at once if not). False for a group that failed to begin or to commit.
        bool committed = false;
    };

    void run();
    void run_group(std::vector<Item>& items);
    /// Delivers `h` now, or hands it to the sync thread. Worker thread.
    void finish_group(Handoff h);
    /// Sends a group's replies when `synced` is ok; else errors instead (the sync failed).
    static void deliver(Handoff& h, const Status& synced);
    void run_sync_thread();

    /// Makes m_schema the one the I/O threads validate pushes under (frame()) and gives it the
    /// next generation number (SyncContext::schema_generation). Worker thread.
    void publish_schema();

    std::unique_ptr<Store> m_store;
    protocol::Schema m_schema;
    mutable std::mutex m_schema_mutex;
    /// A copy of m_schema for frame(), with its generation; guarded by m_snapshot_mutex (the
    /// worker holds m_schema_mutex during whole jobs, which an I/O thread must not wait for).
    std::shared_ptr<const protocol::Schema> m_snapshot;
    std::uint64_t m_snapshot_generation = 0;
    std::mutex m_snapshot_mutex;
    Options m_options;
    protocol::HybridClock m_clock;
    protocol::ReplicaId m_server_replica;
    LoginThrottle m_throttle;
    SyncContext m_ctx;
    std::vector<std::string> m_changed_users;  // by jobs of the current group
    WorkerStats m_stats;

    std::mutex m_mutex;
    std::condition_variable m_cv;
    std::deque<Item> m_queue;                               // guarded by m_mutex
    std::unordered_map<SessionId, SessionSlot> m_sessions;  // worker thread only
    std::vector<std::pair<SessionId, std::pair<std::string, SendFn>>> m_opening;  // m_mutex
    std::vector<SessionId> m_closing;  // guarded by m_mutex
    SessionId m_next_id = 1;           // guarded by m_mutex
    bool m_stopping = false;           // guarded by m_mutex
    std::size_t m_handoffs = 0;        // groups not yet delivered by the sync thread; m_mutex
    std::thread m_thread;

    // Overlapped sync (null m_syncer: commits are durable when they return).
    std::unique_ptr<Syncer> m_syncer;
    std::mutex m_sync_mutex;
    std::condition_variable m_sync_cv;
    std::deque<Handoff> m_sync_queue;  // guarded by m_sync_mutex
    bool m_sync_stopping = false;      // guarded by m_sync_mutex
    /// Set by the sync thread when an fsync failed; the worker then refuses every group.
    std::atomic<bool> m_sync_failed{false};
    Status m_sync_failure;  // guarded by m_sync_mutex
    std::thread m_sync_thread;
};

}  // namespace fieldsync::server
