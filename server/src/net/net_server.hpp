// The network layer as the rest of the server sees it: no Beast or Asio in this header.
//
// One listening socket; each accepted connection runs on its own strand (net/listener.cpp),
// is told apart as TLS or plain by its first bytes, then serves HTTP/1.1 (net/http_session.cpp)
// and may upgrade GET /sync to the sync WebSocket (net/websocket_session.cpp).
//
// The shutdown steps are separate calls, so that Server::run can put StoreWorker::stop between
// them (see server.hpp for the whole sequence):
//   drain()  -> stop accepting; sessions stop taking new work
//   finish() -> WebSockets close with 1001, wait up to `grace`, force the rest, join threads.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>

#include "fieldsync/server/http_api.hpp"
#include "fieldsync/server/server.hpp"
#include "fieldsync/server/store_worker.hpp"
#include "metrics.hpp"

namespace fieldsync::server::netlayer {

class NetServer {
public:
    /// Loads the TLS certificate (when configured) and binds and listens on the configured
    /// address. `config`, `worker` and `api` must outlive the NetServer. Fails with a message
    /// naming the address or the file and the reason.
    static Result<std::unique_ptr<NetServer>> create(const ServerConfig& config,
                                                     StoreWorker& worker, HttpApi& api);
    ~NetServer();
    NetServer(const NetServer&) = delete;
    NetServer& operator=(const NetServer&) = delete;

    /// The bound port. \note Thread-safe.
    std::uint16_t port() const noexcept;
    /// Starts the io threads and the accept loop. Call once.
    void start();
    /// Shutdown steps 1-2: closes the listening socket and tells every connection to drain.
    /// Returns once the listener has stopped. \note Call from a non-io thread.
    void drain();
    /// Shutdown steps 4-5: WebSockets close with 1001 after their queued frames; waits up to
    /// `grace` for every connection to end, then forces the rest closed; joins the io threads.
    /// Returns true when every connection ended within the grace period. Safe to call
    /// without start() or drain(). \note Call from a non-io thread.
    bool finish(std::chrono::milliseconds grace);

    /// Current connection gauges. \note Thread-safe.
    NetCounters counters() const noexcept;

    class Impl;

private:
    explicit NetServer(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> m_impl;
};

}  // namespace fieldsync::server::netlayer
