// The client side of the sync protocol, sans I/O. Contract and session outline:
// fieldsync/sync_engine.hpp; protocol: protocol/SPEC.md §4-§7.
//
// The engine keeps at most one request in flight (hello, one push, one pull or one
// digest_request) and decides the next one in advance(), in this order of priority:
//
//   1. a push round is open (after welcome, after push_pending(), after a restamp): push the
//      next batch of eligible outbox records (pending, not tried in this session unless written
//      again since);
//   2. a re-bootstrap is wanted: persist it (cursor 0, every record unmarked) and pull;
//   3. a pull is needed (after welcome, `more`, a notify gap, a digest at a newer cursor): pull
//      from the stored cursor;
//   4. caught up (live): apply queued revoke/notify frames in arrival order (a notify whose
//      `since` is not the stored cursor starts a pull instead);
//   5. a digest check is wanted and nothing is pending: digest_request.
//
// Replies are matched to the request in flight; anything else out of place is a protocol
// error that ends the session (the transport reconnects; every step is idempotent).
// rebootstrap_required is special: the server sends it either right after welcome (then any
// pull already sent is still answered) or as the answer to a pull.
#include "fieldsync/sync_engine.hpp"

#include <algorithm>
#include <deque>
#include <map>
#include <variant>

#include "fieldsync/protocol/messages.hpp"
#include "replica_impl.hpp"

namespace fieldsync {

namespace p = fieldsync::protocol;

const char* to_string(SyncPhase phase) noexcept {
    switch (phase) {
        case SyncPhase::idle:
            return "idle";
        case SyncPhase::connecting:
            return "connecting";
        case SyncPhase::authenticating:
            return "authenticating";
        case SyncPhase::pushing:
            return "pushing";
        case SyncPhase::pulling:
            return "pulling";
        case SyncPhase::live:
            return "live";
        case SyncPhase::error:
            return "error";
    }
    return "unknown";
}

const char* to_string(SyncEventKind k) noexcept {
    switch (k) {
        case SyncEventKind::phase_changed:
            return "phase_changed";
        case SyncEventKind::pushed:
            return "pushed";
        case SyncEventKind::rejected:
            return "rejected";
        case SyncEventKind::restamped:
            return "restamped";
        case SyncEventKind::pulled:
            return "pulled";
        case SyncEventKind::revoked:
            return "revoked";
        case SyncEventKind::schema_updated:
            return "schema_updated";
        case SyncEventKind::rebootstrap_started:
            return "rebootstrap_started";
        case SyncEventKind::rebootstrap_finished:
            return "rebootstrap_finished";
        case SyncEventKind::digest_matched:
            return "digest_matched";
        case SyncEventKind::digest_mismatch:
            return "digest_mismatch";
        case SyncEventKind::error:
            return "error";
    }
    return "unknown";
}

namespace {
constexpr std::uint64_t default_max_frame = 4u << 20;
constexpr int max_drift_restamps = 2;  // per record and session
constexpr int max_digest_attempts = 3;
}  // namespace

struct SyncEngine::State {
    std::shared_ptr<Replica> replica;
    detail::ReplicaImpl& impl;
    EngineOptions options;
    SyncProgress progress;

    // Session.
    bool session = false;        // start() called, not ended
    bool authenticated = false;  // welcome received
    bool used_token = false;
    std::uint64_t max_batch = 1;
    std::uint64_t max_frame = default_max_frame;
    std::uint64_t frames_after_welcome = 0;
    std::uint64_t cursor = 0;  // mirror of the stored cursor
    bool live = false;
    bool push_round = false;
    bool need_pull = false;
    bool pull_completed = false;
    bool rebootstrap_wanted = false;
    bool rebootstrap_running = false;
    bool digest_wanted = false;
    int digest_attempts = 0;
    std::optional<p::Digest> digest_target;
    // A page received while the next pull is already out (EngineOptions::pipeline_pulls).
    std::optional<p::Changes> deferred;
    bool deferred_rebootstrap = false;

