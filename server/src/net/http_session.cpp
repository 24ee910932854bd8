// HTTP/1.1 sessions: keep-alive request loop, routing, the bridge to the HTTP API (including
// chunked streaming from a ChunkSource), static console files, /healthz and /metrics, and the
// upgrade of GET /sync to the sync WebSocket. Threading: common.hpp.
//
// Routes:
//   GET  /healthz     200 {"status":"ok"} when the store worker answers within 5 s; 503 when
//                     it does not, or while shutting down
//   GET  /metrics     Prometheus text (metrics.hpp)
//   *    /api/...     HttpApi (JSON; docs/api.md); Cache-Control: no-store
//   GET  /console/... static files from console_dir (static_files.hpp)
//   GET  /            302 to /console/
//   GET  /sync        WebSocket upgrade (426 without one)
// Every response carries the security headers (CSP, nosniff, no-referrer).
//
// Limits: request head 16 KiB, body max_body_bytes (413 beyond), 60 s to read a request
// (also the keep-alive idle time), 60 s per write.
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket/rfc6455.hpp>

#include <cstdio>
#include <optional>

#include "any_stream.hpp"
#include "common.hpp"
#include "fieldsync/protocol/json.hpp"
#include "fieldsync/server/log.hpp"
#include "metrics.hpp"
#include "static_files.hpp"
#include "websocket.hpp"

