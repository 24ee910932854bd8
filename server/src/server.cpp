// The server object: store, schema, demo data, store worker, HTTP API and network layer, and
// the graceful shutdown sequence. Contract: fieldsync/server/server.hpp. No Beast here: the
// network layer is behind netlayer::NetServer (net/net_server.hpp).
#include "fieldsync/server/server.hpp"

#include <sys/stat.h>

#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <fstream>
#include <mutex>
#include <sstream>
#include <string_view>
#include <thread>

#include "fieldsync/protocol/schema.hpp"
#include "fieldsync/server/demo.hpp"
#include "fieldsync/server/http_api.hpp"
#include "fieldsync/server/log.hpp"
#include "fieldsync/server/store.hpp"
#include "fieldsync/server/store_worker.hpp"
#include "net/net_server.hpp"

namespace fieldsync::server {

namespace {

namespace fs = std::filesystem;
using protocol::protocol_errc;

Error internal(std::string m) {
    return Error{protocol_errc::internal, std::move(m)};
}

std::int64_t now_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
}

/// A few threads for CPU-heavy work the store worker must not do itself (PBKDF2 for logins and
/// password changes: ApiOptions::offload). After stop(), work runs on the caller's thread, so
/// "runs exactly once" holds until the very end.
class WorkPool {
public:
    explicit WorkPool(unsigned threads) {
        for (unsigned i = 0; i < threads; ++i)
            m_threads.emplace_back([this] { loop(); });
    }
    ~WorkPool() { stop(); }
    WorkPool(const WorkPool&) = delete;
    WorkPool& operator=(const WorkPool&) = delete;

    void submit(std::function<void()> work) {
        {
            std::lock_guard lock(m_mutex);
            if (!m_stopping) {
                m_queue.push_back(std::move(work));
                m_cv.notify_one();
                return;
            }
        }
        work();
    }

    /// Runs what is queued, then joins the threads. Idempotent.
    void stop() {
        {
            std::lock_guard lock(m_mutex);
            m_stopping = true;
        }
        m_cv.notify_all();
        for (auto& t : m_threads)
            if (t.joinable()) t.join();
    }

private:
    void loop() {
        for (;;) {
            std::function<void()> work;
            {
                std::unique_lock lock(m_mutex);
                m_cv.wait(lock, [this] { return m_stopping || !m_queue.empty(); });
                if (m_queue.empty()) return;
                work = std::move(m_queue.front());
                m_queue.pop_front();
            }
            try {
                work();
            } catch (const std::exception& e) {
                log::error("background work failed: ", e.what());
            }
        }
    }

    std::mutex m_mutex;
    std::condition_variable m_cv;
    std::deque<std::function<void()>> m_queue;  // guarded by m_mutex
    bool m_stopping = false;                    // guarded by m_mutex
    std::vector<std::thread> m_threads;
};

Result<std::string> read_text(const fs::path& file) {
    std::ifstream in(file, std::ios::binary);
    if (!in) return Error{protocol_errc::invalid_value, "cannot read " + file.string()};
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

}  // namespace

class Server::Impl {
public:
    explicit Impl(ServerConfig config) : m_config(std::move(config)) {}

    ~Impl() {
        // Whatever happened before: no io thread, no worker thread, no pool thread remains,
        // then the objects go in dependency order (the network layer last: see NetServer).
        if (m_net) m_net->finish(std::chrono::milliseconds(0));
        if (m_pool) m_pool->stop();
        if (m_worker) m_worker->stop();
        m_api.reset();
        m_worker.reset();
        m_pool.reset();
        m_net.reset();
    }

