// HTTP client of the admin command line over Boost.Beast. Contract: http_client.hpp.
//
// The request runs as a C++20 coroutine on a private io_context, so every step (resolve,
// connect, TLS handshake, write, each read) has a deadline through beast::tcp_stream, which
// blocking Asio calls would not honour. TLS: the chain is verified against --cacert (or
// OpenSSL's default paths) and the leaf against the host name (DNS names) or IP SAN (IP
// literals); SNI is sent for names only (RFC 6066 §3).
#include "http_client.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/beast/version.hpp>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <exception>
#include <optional>

namespace fieldsync::admin {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
namespace ssl = net::ssl;
using tcp = net::ip::tcp;

namespace {

constexpr const char* user_agent = "fieldsync-admin/0.1";

bool is_ip_literal(const std::string& host) {
    boost::system::error_code ec;
    net::ip::make_address(host, ec);
    return !ec;
}

std::string lower(std::string s) {
    for (char& c : s)
        if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    return s;
}

/// What went wrong on the network, in words an operator can act on.
[[noreturn]] void fail(const ServerUrl& server, std::string_view step,
                       const boost::system::error_code& ec, const std::string& detail = {}) {
    std::string msg = std::string(step) + " " + server.text +
                      " failed: " + (detail.empty() ? ec.message() : detail);
    if (ec == net::error::connection_refused)
        msg += " (is fieldsync-server running, and on this port?)";
    else if (ec == beast::error::timeout)
        msg += " (no answer in time: check the address, the network and firewalls)";
    else if (ec == net::error::host_not_found || ec == net::error::host_not_found_try_again)
        msg += " (check the host name)";
    throw NetworkError(msg);
}

class Exchange {
public:
    Exchange(const ServerUrl& server, const ClientOptions& options, const HttpRequestSpec& spec,
             const std::function<bool(std::string_view)>& sink)
        : m_server(server), m_options(options), m_spec(spec), m_sink(sink) {}

    HttpReply run() {
        std::optional<ssl::context> tls;
        if (m_server.tls) tls.emplace(make_tls_context());
        std::exception_ptr error;
        net::co_spawn(m_ioc, go(tls ? &*tls : nullptr),
                      [&error](std::exception_ptr e) { error = e; });
        m_ioc.run();
        if (error) std::rethrow_exception(error);
        return std::move(m_reply);
    }

private:
    ssl::context make_tls_context() {
        ssl::context ctx(ssl::context::tls_client);
        ctx.set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                        ssl::context::no_sslv3 | ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1);
        boost::system::error_code ec;
        if (m_options.cacert.empty()) {
            ctx.set_default_verify_paths(ec);
            if (ec)
                throw NetworkError("TLS: cannot load the system's trusted certificates: " +
                                   ec.message() + " (pass --cacert FILE)");
        } else {
            ctx.load_verify_file(m_options.cacert, ec);
            if (ec)
                throw NetworkError("TLS: cannot load the CA file " + m_options.cacert + ": " +
                                   ec.message() +
                                   " (it must be a PEM certificate, e.g. the "
                                   "server's cert.pem from fieldsync-mkcert)");
        }
        return ctx;
    }

