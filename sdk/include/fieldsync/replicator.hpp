// The replicator: runs the sync engine (sync_engine.hpp) over a transport (transport.hpp) on
// its own thread, so an app only says "sync now" or "stay in sync".
//
//   one_shot     connect, log in, push the outbox, pull up to the server's cursor, upload what
//                was written meanwhile, close. The outcome is the last status (and the Status
//                returned by sync_once()).
//   continuous   the same, then stay connected: local writes are pushed as they are made
//                (the replicator observes the replica), the server's changes arrive live. A
//                dropped or failed connection is retried with exponential backoff and jitter
//                (initial_ms doubling up to max_ms, each delay randomized by ±jitter/2), reset
//                to the initial delay after a session caught up. Errors that a retry cannot fix
//                stop it (see ReplicatorOptions::permanent).
//
// Every session resumes where the last one stopped: the cursor and the outbox are in the
// replica (SPEC.md §4.7), so a replicator can be stopped, destroyed and recreated at any time.
//
// Threading. Every public member is thread-safe, except that stop() and the destructor must
// not be called from inside a callback (stop() called there only requests the stop). The
// callbacks (on_status, on_event) run on the replicator's own thread, one at a time, never
// after stop() returned; they must not block (post to the UI thread) and must not throw.
// The transport's delegate calls only queue events for that thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "fieldsync/protocol/error.hpp"
#include "fieldsync/replica.hpp"
#include "fieldsync/sync_engine.hpp"
#include "fieldsync/transport.hpp"

namespace fieldsync {

enum class ReplicatorMode : std::uint8_t {
    one_shot = 0,    ///< sync until up to date, then close
    continuous = 1,  ///< stay connected; reconnect with backoff
};

/// What the replicator is doing.
enum class ReplicatorState : std::uint8_t {
    stopped = 0,         ///< not running: before start(), after stop(), after a one-shot sync
                         ///< finished, or after a permanent error (see last_error)
    connecting = 1,      ///< opening the connection (TCP, TLS, WebSocket upgrade)
    authenticating = 2,  ///< hello sent, waiting for welcome
    pushing = 3,         ///< uploading local writes
    pulling = 4,         ///< downloading changes
    idle = 5,            ///< up to date; continuous mode: connected, changes arrive live
    offline = 6,         ///< continuous mode: waiting to reconnect (see retry_in_ms)
};
/// "stopped", "connecting", ... \note Thread-safe.
const char* to_string(ReplicatorState s) noexcept;

/// A snapshot for progress displays. Counters are those of the current (or last) session.
struct ReplicatorStatus {
    ReplicatorState state = ReplicatorState::stopped;
    std::uint64_t pushed = 0;       ///< records acknowledged by the server
    std::uint64_t push_total = 0;   ///< records to upload in this session (known once pushing)
    std::uint64_t rejected = 0;     ///< records the server refused in this session
    std::uint64_t pulled = 0;       ///< record states downloaded (no total: the server does not
                                    ///< announce one; `pages` grows with each page)
    std::uint64_t pages = 0;        ///< pages downloaded
    std::uint64_t revoked = 0;      ///< records removed because they left the user's scope
    std::uint64_t cursor = 0;       ///< the stored pull cursor
    std::size_t pending = 0;        ///< records waiting for upload, from the replica
    std::uint32_t attempt = 0;      ///< failed connection attempts in a row (0 after a success)
    std::uint64_t retry_in_ms = 0;  ///< offline: time until the next attempt
    bool up_to_date = false;        ///< the last session caught up (pushed and pulled everything)
    /// The most recent error (session, transport or timeout), with a message for people
    /// ("wss://sync.example.org:443: TLS handshake failed: certificate has expired"). Cleared
    /// when a session catches up.
    std::optional<Error> last_error;
};

/// Reconnect delays (continuous mode).
struct BackoffOptions {
    std::uint32_t initial_ms = 1'000;  ///< first retry
    std::uint32_t max_ms = 300'000;    ///< cap (SPEC.md §4.7 suggests 5 minutes)
    double multiplier = 2.0;
    /// Each delay is multiplied by a uniform random factor in [1 - jitter/2, 1 + jitter/2]
    /// (never above max_ms), so tablets that lost the network together do not reconnect
    /// together. 0 = no jitter.
    double jitter = 0.5;
};

struct ReplicatorOptions {
    /// ws://host:port/sync or wss://host:port/sync (the path defaults to /sync; http:// and
    /// https:// are accepted for ws:// and wss://).
    std::string url;
    /// How to log in: a password once (the token the server returns is stored in the replica),
    /// then nothing (the stored token is used). See Credentials.
    Credentials credentials;
    /// hello.app: the app's name and version, for the server's logs.
    std::string app = "fieldsync-sdk/0.1";
    ReplicatorMode mode = ReplicatorMode::one_shot;
    /// Makes one transport per connection attempt. Empty: the default WebSocket transport with
    /// `websocket` options.
    TransportFactory transport;
    WebSocketOptions websocket;
    TransportHeaders headers;
    BackoffOptions backoff;
    /// Options of the engine; its clock defaults to a monotonic clock here, and pipeline_pulls
    /// is always on (the replicator applies each kept page while the next one is on its way).
    EngineOptions engine;
    /// How often reply deadlines are checked (SyncEngine::tick).
    std::uint32_t tick_interval_ms = 1'000;
    /// Continuous mode: writes made through this process's Replica are pushed at once (the
    /// replicator observes it). Writes made by ANOTHER process on the same file are not
    /// observed; with this > 0 the outbox is also checked this often while live. 0 = never.
    std::uint32_t poll_outbox_ms = 0;
    /// How long stop() waits for the transport to finish an orderly close before it destroys
    /// the transport (which aborts the connection).
    std::uint32_t close_timeout_ms = 2'000;
    /// Errors that end a continuous replicator instead of a retry. Empty: the default:
    /// unauthenticated (wrong password, token refused: ask the user), unsupported_version
    /// (update the app), replica_conflict (the database was copied), forbidden (another user's
    /// unsent writes), and transport_errc::invalid_url.
    std::function<bool(const Error&)> permanent;
    /// Seed of the backoff jitter; 0 = random. Tests fix it.
    std::uint64_t seed = 0;