    // Requests in flight.
    std::optional<std::uint64_t> hello_sent_at;
    struct PushInFlight {
        std::uint64_t batch = 0;
        std::vector<PushCandidate> items;
        std::uint64_t sent_at = 0;
    };
    std::optional<PushInFlight> push;
    struct PullInFlight {
        std::uint64_t since = 0;
        bool rebootstrap = false;
        std::uint64_t sent_at = 0;
    };
    std::optional<PullInFlight> pull;
    std::optional<std::uint64_t> digest_sent_at;
    std::uint64_t next_batch = 1;

    std::map<RecordKey, std::uint64_t> tried;  // pushed this session, at this change number
    std::map<RecordKey, int> drift_restamps;
    std::deque<std::variant<p::Notify, p::Revoke>> queue;

    State(std::shared_ptr<Replica> r, EngineOptions o)
        : replica(std::move(r)),
          impl(detail::ReplicaAccess::impl(*replica)),
          options(std::move(o)) {}

    std::uint64_t now() const { return options.clock ? options.clock() : impl.corrected_now(); }
    bool in_flight() const { return hello_sent_at || push || pull || digest_sent_at; }

    // --- Output helpers

    void emit(EngineOutput& out, SyncEventKind kind, std::uint64_t count = 0,
              std::string message = {}, std::optional<Error> error = {}) {
        SyncEvent e;
        e.kind = kind;
        e.count = count;
        e.message = std::move(message);
        e.error = std::move(error);
        e.progress = progress;
        out.events.push_back(std::move(e));
    }

    void set_phase(EngineOutput& out, SyncPhase phase) {
        if (progress.phase == phase) return;
        progress.phase = phase;
        emit(out, SyncEventKind::phase_changed, 0, to_string(phase));
    }

    void send(EngineOutput& out, const p::Message& m) {
        out.frames.push_back(p::encode_message(m));
    }

    void end_session() {
        session = false;
        authenticated = false;
        live = false;
        push_round = need_pull = pull_completed = false;
        rebootstrap_wanted = rebootstrap_running = false;
        digest_wanted = false;
        digest_target.reset();
        hello_sent_at.reset();
        push.reset();
        pull.reset();
        deferred.reset();
        digest_sent_at.reset();
        tried.clear();
        drift_restamps.clear();
        queue.clear();
    }

    /// Ends the session with an error: stored in the replica, reported, connection closed.
    void fail(EngineOutput& out, Error e) {
        progress.last_error = e;
        impl.record_error(e);
        emit(out, SyncEventKind::error, 0, e.message, e);
        set_phase(out, SyncPhase::error);
        out.close = true;
        out.close_reason = e.message;
        end_session();
    }

    /// A non-fatal problem: reported and stored, the session goes on.
    void warn(EngineOutput& out, Error e) {
        progress.last_error = e;
        impl.record_error(e);
        emit(out, SyncEventKind::error, 0, e.message, e);
    }

    /// The server broke the protocol: tell it (SPEC.md §5.10) and end the session.
    void protocol_violation(EngineOutput& out, p::protocol_errc code, std::string message) {
        Error e{code, std::move(message)};
        send(out, p::make_error_message(e, true));
        fail(out, std::move(e));
    }

    // --- Steps

    void advance(EngineOutput& out);
    void apply_revoke(EngineOutput& out, const p::Revoke& r);
    bool apply_notify(EngineOutput& out, const p::Notify& n);
    void compare_digest(EngineOutput& out, const p::Digest& d);

