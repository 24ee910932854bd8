// The demo seed (server/src/demo.cpp, contract fieldsync/server/demo.hpp): on a new store it
// writes the area tree, the accounts and the demo survey records through the same path as real
// writes; the records validate against the bundled survey, conflicts are open exactly where a
// review register holds competing values, and a second start seeds nothing.
#include <doctest/doctest.h>

#include <boost/json.hpp>

#include <cstdlib>
#include <filesystem>
#include <memory>
#include <set>
#include <string>
#include <tuple>
#include <variant>
#include <vector>

#include "fieldsync/protocol/record.hpp"
#include "fieldsync/protocol/schema.hpp"
#include "fieldsync/server/demo.hpp"
#include "fieldsync/server/store.hpp"

namespace fs = std::filesystem;
namespace p = fieldsync::protocol;
namespace srv = fieldsync::server;

namespace {

class TempDir {
public:
    TempDir() {
        std::string tmpl = (fs::temp_directory_path() / "fieldsync-demo-XXXXXX").string();
        REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
        m_path = tmpl;
    }
    ~TempDir() {
        std::error_code ec;
        fs::remove_all(m_path, ec);
    }
    const fs::path& path() const { return m_path; }

private:
    fs::path m_path;
};

constexpr std::int64_t now = 1'790'000'000'000;  // 2026-09-21T14:13:20Z
constexpr std::int64_t day = 24LL * 3600 * 1000;
constexpr int iterations = 1000;  // fast hashing: the seed, not PBKDF2, is tested

const p::Schema& survey() {
    static const p::Schema schema = p::Schema::load(srv::bundled_schema_json()).value();
    return schema;
}

std::unique_ptr<srv::Store> new_store(const fs::path& dir) {
    auto store = srv::open_sqlite_store(dir / "fieldsync.db");
    REQUIRE(store);
    REQUIRE((*store)->put_schema(survey().version(), std::string(srv::bundled_schema_json())));
    return std::move(*store);
}

struct Loaded {
    std::string area;
    p::RecordState state;
};

/// Every record of `collection` in `scope`, decoded.
std::vector<Loaded> records(srv::Store& store, const std::string& collection,
                            const std::string& scope = "ordos") {
    std::vector<Loaded> out;
    srv::Scope s{{scope}};
    REQUIRE(store.for_each_record(s, collection, [&](const srv::StoredRecord& r) {
        auto state = p::decode_record(r.state);
        REQUIRE_MESSAGE(state, state.error().message);
        out.push_back({r.area, std::move(*state)});
        return true;
    }));
    return out;
}

std::string text_of(const p::RecordState& r, const std::string& field) {
    auto v = r.view(field);
    if (!v || !std::holds_alternative<std::string>(v->value)) return "";
    return std::get<std::string>(v->value);
}

}  // namespace

