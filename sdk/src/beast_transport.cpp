// The default transport: a Boost.Beast WebSocket client over TCP (ws://) or TLS (wss://).
// Contract: fieldsync/transport.hpp. This is the SDK's only translation unit that includes
// Beast or Asio (compiling it takes ~25 s; keep it that way).
//
// One BeastTransport = one connection = one io thread running one io_context. Everything that
// touches the socket runs on that thread (a single-threaded io_context is an implicit strand);
// connect(), send() and close() only post work to it. The delegate is called on the io thread.
//
// Connection steps, each reported as the step that failed:
//
//   resolve host -> TCP connect -> [TLS: SNI, chain + host name verification, then the SPKI
//   pin check] -> WebSocket upgrade (GET <target>, extra headers) -> on_open -> read loop
//
// The connect phase (all steps up to on_open) has one deadline, connect_timeout_ms, enforced by
// a timer that closes the socket. After the upgrade, Beast's own WebSocket timeouts apply:
// pings after idle_timeout/2 of silence, closed after idle_timeout without anything received.
// Writes are queued and written one at a time (Beast allows one outstanding write).
//
// TLS verification: the chain against ca_file (or OpenSSL's default paths), the leaf against
// the host name (asio::ssl::host_name_verification: DNS names via X509_check_host, IP literals
// via the IP SAN), SNI for names (never for IP literals, RFC 6066 §3). The verify callback keeps
// the first failure's reason ("self-signed certificate", "certificate does not match host name
// x") so the error a user sees names it. Pins are compared after the handshake succeeded,
// against SHA-256(DER(SubjectPublicKeyInfo)) of the leaf certificate.
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/beast/websocket.hpp>
#include <boost/beast/websocket/ssl.hpp>

#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <deque>
#include <optional>
#include <stdexcept>
#include <thread>

#include "fieldsync/transport.hpp"

namespace fieldsync {

namespace {

namespace net = boost::asio;
namespace ssl = boost::asio::ssl;
namespace beast = boost::beast;
namespace websocket = boost::beast::websocket;
namespace http = boost::beast::http;
using tcp = boost::asio::ip::tcp;
namespace p = fieldsync::protocol;

using PlainWs = websocket::stream<beast::tcp_stream>;
using TlsWs = websocket::stream<ssl::stream<beast::tcp_stream>>;

std::array<std::uint8_t, 32> spki_sha256(X509* cert) {
    std::array<std::uint8_t, 32> out{};
    unsigned char* der = nullptr;
    const int len = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(cert), &der);
    if (len > 0) {
        unsigned int n = 0;
        EVP_Digest(der, static_cast<std::size_t>(len), out.data(), &n, EVP_sha256(), nullptr);
        OPENSSL_free(der);
    }
    return out;
}

bool is_ip_literal(const std::string& host) {
    boost::system::error_code ec;
    (void)net::ip::make_address(host, ec);
    return !ec;
}

/// The state shared by the transport object and its io thread's handlers.
class Connection : public std::enable_shared_from_this<Connection> {
public:
    Connection(net::io_context& ioc, WebSocketOptions options)
        : m_ioc(ioc),
          m_options(std::move(options)),
          m_resolver(ioc),
          m_deadline(ioc),
          m_close_timer(ioc) {}
    virtual ~Connection() = default;

    /// Forgets the delegate: nothing is reported any more. Called by ~BeastTransport.
    void detach() { m_detached = true; }

    void start(SyncUrl url, TransportHeaders headers, std::shared_ptr<TransportDelegate> delegate) {
        m_url = std::move(url);
        m_headers = std::move(headers);
        m_delegate = std::move(delegate);
        m_where = std::string(m_url.tls ? "wss://" : "ws://") + m_url.host + ":" + m_url.port;
        m_deadline.expires_after(std::chrono::milliseconds(m_options.connect_timeout_ms));
        m_deadline.async_wait([self = shared_from_this()](boost::system::error_code ec) {
            if (ec || self->m_open || self->m_finished) return;
            self->m_timed_out = true;
            self->abort_socket();
        });
        m_resolver.async_resolve(m_url.host, m_url.port,
                                 [self = shared_from_this()](boost::system::error_code ec,
                                                             tcp::resolver::results_type r) {
                                     self->on_resolved(ec, std::move(r));
                                 });
    }

    void send(p::Bytes frame) {
        if (!m_open || m_closing || m_finished) return;
        m_queue.push_back(std::move(frame));
        if (m_queue.size() == 1) write_next();
    }

