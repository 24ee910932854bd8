// End to end: the real fieldsync-server process and two fieldsync-tablet processes.
//
//  1. Two tablets change the same household's poverty_status while offline; both sync; the
//     server opens a conflict; both tablets show it with every competing value; a supervisor
//     resolves it through the HTTP API; both tablets sync again and converge on the value.
//  2. The same with a delete on one tablet and an edit on the other.
#include <set>

#include "e2e_support.hpp"

using namespace e2e;

namespace {

const std::string longhuqu = "ordos/ejin-horo/altan-xire/longhuqu";

/// The open conflict on `record`/`field`, from GET /api/conflicts.
std::int64_t find_conflict(std::uint16_t port, const std::string& token, const std::string& record,
                           const std::string& field) {
    auto r = http(port, "GET", "/api/conflicts?status=open", "", token);
    REQUIRE_MESSAGE(r.status == 200, r.body);
    const json::value body = r.json();  // kept alive for the loop
    for (const auto& c : body.at("conflicts").as_array()) {
        const auto& o = c.as_object();
        if (o.at("record").as_string() == record && o.at("field").as_string() == field)
            return o.at("id").as_int64();
    }
    FAIL("no open conflict on " << record << " field " << field << " in " << r.body);
    return 0;
}

std::string field_of(const json::value& record, const std::string& name) {
    const auto* v = record.at("fields").as_object().if_contains(name);
    if (!v) return "(unset)";
    return v->is_string() ? std::string(v->as_string()) : json::serialize(*v);
}

}  // namespace

TEST_CASE("e2e: concurrent offline edits conflict, a supervisor resolves, both tablets converge") {
    if (!have_server()) {
        MESSAGE("fieldsync-server is not built; skipping");
        return;
    }
    TempDir dir("conflict");
    Server server(dir.path());
    Tablet a(dir.path(), "a"), b(dir.path(), "b");
    auto ia = a.init(server.url(), "enumerator-longhuqu", server.password("enumerator-longhuqu"));
    CHECK(ia.at("role").as_string() == "enumerator");
    b.init(server.url(), "supervisor-ejin-horo", server.password("supervisor-ejin-horo"));

    // A registers a household; both tablets hold it.
    auto added =
        a.ok({"add", "household", "village=" + longhuqu, "head_name=Bater",
              "poverty_status=national_line", "members_count=4", "assistance=lambs_for_ewes"});
    const std::string id(added.at("id").as_string());
    a.sync();
    b.sync();
    CHECK(field_of(b.show("households", id), "poverty_status") == "national_line");

    // Offline, both change poverty_status to different values.
    a.ok({"edit", "households", id, "poverty_status=dibao_line"});
    b.ok({"edit", "households", id, "poverty_status=not_poor"});
    CHECK(a.ok({"status"}).at("pending").as_int64() == 1);

    // Both sync (A, then B, then A again so both hold both values).
    a.sync();
    b.sync();
    a.sync();
    for (Tablet* t : {&a, &b}) {
        auto rec = t->show("households", id);
        const auto& conflicts = rec.at("conflicts").as_object();
        REQUIRE_MESSAGE(conflicts.contains("poverty_status"), json::serialize(rec));
        const auto& values = conflicts.at("poverty_status").as_array();
        CHECK(values.size() == 2);
        std::set<std::string> seen, by;
        for (const auto& v : values) {
            seen.insert(std::string(v.at("value").as_string()));
            by.insert(std::string(v.at("by").as_string()));
            CHECK(!v.at("at").as_string().empty());
        }
        CHECK(seen == std::set<std::string>{"dibao_line", "not_poor"});
        CHECK(by == std::set<std::string>{"enumerator-longhuqu", "supervisor-ejin-horo"});
    }
    // The human form names the conflict too.
    {
        auto r = run(dir.path(), bin("fieldsync-tablet"),
                     {"--db", a.db().string(), "show", "households", id});
        CHECK(r.rc == 0);
        CHECK(r.out.find("CONFLICT") != std::string::npos);
        CHECK(r.out.find("by supervisor-ejin-horo") != std::string::npos);
    }

    // The supervisor resolves it through the HTTP API.
    const std::string token =
        api_login(server.port(), "supervisor-ejin-horo", server.password("supervisor-ejin-horo"));
    const auto conflict = find_conflict(server.port(), token, id, "poverty_status");
    auto resolved =
        http(server.port(), "POST", "/api/conflicts/" + std::to_string(conflict) + "/resolve",
             R"({"value": "marginal", "note": "checked on site"})", token);
    REQUIRE_MESSAGE(resolved.status == 200, resolved.body);

    // Both tablets converge on the resolved value, without a conflict.
    a.sync();
    b.sync();
    for (Tablet* t : {&a, &b}) {
        auto rec = t->show("households", id);
        CHECK(field_of(rec, "poverty_status") == "marginal");
        CHECK(rec.at("conflicts").as_object().empty());
        CHECK(rec.at("sync").as_string() == "synced");
    }
    CHECK(a.ok({"status"}).at("pending").as_int64() == 0);
    CHECK(a.ok({"list", "households", "--conflicts"}).as_array().empty());
}

