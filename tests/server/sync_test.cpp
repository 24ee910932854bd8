// The sync service, sans I/O: real SQLite store, real StoreWorker (group commit), real codec;
// no sockets. Each "device" is a session with a send callback that collects decoded replies.
#include <doctest/doctest.h>

#include <boost/json.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <random>
#include <sstream>

#include "fieldsync/protocol/messages.hpp"
#include "fieldsync/protocol/schema.hpp"
#include "fieldsync/server/auth.hpp"
#include "fieldsync/server/store.hpp"
#include "fieldsync/server/store_worker.hpp"

namespace p = fieldsync::protocol;
namespace fs = std::filesystem;
using namespace fieldsync::server;

namespace {

constexpr std::uint64_t t0 = 1'700'000'000'000;  // the fake "now"
const char* village_a = "ordos/ejin-horo/altan-xire/longhuqu";
const char* village_b = "ordos/ejin-horo/altan-xire/hashatu";
const char* other_banner_village = "ordos/hanggin/xini/shengli";

std::string read_file(const fs::path& p) {
    std::ifstream in(p);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

p::Id128 id_of(std::uint8_t kind, std::uint32_t n) {
    p::Id128 id;
    id.bytes[0] = kind;
    id.bytes[12] = static_cast<std::uint8_t>(n >> 24);
    id.bytes[13] = static_cast<std::uint8_t>(n >> 16);
    id.bytes[14] = static_cast<std::uint8_t>(n >> 8);
    id.bytes[15] = static_cast<std::uint8_t>(n);
    return id;
}

// One simulated tablet: a session on the worker plus the replies it received.
struct Tablet {
    StoreWorker* worker = nullptr;
    StoreWorker::SessionId sid = 0;
    p::Id128 device_id;
    p::ReplicaId replica;
    std::string user;
    std::mutex m;
    std::condition_variable cv;
    std::vector<p::Message> inbox;
    bool closed = false;
    std::uint16_t close_code = 0;
    std::uint64_t batch = 0;

    void open(StoreWorker& w) {
        worker = &w;
        sid = w.open_session("test-peer", [this](SyncOutput out) {
            std::lock_guard lock(m);
            for (auto& f : out.frames) {
                auto msg = p::decode_message(f);
                REQUIRE_MESSAGE(msg.ok(), "server sent an undecodable frame");
                inbox.push_back(std::move(*msg));
            }
            if (out.close) {
                closed = true;
                close_code = out.close_code;
            }
            cv.notify_all();
        });
    }

    void send(const p::Message& msg) { worker->frame(sid, p::encode_message(msg)); }
    void send_raw(p::Bytes b) { worker->frame(sid, std::move(b)); }

    // Waits for the next message (bounded), and returns it.
    p::Message next() {
        std::unique_lock lock(m);
        const bool got =
            cv.wait_for(lock, std::chrono::seconds(10), [&] { return !inbox.empty(); });
        REQUIRE_MESSAGE(got, "no reply within 10 s");
        p::Message msg = std::move(inbox.front());
        inbox.erase(inbox.begin());
        return msg;
    }
    template <class T>
    T next_as() {
        p::Message msg = next();
        if (auto* e = std::get_if<p::ErrorMessage>(&msg); e && !std::is_same_v<T, p::ErrorMessage>)
            FAIL("expected " << typeid(T).name() << ", got error " << e->code << ": "
                             << e->message);
        REQUIRE(std::holds_alternative<T>(msg));
        return std::get<T>(std::move(msg));
    }
    // Waits (bounded) until the server closed this session; returns its close code.
    std::uint16_t wait_closed() {
        std::unique_lock lock(m);
        const bool got = cv.wait_for(lock, std::chrono::seconds(10), [&] { return closed; });
        REQUIRE_MESSAGE(got, "the session was not closed within 10 s");
        return close_code;
    }
    bool idle_for(int ms) {
        std::unique_lock lock(m);
        return !cv.wait_for(lock, std::chrono::milliseconds(ms), [&] { return !inbox.empty(); });
    }

    p::Welcome hello(const std::string& password, std::uint64_t cursor = 0) {
        p::Hello h;
        h.device = device_id;
        h.replica = replica;
        h.app = "sync_test/1";
        h.auth = p::PasswordAuth{user, password};
        h.cursor = cursor;
        h.clock = t0;
        send(h);
        return next_as<p::Welcome>();
    }

    p::PushAck push(std::vector<p::RecordState> records, std::uint64_t sv = 1) {
        p::Push push;
        push.batch = ++batch;
        for (auto& r : records)
            push.items.push_back(p::PushItem{sv, std::move(r)});
        send(push);
        auto ack = next_as<p::PushAck>();
        CHECK(ack.batch == push.batch);
        return ack;
    }

    // Pulls every page from `since`; returns the records and the final cursor.
    std::pair<std::vector<p::ChangeItem>, std::uint64_t> pull_all(std::uint64_t since,
                                                                  std::uint64_t limit = 100,
                                                                  int* pages = nullptr) {
        std::vector<p::ChangeItem> all;
        for (int guard = 0; guard < 1000; ++guard) {
            send(p::Pull{since, limit});
            p::Message msg = next();
            while (std::holds_alternative<p::Revoke>(msg))
                msg = next();
            REQUIRE(std::holds_alternative<p::Changes>(msg));
            auto& c = std::get<p::Changes>(msg);
            CHECK(c.since == since);
            for (auto& it : c.items)
                all.push_back(std::move(it));
            since = c.cursor;
            if (pages) ++*pages;
            if (!c.more) break;
        }
        return {all, since};
    }
};

class Fixture {
public:
    explicit Fixture(bool overlap_sync = true) {
        dir = fs::temp_directory_path() /
              ("fieldsync-sync-test-" + std::to_string(std::random_device{}()));
        fs::create_directories(dir);
        auto store = open_sqlite_store(dir / "server.db");
        REQUIRE_MESSAGE(store.ok(), (store.ok() ? "" : store.error().message));
        schema_json =
            read_file(fs::path(FIELDSYNC_SOURCE_DIR) / "protocol/schemas/household-survey.json");
        auto schema = p::Schema::load(schema_json);
        REQUIRE_MESSAGE(schema.ok(), (schema.ok() ? "" : schema.error().message));
        Store& s = **store;
        REQUIRE(s.put_schema(schema->version(), schema_json));
        for (const char* code :
             {"ordos", "ordos/ejin-horo", "ordos/ejin-horo/altan-xire", village_a, village_b,
              "ordos/hanggin", "ordos/hanggin/xini", other_banner_village}) {
            Area a;
            a.code = code;
            const std::string c = code;
            a.parent = c.find('/') == std::string::npos ? "" : c.substr(0, c.rfind('/'));
            a.level = "area";
            a.name_en = code;
            REQUIRE(s.put_area(a));
        }
        add_user(s, "enum-a", Role::enumerator, {village_a});
        add_user(s, "enum-a2", Role::enumerator, {village_a});
        add_user(s, "enum-b", Role::enumerator, {village_b});
        add_user(s, "sup-ejin", Role::supervisor, {"ordos/ejin-horo"});
        add_user(s, "admin", Role::admin, {});
        StoreWorker::Options opt;
        opt.now_ms = [this] { return now.load(); };
        opt.limits.max_page = 50;
        opt.overlap_sync = overlap_sync;
        opt.before_sync = [this] {
            std::function<Status()> hook;
            {
                std::lock_guard lock(hook_mutex);
                hook = before_sync;
            }
            return hook ? hook() : Status{};
        };
        worker = std::make_unique<StoreWorker>(std::move(*store), std::move(*schema), opt);
    }
    ~Fixture() {
        // The worker first: its thread may still deliver to the sessions in `devices`.
        worker.reset();
        devices.clear();
        std::error_code ec;
        fs::remove_all(dir, ec);
    }

    void add_user(Store& s, const std::string& name, Role role, std::vector<std::string> areas) {
        User u;
        u.name = name;
        u.display_name = name;
        u.role = role;
        u.areas = std::move(areas);
        u.password_hash = hash_password(name + "-password", 1000);
        REQUIRE(s.add_user(u).ok());
    }

    Tablet& device(const std::string& user, std::uint32_t n) {
        auto d = std::make_unique<Tablet>();
        d->device_id = id_of(0xd0, n);
        d->replica = id_of(0xe0, n);
        d->user = user;
        d->open(*worker);
        devices.push_back(std::move(d));
        return *devices.back();
    }
    Tablet& connect(const std::string& user, std::uint32_t n) {
        Tablet& d = device(user, n);
        d.hello(user + "-password");
        return d;
    }

    // Reads from the store on the worker thread.
    template <class F>
    void with_store(F&& fn) {
        REQUIRE(worker->run_sync([&](Store& s, const p::Schema&) {
            fn(s);
            return false;
        }));
    }

    // Runs on the worker's sync thread before each fsync (set_before_sync).
    void set_before_sync(std::function<Status()> hook) {
        std::lock_guard lock(hook_mutex);
        before_sync = std::move(hook);
    }

    fs::path dir;
    std::string schema_json;
    std::mutex hook_mutex;
    std::function<Status()> before_sync;  // guarded by hook_mutex
    std::atomic<std::uint64_t> now{t0};
    std::unique_ptr<StoreWorker> worker;
    std::vector<std::unique_ptr<Tablet>> devices;
};

// A new household written by `d` (its replica, its user), in `village`.
p::RecordState new_household(Tablet& d, std::uint32_t n, const std::string& village,
                             std::uint64_t at = t0) {
    p::RecordState s;
    s.collection = "households";
    s.id = id_of(0x01, n);
    p::Update u(s, d.replica, p::HlcTimestamp::from_parts(at, 0), d.user);
    REQUIRE(u.set("village", p::MergeRule::lww, village));
    REQUIRE(u.set("head_name", p::MergeRule::review, std::string("Bater ") + std::to_string(n)));
    REQUIRE(u.set("poverty_status", p::MergeRule::review, std::string("national_line")));
    return s;
}

void edit(Tablet& d, p::RecordState& s, const std::string& field, p::MergeRule rule, p::Value v,
          std::uint64_t at) {
    p::Update u(s, d.replica, p::HlcTimestamp::from_parts(at, 0), d.user);
    REQUIRE(u.set(field, rule, std::move(v)));
}

std::uint64_t store_last_seq(Fixture& f) {
    std::uint64_t seq = 0;
    f.with_store([&](Store& s) { seq = s.last_seq().value(); });
    return seq;
}

}  // namespace

TEST_CASE("Sync: hello authenticates, binds the replica, and sends the schema") {
    Fixture f;
    SUBCASE("good password: welcome with schema, scope and a token") {
        Tablet& d = f.device("enum-a", 1);
        auto w = d.hello("enum-a-password");
        CHECK(w.user == "enum-a");
        CHECK(w.role == "enumerator");
        CHECK(w.scope == std::vector<std::string>{village_a});
        REQUIRE(w.schema.has_value());
        CHECK(p::Schema::load(*w.schema).ok());
        CHECK(w.server_time == t0);
        REQUIRE(w.token.has_value());
        SUBCASE("the token logs in again, without the schema when the device has it") {
            Tablet& again = f.device("enum-a", 1);
            p::Hello h;
            h.device = again.device_id;
            h.replica = again.replica;
            h.auth = p::TokenAuth{*w.token};
            h.schema_version = w.schema_version;
            again.send(h);
            auto w2 = again.next_as<p::Welcome>();
            CHECK_FALSE(w2.schema.has_value());
            CHECK_FALSE(w2.token.has_value());
        }
    }
    SUBCASE("wrong password: fatal error, connection closed") {
        Tablet& d = f.device("enum-a", 1);
        p::Hello h;
        h.device = d.device_id;
        h.replica = d.replica;
        h.auth = p::PasswordAuth{"enum-a", "wrong"};
        d.send(h);
        auto e = d.next_as<p::ErrorMessage>();
        CHECK(e.code == "unauthenticated");
        CHECK(e.fatal);
        CHECK(d.closed);
        CHECK(d.close_code == 1008);
    }
    SUBCASE("unknown user and forged token are refused alike") {
        Tablet& d = f.device("nobody", 1);
        p::Hello h;
        h.device = d.device_id;
        h.replica = d.replica;
        h.auth = p::TokenAuth{"forged-token"};
        d.send(h);
        CHECK(d.next_as<p::ErrorMessage>().code == "unauthenticated");
    }
    SUBCASE("another protocol version is refused") {
        Tablet& d = f.device("enum-a", 1);
        p::Hello h;
        h.version = 3;
        h.min_version = 2;  // a client that speaks only versions 2-3
        h.device = d.device_id;
        h.replica = d.replica;
        h.auth = p::PasswordAuth{"enum-a", "enum-a-password"};
        d.send(h);
        auto e = d.next_as<p::ErrorMessage>();
        CHECK(e.code == "unsupported_version");
        CHECK(e.fatal);
    }
    SUBCASE("a replica id claimed by another device is refused") {
        f.connect("enum-a", 1);
        Tablet& thief = f.device("enum-a2", 2);
        thief.replica = f.devices[0]->replica;
        p::Hello h;
        h.device = thief.device_id;
        h.replica = thief.replica;
        h.auth = p::PasswordAuth{"enum-a2", "enum-a2-password"};
        thief.send(h);
        auto e = thief.next_as<p::ErrorMessage>();
        CHECK(e.code == "replica_conflict");
        CHECK(e.fatal);
    }
    SUBCASE("anything before hello is fatal") {
        Tablet& d = f.device("enum-a", 1);
        d.send(p::Pull{0, 10});
        auto e = d.next_as<p::ErrorMessage>();
        CHECK(e.code == "unauthenticated");
        CHECK(d.closed);
    }
    SUBCASE("garbage before hello is fatal; after hello it is answered and the session goes on") {
        Tablet& d = f.device("enum-a", 1);
        d.send_raw({0xff, 0x00});
        CHECK(d.next_as<p::ErrorMessage>().fatal);
        Tablet& ok = f.connect("enum-a", 2);
        ok.send_raw({0xa1, 0x61});  // truncated map
        auto e = ok.next_as<p::ErrorMessage>();
        CHECK(e.code == "malformed");
        CHECK_FALSE(e.fatal);
        ok.send(p::Pull{0, 10});
        CHECK(ok.next_as<p::Changes>().items.empty());
    }
}

TEST_CASE("Sync: push then pull from a second device; replays change nothing") {
    Fixture f;
    Tablet& a = f.connect("enum-a", 1);
    Tablet& a2 = f.connect("enum-a2", 2);
    auto rec = new_household(a, 1, village_a);
    auto ack = a.push({rec});
    REQUIRE(ack.results.size() == 1);
    CHECK(ack.results[0].ok);
    CHECK(ack.cursor == 1);

    auto [items, cursor] = a2.pull_all(0);
    REQUIRE(items.size() == 1);
    CHECK(items[0].record == rec);
    CHECK(cursor == 1);

    SUBCASE("the same batch again: accepted, nothing new") {
        auto again = a.push({rec});
        CHECK(again.results[0].ok);
        CHECK(again.cursor == 1);
        CHECK(store_last_seq(f) == 1);
    }
    SUBCASE("an edit on the pulled state merges") {
        p::RecordState mine = items[0].record;
        edit(a2, mine, "members_count", p::MergeRule::review, std::int64_t{5}, t0 + 1000);
        CHECK(a2.push({mine}).results[0].ok);
        auto [items2, cursor2] = a.pull_all(1);
        REQUIRE(items2.size() == 1);
        CHECK(items2[0].record.view("members_count")->value == p::Value{std::int64_t{5}});
        CHECK(cursor2 == 2);
    }
    SUBCASE("the audit log records who did it") {
        f.with_store([&](Store& s) {
            auto audit = s.audit_for("households", rec.id, 10).value();
            REQUIRE(audit.size() == 1);
            CHECK(audit[0].user == "enum-a");
            CHECK(audit[0].device == a.device_id.to_string());
            CHECK(audit[0].summary.find("head_name") != std::string::npos);
            // The summary is written directly; it is the JSON of the documented object.
            auto sum = boost::json::parse(audit[0].summary).as_object();
            CHECK(sum.at("created").as_bool());
            CHECK(sum.at("fields").at("head_name").as_string() == "Bater 1");
            CHECK(sum.at("fields").at("village").as_string() == village_a);
        });
        // An edit lists only what changed, with the value now shown.
        auto later = rec;
        edit(a, later, "head_name", p::MergeRule::review, std::string("Bater \"Bayan\"\n"), t0 + 5);
        edit(a, later, "gps", p::MergeRule::lww, p::GeoPoint{396087000, 1099812345}, t0 + 5);
        REQUIRE(a.push({later}).results[0].ok);
        f.with_store([&](Store& s) {
            auto audit = s.audit_for("households", rec.id, 10).value();
            REQUIRE(audit.size() == 2);  // newest first
            CHECK(audit[0].summary ==
                  R"({"fields":{"_deleted":false,"gps":{"lat":39.6087,"lon":109.9812345},)"
                  R"("head_name":"Bater \"Bayan\"\n"},"created":false})");
        });
    }
}

