// The sync service: one authenticated device session, sans I/O (SPEC.md §4-§7).
//
// A SyncSession takes the frames a device sends and returns the frames to send back; it never
// touches a socket. It runs on the store's writer thread (StoreWorker), inside the group
// transaction that the worker commits before any reply leaves: a push is acknowledged only
// after its commit is durable (SPEC.md §4.3). Tests drive it directly with a real store.
//
// Per frame:
//   hello   -> authenticate (password, or a token from an earlier welcome), check protocol and
//              schema versions, bind the device to its replica id (another device claiming the
//              same replica is refused), then welcome; or a fatal error.
//   push    -> per item: schema version supported, record valid against the schema, old and new
//              areas inside the user's scope, no new dot of another replica, no timestamp too
//              far in the future; join into the stored state in a savepoint; record the change
//              in the feed and the audit log; open or close conflicts. A replayed item changes
//              nothing. One push_ack with a result per item.
//   pull    -> one changes page (plus a revoke message for records that moved out of scope);
//              after the last page the session is live: commits by others reach it as notify.
//   digest_request -> the order-independent digest of every record in scope.
// Malformed frames get an error naming the problem; the session goes on unless the error is
// fatal (before hello, or a protocol version mismatch).
//
// Thread-compatible: one thread (the worker) at a time.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "fieldsync/protocol/cbor.hpp"
#include "fieldsync/protocol/hlc.hpp"
#include "fieldsync/protocol/messages.hpp"
#include "fieldsync/protocol/schema.hpp"
#include "fieldsync/server/auth.hpp"
#include "fieldsync/server/store.hpp"

namespace fieldsync::server {

struct SyncLimits {
    std::size_t max_frame_bytes = 4u << 20;
    std::size_t max_batch = 500;  ///< items per push
    std::size_t max_page = 500;   ///< records per changes page
    std::uint64_t max_clock_ahead_ms = 10 * 60 * 1000;
    std::uint32_t oldest_schema_version = 1;  ///< older writes are refused
    std::int64_t token_lifetime_ms = 30ll * 24 * 3600 * 1000;
};

/// Work on one pushed item that needs neither the store nor the session, done before the push
/// reaches the store worker (StoreWorker::frame, on an I/O thread): the canonical encoding of
/// the pushed state and the audit summary it gets if it creates its record, which the worker
/// uses only for a record it does not hold yet (then the stored state is the pushed one); and,
/// when a schema was given, the pushed state's validation and area under that schema.
struct PreparedItem {
    protocol::Bytes encoded;
    std::string created_summary;
    /// Schema::validate_record, then Schema::area_of, of the pushed state: the first error's
    /// message (empty when both passed) ...
    std::string invalid;
    /// ... and the area (when both passed). Meaningful only when PreparedPush::schema_generation
    /// is not 0.
    std::string area;
};
struct PreparedPush {
    std::vector<PreparedItem> items;  ///< one per push item, or none
    /// The SyncContext::schema_generation that `invalid` and `area` were computed under; 0 when
    /// they were not computed.
    std::uint64_t schema_generation = 0;
};

/// What the session wants sent, in order, after the current group commit.
struct SyncOutput {
    std::vector<protocol::Bytes> frames;
    bool close = false;            ///< close the connection after sending `frames`
    std::uint16_t close_code = 0;  ///< WebSocket close code (1000 normal, 1002, 1008, 1009 ...)
    std::string close_reason;
    bool wrote = false;  ///< this frame changed the store (the worker must commit)
    /// The handled message (a push: the states of the records it created) and its
    /// PreparedPush (their encodings and audit summaries), handed on so that whoever delivers
    /// this output frees them, off the store worker's thread: they were allocated by an I/O
    /// thread, and freeing another thread's memory waits on that thread's malloc arena, which
    /// profiles showed as the worker's most frequent wait. Never read.
    std::optional<protocol::Message> retired;
    PreparedPush retired_prepared;
};

/// Everything a session needs from the server, owned by the StoreWorker.
struct SyncContext {
    Store* store = nullptr;                    ///< the writer connection
    const protocol::Schema* schema = nullptr;  ///< current schema
    std::function<std::uint64_t()> now_ms;     ///< physical time (injected)
    protocol::HybridClock* clock = nullptr;    ///< the server replica's clock
    LoginThrottle* throttle = nullptr;
    struct WorkerStats* stats = nullptr;  ///< optional counters
    SyncLimits limits;
    /// Areas (old and new) of records changed in the current group; the worker uses them to
    /// wake only the live sessions whose scope they touch, then clears them.
    std::vector<std::string> touched_areas;
    /// Which schema `*schema` is: the StoreWorker counts its schemas from 1 and changes this
    /// with the schema. A push prepared under the same number (PreparedPush::schema_generation)
    /// is not validated again. 0: never trust a prepared validation.
    std::uint64_t schema_generation = 0;
};

class SyncSession {
public:
    /// `peer` names the remote address for the login throttle and logs.
    SyncSession(SyncContext& ctx, std::string peer);

