// The sync engine: the client side of the sync protocol (protocol/SPEC.md §4-§7) as a state
// machine with no I/O. It never touches a socket, a timer or a thread: a transport feeds it the
// frames that arrive and sends the frames it returns, in order. Tests drive it with scripted
// frames; the WebSocket transport and the replicator (reconnect with backoff) wrap it.
//
// One session, as the engine runs it:
//
//   start()        -> hello {device, replica, auth, schema version, cursor, clock}
//   welcome        -> store user, role, scope, schema (if sent), clock offset, token;
//                     then PUSH: the outbox in batches (<= welcome.limits.max_batch items,
//                     <= max_frame bytes), full record states, one batch in flight
//   push_ack       -> ok and unchanged since pushed: leaves the outbox; edited meanwhile: stays
//                     pending; clock_drift: restamp the record's unacknowledged entries with the
//                     corrected clock and push again; validation_failed / forbidden /
//                     unsupported_version: marked rejected with the reason (kept, visible);
//                     busy / internal: stays pending for the next session
//   (outbox done)  -> PULL from the stored cursor, page by page; each page joined in one
//                     SQLite transaction together with the new cursor
//                     With EngineOptions::pipeline_pulls, a page that says more=true is kept
//                     and the next pull goes out at once; the driver sends it, then calls
//                     apply_deferred(), so the server reads page N+1 while this device stores
//                     page N (at most one page waits; any other call applies it first)
//   revoke         -> those records (and their pending writes) are removed locally
//   changes, more=false -> LIVE: notify pages are applied the same way; a notify whose `since`
//                     is not the stored cursor (a gap) is ignored and the engine pulls from the
//                     stored cursor instead
//   push_pending() -> while live, uploads writes made since (call it after local writes)
//   error rebootstrap_required -> push pending, pull from 0 marking every record received,
//                     then drop local records the full pull did not send and that have nothing
//                     pending (SPEC.md §6.2). The flag is persisted: an interrupted re-bootstrap
//                     restarts from 0 in the next session.
//   check_digest() -> digest_request when nothing is pending; compare with the local digest
//                     at the same cursor; a mismatch is reported and repaired by a re-bootstrap
//
// Downloads are applied only when no push is in flight: the device's own writes are
// acknowledged first, so the UI never shows a state that its own pending write then changes.
// Notifies that arrive meanwhile are queued and applied afterwards.
//
// Errors: a fatal server error, an undecodable frame, a reply timeout (tick) or a server
// message out of place ends the session: the output has close = true, the phase becomes error
// and the error is stored in the replica (SyncInfo::last_error). Reconnecting (a new start()
// after on_disconnected()) is always safe: every step is idempotent.
//
// Threading: not thread-safe. Call every member from one thread at a time (the transport's
// strand or the replicator's thread). The engine calls the Replica, which is thread-safe, so
// the app keeps reading and writing on its own threads; the Replica's observers then run on the
// engine's thread for remote changes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "fieldsync/protocol/cbor.hpp"
#include "fieldsync/protocol/error.hpp"
#include "fieldsync/protocol/hlc.hpp"
#include "fieldsync/protocol/messages.hpp"
#include "fieldsync/replica.hpp"

