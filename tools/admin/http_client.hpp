// A small blocking HTTP/1.1 client for the admin command line: one request per connection,
// http:// or https:// (OpenSSL, certificate chain and host name verified), optional streaming
// of the response body. Implemented with Boost.Beast in http_client.cpp, the only translation
// unit of the tool that includes Beast (it compiles slowly).
#pragma once

#include <chrono>
#include <functional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace fieldsync::admin {

/// A server address: http[s]://host[:port][/prefix].
struct ServerUrl {
    bool tls = false;
    std::string host;    ///< name or IP literal (without brackets)
    std::string port;    ///< "80", "443" or as given
    std::string prefix;  ///< path before /api, without a trailing slash ("" usually)
    std::string text;    ///< as given, normalised (no trailing slash)
};

/// Parses a server URL. Throws UsageError naming what is wrong.
ServerUrl parse_server_url(std::string_view text);

/// A command-line mistake (exit status 1).
struct UsageError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

/// The server could not be reached, the connection failed, or TLS verification failed
/// (exit status 3). The message says which and what to check.
struct NetworkError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

struct ClientOptions {
    std::string cacert;                         ///< PEM file of trusted CAs; "" = system store
    std::chrono::seconds timeout{60};           ///< connect, TLS handshake, and each read/write
    std::size_t max_body = 256u * 1024 * 1024;  ///< buffered responses only
};

struct HttpRequestSpec {
    std::string method = "GET";
    std::string target;  ///< path and query, e.g. "/api/users"
    std::string body;
    std::string content_type;  ///< of the body ("" when none)
    std::string token;         ///< bearer token ("" = none)
};

struct HttpReply {
    unsigned status = 0;
    std::string content_type;
    std::string body;  ///< empty when streamed
};

/// Sends one request and returns the reply. When `sink` is set and the status is 2xx, the body
/// is passed to `sink` piece by piece as it arrives instead of being buffered; `sink` returns
/// false to stop. Throws NetworkError on connection/TLS/timeouts.
/// \note Not thread-safe; each call opens and closes its own connection.
HttpReply http_request(const ServerUrl& server, const ClientOptions& options,
                       const HttpRequestSpec& request,
                       const std::function<bool(std::string_view)>& sink = {});

/// Percent-encodes a query or path component.
std::string url_encode(std::string_view text);

}  // namespace fieldsync::admin
