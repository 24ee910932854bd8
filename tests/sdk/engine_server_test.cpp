// The SDK's sync engine against the real sync service, in process and without sockets: a real
// SQLite server store and StoreWorker (group commit), real SQLite replicas, real codec. Each
// tablet's link carries the engine's frames to StoreWorker::frame and the worker's replies
// (delivered on its thread) back into an inbox that the test thread feeds to the engine.
#include <doctest/doctest.h>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>

#include "fieldsync/server/auth.hpp"
#include "fieldsync/server/store.hpp"
#include "fieldsync/server/store_worker.hpp"
#include "sdk_test_support.hpp"

using namespace fstest;
using namespace std::chrono_literals;
namespace srv = fieldsync::server;
using fieldsync::SyncEventKind;
using fieldsync::SyncPhase;
using fieldsync::SyncStatus;

namespace {

/// The server: a store with the demo survey, the area tree and a few users.
struct Server {
    TempDir dir;
    std::atomic<std::uint64_t> now{t0};
    std::unique_ptr<srv::StoreWorker> worker;

    Server() {
        auto store = srv::open_sqlite_store(dir.path() / "server.db");
        REQUIRE_MESSAGE(store.ok(), (store.ok() ? "" : store.error().message));
        srv::Store& s = **store;
        REQUIRE(s.put_schema(demo_schema().version(), demo_schema_json()));
        for (const std::string& code :
             {std::string("ordos"), std::string("ordos/ejin-horo"),
              std::string("ordos/ejin-horo/altan-xire"), village_a, village_b}) {
            srv::Area a;
            a.code = code;
            a.parent = code.find('/') == std::string::npos ? "" : code.substr(0, code.rfind('/'));
            a.level = "area";
            a.name_en = code;
            REQUIRE(s.put_area(a));
        }
        add_user(s, "enum-a", srv::Role::enumerator, {village_a});
        add_user(s, "enum-b", srv::Role::enumerator, {village_a});
        add_user(s, "sup", srv::Role::supervisor, {"ordos/ejin-horo"});
        srv::StoreWorker::Options opt;
        opt.now_ms = [this] { return now.load(); };
        opt.limits.max_page = 3;  // several pages even for small scopes
        worker = std::make_unique<srv::StoreWorker>(std::move(*store), demo_schema(), opt);
    }
    ~Server() { worker->stop(); }

    static void add_user(srv::Store& s, const std::string& name, srv::Role role,
                         std::vector<std::string> areas) {
        srv::User u;
        u.name = name;
        u.display_name = name;
        u.role = role;
        u.areas = std::move(areas);
        u.password_hash = srv::hash_password(name + "-pw", 1000);
        REQUIRE(s.add_user(u).ok());
    }

    std::size_t open_conflicts() {
        std::size_t n = 0;
        REQUIRE(worker->run_sync([&](srv::Store& s, const p::Schema&) {
            n = s.count_open_conflicts().value();
            return false;
        }));
        return n;
    }
};

/// Frames from the worker to one tablet. Shared with the worker's callback, so a late reply
/// after the tablet went away lands here harmlessly.
struct Inbox {
    std::mutex m;
    std::condition_variable cv;
    std::deque<p::Bytes> frames;
    bool closed = false;
};

/// One tablet: a replica, its engine, and its session on the worker.
struct Tablet {
    Server& server;
    std::string user;
    ReplicaFixture local;
    std::unique_ptr<SyncEngine> engine;
    srv::StoreWorker::SessionId sid = 0;
    std::shared_ptr<Inbox> inbox;
    std::vector<fieldsync::SyncEvent> events;

    Tablet(Server& s, std::string u) : server(s), user(std::move(u)) {}
    ~Tablet() { disconnect(); }

    void connect() {
        inbox = std::make_shared<Inbox>();
        sid = server.worker->open_session("tablet-" + user, [box = inbox](srv::SyncOutput out) {
            std::lock_guard lock(box->m);
            for (auto& f : out.frames)
                box->frames.push_back(std::move(f));
            if (out.close) box->closed = true;
            box->cv.notify_all();
        });
        engine = std::make_unique<SyncEngine>(local.replica);
        deliver(engine->start({user, user + "-pw", ""}, "engine_server_test/1"));
    }
    void disconnect() {
        if (!engine) return;
        server.worker->close_session(sid);
        (void)engine->on_disconnected();
        engine.reset();
    }
    void deliver(const EngineOutput& out) {
        for (const auto& e : out.events)
            events.push_back(e);
        REQUIRE_MESSAGE(!out.close,
                        user << ": the engine closed the session: " << out.close_reason);
        for (const auto& f : out.frames)
            server.worker->frame(sid, f);
    }
    /// Feeds one waiting frame to the engine; false when none arrived within `wait`.
    bool step(std::chrono::milliseconds wait) {
        p::Bytes frame;
        {
            std::unique_lock lock(inbox->m);
            if (!inbox->cv.wait_for(lock, wait, [&] { return !inbox->frames.empty(); }))
                return false;
            frame = std::move(inbox->frames.front());
            inbox->frames.pop_front();
        }
        deliver(engine->on_frame(frame));
        return true;
    }
    bool saw(SyncEventKind k) const {
        return std::any_of(events.begin(), events.end(),
                           [&](const auto& e) { return e.kind == k; });
    }
};

/// Runs every connected tablet until all are live and nothing arrived for a while.
void settle(std::vector<Tablet*> tablets) {
    const auto deadline = std::chrono::steady_clock::now() + 20s;
    auto quiet_since = std::chrono::steady_clock::now();
    while (std::chrono::steady_clock::now() < deadline) {
        bool any = false;
        for (auto* t : tablets)
            while (t->step(0ms))
                any = true;
        const bool all_live = std::all_of(tablets.begin(), tablets.end(), [](Tablet* t) {
            return t->engine->phase() == SyncPhase::live;
        });
        if (any || !all_live) {
            quiet_since = std::chrono::steady_clock::now();
            if (!any) std::this_thread::sleep_for(2ms);
            continue;
        }
        if (std::chrono::steady_clock::now() - quiet_since > 150ms) return;
        std::this_thread::sleep_for(2ms);
    }
    FAIL("the tablets did not settle within 20 s");
}

std::string status_of(Tablet& t, const p::RecordId& id) {
    auto v = t.local.view("households", id);
    return p::to_display(v.fields.at("poverty_status").value);
}

}  // namespace

