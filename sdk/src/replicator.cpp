// The replicator: SyncEngine + Transport + one thread. Contract: fieldsync/replicator.hpp.
//
// Everything that decides runs on the replicator's thread, in run(): the engine (not
// thread-safe) and the transport's send/close (called from one thread). Other threads only
// touch `Shared` under its mutex:
//
//   transport delegate --(opened / frame / closed, tagged with the connection's generation)--+
//   replica observer   --(local_change)--------------------------------------------------+  |
//   stop() / retry_now() --(flags)-----------------------------------------------------+  |  |
//                                                                                       v  v  v
//                               run(): wait_until(next deadline) -> handle flags and events
//
// Generations: each connection attempt gets a new number, and its delegate tags every event
// with it; events of an older connection (a transport that reports after it was replaced) are
// dropped. A connection goes none -> connecting -> open -> closing -> none; its transport is
// destroyed on this thread once on_closed arrived (or close_timeout_ms after close()).
//
// One-shot completion: when the engine is live (outbox round done, pull caught up), the
// replicator asks once more for writes made meanwhile (push_pending); if there are none, the
// sync is complete and the connection is closed with 1000.
#include "fieldsync/replicator.hpp"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <iterator>
#include <mutex>
#include <random>
#include <thread>

namespace fieldsync {

namespace p = fieldsync::protocol;
using Clock = std::chrono::steady_clock;

const char* to_string(ReplicatorState s) noexcept {
    switch (s) {
        case ReplicatorState::stopped:
            return "stopped";
        case ReplicatorState::connecting:
            return "connecting";
        case ReplicatorState::authenticating:
            return "authenticating";
        case ReplicatorState::pushing:
            return "pushing";
        case ReplicatorState::pulling:
            return "pulling";
        case ReplicatorState::idle:
            return "idle";
        case ReplicatorState::offline:
            return "offline";
    }
    return "unknown";
}

bool is_permanent_sync_error(const Error& e) {
    return e.code == p::protocol_errc::unauthenticated ||
           e.code == p::protocol_errc::unsupported_version ||
           e.code == p::protocol_errc::replica_conflict || e.code == p::protocol_errc::forbidden ||
           e.code == transport_errc::invalid_url;
}

namespace {

struct TransportEvent {
    enum Kind { opened, frame, closed } kind = opened;
    std::uint64_t generation = 0;
    std::optional<DecodedFrame> decoded;  ///< a frame, decoded on the transport's thread
    TransportClose close;
};

/// What other threads share with the replicator's thread.
struct Shared {
    std::mutex mutex;
    std::condition_variable wake;  ///< new event or flag for the replicator's thread
    std::condition_variable done;  ///< the run finished (sync_once waits on it)
    std::deque<TransportEvent> events;
    /// Pull pages stored by the engine (EngineOutput::retired), freed by the transport's
    /// thread at its next frame: it allocated them when it decoded them.
    std::vector<p::Changes> retired;
    bool stop = false;
    bool local_change = false;
    bool retry_now = false;
    bool running = false;
    ReplicatorStatus status;
    Status result;  ///< outcome of the last run
};

class Delegate final : public TransportDelegate {
public:
    Delegate(std::shared_ptr<Shared> shared, std::uint64_t generation)
        : m_shared(std::move(shared)), m_generation(generation) {}
    void on_open() override { push(TransportEvent{TransportEvent::opened, m_generation, {}, {}}); }
    void on_frame(p::ByteView frame) override {
        // Pages the replicator has stored are freed here, outside the lock.
        std::vector<p::Changes> retired;
        {
            std::lock_guard lock(m_shared->mutex);
            retired.swap(m_shared->retired);
        }
        retired.clear();
        // Decoded here, on the transport's thread, while the replicator's thread applies the
        // previous page (SyncEngine::decode_frame).
        push(TransportEvent{
            TransportEvent::frame, m_generation, SyncEngine::decode_frame(frame), {}});
    }
    void on_closed(const TransportClose& close) override {
        push(TransportEvent{TransportEvent::closed, m_generation, {}, close});
    }

private:
    void push(TransportEvent e) {
        std::lock_guard lock(m_shared->mutex);
        m_shared->events.push_back(std::move(e));
        m_shared->wake.notify_all();
    }
    std::shared_ptr<Shared> m_shared;
    std::uint64_t m_generation;
};

std::uint64_t steady_ms() {
    return static_cast<std::uint64_t>(
        std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now().time_since_epoch())
            .count());
}

bool same_error(const std::optional<Error>& a, const std::optional<Error>& b) {
    if (a.has_value() != b.has_value()) return false;
    return !a || (a->code == b->code && a->message == b->message);
}

bool same_status(const ReplicatorStatus& a, const ReplicatorStatus& b) {
    return a.state == b.state && a.pushed == b.pushed && a.push_total == b.push_total &&
           a.rejected == b.rejected && a.pulled == b.pulled && a.pages == b.pages &&
           a.revoked == b.revoked && a.cursor == b.cursor && a.pending == b.pending &&
           a.attempt == b.attempt && a.retry_in_ms == b.retry_in_ms &&
           a.up_to_date == b.up_to_date && same_error(a.last_error, b.last_error);
}

}  // namespace

