// Transports: how the replicator's frames reach the server.
//
// A Transport carries ONE connection: binary WebSocket frames (one CBOR message each,
// protocol/SPEC.md §1) between the sync engine and the server's `/sync` endpoint. The SDK ships
// a default implementation (Boost.Beast over TCP or TLS, make_websocket_transport); an app may
// plug in its platform's own WebSocket (OkHttp, URLSessionWebSocketTask, ...) by implementing
// Transport, or through the C struct `fs_transport` in fieldsync.h, which is bridged to this
// interface.
//
// Ordering contract (modelled on Realm's SyncSocketProvider / WebSocketObserver):
//
//  1. The replicator asks its TransportFactory for a new Transport for every connection attempt
//     and calls connect() exactly once on it.
//  2. The transport reports, through the delegate given to connect():
//         on_open()            at most once, when the WebSocket handshake completed;
//         on_frame(bytes)      zero or more times, only after on_open, one call per binary
//                              frame, in the order the frames arrived;
//         on_closed(info)      exactly once, last: after a failed connect (without on_open), a
//                              close by either side, or a network error.
//     Calls are made in this order, NEVER concurrently, from the transport's own thread(s)
//     (for the default transport: its io thread). They should be quick and must not block:
//     the replicator's delegate only queues the event for its own thread.
//  3. A transport should not call the delegate from inside connect(), send() or close() (post
//     the event instead); the replicator's delegate tolerates it, but other delegates may not.
//  4. send() and close() are called only from one thread at a time (the replicator's thread),
//     after connect(). send() before on_open or after close() is ignored. close() starts an
//     orderly close; on_closed follows (with the given code) when it completed or timed out.
//  5. Destroying a Transport aborts the connection if it is still open. After the destructor
//     returned, no delegate method is called any more (no on_closed either). The delegate is
//     held by shared_ptr, so even a late call never touches freed memory.
//
// Threading: a Transport object is used from one thread at a time (see 4); the delegate is
// called on the transport's thread (see 2).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "fieldsync/protocol/cbor.hpp"
#include "fieldsync/protocol/error.hpp"

namespace fieldsync {

/// Extra HTTP headers of the WebSocket upgrade request (name, value), e.g. a User-Agent or a
/// proxy's authorization. Credentials of the sync protocol travel in `hello`, not here.
using TransportHeaders = std::vector<std::pair<std::string, std::string>>;

/// Why a connection ended, as reported by the transport. Values are stable (the C API's
/// fs_error_code uses the same numbers).
enum class transport_errc {
    closed = 100,            ///< the connection was closed (by either side); not an error
    connect_failed = 101,    ///< name resolution or TCP connect failed, or the peer reset
    tls_failed = 102,        ///< TLS handshake failed: untrusted certificate, wrong host name,
                             ///< protocol mismatch
    pin_mismatch = 103,      ///< the server's public key matches none of the configured pins
    handshake_failed = 104,  ///< the HTTP upgrade to WebSocket was refused (wrong URL, 404, ...)
    timeout = 105,           ///< connect, handshake or idle timeout
    protocol_error = 106,    ///< a text frame, an oversized frame, a broken WebSocket stream
    invalid_url = 107,       ///< the URL is not ws://host[:port][/path] or wss://...
    network = 108,           ///< any other I/O error after the connection was up
};
/// The category of transport_errc ("fieldsync.transport"). \note Thread-safe.
const std::error_category& transport_category() noexcept;
std::error_code make_error_code(transport_errc e) noexcept;

/// How a connection ended.
struct TransportClose {
    /// The WebSocket close code (1000 normal, 1001 going away, 1006 abnormal: no close frame,
    /// 1008 policy, 1011 server error, 1013 try again later, ...).
    std::uint16_t code = 1006;
    std::string reason;  ///< the close frame's reason, "" when none
    /// Empty (code 0) for an orderly close; otherwise what failed, with a message for people:
    /// "TLS handshake with sync.example.org:443 failed: certificate verify failed (unable to
    /// get local issuer certificate)". Categories: transport_category(), or any other.
    protocol::Error error;