TEST_CASE(
    "Engine: against the real sync service, an offline conflict appears on both tablets "
    "and a third write resolves it") {
    Server server;
    Tablet a(server, "enum-a");
    Tablet b(server, "enum-b");

    // First sync: both receive the schema.
    a.connect();
    b.connect();
    settle({&a, &b});
    CHECK(a.saw(SyncEventKind::schema_updated));
    REQUIRE(a.local.replica->schema() != nullptr);

    // A registers a household; B (live) receives it as a notify.
    const auto id = a.local.household("Bater", village_a, "national_line");
    a.deliver(a.engine->push_pending());
    settle({&a, &b});
    CHECK(a.local.replica->pending_count().value() == 0);
    REQUIRE(b.local.replica->get("households", id).value().has_value());
    CHECK(status_of(b, id) == "\"national_line\"");

    // Both go offline and record a different poverty status.
    a.disconnect();
    b.disconnect();
    a.local.clock.set(t0 + 1'000);
    b.local.clock.set(t0 + 2'000);
    REQUIRE(
        a.local.replica->update("households", id, {{"poverty_status", std::string("marginal")}}));
    REQUIRE(b.local.replica->update(
        "households", id,
        {{"poverty_status", std::string("not_poor")}, {"members_count", std::int64_t{4}}}));
    CHECK_FALSE(a.local.view("households", id).fields.at("poverty_status").conflict);

    // Both sync; each ends holding both values, flagged, with the same provisional value.
    server.now = t0 + 3'000;
    a.connect();
    settle({&a});
    b.connect();
    settle({&a, &b});
    for (Tablet* t : {&a, &b}) {
        CAPTURE(t->user);
        auto v = t->local.view("households", id);
        const auto& f = v.fields.at("poverty_status");
        CHECK(f.conflict);
        CHECK(f.competing.size() == 2);
        CHECK(p::to_display(f.value) == "\"not_poor\"");
        CHECK(*v.value("members_count") == Value{std::int64_t{4}});
        CHECK(v.sync == SyncStatus::synced);
    }
    CHECK(a.local.view("households", id).state == b.local.view("households", id).state);
    CHECK(server.open_conflicts() == 1);

    // A third write (A's, having seen both) resolves it everywhere.
    a.local.clock.set(t0 + 4'000);
    REQUIRE(
        a.local.replica->update("households", id, {{"poverty_status", std::string("dibao_line")}}));
    a.deliver(a.engine->push_pending());
    settle({&a, &b});
    for (Tablet* t : {&a, &b}) {
        CAPTURE(t->user);
        auto v = t->local.view("households", id);
        CHECK_FALSE(v.fields.at("poverty_status").conflict);
        CHECK(status_of(*t, id) == "\"dibao_line\"");
        CHECK(v.conflicts.empty());
    }
    CHECK(a.local.view("households", id).state == b.local.view("households", id).state);
    CHECK(server.open_conflicts() == 0);

    // The digests agree with the server's.
    for (Tablet* t : {&a, &b}) {
        t->deliver(t->engine->check_digest());
        settle({t});
        CHECK(t->saw(SyncEventKind::digest_matched));
        CHECK_FALSE(t->saw(SyncEventKind::digest_mismatch));
    }
}

TEST_CASE(
    "Engine: against the real sync service, many records page through and reconnects "
    "resume from the cursor") {
    Server server;
    Tablet a(server, "enum-a");
    Tablet b(server, "enum-b");
    a.connect();
    settle({&a});
    for (int i = 0; i < 10; ++i)
        a.local.household("H" + std::to_string(i));
    a.deliver(a.engine->push_pending());
    settle({&a});
    CHECK(a.local.replica->pending_count().value() == 0);

    b.connect();
    settle({&b});
    CHECK(b.local.replica->count("households").value() == 10);
    CHECK(b.engine->progress().pages >= 4);  // max_page 3 on the server
    const auto cursor = b.local.replica->sync_info().value().cursor;
    CHECK(cursor > 0);

    // B reconnects with the stored token and cursor: nothing to download again.
    b.disconnect();
    b.local.reopen();
    b.inbox.reset();
    b.inbox = std::make_shared<Inbox>();
    b.sid = server.worker->open_session("tablet-b", [box = b.inbox](srv::SyncOutput out) {
        std::lock_guard lock(box->m);
        for (auto& f : out.frames)
            box->frames.push_back(std::move(f));
        box->cv.notify_all();
    });
    b.engine = std::make_unique<SyncEngine>(b.local.replica);
    b.deliver(b.engine->start({}, "engine_server_test/1"));  // token login
    settle({&b});
    CHECK(b.engine->progress().pulled == 0);
    CHECK(b.local.replica->sync_info().value().cursor == cursor);
}
