// The store's writer thread with group commit. Design: store_worker.hpp.
#include "fieldsync/server/store_worker.hpp"

#include <time.h>

#include <algorithm>
#include <chrono>

namespace fieldsync::server {

namespace {
std::uint64_t system_ms() {
    return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                          std::chrono::system_clock::now().time_since_epoch())
                                          .count());
}

// The calling thread's CPU time (POSIX CLOCK_THREAD_CPUTIME_ID), in microseconds.
std::uint64_t thread_cpu_us() {
    timespec ts{};
    if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) != 0) return 0;
    return static_cast<std::uint64_t>(ts.tv_sec) * 1000000u +
           static_cast<std::uint64_t>(ts.tv_nsec) / 1000u;
}
}  // namespace

StoreWorker::StoreWorker(std::unique_ptr<Store> writer, protocol::Schema schema, Options options)
    : m_store(std::move(writer)),
      m_schema(std::move(schema)),
      m_options(std::move(options)),
      m_clock(m_options.now_ms ? protocol::ClockSource(m_options.now_ms)
                               : protocol::ClockSource(system_ms),
              m_options.limits.max_clock_ahead_ms) {
    if (!m_options.now_ms) m_options.now_ms = system_ms;
    m_server_replica = m_store->server_replica();
    m_ctx.store = m_store.get();
    m_ctx.schema = &m_schema;
    m_ctx.now_ms = m_options.now_ms;
    m_ctx.clock = &m_clock;
    m_ctx.throttle = &m_throttle;
    m_ctx.stats = &m_stats;
    m_ctx.limits = m_options.limits;
    if (auto n = m_store->count_open_conflicts()) m_stats.open_conflicts = *n;
    publish_schema();
    if (m_options.overlap_sync) {
        // A store that cannot (or fails to) defer its syncs keeps durable commits: the replies
        // are then delivered by the worker right after each commit.
        if (auto syncer = m_store->defer_sync(); syncer && *syncer) {
            m_syncer = std::move(*syncer);
            m_sync_thread = std::thread([this] { run_sync_thread(); });
        }
    }
    m_thread = std::thread([this] { run(); });
}

void StoreWorker::publish_schema() {
    auto snapshot = std::make_shared<const protocol::Schema>(m_schema);
    std::lock_guard lock(m_snapshot_mutex);
    m_snapshot = std::move(snapshot);
    m_ctx.schema_generation = ++m_snapshot_generation;
}

StoreWorker::~StoreWorker() {
    stop();
}

void StoreWorker::stop() {
    {
        std::lock_guard lock(m_mutex);
        if (m_stopping && !m_thread.joinable()) return;
        m_stopping = true;
    }
    m_cv.notify_all();
    if (m_thread.joinable()) m_thread.join();
    // The worker has handed over its last group: the sync thread delivers it, then ends.
    {
        std::lock_guard lock(m_sync_mutex);
        m_sync_stopping = true;
    }
    m_sync_cv.notify_all();
    if (m_sync_thread.joinable()) m_sync_thread.join();
}

StoreWorker::SessionId StoreWorker::open_session(std::string peer, SendFn send) {
    std::lock_guard lock(m_mutex);
    SessionId id = m_next_id++;
    m_opening.push_back({id, {std::move(peer), std::move(send)}});
    m_stats.sessions++;
    return id;
}

void StoreWorker::frame(SessionId id, protocol::Bytes frame) {
    auto message = SyncSession::decode(frame, m_options.limits);
    PreparedPush prepared;
    if (message && std::holds_alternative<protocol::Push>(*message)) {
        std::shared_ptr<const protocol::Schema> schema;
        std::uint64_t generation = 0;
        {
            std::lock_guard lock(m_snapshot_mutex);
            schema = m_snapshot;
            generation = m_snapshot_generation;
        }
        // Validated under this schema; the worker trusts it only if the schema is still the
        // same when the push is applied (SyncContext::schema_generation).
        prepared =
            SyncSession::prepare(*message, m_options.limits.max_batch, schema.get(), generation);
    }
    {
        std::lock_guard lock(m_mutex);
        Item it{Item::session_frame, id, std::move(message), std::move(prepared), {}, {}};
        m_queue.push_back(std::move(it));
        m_stats.queue_depth = m_queue.size();
    }
    m_cv.notify_one();
}

void StoreWorker::close_session(SessionId id) {
    {
        std::lock_guard lock(m_mutex);
        m_closing.push_back(id);
        if (m_stats.sessions > 0) m_stats.sessions--;
    }
    m_cv.notify_one();
}

void StoreWorker::post(Job job, Done done) {
    {
        std::lock_guard lock(m_mutex);
        Item it{Item::api_job, 0, {}, {}, std::move(job), std::move(done)};
        m_queue.push_back(std::move(it));
        m_stats.queue_depth = m_queue.size();
    }
    m_cv.notify_one();
}

