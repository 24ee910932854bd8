// Types shared by the network layer's translation units (Beast and Asio: include only from
// server/src/net/*.cpp).
//
// Threading model (Beast's advanced_server_flex_awaitable, adapted to Boost 1.81):
//   - N io threads run one io_context.
//   - The listener accepts on its own strand; every accepted socket gets a new strand, and the
//     connection's coroutine (detect -> [TLS handshake] -> HTTP -> [WebSocket]) runs on it.
//     Everything that touches a connection's stream or its Conn fields runs on that strand.
//   - The store worker's callbacks (sync replies, API responses) arrive on the worker thread
//     and are posted to the connection's strand; they never touch a stream directly.
//   - Connections are tracked in the Registry (a mutex-guarded set, as chat-multi's
//     shared_state): shutdown posts drain/going-away/force requests to each one's strand, and
//     emits terminal cancellation through the slot bound to each connection's coroutine.
// boost::system::error_code never leaves net/: the rest of the server sees Status/Result.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_set>
#include <utility>
#include <vector>

#include "fieldsync/server/http_api.hpp"
#include "fieldsync/server/server.hpp"
#include "fieldsync/server/store_worker.hpp"
#include "metrics.hpp"

namespace fieldsync::server::netlayer {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace ssl = boost::asio::ssl;
using tcp = net::ip::tcp;
using error_code = boost::system::error_code;

using PlainStream = beast::tcp_stream;
using TlsStream = beast::ssl_stream<beast::tcp_stream>;

/// The completion token used everywhere: errors come back as values, never as exceptions.
inline constexpr auto use_tuple = net::as_tuple(net::use_awaitable);

inline constexpr const char* kServerHeader = "fieldsync/0.1";

/// Gauges and counters of the network layer. \note Thread-safe (atomics).
struct NetStats {
    std::atomic<std::uint64_t> ws{0};
    std::atomic<std::uint64_t> pending_bytes{0};
    std::atomic<std::uint64_t> refused{0};
};

/// Increments a gauge for the lifetime of the object.
class GaugeGuard {
public:
    explicit GaugeGuard(std::atomic<std::uint64_t>& g) noexcept : m_g(g) { m_g.fetch_add(1); }
    ~GaugeGuard() { m_g.fetch_sub(1); }
    GaugeGuard(const GaugeGuard&) = delete;
    GaugeGuard& operator=(const GaugeGuard&) = delete;

private:
    std::atomic<std::uint64_t>& m_g;
};

/// One connection as shutdown sees it. `strand` and `peer` are immutable; every other member
/// is touched only on `strand`.
struct Conn {
    Conn(net::any_io_executor ex, std::string address, std::string where)
        : strand(std::move(ex)), peer(std::move(address)), label(std::move(where)) {}

    const net::any_io_executor strand;
    const std::string peer;   ///< remote address (the login throttle's key)
    const std::string label;  ///< "address:port", for logs

    /// Bound to the connection's coroutine: emitting `terminal` on it cancels whatever the
    /// coroutine awaits (the forced step of shutdown).
    net::cancellation_signal cancel;
    /// The socket while the session runs (it lives in the coroutine's frame), else null.
    beast::tcp_stream* lowest = nullptr;
    /// Set by the session: shutdown step 2 (stop taking new work).
    std::function<void()> on_drain;
    /// Set by a WebSocket session: close with this code after the queued frames.
    std::function<void(std::uint16_t, std::string)> on_going_away;
};
using ConnPtr = std::shared_ptr<Conn>;

/// The open connections. \note Thread-safe (one mutex; callbacks run outside it).
class Registry {
public:
    void add(ConnPtr c) {
        std::lock_guard lock(m_mutex);
        m_conns.insert(std::move(c));
    }
    void remove(const ConnPtr& c) {
        std::function<void()> notify;
        {
            std::lock_guard lock(m_mutex);
            m_conns.erase(c);
            if (m_conns.empty()) notify = m_on_empty;
        }
        if (notify) notify();
    }
    std::vector<ConnPtr> snapshot() const {
        std::lock_guard lock(m_mutex);
        return {m_conns.begin(), m_conns.end()};
    }
    void clear() {
        std::lock_guard lock(m_mutex);
        m_conns.clear();
    }
    std::size_t size() const {
        std::lock_guard lock(m_mutex);
        return m_conns.size();
    }
    /// `fn` runs (on the thread that removed the last connection) each time the registry
    /// becomes empty.
    void on_empty(std::function<void()> fn) {
        std::lock_guard lock(m_mutex);
        m_on_empty = std::move(fn);
    }

private:
    mutable std::mutex m_mutex;
    std::unordered_set<ConnPtr> m_conns;
    std::function<void()> m_on_empty;
};

/// What every session needs; owned by NetServer::Impl, which outlives every session.
struct NetContext {
    NetContext(const ServerConfig& c, StoreWorker& w, HttpApi& a) : config(c), worker(w), api(a) {}
    const ServerConfig& config;
    StoreWorker& worker;
    HttpApi& api;
    ssl::context* tls = nullptr;  ///< null when TLS is not configured
    NetStats stats;
    Registry registry;
    std::atomic<bool> draining{false};
};

/// The connection gauges for /metrics. \note Thread-safe.
inline NetCounters counters_of(const NetContext& ctx) {
    NetCounters n;
    n.ws_connections = ctx.stats.ws.load();
    std::uint64_t all = ctx.registry.size();
    n.http_connections = all > n.ws_connections ? all - n.ws_connections : 0;
    n.ws_pending_bytes = ctx.stats.pending_bytes.load();
    n.connections_refused = ctx.stats.refused.load();
    return n;
}

/// The remote address of a socket ("?" when unknown) and "address:port" for logs.
std::pair<std::string, std::string> remote_of(const tcp::socket& s);

/// Whether an error is the ordinary end of a connection (closed, eof, cancelled, reset,
/// timeout, TLS truncation) rather than something worth a warning.
bool is_normal_end(const error_code& ec);

}  // namespace fieldsync::server::netlayer