    void close(std::uint16_t code, std::string reason) {
        if (m_finished || m_closing) return;
        m_closing = true;
        m_close_code = code;
        m_close_reason = reason;
        if (!m_open) {  // still connecting: give up the attempt
            m_resolver.cancel();
            abort_socket();
            return;
        }
        m_close_timer.expires_after(std::chrono::milliseconds(m_options.close_timeout_ms));
        m_close_timer.async_wait([self = shared_from_this()](boost::system::error_code ec) {
            if (!ec && !self->m_finished) self->abort_socket();
        });
        // Beast allows a close while a read is pending; a pending write finishes first.
        if (m_queue.empty()) start_close();
    }

protected:
    // --- Steps implemented per stream type
    virtual tcp::socket& socket() = 0;
    virtual beast::tcp_stream& lowest() = 0;
    virtual void after_tcp_connect() = 0;  // TLS: handshake; plain: upgrade
    virtual void upgrade() = 0;
    virtual void read_next() = 0;
    virtual void write_next() = 0;
    virtual void start_close() = 0;
    virtual bool got_text() = 0;
    virtual websocket::close_reason ws_reason() = 0;

    void abort_socket() {
        boost::system::error_code ignored;
        socket().shutdown(tcp::socket::shutdown_both, ignored);
        socket().close(ignored);
    }

    void on_resolved(boost::system::error_code ec, tcp::resolver::results_type results) {
        if (ec)
            return fail_connect(transport_errc::connect_failed,
                                "cannot resolve " + m_url.host + ": " + ec.message());
        if (m_closing) return fail_connect(transport_errc::closed, "closed while connecting");
        lowest().expires_never();  // the connect deadline timer covers the whole phase
        lowest().async_connect(results, [self = shared_from_this()](boost::system::error_code e,
                                                                    const tcp::endpoint&) {
            if (e)
                return self->fail_connect(transport_errc::connect_failed,
                                          "cannot connect to " + self->m_url.host + ":" +
                                              self->m_url.port + ": " + e.message());
            boost::system::error_code ignored;
            self->socket().set_option(tcp::no_delay(true), ignored);
            self->after_tcp_connect();
        });
    }

    void configure_ws(auto& ws) {
        websocket::stream_base::timeout t{};
        t.handshake_timeout = std::chrono::milliseconds(m_options.connect_timeout_ms);
        if (m_options.idle_timeout_ms == 0) {
            t.idle_timeout = websocket::stream_base::none();
            t.keep_alive_pings = false;
        } else {
            t.idle_timeout = std::chrono::milliseconds(m_options.idle_timeout_ms);
            t.keep_alive_pings = true;
        }
        ws.set_option(t);
        ws.read_message_max(m_options.max_frame_bytes);
        ws.binary(true);
        ws.auto_fragment(false);
        ws.set_option(websocket::stream_base::decorator(
            [agent = m_options.user_agent, headers = m_headers](websocket::request_type& req) {
                req.set(http::field::user_agent, agent);
                for (const auto& [name, value] : headers)
                    req.set(name, value);
            }));
    }

    std::string host_header() const {
        const bool default_port = m_url.port == (m_url.tls ? "443" : "80");
        std::string host =
            m_url.host.find(':') != std::string::npos ? "[" + m_url.host + "]" : m_url.host;
        return default_port ? host : host + ":" + m_url.port;
    }

    void on_upgraded(boost::system::error_code ec) {
        if (ec) {
            if (m_timed_out)
                return fail_connect(transport_errc::timeout,
                                    "timed out during the WebSocket upgrade");
            std::string why = ec.message();
            if (m_response.result_int() != 0 &&
                m_response.result() != http::status::switching_protocols)
                why = "the server answered HTTP " + std::to_string(m_response.result_int()) + " " +
                      std::string(m_response.reason()) + " to GET " + m_url.target;
            return fail_connect(transport_errc::handshake_failed,
                                "WebSocket upgrade failed: " + why);
        }
        m_deadline.cancel();
        m_open = true;
        if (m_closing) {  // close() raced with the upgrade
            start_close();
        } else {
            deliver([](TransportDelegate& d) { d.on_open(); });
        }
        read_next();
    }

