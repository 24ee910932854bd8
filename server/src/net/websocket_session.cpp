// The sync WebSocket: a thin shell around the store worker's sans-I/O SyncSession.
// Threading: common.hpp. Protocol: protocol/SPEC.md (§1 transport, §4.7 closing).
//
// One session = two coroutines on the connection's strand, joined with `&&`:
//   reader: reads one binary message at a time and hands it to StoreWorker::frame().
//   writer: writes queued frames one at a time (Beast allows one outstanding write), then the
//           close frame when one was requested.
// The worker's replies (SyncOutput) arrive on its sync thread and are posted to the strand, where
// deliver() queues their frames and, when asked, a close with the given code.
//
// Backpressure, per connection (memory stays bounded whatever a client does):
//   pending = bytes queued or being written.
//   pending > max_pending_bytes      -> the reader stops reading this client (TCP flow control
//                                       then slows the client's pushes) until it drains.
//   frames handed to the store worker and not answered yet: at most 64, and at most
//                                       max_pending_bytes of them (plus the last frame read),
//                                       else the reader waits: a client cannot grow the
//                                       worker's queue faster than the worker commits. (The
//                                       worker answers every frame once; live catch-up frames
//                                       also count as answers, which only loosens the bound.)
//   pending > 2 * max_pending_bytes  -> the queue is dropped (except a frame being written)
//                                       and the connection closes with 1013 (try again later):
//                                       the device reconnects and resumes from its cursor, so
//                                       nothing is lost (SPEC.md §4.7).
// A write that makes no progress for 60 s closes the socket (a client that stopped reading).
//
// Close codes: 1002 for a text frame (SPEC.md §1: binary frames only), 1009 for a message over
// max_frame_bytes (sent by Beast itself), 1001 at shutdown, 1013 as above, and whatever the
// sync session asks for (1008 authentication, ...). Timeouts: Beast's suggested server
// settings (30 s handshake, pings when idle, closed after 300 s without a reply).
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/beast/websocket.hpp>

#include <deque>

#include "common.hpp"
#include "fieldsync/server/log.hpp"
#include "websocket.hpp"

namespace fieldsync::server::netlayer {

namespace {

namespace websocket = beast::websocket;

constexpr auto kWriteTimeout = std::chrono::seconds(60);
constexpr auto kCloseTimeout = std::chrono::seconds(10);
constexpr std::size_t kMaxInflightFrames = 64;

bool normal_ws_end(const error_code& ec) {
    return ec == websocket::error::closed || is_normal_end(ec);
}

class WsSession : public std::enable_shared_from_this<WsSession> {
public:
    WsSession(AnyStream&& stream, ConnPtr conn, NetContext& ctx)
        : m_ws(std::move(stream)),
          m_executor(m_ws.get_executor()),
          m_conn(std::move(conn)),
          m_ctx(ctx),
          m_wake(m_ws.get_executor(), net::steady_timer::time_point::max()),
          m_drained(m_ws.get_executor(), net::steady_timer::time_point::max()),
          m_watchdog(m_ws.get_executor(), net::steady_timer::time_point::max()),
          m_max_pending(ctx.config.max_pending_bytes) {}

    ~WsSession() {
        // Whatever is still queued no longer counts.
        m_ctx.stats.pending_bytes.fetch_sub(m_pending);
    }

