// The HTTP JSON API, sans I/O: HttpApi driven directly (no sockets) over a real SQLite store and
// a real StoreWorker (group commit). Records reach the store the way they do in production:
// tablets (SyncSessions on the same worker) push them. Every response is awaited with a bound.
#include <doctest/doctest.h>

#include <boost/json.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <future>
#include <mutex>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include "fieldsync/protocol/messages.hpp"
#include "fieldsync/protocol/schema.hpp"
#include "fieldsync/server/auth.hpp"
#include "fieldsync/server/http_api.hpp"
#include "fieldsync/server/store.hpp"
#include "fieldsync/server/store_worker.hpp"

namespace p = fieldsync::protocol;
namespace fs = std::filesystem;
namespace json = boost::json;
using namespace fieldsync::server;

namespace {

constexpr std::uint64_t t0 = 1'700'000'000'000;  // 2023-11-14T22:13:20Z, the fake "now"
const char* village_a = "ordos/ejin-horo/altan-xire/longhuqu";
const char* village_b = "ordos/ejin-horo/altan-xire/hashatu";
const char* village_h = "ordos/hanggin/xini/shengli";

std::string read_file(const fs::path& path) {
    std::ifstream in(path);
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

json::value parse(const std::string& s) {
    json::error_code ec;
    json::value v = json::parse(s, ec);
    REQUIRE_MESSAGE(!ec, "response is not JSON: " << s);
    return v;
}

std::string str(const json::value& v) {
    return std::string(v.as_string());
}

// One simulated tablet: a sync session on the worker, with the replies it received.
struct Tablet {
    StoreWorker* worker = nullptr;
    StoreWorker::SessionId sid = 0;
    p::Id128 device_id;
    p::ReplicaId replica;
    std::string user;
    std::mutex m;
    std::condition_variable cv;
    std::vector<p::Message> inbox;
    std::uint64_t batch = 0;

    void open(StoreWorker& w) {
        worker = &w;
        sid = w.open_session("tablet-peer", [this](SyncOutput out) {
            std::lock_guard lock(m);
            for (auto& f : out.frames) {
                auto msg = p::decode_message(f);
                if (msg) inbox.push_back(std::move(*msg));
            }
            cv.notify_all();
        });
    }
    void send(const p::Message& msg) { worker->frame(sid, p::encode_message(msg)); }
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
        if (auto* e = std::get_if<p::ErrorMessage>(&msg))
            FAIL("expected another message, got error " << e->code << ": " << e->message);
        REQUIRE(std::holds_alternative<T>(msg));
        return std::get<T>(std::move(msg));
    }
    void hello() {
        p::Hello h;
        h.device = device_id;
        h.replica = replica;
        h.app = "api_test/1";
        h.auth = p::PasswordAuth{user, user + "-password"};
        h.clock = t0;
        send(h);
        (void)next_as<p::Welcome>();
    }
    void push(std::vector<p::RecordState> records) {
        p::Push push;
        push.batch = ++batch;
        for (auto& r : records)
            push.items.push_back(p::PushItem{1, std::move(r)});
        send(push);
        auto ack = next_as<p::PushAck>();
        for (const auto& r : ack.results)
            REQUIRE_MESSAGE(r.ok, r.code << ": " << r.reason);
    }
    // Pulls everything; afterwards the session is live.
    void pull_all() {
        std::uint64_t since = 0;
        for (int guard = 0; guard < 100; ++guard) {
            send(p::Pull{since, 500});
            p::Message msg = next();
            while (std::holds_alternative<p::Revoke>(msg))
                msg = next();
            REQUIRE(std::holds_alternative<p::Changes>(msg));
            auto& c = std::get<p::Changes>(msg);
            since = c.cursor;
            if (!c.more) break;
        }
    }
};

class Fixture {
public:
    explicit Fixture(std::size_t max_body = 1u << 20) {
        dir = fs::temp_directory_path() /
              ("fieldsync-api-test-" + std::to_string(std::random_device{}()));
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
              "ordos/hanggin", "ordos/hanggin/xini", village_h}) {
            Area a;
            a.code = code;
            const std::string c = code;
            a.parent = c.find('/') == std::string::npos ? "" : c.substr(0, c.rfind('/'));
            a.level = "area";
            a.name_en = c.substr(c.rfind('/') + 1);
            a.name_zh = "区域";
            REQUIRE(s.put_area(a));
        }
        add_user(s, "enum-a", Role::enumerator, {village_a});
        add_user(s, "enum-a2", Role::enumerator, {village_a});
        add_user(s, "enum-h", Role::enumerator, {village_h});
        add_user(s, "sup-ejin", Role::supervisor, {"ordos/ejin-horo"});
        add_user(s, "sup-hanggin", Role::supervisor, {"ordos/hanggin"});
        add_user(s, "admin", Role::admin, {});
        StoreWorker::Options opt;
        opt.now_ms = [this] { return now.load(); };
        worker = std::make_unique<StoreWorker>(std::move(*store), std::move(*schema), opt);
        ApiOptions ao;
        ao.password_iterations = 1000;
        ao.max_body_bytes = max_body;
        api = std::make_unique<HttpApi>(*worker, ao);
    }
    ~Fixture() {
        // The worker first: its sessions' send callbacks point at the tablets.
        api.reset();
        worker.reset();
        tablets.clear();
        std::error_code ec;
        fs::remove_all(dir, ec);
    }

    void add_user(Store& s, const std::string& name, Role role, std::vector<std::string> areas) {
        User u;
        u.name = name;
        u.display_name = name + " display";
        u.role = role;
        u.areas = std::move(areas);
        u.password_hash = hash_password(name + "-password", 1000);
        REQUIRE(s.add_user(u).ok());
    }

    HttpResponse call(const std::string& method, const std::string& target,
                      const std::string& body = "", const std::string& token = "",
                      const std::string& content_type = "application/json",
                      const std::string& peer = "10.0.0.1") {
        HttpRequest r;
        r.method = method;
        r.target = target;
        r.body = body;
        r.content_type = content_type;
        r.peer = peer;
        if (!token.empty()) r.authorization = "Bearer " + token;
        auto promise = std::make_shared<std::promise<HttpResponse>>();
        auto future = promise->get_future();
        api->handle(std::move(r),
                    [promise](HttpResponse resp) { promise->set_value(std::move(resp)); });
        REQUIRE_MESSAGE(future.wait_for(std::chrono::seconds(10)) == std::future_status::ready,
                        "no response within 10 s for " << method << " " << target);
        return future.get();
    }
    // The JSON body of a response that must have `status`.
    json::value expect(unsigned status, const std::string& method, const std::string& target,
                       const std::string& body = "", const std::string& token = "") {
        HttpResponse r = call(method, target, body, token);
        INFO(method << " " << target << " -> " << r.status << " " << r.body);
        CHECK(r.status == status);
        if (r.body.empty()) return nullptr;
        return parse(r.body);
    }
    // The error object of a failed request.
    json::object error(unsigned status, const std::string& method, const std::string& target,
                       const std::string& body = "", const std::string& token = "") {
        json::value v = expect(status, method, target, body, token);
        REQUIRE(v.is_object());
        REQUIRE(v.as_object().contains("error"));
        json::object e = v.at("error").as_object();
        CHECK(e.at("code").is_string());
        CHECK(e.at("message").is_string());
        return e;
    }
    std::string login(const std::string& user) {
        json::value v =
            expect(200, "POST", "/api/login",
                   R"({"user":")" + user + R"(","password":")" + user + R"(-password"})");
        return str(v.at("token"));
    }

    // Reads the store on the worker thread.
    template <class F>
    void with_store(F&& fn) {
        REQUIRE(worker->run_sync([&](Store& s, const p::Schema&) {
            fn(s);
            return false;
        }));
    }
    std::uint64_t last_seq() {
        std::uint64_t seq = 0;
        with_store([&](Store& s) { seq = s.last_seq().value(); });
        return seq;
    }
    // Everything a failed request must leave alone.
    std::string fingerprint() {
        std::string out;
        with_store([&](Store& s) {
            out += std::to_string(s.last_seq().value()) + "|";
            for (const auto& u : s.list_users().value())
                out += u.name + u.display_name + to_string(u.role) + (u.disabled ? "d" : "") +
                       u.password_hash + std::to_string(u.areas.size()) + "|";
            out += std::to_string(s.list_areas().value().size()) + "|";
            ConflictFilter all;
            all.limit = 10000;
            for (const auto& c : s.list_conflicts(all).value())
                out += std::to_string(c.id) + (c.open ? "o" : "r") + c.values_json + "|";
            out += s.current_schema().value()->second.substr(0, 64);
        });
        return out;
    }

    Tablet& tablet(const std::string& user, std::uint32_t n) {
        auto t = std::make_unique<Tablet>();
        t->device_id = id_of(0xd0, n);
        t->replica = id_of(0xe0, n);
        t->user = user;
        t->open(*worker);
        t->hello();
        tablets.push_back(std::move(t));
        return *tablets.back();
    }

    fs::path dir;
    std::string schema_json;
    std::atomic<std::uint64_t> now{t0};
    std::unique_ptr<StoreWorker> worker;
    std::unique_ptr<HttpApi> api;
    std::vector<std::unique_ptr<Tablet>> tablets;
};

