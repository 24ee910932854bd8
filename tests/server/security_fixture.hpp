// Shared fixture of the security tests (authz_test.cpp, bad_input_test.cpp): a real SQLite store,
// a real StoreWorker (group commit), the real HttpApi and real SyncSessions, no sockets.
//
// Cast: two banners of one city. Enumerators and a supervisor of Ejin Horo ("mine"), an
// enumerator of Hanggin ("other"), an administrator, and a disabled enumerator who still holds
// an unrevoked token (so the disabled flag is checked on its own, not through revocation).
// Seed: one household in each banner, each with an open poverty_status conflict, pushed by two
// tablets of the area's enumerator (so both users have devices).
//
// Store::dump() reads every table of the database from a second, read-only connection: the
// "nothing changed" check of the bad-input tests compares two dumps table by table.
#pragma once

#include <doctest/doctest.h>

#include <sqlite3.h>
#include <boost/json.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "fieldsync/protocol/cbor.hpp"
#include "fieldsync/protocol/messages.hpp"
#include "fieldsync/protocol/schema.hpp"
#include "fieldsync/server/auth.hpp"
#include "fieldsync/server/http_api.hpp"
#include "fieldsync/server/store.hpp"
#include "fieldsync/server/store_worker.hpp"

namespace sectest {

namespace p = fieldsync::protocol;
namespace fs = std::filesystem;
namespace json = boost::json;
using namespace fieldsync::server;

inline constexpr std::uint64_t t0 = 1'700'000'000'000;  // 2023-11-14T22:13:20Z, the fake "now"
inline const std::string village_a = "ordos/ejin-horo/altan-xire/longhuqu";  // enum-a, sup-ejin
inline const std::string village_b = "ordos/ejin-horo/altan-xire/hashatu";   // sup-ejin only
inline const std::string village_h = "ordos/hanggin/xini/shengli";           // enum-h only

inline std::string read_text(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

inline p::Id128 id_of(std::uint8_t kind, std::uint32_t n) {
    p::Id128 id;
    id.bytes[0] = kind;
    id.bytes[12] = static_cast<std::uint8_t>(n >> 24);
    id.bytes[13] = static_cast<std::uint8_t>(n >> 16);
    id.bytes[14] = static_cast<std::uint8_t>(n >> 8);
    id.bytes[15] = static_cast<std::uint8_t>(n);
    return id;
}

/// One simulated tablet: a sync session on the worker and the replies it received.
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
        sid = w.open_session("10.0.0.9", [this](SyncOutput out) {
            std::lock_guard lock(m);
            for (auto& f : out.frames) {
                auto msg = p::decode_message(f);
                REQUIRE_MESSAGE(msg.ok(), "the server sent an undecodable frame");
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

    p::Message next() {
        std::unique_lock lock(m);
        const bool got =
            cv.wait_for(lock, std::chrono::seconds(10), [&] { return !inbox.empty(); });
        REQUIRE_MESSAGE(got, "no reply within 10 s");
        p::Message msg = std::move(inbox.front());
        inbox.erase(inbox.begin());
        return msg;
    }
    /// The next message of type T. Live traffic (notify, revoke) that arrives in between, e.g.
    /// the notification of the tablet's own accepted push, is skipped unless T is that type.
    template <class T>
    T next_as() {
        p::Message msg = next();
        if constexpr (!std::is_same_v<T, p::Notify> && !std::is_same_v<T, p::Revoke>) {
            while (std::holds_alternative<p::Notify>(msg) || std::holds_alternative<p::Revoke>(msg))
                msg = next();
        }
        if (auto* e = std::get_if<p::ErrorMessage>(&msg); e && !std::is_same_v<T, p::ErrorMessage>)
            FAIL("expected another message, got error " << e->code << ": " << e->message);
        REQUIRE(std::holds_alternative<T>(msg));
        return std::get<T>(std::move(msg));
    }
    p::ErrorMessage next_error() { return next_as<p::ErrorMessage>(); }

    p::Hello make_hello(p::Auth auth) const {
        p::Hello h;
        h.device = device_id;
        h.replica = replica;
        h.app = "security_test/1";
        h.auth = std::move(auth);
        h.schema_version = 1;
        h.clock = t0;
        return h;
    }
    /// Logs in with the user's password ("<user>-password") and returns the welcome.
    p::Welcome hello() {
        send(make_hello(p::PasswordAuth{user, user + "-password"}));
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
    /// One item; its result.
    p::ItemResult push_one(p::RecordState r, std::uint64_t sv = 1) {
        auto ack = push({std::move(r)}, sv);
        REQUIRE(ack.results.size() == 1);
        return ack.results[0];
    }

    /// Pulls every page from 0; the records received (the session is live afterwards).
    std::vector<p::ChangeItem> pull_all() {
        std::vector<p::ChangeItem> all;
        std::uint64_t since = 0;
        for (int guard = 0; guard < 100; ++guard) {
            send(p::Pull{since, 500});
            p::Message msg = next();
            while (std::holds_alternative<p::Revoke>(msg) || std::holds_alternative<p::Notify>(msg))
                msg = next();
            if (auto* e = std::get_if<p::ErrorMessage>(&msg))
                FAIL("pull answered with error " << e->code << ": " << e->message);
            REQUIRE(std::holds_alternative<p::Changes>(msg));
            auto& c = std::get<p::Changes>(msg);
            for (auto& it : c.items)
                all.push_back(std::move(it));
            since = c.cursor;
            if (!c.more) break;
        }
        return all;
    }
};

/// A household record written by `t` (its replica, its user) in `village`.
inline p::RecordState household(const Tablet& t, std::uint32_t n, const std::string& village,
                                const std::string& head = "Bater", std::uint64_t at = t0 - 60000) {
    p::RecordState s;
    s.collection = "households";
    s.id = id_of(0x01, n);
    p::Update u(s, t.replica, p::HlcTimestamp::from_parts(at, 0), t.user);
    REQUIRE(u.set("village", p::MergeRule::lww, village));
    REQUIRE(u.set("head_name", p::MergeRule::review, head));
    REQUIRE(u.set("poverty_status", p::MergeRule::review, std::string("national_line")));
    return s;
}

inline void edit(const Tablet& t, p::RecordState& s, const std::string& field, p::MergeRule rule,
                 p::Value v, std::uint64_t at) {
    p::Update u(s, t.replica, p::HlcTimestamp::from_parts(at, 0), t.user);
    REQUIRE(u.set(field, rule, std::move(v)));
}

struct Reply {
    unsigned status = 0;
    std::string raw;
    json::value body;  ///< null when the body is not JSON (or empty)
    std::vector<std::pair<std::string, std::string>> headers;
    std::shared_ptr<ChunkSource> stream;

    /// error.code, or "" when the body has none.
    std::string code() const {
        if (!body.is_object()) return "";
        const auto* e = body.as_object().if_contains("error");
        if (!e || !e->is_object()) return "";
        const auto* c = e->as_object().if_contains("code");
        return c && c->is_string() ? std::string(c->as_string()) : "";
    }
    std::string message() const {
        if (!body.is_object()) return "";
        const auto* e = body.as_object().if_contains("error");
        if (!e || !e->is_object()) return "";
        const auto* c = e->as_object().if_contains("message");
        return c && c->is_string() ? std::string(c->as_string()) : "";
    }
};

/// Every chunk of a streamed body, concatenated.
inline std::string drain(const std::shared_ptr<ChunkSource>& src) {
    std::string all;
    for (int guard = 0; guard < 1000; ++guard) {
        auto promise = std::make_shared<std::promise<std::optional<std::string>>>();
        auto future = promise->get_future();
        src->next([promise](std::optional<std::string> c) { promise->set_value(std::move(c)); });
        REQUIRE(future.wait_for(std::chrono::seconds(10)) == std::future_status::ready);
        auto chunk = future.get();
        if (!chunk) break;
        all += *chunk;
    }
    return all;
}

class Fixture {
public:
    struct Options {
        std::size_t max_frame = 4u << 20;
        std::size_t max_batch = 500;
        std::size_t max_body = 1u << 20;
        bool seed = true;
    };

    Fixture() : Fixture(Options{}) {}
    explicit Fixture(Options o) {
        static std::atomic<unsigned> counter{0};
        dir = fs::temp_directory_path() /
              ("fieldsync-security-test-" + std::to_string(std::random_device{}()) + "-" +
               std::to_string(counter++));
        fs::create_directories(dir);
        auto store = open_sqlite_store(dir / "server.db");
        REQUIRE_MESSAGE(store.ok(), (store.ok() ? "" : store.error().message));
        schema_json =
            read_text(fs::path(FIELDSYNC_SOURCE_DIR) / "protocol/schemas/household-survey.json");
        auto schema = p::Schema::load(schema_json);
        REQUIRE_MESSAGE(schema.ok(), (schema.ok() ? "" : schema.error().message));
        Store& s = **store;
        REQUIRE(s.put_schema(schema->version(), schema_json));
        for (const std::string& code :
             {std::string("ordos"), std::string("ordos/ejin-horo"),
              std::string("ordos/ejin-horo/altan-xire"), village_a, village_b,
              std::string("ordos/hanggin"), std::string("ordos/hanggin/xini"), village_h}) {
            Area a;
            a.code = code;
            a.parent = code.find('/') == std::string::npos ? "" : code.substr(0, code.rfind('/'));
            a.level = "area";
            a.name_en = code.substr(code.rfind('/') + 1);
            REQUIRE(s.put_area(a));
        }
        add_user(s, "enum-a", Role::enumerator, {village_a});
        add_user(s, "enum-h", Role::enumerator, {village_h});
        add_user(s, "sup-ejin", Role::supervisor, {"ordos/ejin-horo"});
        add_user(s, "admin", Role::admin, {});
        add_user(s, "enum-off", Role::enumerator, {village_a});
        server_replica = s.server_replica();
        StoreWorker::Options opt;
        opt.now_ms = [this] { return now.load(); };
        opt.limits.max_frame_bytes = o.max_frame;
        opt.limits.max_batch = o.max_batch;
        worker = std::make_unique<StoreWorker>(std::move(*store), std::move(*schema), opt);
        ApiOptions ao;
        ao.password_iterations = 1000;
        ao.max_body_bytes = o.max_body;
        api = std::make_unique<HttpApi>(*worker, ao);
        // enum-off gets a token while enabled, and is then disabled without revoking it.
        off_token = token_for("enum-off");
        with_store([&](Store& st) {
            auto u = st.user_by_name("enum-off").value();
            REQUIRE(u);
            u->disabled = true;
            REQUIRE(st.update_user(*u));
        });
        if (o.seed) seed();
    }
    ~Fixture() {
        // The API and the worker first: the worker's sessions call back into the tablets.
        api.reset();
        worker.reset();
        tablets.clear();
        std::error_code ec;
        fs::remove_all(dir, ec);
    }
    Fixture(const Fixture&) = delete;
    Fixture& operator=(const Fixture&) = delete;

    static void add_user(Store& s, const std::string& name, Role role,
                         std::vector<std::string> areas) {
        User u;
        u.name = name;
        u.display_name = name;
        u.role = role;
        u.areas = std::move(areas);
        u.password_hash = hash_password(name + "-password", 1000);
        u.created_at_ms = static_cast<std::int64_t>(t0);
        REQUIRE(s.add_user(u).ok());
    }

    /// Runs `fn` on the worker thread (reads and writes commit like a job).
    template <class F>
    void with_store(F&& fn) {
        REQUIRE(worker->run_sync([&](Store& s, const p::Schema&) {
            fn(s);
            return true;
        }));
    }

    /// A fresh bearer token of `user`, stored as login would store it (valid for 12 h).
    std::string token_for(const std::string& user, std::int64_t lifetime_ms = 12ll * 3600 * 1000) {
        const std::string token = new_token();
        with_store([&](Store& s) {
            auto u = s.user_by_name(user).value();
            REQUIRE_MESSAGE(u, "no user " << user);
            Token t;
            t.token_hash = token_hash(token);
            t.user_id = u->id;
            t.created_at_ms = static_cast<std::int64_t>(now.load());
            t.expires_at_ms = static_cast<std::int64_t>(now.load()) + lifetime_ms;
            REQUIRE(s.put_token(t));
        });
        return token;
    }

    Reply http(const std::string& method, const std::string& target, const std::string& body = "",
               const std::string& token = "", const std::string& content_type = "application/json",
               const std::string& authorization = "") {
        HttpRequest r;
        r.method = method;
        r.target = target;
        r.body = body;
        r.content_type = content_type;
        r.peer = "10.0.0.1";
        r.authorization = !authorization.empty() ? authorization
                          : token.empty()        ? std::string()
                                                 : "Bearer " + token;
        auto promise = std::make_shared<std::promise<HttpResponse>>();
        auto future = promise->get_future();
        api->handle(std::move(r),
                    [promise](HttpResponse resp) { promise->set_value(std::move(resp)); });
        REQUIRE_MESSAGE(future.wait_for(std::chrono::seconds(10)) == std::future_status::ready,
                        "no response within 10 s for " << method << " " << target);
        HttpResponse resp = future.get();
        Reply out;
        out.status = resp.status;
        out.raw = resp.body;
        out.headers = resp.headers;
        out.stream = resp.stream;
        if (!resp.body.empty() && resp.content_type.rfind("application/json", 0) == 0) {
            json::error_code ec;
            out.body = json::parse(resp.body, ec);
            REQUIRE_MESSAGE(!ec, "response is not JSON: " << resp.body);
        }
        return out;
    }

    Tablet& tablet(const std::string& user, std::uint32_t n) {
        auto t = std::make_unique<Tablet>();
        t->device_id = id_of(0xd0, n);
        t->replica = id_of(0xe0, n);
        t->user = user;
        t->open(*worker);
        tablets.push_back(std::move(t));
        return *tablets.back();
    }
    Tablet& connect(const std::string& user, std::uint32_t n) {
        Tablet& t = tablet(user, n);
        t.hello();
        return t;
    }

    /// Every row of every table, as text, by table name.
    std::map<std::string, std::string> dump() {
        std::map<std::string, std::string> out;
        sqlite3* db = nullptr;
        const std::string path = (dir / "server.db").string();
        REQUIRE(sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK);
        std::vector<std::string> tables;
        {
            sqlite3_stmt* st = nullptr;
            REQUIRE(sqlite3_prepare_v2(db,
                                       "SELECT name FROM sqlite_master WHERE type = 'table' "
                                       "ORDER BY name",
                                       -1, &st, nullptr) == SQLITE_OK);
            while (sqlite3_step(st) == SQLITE_ROW)
                tables.emplace_back(reinterpret_cast<const char*>(sqlite3_column_text(st, 0)));
            sqlite3_finalize(st);
        }
        for (const auto& t : tables) {
            sqlite3_stmt* st = nullptr;
            const std::string sql = "SELECT * FROM \"" + t + "\" ORDER BY 1, 2";
            REQUIRE(sqlite3_prepare_v2(db, sql.c_str(), -1, &st, nullptr) == SQLITE_OK);
            std::string rows;
            std::size_t n = 0;
            while (sqlite3_step(st) == SQLITE_ROW) {
                ++n;
                for (int c = 0; c < sqlite3_column_count(st); ++c) {
                    if (sqlite3_column_type(st, c) == SQLITE_BLOB) {
                        const auto* b =
                            static_cast<const std::uint8_t*>(sqlite3_column_blob(st, c));
                        rows += p::to_hex(
                            p::ByteView(b, static_cast<std::size_t>(sqlite3_column_bytes(st, c))));
                    } else if (const auto* txt = sqlite3_column_text(st, c)) {
                        rows += reinterpret_cast<const char*>(txt);
                    }
                    rows += '|';
                }
                rows += '\n';
            }
            sqlite3_finalize(st);
            out[t] = std::to_string(n) + " rows\n" + rows;
        }
        sqlite3_close(db);
        return out;
    }

    /// Highest sequence assigned.
    std::uint64_t last_seq() {
        std::uint64_t seq = 0;
        with_store([&](Store& s) { seq = s.last_seq().value(); });
        return seq;
    }

    void seed() {
        Tablet& a1 = connect("enum-a", 1);
        Tablet& a2 = connect("enum-a", 2);
        Tablet& h1 = connect("enum-h", 3);
        Tablet& h2 = connect("enum-h", 4);
        rec_a = seed_conflict(a1, a2, 1, village_a);
        rec_h = seed_conflict(h1, h2, 2, village_h);
        dev_a = a1.device_id.to_string();
        dev_h = h1.device_id.to_string();
        with_store([&](Store& s) {
            ConflictFilter f;
            f.open = true;
            for (const auto& c : s.list_conflicts(f).value()) {
                if (c.area == village_a) conflict_a = c.id;
                if (c.area == village_h) conflict_h = c.id;
            }
        });
        REQUIRE(conflict_a > 0);
        REQUIRE(conflict_h > 0);
    }

    // Two tablets of one user answer poverty_status differently while offline.
    p::RecordId seed_conflict(Tablet& t1, Tablet& t2, std::uint32_t n, const std::string& village) {
        p::RecordState base = household(t1, n, village);
        REQUIRE(t1.push_one(base).ok);
        p::RecordState mine = base, theirs = base;
        edit(t1, mine, "poverty_status", p::MergeRule::review, std::string("dibao_line"),
             t0 - 50000);
        edit(t2, theirs, "poverty_status", p::MergeRule::review, std::string("not_poor"),
             t0 - 40000);
        REQUIRE(t1.push_one(mine).ok);
        REQUIRE(t2.push_one(theirs).ok);
        return base.id;
    }

    fs::path dir;
    std::string schema_json;
    std::atomic<std::uint64_t> now{t0};
    std::unique_ptr<StoreWorker> worker;
    std::unique_ptr<HttpApi> api;
    std::vector<std::unique_ptr<Tablet>> tablets;
    p::ReplicaId server_replica;
    std::string off_token;  ///< enum-off's token, issued before the account was disabled
    p::RecordId rec_a, rec_h;
    std::int64_t conflict_a = 0, conflict_h = 0;
    std::string dev_a, dev_h;
};

/// CHECKs that two dumps are equal, table by table (the failure names the table).
inline void check_unchanged(const std::map<std::string, std::string>& before,
                            const std::map<std::string, std::string>& after) {
    CHECK(before.size() == after.size());
    for (const auto& [table, rows] : before) {
        auto it = after.find(table);
        REQUIRE_MESSAGE(it != after.end(), "table " << table << " disappeared");
        CHECK_MESSAGE(rows == it->second, "table " << table << " changed:\nbefore: " << rows
                                                   << "\nafter:  " << it->second);
    }
}

}  // namespace sectest
