// The listener, TLS/plain detection and the shutdown sequence of the network layer.
// Contract: net_server.hpp; threading model: common.hpp.
//
// Accept loop (its own strand): each accepted socket gets a new strand and one coroutine,
// co_spawned with a cancellation slot (Conn::cancel) and tracked in the Registry:
//
//   detect_ssl (30 s) --TLS--> handshake (30 s) --> run_http(TlsStream)
//                     --plain--> run_http(PlainStream)   (or a 400 when only TLS is allowed)
//
// Shutdown (Boost 1.81 has neither cancel_after nor the example's task_group, so the same
// sequence is built from a steady_timer, cancellation slots and awaitable operators):
//   drain():  terminal cancellation of the accept loop (its slot) and close the acceptor; post
//             on_drain to every connection's strand.
//   finish(): on the control strand, post on_going_away (WebSocket close 1001) to every
//             connection; then `co_await (wait_until_empty() || deadline)`; if the deadline
//             wins, emit terminal cancellation on every connection's slot and close its socket,
//             wait up to 2 s more; then stop the io_context and join the threads.
#include <boost/asio/append.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/detect_ssl.hpp>
#include <boost/beast/websocket/teardown.hpp>

#include <openssl/ssl.h>

#include <future>
#include <optional>
#include <thread>

#include "any_stream.hpp"
#include "common.hpp"
#include "fieldsync/server/log.hpp"
#include "net_server.hpp"

namespace fieldsync::server::netlayer {

using protocol::protocol_errc;

std::pair<std::string, std::string> remote_of(const tcp::socket& s) {
    error_code ec;
    auto ep = s.remote_endpoint(ec);
    if (ec) return {"?", "?"};
    std::string a = ep.address().to_string();
    std::string label = ep.address().is_v6() ? "[" + a + "]" : a;
    return {a, label + ":" + std::to_string(ep.port())};
}

bool is_normal_end(const error_code& ec) {
    return ec == net::error::eof || ec == net::error::operation_aborted ||
           ec == net::error::connection_reset || ec == net::error::connection_aborted ||
           ec == net::error::broken_pipe || ec == net::error::bad_descriptor ||
           ec == beast::error::timeout || ec == ssl::error::stream_truncated;
}

namespace {

// The two concrete streams behind AnyStream: their operations are instantiated here, once,
// with type-erased handlers. Each handler is bound to the stream's executor (the connection's
// strand, which is also where the handler belongs): Beast posts intermediate completions with
// blocking.never, which any_completion_handler's own executor type does not offer in 1.81.
class PlainImpl final : public AnyStream::Impl {
public:
    explicit PlainImpl(PlainStream s) : m_s(std::move(s)) {}
    beast::tcp_stream& lowest() noexcept override { return m_s; }
    bool tls() const noexcept override { return false; }
    void read_some(MutableBuffers b, AnyStream::IoHandler h) override {
        m_s.async_read_some(b, net::bind_executor(lowest().get_executor(), std::move(h)));
    }
    void write_some(ConstBuffers b, AnyStream::IoHandler h) override {
        m_s.async_write_some(b, net::bind_executor(lowest().get_executor(), std::move(h)));
    }
    void shutdown(AnyStream::Handler h) override {
        error_code ec;
        m_s.socket().shutdown(tcp::socket::shutdown_send, ec);
        net::post(m_s.get_executor(),
                  net::bind_executor(m_s.get_executor(), net::append(std::move(h), ec)));
    }
    void teardown(beast::role_type role, AnyStream::Handler h) override {
        using beast::websocket::async_teardown;
        async_teardown(role, m_s, net::bind_executor(m_s.get_executor(), std::move(h)));
    }
    void teardown(beast::role_type role, error_code& ec) override {
        using beast::websocket::teardown;
        teardown(role, m_s, ec);
    }

private:
    PlainStream m_s;
};

class TlsImpl final : public AnyStream::Impl {
public:
    explicit TlsImpl(TlsStream s) : m_s(std::move(s)) {}
    beast::tcp_stream& lowest() noexcept override { return beast::get_lowest_layer(m_s); }
    bool tls() const noexcept override { return true; }
    void read_some(MutableBuffers b, AnyStream::IoHandler h) override {
        m_s.async_read_some(b, net::bind_executor(lowest().get_executor(), std::move(h)));
    }
    void write_some(ConstBuffers b, AnyStream::IoHandler h) override {
        m_s.async_write_some(b, net::bind_executor(lowest().get_executor(), std::move(h)));
    }
    void shutdown(AnyStream::Handler h) override {
        send_close_notify_only();
        m_s.async_shutdown(net::bind_executor(lowest().get_executor(), std::move(h)));
    }
    void teardown(beast::role_type role, AnyStream::Handler h) override {
        send_close_notify_only();
        using beast::websocket::async_teardown;
        async_teardown(role, m_s, net::bind_executor(m_s.get_executor(), std::move(h)));
    }
    void teardown(beast::role_type role, error_code& ec) override {
        send_close_notify_only();
        using beast::websocket::teardown;
        teardown(role, m_s, ec);
    }

private:
    /// Our shutdown sends close_notify and does not wait for the peer's: many clients
    /// (browsers, Python's ssl, curl) close the socket without answering, and waiting would
    /// hold every TLS connection open until a timeout. Closing after sending ours is allowed
    /// (RFC 8446 §6.1); the TCP teardown that follows still waits (bounded) for the peer's FIN.
    void send_close_notify_only() {
        SSL* ssl = m_s.native_handle();
        SSL_set_shutdown(ssl, SSL_get_shutdown(ssl) | SSL_RECEIVED_SHUTDOWN);
    }