p::RecordState household(Tablet& t, std::uint32_t n, const std::string& village,
                         const std::string& head, const std::string& status = "national_line") {
    p::RecordState s;
    s.collection = "households";
    s.id = id_of(0x01, n);
    p::Update u(s, t.replica, p::HlcTimestamp::from_parts(t0 - 60000, n % 1000), t.user);
    REQUIRE(u.set("village", p::MergeRule::lww, std::string(village)));
    REQUIRE(u.set("head_name", p::MergeRule::review, head));
    REQUIRE(u.set("poverty_status", p::MergeRule::review, status));
    return s;
}

p::RecordState visit(Tablet& t, std::uint32_t n, const std::string& village,
                     const p::RecordId& household_id, const std::string& at) {
    p::RecordState s;
    s.collection = "visits";
    s.id = id_of(0x02, n);
    p::Update u(s, t.replica, p::HlcTimestamp::from_parts(t0 - 30000, n), t.user);
    REQUIRE(u.set("village", p::MergeRule::lww, std::string(village)));
    REQUIRE(u.set("household", p::MergeRule::lww, household_id.to_string()));
    REQUIRE(u.set("kind", p::MergeRule::lww, std::string("look_back")));
    REQUIRE(u.set("visited_at", p::MergeRule::lww, at));
    REQUIRE(u.set("review_status", p::MergeRule::lww, std::string("pending")));
    return s;
}

// Two enumerators answered poverty_status differently for household 1 while offline.
struct ConflictSetup {
    p::RecordId id;
    Tablet* a = nullptr;
    Tablet* a2 = nullptr;
};

ConflictSetup make_conflict(Fixture& f) {
    ConflictSetup c;
    c.a = &f.tablet("enum-a", 1);
    c.a2 = &f.tablet("enum-a2", 2);
    p::RecordState base = household(*c.a, 1, village_a, "Bater");
    {
        p::Update u(base, c.a->replica, p::HlcTimestamp::from_parts(t0 - 59000, 0), "enum-a");
        REQUIRE(u.set("gps", p::MergeRule::lww, p::GeoPoint{396087000, 1097813000}));
    }
    c.id = base.id;
    c.a->push({base});
    p::RecordState mine = base, theirs = base;
    {
        p::Update u(mine, c.a->replica, p::HlcTimestamp::from_parts(t0 - 50000, 0), "enum-a");
        REQUIRE(u.set("poverty_status", p::MergeRule::review, std::string("national_line")));
        REQUIRE(u.set("gps", p::MergeRule::lww, p::GeoPoint{396088000, 1097814000}));
    }
    {
        p::Update u(theirs, c.a2->replica, p::HlcTimestamp::from_parts(t0 - 40000, 0), "enum-a2");
        REQUIRE(u.set("poverty_status", p::MergeRule::review, std::string("dibao_line")));
    }
    c.a->push({mine});
    c.a2->push({theirs});
    return c;
}

struct Drained {
    std::vector<std::string> chunks;
    std::string all;
};

Drained drain(const std::shared_ptr<ChunkSource>& src) {
    Drained d;
    for (int guard = 0; guard < 1000; ++guard) {
        auto promise = std::make_shared<std::promise<std::optional<std::string>>>();
        auto future = promise->get_future();
        src->next([promise](std::optional<std::string> c) { promise->set_value(std::move(c)); });
        REQUIRE(future.wait_for(std::chrono::seconds(10)) == std::future_status::ready);
        auto chunk = future.get();
        if (!chunk) break;
        CHECK_FALSE(chunk->empty());  // an empty chunk would end a chunked body
        d.chunks.push_back(*chunk);
        d.all += *chunk;
    }
    return d;
}