TEST_CASE("e2e: a delete concurrent with an edit goes to the supervisor; both tablets converge") {
    if (!have_server()) {
        MESSAGE("fieldsync-server is not built; skipping");
        return;
    }
    TempDir dir("delete");
    Server server(dir.path());
    Tablet a(dir.path(), "a"), b(dir.path(), "b");
    a.init(server.url(), "enumerator-longhuqu", server.password("enumerator-longhuqu"));
    b.init(server.url(), "supervisor-ejin-horo", server.password("supervisor-ejin-horo"));

    auto added = a.ok({"add", "household", "village=" + longhuqu, "head_name=Altan",
                       "poverty_status=dibao_line"});
    const std::string id(added.at("id").as_string());
    a.sync();
    b.sync();

    // Offline: A deletes, B edits.
    a.ok({"delete", "households", id});
    b.ok({"edit", "households", id, "head_name=Altan Gerel", "members_count=3"});
    a.sync();
    b.sync();
    a.sync();
    for (Tablet* t : {&a, &b}) {
        auto rec = t->show("households", id);
        CHECK(rec.at("delete_conflict").as_bool());
        CHECK(rec.at("conflicts").as_object().contains("_deleted"));
    }

    // The supervisor keeps the household (value false for _deleted).
    const std::string token =
        api_login(server.port(), "supervisor-ejin-horo", server.password("supervisor-ejin-horo"));
    const auto conflict = find_conflict(server.port(), token, id, "_deleted");
    auto resolved =
        http(server.port(), "POST", "/api/conflicts/" + std::to_string(conflict) + "/resolve",
             R"({"value": false, "note": "the family still lives there"})", token);
    REQUIRE_MESSAGE(resolved.status == 200, resolved.body);

    a.sync();
    b.sync();
    for (Tablet* t : {&a, &b}) {
        auto rec = t->show("households", id);
        CHECK_FALSE(rec.at("deleted").as_bool());
        CHECK_FALSE(rec.at("delete_conflict").as_bool());
        CHECK(rec.at("conflicts").as_object().empty());
        CHECK(field_of(rec, "head_name") == "Altan Gerel");
        CHECK(field_of(rec, "members_count") == "3");
    }
    CHECK(a.ok({"list", "households"}).as_array().size() == 1);
}

TEST_CASE("e2e: tablet tool errors are clear and exit 1") {
    if (!have_server()) {
        MESSAGE("fieldsync-server is not built; skipping");
        return;
    }
    TempDir dir("errors");
    Server server(dir.path());
    Tablet a(dir.path(), "a");

    // Not set up yet.
    auto r = a.cmd({"sync"});
    CHECK(r.rc == 1);
    CHECK(r.err.find("init") != std::string::npos);

    // Wrong password: init fails, nothing stored.
    write_file(dir.path() / "wrong.pw", "wrong\n");
    r = a.cmd({"init", "--server", server.url(), "--user", "enumerator-longhuqu", "--password-file",
               (dir.path() / "wrong.pw").string()});
    CHECK(r.rc == 1);
    CHECK(r.json().at("error").at("code").as_string() == "unauthenticated");

    a.init(server.url(), "enumerator-longhuqu", server.password("enumerator-longhuqu"));
    // The password is not stored anywhere in the tablet's files.
    const std::string pw = server.password("enumerator-longhuqu");
    for (const auto& f : fs::directory_iterator(dir.path()))
        if (f.path().filename().string().rfind("a.db", 0) == 0)
            CHECK_MESSAGE(read_file(f.path()).find(pw) == std::string::npos, f.path());

    // Validation: an unknown enum code, a missing required field, an unknown field, a bad integer.
    r = a.cmd({"add", "household", "village=" + longhuqu, "head_name=X", "poverty_status=rich"});
    CHECK(r.rc == 1);
    CHECK(r.err.find("poverty_status") != std::string::npos);
    r = a.cmd({"add", "household", "village=" + longhuqu, "head_name=X"});
    CHECK(r.rc == 1);
    CHECK(r.err.find("poverty_status") != std::string::npos);
    r = a.cmd({"add", "household", "colour=red"});
    CHECK(r.rc == 1);
    CHECK(r.err.find("no field named \"colour\"") != std::string::npos);
    r = a.cmd({"add", "household", "village=" + longhuqu, "head_name=X", "poverty_status=marginal",
               "members_count=many"});
    CHECK(r.rc == 1);
    CHECK(r.err.find("not an integer") != std::string::npos);
    // Outside the user's areas.
    r = a.cmd({"add", "household", "village=ordos/hanggin/xini/shengli", "head_name=X",
               "poverty_status=marginal"});
    CHECK(r.rc == 1);
    CHECK(r.json().at("error").at("code").as_string() == "forbidden");
    // No such record; bad usage.
    r = a.cmd({"show", "households", "0190f3c2-0000-7000-8000-000000000001"});
    CHECK(r.rc == 1);
    r = a.cmd({"frobnicate"});
    CHECK(r.rc == 2);

    // Members and visits typed by the schema, listed with filters.
    auto h = a.ok({"add", "household", "village=" + longhuqu, "head_name=Bater",
                   "poverty_status=national_line", "gps=39.6087,109.7813"});
    const std::string hid(h.at("id").as_string());
    a.ok({"add", "member", "village=" + longhuqu, "household=" + hid, "name=Bater",
          "relation_to_head=head", "birth_date=1968-03-01", "sex=male"});
    a.ok({"add", "visit", "village=" + longhuqu, "household=" + hid, "kind=identification",
          "visited_at=2017-09-10T09:34:39Z", "income_observed=3200"});
    CHECK(a.ok({"list", "members", "--where", "household=" + hid}).as_array().size() == 1);
    CHECK(a.ok({"list", "visits", "--area", "ordos/ejin-horo"}).as_array().size() == 1);
    CHECK(a.ok({"list", "households", "--area", "ordos/hanggin"}).as_array().empty());
    a.sync();
    auto st = a.ok({"status"});
    CHECK(st.at("pending").as_int64() == 0);
    CHECK(st.at("user").as_string() == "enumerator-longhuqu");
    CHECK(!st.at("last_sync").is_null());
    CHECK(st.at("rejected").as_array().empty());
}