TEST_CASE("demo seed: a new store gets areas, accounts and survey records that validate") {
    TempDir dir;
    auto store = new_store(dir.path());
    auto seeded =
        srv::seed_demo(*store, &survey(), dir.path() / "demo-credentials.txt", now, iterations);
    REQUIRE_MESSAGE(seeded, seeded.error().message);
    CHECK(seeded->accounts.size() == 6);
    const srv::DemoRecords& r = seeded->records;
    CHECK_MESSAGE(r.skipped.empty(), r.skipped);
    CHECK(r.households >= 20);
    CHECK(r.households <= 30);
    CHECK(r.members > 0);
    CHECK(r.visits > 0);

    auto households = records(*store, "households");
    auto members = records(*store, "members");
    auto visits = records(*store, "visits");
    CHECK(households.size() == r.households);
    CHECK(members.size() == r.members);
    CHECK(visits.size() == r.visits);
    // One audit row per stored change, as for pushed data.
    auto last = store->last_seq();
    REQUIRE(last);
    CHECK(*last == r.writes);

    std::set<std::string> statuses, kinds, reviews, writers;
    std::set<std::string> household_ids;
    for (const auto* set : {&households, &members, &visits}) {
        for (const auto& rec : *set) {
            CHECK_MESSAGE(survey().validate_record(rec.state),
                          rec.state.collection << " " << rec.state.id.to_string());
            // Every write lies in the past, within the last two months.
            for (const auto& [name, field] : rec.state.fields) {
                auto v = rec.state.view(name);
                REQUIRE(v);
                for (const auto& e : v->competing) {
                    CHECK(static_cast<std::int64_t>(e.ts.wall_ms()) < now);
                    CHECK(static_cast<std::int64_t>(e.ts.wall_ms()) > now - 60 * day);
                }
                if (const auto* lww = std::get_if<p::LwwState>(&field)) {
                    CHECK(static_cast<std::int64_t>(lww->entry.ts.wall_ms()) < now);
                    writers.insert(lww->entry.by);
                }
            }
        }
    }
    for (const auto& h : households) {
        household_ids.insert(h.state.id.to_string());
        const std::string status = text_of(h.state, "poverty_status");
        statuses.insert(status);
        const std::string id_number = text_of(h.state, "head_id_number");
        CHECK(id_number.size() == 18);
        CHECK(id_number.rfind("1506", 0) == 0);
        CHECK(!text_of(h.state, "head_name").empty());
        auto gps = h.state.view("gps");
        REQUIRE(gps);
        const auto& g = std::get<p::GeoPoint>(gps->value);
        CHECK(g.lat_e7 > 390000000);
        CHECK(g.lat_e7 < 401000000);
        CHECK(g.lon_e7 > 1080000000);
        CHECK(g.lon_e7 < 1105000000);
        auto income = h.state.view("income_per_capita");
        REQUIRE(income);
        CHECK(std::get<std::int64_t>(income->value) > 0);
        if (status == "exited" && !h.state.view("poverty_status")->conflict)
            CHECK_MESSAGE(!text_of(h.state, "exit_reason").empty(), h.state.id.to_string());
    }
    CHECK(statuses.count("national_line") == 1);
    CHECK(statuses.count("dibao_line") == 1);
    CHECK(statuses.count("marginal") == 1);
    CHECK(statuses.count("not_poor") == 1);
    CHECK(statuses.count("exited") == 1);
    for (const auto& v : visits) {
        kinds.insert(text_of(v.state, "kind"));
        reviews.insert(text_of(v.state, "review_status"));
        CHECK(household_ids.count(text_of(v.state, "household")) == 1);
        CHECK(!text_of(v.state, "findings").empty());
    }
    for (const auto& m : members)
        CHECK(household_ids.count(text_of(m.state, "household")) == 1);
    CHECK(kinds == std::set<std::string>{"identification", "look_back", "extensive_visit",
                                         "exit_verification"});
    CHECK(reviews.count("approved") == 1);
    CHECK(reviews.count("has_issues") == 1);
    CHECK(reviews.count("pending") == 1);
    CHECK(reviews.count("") == 1);  // not reviewed yet
    for (const char* who : {"enumerator-longhuqu", "enumerator-hashatu", "enumerator-xini"})
        CHECK_MESSAGE(writers.count(who) == 1, who);

    // A supervisor of one banner sees only its own households, and both banners have some.
    auto ejin_horo = records(*store, "households", "ordos/ejin-horo");
    auto hanggin = records(*store, "households", "ordos/hanggin");
    CHECK(!ejin_horo.empty());
    CHECK(!hanggin.empty());
    CHECK(ejin_horo.size() + hanggin.size() == households.size());
    for (const auto& h : hanggin)
        CHECK(h.area.rfind("ordos/hanggin/", 0) == 0);
    for (const char* village : {"ordos/ejin-horo/altan-xire/longhuqu",
                                "ordos/ejin-horo/altan-xire/hashatu", "ordos/hanggin/xini"})
        CHECK_MESSAGE(!records(*store, "households", village).empty(), village);

    // Conflicts: open exactly for the review registers that hold more than one value.
    std::set<std::tuple<std::string, std::string, std::string>> expected, opened;
    for (const auto* set : {&households, &members, &visits})
        for (const auto& rec : *set)
            for (const auto& field : rec.state.conflicts())
                expected.insert({rec.state.collection, rec.state.id.to_string(), field});
    srv::ConflictFilter f;
    f.open = true;
    auto conflicts = store->list_conflicts(f);
    REQUIRE(conflicts);
    for (const auto& c : *conflicts) {
        opened.insert({c.collection, c.record.to_string(), c.field});
        // Two values, from two replicas and two people, with when.
        auto values = boost::json::parse(c.values_json).as_array();
        CHECK(values.size() == 2);
        std::set<std::string> replicas, authors;
        for (const auto& v : values) {
            replicas.insert(std::string(v.at("replica").as_string()));
            authors.insert(std::string(v.at("by").as_string()));
            CHECK(!v.at("at").as_string().empty());
        }
        CHECK(replicas.size() == 2);
        CHECK(authors.size() == 2);
    }
    CHECK(!expected.empty());
    CHECK(opened == expected);
    CHECK(r.conflicts == expected.size());
    CHECK(std::get<2>(*expected.begin()) != "_deleted");
    bool status_conflict = false;
    for (const auto& e : expected)
        status_conflict |= std::get<2>(e) == "poverty_status";
    CHECK(status_conflict);
    // One conflict per banner, so each supervisor's queue has one.
    std::set<std::string> conflict_banners;
    for (const auto& c : *conflicts)
        conflict_banners.insert(c.area.substr(0, c.area.find('/', 6)));
    CHECK(conflict_banners == std::set<std::string>{"ordos/ejin-horo", "ordos/hanggin"});

    // A second start on the same store seeds nothing.
    auto again = srv::seed_demo(*store, &survey(), dir.path() / "demo-credentials-2.txt", now + day,
                                iterations);
    REQUIRE(again);
    CHECK(again->accounts.empty());
    CHECK(again->records.households == 0);
    CHECK(again->records.writes == 0);
    CHECK(!fs::exists(dir.path() / "demo-credentials-2.txt"));
    auto after = store->last_seq();
    REQUIRE(after);
    CHECK(*after == *last);
    // Nor does the record seed on its own, once the store holds records.
    auto records_again = srv::seed_demo_records(*store, survey(), now + day);
    REQUIRE(records_again);
    CHECK(records_again->writes == 0);
    CHECK(*store->last_seq() == *last);
    auto count = store->count_open_conflicts();
    REQUIRE(count);
    CHECK(*count == expected.size());
}