    TlsStream m_s;
};

/// Answers a plain-text connection when only TLS is allowed, then closes it.
net::awaitable<void> refuse_plain(PlainStream& stream) {
    static const std::string body =
        "This fieldsync server accepts only TLS connections: use https:// or wss://.\n";
    const std::string msg = "HTTP/1.1 400 Bad Request\r\nServer: " + std::string(kServerHeader) +
                            "\r\nContent-Type: text/plain; charset=utf-8\r\n"
                            "X-Content-Type-Options: nosniff\r\nConnection: close\r\n"
                            "Content-Length: " +
                            std::to_string(body.size()) + "\r\n\r\n" + body;
    stream.expires_after(std::chrono::seconds(10));
    auto [ec, n] = co_await net::async_write(stream, net::buffer(msg), use_tuple);
    (void)n;
    if (!ec) stream.socket().shutdown(tcp::socket::shutdown_send, ec);
}

net::awaitable<void> run_connection(tcp::socket socket, ConnPtr conn, NetContext& ctx) {
    PlainStream stream(std::move(socket));
    conn->lowest = &stream;
    beast::flat_buffer buffer;
    stream.expires_after(std::chrono::seconds(30));
    auto [ec, is_tls] = co_await beast::async_detect_ssl(stream, buffer, use_tuple);
    if (ec) {
        conn->lowest = nullptr;
        if (!is_normal_end(ec)) log::debug(conn->label, ": detecting TLS failed: ", ec.message());
        co_return;
    }
    if (is_tls) {
        if (!ctx.tls) {
            log::debug(conn->label, ": a TLS client, but this server has no certificate");
            conn->lowest = nullptr;
            co_return;
        }
        TlsStream tls(std::move(stream), *ctx.tls);
        conn->lowest = &beast::get_lowest_layer(tls);
        auto [hec, used] =
            co_await tls.async_handshake(ssl::stream_base::server, buffer.data(), use_tuple);
        if (hec) {
            conn->lowest = nullptr;
            log::debug(conn->label, ": TLS handshake failed: ", hec.message());
            co_return;
        }
        buffer.consume(used);
        co_await run_http(make_any_stream(std::move(tls)), std::move(buffer), conn, ctx);
    } else if (ctx.tls && !ctx.config.allow_plain) {
        log::debug(conn->label, ": plain connection refused (TLS only)");
        co_await refuse_plain(stream);
    } else {
        co_await run_http(make_any_stream(std::move(stream)), std::move(buffer), conn, ctx);
    }
    conn->lowest = nullptr;
}

}  // namespace

AnyStream make_any_stream(PlainStream stream) {
    return AnyStream(std::make_unique<PlainImpl>(std::move(stream)));
}

AnyStream make_any_stream(TlsStream stream) {
    return AnyStream(std::make_unique<TlsImpl>(std::move(stream)));
}

class NetServer::Impl {
public:
    Impl(const ServerConfig& c, StoreWorker& w, HttpApi& a) : m_ctx(c, w, a) {
        m_ioc.emplace(static_cast<int>(c.io_threads));
        m_acceptor_strand = net::make_strand(*m_ioc);
        m_acceptor.emplace(m_acceptor_strand);
        m_control = net::make_strand(*m_ioc);
        m_empty_timer.emplace(m_control, net::steady_timer::time_point::max());
        m_ctx.registry.on_empty(
            [this] { net::post(m_control, [this] { m_empty_timer->cancel(); }); });
    }