/// Everything a replicator holds (Replicator::Impl is this; the name is private).
struct ReplicatorCore {
    std::shared_ptr<Replica> replica;
    ReplicatorOptions options;
    std::shared_ptr<Shared> shared = std::make_shared<Shared>();
    std::thread thread;      // guarded by start_mutex
    std::mutex start_mutex;  // serializes start/stop/sync_once
    std::atomic<std::thread::id> thread_id{};

    ReplicatorCore(std::shared_ptr<Replica> r, ReplicatorOptions o)
        : replica(std::move(r)), options(std::move(o)) {
        if (!options.transport) options.transport = websocket_transport_factory(options.websocket);
        if (!options.permanent) options.permanent = is_permanent_sync_error;
        if (!options.engine.clock) options.engine.clock = steady_ms;
        options.engine.pipeline_pulls = true;  // run() calls apply_deferred()
        options.tick_interval_ms = std::max<std::uint32_t>(options.tick_interval_ms, 10);
    }

    /// Starts the thread; the caller holds start_mutex.
    void launch(ReplicatorMode mode) {
        if (thread.joinable()) thread.join();  // a run that finished by itself
        {
            std::lock_guard lock(shared->mutex);
            shared->stop = false;
            shared->retry_now = false;
            shared->local_change = false;
            shared->events.clear();
            shared->running = true;
            shared->result = Status{};
        }
        thread = std::thread([this, mode] {
            thread_id = std::this_thread::get_id();
            run(mode);
        });
    }

    /// Requests the stop and joins; the caller holds start_mutex.
    void halt() {
        {
            std::lock_guard lock(shared->mutex);
            shared->stop = true;
            shared->wake.notify_all();
        }
        if (thread.joinable()) thread.join();
    }

    void run(ReplicatorMode mode);
};

struct Replicator::Impl : ReplicatorCore {
    using ReplicatorCore::ReplicatorCore;
};

namespace {

/// The per-run state of the replicator's thread.
class Run {
public:
    Run(ReplicatorCore& impl, ReplicatorMode mode)
        : m_impl(impl),
          m_options(impl.options),
          m_shared(*impl.shared),
          m_mode(mode),
          m_engine(impl.replica, impl.options.engine),
          m_random(impl.options.seed ? impl.options.seed : std::random_device{}()) {}

    Status run() {
        auto shared = m_impl.shared;
        const ObserverToken token = m_impl.replica->add_observer([shared](const ChangeNotice& n) {
            if (n.origin != ChangeOrigin::local_write) return;
            std::lock_guard lock(shared->mutex);
            shared->local_change = true;
            shared->wake.notify_all();
        });
        m_status = snapshot();
        m_next_attempt = Clock::now();
        while (!m_done)
            step();
        m_transport.reset();
        m_impl.replica->remove_observer(token);
        m_status.state = ReplicatorState::stopped;
        m_status.retry_in_ms = 0;
        publish(true);
        if (m_final_error) return *m_final_error;
        return Status{};
    }

private:
    enum class Conn { none, connecting, open, closing };