TEST_CASE("Sync: a damaged stored state fails the pull on the server, naming the record") {
    Fixture f;
    Tablet& a = f.connect("enum-a", 1);
    REQUIRE(a.push({new_household(a, 1, village_a)}).results[0].ok);
    // Stored states go out as they are; one that is not a whole CBOR item must not.
    f.with_store([&](Store& s) {
        RecordWrite w;
        w.collection = "households";
        w.id = id_of(0x01, 2);
        w.area = village_a;
        w.schema_version = 1;
        w.at_ms = static_cast<std::int64_t>(t0);
        w.state = {0xa4, 0x61, 0x63};  // a map of 4 entries, cut short
        REQUIRE(s.put_record(w).ok());
    });
    a.send(p::Pull{0, 100});
    auto err = a.next_as<p::ErrorMessage>();
    CHECK(err.code == "internal");
    CHECK(err.message.find(id_of(0x01, 2).to_string()) != std::string::npos);
}

TEST_CASE("Sync: pulls are paged and resume from a cursor") {
    Fixture f;
    Tablet& a = f.connect("enum-a", 1);
    std::vector<p::RecordState> recs;
    for (std::uint32_t i = 0; i < 25; ++i)
        recs.push_back(new_household(a, 100 + i, village_a));
    auto ack = a.push(recs);
    for (const auto& r : ack.results)
        CHECK(r.ok);
    Tablet& b = f.connect("enum-a2", 2);
    int pages = 0;
    auto [first, cursor] = b.pull_all(0, 10, &pages);
    CHECK(first.size() == 25);
    CHECK(pages == 3);
    CHECK(cursor == 25);
    // Resume from the middle: exactly the rest.
    auto [rest, cursor2] = b.pull_all(first[9].seq, 10);
    CHECK(rest.size() == 15);
    CHECK(rest.front().seq == first[10].seq);
    CHECK(cursor2 == 25);
}