    net::awaitable<void> run(Request req) {
        using namespace net::experimental::awaitable_operators;
        m_conn->lowest = &beast::get_lowest_layer(m_ws);
        m_ws.set_option(websocket::stream_base::timeout::suggested(beast::role_type::server));
        m_ws.set_option(websocket::stream_base::decorator([](websocket::response_type& res) {
            res.set(beast::http::field::server, kServerHeader);
        }));
        m_ws.read_message_max(m_ctx.config.max_frame_bytes);
        m_ws.binary(true);
        // SPEC.md §1: every message is one binary frame, so never split a message into
        // continuation frames (Beast would, above its write buffer size).
        m_ws.auto_fragment(false);
        auto [ec] = co_await m_ws.async_accept(req, use_tuple);
        if (ec) {
            log::debug(m_conn->label, ": WebSocket upgrade failed: ", ec.message());
            m_conn->lowest = nullptr;
            co_return;
        }
        GaugeGuard gauge(m_ctx.stats.ws);

        // The worker's replies: posted to this strand; a session that is gone drops them.
        // Only a weak_ptr is kept by the worker (no executor), so the worker may outlive the
        // io_context.
        std::weak_ptr<WsSession> weak = shared_from_this();
        m_id = m_ctx.worker.open_session(m_conn->peer, [weak](SyncOutput out) {
            if (auto self = weak.lock()) {
                auto ex = self->m_executor;  // immutable: safe from the worker's threads
                net::post(ex, [self = std::move(self), out = std::move(out)]() mutable {
                    self->deliver(std::move(out));
                });
            }
        });
        log::debug(m_conn->label, ": sync session ", m_id, " opened");
        m_conn->on_drain = [this] { m_draining = true; };
        m_conn->on_going_away = [this](std::uint16_t code, std::string reason) {
            request_close(code, std::move(reason));
        };

        co_await (read_loop() && write_loop());

        m_ctx.worker.close_session(m_id);
        m_conn->on_drain = nullptr;
        m_conn->on_going_away = nullptr;
        m_conn->lowest = nullptr;
        log::debug(m_conn->label, ": sync session ", m_id, " ended",
                   m_close_code ? " (closed with " + std::to_string(m_close_code) + ")" : "");
    }

private:
    /// Queues a session's output. On the strand.
    void deliver(SyncOutput out) {
        if (!m_inflight.empty()) {
            m_inflight_bytes -= m_inflight.front();
            m_inflight.pop_front();
            m_drained.cancel();  // the reader may resume
        }
        for (auto& f : out.frames)
            enqueue(std::move(f));
        if (out.close) request_close(out.close_code ? out.close_code : 1000, out.close_reason);
    }

    void enqueue(protocol::Bytes frame) {
        if (m_dead || m_closing) return;
        m_pending += frame.size();
        m_ctx.stats.pending_bytes.fetch_add(frame.size());
        m_queue.push_back(std::move(frame));
        m_wake.cancel();
        if (m_pending > 2 * m_max_pending) {
            // Keep only the frame being written (its buffer is in use).
            while (m_queue.size() > (m_writing ? 1u : 0u)) {
                release(m_queue.back().size());
                m_queue.pop_back();
            }
            log::warn(m_conn->label, ": sync session ", m_id,
                      " fell more than 2 x max_pending_bytes behind; closing with 1013");
            request_close(1013, "too far behind: reconnect and resume from your cursor");
        }
    }

    void release(std::size_t n) {
        m_pending -= n;
        m_ctx.stats.pending_bytes.fetch_sub(n);
    }

    void request_close(std::uint16_t code, std::string reason) {
        if (m_closing || m_dead) return;
        m_closing = true;
        m_close_code = code;
        if (reason.size() > 120) reason.resize(120);  // a close frame holds 123 bytes of reason
        m_close_reason = std::move(reason);
        m_wake.cancel();
        m_drained.cancel();
    }

    /// Closes the socket when the current write (or the close handshake) has not finished
    /// within `timeout`.
    void arm_watchdog(std::chrono::seconds timeout, const char* what) {
        m_watchdog.expires_after(timeout);
        m_watchdog.async_wait([self = shared_from_this(), what](const error_code& ec) {
            if (ec) return;  // disarmed
            log::info(self->m_conn->label, ": sync session ", self->m_id, ": ", what,
                      " timed out; closing the connection");
            error_code ignored;
            beast::get_lowest_layer(self->m_ws).socket().close(ignored);
        });
    }

    bool inflight_full() const noexcept {
        return !m_inflight.empty() &&
               (m_inflight.size() >= kMaxInflightFrames || m_inflight_bytes >= m_max_pending);
    }

    static net::awaitable<bool> cancelled() {
        auto cs = co_await net::this_coro::cancellation_state;
        co_return cs.cancelled() != net::cancellation_type::none;
    }