std::vector<std::string> lines_of(const std::string& s, const std::string& sep) {
    std::vector<std::string> out;
    std::size_t start = 0;
    while (start < s.size()) {
        auto end = s.find(sep, start);
        if (end == std::string::npos) end = s.size();
        out.push_back(s.substr(start, end - start));
        start = end + sep.size();
    }
    return out;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Sessions
// ---------------------------------------------------------------------------------------------

TEST_CASE("API: login, me and logout") {
    Fixture f;
    json::value v = f.expect(200, "POST", "/api/login",
                             R"({"user":"sup-ejin","password":"sup-ejin-password"})");
    const std::string token = str(v.at("token"));
    CHECK(token.size() == 43);
    CHECK(str(v.at("expires_at")) == "2023-11-15T10:13:20.000Z");  // 12 h
    CHECK(str(v.at("user").at("name")) == "sup-ejin");
    CHECK(str(v.at("user").at("display_name")) == "sup-ejin display");
    CHECK(str(v.at("user").at("role")) == "supervisor");
    CHECK(v.at("user").at("areas").as_array().size() == 1);

    json::value me = f.expect(200, "GET", "/api/me", "", token);
    CHECK(str(me.at("user").at("name")) == "sup-ejin");
    CHECK(str(me.at("scope").at(0)) == "ordos/ejin-horo");

    SUBCASE("an administrator's scope is every root of the area tree") {
        json::value am = f.expect(200, "GET", "/api/me", "", f.login("admin"));
        REQUIRE(am.at("scope").as_array().size() == 1);
        CHECK(str(am.at("scope").at(0)) == "ordos");
    }
    SUBCASE("logout revokes the token") {
        CHECK(f.expect(200, "POST", "/api/logout", "", token).at("revoked").as_bool());
        auto e = f.error(401, "GET", "/api/me", "", token);
        CHECK(str(e.at("message")).find("revoked") != std::string::npos);
        auto r = f.call("GET", "/api/me", "", token);
        bool www = false;
        for (const auto& [k, val] : r.headers)
            www = www || k == "WWW-Authenticate";
        CHECK(www);
    }
    SUBCASE("the token expires") {
        f.now += 13ull * 3600 * 1000;
        auto e = f.error(401, "GET", "/api/me", "", token);
        CHECK(str(e.at("message")).find("expired") != std::string::npos);
    }
    SUBCASE("no token, a forged token, a malformed header") {
        CHECK(str(f.error(401, "GET", "/api/me").at("message")).find("Authorization") !=
              std::string::npos);
        CHECK(str(f.error(401, "GET", "/api/me", "", "forged-token-xyz").at("code")) ==
              "unauthenticated");
        HttpRequest r;
        r.method = "GET";
        r.target = "/api/me";
        r.authorization = "Basic dXNlcjpwdw==";
        std::promise<HttpResponse> pr;
        auto fu = pr.get_future();
        f.api->handle(r, [&](HttpResponse resp) { pr.set_value(std::move(resp)); });
        REQUIRE(fu.wait_for(std::chrono::seconds(10)) == std::future_status::ready);
        CHECK(fu.get().status == 401);
    }
    SUBCASE("wrong password and unknown user are refused alike") {
        auto e1 = f.error(401, "POST", "/api/login", R"({"user":"sup-ejin","password":"nope"})");
        auto e2 = f.error(401, "POST", "/api/login", R"({"user":"ghost","password":"nope"})");
        CHECK(e1.at("message") == e2.at("message"));
    }
    SUBCASE("bad bodies name the problem") {
        auto e = f.error(400, "POST", "/api/login", "{\"user\": \"a\",\n \"password\": }");
        CHECK(str(e.at("code")) == "invalid_json");
        CHECK(str(e.at("message")).find("line 2") != std::string::npos);
        CHECK(e.at("line").to_number<std::int64_t>() == 2);
        e = f.error(400, "POST", "/api/login", R"({"user": 5, "password": "x"})");
        CHECK(str(e.at("message")).find("body.user") != std::string::npos);
        e = f.error(400, "POST", "/api/login", R"({"user": "a"})");
        CHECK(str(e.at("message")).find("body.password") != std::string::npos);
        e = f.error(400, "POST", "/api/login", R"({"user":"a","password":"b","remember":true})");
        CHECK(str(e.at("message")).find("remember") != std::string::npos);
        e = f.error(400, "POST", "/api/login", R"([1,2])");
        CHECK(str(e.at("message")).find("object") != std::string::npos);
        e = f.error(400, "POST", "/api/login", R"({"user":"a","password":"b"} x)");
        CHECK(str(e.at("code")) == "invalid_json");
        CHECK(str(f.error(400, "POST", "/api/login", "").at("code")) == "invalid_json");
    }
    SUBCASE("a disabled account cannot log in") {
        const std::string admin = f.login("admin");
        f.expect(200, "PUT", "/api/users/enum-a", R"({"disabled":true})", admin);
        CHECK(str(f.error(403, "POST", "/api/login",
                          R"({"user":"enum-a","password":"enum-a-password"})")
                      .at("message"))
                  .find("disabled") != std::string::npos);
    }
}

TEST_CASE("API: login throttling per user and per address") {
    Fixture f;
    const std::string bad = R"({"user":"enum-a","password":"wrong-password"})";
    const std::string good = R"({"user":"enum-a","password":"enum-a-password"})";
    for (int i = 0; i < 5; ++i)
        f.expect(401, "POST", "/api/login", bad);
    SUBCASE("the user is locked, even with the right password, and told when to retry") {
        HttpResponse r = f.call("POST", "/api/login", good);
        CHECK(r.status == 429);
        auto e = parse(r.body).at("error");
        CHECK(str(e.at("code")) == "throttled");
        CHECK(str(e.at("message")).find("retry in 30 s") != std::string::npos);
        CHECK(e.at("retry_after_seconds").to_number<std::int64_t>() == 30);
        bool retry_after = false;
        for (const auto& [k, v] : r.headers)
            retry_after = retry_after || (k == "Retry-After" && v == "30");
        CHECK(retry_after);
        // From another address too: the user key is locked.
        CHECK(f.call("POST", "/api/login", good, "", "application/json", "10.9.9.9").status == 429);
        f.now += 31 * 1000;
        CHECK(f.call("POST", "/api/login", good).status == 200);
    }
    SUBCASE("the address is locked for other users too") {
        CHECK(f.call("POST", "/api/login", R"({"user":"enum-a2","password":"enum-a2-password"})")
                  .status == 429);
        CHECK(f.call("POST", "/api/login", R"({"user":"enum-a2","password":"enum-a2-password"})",
                     "", "application/json", "10.0.0.2")
                  .status == 200);
    }
}

// ---------------------------------------------------------------------------------------------
// Routing and limits
// ---------------------------------------------------------------------------------------------

TEST_CASE("API: routes, methods, limits and query parameters") {
    Fixture f(4096);
    const std::string token = f.login("admin");
    CHECK(str(f.error(404, "GET", "/api/nothing", "", token).at("code")) == "not_found");
    CHECK(f.call("GET", "/elsewhere").status == 404);
    CHECK(f.call("GET", "/api/users/", "", token).status == 404);
    HttpResponse r = f.call("DELETE", "/api/users", "", token);
    CHECK(r.status == 405);
    REQUIRE(r.headers.size() == 1);
    CHECK(r.headers[0].first == "Allow");
    CHECK(r.headers[0].second == "GET, POST");
    CHECK(str(parse(r.body).at("error").at("code")) == "method_not_allowed");
    auto e = f.error(413, "POST", "/api/login", std::string(5000, ' '));
    CHECK(str(e.at("code")) == "payload_too_large");
    e = f.error(400, "GET", "/api/records?colection=households", "", token);
    CHECK(str(e.at("message")).find("colection") != std::string::npos);
    CHECK(f.call("GET", "/api/records?area=ordos%2", "", token).status == 400);
    CHECK(f.call("GET", "/api/records?limit=0", "", token).status == 400);
    CHECK(f.call("GET", "/api/records?limit=abc", "", token).status == 400);
    CHECK(f.call("GET", "/api/records?area=Not%20An%20Area", "", token).status == 400);
    CHECK(f.call("GET", "/api/records?area=ordos%2Fhanggin", "", token).status == 200);
    // Authentication comes before the role check, the role check before the handler.
    CHECK(f.call("GET", "/api/users").status == 401);
    CHECK(f.call("GET", "/api/users", "", f.login("sup-ejin")).status == 403);
}

// ---------------------------------------------------------------------------------------------
// Areas
// ---------------------------------------------------------------------------------------------

TEST_CASE("API: areas") {
    Fixture f;
    const std::string admin = f.login("admin");
    const std::string enumerator = f.login("enum-a");
    json::value list = f.expect(200, "GET", "/api/areas", "", enumerator);
    REQUIRE(list.at("areas").as_array().size() == 8);
    CHECK(str(list.at("areas").at(0).at("code")) == "ordos");
    CHECK(str(list.at("areas").at(1).at("parent")) == "ordos");

    SUBCASE("add and update one area") {
        json::value v = f.expect(201, "POST", "/api/areas",
                                 R"({"code":"ordos/hanggin/xini/bayan","level":"village",
                                     "name_en":"Bayan","name_zh":"巴音"})",
                                 admin);
        CHECK(str(v.at("area").at("parent")) == "ordos/hanggin/xini");
        f.expect(200, "POST", "/api/areas",
                 R"({"code":"ordos/hanggin/xini/bayan","parent":"ordos/hanggin/xini",
                     "level":"village","name_en":"Bayan Gaqa"})",
                 admin);
        json::value all = f.expect(200, "GET", "/api/areas", "", admin);
        CHECK(all.at("areas").as_array().size() == 9);
        f.expect(201, "POST", "/api/areas",
                 R"({"code":"baotou","level":"city","name_en":"Baotou"})", admin);
    }
    SUBCASE("errors") {
        const std::string before = f.fingerprint();
        f.error(403, "POST", "/api/areas", R"({"code":"ordos/x","level":"banner","name_en":"X"})",
                f.login("sup-ejin"));
        auto e = f.error(400, "POST", "/api/areas",
                         R"({"code":"ordos/nowhere/x","level":"town","name_en":"X"})", admin);
        CHECK(str(e.at("message")).find("does not exist") != std::string::npos);
        e = f.error(400, "POST", "/api/areas", R"({"code":"Ordos/X","level":"town","name_en":"X"})",
                    admin);
        CHECK(str(e.at("message")).find("not an area code") != std::string::npos);
        e = f.error(400, "POST", "/api/areas",
                    R"({"code":"ordos/y","parent":"ordos/hanggin","level":"banner","name_en":"Y"})",
                    admin);
        CHECK(str(e.at("message")).find("does not match") != std::string::npos);
        f.error(400, "POST", "/api/areas", R"({"code":"ordos/y","level":7,"name_en":"Y"})", admin);
        CHECK(f.fingerprint() == before);
    }
    SUBCASE("CSV import: all or nothing, errors name the line") {
        const std::string good =
            "code,parent,level,name_en,name_zh\r\n"
            "ordos/dalad/shulinzhao/wangaizhao,ordos/dalad/shulinzhao,village,Wangaizhao,王爱召\r\n"
            "ordos/dalad,ordos,banner,Dalad Banner,达拉特旗\r\n"
            "ordos/dalad/shulinzhao,ordos/dalad,town,\"Shulinzhao, town\",树林召镇\r\n";
        HttpResponse r = f.call("POST", "/api/areas/import", good, admin, "text/csv");
        INFO(r.body);
        REQUIRE(r.status == 200);
        json::value v = parse(r.body);
        CHECK(v.at("imported").to_number<std::int64_t>() == 3);
        CHECK(v.at("created").to_number<std::int64_t>() == 3);
        json::value all = f.expect(200, "GET", "/api/areas", "", admin);
        bool found = false;
        for (const auto& a : all.at("areas").as_array())
            if (str(a.at("code")) == "ordos/dalad/shulinzhao")
                found = str(a.at("name_en")) == "Shulinzhao, town";
        CHECK(found);

        const std::string before = f.fingerprint();
        const std::string bad =
            "code,parent,level,name_en,name_zh\n"
            "ordos/otog,ordos,banner,Otog,鄂托克旗\n"
            "ordos/otog/x/y,ordos/otog/x,village,Y,\n";
        r = f.call("POST", "/api/areas/import", bad, admin, "text/csv");
        CHECK(r.status == 400);
        auto e = parse(r.body).at("error");
        CHECK(str(e.at("message")).find("line 3") != std::string::npos);
        CHECK(f.fingerprint() == before);
        r = f.call("POST", "/api/areas/import", "code,parent\nordos/q,ordos\n", admin, "text/csv");
        CHECK(r.status == 400);
        CHECK(parse(r.body).at("error").at("message").as_string().find("line 1") !=
              json::string::npos);
        r = f.call("POST", "/api/areas/import",
                   "code,parent,level,name_en,name_zh\nordos/q,ordos,banner,\"Q,zh\n", admin,
                   "text/csv");
        CHECK(r.status == 400);
        CHECK(parse(r.body).at("error").at("message").as_string().find("line 2") !=
              json::string::npos);
        r = f.call("POST", "/api/areas/import", good, admin, "application/json");
        CHECK(r.status == 415);
        CHECK(f.fingerprint() == before);
    }
}

// ---------------------------------------------------------------------------------------------
// Users
// ---------------------------------------------------------------------------------------------