TEST_CASE("Sync: live notifications reach devices whose scope the change touches") {
    Fixture f;
    Tablet& a = f.connect("enum-a", 1);
    Tablet& a2 = f.connect("enum-a2", 2);
    Tablet& b = f.connect("enum-b", 3);
    a2.pull_all(0);  // now live
    b.pull_all(0);   // live, other village
    a.push({new_household(a, 1, village_a)});
    auto n = a2.next_as<p::Notify>();
    REQUIRE(n.items.size() == 1);
    CHECK(n.since == 0);
    CHECK(n.cursor == 1);
    CHECK(b.idle_for(200));  // enum-b's village was not touched
}

TEST_CASE("Sync: a household that moves to another village is revoked from the old one") {
    Fixture f;
    Tablet& a = f.connect("enum-a", 1);
    Tablet& sup = f.connect("sup-ejin", 2);
    auto rec = new_household(a, 1, village_a);
    a.push({rec});
    auto [held, cursor] = a.pull_all(0);  // enum-a is live
    REQUIRE(held.size() == 1);
    // The banner supervisor moves it to another village of the banner.
    auto [sup_items, sup_cursor] = sup.pull_all(0);
    p::RecordState moved = sup_items.at(0).record;
    edit(sup, moved, "village", p::MergeRule::lww, std::string(village_b), t0 + 5000);
    CHECK(sup.push({moved}).results[0].ok);
    auto rv = a.next_as<p::Revoke>();
    REQUIRE(rv.records.size() == 1);
    CHECK(rv.records[0].id == rec.id);
    SUBCASE("a device that was offline learns it on its next pull") {
        Tablet& a2 = f.connect("enum-a2", 3);
        a2.send(p::Pull{cursor, 100});
        auto rv2 = a2.next_as<p::Revoke>();
        CHECK(rv2.records.size() == 1);
        CHECK(a2.next_as<p::Changes>().items.empty());
    }
}