    template <class Stream>
    net::awaitable<void> exchange(Stream& stream) {
        http::request<http::string_body> req{http::string_to_verb(m_spec.method),
                                             m_server.prefix + m_spec.target, 11};
        req.set(http::field::host, m_server.host);
        req.set(http::field::user_agent, user_agent);
        req.set(http::field::accept, "application/json, text/csv, application/x-ndjson");
        if (!m_spec.token.empty()) req.set(http::field::authorization, "Bearer " + m_spec.token);
        if (!m_spec.content_type.empty()) req.set(http::field::content_type, m_spec.content_type);
        req.body() = m_spec.body;
        req.keep_alive(false);
        req.prepare_payload();

        auto& lowest = beast::get_lowest_layer(stream);
        boost::system::error_code ec;
        lowest.expires_after(m_options.timeout);
        co_await http::async_write(stream, req, net::redirect_error(net::use_awaitable, ec));
        if (ec) fail(m_server, "sending the request to", ec);

        beast::flat_buffer buffer;
        http::response_parser<http::buffer_body> parser;
        parser.body_limit(boost::none);
        lowest.expires_after(m_options.timeout);
        co_await http::async_read_header(stream, buffer, parser,
                                         net::redirect_error(net::use_awaitable, ec));
        if (ec) fail(m_server, "reading the answer of", ec);
        const auto& head = parser.get();
        m_reply.status = head.result_int();
        m_reply.content_type = std::string(head[http::field::content_type]);
        const bool stream_it = m_sink && m_reply.status >= 200 && m_reply.status < 300;

        std::vector<char> chunk(64 * 1024);
        while (!parser.is_done()) {
            parser.get().body().data = chunk.data();
            parser.get().body().size = chunk.size();
            lowest.expires_after(m_options.timeout);
            co_await http::async_read(stream, buffer, parser,
                                      net::redirect_error(net::use_awaitable, ec));
            if (ec == http::error::need_buffer) ec = {};
            if (ec) fail(m_server, "reading the answer of", ec);
            const std::size_t got = chunk.size() - parser.get().body().size;
            if (got == 0) continue;
            std::string_view piece(chunk.data(), got);
            if (stream_it) {
                if (!m_sink(piece)) co_return;
            } else {
                if (m_reply.body.size() + got > m_options.max_body)
                    throw NetworkError("the answer of " + m_server.text + " is larger than " +
                                       std::to_string(m_options.max_body) + " bytes");
                m_reply.body.append(piece);
            }
        }
    }

    net::awaitable<void> go(ssl::context* tls) {
        boost::system::error_code ec;
        tcp::resolver resolver(m_ioc);
        auto endpoints = co_await resolver.async_resolve(
            m_server.host, m_server.port, net::redirect_error(net::use_awaitable, ec));
        if (ec) fail(m_server, "looking up the address of", ec);

        if (!tls) {
            beast::tcp_stream stream(m_ioc);
            stream.expires_after(m_options.timeout);
            co_await stream.async_connect(endpoints, net::redirect_error(net::use_awaitable, ec));
            if (ec) fail(m_server, "connecting to", ec);
            co_await exchange(stream);
            stream.socket().shutdown(tcp::socket::shutdown_both, ec);
            co_return;
        }

        beast::ssl_stream<beast::tcp_stream> stream(m_ioc, *tls);
        auto& lowest = beast::get_lowest_layer(stream);
        lowest.expires_after(m_options.timeout);
        co_await lowest.async_connect(endpoints, net::redirect_error(net::use_awaitable, ec));
        if (ec) fail(m_server, "connecting to", ec);

        SSL* handle = stream.native_handle();
        if (!is_ip_literal(m_server.host)) {
            // SSL_set_tlsext_host_name without its C-style cast.
            SSL_ctrl(handle, SSL_CTRL_SET_TLSEXT_HOSTNAME, TLSEXT_NAMETYPE_host_name,
                     const_cast<char*>(m_server.host.c_str()));
        }
        std::string verify_error;
        stream.set_verify_mode(ssl::verify_peer);
        stream.set_verify_callback(
            [&verify_error, check = ssl::host_name_verification(m_server.host),
             host = m_server.host](bool preverified, ssl::verify_context& ctx) mutable {
                X509_STORE_CTX* store = ctx.native_handle();
                if (!preverified) {
                    if (verify_error.empty()) {
                        verify_error =
                            X509_verify_cert_error_string(X509_STORE_CTX_get_error(store));
                        if (X509* cert = X509_STORE_CTX_get_current_cert(store)) {
                            char subject[256] = {0};
                            X509_NAME_oneline(X509_get_subject_name(cert), subject, sizeof subject);
                            verify_error += std::string(" (certificate ") + subject + ")";
                        }
                    }
                    return false;
                }
                const bool ok = check(preverified, ctx);
                if (!ok && verify_error.empty())
                    verify_error = "the server's certificate is not valid for " + host;
                return ok;
            });
        lowest.expires_after(m_options.timeout);
        co_await stream.async_handshake(ssl::stream_base::client,
                                        net::redirect_error(net::use_awaitable, ec));
        if (ec) {
            std::string why = verify_error.empty() ? ec.message() : verify_error;
            if (!verify_error.empty())
                why += m_options.cacert.empty()
                           ? "; if the server uses its own certificate, pass --cacert FILE (its "
                             "cert.pem from fieldsync-mkcert)"
                           : "; check that --cacert " + m_options.cacert +
                                 " is the certificate this server uses";
            fail(m_server, "TLS handshake with", ec, why);
        }
        co_await exchange(stream);
        lowest.expires_after(std::chrono::seconds(5));
        co_await stream.async_shutdown(net::redirect_error(net::use_awaitable, ec));  // best effort
        co_return;
    }

