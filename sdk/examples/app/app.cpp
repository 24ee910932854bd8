// An app using the installed C++ SDK (fieldsync::sdk): opens a replica, syncs it once when a
// server is given, then lists the households it holds.
//
// Usage:   app DB [URL USER PASSWORD]
// Example: app tablet.db ws://127.0.0.1:8470/sync enumerator-longhuqu s3cret
// Exit status: EXIT_SUCCESS, or EXIT_FAILURE with the reason on stderr. Without a server it
// only opens the replica and shows that writes wait for the survey schema.
#include <chrono>
#include <cstdlib>
#include <iostream>

#include <fieldsync/replica.hpp>
#include <fieldsync/replicator.hpp>

int main(int argc, char** argv) {
    if (argc != 2 && argc != 5) {
        std::cerr << "usage: app DB [URL USER PASSWORD]\n";
        return EXIT_FAILURE;
    }
    auto opened = fieldsync::Replica::open(argv[1]);
    if (!opened) {
        std::cerr << "cannot open " << argv[1] << ": " << opened.error().message << "\n";
        return EXIT_FAILURE;
    }
    std::shared_ptr<fieldsync::Replica> replica = *opened;
    std::cout << "replica " << replica->replica_id().to_string() << " on device "
              << replica->device_id().to_string() << "\n";

    if (argc == 5) {
        fieldsync::ReplicatorOptions options;
        options.url = argv[2];
        options.credentials = {argv[3], argv[4], ""};
        options.app = "example-app/1.0";
        options.on_status = [](const fieldsync::ReplicatorStatus& s) {
            std::cout << "  " << fieldsync::to_string(s.state) << ": pushed " << s.pushed << "/"
                      << s.push_total << ", pulled " << s.pulled << "\n";
        };
        fieldsync::Replicator replicator(replica, options);
        if (auto st = replicator.sync_once(std::chrono::seconds(60)); !st) {
            std::cerr << "sync failed: " << st.error().message << "\n";
            return EXIT_FAILURE;
        }
    }

    if (!replica->schema()) {
        // Offline and never synced: writes are refused until the survey schema arrives.
        auto id = replica->create_json("households", {{"head_name", "\"Bater\""}});
        std::cout << "before the first sync a write is refused: "
                  << (id ? std::string("(unexpectedly accepted)") : id.error().message) << "\n";
        return id ? EXIT_FAILURE : EXIT_SUCCESS;
    }
    auto households = replica->list("households");
    if (!households) {
        std::cerr << households.error().message << "\n";
        return EXIT_FAILURE;
    }
    std::cout << households->size() << " household(s)\n";
    for (const auto& h : *households)
        std::cout << "  " << h.to_json() << "\n";
    return EXIT_SUCCESS;
}