TEST_CASE("API: users") {
    Fixture f;
    const std::string admin = f.login("admin");
    json::value list = f.expect(200, "GET", "/api/users", "", admin);
    CHECK(list.at("users").as_array().size() == 6);
    CHECK(list.at("users").at(0).as_object().contains("disabled"));
    CHECK_FALSE(list.at("users").at(0).as_object().contains("password_hash"));
    f.error(403, "GET", "/api/users", "", f.login("sup-ejin"));

    SUBCASE("create, log in, update, disable") {
        json::value v = f.expect(201, "POST", "/api/users",
                                 R"({"name":"enum-new","display_name":"其其格","role":"enumerator",
                                     "areas":[")" +
                                     std::string(village_b) + R"("],"password":"a-long-password"})",
                                 admin);
        CHECK(str(v.at("user").at("display_name")) == "其其格");
        const std::string token = f.expect(200, "POST", "/api/login",
                                           R"({"user":"enum-new","password":"a-long-password"})")
                                      .at("token")
                                      .as_string()
                                      .c_str();
        CHECK(str(f.expect(200, "GET", "/api/me", "", token).at("scope").at(0)) == village_b);
        v = f.expect(200, "PUT", "/api/users/enum-new",
                     R"({"role":"supervisor","areas":["ordos/hanggin"],"display_name":"Qiqige"})",
                     admin);
        CHECK(str(v.at("user").at("role")) == "supervisor");
        CHECK(str(f.expect(200, "GET", "/api/me", "", token).at("scope").at(0)) == "ordos/hanggin");
        f.expect(200, "PUT", "/api/users/enum-new", R"({"disabled":true})", admin);
        f.error(401, "GET", "/api/me", "", token);  // disabling revoked the session
        f.expect(403, "POST", "/api/login", R"({"user":"enum-new","password":"a-long-password"})");
    }
    SUBCASE("errors leave the users alone") {
        const std::string before = f.fingerprint();
        auto e =
            f.error(409, "POST", "/api/users",
                    R"({"name":"enum-a","role":"enumerator","password":"a-long-password"})", admin);
        CHECK(str(e.at("code")) == "duplicate");
        e = f.error(400, "POST", "/api/users",
                    R"({"name":"x1","role":"enumerator","password":"short"})", admin);
        CHECK(str(e.at("message")).find("body.password") != std::string::npos);
        e = f.error(400, "POST", "/api/users",
                    R"({"name":"x1","role":"boss","password":"a-long-password"})", admin);
        CHECK(str(e.at("message")).find("body.role") != std::string::npos);
        e = f.error(
            400, "POST", "/api/users",
            R"({"name":"x1","role":"enumerator","areas":"ordos","password":"a-long-password"})",
            admin);
        CHECK(str(e.at("message")).find("body.areas") != std::string::npos);
        e = f.error(
            400, "POST", "/api/users",
            R"({"name":"x1","role":"enumerator","areas":["ordos/nowhere"],"password":"a-long-password"})",
            admin);
        CHECK(str(e.at("message")).find("body.areas[0]") != std::string::npos);
        e = f.error(400, "POST", "/api/users",
                    R"({"name":"x 1","role":"enumerator","password":"a-long-password"})", admin);
        CHECK(str(e.at("message")).find("body.name") != std::string::npos);
        f.error(404, "PUT", "/api/users/ghost", R"({"disabled":true})", admin);
        e = f.error(400, "PUT", "/api/users/enum-a", R"({"disabled":"yes"})", admin);
        CHECK(str(e.at("message")).find("body.disabled") != std::string::npos);
        e = f.error(409, "PUT", "/api/users/admin", R"({"disabled":true})", admin);
        f.error(409, "PUT", "/api/users/admin", R"({"role":"supervisor"})", admin);
        f.error(403, "PUT", "/api/users/enum-a", R"({"disabled":true})", f.login("sup-ejin"));
        CHECK(f.fingerprint() == before);
    }
    SUBCASE("passwords: an administrator resets, a user changes their own") {
        const std::string user_token = f.login("enum-a");
        f.expect(200, "POST", "/api/users/enum-a/password", R"({"password":"brand-new-password"})",
                 admin);
        f.error(401, "GET", "/api/me", "", user_token);  // sessions end
        f.expect(401, "POST", "/api/login", R"({"user":"enum-a","password":"enum-a-password"})");
        const std::string t2 = str(f.expect(200, "POST", "/api/login",
                                            R"({"user":"enum-a","password":"brand-new-password"})")
                                       .at("token"));
        const std::string before = f.fingerprint();
        f.error(400, "POST", "/api/users/enum-a/password", R"({"password":"another-password"})",
                t2);
        auto e = f.error(403, "POST", "/api/users/enum-a/password",
                         R"({"password":"another-password","old_password":"wrong-one"})", t2);
        CHECK(str(e.at("message")).find("old_password") != std::string::npos);
        f.error(403, "POST", "/api/users/enum-a2/password", R"({"password":"another-password"})",
                t2);
        f.error(404, "POST", "/api/users/ghost/password", R"({"password":"another-password"})",
                admin);
        CHECK(f.fingerprint() == before);
        f.expect(200, "POST", "/api/users/enum-a/password",
                 R"({"password":"another-password","old_password":"brand-new-password"})", t2);
        f.expect(200, "POST", "/api/login", R"({"user":"enum-a","password":"another-password"})");
    }
}

// ---------------------------------------------------------------------------------------------
// Records
// ---------------------------------------------------------------------------------------------

TEST_CASE("API: records are listed, searched and read within scope") {
    Fixture f;
    Tablet& ta = f.tablet("enum-a", 1);
    Tablet& th = f.tablet("enum-h", 3);
    std::vector<p::RecordState> batch;
    for (std::uint32_t i = 1; i <= 12; ++i)
        batch.push_back(household(ta, i, village_a, "Bater " + std::to_string(i),
                                  i % 3 == 0 ? "dibao_line" : "national_line"));
    {
        p::Update u(batch[0], ta.replica, p::HlcTimestamp::from_parts(t0 - 1000, 0), "enum-a");
        REQUIRE(u.set("head_id_number", p::MergeRule::review, std::string("15272219800101123X")));
    }
    ta.push(batch);
    th.push({household(th, 100, village_h, "Hasbagen")});

    const std::string sup = f.login("sup-ejin");
    json::value v = f.expect(200, "GET", "/api/records?collection=households&limit=100", "", sup);
    CHECK(v.at("records").as_array().size() == 12);
    CHECK(v.at("next").is_null());
    const auto& first = v.at("records").at(0);
    CHECK(str(first.at("collection")) == "households");
    CHECK(str(first.at("area")) == village_a);
    CHECK(first.at("seq").to_number<std::int64_t>() > 0);
    CHECK(str(first.at("updated_at")) == "2023-11-14T22:13:20.000Z");

    SUBCASE("paging") {
        std::set<std::string> ids;
        std::string after = "0";
        int pages = 0;
        for (;; ++pages) {
            json::value page = f.expect(
                200, "GET", "/api/records?collection=households&limit=5&after=" + after, "", sup);
            for (const auto& r : page.at("records").as_array())
                ids.insert(str(r.at("id")));
            if (page.at("next").is_null()) break;
            after = std::to_string(page.at("next").to_number<std::int64_t>());
            REQUIRE(pages < 10);
        }
        CHECK(ids.size() == 12);
        CHECK(pages == 2);
    }
    SUBCASE("search and field filters") {
        v = f.expect(200, "GET", "/api/records?collection=households&q=BATER%2011", "", sup);
        REQUIRE(v.at("records").as_array().size() == 1);
        CHECK(str(v.at("records").at(0).at("fields").at("head_name")) == "Bater 11");
        v = f.expect(200, "GET", "/api/records?collection=households&q=123x", "", sup);
        CHECK(v.at("records").as_array().size() == 1);
        v = f.expect(200, "GET",
                     "/api/records?collection=households&field.poverty_status=dibao_line", "", sup);
        CHECK(v.at("records").as_array().size() == 4);
        v = f.expect(200, "GET",
                     "/api/records?collection=households&field.poverty_status=dibao_line&limit=3",
                     "", sup);
        CHECK(v.at("records").as_array().size() == 3);
        CHECK_FALSE(v.at("next").is_null());
        v = f.expect(200, "GET",
                     "/api/records?collection=households&field.poverty_status=dibao_line&after=" +
                         std::to_string(v.at("next").to_number<std::int64_t>()),
                     "", sup);
        CHECK(v.at("records").as_array().size() == 1);
        CHECK(v.at("next").is_null());
        auto e = f.error(400, "GET", "/api/records?collection=households&field.wealth=1", "", sup);
        CHECK(str(e.at("message")).find("wealth") != std::string::npos);
        f.error(400, "GET", "/api/records?collection=households&field.poverty_status=rich", "",
                sup);
        f.error(400, "GET", "/api/records?field.poverty_status=dibao_line", "", sup);
        f.error(400, "GET", "/api/records?collection=farms", "", sup);
    }
    SUBCASE("scope") {
        const std::string other = f.login("sup-hanggin");
        v = f.expect(200, "GET", "/api/records?collection=households", "", other);
        REQUIRE(v.at("records").as_array().size() == 1);
        CHECK(str(v.at("records").at(0).at("area")) == village_h);
        // An area filter outside the scope gives nothing rather than an error.
        v = f.expect(200, "GET", std::string("/api/records?area=") + village_a, "", other);
        CHECK(v.at("records").as_array().empty());
        v = f.expect(200, "GET", "/api/records?collection=households", "", f.login("admin"));
        CHECK(v.at("records").as_array().size() == 13);
    }
    SUBCASE("one record with its history; 404 outside the scope") {
        const std::string id = id_of(0x01, 1).to_string();
        v = f.expect(200, "GET", "/api/records/households/" + id, "", f.login("enum-a"));
        CHECK(str(v.at("id")) == id);
        CHECK(str(v.at("fields").at("head_id_number")) == "15272219800101123X");
        REQUIRE(v.at("history").as_array().size() == 1);
        CHECK(str(v.at("history").at(0).at("user")) == "enum-a");
        CHECK(str(v.at("history").at(0).at("device")) == id_of(0xd0, 1).to_string());
        CHECK(v.at("history").at(0).at("summary").at("created").as_bool());
        auto e1 = f.error(404, "GET", "/api/records/households/" + id, "", f.login("sup-hanggin"));
        auto e2 = f.error(404, "GET", "/api/records/households/" + id_of(0x01, 999).to_string(), "",
                          f.login("sup-hanggin"));
        CHECK(str(e1.at("code")) == str(e2.at("code")));
        f.error(404, "GET", "/api/records/households/not-an-id", "", sup);
        f.error(404, "GET", "/api/records/farms/" + id, "", sup);
    }
}

