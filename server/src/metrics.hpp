// /metrics: the server's counters in the Prometheus text exposition format (version 0.0.4).
// No Beast here. The list of metrics is in docs/operations.md.
#pragma once

#include <cstdint>
#include <string>

#include "fieldsync/server/store_worker.hpp"

namespace fieldsync::server {

/// Connection gauges kept by the network layer.
struct NetCounters {
    std::uint64_t ws_connections = 0;
    std::uint64_t http_connections = 0;     ///< connections not (yet) upgraded to WebSocket
    std::uint64_t ws_pending_bytes = 0;     ///< queued outgoing WebSocket bytes, all connections
    std::uint64_t connections_refused = 0;  ///< over max_connections, since start
};

/// The exposition text. \note Thread-safe (reads atomics).
std::string render_metrics(const WorkerStats& worker, const NetCounters& net);

}  // namespace fieldsync::server