    net::io_context m_ioc;
    const ServerUrl& m_server;
    const ClientOptions& m_options;
    const HttpRequestSpec& m_spec;
    const std::function<bool(std::string_view)>& m_sink;
    HttpReply m_reply;
};

}  // namespace

ServerUrl parse_server_url(std::string_view text) {
    ServerUrl u;
    std::string s(text);
    while (!s.empty() && s.back() == '/')
        s.pop_back();
    const auto scheme_end = s.find("://");
    if (scheme_end == std::string::npos)
        throw UsageError("--server " + std::string(text) +
                         ": give a URL with its scheme, e.g. https://survey.example.org or "
                         "http://127.0.0.1:8470");
    const std::string scheme = lower(s.substr(0, scheme_end));
    if (scheme == "https" || scheme == "wss")
        u.tls = true;
    else if (scheme != "http" && scheme != "ws")
        throw UsageError("--server " + std::string(text) + ": the scheme must be http or https");
    std::string rest = s.substr(scheme_end + 3);
    const auto slash = rest.find('/');
    std::string authority = rest.substr(0, slash);
    if (slash != std::string::npos) u.prefix = rest.substr(slash);
    if (u.prefix == "/sync" || u.prefix == "/console" || u.prefix == "/api") u.prefix.clear();
    if (authority.find('@') != std::string::npos)
        throw UsageError("--server: no user name in the URL; use --user");
    if (!authority.empty() && authority.front() == '[') {
        const auto close = authority.find(']');
        if (close == std::string::npos)
            throw UsageError("--server " + std::string(text) + ": unclosed [");
        u.host = authority.substr(1, close - 1);
        if (close + 1 < authority.size()) {
            if (authority[close + 1] != ':')
                throw UsageError("--server " + std::string(text) + ": bad port");
            u.port = authority.substr(close + 2);
        }
    } else {
        const auto colon = authority.rfind(':');
        u.host = authority.substr(0, colon);
        if (colon != std::string::npos) u.port = authority.substr(colon + 1);
    }
    if (u.host.empty()) throw UsageError("--server " + std::string(text) + ": no host name");
    if (u.port.empty()) u.port = u.tls ? "443" : "80";
    for (char c : u.port)
        if (c < '0' || c > '9')
            throw UsageError("--server " + std::string(text) + ": the port must be a number");
    u.text = (u.tls ? "https://" : "http://") +
             (u.host.find(':') != std::string::npos ? "[" + u.host + "]" : u.host) + ":" + u.port +
             u.prefix;
    return u;
}

std::string url_encode(std::string_view text) {
    static constexpr char hex[] = "0123456789ABCDEF";
    std::string out;
    for (unsigned char c : text) {
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '_' || c == '.' || c == '~' || c == '/') {
            out += static_cast<char>(c);
        } else {
            out += '%';
            out += hex[c >> 4];
            out += hex[c & 15];
        }
    }
    return out;
}

HttpReply http_request(const ServerUrl& server, const ClientOptions& options,
                       const HttpRequestSpec& request,
                       const std::function<bool(std::string_view)>& sink) {
    Exchange exchange(server, options, request, sink);
    return exchange.run();
}

}  // namespace fieldsync::admin