Status StoreWorker::run_sync(Job job) {
    std::mutex m;
    std::condition_variable cv;
    bool finished = false;
    Status result;
    post(std::move(job), [&](const Status& st) {
        std::lock_guard lock(m);
        result = st;
        finished = true;
        cv.notify_one();
    });
    std::unique_lock lock(m);
    cv.wait(lock, [&] { return finished; });
    return result;
}

void StoreWorker::set_schema(protocol::Schema schema) {
    // The schema pointer in m_ctx stays valid: only the value changes, under the mutex, and
    // sessions read it on the worker thread, which is the only writer once started.
    post(
        [this, s = std::move(schema)](Store&, const protocol::Schema&) mutable {
            // run_group holds m_schema_mutex while a job runs (locking it again deadlocked).
            m_schema = std::move(s);
            publish_schema();
            return false;
        },
        [](const Status&) {});
}

protocol::Schema StoreWorker::schema() const {
    std::lock_guard lock(m_schema_mutex);
    return m_schema;
}

void StoreWorker::run() {
    for (;;) {
        std::vector<Item> items;
        std::vector<std::pair<SessionId, std::pair<std::string, SendFn>>> opening;
        std::vector<SessionId> closing;
        {
            std::unique_lock lock(m_mutex);
            // Stopping, the worker still waits for the groups the sync thread has not delivered:
            // their completions may post jobs (an API call's second round, a schema change).
            m_cv.wait(lock, [&] {
                return (m_stopping && m_handoffs == 0) || !m_queue.empty() || !m_opening.empty() ||
                       !m_closing.empty();
            });
            opening.swap(m_opening);
            closing.swap(m_closing);
            while (!m_queue.empty() && items.size() < m_options.max_group) {
                items.push_back(std::move(m_queue.front()));
                m_queue.pop_front();
            }
            m_stats.queue_depth = m_queue.size();
            if (items.empty() && opening.empty() && closing.empty() && m_stopping &&
                m_handoffs == 0)
                return;
        }
        for (auto& [id, o] : opening) {
            m_sessions.emplace(id,
                               SessionSlot{std::make_unique<SyncSession>(m_ctx, std::move(o.first)),
                                           std::make_shared<Sink>(std::move(o.second))});
        }
        if (!items.empty()) {
            const auto t0 = std::chrono::steady_clock::now();
            const std::uint64_t cpu0 = thread_cpu_us();
            run_group(items);
            m_stats.busy_cpu_us_total += thread_cpu_us() - cpu0;
            m_stats.busy_us_total +=
                static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(
                                               std::chrono::steady_clock::now() - t0)
                                               .count());
        }
        for (SessionId id : closing) {
            auto it = m_sessions.find(id);
            if (it == m_sessions.end()) continue;
            it->second.sink->open = false;  // replies still waiting for a sync are dropped
            m_sessions.erase(it);
        }
    }
}

void StoreWorker::run_group(std::vector<Item>& items) {
    Handoff h;
    h.deliveries.reserve(items.size());
    bool wrote = false;
    Status begun =
        m_sync_failed
            ? Status(Error{protocol::protocol_errc::internal, std::string(not_durable_message)})
            : m_store->begin();
    m_ctx.touched_areas.clear();
    m_changed_users.clear();
    for (auto& it : items) {
        m_stats.jobs++;
        if (it.kind == Item::session_frame) {
            auto slot = m_sessions.find(it.session);
            if (slot == m_sessions.end()) continue;  // closed meanwhile
            if (!begun) {
                SyncOutput out;
                out.close = true;
                out.close_code = 1011;
                out.close_reason = "store unavailable; try again later";
                h.deliveries.push_back({slot->second.sink, std::move(out), {}, {}});
                continue;
            }
            SyncOutput out =
                slot->second.session->handle(std::move(*it.message), std::move(it.prepared));
            wrote = wrote || out.wrote;
            h.deliveries.push_back({slot->second.sink, std::move(out), {}, {}});
        } else {
            bool job_wrote = false;
            if (begun) {
                std::lock_guard lock(m_schema_mutex);
                job_wrote = it.job(*m_store, m_schema);
            }
            wrote = wrote || job_wrote;
            h.deliveries.push_back({nullptr, {}, std::move(it.done), {}});
        }
    }
    Status committed = begun;
    if (begun) {
        const auto t0 = std::chrono::steady_clock::now();
        committed = m_store->commit();
        m_stats.commit_us_total +=
            static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(
                                           std::chrono::steady_clock::now() - t0)
                                           .count());
        if (!committed) {
            m_store->rollback();
            m_stats.commits_failed++;
        }
    }
    m_stats.groups++;
    // Whether to fsync is the store's to know (a failed frame may have written before it
    // failed): every committed group asks, and Syncer::sync returns at once if nothing was.
    h.committed = static_cast<bool>(committed);
    if (!committed && begun) {
        committed = Error{protocol::protocol_errc::internal,
                          "the group commit failed and nothing of it was saved (" +
                              committed.error().message + "); send the request again"};
    }
    for (auto& d : h.deliveries) {
        if (!d.sink) {
            d.status = committed;
        } else if (!committed && begun) {
            // Never acknowledge what did not become durable; and no read either: it may have
            // seen the group's own writes, now rolled back.
            SyncOutput out;
            out.close = true;
            out.close_code = 1011;
            out.close_reason = "commit failed; try again later";
            d.out = std::move(out);
        }
    }
    if (committed && !m_changed_users.empty()) {
        // Accounts changed by this group: their open sessions may no longer stand.
        for (auto& [id, slot] : m_sessions) {
            SyncSession& s = *slot.session;
            if (!s.user()) continue;
            if (std::find(m_changed_users.begin(), m_changed_users.end(), s.user()->name) ==
                m_changed_users.end())
                continue;
            SyncOutput out = s.recheck_user();
            if (!out.frames.empty() || out.close)
                h.deliveries.push_back({slot.sink, std::move(out), {}, {}});
        }
    }
    m_changed_users.clear();
    if (wrote && committed) {
        if (auto n = m_store->count_open_conflicts()) m_stats.open_conflicts = *n;
        // Each area once: a group of a thousand records in one village names it a thousand
        // times, and every live session checks every area.
        auto& areas = m_ctx.touched_areas;
        std::sort(areas.begin(), areas.end());
        areas.erase(std::unique(areas.begin(), areas.end()), areas.end());
        // Wake the live sessions whose scope the changes touched.
        for (auto& [id, slot] : m_sessions) {
            SyncSession& s = *slot.session;
            if (!s.live()) continue;
            bool touched = false;
            for (const auto& area : m_ctx.touched_areas) {
                if (s.scope().covers(area)) {
                    touched = true;
                    break;
                }
            }
            if (!touched) continue;
            SyncOutput out = s.catch_up();
            if (!out.frames.empty()) h.deliveries.push_back({slot.sink, std::move(out), {}, {}});
        }
    }
    m_ctx.touched_areas.clear();
    finish_group(std::move(h));
}