    /// Handles one binary frame from the device: decode(frame, limits) then handle(message).
    SyncOutput handle(protocol::ByteView frame);
    /// Decodes a device's frame under the session limits (no session state: any thread may
    /// call it, so the I/O threads decode while the store worker applies).
    static protocol::Result<protocol::Message> decode(protocol::ByteView frame,
                                                      const SyncLimits& limits);
    /// Prepares a decoded push (see PreparedItem); empty for any other message and for a
    /// push of more than `max_batch` items (refused anyway). With a `schema` (not null), also
    /// validates each pushed state under it and records `schema_generation`, the number the
    /// worker gives that schema (SyncContext::schema_generation). No session state: any thread
    /// may call it; `schema` must not change during the call.
    static PreparedPush prepare(const protocol::Message& message, std::size_t max_batch,
                                const protocol::Schema* schema = nullptr,
                                std::uint64_t schema_generation = 0);
    /// Handles one decoded frame (or the error that decoding it gave), with prepare()'s result
    /// for it (or nothing: the work is then done here). The message is handed back in
    /// SyncOutput::retired, so that the thread that delivers the output frees it.
    SyncOutput handle(protocol::Result<protocol::Message>&& message, PreparedPush&& prepared = {});
    /// After a commit by anyone: if this session is live, the frames that bring it up to date
    /// (notify and revoke). Empty when there is nothing new in its scope.
    SyncOutput catch_up();
    /// After a commit that changed this session's user (StoreWorker::user_changed): reloads the
    /// account. Disabled, deleted, or its password changed (which revokes every token): a fatal
    /// `unauthenticated`, so a stolen or retired tablet stops syncing at once rather than at its
    /// next connection. Areas changed: a fatal `rebootstrap_required`, so the device reconnects
    /// and re-bootstraps under its new scope (SPEC.md §4.5). Otherwise (role or display name
    /// only) the session goes on with the fresh account; the output is then empty.
    SyncOutput recheck_user();

    bool authenticated() const noexcept { return m_user.has_value(); }
    bool live() const noexcept { return m_live; }
    const std::optional<User>& user() const noexcept { return m_user; }
    const Scope& scope() const noexcept { return m_scope; }
    const std::string& device_id() const noexcept { return m_device_id; }

private:
    SyncOutput on_hello(const protocol::Hello& h);
    SyncOutput on_push(protocol::Push& push, PreparedPush& prepared);
    /// One push item inside its savepoint: true when it changed the store, false for a replay,
    /// or the reason it was refused (internal = the store failed).
    Result<bool> apply_item(const protocol::PushItem& item, PreparedItem* prepared,
                            std::uint64_t prepared_generation, const std::string& where,
                            std::uint64_t now);
    /// The checks of SPEC.md §4.4 on the writes `rec` brings that `known` does not cover:
    /// only the session's replica introduces writes, signed by the session's user, stamped
    /// within the clock bound (whose newest stamp the server clock observes). The refusal, or
    /// nullopt.
    std::optional<protocol::Error> check_introduced(const protocol::RecordState& rec,
                                                    const protocol::VersionVector& known,
                                                    std::uint64_t now);
    /// Appends the audit entry of the write `seq` of `rec` by this session. `summary` is
    /// lent: it is moved into the entry and back.
    Status append_audit(std::uint64_t seq, std::uint64_t now, const protocol::RecordState& rec,
                        std::string& summary);
    Status reconcile(const protocol::RecordState& joined, const std::string& area,
                     const std::string& by, std::uint64_t now);
    SyncOutput on_pull(const protocol::Pull& pull);
    Result<std::pair<std::uint64_t, bool>> page_since(std::uint64_t since, std::size_t limit,
                                                      SyncOutput& out, bool live);
    SyncOutput on_digest();

    SyncContext& m_ctx;
    std::string m_peer;
    std::optional<User> m_user;
    Scope m_scope;
    std::string m_device_id;
    protocol::ReplicaId m_replica;
    std::string m_scope_signature;  ///< the scope of this session, as stored for devices
    bool m_scope_settled = true;    ///< no re-bootstrap owed, or a pull from 0 has begun
    std::uint64_t m_cursor = 0;     ///< what this session has been sent up to
    bool m_live = false;
};

}  // namespace fieldsync::server