TEST_CASE("Sync: two offline edits open a conflict; a write that saw both closes it") {
    Fixture f;
    Tablet& a = f.connect("enum-a", 1);
    Tablet& a2 = f.connect("enum-a2", 2);
    auto rec = new_household(a, 1, village_a);
    a.push({rec});
    p::RecordState mine = rec, theirs = rec;
    edit(a, mine, "poverty_status", p::MergeRule::review, std::string("dibao_line"), t0 + 100);
    edit(a2, theirs, "poverty_status", p::MergeRule::review, std::string("not_poor"), t0 + 200);
    CHECK(a.push({mine}).results[0].ok);
    CHECK(a2.push({theirs}).results[0].ok);
    f.with_store([&](Store& s) {
        auto open = s.list_conflicts(ConflictFilter{true, "", "", 0, 100, 0}).value();
        REQUIRE(open.size() == 1);
        CHECK(open[0].field == "poverty_status");
        CHECK(open[0].area == village_a);
        CHECK(open[0].values_json.find("dibao_line") != std::string::npos);
        CHECK(open[0].values_json.find("not_poor") != std::string::npos);
        CHECK(open[0].values_json.find("enum-a2") != std::string::npos);
    });
    // enum-a pulls the merged state, decides, and writes: the register collapses.
    auto [items, cursor] = a.pull_all(0);
    p::RecordState merged = items.back().record;
    CHECK(merged.conflicts() == std::vector<std::string>{"poverty_status"});
    edit(a, merged, "poverty_status", p::MergeRule::review, std::string("dibao_line"), t0 + 300);
    CHECK(a.push({merged}).results[0].ok);
    f.with_store([&](Store& s) {
        CHECK(s.list_conflicts(ConflictFilter{true, "", "", 0, 100, 0}).value().empty());
        CHECK(s.count_open_conflicts().value() == 0);
    });
}

