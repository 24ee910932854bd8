// Example: an app plugging in its own transport.
//
// Two tablets sync with a server that runs in this process, through LoopbackTransport (frames
// handed over in memory) wrapped in CountingTransport (a thin wrapper that counts traffic).
// An Android or iOS app does the same with its platform's WebSocket, in C++ (a Transport
// subclass) or through the C API's fs_transport struct.
//
// Usage:   fieldsync-example-custom-transport [SCHEMA_JSON]
// Example: fieldsync-example-custom-transport protocol/schemas/household-survey.json
// Exit status: EXIT_SUCCESS when tablet B received tablet A's household, else EXIT_FAILURE.
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <random>

#include "fieldsync/replica.hpp"
#include "fieldsync/replicator.hpp"
#include "in_process_server.hpp"
#include "loopback_transport.hpp"

namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {

/// One tablet: its replica file and a replicator over the loopback.
struct Tablet {
    std::shared_ptr<fieldsync::Replica> replica;
    std::unique_ptr<fieldsync::Replicator> replicator;
};

Tablet make_tablet(const fs::path& file, const std::string& user, example::InProcessServer& server,
                   std::shared_ptr<example::CountingTransport::Counters> counters) {
    auto opened = fieldsync::Replica::open(file);
    if (!opened) throw std::runtime_error(opened.error().message);
    fieldsync::ReplicatorOptions options;
    options.url = "ws://loopback/sync";  // handed to the transport, which ignores it
    options.credentials = {user, example::InProcessServer::password_of(user), ""};
    options.app = "custom-transport-example/1";
    options.transport = [&server, counters] {
        return std::make_unique<example::CountingTransport>(
            std::make_unique<example::LoopbackTransport>(server.worker()), counters);
    };
    options.on_status = [user](const fieldsync::ReplicatorStatus& s) {
        std::cout << "  [" << user << "] " << fieldsync::to_string(s.state) << " pushed "
                  << s.pushed << "/" << s.push_total << " pulled " << s.pulled << "\n";
    };
    Tablet t;
    t.replica = *opened;
    t.replicator = std::make_unique<fieldsync::Replicator>(t.replica, std::move(options));
    return t;
}

bool sync(Tablet& t, const char* what) {
    std::cout << what << "\n";
    auto st = t.replicator->sync_once(10s);
    if (!st) std::cerr << "sync failed: " << st.error().message << "\n";
    return st.ok();
}

}  // namespace

int main(int argc, char** argv) {
    const fs::path schema = argc > 1 ? fs::path(argv[1]) : fs::path(FIELDSYNC_DEMO_SCHEMA);
    const fs::path dir = fs::temp_directory_path() /
                         ("fieldsync-custom-transport-" + std::to_string(std::random_device{}()));
    fs::create_directories(dir);
    int rc = EXIT_FAILURE;
    try {
        example::InProcessServer server(dir, schema);
        auto counters = std::make_shared<example::CountingTransport::Counters>();
        Tablet a = make_tablet(dir / "a.db", "enumerator-longhuqu", server, counters);
        Tablet b = make_tablet(dir / "b.db", "enumerator-hashatu", server, counters);

        if (sync(a, "tablet A: first sync (receives the survey)") &&
            sync(b, "tablet B: first sync")) {
            auto id = a.replica->create_json(
                "households", {{"village", "\"ordos/ejin-horo/altan-xire/longhuqu\""},
                               {"head_name", "\"Bater\""},
                               {"poverty_status", "\"dibao_line\""}});
            if (!id) throw std::runtime_error(id.error().message);
            std::cout << "tablet A: created household " << id->to_string() << "\n";
            if (sync(a, "tablet A: upload") && sync(b, "tablet B: download")) {
                auto got = b.replica->get("households", *id);
                if (got && *got) {
                    std::cout << "tablet B sees: " << (*got)->to_json() << "\n";
                    rc = EXIT_SUCCESS;
                }
            }
        }
        std::cout << "traffic: " << counters->connects << " connections, " << counters->frames_out
                  << " frames (" << counters->bytes_out << " bytes) out, " << counters->frames_in
                  << " frames (" << counters->bytes_in << " bytes) in\n";
    } catch (const std::exception& e) {
        std::cerr << "error: " << e.what() << "\n";
    }
    std::error_code ec;
    fs::remove_all(dir, ec);
    return rc;
}