    ~Impl() {
        finish(std::chrono::milliseconds(0));
        // Everything that holds a strand executor or belongs to the io_context goes before it;
        // the coroutine frames still pending are destroyed with the io_context, while the
        // NetContext they refer to is still alive.
        m_ctx.registry.on_empty(nullptr);
        m_ctx.registry.clear();
        m_empty_timer.reset();
        m_acceptor.reset();
        // The accept loop's cancellation handler holds a strand executor: destroy it now, not
        // with the member after the io_context (a use-after-free ASan found at shutdown).
        m_accept_cancel.slot().clear();
        m_control = {};
        m_acceptor_strand = {};
        m_ioc.reset();
    }

    Status init() {
        const auto& c = m_ctx.config;
        auto fail = [](std::string m) {
            return Status(Error{protocol_errc::internal, std::move(m)});
        };
        error_code ec;
        if (c.tls_enabled()) {
            m_tls.emplace(ssl::context::tls_server);
            m_tls->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                                   ssl::context::no_sslv3 | ssl::context::no_tlsv1 |
                                   ssl::context::no_tlsv1_1 | ssl::context::single_dh_use,
                               ec);
            SSL_CTX_set_min_proto_version(m_tls->native_handle(), TLS1_2_VERSION);
            m_tls->use_certificate_chain_file(c.tls_cert.string(), ec);
            if (ec)
                return fail("cannot load the TLS certificate chain from " + c.tls_cert.string() +
                            ": " + ec.message() +
                            " (a PEM file is expected; fieldsync-mkcert makes one)");
            m_tls->use_private_key_file(c.tls_key.string(), ssl::context::pem, ec);
            if (ec)
                return fail("cannot load the TLS private key from " + c.tls_key.string() + ": " +
                            ec.message());
            if (SSL_CTX_check_private_key(m_tls->native_handle()) != 1)
                return fail("the TLS private key " + c.tls_key.string() +
                            " does not match the certificate " + c.tls_cert.string());
            m_ctx.tls = &*m_tls;
        }
        auto address = net::ip::make_address(c.listen_address, ec);
        if (ec)
            return fail("invalid listen address \"" + c.listen_address +
                        "\" (an IP address is expected, e.g. 127.0.0.1, 0.0.0.0 or ::)");
        tcp::endpoint endpoint(address, c.port);
        const std::string where = c.listen_address + ":" + std::to_string(c.port);
        m_acceptor->open(endpoint.protocol(), ec);
        if (!ec) m_acceptor->set_option(net::socket_base::reuse_address(true), ec);
        if (!ec) m_acceptor->bind(endpoint, ec);
        if (!ec) m_acceptor->listen(net::socket_base::max_listen_connections, ec);
        if (ec) return fail("cannot listen on " + where + ": " + ec.message());
        m_port = m_acceptor->local_endpoint(ec).port();
        return {};
    }

    std::uint16_t port() const noexcept { return m_port; }