namespace fieldsync {

/// How the engine logs in (SPEC.md §5.1).
struct Credentials {
    std::string user;      ///< user name (for a password login)
    std::string password;  ///< non-empty: log in with user + password (and store the token the
                           ///< server returns; the password itself is never stored)
    std::string token;     ///< used when password is empty; empty: the token stored in the
                           ///< replica by an earlier password login
};

/// Where a session stands.
enum class SyncPhase : std::uint8_t {
    idle = 0,            ///< no session (before start(), after on_disconnected())
    connecting = 1,      ///< reserved for transports: the connection is being opened
    authenticating = 2,  ///< hello sent, waiting for welcome
    pushing = 3,         ///< uploading the outbox
    pulling = 4,         ///< downloading pages
    live = 5,            ///< caught up; changes arrive as notify
    error = 6,           ///< the session failed (see SyncProgress::last_error); close it
};
/// "idle", "connecting", ... \note Thread-safe.
const char* to_string(SyncPhase p) noexcept;

/// Progress of the current session (counters restart at start()).
struct SyncProgress {
    SyncPhase phase = SyncPhase::idle;
    std::uint64_t pushed = 0;         ///< records acknowledged by the server
    std::uint64_t push_total = 0;     ///< records pending when the push phase began, plus writes
                                      ///< made while it ran
    std::uint64_t rejected = 0;       ///< records the server refused in this session
    std::uint64_t pulled = 0;         ///< record states received (pages and notify)
    std::uint64_t pages = 0;          ///< changes pages received
    std::uint64_t revoked = 0;        ///< records removed by revoke or re-bootstrap
    std::uint64_t cursor = 0;         ///< the stored pull cursor
    bool rebootstrap = false;         ///< a re-bootstrap is in progress
    std::optional<Error> last_error;  ///< the last error of this session (code + message)
};

/// What happened; SyncEngine returns these with each step.
enum class SyncEventKind : std::uint8_t {
    phase_changed = 0,   ///< progress.phase is new
    pushed = 1,          ///< `count` records acknowledged
    rejected = 2,        ///< `count` records refused (message: the first reason)
    restamped = 3,       ///< `count` records restamped after clock drift
    pulled = 4,          ///< `count` record states joined (a page or a notify)
    revoked = 5,         ///< `count` records removed (message says how many had pending writes)
    schema_updated = 6,  ///< the replica adopted a new schema (message: its version)
    rebootstrap_started = 7,
    rebootstrap_finished = 8,  ///< `count` local records dropped as no longer in scope
    digest_matched = 9,        ///< the local digest equals the server's
    digest_mismatch = 10,      ///< it did not; a re-bootstrap repairs it
    error = 11,                ///< `error` is set
};
/// "phase_changed", ... \note Thread-safe.
const char* to_string(SyncEventKind k) noexcept;

struct SyncEvent {
    SyncEventKind kind = SyncEventKind::phase_changed;
    std::uint64_t count = 0;
    std::string message;
    std::optional<Error> error;
    SyncProgress progress;  ///< progress after the event
};

/// What the transport must do after one engine step.
struct EngineOutput {
    std::vector<protocol::Bytes> frames;  ///< send as binary frames, in this order
    std::vector<SyncEvent> events;        ///< for the app (progress UI, logs)
    bool close = false;                   ///< close the connection after sending `frames`
    std::string close_reason;             ///< why (for logs and the WebSocket close frame)
    /// Pull pages the engine has stored and no longer needs. Destroy them on any thread; the
    /// Replicator hands them to its transport's thread, which decoded them (freeing a page is
    /// a large part of storing it, and belongs off the engine's thread).
    std::vector<protocol::Changes> retired;
};

/// Options of a SyncEngine.
struct EngineOptions {
    std::uint64_t page_size = 500;  ///< records asked per pull page (the server may send fewer)
    /// Ask for the next page before the one received is applied (see the header comment and
    /// apply_deferred()). Off by default so that a driver that does not call apply_deferred()
    /// sees each page applied within on_frame(); the Replicator turns it on.
    bool pipeline_pulls = false;
    std::uint64_t max_batch = 200;  ///< most items per push (also bounded by the server's)
    std::uint64_t reply_timeout_ms = 60'000;  ///< a request unanswered this long fails (tick)
    /// Monotonic-enough milliseconds for reply deadlines; compared with tick(now_ms). Empty:
    /// the replica's clock (device clock + offset).
    protocol::ClockSource clock;
    /// The protocol version range offered in hello (SPEC.md §8).
    std::uint64_t min_version = 1;
};

/// A frame from the server decoded away from the engine's thread (SyncEngine::decode_frame).
struct DecodedFrame {
    protocol::Result<protocol::Message> message;  ///< the message, or why it did not decode
    std::size_t bytes = 0;                        ///< the frame's size (checked by the engine)
};

class SyncEngine {
public:
    /// Binds the engine to a replica (shared with the app). \note Thread-safe.
    explicit SyncEngine(std::shared_ptr<Replica> replica, EngineOptions options = {});
    ~SyncEngine();
    SyncEngine(const SyncEngine&) = delete;
    SyncEngine& operator=(const SyncEngine&) = delete;

    /// Starts a session on a freshly opened connection. `app` is the app name and version
    /// (hello.app). Success: the output holds the hello frame; phase authenticating.
    /// Failure (reported in the output, with close = true and phase error): no credentials
    /// (no password, no token given and none stored), or the replica failed (internal).
    /// Calling start() while a session runs first ends it (as on_disconnected(), except that
    /// a page kept by pipeline_pulls is dropped unapplied: the new session pulls it again).
    EngineOutput start(const Credentials& credentials, std::string app);
    /// Handles one binary frame from the server and returns what to send next. The same as
    /// on_decoded(decode_frame(frame)).
    EngineOutput on_frame(protocol::ByteView frame);
    /// Decodes one frame from the server; touches no engine, so any thread may call it (the
    /// transport's thread decodes the next page while the engine's thread stores this one).
    /// Never fails: a frame that does not decode carries its error to on_decoded().
    static DecodedFrame decode_frame(protocol::ByteView frame);
    /// on_frame() for a frame already decoded by decode_frame(): the frame size limit of the
    /// session, then the message, exactly as on_frame().
    EngineOutput on_decoded(DecodedFrame&& frame);
    /// The connection dropped (or was closed). Requests in flight are forgotten; their records
    /// stay pending and are pushed again next session (joining twice changes nothing).
    /// Phase becomes idle (error stays error).
    EngineOutput on_disconnected();
    /// Checks reply deadlines against `now_ms` (same clock as EngineOptions::clock). Call it
    /// every few seconds while connected. A missed deadline fails the session (close = true).
    EngineOutput tick(std::uint64_t now_ms);
    /// Uploads writes made since the last push round. Call after local writes (e.g. from a
    /// Replica observer, posted to the engine's thread). Does nothing unless the session is
    /// live (pushes already run at the start of every session).
    EngineOutput push_pending();
    /// Asks the server for its scope digest and compares (SPEC.md §6.3); waits until nothing
    /// is pending and no request is in flight. The result arrives as digest_matched or
    /// digest_mismatch. Only while a session runs; otherwise does nothing.
    EngineOutput check_digest();
    /// Applies the page kept back by pipeline_pulls (see EngineOptions), if any, and returns
    /// what follows from it (events; frames when it was the last step before live). Call it
    /// right after sending the frames of the on_frame() that kept it. Does nothing otherwise.
    /// Every other member but start() applies a kept page first, so pages are always applied
    /// in order; a page that fails to apply fails the session like any other store error.
    EngineOutput apply_deferred();
    /// True while a received page waits for apply_deferred(). \note Call on the engine's thread.
    bool has_deferred() const noexcept;

    /// The current progress (a copy). \note Call on the engine's thread.
    SyncProgress progress() const;
    /// progress().phase without the copy. \note Call on the engine's thread.
    SyncPhase phase() const noexcept;
    /// The replica this engine syncs (set at construction, never changes). \note Thread-safe.
    const std::shared_ptr<Replica>& replica() const noexcept;

private:
    struct State;
    std::unique_ptr<State> m_state;
};

}  // namespace fieldsync