TEST_CASE("API: supervisors write records through the API") {
    Fixture f;
    Tablet& ta = f.tablet("enum-a", 1);
    p::RecordState h = household(ta, 1, village_a, "Bater");
    p::RecordState vis = visit(ta, 1, village_a, h.id, "2023-11-14T08:00:00Z");
    ta.push({h, vis});
    ta.pull_all();  // live: the supervisor's write must reach the tablet
    const std::string sup = f.login("sup-ejin");
    const std::string visit_url = "/api/records/visits/" + vis.id.to_string();
    const std::string house_url = "/api/records/households/" + h.id.to_string();

    SUBCASE("mark a visit reviewed") {
        json::value v =
            f.expect(200, "PUT", visit_url,
                     R"({"fields":{"review_status":"approved","review_comment":"核实无误"}})", sup);
        CHECK(str(v.at("fields").at("review_status")) == "approved");
        CHECK(str(v.at("fields").at("review_comment")) == "核实无误");
        json::value got = f.expect(200, "GET", visit_url, "", sup);
        CHECK(str(got.at("fields").at("review_status")) == "approved");
        REQUIRE(got.at("history").as_array().size() == 2);
        CHECK(str(got.at("history").at(0).at("user")) == "sup-ejin");
        CHECK(str(got.at("history").at(0).at("device")) == "api");
        // The live tablet is notified.
        auto n = ta.next_as<p::Notify>();
        REQUIRE(n.items.size() == 1);
        CHECK(n.items[0].record.id == vis.id);
        auto status = n.items[0].record.view("review_status");
        REQUIRE(status);
        CHECK(std::get<std::string>(status->value) == "approved");
    }
    SUBCASE("set fields, counters, lww and review fields") {
        json::value v = f.expect(
            200, "PUT", house_url,
            R"({"fields":{"assistance":["land_adoption","tourism_jobs"],"income_per_capita":4200,
                          "visit_count":{"delta":2},"gps":{"lat":39.6087,"lon":109.7813}}})",
            sup);
        CHECK(v.at("fields").at("assistance").as_array().size() == 2);
        CHECK(v.at("fields").at("income_per_capita").to_number<std::int64_t>() == 4200);
        CHECK(v.at("fields").at("visit_count").to_number<std::int64_t>() == 2);
        v = f.expect(
            200, "PUT", house_url,
            R"({"fields":{"assistance":{"add":["lambs_for_ewes"],"remove":["tourism_jobs"]}}})",
            sup);
        const auto& a = v.at("fields").at("assistance").as_array();
        REQUIRE(a.size() == 2);
        CHECK(str(a.at(0)) == "lambs_for_ewes");
        CHECK(str(a.at(1)) == "land_adoption");
        v = f.expect(200, "PUT", house_url, R"({"fields":{"income_per_capita":null}})", sup);
        CHECK_FALSE(v.at("fields").as_object().contains("income_per_capita"));
    }
    SUBCASE("deleting and restoring") {
        json::value v = f.expect(200, "PUT", house_url, R"({"fields":{"_deleted":true}})", sup);
        CHECK(v.at("deleted").as_bool());
        auto e = f.error(409, "PUT", house_url, R"({"fields":{"notes":"x"}})", sup);
        CHECK(str(e.at("code")) == "deleted");
        v = f.expect(200, "PUT", house_url, R"({"fields":{"_deleted":false,"notes":"back"}})", sup);
        CHECK_FALSE(v.at("deleted").as_bool());
    }
    SUBCASE("refusals write nothing") {
        const std::string before = f.fingerprint();
        f.error(403, "PUT", visit_url, R"({"fields":{"review_status":"approved"}})",
                f.login("enum-a"));
        f.error(404, "PUT", visit_url, R"({"fields":{"review_status":"approved"}})",
                f.login("sup-hanggin"));
        auto e = f.error(400, "PUT", visit_url,
                         R"({"fields":{"review_status":"approved","mood":"good"}})", sup);
        CHECK(str(e.at("message")).find("mood") != std::string::npos);
        CHECK(str(e.at("field")) == "mood");
        e = f.error(400, "PUT", visit_url, R"({"fields":{"review_status":"great"}})", sup);
        CHECK(str(e.at("field")) == "review_status");
        CHECK(str(e.at("message")).find("review_status") != std::string::npos);
        e = f.error(400, "PUT", house_url, R"({"fields":{"members_count":45}})", sup);
        CHECK(str(e.at("message")).find("members_count") != std::string::npos);
        e = f.error(400, "PUT", house_url, R"({"fields":{"members_count":"four"}})", sup);
        CHECK(str(e.at("field")) == "members_count");
        e = f.error(400, "PUT", house_url, R"({"fields":{"head_name":null}})", sup);
        CHECK(str(e.at("message")).find("head_name") != std::string::npos);
        f.error(400, "PUT", house_url, R"({"fields":{"assistance":["flying"]}})", sup);
        f.error(400, "PUT", house_url, R"({"fields":{"assistance":"land_adoption"}})", sup);
        f.error(400, "PUT", house_url, R"({"fields":{"visit_count":3}})", sup);
        e = f.error(403, "PUT", house_url,
                    std::string(R"({"fields":{"village":")") + village_h + R"("}})", sup);
        CHECK(str(e.at("message")).find("outside") != std::string::npos);
        f.error(400, "PUT", house_url, R"({"fields":{}})", sup);
        f.error(400, "PUT", house_url, R"({"values":{}})", sup);
        f.error(400, "PUT", house_url, R"({"fields":{"notes":"x"})", sup);
        f.error(404, "PUT", "/api/records/households/" + id_of(0x01, 77).to_string(),
                R"({"fields":{"notes":"x"}})", sup);
        CHECK(f.fingerprint() == before);
    }
}

// ---------------------------------------------------------------------------------------------
// Conflicts
// ---------------------------------------------------------------------------------------------