    void start() {
        if (m_started) return;
        m_started = true;
        m_work.emplace(m_ioc->get_executor());
        m_listener_done = m_listener_promise.get_future();
        net::co_spawn(
            m_acceptor_strand, accept_loop(),
            net::bind_cancellation_slot(m_accept_cancel.slot(), [this](std::exception_ptr e) {
                report("the listener", e);
                m_listener_promise.set_value();
            }));
        for (unsigned i = 0; i < m_ctx.config.io_threads; ++i)
            m_threads.emplace_back([this] { run_io(); });
    }

    void drain() {
        if (!m_started || m_drained) return;
        m_drained = true;
        m_ctx.draining = true;
        net::post(m_acceptor_strand, [this] {
            m_accept_cancel.emit(net::cancellation_type::terminal);
            error_code ec;
            m_acceptor->close(ec);
        });
        if (m_listener_done.valid()) m_listener_done.wait_for(std::chrono::seconds(5));
        auto conns = m_ctx.registry.snapshot();
        log::info("shutdown: stopped accepting; ", conns.size(), " connection(s) open");
        for (auto& c : conns)
            net::post(c->strand, [c] {
                if (c->on_drain) c->on_drain();
            });
    }

    bool finish(std::chrono::milliseconds grace) {
        if (!m_started || m_finished) return true;
        m_finished = true;
        drain();
        std::promise<bool> done;
        auto result = done.get_future();
        net::co_spawn(m_control, shutdown_sequence(grace),
                      [this, &done](std::exception_ptr e, bool clean) {
                          report("the shutdown sequence", e);
                          done.set_value(e ? false : clean);
                      });
        bool clean = result.get();
        m_work.reset();
        m_ioc->stop();
        for (auto& t : m_threads)
            if (t.joinable()) t.join();
        m_threads.clear();
        return clean;
    }

    NetCounters counters() const noexcept { return counters_of(m_ctx); }

    NetContext& context() noexcept { return m_ctx; }

private:
    static void report(const char* what, const std::exception_ptr& e) {
        if (!e) return;
        try {
            std::rethrow_exception(e);
        } catch (const std::exception& x) {
            log::error(what, " ended with an exception: ", x.what());
        } catch (...) {
            log::error(what, " ended with an unknown exception");
        }
    }

    void run_io() {
        for (;;) {
            try {
                m_ioc->run();
                return;
            } catch (const std::exception& e) {
                log::error("io thread: unexpected exception: ", e.what());
            } catch (...) {
                log::error("io thread: unexpected exception");
            }
        }
    }

    net::awaitable<void> accept_loop() {
        auto last_refusal_log = std::chrono::steady_clock::time_point{};
        for (;;) {
            net::any_io_executor executor = net::make_strand(*m_ioc);
            auto [ec, socket] = co_await m_acceptor->async_accept(executor, use_tuple);
            if (m_ctx.draining || !m_acceptor->is_open() || ec == net::error::operation_aborted)
                break;
            if (ec) {
                // Typically out of file descriptors: pause rather than spin.
                log::warn("accepting a connection failed: ", ec.message());
                net::steady_timer pause(m_acceptor_strand, std::chrono::milliseconds(100));
                co_await pause.async_wait(use_tuple);
                continue;
            }
            if (m_ctx.registry.size() >= m_ctx.config.max_connections) {
                m_ctx.stats.refused++;
                auto now = std::chrono::steady_clock::now();
                if (now - last_refusal_log > std::chrono::seconds(10)) {
                    last_refusal_log = now;
                    log::warn("refusing connections: ", m_ctx.config.max_connections,
                              " are open (max_connections)");
                }
                error_code ignored;
                socket.close(ignored);
                continue;
            }
            start_connection(std::move(socket));
        }
        error_code ignored;
        m_acceptor->close(ignored);
    }

