// sdk_footprint: what the SDK costs on a tablet. Creates N households through the C++ API in a
// fresh replica and reports the process's resident memory (VmRSS and its peak VmHWM from
// /proc/self/status), the database size on disk, and the time per write (mean, p50, p99).
//
// The survey schema normally comes from the server at the first sync; here a scripted
// transport plays the server for that one sync (hello -> welcome with the demo survey, pull ->
// an empty last page), so the tool needs no server. Writes are then made offline, as on a
// tablet in the field (each one its own durable transaction, synchronous=FULL).
//
// Usage:   sdk_footprint [--count N] [--schema FILE] [--dir DIR] [--keep]
// Example: sdk_footprint --count 50000
// Exit status: EXIT_SUCCESS, or EXIT_FAILURE with the reason on stderr.
#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "fieldsync/protocol/messages.hpp"
#include "fieldsync/replica.hpp"
#include "fieldsync/replicator.hpp"

namespace fs = std::filesystem;
namespace p = fieldsync::protocol;

namespace {

std::string proc_status(const std::string& key) {
    std::ifstream in("/proc/self/status");
    for (std::string line; std::getline(in, line);)
        if (line.rfind(key + ":", 0) == 0) {
            auto v = line.substr(key.size() + 1);
            return v.substr(v.find_first_not_of(" \t"));
        }
    return "?";
}

/// Plays the server for one sync: welcome (with the schema) and an empty last page.
class ScriptedServer final : public fieldsync::Transport {
public:
    explicit ScriptedServer(std::string schema) : m_schema(std::move(schema)) {}
    ~ScriptedServer() override {
        if (m_thread.joinable()) m_thread.join();
    }
    void connect(const std::string&, const fieldsync::TransportHeaders&,
                 std::shared_ptr<fieldsync::TransportDelegate> delegate) override {
        m_delegate = std::move(delegate);
        m_thread = std::thread([d = m_delegate] { d->on_open(); });
    }
    void send(p::Bytes frame) override {
        if (m_thread.joinable()) m_thread.join();
        auto msg = p::decode_message(frame);
        if (!msg) return;
        p::Message reply;
        if (std::holds_alternative<p::Hello>(*msg)) {
            p::Welcome w;
            w.user = "enumerator-longhuqu";
            w.role = "enumerator";
            w.scope = {"ordos/ejin-horo/altan-xire/longhuqu"};
            auto schema = p::Schema::load(m_schema);
            w.schema_version = schema ? schema->version() : 1;
            w.schema = m_schema;
            w.server_time =
                static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                               std::chrono::system_clock::now().time_since_epoch())
                                               .count());
            w.token = "bench-token";
            w.limits.max_frame = 4u << 20;
            w.limits.max_batch = 500;
            reply = w;
        } else if (auto* pull = std::get_if<p::Pull>(&*msg)) {
            p::Changes c;
            c.since = pull->since;
            c.cursor = 1;
            c.more = false;
            reply = c;
        } else {
            return;
        }
        m_thread =
            std::thread([d = m_delegate, bytes = p::encode_message(reply)] { d->on_frame(bytes); });
    }
    void close(std::uint16_t code, std::string reason) override {
        if (m_thread.joinable()) m_thread.join();
        m_thread = std::thread([d = m_delegate, code, reason] {
            fieldsync::TransportClose c;
            c.code = code;
            c.reason = reason;
            d->on_closed(c);
        });
    }

private:
    std::string m_schema;
    std::shared_ptr<fieldsync::TransportDelegate> m_delegate;
    std::thread m_thread;
};

}  // namespace

