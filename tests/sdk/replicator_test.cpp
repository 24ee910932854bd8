// The replicator (fieldsync/replicator.hpp) against the real sync service in process, over the
// example LoopbackTransport (sdk/examples/custom_transport/): one-shot and continuous syncs,
// backoff with jitter, prompt stop, timeouts and permanent errors. No sockets.
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <thread>
#include <vector>

#include "fieldsync/replicator.hpp"
#include "sdk_test_support.hpp"

#if FIELDSYNC_HAVE_SERVER_CORE
#include "in_process_server.hpp"
#include "loopback_transport.hpp"

using namespace std::chrono_literals;
using fieldsync::Replicator;
using fieldsync::ReplicatorMode;
using fieldsync::ReplicatorOptions;
using fieldsync::ReplicatorState;
using fieldsync::ReplicatorStatus;
using fstest::TempDir;
using Faults = example::LoopbackFaults;
namespace fs = std::filesystem;

namespace {

const std::string longhuqu = "ordos/ejin-horo/altan-xire/longhuqu";

/// Waits up to `timeout` for `pred`.
template <class P>
bool eventually(P pred, std::chrono::milliseconds timeout = 10s) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
        if (pred()) return true;
        std::this_thread::sleep_for(5ms);
    }
    return pred();
}

struct Fixture {
    TempDir dir;
    example::InProcessServer server{
        dir.path(), fs::path(FIELDSYNC_SOURCE_DIR) / "protocol/schemas/household-survey.json"};

    std::shared_ptr<fieldsync::Replica> open(const std::string& name) {
        auto r = fieldsync::Replica::open(dir.path() / (name + ".db"));
        REQUIRE_MESSAGE(r.ok(), (r.ok() ? "" : r.error().message));
        return *r;
    }

    ReplicatorOptions options(const std::string& user,
                              std::function<Faults(int attempt)> faults = {}) {
        ReplicatorOptions o;
        o.url = "ws://loopback/sync";
        o.credentials = {user, example::InProcessServer::password_of(user), ""};
        o.app = "replicator_test/1";
        auto attempts = std::make_shared<std::atomic<int>>(0);
        o.transport = [this, faults, attempts] {
            const int n = ++*attempts;
            return std::make_unique<example::LoopbackTransport>(server.worker(),
                                                                faults ? faults(n) : Faults{});
        };
        o.tick_interval_ms = 50;
        o.close_timeout_ms = 300;
        return o;
    }
};

/// Collects statuses (called on the replicator's thread).
struct StatusLog {
    std::mutex mutex;
    std::vector<ReplicatorStatus> all;
    void attach(ReplicatorOptions& o) {
        o.on_status = [this](const ReplicatorStatus& s) {
            std::lock_guard lock(mutex);
            all.push_back(s);
        };
    }
    std::vector<ReplicatorStatus> copy() {
        std::lock_guard lock(mutex);
        return all;
    }
};

fieldsync::RecordId create_household(fieldsync::Replica& r, const std::string& head) {
    auto id = r.create_json("households", {{"village", "\"" + longhuqu + "\""},
                                           {"head_name", "\"" + head + "\""},
                                           {"poverty_status", "\"national_line\""}});
    REQUIRE_MESSAGE(id.ok(), (id.ok() ? "" : id.error().message));
    return *id;
}

}  // namespace

TEST_CASE("Replicator: one-shot syncs upload, download and resume from the stored cursor") {
    Fixture f;
    auto a = f.open("a");
    auto b = f.open("b");
    StatusLog log;
    auto oa = f.options("enumerator-longhuqu");
    log.attach(oa);
    Replicator ra(a, oa);
    Replicator rb(b, f.options("enumerator-hashatu"));

    REQUIRE(ra.sync_once(10s).ok());
    REQUIRE(rb.sync_once(10s).ok());
    CHECK(a->schema() != nullptr);
    CHECK(ra.status().state == ReplicatorState::stopped);
    CHECK(ra.status().up_to_date);
    CHECK_FALSE(ra.running());

    const auto id = create_household(*a, "Bater");
    CHECK(a->pending_count().value() == 1);
    auto st = ra.sync_once(10s);
    REQUIRE_MESSAGE(st.ok(), (st.ok() ? "" : st.error().message));
    CHECK(a->pending_count().value() == 0);
    CHECK(ra.status().pushed == 1);
    CHECK(ra.status().push_total == 1);

    REQUIRE(rb.sync_once(10s).ok());
    auto got = b->get("households", id);
    REQUIRE(got.ok());
    REQUIRE(got->has_value());
    CHECK((*got)->value("head_name") != nullptr);
    CHECK(rb.status().pulled >= 1);
    const auto cursor = b->sync_info().value().cursor;
    CHECK(cursor > 0);

    // Nothing new: the next sync resumes from the cursor and downloads nothing.
    REQUIRE(rb.sync_once(10s).ok());
    CHECK(rb.status().pulled == 0);
    CHECK(b->sync_info().value().cursor == cursor);

    // The statuses went through the phases in order and ended stopped.
    const auto all = log.copy();
    REQUIRE_FALSE(all.empty());
    CHECK(all.front().state == ReplicatorState::connecting);
    CHECK(all.back().state == ReplicatorState::stopped);
    bool saw_push = false;
    for (const auto& s : all)
        saw_push = saw_push || s.state == ReplicatorState::pushing;
    CHECK(saw_push);
}