    void start_connection(tcp::socket socket) {
        error_code ec;
        socket.set_option(tcp::no_delay(true), ec);
        auto [address, label] = remote_of(socket);
        auto conn = std::make_shared<Conn>(socket.get_executor(), address, label);
        m_ctx.registry.add(conn);
        log::debug(conn->label, ": connected");
        net::co_spawn(
            conn->strand, run_connection(std::move(socket), conn, m_ctx),
            net::bind_cancellation_slot(conn->cancel.slot(), [this, conn](std::exception_ptr e) {
                report(conn->label.c_str(), e);
                log::debug(conn->label, ": closed");
                m_ctx.registry.remove(conn);
            }));
    }

    net::awaitable<void> wait_until_empty() {
        while (m_ctx.registry.size() > 0) {
            m_empty_timer->expires_at(net::steady_timer::time_point::max());
            auto [ec] = co_await m_empty_timer->async_wait(use_tuple);
            (void)ec;  // cancelled by the registry when it becomes empty
            auto cs = co_await net::this_coro::cancellation_state;
            if (cs.cancelled() != net::cancellation_type::none) co_return;
        }
    }

    net::awaitable<bool> shutdown_sequence(std::chrono::milliseconds grace) {
        using namespace net::experimental::awaitable_operators;
        // Step 4 (after StoreWorker::stop, so every reply is already queued on its strand):
        // WebSockets close with 1001 once their queued frames are written.
        for (auto& c : m_ctx.registry.snapshot())
            net::post(c->strand, [c] {
                if (c->on_going_away)
                    c->on_going_away(1001, "server shutting down");
                else if (c->on_drain)
                    c->on_drain();
            });
        // Step 5: wait for every connection to end, at most `grace`.
        net::steady_timer deadline(m_control, grace);
        auto first = co_await (wait_until_empty() || deadline.async_wait(use_tuple));
        if (first.index() == 0) co_return true;

        auto left = m_ctx.registry.snapshot();
        log::warn("shutdown: ", left.size(), " connection(s) still open after ", grace.count(),
                  " ms; closing them");
        for (auto& c : left)
            net::post(c->strand, [c] {
                c->cancel.emit(net::cancellation_type::terminal);
                if (c->lowest) {
                    error_code ec;
                    c->lowest->socket().close(ec);
                }
            });
        net::steady_timer last(m_control, std::chrono::seconds(2));
        co_await (wait_until_empty() || last.async_wait(use_tuple));
        co_return false;
    }

    // Destroyed last to first: the io_context (and everything bound to it) is reset by hand in
    // the destructor, before the NetContext and the TLS context the sessions refer to.
    std::optional<ssl::context> m_tls;
    NetContext m_ctx;
    std::optional<net::io_context> m_ioc;
    net::any_io_executor m_acceptor_strand;
    std::optional<tcp::acceptor> m_acceptor;
    net::cancellation_signal m_accept_cancel;
    net::any_io_executor m_control;
    std::optional<net::steady_timer> m_empty_timer;
    std::optional<net::executor_work_guard<net::io_context::executor_type>> m_work;
    std::vector<std::thread> m_threads;
    std::promise<void> m_listener_promise;
    std::future<void> m_listener_done;
    std::uint16_t m_port = 0;
    bool m_started = false;
    bool m_drained = false;
    bool m_finished = false;
};

Result<std::unique_ptr<NetServer>> NetServer::create(const ServerConfig& config,
                                                     StoreWorker& worker, HttpApi& api) {
    auto impl = std::make_unique<Impl>(config, worker, api);
    if (auto st = impl->init(); !st) return st.error();
    return std::unique_ptr<NetServer>(new NetServer(std::move(impl)));
}

NetServer::NetServer(std::unique_ptr<Impl> impl) : m_impl(std::move(impl)) {}
NetServer::~NetServer() = default;
std::uint16_t NetServer::port() const noexcept {
    return m_impl->port();
}
void NetServer::start() {
    m_impl->start();
}
void NetServer::drain() {
    m_impl->drain();
}
bool NetServer::finish(std::chrono::milliseconds grace) {
    return m_impl->finish(grace);
}
NetCounters NetServer::counters() const noexcept {
    return m_impl->counters();
}

}  // namespace fieldsync::server::netlayer