TEST_CASE("Sync: pushes outside the rules are refused per item and change nothing") {
    Fixture f;
    Tablet& a = f.connect("enum-a", 1);
    Tablet& b = f.device("enum-b", 9);
    b.hello("enum-b-password");
    auto good = new_household(a, 1, village_a);
    const std::uint64_t before = store_last_seq(f);

    auto expect_rejected = [&](p::RecordState r, const char* code, const char* words) {
        auto ack = a.push({std::move(r)});
        REQUIRE(ack.results.size() == 1);
        CHECK_FALSE(ack.results[0].ok);
        CHECK(ack.results[0].code == code);
        CHECK_MESSAGE(ack.results[0].reason.find(words) != std::string::npos,
                      ack.results[0].reason);
    };
    SUBCASE("outside the enumerator's villages") {
        expect_rejected(new_household(a, 2, other_banner_village), "forbidden",
                        "outside your assigned areas");
    }
    SUBCASE("another replica's writes (forged dots)") {
        auto forged = new_household(b, 3, village_a);  // made with enum-b's replica
        for (auto& [name, st] : forged.fields)
            if (p::rule_of(st) == p::MergeRule::review)
                for (auto& e : std::get<p::ReviewState>(st).entries)
                    e.by = "enum-a";
        if (auto* l = std::get_if<p::LwwState>(&forged.fields.at("village")))
            l->entry.by = "enum-a";
        expect_rejected(forged, "forbidden", "may only introduce writes of its own replica");
    }
    SUBCASE("signed by another user") {
        auto r = new_household(a, 4, village_a);
        std::get<p::ReviewState>(r.fields.at("head_name")).entries[0].by = "enum-b";
        expect_rejected(r, "forbidden", "signed by");
    }
    SUBCASE("stamped a year ahead") {
        expect_rejected(new_household(a, 5, village_a, t0 + 365ull * 24 * 3600 * 1000),
                        "clock_drift", "ahead of the server's clock");
    }
    SUBCASE("invalid against the schema") {
        auto r = new_household(a, 6, village_a);
        edit(a, r, "poverty_status", p::MergeRule::review, std::string("rich"), t0 + 1);
        expect_rejected(r, "validation_failed", "poverty_status");
    }
    SUBCASE("a schema version the server does not know") {
        auto ack = a.push({good}, 99);
        CHECK(ack.results[0].code == "unsupported_version");
    }
    CHECK(store_last_seq(f) == before);
    SUBCASE("good and bad items in one batch: the good one lands") {
        auto ack = a.push({good, new_household(a, 7, other_banner_village)});
        REQUIRE(ack.results.size() == 2);
        CHECK(ack.results[0].ok);
        CHECK_FALSE(ack.results[1].ok);
        CHECK(store_last_seq(f) == before + 1);
    }
}