TEST_CASE("API: conflicts are listed, inspected and resolved") {
    Fixture f;
    ConflictSetup cs = make_conflict(f);
    Tablet& ta = *cs.a;
    ta.push({visit(ta, 1, village_a, cs.id, "2023-11-13T09:00:00Z"),
             visit(ta, 2, village_a, cs.id, "2023-11-14T09:00:00Z"),
             visit(ta, 3, village_a, id_of(0x01, 55), "2023-11-14T10:00:00Z")});
    ta.pull_all();
    const std::string sup = f.login("sup-ejin");

    json::value list = f.expect(200, "GET", "/api/conflicts", "", sup);
    REQUIRE(list.at("conflicts").as_array().size() == 1);
    CHECK(list.at("total").to_number<std::int64_t>() == 1);
    CHECK(list.at("counts").at("by_village").at(village_a).to_number<std::int64_t>() == 1);
    CHECK(list.at("counts").at("by_field").at("poverty_status").to_number<std::int64_t>() == 1);
    const json::value& c = list.at("conflicts").at(0);
    CHECK(str(c.at("field")) == "poverty_status");
    CHECK(str(c.at("status")) == "open");
    CHECK(str(c.at("record")) == cs.id.to_string());
    CHECK(c.at("values").as_array().size() == 2);
    const std::string id = std::to_string(c.at("id").to_number<std::int64_t>());

    SUBCASE("filters and roles") {
        CHECK(f.expect(200, "GET", "/api/conflicts?field=head_name", "", sup)
                  .at("conflicts")
                  .as_array()
                  .empty());
        CHECK(f.expect(200, "GET", "/api/conflicts?status=resolved", "", sup)
                  .at("conflicts")
                  .as_array()
                  .empty());
        CHECK(f.expect(200, "GET", std::string("/api/conflicts?area=") + village_a, "", sup)
                  .at("conflicts")
                  .as_array()
                  .size() == 1);
        CHECK(f.expect(200, "GET", std::string("/api/conflicts?area=") + village_b, "", sup)
                  .at("conflicts")
                  .as_array()
                  .empty());
        CHECK(f.expect(200, "GET", "/api/conflicts?older_than_days=1", "", sup)
                  .at("conflicts")
                  .as_array()
                  .empty());
        f.now += 2 * 24 * 3600 * 1000ull;  // (the token expired meanwhile)
        CHECK(f.expect(200, "GET", "/api/conflicts?older_than_days=1", "", f.login("sup-ejin"))
                  .at("conflicts")
                  .as_array()
                  .size() == 1);
        CHECK(f.expect(200, "GET", "/api/conflicts?offset=1", "", f.login("sup-ejin"))
                  .at("conflicts")
                  .as_array()
                  .empty());
        f.error(400, "GET", "/api/conflicts?status=maybe", "", f.login("sup-ejin"));
        f.error(403, "GET", "/api/conflicts", "", f.login("enum-a"));
        CHECK(f.expect(200, "GET", "/api/conflicts", "", f.login("sup-hanggin"))
                  .at("conflicts")
                  .as_array()
                  .empty());
        CHECK(f.expect(200, "GET", "/api/conflicts", "", f.login("admin"))
                  .at("conflicts")
                  .as_array()
                  .size() == 1);
    }
    SUBCASE("details: values with device and gps, the record, recent visits") {
        json::value d = f.expect(200, "GET", "/api/conflicts/" + id, "", sup);
        const auto& values = d.at("conflict").at("values").as_array();
        REQUIRE(values.size() == 2);
        std::set<std::string> got;
        for (const auto& v : values) {
            got.insert(str(v.at("value")));
            if (str(v.at("by")) == "enum-a") {
                CHECK(str(v.at("device")) == id_of(0xd0, 1).to_string());
                CHECK(v.at("gps").at("lat").as_double() == doctest::Approx(39.6088));
            } else {
                CHECK(str(v.at("device")) == id_of(0xd0, 2).to_string());
                CHECK_FALSE(v.as_object().contains("gps"));
            }
            CHECK(v.at("at").is_string());
        }
        CHECK(got == std::set<std::string>{"national_line", "dibao_line"});
        CHECK(str(d.at("conflict").at("label").at("zh")) == "贫困户属性");
        CHECK(str(d.at("record").at("fields").at("head_name")) == "Bater");
        CHECK(d.at("record").at("conflicts").as_object().contains("poverty_status"));
        const auto& visits = d.at("visits").as_array();
        REQUIRE(visits.size() == 2);
        CHECK(str(visits.at(0).at("fields").at("visited_at")) == "2023-11-14T09:00:00Z");
        f.error(404, "GET", "/api/conflicts/" + id, "", f.login("sup-hanggin"));
        f.error(404, "GET", "/api/conflicts/999", "", sup);
        f.error(404, "GET", "/api/conflicts/abc", "", sup);
    }
    SUBCASE("resolve by choice; the record holds one value; twice is 409") {
        json::value d = f.expect(200, "GET", "/api/conflicts/" + id, "", sup);
        std::size_t dibao = 0;
        const auto& values = d.at("conflict").at("values").as_array();
        for (std::size_t i = 0; i < values.size(); ++i)
            if (str(values[i].at("value")) == "dibao_line") dibao = i;
        json::value r = f.expect(
            200, "POST", "/api/conflicts/" + id + "/resolve",
            R"({"choice":)" + std::to_string(dibao) + R"(,"note":"checked the dibao certificate"})",
            sup);
        CHECK(str(r.at("conflict").at("status")) == "resolved");
        CHECK(str(r.at("conflict").at("resolved_by")) == "sup-ejin");
        CHECK(str(r.at("conflict").at("resolution")) == "dibao_line");
        CHECK(str(r.at("conflict").at("note")) == "checked the dibao certificate");
        CHECK_FALSE(r.at("record").as_object().contains("conflicts"));
        CHECK(str(r.at("record").at("fields").at("poverty_status")) == "dibao_line");
        f.with_store([&](Store& s) {
            auto row = s.get_record("households", cs.id).value();
            REQUIRE(row);
            auto state = p::decode_record(row->state);
            REQUIRE(state);
            auto view = state->view("poverty_status");
            REQUIRE(view);
            CHECK_FALSE(view->conflict);
            CHECK(view->competing.size() == 1);
            CHECK(s.count_open_conflicts().value() == 0);
        });
        // The tablet gets the resolution live, and its own later join keeps one value.
        auto n = ta.next_as<p::Notify>();
        REQUIRE(n.items.size() == 1);
        auto view = n.items[0].record.view("poverty_status");
        REQUIRE(view);
        CHECK_FALSE(view->conflict);
        auto e = f.error(409, "POST", "/api/conflicts/" + id + "/resolve", R"({"choice":0})", sup);
        CHECK(str(e.at("code")) == "already_resolved");
        CHECK(f.expect(200, "GET", "/api/conflicts?status=resolved", "", sup)
                  .at("conflicts")
                  .as_array()
                  .size() == 1);
    }
    SUBCASE("resolve by value") {
        json::value r = f.expect(200, "POST", "/api/conflicts/" + id + "/resolve",
                                 R"({"value":"marginal"})", sup);
        CHECK(str(r.at("record").at("fields").at("poverty_status")) == "marginal");
        json::value h =
            f.expect(200, "GET", "/api/records/households/" + cs.id.to_string(), "", sup);
        CHECK(str(h.at("history").at(0).at("user")) == "sup-ejin");
    }
    SUBCASE("refusals write nothing") {
        const std::string before = f.fingerprint();
        const std::string url = "/api/conflicts/" + id + "/resolve";
        auto e = f.error(400, "POST", url, R"({"value":"rich"})", sup);
        CHECK(str(e.at("message")).find("poverty_status") != std::string::npos);
        f.error(400, "POST", url, R"({"choice":5})", sup);
        f.error(400, "POST", url, R"({"choice":0,"value":"marginal"})", sup);
        f.error(400, "POST", url, R"({})", sup);
        f.error(400, "POST", url, R"({"choice":"0"})", sup);
        f.error(400, "POST", url, R"({"choice":0,"why":"x"})", sup);
        f.error(400, "POST", url, "{choice:0}", sup);
        f.error(404, "POST", url, R"({"choice":0})", f.login("sup-hanggin"));
        f.error(403, "POST", url, R"({"choice":0})", f.login("enum-a"));
        f.error(401, "POST", url, R"({"choice":0})");
        f.error(404, "POST", "/api/conflicts/12345/resolve", R"({"choice":0})", sup);
        CHECK(f.fingerprint() == before);
    }
}

TEST_CASE("API: a delete concurrent with an edit is settled through the API") {
    Fixture f;
    Tablet& a = f.tablet("enum-a", 1);
    Tablet& a2 = f.tablet("enum-a2", 2);
    p::RecordState base = household(a, 1, village_a, "Bater");
    a.push({base});
    p::RecordState deleted = base, edited = base;
    {
        p::Update u(deleted, a.replica, p::HlcTimestamp::from_parts(t0 - 20000, 0), "enum-a");
        u.mark_deleted();
    }
    {
        p::Update u(edited, a2.replica, p::HlcTimestamp::from_parts(t0 - 10000, 0), "enum-a2");
        REQUIRE(u.set("notes", p::MergeRule::lww, std::string("moved to the new house")));
    }
    a.push({deleted});
    a2.push({edited});
    const std::string sup = f.login("sup-ejin");
    json::value list = f.expect(200, "GET", "/api/conflicts?field=_deleted", "", sup);
    REQUIRE(list.at("conflicts").as_array().size() == 1);
    const std::string id =
        std::to_string(list.at("conflicts").at(0).at("id").to_number<std::int64_t>());
    const std::string url = "/api/records/households/" + base.id.to_string();
    auto e = f.error(409, "PUT", url, R"({"fields":{"notes":"x"}})", sup);
    CHECK(str(e.at("code")) == "deletion_conflict");
    SUBCASE("keep the record") {
        json::value r = f.expect(200, "POST", "/api/conflicts/" + id + "/resolve",
                                 R"({"value":false,"note":"still lives there"})", sup);
        CHECK_FALSE(r.at("record").at("deleted").as_bool());
        CHECK_FALSE(r.at("record").as_object().contains("conflicts"));
        CHECK(str(r.at("record").at("fields").at("notes")) == "moved to the new house");
    }
    SUBCASE("delete it") {
        json::value r =
            f.expect(200, "POST", "/api/conflicts/" + id + "/resolve", R"({"value":true})", sup);
        CHECK(r.at("record").at("deleted").as_bool());
        CHECK(f.expect(200, "GET", "/api/records?collection=households", "", sup)
                  .at("records")
                  .as_array()
                  .empty());
        CHECK(f.expect(200, "GET", "/api/records?collection=households&include_deleted=1", "", sup)
                  .at("records")
                  .as_array()
                  .size() == 1);
    }
}