    void on_read(boost::system::error_code ec, std::size_t) {
        if (ec) return on_stream_error(ec);
        if (got_text()) {
            m_close_code = static_cast<std::uint16_t>(websocket::close_code::bad_payload);
            m_close_reason = "text frames are not part of the protocol";
            m_protocol_error =
                "the server sent a text frame (the protocol uses binary frames only)";
            m_closing = true;
            start_close();
            read_next();
            return;
        }
        if (!m_closing) {
            const auto data = m_buffer.cdata();
            p::ByteView view(static_cast<const std::uint8_t*>(data.data()), data.size());
            deliver([view](TransportDelegate& d) { d.on_frame(view); });
        }
        m_buffer.consume(m_buffer.size());
        read_next();
    }

    void on_written(boost::system::error_code ec, std::size_t) {
        if (ec) return;  // the read side reports the failure
        m_queue.pop_front();
        if (m_closing) {
            if (!m_close_started) start_close();
            return;
        }
        if (!m_queue.empty()) write_next();
    }

    void on_stream_error(boost::system::error_code ec) {
        TransportClose c;
        if (ec == websocket::error::closed) {
            const auto r = ws_reason();
            c.code = static_cast<std::uint16_t>(r.code);
            c.reason = std::string(r.reason.data(), r.reason.size());
            if (!m_protocol_error.empty())
                c.error =
                    p::Error{transport_errc::protocol_error, m_where + ": " + m_protocol_error};
        } else if (m_close_started && m_closing &&
                   (ec == net::error::operation_aborted || ec == net::error::bad_descriptor)) {
            c.code = m_close_code;  // our close timed out and the socket was aborted
            c.reason = m_close_reason;
        } else if (ec == beast::error::timeout) {
            c.code = 1006;
            c.error = p::Error{transport_errc::timeout,
                               m_where + ": no data from the server for " +
                                   std::to_string(m_options.idle_timeout_ms / 1000) + " s"};
        } else if (ec == websocket::error::message_too_big) {
            c.code = 1009;
            c.error = p::Error{transport_errc::protocol_error,
                               m_where + ": the server sent a frame larger than " +
                                   std::to_string(m_options.max_frame_bytes) + " bytes"};
        } else {
            c.code = 1006;
            c.error =
                p::Error{transport_errc::network, m_where + ": connection lost: " + ec.message()};
        }
        finish(std::move(c));
    }

    void fail_connect(transport_errc code, const std::string& message) {
        TransportClose c;
        c.code = 1006;
        if (m_closing && !m_timed_out) {
            c.code = m_close_code;  // the app closed before the connection was up
            c.reason = m_close_reason;
        } else if (m_timed_out) {
            c.error = p::Error{transport_errc::timeout,
                               m_where + ": could not connect within " +
                                   std::to_string(m_options.connect_timeout_ms / 1000) + " s (" +
                                   message + ")"};
        } else {
            c.error = p::Error{code, m_where + ": " + message};
        }
        finish(std::move(c));
    }

    void finish(TransportClose c) {
        if (m_finished) return;
        m_finished = true;
        m_deadline.cancel();
        m_close_timer.cancel();
        abort_socket();
        auto delegate = std::move(m_delegate);
        if (delegate && !m_detached) delegate->on_closed(c);
    }

    template <class F>
    void deliver(F&& f) {
        if (m_delegate && !m_detached && !m_finished) f(*m_delegate);
    }

    net::io_context& m_ioc;
    WebSocketOptions m_options;
    SyncUrl m_url;
    TransportHeaders m_headers;
    std::string m_where;
    std::shared_ptr<TransportDelegate> m_delegate;
    std::atomic<bool> m_detached{false};
    tcp::resolver m_resolver;
    net::steady_timer m_deadline;
    net::steady_timer m_close_timer;
    beast::flat_buffer m_buffer;
    websocket::response_type m_response;
    std::deque<p::Bytes> m_queue;
    bool m_open = false;
    bool m_closing = false;
    bool m_close_started = false;
    bool m_finished = false;
    bool m_timed_out = false;
    std::uint16_t m_close_code = 1000;
    std::string m_close_reason;
    std::string m_protocol_error;
};

/// ws:// and wss:// differ in the stream type and the TLS step.
template <class Ws>
class StreamConnection final : public Connection {
public:
    StreamConnection(net::io_context& ioc, WebSocketOptions options, ssl::context* tls)
        : Connection(ioc, std::move(options)), m_ws(make_stream(ioc, tls)) {}

private:
    static Ws make_stream(net::io_context& ioc, ssl::context* tls) {
        if constexpr (std::is_same_v<Ws, TlsWs>) {
            return Ws(ioc, *tls);
        } else {
            (void)tls;
            return Ws(ioc);
        }
    }