    bool clean() const noexcept { return !error.code; }
};

/// Receives one connection's events. See the ordering contract in the file comment.
class TransportDelegate {
public:
    virtual ~TransportDelegate() = default;
    /// The WebSocket is open; send() may be called.
    virtual void on_open() = 0;
    /// One binary frame arrived. `frame` is valid only during the call.
    virtual void on_frame(protocol::ByteView frame) = 0;
    /// The connection is over; the last call for it.
    virtual void on_closed(const TransportClose& close) = 0;
};

/// One connection to the server. See the ordering contract in the file comment.
class Transport {
public:
    /// Aborts the connection if still open; afterwards the delegate is never called again.
    virtual ~Transport() = default;
    /// Starts connecting to `url` (ws://host:port/sync or wss://...). Returns at once; the
    /// outcome arrives as on_open or on_closed. Called once per Transport.
    virtual void connect(const std::string& url, const TransportHeaders& headers,
                         std::shared_ptr<TransportDelegate> delegate) = 0;
    /// Queues one binary frame. Ignored before on_open and after close().
    virtual void send(protocol::Bytes frame) = 0;
    /// Starts an orderly close with this WebSocket close code and reason; on_closed follows.
    virtual void close(std::uint16_t code, std::string reason) = 0;
};

/// Makes a new Transport for each connection attempt. Called on the replicator's thread.
using TransportFactory = std::function<std::unique_ptr<Transport>()>;

/// Options of the default transport (Boost.Beast WebSocket over TCP, or TLS for wss://).
struct WebSocketOptions {
    /// PEM file with the certificate authorities to trust (e.g. the county's own CA made by
    /// fieldsync-mkcert). Empty: the system's default store (OpenSSL's default paths).
    std::string ca_file;
    /// Certificate pins: SHA-256 of the server certificate's SubjectPublicKeyInfo, written
    /// "sha256/<base64>" (as OkHttp and HPKP do) or as 64 hex digits. When not empty, the leaf
    /// certificate's key must match one of them IN ADDITION to the normal chain and host name
    /// verification. spki_pin_from_pem() computes a pin from a certificate file.
    std::vector<std::string> pins;
    /// TCP connect, TLS handshake and WebSocket upgrade together must finish within this.
    std::uint32_t connect_timeout_ms = 15'000;
    /// With nothing received for this long, a ping is sent; with no answer for as long again,
    /// the connection is closed with transport_errc::timeout. 0 disables keep-alive.
    std::uint32_t idle_timeout_ms = 30'000;
    /// An orderly close that takes longer than this is aborted.
    std::uint32_t close_timeout_ms = 3'000;
    /// Largest frame accepted from the server.
    std::uint64_t max_frame_bytes = 16u << 20;
    /// User-Agent of the upgrade request.
    std::string user_agent = "fieldsync-sdk/0.1";
};

/// The default transport for one connection: a Boost.Beast WebSocket client over TCP (ws://)
/// or TLS (wss://, OpenSSL: chain verified against `ca_file` or the system store, host name
/// verified, SNI sent, optional SPKI pins), with its own io thread. Binary frames only.
/// \note Thread-safe to create; the result follows the Transport contract.
std::unique_ptr<Transport> make_websocket_transport(WebSocketOptions options = {});

/// A factory of make_websocket_transport(options). \note Thread-safe.
TransportFactory websocket_transport_factory(WebSocketOptions options = {});

/// The pin ("sha256/<base64>") of the first certificate in PEM text: SHA-256 over the DER of
/// its SubjectPublicKeyInfo. Failure: invalid_value when no certificate can be read.
/// \note Thread-safe.
protocol::Result<std::string> spki_pin_from_pem(std::string_view pem);

/// Checks a pin's syntax and returns its 32 raw bytes. Accepts "sha256/<base64>" and 64 hex
/// digits. Failure: invalid_value naming the pin. \note Thread-safe.
protocol::Result<std::vector<std::uint8_t>> parse_spki_pin(std::string_view pin);

/// The parts of a sync URL.
struct SyncUrl {
    bool tls = false;    ///< wss (or https)
    std::string host;    ///< without brackets for IPv6 literals
    std::string port;    ///< "80"/"443" when absent
    std::string target;  ///< path and query; "/sync" when the URL has no path
};
/// Parses ws://host[:port][/path], wss://..., and for convenience http:// and https:// (same
/// as ws/wss). Failure: invalid_value naming the problem. \note Thread-safe.
protocol::Result<SyncUrl> parse_sync_url(std::string_view url);

}  // namespace fieldsync

namespace std {
template <>
struct is_error_code_enum<fieldsync::transport_errc> : true_type {};
}  // namespace std
