// AnyStream: a plain TCP stream or a TLS stream behind one type (Beast inside).
//
// Why: the HTTP and WebSocket code is written once against AnyStream instead of being a
// template over two stream types. Every Beast/Asio composed operation (http::async_read,
// websocket reads and writes, ...) is then instantiated once, not twice; instantiating them
// all again over ssl_stream cost ~40 s of compile time per translation unit. The price is one
// virtual call and one type-erased handler (asio::any_completion_handler) per read_some /
// write_some, which is noise next to a system call.
//
// Requirements met: AsyncReadStream, AsyncWriteStream (buffer sequences are passed down as up
// to 16 buffers: write_some may write less, which the composed operations handle; ssl_stream
// coalesces small buffers itself), `next_layer()` reaching the beast::tcp_stream (so
// beast::get_lowest_layer gives the socket and its timeouts), and the WebSocket teardown
// customization points (teardown / async_teardown found by argument-dependent lookup).
//
// \note Like the streams it wraps: one operation of each kind at a time, on the strand.
#pragma once

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/beast/core/role.hpp>

#include <array>
#include <memory>

#include "common.hpp"

namespace fieldsync::server::netlayer {

/// A buffer sequence of at most 16 buffers, taken from the front of another sequence.
template <class Buffer>
class BufferList {
public:
    template <class Sequence>
    explicit BufferList(const Sequence& seq) {
        auto it = net::buffer_sequence_begin(seq);
        auto end = net::buffer_sequence_end(seq);
        for (; it != end && m_n < m_items.size(); ++it) {
            Buffer b(*it);
            if (b.size() > 0) m_items[m_n++] = b;
        }
    }
    const Buffer* begin() const noexcept { return m_items.data(); }
    const Buffer* end() const noexcept { return m_items.data() + m_n; }

private:
    std::array<Buffer, 16> m_items{};
    std::size_t m_n = 0;
};
using MutableBuffers = BufferList<net::mutable_buffer>;
using ConstBuffers = BufferList<net::const_buffer>;

class AnyStream {
public:
    using executor_type = net::any_io_executor;
    using IoHandler = net::any_completion_handler<void(error_code, std::size_t)>;
    using Handler = net::any_completion_handler<void(error_code)>;

    struct Impl {
        virtual ~Impl() = default;
        virtual beast::tcp_stream& lowest() noexcept = 0;
        virtual bool tls() const noexcept = 0;
        virtual void read_some(MutableBuffers buffers, IoHandler handler) = 0;
        virtual void write_some(ConstBuffers buffers, IoHandler handler) = 0;
        /// Ends the connection politely: TLS close_notify, or a TCP half-close.
        virtual void shutdown(Handler handler) = 0;
        /// The WebSocket teardown (Beast's, for the wrapped stream type).
        virtual void teardown(beast::role_type role, Handler handler) = 0;
        virtual void teardown(beast::role_type role, error_code& ec) = 0;
    };

    explicit AnyStream(std::unique_ptr<Impl> impl) noexcept : m_impl(std::move(impl)) {}
    AnyStream(AnyStream&&) noexcept = default;
    AnyStream& operator=(AnyStream&&) noexcept = default;

    executor_type get_executor() noexcept { return m_impl->lowest().get_executor(); }
    /// The TCP stream (for beast::get_lowest_layer): its socket, timeouts and cancel().
    beast::tcp_stream& next_layer() noexcept { return m_impl->lowest(); }
    const beast::tcp_stream& next_layer() const noexcept { return m_impl->lowest(); }
    bool tls() const noexcept { return m_impl->tls(); }

    template <class MutableBufferSequence, class Token>
    auto async_read_some(const MutableBufferSequence& buffers, Token&& token) {
        return net::async_initiate<Token, void(error_code, std::size_t)>(
            [](auto handler, Impl* impl, MutableBuffers b) {
                impl->read_some(b, IoHandler(std::move(handler)));
            },
            token, m_impl.get(), MutableBuffers(buffers));
    }

    template <class ConstBufferSequence, class Token>
    auto async_write_some(const ConstBufferSequence& buffers, Token&& token) {
        return net::async_initiate<Token, void(error_code, std::size_t)>(
            [](auto handler, Impl* impl, ConstBuffers b) {
                impl->write_some(b, IoHandler(std::move(handler)));
            },
            token, m_impl.get(), ConstBuffers(buffers));
    }

    template <class Token>
    auto async_shutdown(Token&& token) {
        return net::async_initiate<Token, void(error_code)>(
            [](auto handler, Impl* impl) { impl->shutdown(Handler(std::move(handler))); }, token,
            m_impl.get());
    }

    Impl& impl() noexcept { return *m_impl; }

private:
    std::unique_ptr<Impl> m_impl;
};

/// Wraps an established stream. Defined in listener.cpp, where the concrete stream types'
/// operations are instantiated once.
AnyStream make_any_stream(PlainStream stream);
AnyStream make_any_stream(TlsStream stream);

/// Serves HTTP/1.1 on an established stream (bytes already read are in `buffer`); upgrades
/// GET /sync to the WebSocket session. Defined in http_session.cpp. \note On the conn's strand.
net::awaitable<void> run_http(AnyStream stream, beast::flat_buffer buffer, ConnPtr conn,
                              NetContext& ctx);

// WebSocket teardown customization points (websocket::stream<AnyStream> finds them by ADL).
inline void teardown(beast::role_type role, AnyStream& stream, error_code& ec) {
    stream.impl().teardown(role, ec);
}

template <class TeardownHandler>
void async_teardown(beast::role_type role, AnyStream& stream, TeardownHandler&& handler) {
    stream.impl().teardown(role, AnyStream::Handler(std::forward<TeardownHandler>(handler)));
}

}  // namespace fieldsync::server::netlayer
