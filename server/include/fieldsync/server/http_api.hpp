// The HTTP JSON API (docs/api.md), sans I/O: requests in, responses out.
//
// The network layer parses HTTP with Beast, fills an HttpRequest, calls HttpApi::handle, and
// writes the HttpResponse it gets back. Routes under /api/ run as jobs on the StoreWorker (so
// the store is only touched by its thread, and writes are group-committed); the response is
// delivered after the job's commit. Large exports stream: the response carries a ChunkSource
// that the network layer pulls from after each chunk is written (backpressure: a slow client
// holds one chunk, never the whole export).
//
// Authentication: "Authorization: Bearer <token>" (tokens from POST /api/login, stored hashed).
// Tokens never travel in URLs. The console keeps its token in memory and sends the header, so no
// cookie carries a session and CSRF does not apply (docs/security.md).
// Errors: JSON {"error": {"code": "<code>", "message": "<what was wrong and what to do>"}} with
// 400 (bad input), 401 (no/invalid token), 403 (role or scope), 404, 405, 409 (conflict already
// resolved, duplicate user), 413 (body too large), 429 (login throttled), 500.
//
// Threading: handle() may be called from any thread; `done` and ChunkSource callbacks run on the
// store worker's thread and must not block.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "fieldsync/server/store_worker.hpp"

namespace fieldsync::server {

struct HttpRequest {
    std::string method;         ///< "GET", "POST", "PUT", "DELETE"
    std::string target;         ///< path and query, e.g. "/api/records?collection=households"
    std::string authorization;  ///< the Authorization header, "" if absent
    std::string content_type;
    std::string body;
    std::string peer;  ///< remote address, for the login throttle
};

/// Produces a streamed body chunk by chunk. `next` calls `done` with the next chunk, or nullopt
/// at the end (or after an error, which ends the stream early). \note Call next() again only
/// after done ran.
class ChunkSource {
public:
    virtual ~ChunkSource() = default;
    virtual void next(std::function<void(std::optional<std::string>)> done) = 0;
};

struct HttpResponse {
    unsigned status = 200;
    std::string content_type = "application/json";
    std::string body;
    std::vector<std::pair<std::string, std::string>> headers;  ///< extra headers
    std::shared_ptr<ChunkSource> stream;  ///< when set, the body is streamed from it (chunked)
};

struct ApiOptions {
    std::size_t max_body_bytes = 1u << 20;
    std::int64_t token_lifetime_ms = 12ll * 3600 * 1000;  ///< console/API sessions
    int password_iterations = 210000;  ///< PBKDF2 iterations of passwords set through the API
    /// Runs CPU-heavy work (PBKDF2: logins, password changes, new users) off the store worker's
    /// thread, e.g. on a small thread pool, so a login does not stall every sync session for
    /// the ~0.1 s a hash takes. Called on the worker thread; must run `work` exactly once, on
    /// any thread, and must not block. When empty, the work runs on the worker thread.
    std::function<void(std::function<void()> work)> offload;
};

class HttpApi {
public:
    /// `worker` must outlive every request handled (the API itself may be destroyed while
    /// responses are still pending: they hold its state).
    HttpApi(StoreWorker& worker, ApiOptions options = {});
    ~HttpApi();
    HttpApi(const HttpApi&) = delete;
    HttpApi& operator=(const HttpApi&) = delete;

    /// Handles one request under /api/. `done` receives the response exactly once, always on
    /// the worker thread (never inside handle(), even for errors found before any store
    /// access). \note Thread-safe.
    void handle(HttpRequest request, std::function<void(HttpResponse)> done);

    class Impl;

private:
    std::shared_ptr<Impl> m_impl;
};

}  // namespace fieldsync::server