    void step() {
        const auto now = Clock::now();
        if (m_conn == Conn::none && !m_stopping && now >= m_next_attempt) connect();

        // Wait for something to do, or the next deadline.
        auto deadline = now + std::chrono::milliseconds(m_options.tick_interval_ms);
        if (m_conn == Conn::none && !m_stopping) deadline = std::min(deadline, m_next_attempt);
        if (m_conn == Conn::closing) deadline = std::min(deadline, m_close_deadline);
        std::deque<TransportEvent> events;
        bool stop = false, local_change = false, retry = false;
        {
            std::unique_lock lock(m_shared.mutex);
            m_shared.wake.wait_until(lock, deadline, [&] {
                return !m_shared.events.empty() || m_shared.stop || m_shared.local_change ||
                       m_shared.retry_now;
            });
            events.swap(m_shared.events);
            stop = m_shared.stop;
            local_change = std::exchange(m_shared.local_change, false);
            retry = std::exchange(m_shared.retry_now, false);
        }

        if (stop && !m_stopping) begin_stop();
        for (auto& e : events) {
            if (e.generation != m_generation || m_conn == Conn::none) continue;  // stale
            switch (e.kind) {
                case TransportEvent::opened:
                    if (m_conn != Conn::connecting) break;
                    m_conn = Conn::open;
                    apply(m_engine.start(m_options.credentials, m_options.app));
                    break;
                case TransportEvent::frame:
                    if (m_conn == Conn::open) apply(m_engine.on_decoded(std::move(*e.decoded)));
                    // The next pull is on its way (pipeline_pulls): store this page meanwhile.
                    if (m_conn == Conn::open && m_engine.has_deferred())
                        apply(m_engine.apply_deferred());
                    break;
                case TransportEvent::closed:
                    on_closed(e.close);
                    break;
            }
            if (m_done) return;
        }
        if (local_change && m_conn == Conn::open && m_engine.phase() == SyncPhase::live)
            apply(m_engine.push_pending());
        if (m_options.poll_outbox_ms > 0 && m_conn == Conn::open &&
            m_engine.phase() == SyncPhase::live && Clock::now() >= m_next_poll) {
            m_next_poll = Clock::now() + std::chrono::milliseconds(m_options.poll_outbox_ms);
            apply(m_engine.push_pending());
        }
        if (m_conn == Conn::open && Clock::now() >= m_next_tick) {
            m_next_tick = Clock::now() + std::chrono::milliseconds(m_options.tick_interval_ms);
            apply(m_engine.tick(m_options.engine.clock()));
        }
        if (m_conn == Conn::closing && Clock::now() >= m_close_deadline) {
            // The transport did not confirm the close in time: abort it.
            TransportClose c;
            c.code = 1006;
            if (!m_stopping && !m_completed)
                c.error = Error{transport_errc::timeout, "the connection did not close in time"};
            on_closed(c);
        }
        if (retry && m_conn == Conn::none) m_next_attempt = Clock::now();
        if (m_stopping && m_conn == Conn::none) m_done = true;
        publish();
    }

    void connect() {
        ++m_generation;
        m_session_error.reset();
        m_completed = false;
        m_status.state = ReplicatorState::connecting;
        m_status.retry_in_ms = 0;
        publish();
        try {
            m_transport = m_options.transport();
        } catch (const std::exception& e) {
            m_transport.reset();
            m_session_error = Error{transport_errc::connect_failed,
                                    std::string("the transport factory failed: ") + e.what()};
        }
        if (!m_transport) {
            if (!m_session_error)
                m_session_error = Error{transport_errc::connect_failed,
                                        "the transport factory returned no transport"};
            m_conn = Conn::connecting;
            TransportClose c;
            c.error = *m_session_error;
            on_closed(c);
            return;
        }
        m_conn = Conn::connecting;
        m_close_deadline = Clock::time_point::max();
        m_transport->connect(m_options.url, m_options.headers,
                             std::make_shared<Delegate>(m_impl.shared, m_generation));
    }

    void close_connection(std::uint16_t code, std::string reason) {
        if (m_conn != Conn::open && m_conn != Conn::connecting) return;
        m_conn = Conn::closing;
        m_close_deadline = Clock::now() + std::chrono::milliseconds(m_options.close_timeout_ms);
        m_transport->close(code, std::move(reason));
    }

    void begin_stop() {
        m_stopping = true;
        if (m_conn == Conn::open || m_conn == Conn::connecting) {
            apply(m_engine.on_disconnected());
            close_connection(1000, "stopped by the app");
        } else if (m_conn == Conn::none) {
            m_done = true;
        }
    }

