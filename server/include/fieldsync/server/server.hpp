// The fieldsync server: configuration and the process-level object that ties the store, the
// store worker, the HTTP API and the network layer together.
//
//   auto server = Server::create(config);      // opens the store, seeds demo data, binds
//   if (!server) { report server.error(); }
//   (*server)->run();                          // blocks until stop() and the shutdown finish
//
// One port serves everything (docs/operations.md): TLS and plain connections are told apart by
// their first bytes; HTTP/1.1 serves /healthz, /metrics, /api/* (the JSON API), /console/*
// (static files) and upgrades GET /sync to the sync WebSocket (protocol/SPEC.md).
//
// Graceful shutdown, in order (Server::run carries it out after stop()):
//   1. stop accepting new connections;
//   2. drain: WebSocket sessions stop forwarding new frames, idle HTTP keep-alive connections
//      close, in-flight HTTP requests finish with "Connection: close";
//   3. finish in-flight commits (StoreWorker::stop): every frame and API call already queued
//      is committed and its replies are handed to the connections;
//   4. close every WebSocket with 1001 (going away) after its queued frames are written;
//   5. wait up to 10 s for every connection to end, then force the rest closed.
// Nothing acknowledged is lost whenever the process stops: acknowledgements leave only after a
// durable commit, and devices resume from their cursors.
//
// No Boost.Beast/Asio in this header (the network layer hides behind a pimpl).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "fieldsync/protocol/error.hpp"

namespace fieldsync::server {

using protocol::Result;
using protocol::Status;

/// Everything the server can be told. Defaults are the documented ones (docs/operations.md).
/// Value type.
struct ServerConfig {
    // --- Network
    std::string listen_address = "127.0.0.1";  ///< IPv4 or IPv6 literal ("0.0.0.0", "::")
    std::uint16_t port = 8470;                 ///< 0 = any free port (see Server::port())
    /// TLS certificate chain and private key (PEM). TLS is on when both are set; TLS 1.2+.
    std::filesystem::path tls_cert;
    std::filesystem::path tls_key;
    /// Plain HTTP/WebSocket. With TLS configured, plain connections are refused unless this is
    /// set; without TLS the server starts only when this is set.
    bool allow_plain = false;
    unsigned io_threads = 2;  ///< threads running the network event loop (1..64)

    // --- Files
    std::filesystem::path data_dir = "data";  ///< holds the database and demo-credentials.txt
    std::string db_file = "fieldsync.db";     ///< file name inside data_dir
    std::filesystem::path console_dir;        ///< static files served under /console/; "" = none
    /// A survey schema document to publish at start (if newer than the stored one). "" = the
    /// stored schema, or the bundled demo survey on a new store.
    std::filesystem::path schema_file;

    // --- Limits
    std::size_t max_frame_bytes = 4u << 20;    ///< largest WebSocket message, either direction
    std::size_t max_batch = 500;               ///< items per push
    std::size_t max_page = 500;                ///< records per changes page
    std::size_t max_pending_bytes = 8u << 20;  ///< queued outgoing bytes per WebSocket
    std::size_t max_connections = 10000;       ///< open connections, of every kind
    std::size_t max_body_bytes = 1u << 20;     ///< HTTP request body
    std::int64_t max_clock_ahead_ms = 10 * 60 * 1000;  ///< device clocks further ahead are refused

    // --- Tokens and retention
    std::int64_t sync_token_lifetime_ms = 30ll * 24 * 3600 * 1000;  ///< device (sync) tokens
    std::int64_t api_token_lifetime_ms = 12ll * 3600 * 1000;        ///< console/API tokens
    unsigned tombstone_retention_days = 90;  ///< deleted records are purged after; 0 = never
    int password_iterations = 210000;        ///< PBKDF2 iterations of new password hashes

    // --- Misc
    bool demo = false;               ///< seed the demo areas and users into an empty store
    bool demo_records = true;        ///< with `demo`: also the demo survey records (demo.hpp)
    std::string log_level = "info";  ///< debug, info, warn, error, off (applied by the caller)
    /// How long shutdown waits for connections before forcing them closed.
    std::chrono::milliseconds shutdown_grace{10000};

    bool tls_enabled() const noexcept { return !tls_cert.empty() && !tls_key.empty(); }
    /// data_dir / db_file.
    std::filesystem::path db_path() const { return data_dir / db_file; }
};

/// Reads a JSON configuration file onto `base`: keys present in the file replace the values in
/// `base`, the others keep them. Keys are the ServerConfig members' names as documented in
/// docs/operations.md ("listen", "port", "limits": {"max_frame_bytes": ...}, ...). Relative
/// paths in the file are relative to the file's folder. Unknown keys, wrong JSON types and
/// out-of-range numbers fail with invalid_value and a message naming the file and the key
/// ("fieldsync.json: unknown key \"limits.max_fram_bytes\""); unreadable files and JSON syntax
/// errors fail with invalid_value naming the file (and line).
Result<ServerConfig> load_config_file(const std::filesystem::path& file, ServerConfig base = {});

/// Checks a configuration for contradictions (one TLS file without the other, no TLS and no
/// allow_plain, zero limits, ...). The message says what to change.
Status validate(const ServerConfig& config);

/// A demo account created at first start in demo mode.
struct DemoAccount {
    std::string name;
    std::string role;
    std::string password;
    std::string areas;  ///< area codes, comma-separated
};

class Server {
public:
    /// Validates `config`, creates data_dir, opens (or creates) the SQLite store, loads the
    /// schema (stored, from schema_file, or the bundled demo survey), seeds demo data when asked
    /// and the store is empty, starts the store worker, loads the TLS certificate and binds the
    /// listening socket. Fails with a message naming what was wrong and what to do.
    static Result<std::unique_ptr<Server>> create(ServerConfig config);
    ~Server();
    Server(const Server&) = delete;
    Server& operator=(const Server&) = delete;

    /// The bound port (the real one when the configured port was 0). \note Thread-safe.
    std::uint16_t port() const noexcept;
    /// "https://127.0.0.1:8470" or "http://..." (TLS when configured). \note Thread-safe.
    std::string url() const;
    /// The demo accounts: created now (first start), or read back from
    /// <data_dir>/demo-credentials.txt on later starts. Empty unless demo mode.
    const std::vector<DemoAccount>& demo_accounts() const noexcept;
    /// True when this start seeded the demo data (false when it was already there).
    bool demo_seeded() const noexcept;
    /// Where the demo credentials are kept.
    std::filesystem::path demo_credentials_file() const;

    /// Serves until stop() is called, then carries out the graceful shutdown described at the
    /// top of this file and returns. Call once, from one thread (not an io thread).
    void run();
    /// Asks run() to shut down gracefully; returns at once. Idempotent. \note Thread-safe, but
    /// not async-signal-safe: call it from a signal-waiting thread, not a signal handler.
    void stop();

    class Impl;

private:
    explicit Server(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> m_impl;
};

}  // namespace fieldsync::server
