// The child process of the crash-safety test (crash_test.cpp): writes households through the
// SDK as fast as it can, optionally while a continuous replicator syncs them, until it is
// killed with SIGKILL.
//
// Usage:   crash_writer DB START [URL USER]
// Example: crash_writer w.db 1 ws://127.0.0.1:8470/sync enumerator-longhuqu
//
// Output (stdout, one line per event, written with write(2) right after the event):
//   ready                  the replica is open (and the replicator started)
//   a C <n>                about to create household "w-<n>"
//   c C <n> <id>           committed
//   a U <n> <v>            about to set members_count of "w-<n>" to <v>
//   c U <n> <v>            committed
// A line "c ..." means the write returned (it is durable); a write with an "a" line but no
// "c" line may or may not have committed when the kill came.
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <map>
#include <memory>
#include <string>

#include "fieldsync/replica.hpp"
#include "fieldsync/replicator.hpp"

namespace {

void say(const std::string& line) {
    const std::string text = line + "\n";
    (void)!::write(STDOUT_FILENO, text.data(), text.size());
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 3 && argc != 5) {
        say("usage: crash_writer DB START [URL USER]");
        return EXIT_FAILURE;
    }
    auto replica = fieldsync::Replica::open(argv[1]);
    if (!replica) {
        say("error " + replica.error().message);
        return EXIT_FAILURE;
    }
    std::unique_ptr<fieldsync::Replicator> replicator;
    if (argc == 5) {
        fieldsync::ReplicatorOptions o;
        o.url = argv[3];
        o.credentials.user = argv[4];  // the token stored by `fieldsync-tablet init`
        o.mode = fieldsync::ReplicatorMode::continuous;
        o.backoff.initial_ms = 50;
        o.backoff.max_ms = 500;
        replicator = std::make_unique<fieldsync::Replicator>(*replica, o);
        replicator->start();
    }
    say("ready");
    std::map<long, fieldsync::RecordId> ids;
    for (long n = std::atol(argv[2]);; ++n) {
        say("a C " + std::to_string(n));
        auto id = (*replica)->create_json("households",
                                          {{"village", "\"ordos/ejin-horo/altan-xire/longhuqu\""},
                                           {"head_name", "\"w-" + std::to_string(n) + "\""},
                                           {"poverty_status", "\"national_line\""}});
        if (!id) {
            say("error " + id.error().message);
            return EXIT_FAILURE;
        }
        say("c C " + std::to_string(n) + " " + id->to_string());
        ids.emplace(n, *id);
        if (n % 3 == 0 && ids.count(n - 1)) {  // an update of the previous record too
            const long v = n % 29 + 1;
            say("a U " + std::to_string(n - 1) + " " + std::to_string(v));
            auto st = (*replica)->update_json("households", ids[n - 1],
                                              {{"members_count", std::to_string(v)}});
            if (!st) {
                say("error " + st.error().message);
                return EXIT_FAILURE;
            }
            say("c U " + std::to_string(n - 1) + " " + std::to_string(v));
        }
    }
}