    tcp::socket& socket() override { return beast::get_lowest_layer(m_ws).socket(); }
    beast::tcp_stream& lowest() override { return beast::get_lowest_layer(m_ws); }

    void after_tcp_connect() override {
        if constexpr (std::is_same_v<Ws, TlsWs>) {
            auto& stream = m_ws.next_layer();
            SSL* ssl_handle = stream.native_handle();
            if (!is_ip_literal(m_url.host)) {
                // SSL_set_tlsext_host_name without its C-style cast.
                SSL_ctrl(ssl_handle, SSL_CTRL_SET_TLSEXT_HOSTNAME, TLSEXT_NAMETYPE_host_name,
                         const_cast<char*>(m_url.host.c_str()));
            }
            stream.set_verify_mode(ssl::verify_peer);
            stream.set_verify_callback([this, check = ssl::host_name_verification(m_url.host)](
                                           bool preverified, ssl::verify_context& ctx) mutable {
                X509_STORE_CTX* store = ctx.native_handle();
                if (!preverified) {
                    if (m_verify_error.empty()) {
                        const int err = X509_STORE_CTX_get_error(store);
                        m_verify_error = X509_verify_cert_error_string(err);
                        if (X509* cert = X509_STORE_CTX_get_current_cert(store)) {
                            char subject[256] = {0};
                            X509_NAME_oneline(X509_get_subject_name(cert), subject, sizeof subject);
                            m_verify_error += std::string(" (certificate ") + subject + ")";
                        }
                    }
                    return false;
                }
                const bool ok = check(preverified, ctx);
                if (!ok && m_verify_error.empty())
                    m_verify_error = "the certificate does not match the host name " + m_url.host;
                return ok;
            });
            stream.async_handshake(
                ssl::stream_base::client,
                [self = std::static_pointer_cast<StreamConnection>(shared_from_this())](
                    boost::system::error_code ec) { self->on_tls(ec); });
        } else {
            upgrade();
        }
    }

    void on_tls(boost::system::error_code ec) {
        if constexpr (std::is_same_v<Ws, TlsWs>) {
            if (ec) {
                if (m_timed_out)
                    return fail_connect(transport_errc::timeout,
                                        "timed out during the TLS handshake");
                std::string why = m_verify_error.empty() ? ec.message() : m_verify_error;
                return fail_connect(transport_errc::tls_failed, "TLS handshake failed: " + why);
            }
            if (!m_options.pins.empty()) {
                X509* cert = SSL_get1_peer_certificate(m_ws.next_layer().native_handle());
                if (!cert)
                    return fail_connect(transport_errc::pin_mismatch,
                                        "the server sent no certificate");
                const auto actual = spki_sha256(cert);
                X509_free(cert);
                bool match = false;
                for (const auto& pin : m_options.pins) {
                    auto raw = parse_spki_pin(pin);
                    if (raw && std::equal(raw->begin(), raw->end(), actual.begin(), actual.end()))
                        match = true;
                }
                if (!match) {
                    std::string b64(45, '\0');
                    const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(b64.data()),
                                                  actual.data(), static_cast<int>(actual.size()));
                    b64.resize(static_cast<std::size_t>(std::max(n, 0)));
                    return fail_connect(transport_errc::pin_mismatch,
                                        "the server's public key (sha256/" + b64 +
                                            ") matches none of the " +
                                            std::to_string(m_options.pins.size()) +
                                            " configured certificate pin(s)");
                }
            }
            upgrade();
        } else {
            (void)ec;
        }
    }

    void upgrade() override {
        configure_ws(m_ws);
        m_ws.async_handshake(
            m_response, host_header(), m_url.target,
            [self = std::static_pointer_cast<StreamConnection>(shared_from_this())](
                boost::system::error_code ec) { self->on_upgraded(ec); });
    }

    void read_next() override {
        if (m_finished) return;
        m_ws.async_read(m_buffer,
                        [self = std::static_pointer_cast<StreamConnection>(shared_from_this())](
                            boost::system::error_code ec, std::size_t n) { self->on_read(ec, n); });
    }

    void write_next() override {
        const auto& frame = m_queue.front();
        m_ws.async_write(
            net::buffer(frame.data(), frame.size()),
            [self = std::static_pointer_cast<StreamConnection>(shared_from_this())](
                boost::system::error_code ec, std::size_t n) { self->on_written(ec, n); });
    }