    /// Called whenever the status changes (state, counters, error). On the replicator's thread;
    /// must not block or throw.
    std::function<void(const ReplicatorStatus&)> on_status;
    /// Every engine event (pushed, rejected, pulled, schema_updated, error, ...). Same thread
    /// and rules as on_status.
    std::function<void(const SyncEvent&)> on_event;
};

/// The default for ReplicatorOptions::permanent. \note Thread-safe.
bool is_permanent_sync_error(const Error& e);

class Replicator {
public:
    /// Binds to a replica (shared with the app). Does not connect yet. \note Thread-safe.
    Replicator(std::shared_ptr<Replica> replica, ReplicatorOptions options);
    /// stop()s. Must not be called from a callback.
    ~Replicator();
    Replicator(const Replicator&) = delete;
    Replicator& operator=(const Replicator&) = delete;

    /// Starts syncing on the replicator's thread, in the configured mode. Does nothing when
    /// already running. \note Thread-safe.
    void start();
    /// Stops promptly: an orderly close (at most close_timeout_ms), then the thread ends.
    /// When it returns, no callback runs any more and the state is stopped. Writes already
    /// acknowledged stay acknowledged; the rest stay in the outbox for the next sync.
    /// Called from a callback, it only requests the stop. \note Thread-safe.
    void stop();
    /// Continuous mode while offline: retry now instead of waiting out the backoff (e.g. the
    /// platform reports the network is back). \note Thread-safe.
    void retry_now();

    /// Blocking helper: a one-shot sync (whatever the configured mode) that returns when it
    /// finished or after `timeout` (then it is stopped).
    /// Success: everything was pushed (or refused by the server, see Replica::rejected()) and
    /// pulled. Failure: the error that ended the session (transport, login, protocol), or busy
    /// "sync did not finish within N s". Fails with unexpected_message when the replicator is
    /// already running. \note Thread-safe; not from a callback.
    Status sync_once(std::chrono::milliseconds timeout);

    /// The current status (a copy). \note Thread-safe.
    ReplicatorStatus status() const;
    /// True between start() and the end of the sync (or stop()). \note Thread-safe.
    bool running() const;
    /// The replica being synced. \note Thread-safe.
    const std::shared_ptr<Replica>& replica() const noexcept;

private:
    struct Impl;
    std::unique_ptr<Impl> m_impl;
};

}  // namespace fieldsync