int main(int argc, char** argv) {
    long count = 50000;
    fs::path schema_file = FIELDSYNC_DEMO_SCHEMA;
    fs::path dir = fs::temp_directory_path() /
                   ("fieldsync-footprint-" + std::to_string(std::random_device{}()));
    bool keep = false;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--count" && i + 1 < argc) {
            count = std::atol(argv[++i]);
        } else if (a == "--schema" && i + 1 < argc) {
            schema_file = argv[++i];
        } else if (a == "--dir" && i + 1 < argc) {
            dir = argv[++i];
        } else if (a == "--keep") {
            keep = true;
        } else {
            std::cerr << "usage: sdk_footprint [--count N] [--schema FILE] [--dir DIR] [--keep]\n"
                         "example: sdk_footprint --count 50000\n";
            return EXIT_FAILURE;
        }
    }
    std::ifstream in(schema_file);
    std::stringstream schema;
    schema << in.rdbuf();
    if (schema.str().empty()) {
        std::cerr << "cannot read the survey schema " << schema_file << "\n";
        return EXIT_FAILURE;
    }
    fs::create_directories(dir);
    const fs::path db = dir / "footprint.db";
    std::cout << "RSS at start:            " << proc_status("VmRSS") << "\n";
    {
        auto opened = fieldsync::Replica::open(db);
        if (!opened) {
            std::cerr << opened.error().message << "\n";
            return EXIT_FAILURE;
        }
        auto replica = *opened;
        fieldsync::ReplicatorOptions o;
        o.url = "ws://scripted/sync";
        o.credentials = {"enumerator-longhuqu", "x", ""};
        o.transport = [s = schema.str()] { return std::make_unique<ScriptedServer>(s); };
        fieldsync::Replicator sync(replica, o);
        if (auto st = sync.sync_once(std::chrono::seconds(30)); !st) {
            std::cerr << "scripted first sync failed: " << st.error().message << "\n";
            return EXIT_FAILURE;
        }
        std::cout << "RSS with an open replica: " << proc_status("VmRSS") << "\n";
        const char* statuses[] = {"national_line", "dibao_line", "marginal", "not_poor", "exited"};
        // Each write's latency, in one block allocated up front (large enough to be its own
        // mapping, returned to the system before the RSS below is read).
        std::vector<double> latency_ms;
        latency_ms.reserve(static_cast<std::size_t>(count));
        const auto t0 = std::chrono::steady_clock::now();
        for (long n = 0; n < count; ++n) {
            const auto w0 = std::chrono::steady_clock::now();
            auto id = replica->create_json(
                "households", {{"village", "\"ordos/ejin-horo/altan-xire/longhuqu\""},
                               {"head_name", "\"Household " + std::to_string(n) + "\""},
                               {"poverty_status", "\"" + std::string(statuses[n % 5]) + "\""},
                               {"members_count", std::to_string(1 + n % 8)},
                               {"income_per_capita", std::to_string(2800 + n % 5000)},
                               {"assistance", "[\"lambs_for_ewes\",\"tourism_jobs\"]"},
                               {"gps", "{\"lat\": 39.6087, \"lon\": 109.7813}"}});
            latency_ms.push_back(
                std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - w0)
                    .count());
            if (!id) {
                std::cerr << "create " << n << ": " << id.error().message << "\n";
                return EXIT_FAILURE;
            }
        }
        const double secs =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        // Nearest-rank percentiles of the per-write latencies.
        auto percentile = [&latency_ms](double p) {
            if (latency_ms.empty()) return 0.0;
            auto k = static_cast<std::size_t>(p / 100.0 * static_cast<double>(latency_ms.size()));
            k = std::min(k, latency_ms.size() - 1);
            std::nth_element(latency_ms.begin(),
                             latency_ms.begin() + static_cast<std::ptrdiff_t>(k), latency_ms.end());
            return latency_ms[k];
        };
        const double p50 = percentile(50), p99 = percentile(99);
        std::vector<double>().swap(latency_ms);
        auto pending = replica->pending_count();
        std::cout << "households created:      " << count << " in " << secs << " s ("
                  << (count ? secs * 1000.0 / static_cast<double>(count) : 0.0) << " ms each)\n"
                  << "write latency p50:       " << p50 << " ms\n"
                  << "write latency p99:       " << p99 << " ms\n"
                  << "pending uploads:         " << (pending ? *pending : 0) << "\n"
                  << "VmRSS after writing:     " << proc_status("VmRSS") << "\n"
                  << "VmHWM (peak RSS):        " << proc_status("VmHWM") << "\n";
        std::uintmax_t bytes = 0;
        for (const auto& f : fs::directory_iterator(dir))
            bytes += f.file_size();
        std::cout << "database on disk:        " << fs::file_size(db) / 1024
                  << " KiB (with WAL: " << bytes / 1024 << " KiB)\n";
    }
    if (!keep) {
        std::error_code ec;
        fs::remove_all(dir, ec);
    }
    return EXIT_SUCCESS;
}