// ---------------------------------------------------------------------------------------------
// Devices, overview
// ---------------------------------------------------------------------------------------------

TEST_CASE("API: devices and overview") {
    Fixture f;
    ConflictSetup cs = make_conflict(f);
    Tablet& th = f.tablet("enum-h", 3);
    th.push({household(th, 100, village_h, "Hasbagen", "not_poor")});
    cs.a->push({household(*cs.a, 2, village_a, "Tegus", "dibao_line"),
                household(*cs.a, 3, village_a, "Saren", "dibao_line"),
                visit(*cs.a, 1, village_a, cs.id, "2023-11-14T09:00:00Z"),
                visit(*cs.a, 2, village_a, cs.id, "2023-11-12T09:00:00Z"),
                visit(*cs.a, 3, village_a, cs.id, "2023-01-01T09:00:00Z")});
    const std::string sup = f.login("sup-ejin");

    json::value d = f.expect(200, "GET", "/api/devices", "", sup);
    const auto& devices = d.at("devices").as_array();
    REQUIRE(devices.size() == 2);
    for (const auto& dev : devices) {
        CHECK((str(dev.at("user")) == "enum-a" || str(dev.at("user")) == "enum-a2"));
        CHECK(str(dev.at("app_version")) == "api_test/1");
        CHECK(dev.at("open_conflicts").to_number<std::int64_t>() == 1);
        CHECK(str(dev.at("last_seen")) == "2023-11-14T22:13:20.000Z");
    }
    CHECK(d.at("last_seq").to_number<std::int64_t>() > 0);
    CHECK(f.expect(200, "GET", "/api/devices", "", f.login("admin"))
              .at("devices")
              .as_array()
              .size() == 3);
    json::value hd = f.expect(200, "GET", "/api/devices", "", f.login("sup-hanggin"));
    REQUIRE(hd.at("devices").as_array().size() == 1);
    CHECK(hd.at("devices").at(0).at("open_conflicts").to_number<std::int64_t>() == 0);
    f.error(403, "GET", "/api/devices", "", f.login("enum-a"));

    json::value o = f.expect(200, "GET", "/api/overview", "", sup);
    const auto& villages = o.at("households").at("villages").as_array();
    REQUIRE(villages.size() == 1);
    CHECK(str(villages.at(0).at("area")) == village_a);
    CHECK(str(villages.at(0).at("name_en")) == "longhuqu");
    // The conflicted household counts under its provisional value (the later answer).
    CHECK(villages.at(0).at("counts").at("dibao_line").to_number<std::int64_t>() == 3);
    CHECK(villages.at(0).at("total").to_number<std::int64_t>() == 3);
    CHECK(o.at("households").at("totals").at("not_poor").to_number<std::int64_t>() == 0);
    const auto& days = o.at("visits").at("days").as_array();
    REQUIRE(days.size() == 60);
    CHECK(str(days.at(59).at("date")) == "2023-11-14");
    CHECK(days.at(59).at("count").to_number<std::int64_t>() == 1);
    CHECK(days.at(57).at("count").to_number<std::int64_t>() == 1);
    CHECK(o.at("visits").at("total").to_number<std::int64_t>() ==
          2);  // January is outside the window
    json::value admin =
        f.expect(200, "GET", "/api/overview?area=ordos%2Fhanggin", "", f.login("admin"));
    REQUIRE(admin.at("households").at("villages").as_array().size() == 1);
    CHECK(admin.at("households").at("totals").at("not_poor").to_number<std::int64_t>() == 1);
    f.error(403, "GET", "/api/overview", "", f.login("enum-a"));
}

// ---------------------------------------------------------------------------------------------
// Export
// ---------------------------------------------------------------------------------------------

TEST_CASE("API: export streams CSV and JSON Lines page by page") {
    Fixture f;
    ConflictSetup cs = make_conflict(f);
    Tablet& ta = *cs.a;
    p::RecordState tricky = household(ta, 2, village_a, "Ba\"tu, Jr");
    {
        p::Update u(tricky, ta.replica, p::HlcTimestamp::from_parts(t0 - 1000, 0), "enum-a");
        REQUIRE(u.set("notes", p::MergeRule::lww, std::string("=HYPERLINK(\"http://x\")\nline 2")));
        REQUIRE(u.set("cooperative", p::MergeRule::lww, std::string("@SUM(A1)")));
        REQUIRE(u.set("phone", p::MergeRule::lww, std::string("-1+1")));
        REQUIRE(u.set("members_count", p::MergeRule::review, std::int64_t{4}));
        REQUIRE(u.set("gps", p::MergeRule::lww, p::GeoPoint{-339000000, 1512000000}));
        REQUIRE(u.add_element("assistance", std::string("land_adoption")));
        REQUIRE(u.add_element("assistance", std::string("tourism_jobs")));
    }
    ta.push({tricky});
    // Enough households for several pages, in two villages (a supervisor's tablet covers both).
    Tablet& ts = f.tablet("sup-ejin", 5);
    for (std::uint32_t b = 0; b < 3; ++b) {
        std::vector<p::RecordState> batch;
        for (std::uint32_t i = 0; i < 250; ++i) {
            const std::uint32_t n = 1000 + b * 250 + i;
            batch.push_back(
                household(ts, n, i % 2 ? village_a : village_b, "Head " + std::to_string(n)));
        }
        ts.push(batch);
    }
    const std::string sup = f.login("sup-ejin");

    SUBCASE("CSV") {
        HttpResponse r = f.call("GET", "/api/export?collection=households&format=csv", "", sup);
        REQUIRE(r.status == 200);
        CHECK(r.content_type == "text/csv; charset=utf-8");
        REQUIRE(r.stream);
        CHECK(r.body.empty());
        bool disposition = false;
        for (const auto& [k, v] : r.headers)
            disposition =
                disposition || (k == "Content-Disposition" &&
                                v == "attachment; filename=\"households-2023-11-14.csv\"");
        CHECK(disposition);
        Drained d = drain(r.stream);
        CHECK(d.chunks.size() >= 2);
        auto lines = lines_of(d.all, "\r\n");
        CHECK(lines.at(0) ==
              "id,area,deleted,village,head_name,head_id_number,members_count,poverty_status,"
              "exit_reason,identified_on,income_per_capita,assistance,cooperative,gps,phone,notes,"
              "visit_count,_conflicts");
        CHECK(lines.size() == 1 + 2 + 750);
        std::set<std::string> ids;
        for (std::size_t i = 1; i < lines.size(); ++i)
            ids.insert(lines[i].substr(0, 36));
        CHECK(ids.size() == 752);
        std::string tricky_line, conflict_line;
        for (const auto& l : lines) {
            if (l.rfind(tricky.id.to_string(), 0) == 0) tricky_line = l;
            if (l.rfind(cs.id.to_string(), 0) == 0) conflict_line = l;
        }
        // The notes cell holds a quoted CRLF-free newline, so the tricky record spans two
        // "\r\n"-separated pieces only if the newline were CRLF: it is a bare LF here.
        CHECK(tricky_line.find("\"Ba\"\"tu, Jr\"") != std::string::npos);
        CHECK(tricky_line.find("\"'=HYPERLINK(\"\"http://x\"\")\nline 2\"") != std::string::npos);
        CHECK(tricky_line.find(",'@SUM(A1),") != std::string::npos);
        CHECK(tricky_line.find(",'-1+1,") != std::string::npos);
        CHECK(tricky_line.find(",-33.9000000 151.2000000,") != std::string::npos);
        CHECK(tricky_line.find(",land_adoption;tourism_jobs,") != std::string::npos);
        CHECK(tricky_line.find(",4,national_line,") != std::string::npos);
        CHECK(tricky_line.substr(tricky_line.size() - 1) == ",");  // no conflicts
        CHECK(conflict_line.substr(conflict_line.size() - 15) == ",poverty_status");
        CHECK(conflict_line.find(std::string(",") + village_a + ",false,") != std::string::npos);
    }
    SUBCASE("JSON Lines, scoped by area, with a UTF-8 BOM-free body") {
        HttpResponse r =
            f.call("GET", std::string("/api/export?format=jsonl&area=") + village_b, "", sup);
        REQUIRE(r.status == 200);
        CHECK(r.content_type == "application/x-ndjson");
        Drained d = drain(r.stream);
        auto lines = lines_of(d.all, "\n");
        CHECK(lines.size() == 375);
        for (const auto& l : lines) {
            json::value v = parse(l);
            CHECK(str(v.at("collection")) == "households");
            CHECK(str(v.at("fields").at("village")) == village_b);
        }
    }
    SUBCASE("a BOM on request, nothing outside the scope, errors") {
        HttpResponse r = f.call("GET", "/api/export?bom=1", "", f.login("sup-hanggin"));
        REQUIRE(r.status == 200);
        Drained d = drain(r.stream);
        CHECK(d.all.substr(0, 6) == "\xEF\xBB\xBFid,");
        CHECK(lines_of(d.all, "\r\n").size() == 1);  // the header only
        f.error(403, "GET", "/api/export", "", f.login("enum-a"));
        f.error(400, "GET", "/api/export?format=xlsx", "", sup);
        f.error(400, "GET", "/api/export?collection=farms", "", sup);
    }
    SUBCASE("logging out ends a running export") {
        HttpResponse r = f.call("GET", "/api/export", "", sup);
        REQUIRE(r.status == 200);
        auto promise = std::make_shared<std::promise<std::optional<std::string>>>();
        auto future = promise->get_future();
        r.stream->next(
            [promise](std::optional<std::string> c) { promise->set_value(std::move(c)); });
        REQUIRE(future.wait_for(std::chrono::seconds(10)) == std::future_status::ready);
        CHECK(future.get().has_value());
        f.expect(200, "POST", "/api/logout", "", sup);
        Drained rest = drain(r.stream);
        CHECK(rest.chunks.empty());
    }
}