TEST_CASE("demo seed: deterministic ids, no records without a schema or for another survey") {
    TempDir a_dir, b_dir, c_dir, d_dir;
    auto a = new_store(a_dir.path());
    auto b = new_store(b_dir.path());
    REQUIRE(srv::seed_demo(*a, &survey(), a_dir.path() / "c.txt", now, iterations));
    REQUIRE(srv::seed_demo(*b, &survey(), b_dir.path() / "c.txt", now, iterations));
    auto ids = [](srv::Store& s) {
        std::vector<std::string> out;
        for (const auto& h : records(s, "households"))
            out.push_back(h.state.id.to_string());
        return out;
    };
    CHECK(ids(*a) == ids(*b));

    // Without a schema (--no-demo-records): areas and accounts only.
    auto c = new_store(c_dir.path());
    auto only_accounts = srv::seed_demo(*c, nullptr, c_dir.path() / "c.txt", now, iterations);
    REQUIRE(only_accounts);
    CHECK(only_accounts->accounts.size() == 6);
    CHECK(only_accounts->records.writes == 0);
    CHECK(*c->last_seq() == 0);

    // Another survey: skipped, saying why, and the start goes on.
    auto other = p::Schema::load(R"({"name": "other-survey", "version": 1,
        "title": {"en": "Other"}, "collections": [{"name": "things", "area_field": "area",
        "title": {"en": "Things"}, "fields": [{"name": "area", "type": "area", "merge": "lww",
        "required": true, "label": {"en": "Area"}}]}]})");
    REQUIRE_MESSAGE(other, other.error().message);
    auto d = srv::open_sqlite_store(d_dir.path() / "fieldsync.db");
    REQUIRE(d);
    auto skipped = srv::seed_demo(**d, &*other, d_dir.path() / "c.txt", now, iterations);
    REQUIRE(skipped);
    CHECK(skipped->accounts.size() == 6);
    CHECK(skipped->records.writes == 0);
    CHECK(skipped->records.skipped.find("other-survey") != std::string::npos);
    CHECK(*(*d)->last_seq() == 0);
}
