// fieldsync-server: the county server. One binary, one SQLite file, one port.
//
// Usage and every option: `fieldsync-server --help`, and docs/operations.md.
//
// Signals and the shutdown sequence
// ---------------------------------
// SIGINT and SIGTERM are blocked in every thread (the mask is set before any thread starts and
// is inherited), and one thread waits for them with sigwait(). So no code runs in a signal
// handler, and the first signal simply calls Server::stop(), which wakes Server::run(). run()
// then shuts down in this order:
//   1. stop accepting connections (the listener's cancellation slot, then close the socket);
//   2. drain: WebSocket sessions stop forwarding new frames to the store; idle HTTP keep-alive
//      connections close; HTTP requests in progress finish with "Connection: close";
//   3. finish in-flight commits: password-hashing work hands its results to the store worker,
//      then StoreWorker::stop() commits every queued frame and API call and hands the replies
//      (push acknowledgements included) to the connections;
//   4. every WebSocket is closed with 1001 (going away) after its queued frames are written;
//   5. wait up to 10 s for every connection to end (a steady_timer raced against "registry
//      empty" with awaitable operators), then cancel what is left (terminal cancellation
//      through each connection's slot, and its socket closed), stop the io threads, exit 0.
// A second signal during the shutdown (more than a second after the first) exits at once
// (status 1). Even then nothing acknowledged
// is lost: acknowledgements leave only after a durable commit, SQLite rolls an interrupted
// transaction back at the next open, and devices resume from their cursors.
#include <CLI/CLI.hpp>

#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <optional>
#include <thread>

#include "fieldsync/server/log.hpp"
#include "fieldsync/server/server.hpp"
#include "fieldsync/server/store.hpp"

namespace {

namespace fs = std::filesystem;
namespace fsrv = fieldsync::server;
namespace log = fieldsync::server::log;

/// Writes the bound port to `file` atomically (a temporary file renamed into place), so a test
/// that polls for the file never reads half of it.
bool write_port_file(const fs::path& file, std::uint16_t port) {
    auto tmp = file;
    tmp += ".tmp";
    {
        std::ofstream out(tmp, std::ios::trunc);
        if (!out) return false;
        out << port << '\n';
        if (!out.flush()) return false;
    }
    std::error_code ec;
    fs::rename(tmp, file, ec);
    return !ec;
}

void print_banner(const fsrv::Server& server, const fsrv::ServerConfig& config) {
    std::cout << "fieldsync-server listening on " << server.url() << '\n';
    std::cout << "  data:    " << config.db_path().string() << '\n';
    if (!config.tls_enabled()) {
        std::cout
            << "  TLS:     off (plain HTTP/WebSocket; fine for a local trial only). For TLS:\n"
            << "           fieldsync-mkcert --out " << (config.data_dir / "tls").string()
            << " --host 127.0.0.1\n"
            << "           then add --tls-cert " << (config.data_dir / "tls/cert.pem").string()
            << " --tls-key " << (config.data_dir / "tls/key.pem").string() << '\n';
    }
    if (config.demo) {
        const auto& accounts = server.demo_accounts();
        if (accounts.empty()) {
            std::cout << "  demo:    accounts unknown (" << server.demo_credentials_file().string()
                      << " is missing)\n";
        } else {
            std::cout << "  demo accounts" << (server.demo_seeded() ? " (created now)" : "")
                      << ", also in " << server.demo_credentials_file().string() << ":\n";
            for (const auto& a : accounts) {
                std::string name = a.name;
                name.resize(std::max<std::size_t>(name.size(), 22), ' ');
                std::string role = a.role;
                role.resize(std::max<std::size_t>(role.size(), 11), ' ');
                std::cout << "    " << name << ' ' << role << ' ' << a.password << "   " << a.areas
                          << '\n';
            }
        }
    }
    std::cout.flush();
}

}  // namespace