    /// Sends the engine's frames, reports its events, closes when it says so.
    void apply(EngineOutput out) {
        if (!out.retired.empty()) {
            // Handed to the transport's thread, which frees them when its next frame arrives
            // (Delegate::on_frame); those no frame comes after are freed when the run ends.
            std::lock_guard lock(m_shared.mutex);
            m_shared.retired.insert(m_shared.retired.end(),
                                    std::make_move_iterator(out.retired.begin()),
                                    std::make_move_iterator(out.retired.end()));
        }
        for (;;) {
            if (m_conn == Conn::open)
                for (auto& f : out.frames)
                    m_transport->send(std::move(f));
            for (const auto& e : out.events) {
                if (e.kind == SyncEventKind::error && e.error) m_session_error = e.error;
                if (m_options.on_event) {
                    try {
                        m_options.on_event(e);
                    } catch (...) {
                    }
                }
            }
            update_from_engine();
            if (out.close) {
                std::uint16_t code = 1000;
                if (m_session_error &&
                    m_session_error->code == p::protocol_condition::malformed_input)
                    code = 1002;
                close_connection(code, out.close_reason.substr(0, 120));
                return;
            }
            if (m_conn != Conn::open || m_engine.phase() != SyncPhase::live) return;
            // Caught up: a success resets the backoff.
            m_attempt = 0;
            m_status.attempt = 0;
            if (m_mode == ReplicatorMode::continuous) return;
            out = m_engine.push_pending();  // writes made during the session
            if (out.frames.empty() && m_engine.phase() == SyncPhase::live) {
                for (const auto& e : out.events)
                    if (m_options.on_event) {
                        try {
                            m_options.on_event(e);
                        } catch (...) {
                        }
                    }
                m_completed = true;
                close_connection(1000, "sync complete");
                return;
            }
        }
    }

    void update_from_engine() {
        const SyncProgress pr = m_engine.progress();
        m_status.pushed = pr.pushed;
        m_status.push_total = pr.push_total;
        m_status.rejected = pr.rejected;
        m_status.pulled = pr.pulled;
        m_status.pages = pr.pages;
        m_status.revoked = pr.revoked;
        m_status.cursor = pr.cursor;
        switch (pr.phase) {
            case SyncPhase::authenticating:
                m_status.state = ReplicatorState::authenticating;
                break;
            case SyncPhase::pushing:
                m_status.state = ReplicatorState::pushing;
                break;
            case SyncPhase::pulling:
                m_status.state = ReplicatorState::pulling;
                break;
            case SyncPhase::live:
                if (m_status.state != ReplicatorState::idle) {
                    // Caught up: errors reported earlier in the session are over.
                    m_session_error.reset();
                    m_status.last_error.reset();
                    m_status.up_to_date = true;
                }
                m_status.state = ReplicatorState::idle;
                break;
            case SyncPhase::idle:
            case SyncPhase::connecting:
            case SyncPhase::error:
                break;
        }
        if (m_session_error) m_status.last_error = m_session_error;
        if (pr.phase == SyncPhase::error) m_status.up_to_date = false;
    }

    void on_closed(const TransportClose& close) {
        const bool was_open = m_conn == Conn::open || m_conn == Conn::closing;
        m_conn = Conn::none;
        m_transport.reset();  // it reported its last event (or timed out): destroy it here
        if (was_open) apply(m_engine.on_disconnected());

        std::optional<Error> error = m_session_error;
        if (!error && !close.clean()) error = close.error;
        if (!error && !m_completed && !m_stopping) {
            std::string why =
                "the server closed the connection (code " + std::to_string(close.code);
            if (!close.reason.empty()) why += ": " + close.reason;
            why += ")";
            error = Error{transport_errc::closed, why};
        }
        if (error) {
            m_status.last_error = error;
            m_status.up_to_date = false;
        }
        if (m_stopping) {
            m_done = true;
            return;
        }
        if (m_mode == ReplicatorMode::one_shot) {
            m_done = true;
            if (!m_completed)
                m_final_error =
                    error ? *error : Error{transport_errc::closed, "the sync did not complete"};
            return;
        }
        if (error && m_options.permanent(*error)) {
            m_done = true;
            m_final_error = *error;
            return;
        }
        // Continuous: retry after a backoff.
        ++m_attempt;
        const auto& b = m_options.backoff;
        double delay = b.initial_ms;
        for (std::uint32_t i = 1; i < m_attempt && delay < b.max_ms; ++i)
            delay *= std::max(b.multiplier, 1.0);
        delay = std::min<double>(delay, b.max_ms);
        if (b.jitter > 0) {
            std::uniform_real_distribution<double> dist(1.0 - b.jitter / 2, 1.0 + b.jitter / 2);
            delay = std::min<double>(delay * dist(m_random), b.max_ms);
        }
        const auto ms = static_cast<std::uint64_t>(std::max(delay, 0.0));
        m_next_attempt = Clock::now() + std::chrono::milliseconds(ms);
        m_status.state = ReplicatorState::offline;
        m_status.attempt = m_attempt;
        m_status.retry_in_ms = ms;
    }