    void start_close() override {
        if (m_close_started || m_finished) return;
        m_close_started = true;
        m_ws.async_close(websocket::close_reason(static_cast<websocket::close_code>(m_close_code),
                                                 m_close_reason),
                         [self = std::static_pointer_cast<StreamConnection>(shared_from_this())](
                             boost::system::error_code ec) {
                             // The pending read completes with error::closed (reported there);
                             // if the close itself failed, abort so the read ends too.
                             if (ec && ec != websocket::error::closed) self->abort_socket();
                         });
    }

    bool got_text() override { return m_ws.got_text(); }
    websocket::close_reason ws_reason() override { return m_ws.reason(); }

    Ws m_ws;
    std::string m_verify_error;
};

class BeastTransport final : public Transport {
public:
    explicit BeastTransport(WebSocketOptions options)
        : m_options(std::move(options)), m_work(net::make_work_guard(m_ioc)) {}

    ~BeastTransport() override {
        // Abort: no close handshake (the contract says destroying aborts). The sockets close
        // when the pending handlers holding the connection are destroyed with the io_context.
        if (m_connection) m_connection->detach();
        m_work.reset();
        m_ioc.stop();
        if (m_thread.joinable()) {
            if (m_thread.get_id() == std::this_thread::get_id())
                m_thread.detach();  // destroyed from its own delegate: cannot join itself
            else
                m_thread.join();
        }
    }

    void connect(const std::string& url, const TransportHeaders& headers,
                 std::shared_ptr<TransportDelegate> delegate) override {
        auto parsed = parse_sync_url(url);
        if (parsed && parsed->tls) {
            try {
                m_tls.emplace(ssl::context::tls_client);
                m_tls->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                                   ssl::context::no_sslv3 | ssl::context::no_tlsv1 |
                                   ssl::context::no_tlsv1_1);
                if (m_options.ca_file.empty())
                    m_tls->set_default_verify_paths();
                else
                    m_tls->load_verify_file(m_options.ca_file);
                for (const auto& pin : m_options.pins)
                    if (auto raw = parse_spki_pin(pin); !raw)
                        throw std::runtime_error(raw.error().message);
            } catch (const std::exception& e) {
                std::string what = e.what();
                if (!m_options.ca_file.empty() && what.find("pin") == std::string::npos)
                    what = "cannot load the CA file " + m_options.ca_file + ": " + what;
                report_async(std::move(delegate), transport_errc::tls_failed, what);
                return;
            }
        }
        if (!parsed) {
            report_async(std::move(delegate), transport_errc::invalid_url, parsed.error().message);
            return;
        }
        if (parsed->tls)
            m_connection = std::make_shared<StreamConnection<TlsWs>>(m_ioc, m_options, &*m_tls);
        else
            m_connection = std::make_shared<StreamConnection<PlainWs>>(m_ioc, m_options, nullptr);
        net::post(m_ioc, [c = m_connection, u = std::move(*parsed), h = headers,
                          d = std::move(delegate)]() mutable {
            c->start(std::move(u), std::move(h), std::move(d));
        });
        start_thread();
    }

    void send(p::Bytes frame) override {
        if (!m_connection) return;
        net::post(m_ioc,
                  [c = m_connection, f = std::move(frame)]() mutable { c->send(std::move(f)); });
    }

    void close(std::uint16_t code, std::string reason) override {
        if (!m_connection) return;
        net::post(m_ioc, [c = m_connection, code, r = std::move(reason)]() mutable {
            c->close(code, std::move(r));
        });
    }

private:
    void start_thread() {
        if (!m_thread.joinable()) m_thread = std::thread([this] { m_ioc.run(); });
    }

    void report_async(std::shared_ptr<TransportDelegate> delegate, transport_errc code,
                      std::string msg) {
        net::post(m_ioc, [d = std::move(delegate), code, m = std::move(msg)] {
            TransportClose c;
            c.code = 1006;
            c.error = p::Error{code, m};
            d->on_closed(c);
        });
        start_thread();
    }

    WebSocketOptions m_options;
    net::io_context m_ioc{1};
    net::executor_work_guard<net::io_context::executor_type> m_work;
    std::optional<ssl::context> m_tls;
    std::shared_ptr<Connection> m_connection;
    std::thread m_thread;
};

}  // namespace

std::unique_ptr<Transport> make_websocket_transport(WebSocketOptions options) {
    return std::make_unique<BeastTransport>(std::move(options));
}

TransportFactory websocket_transport_factory(WebSocketOptions options) {
    return [options = std::move(options)] { return make_websocket_transport(options); };
}

}  // namespace fieldsync