// A latch that opens when the test leaves, whatever way: declared before the Fixture, so the
// worker's threads (stopped by ~Fixture) never wait on a destroyed one.
struct Latch {
    std::mutex m;
    std::condition_variable cv;
    bool open = false;
    int waiting = 0;
    ~Latch() { release(); }
    void release() {
        {
            std::lock_guard lock(m);
            open = true;
        }
        cv.notify_all();
    }
    void wait() {
        std::unique_lock lock(m);
        ++waiting;
        cv.notify_all();
        cv.wait_for(lock, std::chrono::seconds(10), [&] { return open; });
    }
    bool wait_for_waiter() {
        std::unique_lock lock(m);
        return cv.wait_for(lock, std::chrono::seconds(10), [&] { return waiting > 0; });
    }
};

TEST_CASE("Sync: a push validated before a schema change is validated again under the new one") {
    // The I/O thread validates a push under the schema it sees (StoreWorker::frame); if the
    // schema changes before the worker applies it, that check no longer counts.
    Latch latch;
    Fixture f;
    Tablet& a = f.connect("enum-a", 1);
    std::string v2 = f.schema_json;
    const auto at = v2.find("\"version\": 1");
    REQUIRE(at != std::string::npos);
    v2.replace(at, 12, "\"version\": 2");
    const auto code = v2.find("\"national_line\"");
    REQUIRE(code != std::string::npos);
    v2.replace(code, 15, "\"national_line_2014\"");
    auto schema2 = p::Schema::load(v2);
    REQUIRE_MESSAGE(schema2.ok(), (schema2.ok() ? "" : schema2.error().message));

    // Hold the worker, so that the push is decoded and prepared under version 1 but applied
    // after version 2 is in force. (The job may outlive a failed REQUIRE: the latch is
    // declared before the fixture, and released in any case.)
    f.worker->post(
        [&](Store&, const p::Schema&) {
            latch.wait();
            return false;
        },
        [](const Status&) {});
    f.worker->set_schema(std::move(*schema2));
    p::Push push;
    push.batch = 77;
    push.items.push_back(p::PushItem{1, new_household(a, 1, village_a)});  // national_line
    a.send(push);
    latch.release();
    auto ack = a.next_as<p::PushAck>();
    REQUIRE(ack.results.size() == 1);
    CHECK_FALSE(ack.results[0].ok);
    CHECK(ack.results[0].code == "validation_failed");
    CHECK_MESSAGE(ack.results[0].reason.find("national_line") != std::string::npos,
                  ack.results[0].reason);
}