void StoreWorker::finish_group(Handoff h) {
    if (!m_syncer) {
        deliver(h, Status{});  // the commit was durable when it returned
        return;
    }
    {
        std::lock_guard lock(m_mutex);
        ++m_handoffs;
    }
    {
        std::lock_guard lock(m_sync_mutex);
        m_sync_queue.push_back(std::move(h));
    }
    m_sync_cv.notify_one();
}

void StoreWorker::deliver(Handoff& h, const Status& synced) {
    for (auto& d : h.deliveries) {
        if (!d.sink) {
            if (d.done) d.done(synced ? d.status : synced);
            continue;
        }
        if (!d.sink->open) continue;
        if (!synced) {
            SyncOutput out;
            out.close = true;
            out.close_code = 1011;
            out.close_reason = "store unavailable: the server must be restarted";
            d.sink->send(std::move(out));
        } else {
            d.sink->send(std::move(d.out));
        }
    }
}

void StoreWorker::run_sync_thread() {
    for (;;) {
        std::deque<Handoff> batch;
        Status synced;  // ok, or the failure of this or an earlier sync
        {
            std::unique_lock lock(m_sync_mutex);
            m_sync_cv.wait(lock, [&] { return m_sync_stopping || !m_sync_queue.empty(); });
            if (m_sync_queue.empty()) return;  // stopping, and everything delivered
            batch.swap(m_sync_queue);
            synced = m_sync_failure;
        }
        // One fsync covers every group in the batch: all of them committed before it starts.
        const bool any_committed =
            std::any_of(batch.begin(), batch.end(), [](const Handoff& h) { return h.committed; });
        if (synced && any_committed) {
            const auto t0 = std::chrono::steady_clock::now();
            Status hook = m_options.before_sync ? m_options.before_sync() : Status{};
            Result<bool> st = hook ? m_syncer->sync() : Result<bool>(hook.error());
            if (!st || *st) {
                m_stats.sync_us_total += static_cast<std::uint64_t>(
                    std::chrono::duration_cast<std::chrono::microseconds>(
                        std::chrono::steady_clock::now() - t0)
                        .count());
                m_stats.syncs++;
            }
            if (!st) {
                // The detail (file, system error) goes to the log; devices and API clients
                // get what it means for them.
                if (m_options.on_sync_failure) m_options.on_sync_failure(st.error());
                m_stats.syncs_failed++;
                synced = Error{protocol::protocol_errc::internal, std::string(not_durable_message)};
                m_sync_failed = true;
                std::lock_guard lock(m_sync_mutex);
                m_sync_failure = synced;
            }
        }
        for (auto& h : batch)
            deliver(h, synced);
        {
            std::lock_guard lock(m_mutex);
            m_handoffs -= batch.size();
        }
        m_cv.notify_all();  // a stopping worker waits for this
    }
}

}  // namespace fieldsync::server
