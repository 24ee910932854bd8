// The authorization matrix: every principal × every operation × in and out of scope, with the
// answer the server must give, in one table (docs/api.md "Role" lines and "Scope";
// protocol/SPEC.md §6.1). The test runs every row against the real HttpApi and real sync
// sessions (security_fixture.hpp) and names the row on failure.
//
// Principals:
//   enumerator  enum-a, assigned village_a (ordos/ejin-horo/altan-xire/longhuqu)
//   supervisor  sup-ejin, assigned the banner ordos/ejin-horo
//   admin       admin (every root of the area tree)
//   disabled    enum-off: disabled, but still holding a token issued before (not revoked)
//   anonymous   no Authorization header; on the WebSocket, no hello before the request
//   forged      a well-formed token the server never issued; a wrong password at login
// Scope column:
//   mine   the target lies in village_a (inside the enumerator's and the supervisor's areas);
//          users.password: the caller's own password
//   other  the target lies in village_h, in the other banner ordos/hanggin;
//          users.password: another user's (enum-h's) password
//   -      the operation has no scope
// Expected answer:
//   "<status>"              HTTP status of a success
//   "<status> <code>"       HTTP status and error.code
//   "200 sees"/"200 hidden" a listing (records, conflicts, devices, export, overview) that must
//                           or must not contain the target
//   "sync sees"/"sync hidden"           sync read: a full pull does or does not send the target
//   "sync ok"/"sync forbidden"          sync write: the push item's result
//   "sync unauthenticated"              the session is refused (fatal error) before any of it
#include <set>

#include "security_fixture.hpp"

using namespace sectest;