TEST_CASE("Replicator: continuous mode pushes local writes at once and receives live changes") {
    Fixture f;
    auto a = f.open("a");
    auto b = f.open("b");
    auto oa = f.options("enumerator-longhuqu");
    auto ob = f.options("enumerator-hashatu");
    oa.mode = ob.mode = ReplicatorMode::continuous;
    Replicator ra(a, oa);
    Replicator rb(b, ob);
    ra.start();
    rb.start();
    REQUIRE(eventually([&] { return ra.status().state == ReplicatorState::idle; }));
    REQUIRE(eventually([&] { return rb.status().state == ReplicatorState::idle; }));

    std::atomic<int> remote{0};
    b->add_observer([&](const fieldsync::ChangeNotice& n) {
        if (n.origin == fieldsync::ChangeOrigin::remote) ++remote;
    });
    const auto id = create_household(*a, "Bater");
    CHECK(eventually([&] { return a->pending_count().value() == 0; }));
    CHECK(eventually([&] {
        auto got = b->get("households", id);
        return got.ok() && got->has_value();
    }));
    // Observers are told after the commit, possibly a moment after get() sees the record.
    CHECK(eventually([&] { return remote.load() >= 1; }));
    CHECK(ra.running());

    const auto t0 = std::chrono::steady_clock::now();
    ra.stop();
    rb.stop();
    CHECK(std::chrono::steady_clock::now() - t0 < 2s);
    CHECK(ra.status().state == ReplicatorState::stopped);
    CHECK_FALSE(ra.running());
}

TEST_CASE(
    "Replicator: reconnects with capped exponential backoff and jitter, reset after a success") {
    Fixture f;
    auto a = f.open("a");
    StatusLog log;
    // Attempts 1-3 are refused; attempt 4 works until the 3rd frame from the server (the
    // push_ack of a write made once it is idle), then drops; attempt 5 works.
    auto o = f.options("enumerator-longhuqu", [](int attempt) {
        Faults faults;
        faults.refuse = attempt <= 3;
        if (attempt == 4) faults.drop_after_frames = 2;
        return faults;
    });
    o.mode = ReplicatorMode::continuous;
    o.backoff.initial_ms = 40;
    o.backoff.max_ms = 100;
    o.backoff.multiplier = 2.0;
    o.backoff.jitter = 0.5;
    o.seed = 42;
    log.attach(o);
    Replicator r(a, o);

    // The first sync receives the schema; the drop comes with the first push_ack.
    r.start();
    REQUIRE(eventually([&] { return r.status().state == ReplicatorState::idle; }));
    CHECK(r.status().attempt == 0);
    create_household(*a, "Bater");
    REQUIRE(eventually([&] {
        return a->pending_count().value() == 0 && r.status().state == ReplicatorState::idle;
    }));
    r.stop();

    std::vector<ReplicatorStatus> offline;
    for (const auto& s : log.copy())
        if (s.state == ReplicatorState::offline) offline.push_back(s);
    REQUIRE(offline.size() == 4);
    // Delays: 40 * [0.75, 1.25]; 80 * [0.75, 1.25]; 160 capped at 100 (jitter stays below the cap)
    CHECK(offline[0].attempt == 1);
    CHECK(offline[0].retry_in_ms >= 30);
    CHECK(offline[0].retry_in_ms <= 50);
    CHECK(offline[1].attempt == 2);
    CHECK(offline[1].retry_in_ms >= 60);
    CHECK(offline[1].retry_in_ms <= 100);
    CHECK(offline[2].attempt == 3);
    CHECK(offline[2].retry_in_ms >= 75);
    CHECK(offline[2].retry_in_ms <= 100);
    // After the success, a drop starts again from the initial delay.
    CHECK(offline[3].attempt == 1);
    CHECK(offline[3].retry_in_ms <= 50);
    REQUIRE(offline[3].last_error.has_value());
    CHECK(offline[3].last_error->message.find("injected") != std::string::npos);
    CHECK(offline[0].last_error->code == fieldsync::transport_errc::connect_failed);
}

