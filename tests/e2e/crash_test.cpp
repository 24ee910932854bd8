// Crash safety of the SDK (a LevelDB-style fault_injection test with real processes):
//
// A child (crash_writer) writes households through the SDK while a continuous replicator
// uploads them to the real server; it is killed with SIGKILL at a random moment, 20 times
// (seeded: FIELDSYNC_E2E_SEED, printed). After every kill the reopened replica must be
// consistent: every write that returned is present with its value, the file passes SQLite's
// integrity check, and the outbox agrees with the records (pending_count equals the records
// listed as unsynced). At the end one more sync uploads the rest, and a second tablet and the
// server's HTTP API must each hold every committed household exactly once, with the values the
// writer's replica holds.
#include <sqlite3.h>

#include <map>
#include <set>

#include "e2e_support.hpp"
#include "fieldsync/replica.hpp"

using namespace e2e;

namespace {

struct Journal {
    std::map<long, std::string> committed;                       // n -> id
    std::set<long> attempted;                                    // creates begun
    std::map<long, std::vector<std::pair<long, bool>>> updates;  // n -> (value, committed) in order
    long last = 0;
};

void parse(const std::string& out, Journal& j) {
    std::istringstream in(out);
    std::string line;
    while (std::getline(in, line)) {
        std::istringstream w(line);
        std::string phase, kind;
        long n = 0;
        if (!(w >> phase >> kind >> n)) continue;
        if (kind == "C") {
            if (phase == "a") j.attempted.insert(n);
            if (phase == "c") {
                std::string id;
                w >> id;
                j.committed[n] = id;
            }
            j.last = std::max(j.last, n);
        } else if (kind == "U") {
            long v = 0;
            w >> v;
            auto& u = j.updates[n];
            if (phase == "a") u.emplace_back(v, false);
            if (phase == "c" && !u.empty()) u.back().second = true;
        }
    }
}

std::string integrity(const fs::path& db) {
    sqlite3* h = nullptr;
    REQUIRE(sqlite3_open_v2(db.c_str(), &h, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK);
    sqlite3_stmt* st = nullptr;
    std::string result = "no result";
    if (sqlite3_prepare_v2(h, "PRAGMA integrity_check", -1, &st, nullptr) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        result = reinterpret_cast<const char*>(sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    sqlite3_close(h);
    return result;
}

/// head_name -> members_count ("-" when unset) of every household in a replica.
std::map<std::string, std::string> households(fieldsync::Replica& r) {
    std::map<std::string, std::string> out;
    auto all = r.list("households");
    REQUIRE(all.ok());
    for (const auto& v : *all) {
        const auto* name = v.value("head_name");
        REQUIRE(name);
        const auto* count = v.value("members_count");
        const std::string key = std::get<std::string>(*name);
        const bool fresh =
            out.emplace(key, count ? std::to_string(std::get<std::int64_t>(*count)) : "-").second;
        CHECK_MESSAGE(fresh, "two records named " << key);
    }
    return out;
}

}  // namespace

TEST_CASE(
    "e2e: SIGKILL while writing and syncing loses no committed write; each is uploaded once") {
    if (!have_server()) {
        MESSAGE("fieldsync-server is not built; skipping");
        return;
    }
    const char* env_seed = std::getenv("FIELDSYNC_E2E_SEED");
    const unsigned seed =
        env_seed ? static_cast<unsigned>(std::strtoul(env_seed, nullptr, 10)) : 20170910u;
    MESSAGE("crash test seed " << seed << " (set FIELDSYNC_E2E_SEED to replay)");
    std::mt19937 random(seed);
    constexpr int kills = 20;

    TempDir dir("crash");
    Server server(dir.path());
    Tablet w(dir.path(), "w");
    w.init(server.url(), "enumerator-longhuqu", server.password("enumerator-longhuqu"));

    Journal j;
    long next = 1;
    for (int k = 1; k <= kills; ++k) {
        CAPTURE(k);
        const auto out = dir.path() / ("writer-" + std::to_string(k) + ".out");
        Process child(bin("crash_writer"),
                      {w.db().string(), std::to_string(next), server.url(), "enumerator-longhuqu"},
                      out, dir.path() / ("writer-" + std::to_string(k) + ".err"));
        const auto deadline = std::chrono::steady_clock::now() + 10s;
        while (read_file(out).find("ready") == std::string::npos &&
               std::chrono::steady_clock::now() < deadline)
            std::this_thread::sleep_for(2ms);
        REQUIRE_MESSAGE(read_file(out).find("ready") != std::string::npos,
                        "the writer did not start: " << child.err());
        std::this_thread::sleep_for(
            std::chrono::milliseconds(std::uniform_int_distribution<int>(10, 400)(random)));
        child.kill_now();
        const std::string text = read_file(out);
        REQUIRE_MESSAGE(text.find("error") == std::string::npos, text);
        parse(text, j);
        next = j.last + 1;

        // The reopened replica is consistent.
        CHECK(integrity(w.db()) == "ok");
        auto opened = fieldsync::Replica::open(w.db());
        REQUIRE_MESSAGE(opened.ok(), (opened.ok() ? "" : opened.error().message));
        auto& r = **opened;
        const auto held = households(r);
        for (const auto& [n, id] : j.committed) {
            const std::string name = "w-" + std::to_string(n);
            REQUIRE_MESSAGE(held.count(name),
                            "committed household " << name << " is missing after kill " << k);
            auto got = r.get("households", fieldsync::protocol::RecordId::parse(id).value());
            REQUIRE(got.ok());
            CHECK(got->has_value());
        }
        for (const auto& entry : held) {
            const std::string name = entry.first;
            const long n = std::stol(name.substr(2));
            CHECK_MESSAGE(j.attempted.count(n), "household " << name << " was never written");
        }
        // Updates: the last committed value is there, or a later attempted one.
        for (const auto& [n_, ups] : j.updates) {
            const long n = n_;  // a plain variable: doctest's message lambdas capture it
            const auto it = held.find("w-" + std::to_string(n));
            if (it == held.end()) continue;
            std::set<std::string> allowed;
            for (auto u = ups.rbegin(); u != ups.rend(); ++u) {
                allowed.insert(std::to_string(u->first));
                if (u->second) break;  // the last committed one: nothing earlier may show
            }
            if (std::none_of(ups.begin(), ups.end(), [](const auto& u) { return u.second; }))
                allowed.insert("-");
            CHECK_MESSAGE(allowed.count(it->second), "w-" << n << " members_count " << it->second);
        }
        // The outbox agrees with the records.
        fieldsync::Filter unsynced;
        unsynced.only_unsynced = true;
        const auto pending = r.pending_count();
        const auto listed = r.count("households", unsynced);
        REQUIRE(pending.ok());
        REQUIRE(listed.ok());
        CHECK(*pending == *listed);
        CHECK(r.rejected().value().empty());
    }
    MESSAGE(j.committed.size() << " households committed across " << kills << " kills");
    CHECK(j.committed.size() >= static_cast<std::size_t>(kills));

    {
        // The writer's replicator was uploading while it was killed: part is already on the
        // server (so kills hit pushes in flight), the rest waits in the outbox.
        auto opened = fieldsync::Replica::open(w.db());
        REQUIRE(opened.ok());
        const auto pending = (*opened)->pending_count().value();
        const auto total = (*opened)->count("households").value();
        MESSAGE(
            (total - pending) << " of " << total
                              << " households were uploaded by the writer before it was killed");
        CHECK(pending < total);
    }
    // One more sync uploads the rest.
    w.sync();
    CHECK(w.ok({"status"}).at("pending").as_int64() == 0);
    std::map<std::string, std::string> expected;
    {
        auto opened = fieldsync::Replica::open(w.db());
        REQUIRE(opened.ok());
        expected = households(**opened);
    }

    // A second tablet pulls exactly the same households, each once.
    Tablet reader(dir.path(), "reader");
    reader.init(server.url(), "supervisor-ejin-horo", server.password("supervisor-ejin-horo"));
    std::map<std::string, std::string> pulled;
    const json::value listed = reader.ok({"list", "households"});
    for (const auto& rec : listed.as_array()) {
        const auto& fields = rec.at("fields").as_object();
        const std::string name(fields.at("head_name").as_string());
        const std::string count =
            fields.contains("members_count") ? json::serialize(fields.at("members_count")) : "-";
        CHECK_MESSAGE(pulled.emplace(name, count).second, "the reader holds " << name << " twice");
    }
    CHECK(pulled == expected);

    // The server holds each exactly once (HTTP API, paged).
    const std::string token =
        api_login(server.port(), "supervisor-ejin-horo", server.password("supervisor-ejin-horo"));
    std::multiset<std::string> on_server;
    std::string after;
    for (int page = 0; page < 1000; ++page) {
        auto reply = http(server.port(), "GET",
                          "/api/records?collection=households&limit=500" + after, "", token);
        REQUIRE_MESSAGE(reply.status == 200, reply.body);
        auto body = reply.json();
        for (const auto& rec : body.at("records").as_array())
            on_server.insert(std::string(rec.at("fields").at("head_name").as_string()));
        if (body.at("next").is_null()) break;
        after = "&after=" + json::serialize(body.at("next"));
    }
    CHECK(on_server.size() == expected.size());
    for (const auto& entry : expected) {
        const std::string name = entry.first;
        CHECK_MESSAGE(on_server.count(name) == 1, name);
    }
}