namespace {

struct Row {
    const char* who;
    const char* op;
    const char* scope;
    const char* expect;
};

// clang-format off
const Row matrix[] = {
    // --- enumerator -----------------------------------------------------------------------
    {"enumerator", "sync.pull",         "mine",  "sync sees"},
    {"enumerator", "sync.pull",         "other", "sync hidden"},
    {"enumerator", "sync.push",         "mine",  "sync ok"},
    {"enumerator", "sync.push",         "other", "sync forbidden"},
    {"enumerator", "login",             "-",     "200"},
    {"enumerator", "logout",            "-",     "200"},
    {"enumerator", "me",                "-",     "200"},
    {"enumerator", "areas.list",        "-",     "200"},
    {"enumerator", "areas.create",      "-",     "403 forbidden"},
    {"enumerator", "areas.import",      "-",     "403 forbidden"},
    {"enumerator", "users.list",        "-",     "403 forbidden"},
    {"enumerator", "users.create",      "-",     "403 forbidden"},
    {"enumerator", "users.update",      "-",     "403 forbidden"},
    {"enumerator", "users.password",    "mine",  "200"},
    {"enumerator", "users.password",    "other", "403 forbidden"},
    {"enumerator", "records.list",      "mine",  "200 sees"},
    {"enumerator", "records.list",      "other", "200 hidden"},
    {"enumerator", "records.get",       "mine",  "200"},
    {"enumerator", "records.get",       "other", "404 not_found"},
    {"enumerator", "records.put",       "mine",  "403 forbidden"},
    {"enumerator", "records.put",       "other", "403 forbidden"},
    {"enumerator", "conflicts.list",    "mine",  "403 forbidden"},
    {"enumerator", "conflicts.list",    "other", "403 forbidden"},
    {"enumerator", "conflicts.get",     "mine",  "403 forbidden"},
    {"enumerator", "conflicts.get",     "other", "403 forbidden"},
    {"enumerator", "conflicts.resolve", "mine",  "403 forbidden"},
    {"enumerator", "conflicts.resolve", "other", "403 forbidden"},
    {"enumerator", "devices",           "mine",  "403 forbidden"},
    {"enumerator", "devices",           "other", "403 forbidden"},
    {"enumerator", "export.csv",        "mine",  "403 forbidden"},
    {"enumerator", "export.csv",        "other", "403 forbidden"},
    {"enumerator", "export.jsonl",      "mine",  "403 forbidden"},
    {"enumerator", "export.jsonl",      "other", "403 forbidden"},
    {"enumerator", "schema.get",        "-",     "200"},
    {"enumerator", "schema.put",        "-",     "403 forbidden"},
    {"enumerator", "overview",          "mine",  "403 forbidden"},
    {"enumerator", "overview",          "other", "403 forbidden"},
    // --- supervisor -----------------------------------------------------------------------
    {"supervisor", "sync.pull",         "mine",  "sync sees"},
    {"supervisor", "sync.pull",         "other", "sync hidden"},
    {"supervisor", "sync.push",         "mine",  "sync ok"},
    {"supervisor", "sync.push",         "other", "sync forbidden"},
    {"supervisor", "login",             "-",     "200"},
    {"supervisor", "logout",            "-",     "200"},
    {"supervisor", "me",                "-",     "200"},
    {"supervisor", "areas.list",        "-",     "200"},
    {"supervisor", "areas.create",      "-",     "403 forbidden"},
    {"supervisor", "areas.import",      "-",     "403 forbidden"},
    {"supervisor", "users.list",        "-",     "403 forbidden"},
    {"supervisor", "users.create",      "-",     "403 forbidden"},
    {"supervisor", "users.update",      "-",     "403 forbidden"},
    {"supervisor", "users.password",    "mine",  "200"},
    {"supervisor", "users.password",    "other", "403 forbidden"},
    {"supervisor", "records.list",      "mine",  "200 sees"},
    {"supervisor", "records.list",      "other", "200 hidden"},
    {"supervisor", "records.get",       "mine",  "200"},
    {"supervisor", "records.get",       "other", "404 not_found"},
    {"supervisor", "records.put",       "mine",  "200"},
    {"supervisor", "records.put",       "other", "404 not_found"},
    {"supervisor", "conflicts.list",    "mine",  "200 sees"},
    {"supervisor", "conflicts.list",    "other", "200 hidden"},
    {"supervisor", "conflicts.get",     "mine",  "200"},
    {"supervisor", "conflicts.get",     "other", "404 not_found"},
    {"supervisor", "conflicts.resolve", "mine",  "200"},
    {"supervisor", "conflicts.resolve", "other", "404 not_found"},
    {"supervisor", "devices",           "mine",  "200 sees"},
    {"supervisor", "devices",           "other", "200 hidden"},
    {"supervisor", "export.csv",        "mine",  "200 sees"},
    {"supervisor", "export.csv",        "other", "200 hidden"},
    {"supervisor", "export.jsonl",      "mine",  "200 sees"},
    {"supervisor", "export.jsonl",      "other", "200 hidden"},
    {"supervisor", "schema.get",        "-",     "200"},
    {"supervisor", "schema.put",        "-",     "403 forbidden"},
    {"supervisor", "overview",          "mine",  "200 sees"},
    {"supervisor", "overview",          "other", "200 hidden"},
    // --- admin ----------------------------------------------------------------------------
    {"admin",      "sync.pull",         "mine",  "sync sees"},
    {"admin",      "sync.pull",         "other", "sync sees"},
    {"admin",      "sync.push",         "mine",  "sync ok"},
    {"admin",      "sync.push",         "other", "sync ok"},
    {"admin",      "login",             "-",     "200"},
    {"admin",      "logout",            "-",     "200"},
    {"admin",      "me",                "-",     "200"},
    {"admin",      "areas.list",        "-",     "200"},
    {"admin",      "areas.create",      "-",     "201"},
    {"admin",      "areas.import",      "-",     "200"},
    {"admin",      "users.list",        "-",     "200"},
    {"admin",      "users.create",      "-",     "201"},
    {"admin",      "users.update",      "-",     "200"},
    {"admin",      "users.password",    "mine",  "200"},
    {"admin",      "users.password",    "other", "200"},
    {"admin",      "records.list",      "mine",  "200 sees"},
    {"admin",      "records.list",      "other", "200 sees"},
    {"admin",      "records.get",       "mine",  "200"},
    {"admin",      "records.get",       "other", "200"},
    {"admin",      "records.put",       "mine",  "200"},
    {"admin",      "records.put",       "other", "200"},
    {"admin",      "conflicts.list",    "mine",  "200 sees"},
    {"admin",      "conflicts.list",    "other", "200 sees"},
    {"admin",      "conflicts.get",     "mine",  "200"},
    {"admin",      "conflicts.get",     "other", "200"},
    {"admin",      "conflicts.resolve", "mine",  "200"},
    {"admin",      "conflicts.resolve", "other", "200"},
    {"admin",      "devices",           "mine",  "200 sees"},
    {"admin",      "devices",           "other", "200 sees"},
    {"admin",      "export.csv",        "mine",  "200 sees"},
    {"admin",      "export.csv",        "other", "200 sees"},
    {"admin",      "export.jsonl",      "mine",  "200 sees"},
    {"admin",      "export.jsonl",      "other", "200 sees"},
    {"admin",      "schema.get",        "-",     "200"},
    {"admin",      "schema.put",        "-",     "200"},
    {"admin",      "overview",          "mine",  "200 sees"},
    {"admin",      "overview",          "other", "200 sees"},
    // --- disabled (its token was never revoked: the disabled flag alone must refuse it) ---
    {"disabled",   "sync.pull",         "mine",  "sync unauthenticated"},
    {"disabled",   "sync.pull",         "other", "sync unauthenticated"},
    {"disabled",   "sync.push",         "mine",  "sync unauthenticated"},
    {"disabled",   "sync.push",         "other", "sync unauthenticated"},
    {"disabled",   "login",             "-",     "403 forbidden"},
    {"disabled",   "logout",            "-",     "401 unauthenticated"},
    {"disabled",   "me",                "-",     "401 unauthenticated"},
    {"disabled",   "areas.list",        "-",     "401 unauthenticated"},
    {"disabled",   "areas.create",      "-",     "401 unauthenticated"},
    {"disabled",   "areas.import",      "-",     "401 unauthenticated"},
    {"disabled",   "users.list",        "-",     "401 unauthenticated"},
    {"disabled",   "users.create",      "-",     "401 unauthenticated"},
    {"disabled",   "users.update",      "-",     "401 unauthenticated"},
    {"disabled",   "users.password",    "mine",  "401 unauthenticated"},
    {"disabled",   "users.password",    "other", "401 unauthenticated"},
    {"disabled",   "records.list",      "mine",  "401 unauthenticated"},
    {"disabled",   "records.list",      "other", "401 unauthenticated"},
    {"disabled",   "records.get",       "mine",  "401 unauthenticated"},
    {"disabled",   "records.get",       "other", "401 unauthenticated"},
    {"disabled",   "records.put",       "mine",  "401 unauthenticated"},
    {"disabled",   "records.put",       "other", "401 unauthenticated"},
    {"disabled",   "conflicts.list",    "mine",  "401 unauthenticated"},
    {"disabled",   "conflicts.list",    "other", "401 unauthenticated"},
    {"disabled",   "conflicts.get",     "mine",  "401 unauthenticated"},
    {"disabled",   "conflicts.get",     "other", "401 unauthenticated"},
    {"disabled",   "conflicts.resolve", "mine",  "401 unauthenticated"},
    {"disabled",   "conflicts.resolve", "other", "401 unauthenticated"},
    {"disabled",   "devices",           "mine",  "401 unauthenticated"},
    {"disabled",   "devices",           "other", "401 unauthenticated"},
    {"disabled",   "export.csv",        "mine",  "401 unauthenticated"},
    {"disabled",   "export.csv",        "other", "401 unauthenticated"},
    {"disabled",   "export.jsonl",      "mine",  "401 unauthenticated"},
    {"disabled",   "export.jsonl",      "other", "401 unauthenticated"},
    {"disabled",   "schema.get",        "-",     "401 unauthenticated"},
    {"disabled",   "schema.put",        "-",     "401 unauthenticated"},
    {"disabled",   "overview",          "mine",  "401 unauthenticated"},
    {"disabled",   "overview",          "other", "401 unauthenticated"},
    // --- anonymous: no token; on the WebSocket, a request before hello --------------------
    {"anonymous",  "sync.pull",         "mine",  "sync unauthenticated"},
    {"anonymous",  "sync.pull",         "other", "sync unauthenticated"},
    {"anonymous",  "sync.push",         "mine",  "sync unauthenticated"},
    {"anonymous",  "sync.push",         "other", "sync unauthenticated"},
    {"anonymous",  "login",             "-",     "401 unauthenticated"},
    {"anonymous",  "logout",            "-",     "401 unauthenticated"},
    {"anonymous",  "me",                "-",     "401 unauthenticated"},
    {"anonymous",  "areas.list",        "-",     "401 unauthenticated"},
    {"anonymous",  "areas.create",      "-",     "401 unauthenticated"},
    {"anonymous",  "areas.import",      "-",     "401 unauthenticated"},
    {"anonymous",  "users.list",        "-",     "401 unauthenticated"},
    {"anonymous",  "users.create",      "-",     "401 unauthenticated"},
    {"anonymous",  "users.update",      "-",     "401 unauthenticated"},
    {"anonymous",  "users.password",    "mine",  "401 unauthenticated"},
    {"anonymous",  "users.password",    "other", "401 unauthenticated"},
    {"anonymous",  "records.list",      "mine",  "401 unauthenticated"},
    {"anonymous",  "records.list",      "other", "401 unauthenticated"},
    {"anonymous",  "records.get",       "mine",  "401 unauthenticated"},
    {"anonymous",  "records.get",       "other", "401 unauthenticated"},
    {"anonymous",  "records.put",       "mine",  "401 unauthenticated"},
    {"anonymous",  "records.put",       "other", "401 unauthenticated"},
    {"anonymous",  "conflicts.list",    "mine",  "401 unauthenticated"},
    {"anonymous",  "conflicts.list",    "other", "401 unauthenticated"},
    {"anonymous",  "conflicts.get",     "mine",  "401 unauthenticated"},
    {"anonymous",  "conflicts.get",     "other", "401 unauthenticated"},
    {"anonymous",  "conflicts.resolve", "mine",  "401 unauthenticated"},
    {"anonymous",  "conflicts.resolve", "other", "401 unauthenticated"},
    {"anonymous",  "devices",           "mine",  "401 unauthenticated"},
    {"anonymous",  "devices",           "other", "401 unauthenticated"},
    {"anonymous",  "export.csv",        "mine",  "401 unauthenticated"},
    {"anonymous",  "export.csv",        "other", "401 unauthenticated"},
    {"anonymous",  "export.jsonl",      "mine",  "401 unauthenticated"},
    {"anonymous",  "export.jsonl",      "other", "401 unauthenticated"},
    {"anonymous",  "schema.get",        "-",     "401 unauthenticated"},
    {"anonymous",  "schema.put",        "-",     "401 unauthenticated"},
    {"anonymous",  "overview",          "mine",  "401 unauthenticated"},
    {"anonymous",  "overview",          "other", "401 unauthenticated"},
    // --- forged: a token the server never issued; at login, a wrong password -------------
    {"forged",     "sync.pull",         "mine",  "sync unauthenticated"},
    {"forged",     "sync.pull",         "other", "sync unauthenticated"},
    {"forged",     "sync.push",         "mine",  "sync unauthenticated"},
    {"forged",     "sync.push",         "other", "sync unauthenticated"},
    {"forged",     "login",             "-",     "401 unauthenticated"},
    {"forged",     "logout",            "-",     "401 unauthenticated"},
    {"forged",     "me",                "-",     "401 unauthenticated"},
    {"forged",     "areas.list",        "-",     "401 unauthenticated"},
    {"forged",     "areas.create",      "-",     "401 unauthenticated"},
    {"forged",     "areas.import",      "-",     "401 unauthenticated"},
    {"forged",     "users.list",        "-",     "401 unauthenticated"},
    {"forged",     "users.create",      "-",     "401 unauthenticated"},
    {"forged",     "users.update",      "-",     "401 unauthenticated"},
    {"forged",     "users.password",    "mine",  "401 unauthenticated"},
    {"forged",     "users.password",    "other", "401 unauthenticated"},
    {"forged",     "records.list",      "mine",  "401 unauthenticated"},
    {"forged",     "records.list",      "other", "401 unauthenticated"},
    {"forged",     "records.get",       "mine",  "401 unauthenticated"},
    {"forged",     "records.get",       "other", "401 unauthenticated"},
    {"forged",     "records.put",       "mine",  "401 unauthenticated"},
    {"forged",     "records.put",       "other", "401 unauthenticated"},
    {"forged",     "conflicts.list",    "mine",  "401 unauthenticated"},
    {"forged",     "conflicts.list",    "other", "401 unauthenticated"},
    {"forged",     "conflicts.get",     "mine",  "401 unauthenticated"},
    {"forged",     "conflicts.get",     "other", "401 unauthenticated"},
    {"forged",     "conflicts.resolve", "mine",  "401 unauthenticated"},
    {"forged",     "conflicts.resolve", "other", "401 unauthenticated"},
    {"forged",     "devices",           "mine",  "401 unauthenticated"},
    {"forged",     "devices",           "other", "401 unauthenticated"},
    {"forged",     "export.csv",        "mine",  "401 unauthenticated"},
    {"forged",     "export.csv",        "other", "401 unauthenticated"},
    {"forged",     "export.jsonl",      "mine",  "401 unauthenticated"},
    {"forged",     "export.jsonl",      "other", "401 unauthenticated"},
    {"forged",     "schema.get",        "-",     "401 unauthenticated"},
    {"forged",     "schema.put",        "-",     "401 unauthenticated"},
    {"forged",     "overview",          "mine",  "401 unauthenticated"},
    {"forged",     "overview",          "other", "401 unauthenticated"},
};
// clang-format on

const char* const principals[] = {"enumerator", "supervisor", "admin",
                                  "disabled",   "anonymous",  "forged"};
const char* const operations[] = {"sync.pull",
                                  "sync.push",
                                  "login",
                                  "logout",
                                  "me",
                                  "areas.list",
                                  "areas.create",
                                  "areas.import",
                                  "users.list",
                                  "users.create",
                                  "users.update",
                                  "users.password",
                                  "records.list",
                                  "records.get",
                                  "records.put",
                                  "conflicts.list",
                                  "conflicts.get",
                                  "conflicts.resolve",
                                  "devices",
                                  "export.csv",
                                  "export.jsonl",
                                  "schema.get",
                                  "schema.put",
                                  "overview"};
// Operations whose target depends on the scope column (the rest take "-").
bool scoped(const std::string& op) {
    return op != "login" && op != "logout" && op != "me" && op.rfind("areas.", 0) != 0 &&
           op != "users.list" && op != "users.create" && op != "users.update" &&
           op.rfind("schema.", 0) != 0;
}

// The user a principal acts as, and its password.
std::string user_of(const std::string& who) {
    if (who == "enumerator") return "enum-a";
    if (who == "supervisor") return "sup-ejin";
    if (who == "admin") return "admin";
    if (who == "disabled") return "enum-off";
    return "enum-a";  // anonymous and forged name no real session; enum-a is a plausible target
}
bool signed_in(const std::string& who) {
    return who == "enumerator" || who == "supervisor" || who == "admin";
}

// The bearer token a principal presents (fresh for every row: logout and password changes
// revoke tokens).
std::string token_of(Fixture& f, const std::string& who) {
    if (signed_in(who)) return f.token_for(user_of(who));
    if (who == "disabled") return f.off_token;
    if (who == "forged") return new_token();  // well-formed, never issued
    return "";
}

// Runs one sync row; the outcome in the table's words.
std::string run_sync(Fixture& f, const Row& row, std::uint32_t n) {
    const std::string who = row.who, op = row.op;
    const bool mine = std::string(row.scope) == "mine";
    Tablet& t = f.tablet(user_of(who), 1000 + n);
    if (who == "anonymous") {
        // No hello: the request itself is the first message.
        if (op == "sync.pull")
            t.send(p::Pull{0, 100});
        else
            t.send(
                p::Push{1, {p::PushItem{1, household(t, 5000 + n, mine ? village_a : village_h)}}});
    } else if (who == "forged") {
        t.send(t.make_hello(p::TokenAuth{new_token()}));
    } else if (who == "disabled") {
        t.send(t.make_hello(p::PasswordAuth{"enum-off", "enum-off-password"}));
    } else {
        t.hello();
        if (op == "sync.pull") {
            const p::RecordId target = mine ? f.rec_a : f.rec_h;
            bool found = false;
            for (const auto& it : t.pull_all())
                found = found || it.record.id == target;
            return found ? "sync sees" : "sync hidden";
        }
        auto r = t.push_one(household(t, 5000 + n, mine ? village_a : village_h));
        return r.ok ? "sync ok" : "sync " + r.code;
    }
    // Refused sessions: one fatal error, then the connection closes.
    p::Message m = t.next();
    auto* e = std::get_if<p::ErrorMessage>(&m);
    if (!e) return std::string("sync answered ") + std::string(p::message_type(m));
    CHECK(e->fatal);
    CHECK(t.closed);
    return "sync " + e->code;
}

// Runs one HTTP row; the outcome in the table's words.
std::string run_http(Fixture& f, const Row& row, std::uint32_t n) {
    const std::string who = row.who, op = row.op;
    const bool mine = std::string(row.scope) == "mine";
    const std::string village = mine ? village_a : village_h;
    const std::string rec = "households/" + (mine ? f.rec_a : f.rec_h).to_string();
    const std::string conflict = std::to_string(mine ? f.conflict_a : f.conflict_h);
    const std::string token = token_of(f, who);
    const std::string self = user_of(who);
    std::string marker;  // for listings: the text the target shows up as
    Reply r;
    if (op == "login") {
        std::string user = self, password = self + "-password";
        if (who == "anonymous") user = "nobody";
        if (who == "forged") password = "forged-password";
        r = f.http("POST", "/api/login",
                   R"({"user":")" + user + R"(","password":")" + password + R"("})");
    } else if (op == "logout") {
        r = f.http("POST", "/api/logout", "", token);
    } else if (op == "me") {
        r = f.http("GET", "/api/me", "", token);
    } else if (op == "areas.list") {
        r = f.http("GET", "/api/areas", "", token);
    } else if (op == "areas.create") {
        r = f.http("POST", "/api/areas",
                   R"({"code":"ordos/otog","level":"banner","name_en":"Otog"})", token);
    } else if (op == "areas.import") {
        r = f.http(
            "POST", "/api/areas/import",
            "code,parent,level,name_en,name_zh\r\nordos/dalad,ordos,banner,Dalad,达拉特旗\r\n",
            token, "text/csv");
    } else if (op == "users.list") {
        r = f.http("GET", "/api/users", "", token);
    } else if (op == "users.create") {
        r = f.http("POST", "/api/users",
                   R"({"name":"new-user-)" + std::to_string(n) +
                       R"(","role":"enumerator","areas":[")" + village_a +
                       R"("],"password":"a long passphrase"})",
                   token);
    } else if (op == "users.update") {
        r = f.http("PUT", "/api/users/enum-h", R"({"display_name":"Hanggin enumerator"})", token);
    } else if (op == "users.password") {
        // The password is set to what it was, so later rows can still log in.
        if (mine)
            r = f.http("POST", "/api/users/" + self + "/password",
                       R"({"old_password":")" + self + R"(-password","password":")" + self +
                           R"(-password"})",
                       token);
        else
            r = f.http("POST", "/api/users/enum-h/password", R"({"password":"enum-h-password"})",
                       token);
    } else if (op == "records.list") {
        marker = (mine ? f.rec_a : f.rec_h).to_string();
        r = f.http("GET", "/api/records?limit=500&area=" + village, "", token);
    } else if (op == "records.get") {
        r = f.http("GET", "/api/records/" + rec, "", token);
    } else if (op == "records.put") {
        r = f.http("PUT", "/api/records/" + rec,
                   R"({"fields":{"notes":"checked, row )" + std::to_string(n) + R"("}})", token);
    } else if (op == "conflicts.list") {
        marker = (mine ? f.rec_a : f.rec_h).to_string();
        r = f.http("GET", "/api/conflicts?area=" + village, "", token);
    } else if (op == "conflicts.get") {
        r = f.http("GET", "/api/conflicts/" + conflict, "", token);
    } else if (op == "conflicts.resolve") {
        r = f.http("POST", "/api/conflicts/" + conflict + "/resolve", R"({"choice":0})", token);
    } else if (op == "devices") {
        marker = mine ? f.dev_a : f.dev_h;
        r = f.http("GET", "/api/devices", "", token);
    } else if (op == "export.csv" || op == "export.jsonl") {
        marker = (mine ? f.rec_a : f.rec_h).to_string();
        r = f.http("GET",
                   "/api/export?collection=households&format=" + op.substr(7) + "&area=" + village,
                   "", token);
        if (r.status == 200) {
            REQUIRE_MESSAGE(r.stream, "an export must stream");
            r.raw = drain(r.stream);
        }
    } else if (op == "schema.get") {
        r = f.http("GET", "/api/schema", "", token);
    } else if (op == "schema.put") {
        r = f.http("PUT", "/api/schema", f.schema_json, token);
    } else if (op == "overview") {
        marker = "\"area\":\"" + village + "\"";
        r = f.http("GET", "/api/overview?area=" + village, "", token);
    } else {
        FAIL("no such operation in the runner: " << op);
    }
    std::string out = std::to_string(r.status);
    if (r.status < 300 && !marker.empty())
        out += r.raw.find(marker) != std::string::npos ? " sees" : " hidden";
    else if (!r.code().empty())
        out += " " + r.code();
    if (r.status == 401) {  // every 401 tells the client how to authenticate
        bool www = false;
        for (const auto& [k, v] : r.headers)
            www = www || k == "WWW-Authenticate";
        CHECK_MESSAGE(www, "401 without WWW-Authenticate");
    }
    return out;
}

}  // namespace