    net::awaitable<void> read_loop() {
        beast::flat_buffer buffer;
        while (!m_dead) {
            // Backpressure: stop reading while the client is not taking our frames.
            while ((m_pending > m_max_pending || inflight_full()) && !m_dead && !m_closing) {
                m_drained.expires_at(net::steady_timer::time_point::max());
                auto [ec] = co_await m_drained.async_wait(use_tuple);
                (void)ec;
                if (co_await cancelled()) m_dead = true;
            }
            // After a close request, Beast's async_close reads the peer's close frame itself.
            if (m_dead || m_closing) break;
            auto [ec, n] = co_await m_ws.async_read(buffer, use_tuple);
            if (ec) {
                if (ec == websocket::error::message_too_big)
                    log::info(m_conn->label, ": sync session ", m_id,
                              ": message over max_frame_bytes; closed with 1009");
                else if (!normal_ws_end(ec))
                    log::debug(m_conn->label, ": sync session ", m_id, ": read: ", ec.message());
                // The connection is over unless we are in our own close handshake.
                if (!m_closing) m_dead = true;
                break;
            }
            if (!m_ws.got_binary()) {
                request_close(1002,
                              "text frames are not allowed: send each message as one "
                              "binary CBOR frame");
                break;
            }
            auto data = buffer.cdata();
            const auto* p = static_cast<const std::uint8_t*>(data.data());
            protocol::Bytes frame(p, p + n);
            buffer.consume(n);
            if (m_draining) continue;  // shutting down: the device will send it again
            m_inflight.push_back(n);
            m_inflight_bytes += n;
            m_ctx.worker.frame(m_id, std::move(frame));
        }
        m_reader_done = true;
        m_wake.cancel();
    }

    net::awaitable<void> write_loop() {
        for (;;) {
            if (m_dead) break;
            if (!m_queue.empty()) {
                m_writing = true;
                arm_watchdog(kWriteTimeout, "a write");
                auto& front = m_queue.front();
                auto [ec, n] = co_await m_ws.async_write(net::buffer(front), use_tuple);
                (void)n;
                m_watchdog.cancel();
                m_writing = false;
                release(m_queue.front().size());
                m_queue.pop_front();
                m_drained.cancel();  // the reader may resume
                if (ec) {
                    if (!normal_ws_end(ec))
                        log::debug(m_conn->label, ": sync session ", m_id,
                                   ": write: ", ec.message());
                    m_dead = true;
                    break;
                }
                continue;
            }
            if (m_closing) {
                arm_watchdog(kCloseTimeout, "the close handshake");
                auto [ec] = co_await m_ws.async_close(
                    websocket::close_reason(static_cast<websocket::close_code>(m_close_code),
                                            m_close_reason),
                    use_tuple);
                m_watchdog.cancel();
                if (ec && !normal_ws_end(ec))
                    log::debug(m_conn->label, ": sync session ", m_id, ": close: ", ec.message());
                m_dead = true;
                m_drained.cancel();
                break;
            }
            if (m_reader_done) break;
            m_wake.expires_at(net::steady_timer::time_point::max());
            auto [ec] = co_await m_wake.async_wait(use_tuple);
            (void)ec;  // cancelled to wake us up
            if (co_await cancelled()) {
                m_dead = true;
                break;
            }
        }
        // Nothing more will be written.
        while (!m_queue.empty()) {
            release(m_queue.back().size());
            m_queue.pop_back();
        }
        m_drained.cancel();
    }

    websocket::stream<AnyStream> m_ws;
    const net::any_io_executor m_executor;  // the connection's strand
    ConnPtr m_conn;
    NetContext& m_ctx;
    net::steady_timer m_wake;      // the writer waits on it; cancel() wakes it
    net::steady_timer m_drained;   // the reader waits on it while over the limit
    net::steady_timer m_watchdog;  // bounds one write or the close handshake
    const std::size_t m_max_pending;
    StoreWorker::SessionId m_id = 0;

    std::deque<std::size_t> m_inflight;  // sizes of the frames the worker has not answered
    std::size_t m_inflight_bytes = 0;
    std::deque<protocol::Bytes> m_queue;
    std::size_t m_pending = 0;
    bool m_writing = false;
    bool m_closing = false;  // a close was requested: write the queue, then the close frame
    bool m_dead = false;     // the connection is over: write nothing more
    bool m_reader_done = false;
    bool m_draining = false;
    std::uint16_t m_close_code = 0;
    std::string m_close_reason;
};

}  // namespace

net::awaitable<void> run_websocket(AnyStream stream, Request req, ConnPtr conn, NetContext& ctx) {
    auto session = std::make_shared<WsSession>(std::move(stream), std::move(conn), ctx);
    co_await session->run(std::move(req));
}

}  // namespace fieldsync::server::netlayer