// ---------------------------------------------------------------------------------------------
// Schema
// ---------------------------------------------------------------------------------------------

TEST_CASE("API: schema read and upgrade") {
    Fixture f;
    const std::string admin = f.login("admin");
    json::value v = f.expect(200, "GET", "/api/schema", "", f.login("enum-a"));
    CHECK(v.at("version").to_number<std::int64_t>() == 1);
    CHECK(str(v.at("document").at("name")) == "ordos-household-survey");

    auto doc = parse(f.schema_json);
    SUBCASE("a compatible upgrade is stored and takes effect") {
        doc.at("version") = 2;
        doc.at("collections")
            .at(0)
            .at("fields")
            .as_array()
            .push_back(json::object{
                {"name", "herd_size"}, {"type", "integer"}, {"merge", "lww"}, {"min", 0}});
        json::value r = f.expect(200, "PUT", "/api/schema", json::serialize(doc), admin);
        CHECK(r.at("version").to_number<std::int64_t>() == 2);
        CHECK(r.at("changed").as_bool());
        CHECK(f.expect(200, "GET", "/api/schema", "", admin)
                  .at("version")
                  .to_number<std::int64_t>() == 2);
        CHECK(f.worker->schema().version() == 2);
        f.with_store([&](Store& s) { CHECK(s.current_schema().value()->first == 2); });
        // The new field is writable at once.
        Tablet& ta = f.tablet("enum-a", 1);
        ta.push({household(ta, 1, village_a, "Bater")});
        json::value w =
            f.expect(200, "PUT", "/api/records/households/" + id_of(0x01, 1).to_string(),
                     R"({"fields":{"herd_size":120}})", f.login("sup-ejin"));
        CHECK(w.at("fields").at("herd_size").to_number<std::int64_t>() == 120);
    }
    SUBCASE("putting the same schema again changes nothing") {
        json::value r = f.expect(200, "PUT", "/api/schema", f.schema_json, admin);
        CHECK_FALSE(r.at("changed").as_bool());
    }
    SUBCASE("refusals") {
        const std::string before = f.fingerprint();
        auto e = f.error(
            400, "PUT", "/api/schema",
            R"({"name":"x","version":2,"collections":[{"name":"a","fields":[{"name":"b","type":"txt","merge":"sets"}]}]})",
            admin);
        CHECK(str(e.at("code")) == "schema_invalid");
        CHECK(e.at("problems").as_array().size() >= 2);
        e = f.error(400, "PUT", "/api/schema", "{\"name\": ", admin);
        CHECK(str(e.at("problems").at(0).at("where")).find("line") != std::string::npos);
        json::value removed = doc;
        removed.at("version") = 2;
        auto& fields = removed.at("collections").at(0).at("fields").as_array();
        fields.erase(fields.end() - 1);  // drop visit_count
        e = f.error(409, "PUT", "/api/schema", json::serialize(removed), admin);
        CHECK(str(e.at("code")) == "incompatible_schema");
        CHECK(str(e.at("message")).find("visit_count") != std::string::npos);
        CHECK_FALSE(e.at("problems").as_array().empty());
        json::value same_version = doc;
        same_version.at("title").at("en") = "Changed without a new version";
        f.error(409, "PUT", "/api/schema", json::serialize(same_version), admin);
        f.error(403, "PUT", "/api/schema", f.schema_json, f.login("sup-ejin"));
        CHECK(f.fingerprint() == before);
        CHECK(f.worker->schema().version() == 1);
    }
}

TEST_CASE("API: offloaded password work and concurrent requests") {
    // The net layer passes an offload function; responses still arrive on the worker thread.
    Fixture f;
    std::vector<std::thread> threads;
    std::mutex m;
    ApiOptions ao;
    ao.password_iterations = 1000;
    ao.offload = [&](std::function<void()> work) {
        std::lock_guard lock(m);
        threads.emplace_back(std::move(work));
    };
    auto api = std::make_unique<HttpApi>(*f.worker, ao);
    std::vector<std::future<HttpResponse>> futures;
    for (int i = 0; i < 8; ++i) {
        HttpRequest r;
        r.method = "POST";
        r.target = "/api/login";
        r.body = i % 2 ? R"({"user":"enum-a","password":"enum-a-password"})"
                       : R"({"user":"sup-ejin","password":"sup-ejin-password"})";
        r.peer = "10.1.1." + std::to_string(i);
        auto promise = std::make_shared<std::promise<HttpResponse>>();
        futures.push_back(promise->get_future());
        api->handle(r, [promise](HttpResponse resp) { promise->set_value(std::move(resp)); });
    }
    std::set<std::string> tokens;
    for (auto& fu : futures) {
        REQUIRE(fu.wait_for(std::chrono::seconds(10)) == std::future_status::ready);
        HttpResponse r = fu.get();
        CHECK(r.status == 200);
        tokens.insert(str(parse(r.body).at("token")));
    }
    CHECK(tokens.size() == 8);
    api.reset();
    std::lock_guard lock(m);
    for (auto& t : threads)
        t.join();
}

TEST_CASE("API: changing an account ends its open sync sessions at once") {
    Fixture f;
    const std::string admin = f.login("admin");
    // Three live tablets: two of enum-a, one of enum-a2 (a bystander).
    Tablet& a = f.tablet("enum-a", 31);
    a.pull_all();
    Tablet& a2 = f.tablet("enum-a2", 32);
    a2.pull_all();
    // A push acknowledged, skipping the live notifications that may arrive before its ack.
    auto push_ok = [](Tablet& t, p::RecordState r) {
        p::Push push;
        push.batch = ++t.batch;
        push.items.push_back(p::PushItem{1, std::move(r)});
        t.send(push);
        for (int guard = 0; guard < 20; ++guard) {
            p::Message msg = t.next();
            if (std::holds_alternative<p::Notify>(msg) || std::holds_alternative<p::Revoke>(msg))
                continue;
            REQUIRE(std::holds_alternative<p::PushAck>(msg));
            const auto& ack = std::get<p::PushAck>(msg);
            REQUIRE(ack.results.size() == 1);
            CHECK(ack.results[0].ok);
            return;
        }
        FAIL("no push_ack");
    };
    auto fatal_error = [](Tablet& t) {
        p::Message msg = t.next();
        REQUIRE(std::holds_alternative<p::ErrorMessage>(msg));
        return std::get<p::ErrorMessage>(msg);
    };

    SUBCASE("areas changed: rebootstrap_required, fatal") {
        f.expect(200, "PUT", "/api/users/enum-a",
                 R"({"areas":[")" + std::string(village_b) + R"("]})", admin);
        auto e = fatal_error(a);
        CHECK(e.code == "rebootstrap_required");
        CHECK(e.fatal);
        CHECK(e.message.find("enum-a") != std::string::npos);
    }
    SUBCASE("display name only: the session goes on") {
        f.expect(200, "PUT", "/api/users/enum-a", R"({"display_name":"Bater"})", admin);
        // Still served: a push is acknowledged.
        push_ok(a, household(a, 33, village_a, "Sarangerel"));
    }
    SUBCASE("disabled: unauthenticated, fatal") {
        f.expect(200, "PUT", "/api/users/enum-a", R"({"disabled":true})", admin);
        auto e = fatal_error(a);
        CHECK(e.code == "unauthenticated");
        CHECK(e.fatal);
        CHECK(e.message.find("disabled") != std::string::npos);
    }
    SUBCASE("new password: unauthenticated, fatal") {
        f.expect(200, "POST", "/api/users/enum-a/password",
                 R"({"password":"a brand new passphrase"})", admin);
        auto e = fatal_error(a);
        CHECK(e.code == "unauthenticated");
        CHECK(e.message.find("password") != std::string::npos);
    }
    // The bystander's session is untouched in every case.
    push_ok(a2, household(a2, 34, village_a, "Wang Jun"));
}
