// Prometheus text exposition of the server's counters. Contract: metrics.hpp.
#include "metrics.hpp"

#include <cstdio>
#include <string_view>

namespace fieldsync::server {

namespace {

void metric_text(std::string& out, const char* name, const char* type, const char* help,
                 std::string_view value) {
    out += "# HELP ";
    out += name;
    out += ' ';
    out += help;
    out += "\n# TYPE ";
    out += name;
    out += ' ';
    out += type;
    out += '\n';
    out += name;
    out += ' ';
    out += value;
    out += '\n';
}

void metric(std::string& out, const char* name, const char* type, const char* help,
            std::uint64_t value) {
    metric_text(out, name, type, help, std::to_string(value));
}

// A counter of seconds, kept in microseconds: printed in seconds with 6 decimals.
void seconds_metric(std::string& out, const char* name, const char* help, std::uint64_t us) {
    char seconds[64];
    std::snprintf(seconds, sizeof seconds, "%.6f", static_cast<double>(us) / 1e6);
    metric_text(out, name, "counter", help, seconds);
}

}  // namespace

std::string render_metrics(const WorkerStats& w, const NetCounters& n) {
    std::string out;
    out.reserve(2048);
    out +=
        "# HELP fieldsync_connections Open connections by kind (ws: sync WebSockets; http: "
        "everything else).\n# TYPE fieldsync_connections gauge\n";
    out += "fieldsync_connections{kind=\"ws\"} " + std::to_string(n.ws_connections) + '\n';
    out += "fieldsync_connections{kind=\"http\"} " + std::to_string(n.http_connections) + '\n';
    metric(out, "fieldsync_connections_refused_total", "counter",
           "Connections closed at once because max_connections were open.", n.connections_refused);
    metric(out, "fieldsync_sync_sessions", "gauge", "Sync sessions open in the store worker.",
           w.sessions.load());
    metric(out, "fieldsync_pushes_total", "counter", "Push messages handled.", w.pushes.load());
    metric(out, "fieldsync_pulls_total", "counter", "Pull messages handled.", w.pulls.load());
    metric(out, "fieldsync_items_accepted_total", "counter", "Push items accepted (durable).",
           w.items_accepted.load());
    metric(out, "fieldsync_items_rejected_total", "counter",
           "Push items rejected (validation, scope, clock, ...).", w.items_rejected.load());
    metric(out, "fieldsync_merges_total", "counter", "Push items that changed a stored record.",
           w.merges.load());
    metric(out, "fieldsync_open_conflicts", "gauge", "Conflicts waiting for a supervisor.",
           w.open_conflicts.load());
    seconds_metric(out, "fieldsync_store_commit_seconds_total",
                   "Time the store worker spent in group commits.", w.commit_us_total.load());
    seconds_metric(out, "fieldsync_store_busy_seconds_total",
                   "Time the store worker spent running groups (commits included); near the "
                   "elapsed time, it is the bottleneck.",
                   w.busy_us_total.load());
    seconds_metric(out, "fieldsync_store_busy_cpu_seconds_total",
                   "CPU time of the store worker's thread in those groups; busy time minus this "
                   "is time spent waiting (disk writes, locks).",
                   w.busy_cpu_us_total.load());
    seconds_metric(out, "fieldsync_store_sync_seconds_total",
                   "Time the sync thread spent making committed groups durable (fsync of the "
                   "write-ahead log), overlapped with the next groups.",
                   w.sync_us_total.load());
    metric(out, "fieldsync_store_syncs_total", "counter",
           "Syncs of the write-ahead log (one may cover several groups).", w.syncs.load());
    metric(out, "fieldsync_store_syncs_failed_total", "counter",
           "Failed syncs (after one, the server refuses writes until restarted).",
           w.syncs_failed.load());
    metric(out, "fieldsync_store_groups_total", "counter", "Group transactions run.",
           w.groups.load());
    metric(out, "fieldsync_store_jobs_total", "counter", "Frames and API jobs run.", w.jobs.load());
    metric(out, "fieldsync_store_commits_failed_total", "counter",
           "Group commits that failed (their replies became internal errors).",
           w.commits_failed.load());
    metric(out, "fieldsync_queue_depth", "gauge", "Jobs waiting for the store worker.",
           w.queue_depth.load());
    metric(out, "fieldsync_ws_pending_bytes", "gauge",
           "Outgoing WebSocket bytes queued, all connections.", n.ws_pending_bytes);
    return out;
}

}  // namespace fieldsync::server