TEST_CASE("Sync: replies wait for the sync that makes the group durable") {
    // The commit returns before the fsync (Store::defer_sync); the sync thread fsyncs, then
    // delivers. Hold the sync: neither the pusher's ack nor another device's pull of the new
    // record may leave before it.
    Latch latch;
    Fixture f;
    Tablet& a = f.connect("enum-a", 1);
    Tablet& b = f.connect("enum-a2", 2);
    f.set_before_sync([&]() -> Status {
        latch.wait();
        return {};
    });
    p::Push push;
    push.batch = 5;
    push.items.push_back(p::PushItem{1, new_household(a, 1, village_a)});
    a.send(push);
    REQUIRE(latch.wait_for_waiter());
    b.send(p::Pull{0, 100});  // runs on the worker meanwhile: it sees the committed record
    CHECK(a.idle_for(300));
    CHECK(b.idle_for(100));
    latch.release();
    auto ack = a.next_as<p::PushAck>();
    REQUIRE(ack.results.size() == 1);
    CHECK(ack.results[0].ok);
    auto changes = b.next_as<p::Changes>();
    REQUIRE(changes.items.size() == 1);
    CHECK(changes.cursor == ack.cursor);
    f.set_before_sync(nullptr);
    CHECK(f.worker->stats().syncs.load() >= 1);
    CHECK(f.worker->stats().syncs_failed.load() == 0);
}