    ReplicatorStatus snapshot() {
        std::lock_guard lock(m_shared.mutex);
        return m_shared.status;
    }

    /// Stores the status and calls on_status when it changed.
    void publish(bool force = false) {
        if (auto n = m_impl.replica->pending_count()) m_status.pending = *n;
        {
            std::lock_guard lock(m_shared.mutex);
            if (!force && same_status(m_shared.status, m_status)) return;
            m_shared.status = m_status;
        }
        if (m_options.on_status) {
            try {
                m_options.on_status(m_status);
            } catch (...) {
            }
        }
    }

    ReplicatorCore& m_impl;
    const ReplicatorOptions& m_options;
    Shared& m_shared;
    ReplicatorMode m_mode;
    SyncEngine m_engine;
    std::mt19937_64 m_random;
    std::unique_ptr<Transport> m_transport;
    Conn m_conn = Conn::none;
    std::uint64_t m_generation = 0;
    std::uint32_t m_attempt = 0;
    Clock::time_point m_next_attempt;
    Clock::time_point m_next_tick;
    Clock::time_point m_next_poll;
    Clock::time_point m_close_deadline = Clock::time_point::max();
    bool m_stopping = false;
    bool m_done = false;
    bool m_completed = false;
    std::optional<Error> m_session_error;
    std::optional<Error> m_final_error;
    ReplicatorStatus m_status;
};

}  // namespace

void ReplicatorCore::run(ReplicatorMode mode) {
    Status result;
    {
        Run r(*this, mode);
        result = r.run();
    }
    thread_id = std::thread::id{};
    std::vector<p::Changes> retired;  // not taken by the transport (no frame came after them)
    std::lock_guard lock(shared->mutex);
    retired.swap(shared->retired);
    shared->result = std::move(result);
    shared->running = false;
    shared->done.notify_all();
}

Replicator::Replicator(std::shared_ptr<Replica> replica, ReplicatorOptions options)
    : m_impl(std::make_unique<Impl>(std::move(replica), std::move(options))) {}

Replicator::~Replicator() {
    stop();
}

void Replicator::start() {
    std::lock_guard guard(m_impl->start_mutex);
    {
        std::lock_guard lock(m_impl->shared->mutex);
        if (m_impl->shared->running) return;
    }
    m_impl->launch(m_impl->options.mode);
}

void Replicator::stop() {
    if (m_impl->thread_id.load() == std::this_thread::get_id()) {  // from a callback
        std::lock_guard lock(m_impl->shared->mutex);
        m_impl->shared->stop = true;
        m_impl->shared->wake.notify_all();
        return;
    }
    std::lock_guard guard(m_impl->start_mutex);
    m_impl->halt();
}

void Replicator::retry_now() {
    std::lock_guard lock(m_impl->shared->mutex);
    m_impl->shared->retry_now = true;
    m_impl->shared->wake.notify_all();
}

Status Replicator::sync_once(std::chrono::milliseconds timeout) {
    std::lock_guard guard(m_impl->start_mutex);
    {
        std::lock_guard lock(m_impl->shared->mutex);
        if (m_impl->shared->running)
            return Error{protocol_errc::unexpected_message,
                         "the replicator is already running: stop() it before sync_once()"};
    }
    m_impl->launch(ReplicatorMode::one_shot);
    bool finished = false;
    {
        std::unique_lock lock(m_impl->shared->mutex);
        finished =
            m_impl->shared->done.wait_for(lock, timeout, [&] { return !m_impl->shared->running; });
    }
    if (!finished) {
        m_impl->halt();
        std::string msg =
            "sync did not finish within " +
            std::to_string(std::chrono::duration_cast<std::chrono::seconds>(timeout).count()) +
            " s";
        const auto st = status();
        if (st.last_error) msg += " (last error: " + st.last_error->message + ")";
        return Error{protocol_errc::busy, msg};
    }
    if (m_impl->thread.joinable()) m_impl->thread.join();
    std::lock_guard lock(m_impl->shared->mutex);
    return m_impl->shared->result;
}

ReplicatorStatus Replicator::status() const {
    std::lock_guard lock(m_impl->shared->mutex);
    return m_impl->shared->status;
}

bool Replicator::running() const {
    std::lock_guard lock(m_impl->shared->mutex);
    return m_impl->shared->running;
}

const std::shared_ptr<Replica>& Replicator::replica() const noexcept {
    return m_impl->replica;
}

}  // namespace fieldsync