    void on_welcome(EngineOutput& out, const p::Welcome& w);
    void on_push_ack(EngineOutput& out, const p::PushAck& a);
    void on_changes(EngineOutput& out, p::Changes& c);
    void apply_page(EngineOutput& out, const p::Changes& c, bool was_rebootstrap);
    /// Applies the kept page, if any (every entry point calls it first: pages apply in order).
    void flush_deferred(EngineOutput& out) {
        if (!deferred) return;
        p::Changes c = std::move(*deferred);
        deferred.reset();
        apply_page(out, c, deferred_rebootstrap);
        out.retired.push_back(std::move(c));  // freed by the caller, on a thread of its choice
    }
    void on_digest(EngineOutput& out, const p::Digest& d);
    void on_error(EngineOutput& out, const p::ErrorMessage& e);
};

// ---------------------------------------------------------------------------------------------
// Deciding what to send next

void SyncEngine::State::advance(EngineOutput& out) {
    for (int guard = 0; guard < 100000; ++guard) {
        if (!authenticated || in_flight()) return;

        if (push_round) {
            auto sel = impl.select_push(max_batch, max_frame, tried);
            if (!sel) return fail(out, sel.error());
            if (sel->restamped > 0)
                emit(out, SyncEventKind::restamped, sel->restamped,
                     "stamped too far ahead of the corrected clock");
            if (!sel->too_large.empty()) {
                progress.rejected += sel->too_large.size();
                emit(out, SyncEventKind::rejected, sel->too_large.size(),
                     "larger than the server's frame limit");
            }
            if (!sel->items.empty()) {
                p::Push msg;
                msg.batch = next_batch++;
                for (const auto& c : sel->items) {
                    msg.items.push_back(p::PushItem{c.schema_version, c.state});
                    tried[c.key] = c.change;
                }
                send(out, msg);
                auto pending = impl.outbox_count();
                progress.push_total =
                    progress.pushed + progress.rejected + (pending ? *pending : sel->items.size());
                push = PushInFlight{msg.batch, std::move(sel->items), now()};
                set_phase(out, SyncPhase::pushing);
                return;
            }
            push_round = false;
        }

        if (rebootstrap_wanted && !rebootstrap_running) {
            if (auto st = impl.begin_rebootstrap(); !st) return fail(out, st.error());
            rebootstrap_running = true;
            progress.rebootstrap = true;
            cursor = progress.cursor = 0;
            need_pull = true;
            queue.clear();  // the full pull covers whatever they held
            emit(out, SyncEventKind::rebootstrap_started, 0,
                 "pulling the whole scope again from cursor 0");
        }

        if (need_pull) {
            send(out, p::Pull{cursor, std::max<std::uint64_t>(options.page_size, 1)});
            pull = PullInFlight{cursor, rebootstrap_running, now()};
            set_phase(out, SyncPhase::pulling);
            return;
        }

        // Caught up.
        if (pull_completed) {
            pull_completed = false;
            impl.record_sync_completed();
            progress.last_error.reset();
        }
        live = true;
        set_phase(out, SyncPhase::live);

        if (!queue.empty()) {
            auto item = std::move(queue.front());
            queue.pop_front();
            if (auto* r = std::get_if<p::Revoke>(&item)) {
                apply_revoke(out, *r);
            } else if (!apply_notify(out, std::get<p::Notify>(item))) {
                return;  // failed
            }
            continue;
        }

        if (digest_target) {
            const p::Digest d = *digest_target;
            digest_target.reset();
            if (cursor == d.cursor) {
                compare_digest(out, d);
            } else if (++digest_attempts < max_digest_attempts) {
                digest_wanted = true;  // the feed moved on: ask again
            } else {
                warn(out, Error{p::protocol_errc::busy,
                                "digest check skipped: the server's feed kept moving"});
            }
            continue;
        }

        if (digest_wanted) {
            auto local = impl.local_digest();
            if (!local) return fail(out, local.error());
            auto pending = impl.outbox_count();
            if (!pending) return fail(out, pending.error());
            if (*pending > 0) {
                push_round = true;  // upload first, then compare
                continue;
            }
            digest_wanted = false;
            if (local->outbox > 0) {
                warn(out, Error{p::protocol_errc::rebootstrap_required,
                                "digest check skipped: " + std::to_string(local->outbox) +
                                    " records were rejected by the server and differ from it"});
                continue;
            }
            send(out, p::DigestRequest{});
            digest_sent_at = now();
            return;
        }
        return;
    }
}

void SyncEngine::State::apply_revoke(EngineOutput& out, const p::Revoke& r) {
    auto res = impl.revoke(r.records);
    if (!res) return fail(out, res.error());
    progress.revoked += res->removed;
    std::string msg = std::to_string(res->removed) + " records left your scope and were removed";
    if (res->had_pending > 0)
        msg += "; " + std::to_string(res->had_pending) +
               " of them had changes not uploaded, which the server would refuse (out of scope)";
    emit(out, SyncEventKind::revoked, res->removed, std::move(msg));
}

bool SyncEngine::State::apply_notify(EngineOutput& out, const p::Notify& n) {
    if (n.since != cursor) {
        if (n.cursor <= cursor) return true;  // already have these changes
        // A gap: something between our cursor and n.since never arrived (SPEC.md §4.6).
        need_pull = true;
        queue.clear();
        return true;
    }
    auto res = impl.apply_remote(n.items, n.cursor);
    if (!res) {
        fail(out, res.error());
        return false;
    }
    cursor = progress.cursor = n.cursor;
    progress.pulled += res->joined;
    if (res->joined > 0) emit(out, SyncEventKind::pulled, res->joined, "notify");
    return true;
}

void SyncEngine::State::compare_digest(EngineOutput& out, const p::Digest& d) {
    auto local = impl.local_digest();
    if (!local) return fail(out, local.error());
    if (local->outbox > 0) return;  // a write arrived meanwhile: meaningless now
    if (local->count == d.count && local->digest == d.digest) {
        emit(out, SyncEventKind::digest_matched, d.count,
             "the replica holds exactly the server's " + std::to_string(d.count) + " records");
        return;
    }
    emit(out, SyncEventKind::digest_mismatch, local->count,
         "the replica differs from the server at cursor " + std::to_string(d.cursor) + " (" +
             std::to_string(local->count) + " local records, " + std::to_string(d.count) +
             " on the server): repairing by pulling everything again");
    rebootstrap_wanted = true;
}

// ---------------------------------------------------------------------------------------------
// Incoming messages

void SyncEngine::State::on_welcome(EngineOutput& out, const p::Welcome& w) {
    if (authenticated || !hello_sent_at)
        return protocol_violation(out, p::protocol_errc::unexpected_message,
                                  "welcome: this session already received one");
    if (w.version < options.min_version || w.version > p::protocol_version)
        return fail(
            out, Error{p::protocol_errc::unsupported_version,
                       "welcome.v: the server chose protocol version " + std::to_string(w.version) +
                           ", but this SDK speaks " + std::to_string(options.min_version) + ".." +
                           std::to_string(p::protocol_version) + ": update the app"});
    auto hs = impl.hello_state();
    if (!hs) return fail(out, hs.error());
    if (!hs->user.empty() && hs->user != w.user && hs->outbox > 0)
        return fail(out, Error{p::protocol_errc::forbidden,
                               "this tablet holds " + std::to_string(hs->outbox) +
                                   " records with changes by " + hs->user +
                                   " that are not uploaded yet; sign in as " + hs->user +
                                   " to upload them before " + w.user + " uses this replica"});
    auto outcome = impl.begin_session(w);
    if (!outcome) return fail(out, outcome.error());
    if (outcome->schema_error) {
        if (!replica->schema()) return fail(out, *outcome->schema_error);
        warn(out, *outcome->schema_error);
    }
    if (outcome->schema_updated) {
        auto s = replica->schema();
        emit(out, SyncEventKind::schema_updated, s->version(),
             "survey " + s->name() + " version " + std::to_string(s->version()));
    }
    hello_sent_at.reset();
    authenticated = true;
    frames_after_welcome = 0;
    max_batch = std::max<std::uint64_t>(1, w.limits.max_batch
                                               ? std::min(options.max_batch, w.limits.max_batch)
                                               : options.max_batch);
    max_frame = w.limits.max_frame ? w.limits.max_frame : default_max_frame;
    cursor = progress.cursor = hs->cursor;
    rebootstrap_wanted = hs->rebootstrap;  // an interrupted re-bootstrap restarts
    push_round = true;
    need_pull = true;
    auto pending = impl.outbox_count();
    progress.push_total = pending ? *pending : 0;
}

void SyncEngine::State::on_push_ack(EngineOutput& out, const p::PushAck& a) {
    if (!push || a.batch != push->batch)
        return protocol_violation(
            out, p::protocol_errc::unexpected_message,
            "push_ack.batch: " + std::to_string(a.batch) + " does not answer the push in flight");
    if (a.results.size() != push->items.size())
        return protocol_violation(out, p::protocol_errc::invalid_value,
                                  "push_ack.results: " + std::to_string(a.results.size()) +
                                      " results for " + std::to_string(push->items.size()) +
                                      " items");
    if (a.server_time != 0) impl.observe_server_time(a.server_time);
    auto items = std::move(push->items);
    push.reset();
    auto res = impl.apply_push_results(items, a.results);
    if (!res) return fail(out, res.error());
    progress.pushed += res->acked;
    if (res->acked > 0) emit(out, SyncEventKind::pushed, res->acked);
    if (res->rejected > 0) {
        progress.rejected += res->rejected;
        emit(out, SyncEventKind::rejected, res->rejected, res->first_reason);
    }
    if (!res->clock_drift.empty()) {
        std::vector<RecordKey> again;
        for (const auto& k : res->clock_drift)
            if (++drift_restamps[k] <= max_drift_restamps) again.push_back(k);
        if (!again.empty()) {
            auto n = impl.restamp(again, /*all_pending=*/true);
            if (!n) return fail(out, n.error());
            if (*n > 0)
                emit(out, SyncEventKind::restamped, *n,
                     "the server found them stamped too far ahead: restamped with the corrected "
                     "clock");
        }
        if (again.size() < res->clock_drift.size())
            warn(out, Error{p::protocol_errc::clock_drift,
                            std::to_string(res->clock_drift.size() - again.size()) +
                                " records are still stamped ahead of the server's clock after "
                                "restamping; they stay pending until the next sync"});
    }
    if (!res->retry_later.empty())
        warn(out, Error{p::protocol_errc::busy,
                        std::to_string(res->retry_later.size()) +
                            " records could not be stored by the server now (busy or internal "
                            "error); they stay pending until the next sync"});
    push_round = true;  // continue the round: more batches, restamped or re-edited records
}

void SyncEngine::State::on_changes(EngineOutput& out, p::Changes& c) {
    if (!pull || c.since != pull->since)
        return protocol_violation(
            out, p::protocol_errc::unexpected_message,
            "changes.since: " + std::to_string(c.since) + " does not answer the pull in flight");
    const bool was_rebootstrap = pull->rebootstrap;
    pull.reset();
    // Only when another page is what advance() would ask for next: a push waiting for its
    // turn or a re-bootstrap to start comes first (their order is advance()'s).
    const bool pull_is_next = !push_round && !(rebootstrap_wanted && !rebootstrap_running);
    if (c.more && options.pipeline_pulls && pull_is_next) {
        // Ask for the next page now; this one is applied by apply_deferred() (or by whichever
        // call comes first) while the server reads the next. The stored cursor moves only when
        // a page is applied, so a session cut in between pulls this page again next time.
        send(out, p::Pull{c.cursor, std::max<std::uint64_t>(options.page_size, 1)});
        pull = PullInFlight{c.cursor, was_rebootstrap, now()};
        deferred = std::move(c);
        deferred_rebootstrap = was_rebootstrap;
        return;
    }
    apply_page(out, c, was_rebootstrap);
}

void SyncEngine::State::apply_page(EngineOutput& out, const p::Changes& c, bool was_rebootstrap) {
    auto res = impl.apply_remote(c.items, c.cursor);
    if (!res) return fail(out, res.error());
    cursor = progress.cursor = c.cursor;
    progress.pulled += res->joined;
    ++progress.pages;
    emit(out, SyncEventKind::pulled, res->joined,
         "page up to cursor " + std::to_string(c.cursor) + (c.more ? ", more to come" : ""));
    need_pull = c.more && !pull;  // a pipelined pull is already out
    if (!c.more) {
        pull_completed = true;
        if (was_rebootstrap && rebootstrap_running) {
            auto dropped = impl.finish_rebootstrap();
            if (!dropped) return fail(out, dropped.error());
            rebootstrap_running = rebootstrap_wanted = false;
            progress.rebootstrap = false;
            push_round = true;  // records refused under the old scope are offered again
            tried.clear();
            progress.revoked += *dropped;
            emit(out, SyncEventKind::rebootstrap_finished, *dropped,
                 std::to_string(*dropped) +
                     " local records the server no longer sends were dropped");
        }
    }
}

void SyncEngine::State::on_digest(EngineOutput& out, const p::Digest& d) {
    if (!digest_sent_at)
        return protocol_violation(out, p::protocol_errc::unexpected_message,
                                  "digest: no digest_request is in flight");
    digest_sent_at.reset();
    if (d.cursor > cursor) {
        digest_target = d;  // pull up to the digest's cursor first
        need_pull = true;
        return;
    }
    if (d.cursor == cursor) return compare_digest(out, d);
    // Our cursor moved past the digest's: ask again later (SPEC.md §6.3).
    if (++digest_attempts < max_digest_attempts) digest_wanted = true;
}

void SyncEngine::State::on_error(EngineOutput& out, const p::ErrorMessage& e) {
    const auto code = p::parse_errc(e.code);
    const std::error_code ec =
        code ? p::make_error_code(*code) : p::make_error_code(p::protocol_errc::internal);
    std::string message = "server: " + e.message;
    if (!code) message = "server (" + e.code + "): " + e.message;

    if (code == p::protocol_errc::rebootstrap_required && !e.fatal) {
        // Right after welcome it follows the welcome (a pull already sent is still answered);
        // otherwise it answers the pull in flight (SPEC.md §4.2, §4.5).
        if (frames_after_welcome != 1) pull.reset();
        // Remembered at once: if this session ends before the re-bootstrap begins, the next
        // one must still run it. The server need not ask again (e.g. the areas changed back
        // before this device ever settled under the new ones), yet records it refused meanwhile
        // must be offered again (simulation seed 107).
        if (auto st = impl.request_rebootstrap(); !st) return fail(out, st.error());
        rebootstrap_running = false;
        rebootstrap_wanted = true;
        push_round = true;  // push pending first (SPEC.md §6.2)
        return;
    }
    if (e.fatal) {
        if (code == p::protocol_errc::unauthenticated && used_token) {
            (void)impl.clear_token();
            message +=
                " (the stored session token was refused and forgotten: sign in with user "
                "name and password)";
        }
        return fail(out, Error{ec, message});
    }
    if (code == p::protocol_errc::limit_exceeded && e.ref && push && *e.ref == push->batch) {
        auto items = std::move(push->items);
        push.reset();
        if (items.size() > 1) {
            max_batch = std::max<std::uint64_t>(1, items.size() / 2);
            for (const auto& c : items)
                tried.erase(c.key);
            warn(out, Error{ec, message + " (retrying with batches of " +
                                    std::to_string(max_batch) + ")"});
        } else {
            std::vector<p::ItemResult> results(items.size(),
                                               p::ItemResult{false, e.code, e.message});
            auto res = impl.apply_push_results(items, results);
            if (!res) return fail(out, res.error());
            progress.rejected += res->rejected;
            emit(out, SyncEventKind::rejected, res->rejected, e.message);
        }
        push_round = true;
        return;
    }
    if (in_flight()) {
        // The request in flight will not be answered: end the session, reconnect later.
        return fail(out, Error{ec, message});
    }
    warn(out, Error{ec, message});
}

// ---------------------------------------------------------------------------------------------
// Public members

SyncEngine::SyncEngine(std::shared_ptr<Replica> replica, EngineOptions options)
    : m_state(std::make_unique<State>(std::move(replica), std::move(options))) {}

SyncEngine::~SyncEngine() = default;

EngineOutput SyncEngine::start(const Credentials& credentials, std::string app) {
    State& s = *m_state;
    EngineOutput out;
    if (s.session) s.end_session();
    s.progress = SyncProgress{};
    s.progress.phase = SyncPhase::idle;
    auto hs = s.impl.hello_state();
    if (!hs) {
        s.fail(out, hs.error());
        return out;
    }
    p::Hello h;
    h.version = p::protocol_version;
    h.min_version = std::min(s.options.min_version, p::protocol_version);
    h.device = hs->device;
    h.replica = hs->replica;
    h.app = std::move(app);
    h.schema_version = hs->schema_version;
    h.cursor = hs->cursor;
    h.clock = hs->raw_clock;
    if (!credentials.password.empty()) {
        h.auth = p::PasswordAuth{credentials.user, credentials.password};
        s.used_token = false;
    } else {
        std::string token = credentials.token.empty() ? hs->token : credentials.token;
        if (token.empty()) {
            s.fail(out, Error{p::protocol_errc::unauthenticated,
                              "no credentials: sign in with user name and password (no session "
                              "token is stored on this tablet)"});
            return out;
        }
        h.auth = p::TokenAuth{std::move(token)};
        s.used_token = true;
    }
    s.progress.cursor = s.cursor = hs->cursor;
    s.session = true;
    s.send(out, h);
    s.hello_sent_at = s.now();
    s.set_phase(out, SyncPhase::authenticating);
    return out;
}

DecodedFrame SyncEngine::decode_frame(p::ByteView frame) {
    // The size limit depends on the session (welcome.limits.max_frame): on_decoded checks it.
    p::MessageLimits limits;
    limits.max_frame_bytes = std::max(limits.max_frame_bytes, frame.size());
    return DecodedFrame{p::decode_message(frame, limits), frame.size()};
}

EngineOutput SyncEngine::on_frame(p::ByteView frame) {
    return on_decoded(decode_frame(frame));
}

EngineOutput SyncEngine::on_decoded(DecodedFrame&& frame) {
    State& s = *m_state;
    EngineOutput out;
    if (!s.session) return out;  // a late frame of a session that ended: ignore
    s.flush_deferred(out);
    if (!s.session) return out;  // the kept page failed to apply
    const std::size_t limit =
        std::max<std::size_t>(p::MessageLimits{}.max_frame_bytes, s.max_frame);
    if (frame.bytes > limit) {
        // A page too large for this client: the next session asks for pages half as large
        // (the server bounds pages by records, not bytes), so it does not fail on it forever.
        if (s.pull) s.options.page_size = std::max<std::uint64_t>(1, s.options.page_size / 2);
        s.protocol_violation(out, p::protocol_errc::limit_exceeded,
                             "the server sent a message this client cannot decode: message: "
                             "frame of " +
                                 std::to_string(frame.bytes) + " bytes exceeds the limit of " +
                                 std::to_string(limit) +
                                 (s.pull ? "; the next sync asks for pages half as large" : ""));
        return out;
    }
    auto& decoded = frame.message;
    if (!decoded) {
        s.protocol_violation(
            out, static_cast<p::protocol_errc>(decoded.error().code.value()),
            "the server sent a message this client cannot decode: " + decoded.error().message);
        return out;
    }
    if (s.authenticated) ++s.frames_after_welcome;
    p::Message& m = *decoded;
    if (auto* w = std::get_if<p::Welcome>(&m)) {
        s.on_welcome(out, *w);
    } else if (auto* e = std::get_if<p::ErrorMessage>(&m)) {
        s.on_error(out, *e);
    } else if (!s.authenticated) {
        s.protocol_violation(out, p::protocol_errc::unexpected_message,
                             std::string(p::message_type(m)) + ": expected welcome first");
    } else if (auto* a = std::get_if<p::PushAck>(&m)) {
        s.on_push_ack(out, *a);
    } else if (auto* c = std::get_if<p::Changes>(&m)) {
        s.on_changes(out, *c);
    } else if (auto* n = std::get_if<p::Notify>(&m)) {
        s.queue.emplace_back(std::move(*n));  // applied by advance() when nothing is in flight
    } else if (auto* r = std::get_if<p::Revoke>(&m)) {
        // Part of a pull's reply: apply now (before its page). Live: keep arrival order.
        if (s.pull && s.queue.empty())
            s.apply_revoke(out, *r);
        else
            s.queue.emplace_back(std::move(*r));
    } else if (auto* d = std::get_if<p::Digest>(&m)) {
        s.on_digest(out, *d);
    } else {
        s.protocol_violation(
            out, p::protocol_errc::unexpected_message,
            std::string(p::message_type(m)) + ": a server does not send this message");
    }
    if (s.session) s.advance(out);
    return out;
}

EngineOutput SyncEngine::on_disconnected() {
    State& s = *m_state;
    EngineOutput out;
    s.flush_deferred(out);  // received in full: storing it saves pulling it again
    s.end_session();
    if (s.progress.phase != SyncPhase::error) s.set_phase(out, SyncPhase::idle);
    return out;
}

EngineOutput SyncEngine::tick(std::uint64_t now_ms) {
    State& s = *m_state;
    EngineOutput out;
    if (!s.session) return out;
    s.flush_deferred(out);
    if (!s.session) return out;
    const std::uint64_t limit = s.options.reply_timeout_ms;
    auto late = [&](const std::optional<std::uint64_t>& sent) {
        return sent && now_ms >= *sent && now_ms - *sent >= limit;
    };
    const char* what = nullptr;
    if (late(s.hello_sent_at)) what = "hello";
    if (s.push && late(s.push->sent_at)) what = "push";
    if (s.pull && late(s.pull->sent_at)) what = "pull";
    if (late(s.digest_sent_at)) what = "digest_request";
    if (what)
        s.fail(out, Error{p::protocol_errc::busy, std::string("no reply to ") + what + " within " +
                                                      std::to_string(limit / 1000) +
                                                      " s: reconnect and retry"});
    return out;
}

EngineOutput SyncEngine::push_pending() {
    State& s = *m_state;
    EngineOutput out;
    if (!s.authenticated) return out;
    s.flush_deferred(out);
    if (!s.authenticated) return out;
    s.push_round = true;
    s.advance(out);
    return out;
}

EngineOutput SyncEngine::check_digest() {
    State& s = *m_state;
    EngineOutput out;
    if (!s.authenticated) return out;
    s.flush_deferred(out);
    if (!s.authenticated) return out;
    s.digest_wanted = true;
    s.digest_attempts = 0;
    s.advance(out);
    return out;
}

EngineOutput SyncEngine::apply_deferred() {
    State& s = *m_state;
    EngineOutput out;
    if (!s.session || !s.deferred) return out;
    s.flush_deferred(out);
    if (s.session) s.advance(out);
    return out;
}

bool SyncEngine::has_deferred() const noexcept {
    return m_state->deferred.has_value();
}

SyncProgress SyncEngine::progress() const {
    return m_state->progress;
}
SyncPhase SyncEngine::phase() const noexcept {
    return m_state->progress.phase;
}
const std::shared_ptr<Replica>& SyncEngine::replica() const noexcept {
    return m_state->replica;
}

}  // namespace fieldsync
