// The transport helpers (URLs, pins) and the default Beast transport's failure paths against
// raw local sockets: refused connections, an HTTP server that is not a WebSocket endpoint, a
// peer that never answers (timeouts), a non-TLS peer behind wss://, and destruction while
// connecting. Successful ws:// and wss:// sessions run against the real server in tests/e2e/.
#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "fieldsync/transport.hpp"

using namespace std::chrono_literals;
using fieldsync::transport_errc;
using fieldsync::TransportClose;

namespace {

/// Records a connection's events.
struct Recorder final : fieldsync::TransportDelegate {
    std::mutex mutex;
    std::condition_variable cv;
    int opened = 0;
    int frames = 0;
    int calls = 0;
    std::optional<TransportClose> closed;

    void on_open() override {
        std::lock_guard lock(mutex);
        ++opened;
        ++calls;
        cv.notify_all();
    }
    void on_frame(fieldsync::protocol::ByteView) override {
        std::lock_guard lock(mutex);
        ++frames;
        ++calls;
        cv.notify_all();
    }
    void on_closed(const TransportClose& c) override {
        std::lock_guard lock(mutex);
        closed = c;
        ++calls;
        cv.notify_all();
    }
    std::optional<TransportClose> wait_closed(std::chrono::milliseconds timeout = 5s) {
        std::unique_lock lock(mutex);
        cv.wait_for(lock, timeout, [&] { return closed.has_value(); });
        return closed;
    }
};

/// A TCP listener on 127.0.0.1 that runs `serve(fd)` for one accepted connection.
class RawServer {
public:
    explicit RawServer(std::function<void(int)> serve) {
        m_fd = ::socket(AF_INET, SOCK_STREAM, 0);
        sockaddr_in addr{};
        addr.sin_family = AF_INET;
        addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        addr.sin_port = 0;
        REQUIRE(::bind(m_fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
        REQUIRE(::listen(m_fd, 4) == 0);
        socklen_t len = sizeof addr;
        ::getsockname(m_fd, reinterpret_cast<sockaddr*>(&addr), &len);
        m_port = ntohs(addr.sin_port);
        m_thread = std::thread([this, serve = std::move(serve)] {
            const int c = ::accept(m_fd, nullptr, nullptr);
            if (c < 0) return;
            serve(c);
            ::close(c);
        });
    }
    ~RawServer() {
        ::shutdown(m_fd, SHUT_RDWR);
        ::close(m_fd);
        m_thread.join();
    }
    std::uint16_t port() const { return m_port; }

private:
    int m_fd = -1;
    std::uint16_t m_port = 0;
    std::thread m_thread;
};

/// A port on 127.0.0.1 with nothing listening.
std::uint16_t closed_port() {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
    socklen_t len = sizeof addr;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
    ::close(fd);
    return ntohs(addr.sin_port);
}

std::string read_request(int fd) {
    std::string req;
    char buf[1024];
    while (req.find("\r\n\r\n") == std::string::npos) {
        const auto n = ::recv(fd, buf, sizeof buf, 0);
        if (n <= 0) break;
        req.append(buf, static_cast<std::size_t>(n));
    }
    return req;
}

}  // namespace

TEST_CASE("Transport: sync URLs") {
    auto u = fieldsync::parse_sync_url("ws://127.0.0.1:8080");
    REQUIRE(u.ok());
    CHECK_FALSE(u->tls);
    CHECK(u->host == "127.0.0.1");
    CHECK(u->port == "8080");
    CHECK(u->target == "/sync");

    u = fieldsync::parse_sync_url("wss://sync.example.org/custom/sync?x=1");
    REQUIRE(u.ok());
    CHECK(u->tls);
    CHECK(u->port == "443");
    CHECK(u->target == "/custom/sync?x=1");

    u = fieldsync::parse_sync_url("HTTPS://[::1]:9443/");
    REQUIRE(u.ok());
    CHECK(u->tls);
    CHECK(u->host == "::1");
    CHECK(u->port == "9443");
    CHECK(u->target == "/sync");

    for (const char* bad : {"ftp://x", "ws://", "ws://h:0", "ws://h:70000", "ws://h:x",
                            "127.0.0.1:80", "ws://user:pw@h/sync", "ws://[::1"}) {
        CAPTURE(bad);
        auto r = fieldsync::parse_sync_url(bad);
        REQUIRE_FALSE(r.ok());
        CHECK(r.error().message.find("sync URL") != std::string::npos);
    }
}

TEST_CASE("Transport: certificate pins") {
    auto hex = fieldsync::parse_spki_pin(std::string(64, 'a'));
    REQUIRE(hex.ok());
    CHECK(hex->size() == 32);
    CHECK((*hex)[0] == 0xaa);
    auto b64 = fieldsync::parse_spki_pin("sha256/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=");
    REQUIRE(b64.ok());
    CHECK(b64->size() == 32);
    for (const char* bad :
         {"", "sha256/", "sha256/AAAA", "md5/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
          "sha256/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==", "zz"}) {
        CAPTURE(bad);
        CHECK_FALSE(fieldsync::parse_spki_pin(bad).ok());
    }
    auto none = fieldsync::spki_pin_from_pem("not a certificate");
    REQUIRE_FALSE(none.ok());
    CHECK(none.error().message.find("PEM") != std::string::npos);
}

TEST_CASE("Transport: the WebSocket transport reports failures as on_closed with a clear error") {
    SUBCASE("invalid URL") {
        auto t = fieldsync::make_websocket_transport();
        auto rec = std::make_shared<Recorder>();
        t->connect("gopher://x", {}, rec);
        auto c = rec->wait_closed();
        REQUIRE(c.has_value());
        CHECK(c->error.code == transport_errc::invalid_url);
        CHECK(rec->opened == 0);
    }
    SUBCASE("connection refused") {
        const auto port = closed_port();
        auto t = fieldsync::make_websocket_transport();
        auto rec = std::make_shared<Recorder>();
        t->connect("ws://127.0.0.1:" + std::to_string(port) + "/sync", {}, rec);
        auto c = rec->wait_closed();
        REQUIRE(c.has_value());
        CHECK(c->error.code == transport_errc::connect_failed);
        CHECK(c->error.message.find("127.0.0.1:" + std::to_string(port)) != std::string::npos);
        CHECK(c->code == 1006);
        CHECK_FALSE(c->clean());
    }
    SUBCASE("an HTTP server that refuses the upgrade") {
        std::string request;
        RawServer server([&](int fd) {
            request = read_request(fd);
            const std::string resp =
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
            ::send(fd, resp.data(), resp.size(), 0);
        });
        fieldsync::WebSocketOptions options;
        options.user_agent = "transport_test/1";
        auto t = fieldsync::make_websocket_transport(options);
        auto rec = std::make_shared<Recorder>();
        t->connect("ws://127.0.0.1:" + std::to_string(server.port()) + "/wrong",
                   {{"X-Tablet", "7"}}, rec);
        auto c = rec->wait_closed();
        REQUIRE(c.has_value());
        CHECK(c->error.code == transport_errc::handshake_failed);
        CHECK(c->error.message.find("404") != std::string::npos);
        CHECK(request.find("GET /wrong HTTP/1.1") != std::string::npos);
        CHECK(request.find("X-Tablet: 7") != std::string::npos);
        CHECK(request.find("transport_test/1") != std::string::npos);
    }
    SUBCASE("a peer that never answers: connect timeout") {
        std::atomic<bool> done{false};
        RawServer server([&](int fd) {
            (void)read_request(fd);
            while (!done)
                std::this_thread::sleep_for(10ms);
        });
        fieldsync::WebSocketOptions options;
        options.connect_timeout_ms = 300;
        auto t = fieldsync::make_websocket_transport(options);
        auto rec = std::make_shared<Recorder>();
        const auto t0 = std::chrono::steady_clock::now();
        t->connect("ws://127.0.0.1:" + std::to_string(server.port()), {}, rec);
        auto c = rec->wait_closed();
        done = true;
        REQUIRE(c.has_value());
        CHECK(c->error.code == transport_errc::timeout);
        CHECK(std::chrono::steady_clock::now() - t0 < 3s);
    }
    SUBCASE("wss:// to a peer that does not speak TLS") {
        RawServer server([&](int fd) {
            char buf[512];
            (void)::recv(fd, buf, sizeof buf, 0);
            const std::string resp = "HTTP/1.1 400 Bad Request\r\n\r\n";
            ::send(fd, resp.data(), resp.size(), 0);
        });
        auto t = fieldsync::make_websocket_transport();
        auto rec = std::make_shared<Recorder>();
        t->connect("wss://127.0.0.1:" + std::to_string(server.port()), {}, rec);
        auto c = rec->wait_closed();
        REQUIRE(c.has_value());
        CHECK(c->error.code == transport_errc::tls_failed);
        CHECK(c->error.message.find("TLS handshake failed") != std::string::npos);
    }
    SUBCASE("a missing CA file") {
        fieldsync::WebSocketOptions options;
        options.ca_file = "/nonexistent/ca.pem";
        auto t = fieldsync::make_websocket_transport(options);
        auto rec = std::make_shared<Recorder>();
        t->connect("wss://127.0.0.1:1", {}, rec);
        auto c = rec->wait_closed();
        REQUIRE(c.has_value());
        CHECK(c->error.code == transport_errc::tls_failed);
        CHECK(c->error.message.find("/nonexistent/ca.pem") != std::string::npos);
    }
    SUBCASE("close() while connecting ends cleanly with the app's code") {
        std::atomic<bool> done{false};
        RawServer server([&](int fd) {
            (void)read_request(fd);
            while (!done)
                std::this_thread::sleep_for(10ms);
        });
        auto t = fieldsync::make_websocket_transport();
        auto rec = std::make_shared<Recorder>();
        t->connect("ws://127.0.0.1:" + std::to_string(server.port()), {}, rec);
        std::this_thread::sleep_for(50ms);
        t->close(1000, "changed my mind");
        auto c = rec->wait_closed();
        done = true;
        REQUIRE(c.has_value());
        CHECK(c->clean());
        CHECK(c->code == 1000);
    }
    SUBCASE("destroying the transport while connecting: no call afterwards") {
        std::atomic<bool> done{false};
        RawServer server([&](int fd) {
            (void)read_request(fd);
            while (!done)
                std::this_thread::sleep_for(10ms);
        });
        auto rec = std::make_shared<Recorder>();
        {
            auto t = fieldsync::make_websocket_transport();
            t->connect("ws://127.0.0.1:" + std::to_string(server.port()), {}, rec);
            std::this_thread::sleep_for(50ms);
        }
        const int calls = rec->calls;
        std::this_thread::sleep_for(100ms);
        done = true;
        CHECK(rec->calls == calls);
        CHECK(rec->calls == 0);
    }
}