namespace fieldsync::server::netlayer {

namespace {

namespace http = beast::http;

using StringResponse = http::response<http::string_body>;

constexpr auto kReadTimeout = std::chrono::seconds(60);
constexpr auto kWriteTimeout = std::chrono::seconds(60);
constexpr std::size_t kHeaderLimit = 16 * 1024;

constexpr const char* kCsp =
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// Calls start(done) once; `done(value)` may run on any thread, and resumes the awaiting
/// coroutine on its own executor (the connection's strand) with `value`.
template <class T, class Start>
auto from_worker(Start start) {
    return net::async_initiate<decltype(net::use_awaitable), void(T)>(
        [start = std::move(start)](auto handler) mutable {
            auto ex = net::get_associated_executor(handler);
            auto shared = std::make_shared<decltype(handler)>(std::move(handler));
            start(std::function<void(T)>([shared, ex](T value) mutable {
                net::post(ex, [shared, value = std::move(value)]() mutable {
                    std::move (*shared)(std::move(value));
                });
            }));
        },
        net::use_awaitable);
}

// call_api and next_chunk are plain functions returning the awaitable, not coroutines: GCC 12
// miscompiles a lambda inside a coroutine that captures one of the coroutine's parameters (it
// captures the caller's moved-from object, not the frame's copy). Coroutines below copy such
// parameters into locals before any lambda uses them.
net::awaitable<HttpResponse> call_api(HttpApi& api, HttpRequest request) {
    return from_worker<HttpResponse>(
        [&api, request = std::move(request)](std::function<void(HttpResponse)> done) mutable {
            api.handle(std::move(request), std::move(done));
        });
}

net::awaitable<std::optional<std::string>> next_chunk(std::shared_ptr<ChunkSource> source) {
    return from_worker<std::optional<std::string>>(
        [source = std::move(source)](std::function<void(std::optional<std::string>)> done) {
            source->next(std::move(done));
        });
}

/// True when the store worker runs a no-op job within `timeout`.
net::awaitable<bool> ping_worker(StoreWorker& worker, std::chrono::milliseconds timeout) {
    struct State {
        explicit State(net::any_io_executor ex) : timer(std::move(ex)) {}
        net::steady_timer timer;
        bool ok = false;
    };
    auto ex = co_await net::this_coro::executor;
    auto state = std::make_shared<State>(ex);
    state->timer.expires_after(timeout);
    worker.post([](Store&, const protocol::Schema&) { return false; },
                [state, ex](const Status& st) {
                    bool ok = st.ok();
                    net::post(ex, [state, ok] {
                        state->ok = ok;
                        state->timer.cancel();
                    });
                });
    auto [ec] = co_await state->timer.async_wait(use_tuple);
    (void)ec;
    co_return state->ok;
}

enum class RouteKind { api, plain, console };

template <class Header>
void security_headers(Header& h, RouteKind kind) {
    h.set(http::field::server, kServerHeader);
    h.set("Content-Security-Policy", kCsp);
    h.set("X-Content-Type-Options", "nosniff");
    h.set("Referrer-Policy", "no-referrer");
    if (kind == RouteKind::api || kind == RouteKind::plain)
        h.set(http::field::cache_control, "no-store");
    else
        h.set(http::field::cache_control, "no-cache");
}

StringResponse json_error(http::status status, std::string_view code, std::string_view message) {
    StringResponse res{status, 11};
    res.set(http::field::content_type, "application/json");
    std::string body = "{\"error\":{\"code\":";
    fieldsync::protocol::append_json_string(code, body);
    body += ",\"message\":";
    fieldsync::protocol::append_json_string(message, body);
    body += "}}";
    res.body() = std::move(body);
    return res;
}

void set_write_timeout(AnyStream& stream) {
    beast::get_lowest_layer(stream).expires_after(kWriteTimeout);
}

/// Writes `res` (headers completed here) and returns whether the connection stays open.
net::awaitable<bool> send(AnyStream& stream, const Request& req, StringResponse res, RouteKind kind,
                          bool keep_alive) {
    res.version(req.version());
    res.keep_alive(keep_alive);
    security_headers(res, kind);
    res.prepare_payload();
    set_write_timeout(stream);
    error_code ec;
    if (req.method() == http::verb::head) {
        http::response<http::empty_body> head(std::move(res.base()));
        auto [e, n] = co_await http::async_write(stream, head, use_tuple);
        (void)n;
        ec = e;
    } else {
        auto [e, n] = co_await http::async_write(stream, res, use_tuple);
        (void)n;
        ec = e;
    }
    co_return !ec && keep_alive;
}

net::awaitable<bool> redirect(AnyStream& stream, const Request& req, http::status status,
                              const char* location, bool keep_alive) {
    StringResponse res{status, 11};
    res.set(http::field::location, location);
    res.set(http::field::content_type, "text/plain; charset=utf-8");
    res.body() = std::string("See ") + location + "\n";
    co_return co_await send(stream, req, std::move(res), RouteKind::plain, keep_alive);
}

net::awaitable<bool> method_not_allowed(AnyStream& stream, const Request& req, bool keep_alive) {
    auto res = json_error(http::status::method_not_allowed, "method_not_allowed",
                          "only GET and HEAD are allowed here");
    res.set(http::field::allow, "GET, HEAD");
    co_return co_await send(stream, req, std::move(res), RouteKind::plain, keep_alive);
}

bool get_or_head(const Request& req) {
    return req.method() == http::verb::get || req.method() == http::verb::head;
}

net::awaitable<bool> serve_console(AnyStream& stream, const Request& req, std::string_view path,
                                   NetContext& ctx, bool keep_alive) {
    if (!get_or_head(req)) co_return co_await method_not_allowed(stream, req, keep_alive);
    std::optional<StaticFile> file;
    if (!ctx.config.console_dir.empty())
        file = resolve_static(ctx.config.console_dir,
                              path.substr(std::string_view("/console/").size()));
    http::file_body::value_type body;
    error_code ec;
    if (file) body.open(file->path.c_str(), beast::file_mode::scan, ec);
    if (!file || ec) {
        auto res = json_error(http::status::not_found, "not_found",
                              ctx.config.console_dir.empty()
                                  ? "the console is not installed on this server (console_dir)"
                                  : "no such file");
        co_return co_await send(stream, req, std::move(res), RouteKind::console, keep_alive);
    }
    const auto size = body.size();
    set_write_timeout(stream);
    if (req.method() == http::verb::head) {
        http::response<http::empty_body> res{http::status::ok, req.version()};
        security_headers(res, RouteKind::console);
        res.set(http::field::content_type, file->content_type);
        res.content_length(size);
        res.keep_alive(keep_alive);
        auto [e, n] = co_await http::async_write(stream, res, use_tuple);
        (void)n;
        co_return !e && keep_alive;
    }
    http::response<http::file_body> res{std::piecewise_construct, std::make_tuple(std::move(body)),
                                        std::make_tuple(http::status::ok, req.version())};
    security_headers(res, RouteKind::console);
    res.set(http::field::content_type, file->content_type);
    res.content_length(size);
    res.keep_alive(keep_alive);
    auto [e, n] = co_await http::async_write(stream, res, use_tuple);
    (void)n;
    co_return !e && keep_alive;
}

net::awaitable<bool> serve_api(AnyStream& stream, Request& req, Conn& conn, NetContext& ctx,
                               bool keep_alive) {
    HttpRequest r;
    r.method = std::string(req.method_string());
    r.target = std::string(req.target());
    r.authorization = std::string(req[http::field::authorization]);
    r.content_type = std::string(req[http::field::content_type]);
    r.body = std::move(req.body());
    r.peer = conn.peer;
    HttpResponse resp = co_await call_api(ctx.api, std::move(r));
    keep_alive = keep_alive && !ctx.draining;

    if (!resp.stream) {
        StringResponse res{http::status::ok, 11};
        res.result(resp.status);
        res.set(http::field::content_type, resp.content_type);
        for (const auto& [name, value] : resp.headers)
            res.set(name, value);
        res.body() = std::move(resp.body);
        co_return co_await send(stream, req, std::move(res), RouteKind::api, keep_alive);
    }

    // Streamed body: chunked for HTTP/1.1 (pulling the next chunk only after the previous one
    // was written); for HTTP/1.0, the raw bytes and then the end of the connection.
    const bool chunked = req.version() >= 11;
    if (!chunked) keep_alive = false;
    http::response<http::empty_body> head{http::status::ok, req.version()};
    head.result(resp.status);
    security_headers(head, RouteKind::api);
    head.set(http::field::content_type, resp.content_type);
    for (const auto& [name, value] : resp.headers)
        head.set(name, value);
    head.keep_alive(keep_alive);
    if (chunked) head.chunked(true);
    http::response_serializer<http::empty_body> sr{head};
    set_write_timeout(stream);
    auto [hec, hn] = co_await http::async_write_header(stream, sr, use_tuple);
    (void)hn;
    if (hec) co_return false;
    if (req.method() == http::verb::head) co_return keep_alive;
    for (;;) {
        auto chunk = co_await next_chunk(resp.stream);
        if (!chunk) break;
        if (chunk->empty()) continue;
        set_write_timeout(stream);
        error_code wec;
        if (chunked) {
            auto [e, n] = co_await net::async_write(
                stream, http::make_chunk(net::buffer(chunk->data(), chunk->size())), use_tuple);
            (void)n;
            wec = e;
        } else {
            auto [e, n] = co_await net::async_write(
                stream, net::buffer(chunk->data(), chunk->size()), use_tuple);
            (void)n;
            wec = e;
        }
        if (wec) co_return false;  // the client went away: stop pulling from the source
    }
    if (chunked) {
        set_write_timeout(stream);
        auto [e, n] = co_await net::async_write(stream, http::make_chunk_last(), use_tuple);
        (void)n;
        if (e) co_return false;
    }
    co_return keep_alive;
}

/// Handles one request; returns whether to read another on this connection.
net::awaitable<bool> handle(AnyStream& stream, Request& req, Conn& conn, NetContext& ctx) {
    const bool keep_alive = req.keep_alive() && !ctx.draining;
    const std::string_view target = req.target();
    const std::string_view path = target.substr(0, target.find('?'));

    if (path == "/api" || path.starts_with("/api/"))
        co_return co_await serve_api(stream, req, conn, ctx, keep_alive);

    if (path == "/healthz") {
        if (!get_or_head(req)) co_return co_await method_not_allowed(stream, req, keep_alive);
        bool ok = !ctx.draining && co_await ping_worker(ctx.worker, std::chrono::seconds(5));
        StringResponse res{ok ? http::status::ok : http::status::service_unavailable, 11};
        res.set(http::field::content_type, "application/json");
        res.body() = ok ? R"({"status":"ok"})"
                        : (ctx.draining ? R"({"status":"shutting_down"})"
                                        : R"({"status":"store_unavailable"})");
        co_return co_await send(stream, req, std::move(res), RouteKind::plain, keep_alive);
    }
    if (path == "/metrics") {
        if (!get_or_head(req)) co_return co_await method_not_allowed(stream, req, keep_alive);
        StringResponse res{http::status::ok, 11};
        res.set(http::field::content_type, "text/plain; version=0.0.4; charset=utf-8");
        res.body() = render_metrics(ctx.worker.stats(), counters_of(ctx));
        co_return co_await send(stream, req, std::move(res), RouteKind::plain, keep_alive);
    }
    if (path.starts_with("/console/"))
        co_return co_await serve_console(stream, req, path, ctx, keep_alive);
    if (path == "/console")
        co_return co_await redirect(stream, req, http::status::moved_permanently, "/console/",
                                    keep_alive);
    if (path == "/") {
        if (!get_or_head(req)) co_return co_await method_not_allowed(stream, req, keep_alive);
        co_return co_await redirect(stream, req, http::status::found, "/console/", keep_alive);
    }
    if (path == "/sync") {
        auto res = json_error(http::status::upgrade_required, "upgrade_required",
                              "/sync speaks the sync protocol over a WebSocket (protocol/SPEC.md)");
        res.set(http::field::upgrade, "websocket");
        res.set(http::field::connection, "Upgrade");
        co_return co_await send(stream, req, std::move(res), RouteKind::plain, keep_alive);
    }
    auto res = json_error(http::status::not_found, "not_found",
                          "no such path: " + std::string(path.substr(0, 200)));
    co_return co_await send(stream, req, std::move(res), RouteKind::plain, keep_alive);
}

net::awaitable<void> close_gracefully(AnyStream& stream) {
    beast::get_lowest_layer(stream).expires_after(std::chrono::seconds(5));
    auto [ec] = co_await stream.async_shutdown(use_tuple);
    (void)ec;
}

net::awaitable<void> http_loop(AnyStream stream, beast::flat_buffer buffer, ConnPtr conn,
                               NetContext& ctx) {
    auto& lowest = beast::get_lowest_layer(stream);
    conn->lowest = &lowest;
    bool idle = false;
    // Shutdown step 2: a connection waiting for its next request closes now; one in the
    // middle of a request finishes it with "Connection: close".
    Conn* const c = conn.get();  // a local: see call_api about lambdas and parameters
    conn->on_drain = [&idle, c] {
        if (idle && c->lowest) c->lowest->cancel();
    };
    struct Reset {
        Conn& c;
        ~Reset() {
            c.on_drain = nullptr;
            c.lowest = nullptr;
        }
    } reset{*conn};

    for (;;) {
        if (ctx.draining) break;
        http::request_parser<http::string_body> parser;
        parser.header_limit(kHeaderLimit);
        parser.body_limit(ctx.config.max_body_bytes);
        lowest.expires_after(kReadTimeout);
        idle = true;
        auto [ec, n] = co_await http::async_read(stream, buffer, parser, use_tuple);
        (void)n;
        idle = false;
        if (ec == http::error::end_of_stream) break;
        if (ec == http::error::body_limit) {
            Request dummy{http::verb::post, "/", 11};
            auto res = json_error(http::status::payload_too_large, "body_too_large",
                                  "the request body is larger than max_body_bytes (" +
                                      std::to_string(ctx.config.max_body_bytes) + " bytes)");
            co_await send(stream, dummy, std::move(res), RouteKind::plain, false);
            break;
        }
        if (ec && ec.category() == http::make_error_code(http::error::bad_method).category()) {
            // A malformed request (or a head over the limit): answer, then close.
            Request dummy{http::verb::get, "/", 11};
            auto res = json_error(http::status::bad_request, "bad_request",
                                  "malformed HTTP request: " + ec.message());
            co_await send(stream, dummy, std::move(res), RouteKind::plain, false);
            break;
        }
        if (ec) {
            if (!is_normal_end(ec))
                log::debug(conn->label, ": reading a request failed: ", ec.message());
            co_return;
        }
        Request req = parser.release();
        const std::string_view target = req.target();
        if (beast::websocket::is_upgrade(req) && target.substr(0, target.find('?')) == "/sync") {
            if (ctx.draining) {
                auto res = json_error(http::status::service_unavailable, "shutting_down",
                                      "the server is shutting down; reconnect later");
                co_await send(stream, req, std::move(res), RouteKind::plain, false);
                break;
            }
            lowest.expires_never();
            conn->on_drain = nullptr;
            co_await run_websocket(std::move(stream), std::move(req), conn, ctx);
            co_return;
        }
        bool again = co_await handle(stream, req, *conn, ctx);
        if (!again) break;
    }
    co_await close_gracefully(stream);
}

}  // namespace

net::awaitable<void> run_http(AnyStream stream, beast::flat_buffer buffer, ConnPtr conn,
                              NetContext& ctx) {
    return http_loop(std::move(stream), std::move(buffer), std::move(conn), ctx);
}

}  // namespace fieldsync::server::netlayer