    Status open() {
        const auto& c = m_config;
        std::error_code ec;
        if (!fs::exists(c.data_dir, ec)) {
            fs::create_directories(c.data_dir, ec);
            if (ec)
                return internal("cannot create the data folder " + c.data_dir.string() + ": " +
                                ec.message());
            ::chmod(c.data_dir.c_str(), 0700);
            log::info("created the data folder ", c.data_dir.string());
        } else if (!fs::is_directory(c.data_dir, ec)) {
            return internal("the data folder " + c.data_dir.string() + " is not a folder");
        }

        auto store = open_sqlite_store(c.db_path());
        if (!store) return store.error();

        auto schema = load_schema(**store);
        if (!schema) return schema.error();

        if (c.demo) {
            // The demo survey records (demo.hpp) unless --no-demo-records: the test harnesses
            // that count the records they write themselves turn them off.
            const bool with_records = c.demo_records;
            auto made = seed_demo(**store, with_records ? &*schema : nullptr, credentials_file(),
                                  now_ms(), c.password_iterations);
            if (!made) return made.error();
            if (!made->accounts.empty()) {
                m_demo_seeded = true;
                m_demo_accounts = std::move(made->accounts);
                log::info("demo: seeded ", demo_areas().size(), " areas and ",
                          m_demo_accounts.size(), " accounts; passwords in ",
                          credentials_file().string());
                const auto& r = made->records;
                if (!r.skipped.empty())
                    log::warn("demo: no survey records seeded: ", r.skipped);
                else if (with_records)
                    log::info("demo: seeded ", r.households, " households, ", r.members,
                              " members and ", r.visits, " visits (", r.conflicts,
                              " open conflicts)");
            } else if (auto read = read_demo_credentials(credentials_file()); read) {
                m_demo_accounts = std::move(*read);
            } else {
                log::warn("demo: the store already has data; ", credentials_file().string(),
                          " is missing, so the demo passwords are unknown");
            }
        }

        StoreWorker::Options options;
        options.limits.max_frame_bytes = c.max_frame_bytes;
        options.limits.max_batch = c.max_batch;
        options.limits.max_page = c.max_page;
        options.limits.max_clock_ahead_ms = static_cast<std::uint64_t>(c.max_clock_ahead_ms);
        options.limits.token_lifetime_ms = c.sync_token_lifetime_ms;
        options.on_sync_failure = [](const Error& e) {
            log::error("store: ", e.message, " (every write is refused until the restart)");
        };
        m_worker = std::make_unique<StoreWorker>(std::move(*store), std::move(*schema), options);

        m_pool = std::make_unique<WorkPool>(2);
        ApiOptions api;
        api.max_body_bytes = c.max_body_bytes;
        api.token_lifetime_ms = c.api_token_lifetime_ms;
        api.password_iterations = c.password_iterations;
        api.offload = [pool = m_pool.get()](std::function<void()> work) {
            pool->submit(std::move(work));
        };
        m_api = std::make_unique<HttpApi>(*m_worker, api);

        auto net = netlayer::NetServer::create(m_config, *m_worker, *m_api);
        if (!net) return net.error();
        m_net = std::move(*net);
        return {};
    }

    /// The schema to serve: the stored one, the schema file's (published when newer), or the
    /// bundled demo survey on a new store (published at once).
    Result<protocol::Schema> load_schema(Store& store) {
        const auto& c = m_config;
        auto current = store.current_schema();
        if (!current) return current.error();
        std::optional<protocol::Schema> stored;
        if (current->has_value()) {
            auto s = protocol::Schema::load((*current)->second);
            if (!s)
                return internal("the stored schema version " + std::to_string((*current)->first) +
                                " does not load: " + s.error().message);
            stored = std::move(*s);
        }

        std::optional<protocol::Schema> wanted;
        std::string source;
        if (!c.schema_file.empty()) {
            auto text = read_text(c.schema_file);
            if (!text) return text.error();
            auto s = protocol::Schema::load(*text);
            if (!s) return Error{s.error().code, c.schema_file.string() + ": " + s.error().message};
            wanted = std::move(*s);
            source = c.schema_file.string();
        } else if (!stored) {
            auto s = protocol::Schema::load(bundled_schema_json());
            if (!s) return internal("the bundled schema does not load: " + s.error().message);
            wanted = std::move(*s);
            source = "the bundled demo survey";
        }

        if (!wanted) {
            log::info("schema: \"", stored->name(), "\" version ", stored->version(), " (stored)");
            return std::move(*stored);
        }
        if (stored && wanted->version() < stored->version()) {
            log::warn("schema: ", source, " has version ", wanted->version(),
                      ", older than the stored version ", stored->version(),
                      " (published later); serving the stored one");
            return std::move(*stored);
        }
        if (stored) {
            if (auto st = wanted->check_upgrade_from(*stored); !st)
                return Error{st.error().code,
                             source + " cannot replace the stored schema version " +
                                 std::to_string(stored->version()) + ":\n" + st.error().message};
            if (*wanted == *stored) {
                log::info("schema: \"", stored->name(), "\" version ", stored->version(),
                          " (stored)");
                return std::move(*stored);
            }
        }
        if (auto st = store.put_schema(wanted->version(), wanted->to_json()); !st)
            return st.error();
        log::info("schema: published \"", wanted->name(), "\" version ", wanted->version(),
                  " from ", source);
        return std::move(*wanted);
    }