TEST_CASE("Authorization matrix: the table covers every principal, operation and scope once") {
    std::set<std::string> seen;
    for (const Row& row : matrix) {
        INFO("row " << row.who << " × " << row.op << " × " << row.scope);
        CHECK(seen.insert(std::string(row.who) + "|" + row.op + "|" + row.scope).second);
        CHECK(std::string(row.scope) == (scoped(row.op) ? std::string(row.scope) : "-"));
        if (scoped(row.op)) CHECK(std::string(row.scope) != "-");
    }
    std::size_t expected = 0;
    for (const char* who : principals)
        for (const char* op : operations) {
            for (const char* sc : {"mine", "other", "-"}) {
                const bool wanted = scoped(op) ? std::string(sc) != "-" : std::string(sc) == "-";
                if (!wanted) continue;
                ++expected;
                CHECK_MESSAGE(seen.count(std::string(who) + "|" + op + "|" + sc),
                              "missing row " << who << " × " << op << " × " << sc);
            }
        }
    CHECK(seen.size() == expected);
    CHECK(std::size(matrix) == 6u * 37u);
}

TEST_CASE("Authorization matrix: every row gets the answer the table says") {
    // One fixture for the rows that leave the targets as they were; conflict resolution closes
    // its conflict, so each of those rows gets a fresh fixture.
    Fixture shared;
    std::uint32_t n = 0;
    for (const Row& row : matrix) {
        ++n;
        const std::string op = row.op;
        std::unique_ptr<Fixture> own;
        if (op == "conflicts.resolve") own = std::make_unique<Fixture>();
        Fixture& f = own ? *own : shared;
        const std::string got =
            op.rfind("sync.", 0) == 0 ? run_sync(f, row, n) : run_http(f, row, n);
        CHECK_MESSAGE(got == row.expect, "row " << row.who << " × " << row.op << " × " << row.scope
                                                << ": expected \"" << row.expect << "\", got \""
                                                << got << "\"");
    }
}