TEST_CASE("Sync: a failed sync acknowledges nothing, and every later write is refused") {
    Fixture f;
    Tablet& a = f.connect("enum-a", 1);
    f.set_before_sync([] {
        return Status(Error{p::protocol_errc::internal, "injected: the disk went away"});
    });
    p::Push push;
    push.batch = 5;
    push.items.push_back(p::PushItem{1, new_household(a, 1, village_a)});
    a.send(push);
    CHECK(a.wait_closed() == 1011);
    {
        std::lock_guard lock(a.m);
        for (const auto& msg : a.inbox)
            CHECK_FALSE(std::holds_alternative<p::PushAck>(msg));
    }
    CHECK(f.worker->stats().syncs_failed.load() == 1);
    // The worker now refuses every group, even after the disk came back: restart the server.
    f.set_before_sync(nullptr);
    Tablet& b = f.device("enum-a2", 2);
    p::Hello h;
    h.device = b.device_id;
    h.replica = b.replica;
    h.app = "sync_test/1";
    h.auth = p::PasswordAuth{b.user, "enum-a2-password"};
    h.clock = t0;
    b.send(h);
    CHECK(b.wait_closed() == 1011);
    Status job = f.worker->run_sync([](Store&, const p::Schema&) { return false; });
    REQUIRE_FALSE(job.ok());
    CHECK(job.error().message == StoreWorker::not_durable_message);
    CHECK(job.error().message.find("restarts it") != std::string::npos);
}

TEST_CASE("Sync: without overlapped sync, the worker replies after its own durable commit") {
    // overlap_sync = false (or a store that cannot defer its syncs): no sync thread; the
    // commit is durable when it returns (synchronous=FULL) and the worker delivers at once.
    Fixture f(false);
    Tablet& a = f.connect("enum-a", 1);
    Tablet& b = f.connect("enum-a2", 2);
    auto ack = a.push({new_household(a, 1, village_a)});
    REQUIRE(ack.results.size() == 1);
    CHECK(ack.results[0].ok);
    auto [items, cursor] = b.pull_all(0);
    CHECK(items.size() == 1);
    CHECK(cursor == ack.cursor);
    CHECK(f.worker->stats().syncs.load() == 0);
    Status job = f.worker->run_sync([](Store&, const p::Schema&) { return false; });
    CHECK(job.ok());
    f.worker->stop();  // idempotent with ~Fixture
}

TEST_CASE("Sync: stopping the worker runs what the last replies posted") {
    // A reply's completion may post a job (an API call's second round after password hashing,
    // a schema change): stop() must run it, not drop it and leave its request unanswered.
    Fixture f;
    StoreWorker& w = *f.worker;
    std::atomic<bool> second{false};
    w.post([](Store&, const p::Schema&) { return false; },
           [&w, &second](const Status&) {
               w.post([](Store&, const p::Schema&) { return false; },
                      [&second](const Status& st) { second = st.ok(); });
           });
    w.stop();
    CHECK(second.load());
}

TEST_CASE("Sync: the scope digest matches the device's own") {
    Fixture f;
    Tablet& a = f.connect("enum-a", 1);
    std::vector<p::RecordState> recs;
    for (std::uint32_t i = 0; i < 5; ++i)
        recs.push_back(new_household(a, i, village_a));
    a.push(recs);
    auto [items, cursor] = a.pull_all(0);
    p::ScopeDigest mine;
    for (const auto& it : items)
        mine.add(it.record);
    a.send(p::DigestRequest{});
    auto d = a.next_as<p::Digest>();
    CHECK(d.count == 5);
    CHECK(d.digest == mine.value());
    CHECK(d.cursor == cursor);
}

TEST_CASE("Sync: a device whose cursor is ahead of the server must re-bootstrap") {
    Fixture f;
    Tablet& a = f.device("enum-a", 1);
    a.hello("enum-a-password", 1000);
    auto e = a.next_as<p::ErrorMessage>();
    CHECK(e.code == "rebootstrap_required");
    CHECK_FALSE(e.fatal);
}