// Where the console's files are when neither the file nor the flags say: installed next to the
// binary (<prefix>/share/fieldsync/console, from `cmake --install`), else the source tree this
// binary was built from (a development build). "" when neither exists: no /console/ route.
static std::filesystem::path default_console_dir() {
    std::error_code ec;
    const auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
    if (!ec) {
        auto installed = exe.parent_path().parent_path() / "share" / "fieldsync" / "console";
        if (std::filesystem::is_regular_file(installed / "index.html", ec)) return installed;
    }
#ifdef FIELDSYNC_SOURCE_CONSOLE_DIR
    const std::filesystem::path source = FIELDSYNC_SOURCE_CONSOLE_DIR;
    if (std::filesystem::is_regular_file(source / "index.html", ec)) return source;
#endif
    return {};
}

int main(int argc, char** argv) {
    (void)fsrv::configure_sqlite_process();  // before any thread opens the store
    fsrv::ServerConfig defaults;
    CLI::App app{
        "fieldsync-server: the fieldsync county server. Serves the sync WebSocket (GET /sync),\n"
        "the HTTP JSON API (/api/), the supervisor console (/console/), /healthz and /metrics\n"
        "on one port, over TLS and/or plain HTTP, with one SQLite file in the data folder.",
        "fieldsync-server"};
    app.footer(
        "Command-line options override the configuration file. Reference: docs/operations.md.\n"
        "\n"
        "Examples:\n"
        "  fieldsync-server --demo --plain --data-dir ./data\n"
        "      a local trial with the demo survey, areas and accounts (printed at start)\n"
        "  fieldsync-mkcert --out ./data/tls --host 127.0.0.1\n"
        "  fieldsync-server --listen 0.0.0.0 --tls-cert ./data/tls/cert.pem \\\n"
        "      --tls-key ./data/tls/key.pem --data-dir ./data\n"
        "  fieldsync-server --config /etc/fieldsync/server.json");

    // A flag given twice takes the last value, so wrapper scripts can be overridden
    // (scripts/run.sh passes --data-dir ./data; `scripts/run.sh --data-dir /srv/x` wins).
    app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);

    std::string config_file, listen, data_dir, db_file, tls_cert, tls_key, console_dir, schema_file,
        port_file, log_level;
    unsigned port = 0, io_threads = 0;
    bool plain = false, demo = false;

    app.add_option("--config", config_file,
                   "JSON configuration file (keys: docs/operations.md); flags given here win")
        ->check(CLI::ExistingFile);
    auto* o_listen = app.add_option("--listen", listen,
                                    "address to listen on (default " + defaults.listen_address +
                                        "; 0.0.0.0 or :: for every interface)");
    auto* o_port = app.add_option("--port", port,
                                  "TCP port (default " + std::to_string(defaults.port) +
                                      "; 0 = any free port, see --port-file)")
                       ->check(CLI::Range(0, 65535));
    auto* o_data = app.add_option("--data-dir", data_dir,
                                  "data folder: the database and demo-credentials.txt (default ./" +
                                      defaults.data_dir.string() + ")");
    auto* o_db = app.add_option(
        "--db-file", db_file,
        "database file name inside the data folder (default " + defaults.db_file + ")");
    auto* o_cert = app.add_option("--tls-cert", tls_cert,
                                  "TLS certificate chain (PEM); TLS is on when both --tls-cert "
                                  "and --tls-key are given (TLS 1.2 and newer)");
    auto* o_key = app.add_option("--tls-key", tls_key, "TLS private key (PEM)");
    auto* o_plain = app.add_flag("--plain", plain,
                                 "allow plain (unencrypted) HTTP and WebSocket: required when no "
                                 "certificate is configured; next to TLS, also accepts plain");
    auto* o_demo = app.add_flag("--demo", demo,
                                "on a new (empty) store, seed the demo areas and accounts and "
                                "print their passwords (kept in <data-dir>/demo-credentials.txt)");
    bool demo_records = true;
    auto* o_demo_records = app.add_flag(
        "--demo-records,!--no-demo-records", demo_records,
        "with --demo: also seed made-up survey records (26 households, their members and visits, "
        "2 open conflicts) so the console has something to show (default: on)");
    auto* o_console =
        app.add_option("--console-dir", console_dir,
                       "folder of the supervisor console's static files, served "
                       "under /console/ (default: <prefix>/share/fieldsync/console when installed, "
                       "else the source tree's console/)");
    auto* o_schema = app.add_option("--schema", schema_file,
                                    "survey schema (JSON) to publish at start when newer than the "
                                    "stored one (default: the stored schema; on a new store, the "
                                    "bundled demo household survey)");
    auto* o_threads =
        app.add_option("--io-threads", io_threads,
                       "network threads (default " + std::to_string(defaults.io_threads) + ")")
            ->check(CLI::Range(1, 64));
    app.add_option("--port-file", port_file,
                   "write the bound port to this file once listening (for scripts and tests "
                   "using --port 0)");
    auto* o_log = app.add_option("--log-level", log_level,
                                 "debug, info, warn, error or off (default info); logs go to "
                                 "stderr")
                      ->check(CLI::IsMember({"debug", "info", "warn", "warning", "error", "off"}));
    // The allocator is chosen at build time (server/net.cmake) and shown with the version, as
    // benchmark figures depend on it.
    app.set_version_flag("--version",
                         "fieldsync-server 0.1.0 (allocator: " FIELDSYNC_MALLOC_NAME ")");

    CLI11_PARSE(app, argc, argv);

    fsrv::ServerConfig config = defaults;
    if (!config_file.empty()) {
        auto loaded = fsrv::load_config_file(config_file, config);
        if (!loaded) {
            std::fprintf(stderr, "fieldsync-server: %s\n", loaded.error().message.c_str());
            return 2;
        }
        config = std::move(*loaded);
    }
    if (o_listen->count()) config.listen_address = listen;
    if (o_port->count()) config.port = static_cast<std::uint16_t>(port);
    if (o_data->count()) config.data_dir = data_dir;
    if (o_db->count()) config.db_file = db_file;
    if (o_cert->count()) config.tls_cert = tls_cert;
    if (o_key->count()) config.tls_key = tls_key;
    if (o_plain->count()) config.allow_plain = plain;
    if (o_demo->count()) config.demo = demo;
    if (o_demo_records->count()) config.demo_records = demo_records;
    if (o_console->count()) config.console_dir = console_dir;
    if (config.console_dir.empty()) config.console_dir = default_console_dir();
    if (o_schema->count()) config.schema_file = schema_file;
    if (o_threads->count()) config.io_threads = io_threads;
    if (o_log->count()) config.log_level = log_level;

    if (auto level = log::parse_level(config.log_level)) log::set_level(*level);

    // Block the shutdown signals before any thread exists, so every thread inherits the mask
    // and only the sigwait() thread below ever sees them.
    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGINT);
    sigaddset(&signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &signals, nullptr);
    ::signal(SIGPIPE, SIG_IGN);  // a peer that vanished is an error code, not a signal

    auto created = fsrv::Server::create(config);
    if (!created) {
        log::error("cannot start: ", created.error().message);
        return EXIT_FAILURE;
    }
    auto& server = **created;

    if (!port_file.empty() && !write_port_file(port_file, server.port())) {
        log::error("cannot write the port file ", port_file);
        return EXIT_FAILURE;
    }
    print_banner(server, config);
    log::info("listening on ", server.url());

    std::atomic<bool> finished{false};
    std::thread signal_thread([&] {
        std::optional<std::chrono::steady_clock::time_point> first;
        for (;;) {
            int sig = 0;
            if (sigwait(&signals, &sig) != 0) continue;
            if (finished) return;
            const auto now = std::chrono::steady_clock::now();
            if (!first) {
                first = now;
                log::info("received ", sig == SIGINT ? "SIGINT" : "SIGTERM",
                          "; shutting down gracefully (signal again to exit at once)");
                server.stop();
            } else if (now - *first > std::chrono::seconds(1)) {
                // (A duplicate within a second is ignored: `timeout`, for one, signals both the
                // process and its process group.)
                log::warn("second signal: exiting at once");
                std::_Exit(EXIT_FAILURE);
            }
        }
    });

    server.run();

    finished = true;
    pthread_kill(signal_thread.native_handle(), SIGTERM);  // wakes sigwait()
    signal_thread.join();
    created->reset();
    return EXIT_SUCCESS;
}