TEST_CASE("Replicator: stop() is prompt even when the transport never confirms the close") {
    Fixture f;
    auto a = f.open("a");
    auto o = f.options("enumerator-longhuqu", [](int) {
        Faults faults;
        faults.ignore_close = true;
        return faults;
    });
    o.mode = ReplicatorMode::continuous;
    Replicator r(a, o);
    r.start();
    REQUIRE(eventually([&] { return r.status().state == ReplicatorState::idle; }));
    const auto t0 = std::chrono::steady_clock::now();
    r.stop();
    const auto took = std::chrono::steady_clock::now() - t0;
    CHECK(took < 1500ms);  // close_timeout_ms is 300
    CHECK(r.status().state == ReplicatorState::stopped);
}

TEST_CASE("Replicator: sync_once gives up after its timeout with a clear error") {
    Fixture f;
    auto a = f.open("a");
    Replicator r(a, f.options("enumerator-longhuqu", [](int) {
        Faults faults;
        faults.never_open = true;
        return faults;
    }));
    const auto t0 = std::chrono::steady_clock::now();
    auto st = r.sync_once(300ms);
    CHECK(std::chrono::steady_clock::now() - t0 < 2s);
    REQUIRE_FALSE(st.ok());
    CHECK(st.error().code == fieldsync::protocol_errc::busy);
    CHECK(st.error().message.find("did not finish within") != std::string::npos);
    CHECK_FALSE(r.running());
}

TEST_CASE("Replicator: a one-shot failure keeps the outbox and reports the transport's error") {
    Fixture f;
    auto a = f.open("a");
    {
        Replicator first(a, f.options("enumerator-longhuqu"));
        REQUIRE(first.sync_once(10s).ok());
    }
    create_household(*a, "Bater");
    Replicator r(a, f.options("enumerator-longhuqu", [](int) {
        Faults faults;
        faults.refuse = true;
        return faults;
    }));
    auto st = r.sync_once(10s);
    REQUIRE_FALSE(st.ok());
    CHECK(st.error().code == fieldsync::transport_errc::connect_failed);
    CHECK(a->pending_count().value() == 1);
    REQUIRE(r.status().last_error.has_value());
    CHECK_FALSE(r.status().up_to_date);
}

TEST_CASE("Replicator: a wrong password ends a continuous replicator instead of retrying") {
    Fixture f;
    auto a = f.open("a");
    auto o = f.options("enumerator-longhuqu");
    o.credentials.password = "wrong";
    o.mode = ReplicatorMode::continuous;
    o.backoff.initial_ms = 10;
    Replicator r(a, o);
    r.start();
    REQUIRE(eventually([&] { return !r.running(); }));
    const auto s = r.status();
    CHECK(s.state == ReplicatorState::stopped);
    REQUIRE(s.last_error.has_value());
    CHECK(s.last_error->code == fieldsync::protocol_errc::unauthenticated);
}

TEST_CASE("Replicator: sync_once refuses while a continuous run is active; stop from a callback") {
    Fixture f;
    auto a = f.open("a");
    auto o = f.options("enumerator-longhuqu");
    o.mode = ReplicatorMode::continuous;
    Replicator* self = nullptr;
    std::atomic<bool> stop_requested{false};
    o.on_status = [&](const ReplicatorStatus& s) {
        if (s.state == ReplicatorState::idle && stop_requested.load())
            self->stop();  // only requests
    };
    Replicator r(a, o);
    self = &r;
    r.start();
    REQUIRE(eventually([&] { return r.status().state == ReplicatorState::idle; }));
    auto st = r.sync_once(1s);
    REQUIRE_FALSE(st.ok());
    CHECK(st.error().code == fieldsync::protocol_errc::unexpected_message);
    stop_requested = true;
    create_household(*a, "Bater");  // pushes, then idle again: the callback stops the run
    CHECK(eventually([&] { return !r.running(); }));
}

#endif  // FIELDSYNC_HAVE_SERVER_CORE