    fs::path credentials_file() const { return m_config.data_dir / "demo-credentials.txt"; }

    void run() {
        m_net->start();
        {
            std::unique_lock lock(m_mutex);
            const auto retention = m_config.tombstone_retention_days;
            auto next_purge = std::chrono::steady_clock::now() + std::chrono::minutes(1);
            while (!m_stop_requested) {
                if (retention > 0 && std::chrono::steady_clock::now() >= next_purge) {
                    purge_tombstones(retention);
                    next_purge = std::chrono::steady_clock::now() + std::chrono::hours(24);
                }
                if (retention > 0)
                    m_cv.wait_until(lock, next_purge);
                else
                    m_cv.wait(lock);
            }
        }
        // The graceful shutdown (server.hpp):
        log::info("shutting down: stop accepting, finish in-flight commits, close connections");
        // 1-2. Stop accepting; connections stop taking new work (WebSocket frames arriving now
        //      are not forwarded; the devices send them again later).
        m_net->drain();
        // 3. Finish in-flight commits. Offloaded work (password hashing) hands its result to
        //    the worker first; then the worker commits everything queued, its sync thread
        //    delivers every reply to the connections' strands, and the worker runs whatever
        //    those replies posted (an API call's second round) before it stops.
        m_pool->stop();
        m_worker->stop();
        // 4-5. WebSockets close with 1001 after their queued replies; wait up to the grace
        //      period for every connection to end, then force the rest.
        bool clean = m_net->finish(m_config.shutdown_grace);
        log::info(clean ? "shutdown complete" : "shutdown complete (some connections forced)");
    }

    void stop() {
        std::lock_guard lock(m_mutex);
        m_stop_requested = true;
        m_cv.notify_all();
    }

    void purge_tombstones(unsigned days) {
        const std::int64_t before = now_ms() - static_cast<std::int64_t>(days) * 24 * 3600 * 1000;
        m_worker->post(
            [before](Store& store, const protocol::Schema&) {
                auto n = store.purge_tombstones(before);
                if (!n) {
                    log::warn("purging tombstones failed: ", n.error().message);
                    return false;
                }
                if (*n > 0) log::info("purged ", *n, " tombstone(s) older than the retention");
                return *n > 0;
            },
            [](const Status& st) {
                if (!st) log::warn("purging tombstones did not commit: ", st.error().message);
            });
    }

    ServerConfig m_config;
    std::vector<DemoAccount> m_demo_accounts;
    bool m_demo_seeded = false;

    std::unique_ptr<StoreWorker> m_worker;
    std::unique_ptr<WorkPool> m_pool;
    std::unique_ptr<HttpApi> m_api;
    std::unique_ptr<netlayer::NetServer> m_net;

    std::mutex m_mutex;
    std::condition_variable m_cv;
    bool m_stop_requested = false;  // guarded by m_mutex
};

Result<std::unique_ptr<Server>> Server::create(ServerConfig config) {
    if (auto st = validate(config); !st) return st.error();
    auto impl = std::make_unique<Impl>(std::move(config));
    if (auto st = impl->open(); !st) return st.error();
    return std::unique_ptr<Server>(new Server(std::move(impl)));
}

Server::Server(std::unique_ptr<Impl> impl) : m_impl(std::move(impl)) {}
Server::~Server() = default;

std::uint16_t Server::port() const noexcept {
    return m_impl->m_net->port();
}

std::string Server::url() const {
    std::string host = m_impl->m_config.listen_address;
    if (host.find(':') != std::string::npos) host = "[" + host + "]";
    return (m_impl->m_config.tls_enabled() ? "https://" : "http://") + host + ":" +
           std::to_string(port());
}

const std::vector<DemoAccount>& Server::demo_accounts() const noexcept {
    return m_impl->m_demo_accounts;
}
bool Server::demo_seeded() const noexcept {
    return m_impl->m_demo_seeded;
}
std::filesystem::path Server::demo_credentials_file() const {
    return m_impl->credentials_file();
}

void Server::run() {
    m_impl->run();
}
void Server::stop() {
    m_impl->stop();
}

}  // namespace fieldsync::server
