// The HTTP JSON API, sans I/O. Contract: http_api.hpp; every endpoint: docs/api.md.
//
// Request life cycle:
//   1. handle() (any thread): body limit (413), target parsing, route lookup (404/405), and for
//      JSON routes the body's syntax (400 with the parser's position). Nothing here touches the
//      store; an error found here is still delivered through a (no-op) worker job, so `done`
//      always runs where the worker delivers its replies (its sync thread: store_worker.hpp).
//   2. A job on the StoreWorker: authenticate the bearer token (401), check the role (403), run
//      the handler. A handler that writes runs inside its own savepoint: it makes every check
//      first, and if it fails anyway (an ApiError or a store error) the savepoint is rolled back,
//      so a failed request writes nothing even though it shares the group transaction.
//   3. Done (after the group's commit and its sync): the response goes to `done`. If the commit
//      or the sync failed, every request of the group gets 500 instead: nothing un-durable is
//      acknowledged, and a read may have seen the group's own writes.
//
// Expensive work (PBKDF2 for logins and passwords) is not done inside a job: a handler that
// needs it returns NeedWork; the work runs through ApiOptions::offload, and the job is then
// posted again with the result, re-running every check (the state may have changed meanwhile).
//
// Handlers report failures by throwing api::ApiError (api_router.hpp). This is the one place in
// fieldsync that uses exceptions for expected failures: request validation is a long series of
// one-line checks, and the exceptions never leave this file (the dispatcher catches them and
// turns them into the error response); the public API stays exception-free.
//
// Scope: an enumerator or supervisor sees the areas assigned to them (and everything below);
// an administrator sees every root of the area tree, as in the sync service. A record or
// conflict outside the caller's scope is reported as 404, exactly like one that does not exist.
#include "fieldsync/server/http_api.hpp"

#include <boost/json.hpp>

#include <algorithm>
#include <array>
#include <charconv>
#include <map>
#include <mutex>
#include <set>
#include <tuple>
#include <unordered_set>
#include <variant>

#include "api_router.hpp"
#include "csv.hpp"
#include "fieldsync/protocol/json.hpp"
#include "fieldsync/protocol/record.hpp"
#include "fieldsync/protocol/schema.hpp"
#include "fieldsync/server/auth.hpp"
#include "record_writes.hpp"

namespace fieldsync::server {

namespace p = fieldsync::protocol;
namespace json = boost::json;
using api::ApiError;

namespace {

// --- Limits -----------------------------------------------------------------------------------

constexpr std::size_t max_list_limit = 500;        // records, conflicts per page
constexpr std::size_t records_scan_budget = 5000;  // rows examined per filtered listing
constexpr std::size_t export_page = 500;           // records per export chunk
constexpr std::size_t max_conflicts_examined = 20000;
constexpr std::size_t max_visits_scanned = 20000;
constexpr std::size_t recent_visits = 10;
constexpr std::size_t history_entries = 50;
constexpr std::size_t min_password_chars = 10;
constexpr std::size_t max_password_bytes = 1024;
constexpr std::size_t max_note_chars = 2000;
constexpr int max_work_reruns = 3;
constexpr int overview_days = 60;
constexpr std::int64_t day_ms = 24ll * 3600 * 1000;

// --- Small helpers ----------------------------------------------------------------------------

std::string iso(std::int64_t ms) {
    return p::iso8601_utc(static_cast<std::uint64_t>(std::max<std::int64_t>(ms, 0)));
}

HttpResponse json_reply(json::value v, unsigned status = 200) {
    HttpResponse r;
    r.status = status;
    r.body = p::json_text(v);
    return r;
}

HttpResponse error_reply(const ApiError& e) {
    HttpResponse r;
    r.status = e.status;
    r.body = api::error_body(e);
    r.headers = e.headers;
    return r;
}

template <class T>
T checked(Result<T> r, std::string_view op) {
    if (!r)
        throw api::internal_error("the server's store failed (" + std::string(op) +
                                  "): " + r.error().message);
    return std::move(r).value();
}

void checked(const Status& st, std::string_view op) {
    if (!st)
        throw api::internal_error("the server's store failed (" + std::string(op) +
                                  "): " + st.error().message);
}

json::value parse_stored_json(const std::string& text) {
    if (text.empty()) return nullptr;
    json::error_code ec;
    json::value v = json::parse(text, ec);
    if (ec) return json::value(text);  // keep what is there rather than fail the request
    return v;
}

std::string lower_ascii(std::string s) {
    for (char& c : s)
        if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    return s;
}

std::string join(const std::vector<std::string>& parts, std::string_view sep) {
    std::string out;
    for (std::size_t i = 0; i < parts.size(); ++i) {
        if (i) out += sep;
        out += parts[i];
    }
    return out;
}

json::array string_array(const std::vector<std::string>& v) {
    json::array a;
    for (const auto& s : v)
        a.emplace_back(s);
    return a;
}

json::object labels_json(const p::Labels& l) {
    json::object o;
    for (const auto& [k, v] : l)
        o[k] = v;
    return o;
}

// Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
std::string civil_date(std::int64_t days) {
    days += 719468;
    const std::int64_t era = (days >= 0 ? days : days - 146096) / 146097;
    const auto doe = static_cast<unsigned>(days - era * 146097);
    const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    std::int64_t y = static_cast<std::int64_t>(yoe) + era * 400;
    const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    const unsigned mp = (5 * doy + 2) / 153;
    const unsigned d = doy - (153 * mp + 2) / 5 + 1;
    const unsigned m = mp < 10 ? mp + 3 : mp - 9;
    if (m <= 2) ++y;
    char buf[32];
    std::snprintf(buf, sizeof buf, "%04lld-%02u-%02u", static_cast<long long>(y), m, d);
    return buf;
}

// "39.6087000" from 396087000 (exact: no floating point).
std::string degrees_text(std::int32_t e7) {
    const std::int64_t v = e7;
    const std::int64_t mag = v < 0 ? -v : v;
    char frac[16];
    std::snprintf(frac, sizeof frac, "%07lld", static_cast<long long>(mag % 10000000));
    return (v < 0 ? "-" : "") + std::to_string(mag / 10000000) + "." + frac;
}

// Plain text of a value, for filters and CSV cells (text unchanged, no quoting).
std::string value_text(const p::Value& v) {
    switch (v.index()) {
        case 1:
            return std::get<bool>(v) ? "true" : "false";
        case 2:
            return std::to_string(std::get<std::int64_t>(v));
        case 3:
            return std::get<std::string>(v);
        case 4: {
            const auto& g = std::get<p::GeoPoint>(v);
            return degrees_text(g.lat_e7) + " " + degrees_text(g.lon_e7);
        }
        default:
            return "";
    }
}

json::value value_json(const p::Value& v) {
    return p::value_to_json_value(v);
}

// A JSON value converted for one field (typed by the field definition) and checked as a write.
p::Value field_value(const p::Schema& schema, const p::CollectionDef& coll, const p::FieldDef& def,
                     const json::value& jv) {
    auto v = p::value_from_json(json::serialize(jv), def);
    if (!v) {
        ApiError e = api::validation_error(v.error().message);
        e.details["field"] = def.name;
        throw e;
    }
    if (auto st = schema.validate_value(coll.name, def.name, *v); !st) {
        ApiError e = api::validation_error(st.error().message);
        e.details["field"] = def.name;
        throw e;
    }
    return std::move(*v);
}

p::RecordState decode_row(const StoredRecord& row) {
    auto s = p::decode_record(row.state);
    if (!s)
        throw api::internal_error("the stored state of " + row.collection + "/" +
                                  row.id.to_string() + " is corrupt: " + s.error().message);
    return std::move(*s);
}

json::object record_json(const p::RecordState& s, const StoredRecord& row) {
    json::object o = json::parse(p::record_to_json(s)).as_object();
    o["seq"] = row.seq;
    o["area"] = row.area;
    o["updated_at"] = iso(row.updated_at_ms);
    return o;
}

json::object user_json(const User& u, bool full) {
    json::object o{{"name", u.name},
                   {"display_name", u.display_name},
                   {"role", to_string(u.role)},
                   {"areas", string_array(u.areas)}};
    if (full) {
        o["disabled"] = u.disabled;
        o["created_at"] = iso(u.created_at_ms);
    }
    return o;
}

json::object area_json(const Area& a) {
    return json::object{{"code", a.code},
                        {"parent", a.parent},
                        {"level", a.level},
                        {"name_en", a.name_en},
                        {"name_zh", a.name_zh}};
}

json::object conflict_json(const Conflict& c) {
    json::object o{{"id", c.id},
                   {"collection", c.collection},
                   {"record", c.record.to_string()},
                   {"field", c.field},
                   {"area", c.area},
                   {"status", c.open ? "open" : "resolved"},
                   {"opened_at", iso(c.opened_at_ms)},
                   {"values", parse_stored_json(c.values_json)}};
    if (!c.open) {
        o["resolved_by"] = c.resolved_by;
        o["resolved_at"] = iso(c.resolved_at_ms);
        o["resolution"] = parse_stored_json(c.resolution_json);
        o["note"] = c.note;
    }
    return o;
}

// The intersection of a scope with an area filter ("" = the whole scope): the narrower of each
// scope area and the filter, where one contains the other.
Scope narrowed(const Scope& scope, const std::string& area) {
    if (area.empty()) return scope;
    Scope out;
    for (const auto& a : scope.areas) {
        std::string pick;
        if (p::area_contains(area, a))
            pick = a;
        else if (p::area_contains(a, area))
            pick = area;
        else
            continue;
        if (std::find(out.areas.begin(), out.areas.end(), pick) == out.areas.end())
            out.areas.push_back(pick);
    }
    return out;
}

std::string area_param(api::Query& q) {
    auto a = q.get("area");
    if (!a || a->empty()) return "";
    if (!p::is_valid_area_code(*a))
        throw api::bad_request("query parameter area: \"" + *a +
                               "\" is not an area code (segments of [a-z0-9_-] separated by '/')");
    return *a;
}

const p::CollectionDef& collection_param(const p::Schema& schema, const std::string& name,
                                         std::string_view what) {
    const p::CollectionDef* c = schema.find(name);
    if (!c) {
        std::vector<std::string> names;
        for (const auto& x : schema.collections())
            names.push_back(x.name);
        throw api::bad_request(std::string(what) + ": no collection named \"" + name +
                               "\" (collections: " + join(names, ", ") + ")");
    }
    return *c;
}

// The holder of a view's value(s) as text values, for search and filters: the provisional value
// and every competing one (a conflicted household matches either answer).
std::vector<p::Value> held_values(const p::FieldView& v) {
    std::vector<p::Value> out;
    if (v.rule == p::MergeRule::set) return v.elements;
    out.push_back(v.value);
    for (const auto& e : v.competing)
        out.push_back(e.value);
    return out;
}

// One field.<name>=<value> filter of GET /api/records.
struct FieldFilter {
    const p::FieldDef* def = nullptr;
    std::string text;  // "" matches a missing or null value
};

bool matches_filter(const p::RecordState& s, const FieldFilter& f) {
    auto v = s.view(f.def->name);
    if (!v) return f.text.empty();
    auto held = held_values(*v);
    if (f.text.empty())
        return held.empty() || std::any_of(held.begin(), held.end(), [](const p::Value& x) {
                   return std::holds_alternative<std::monostate>(x);
               });
    return std::any_of(held.begin(), held.end(),
                       [&](const p::Value& x) { return value_text(x) == f.text; });
}

bool matches_text(const p::RecordState& s, const p::Schema& schema, const std::string& needle) {
    if (lower_ascii(s.id.to_string()).find(needle) != std::string::npos) return true;
    const p::CollectionDef* coll = schema.find(s.collection);
    if (!coll) return false;
    for (const auto& def : coll->fields) {
        if (def.type != p::FieldType::text) continue;
        auto v = s.view(def.name);
        if (!v) continue;
        for (const auto& x : held_values(*v)) {
            if (const auto* t = std::get_if<std::string>(&x))
                if (lower_ascii(*t).find(needle) != std::string::npos) return true;
        }
    }
    return false;
}

// --- CSV export cells -------------------------------------------------------------------------

std::string csv_cell(const std::optional<p::FieldView>& v) {
    if (!v) return "";
    if (v->rule == p::MergeRule::set) {
        std::vector<std::string> parts;
        for (const auto& e : v->elements)
            parts.push_back(value_text(e));
        return csv::neutralise_formula(join(parts, ";"));
    }
    if (std::holds_alternative<std::string>(v->value))
        return csv::neutralise_formula(std::get<std::string>(v->value));
    return value_text(v->value);  // numbers, booleans, coordinates: formatted by us
}

}  // namespace

// ===============================================================================================
// Impl
// ===============================================================================================

class HttpApi::Impl : public std::enable_shared_from_this<HttpApi::Impl> {
public:
    Impl(StoreWorker& worker, ApiOptions options)
        : m_worker(worker), m_options(std::move(options)) {}

    void handle(HttpRequest request, std::function<void(HttpResponse)> done);

    StoreWorker& worker() noexcept { return m_worker; }

    enum class Access { none, signed_in, supervisor, admin };

    // Work to run off the worker thread before the handler can finish (see the file comment).
    struct NeedWork {
        std::string key;                    // what the result is valid for
        std::function<std::string()> work;  // returns the result
    };

    struct Call;
    using Outcome = std::variant<HttpResponse, NeedWork>;
    using Handler = Outcome (Impl::*)(Call&);

    struct Route {
        const char* method;
        const char* pattern;
        Access access;
        bool json_body;
        bool writes;
        Handler handler;
    };

    struct Call {
        HttpRequest request;
        api::Target target;
        std::vector<std::string> params;  // {placeholders} of the route, in order
        json::value body;                 // parsed JSON body (json_body routes)
        const Route* route = nullptr;
        // Set by the job:
        Store* store = nullptr;
        const p::Schema* schema = nullptr;
        std::int64_t now = 0;
        std::optional<User> user;
        Scope scope;
        std::string token_hash;
        std::int64_t token_expires_ms = 0;
        bool wrote = false;
        bool ran = false;
        std::optional<Outcome> outcome;
        std::function<void()> after_commit;  // runs after a successful commit, before `done`
        // Offloaded work:
        std::optional<std::string> work_result;
        std::string work_key;
        int reruns = 0;
    };

    /// Re-checks a bearer token's hash for a long-running response (exports): the user's current
    /// scope, when the token is still valid, the account enabled and the role at least `min`.
    std::optional<Scope> revalidate(Store& store, const std::string& token_hash, Role min);

private:
    static const std::vector<Route>& routes();

    void post(std::shared_ptr<Call> call, std::function<void(HttpResponse)> done);
    void deliver(HttpResponse r, std::function<void(HttpResponse)> done);
    bool execute(Call& call, Store& store, const p::Schema& schema);
    void finish(const std::shared_ptr<Call>& call, std::function<void(HttpResponse)> done,
                const Status& committed);
    void authenticate(Call& call);
    Scope scope_of(Store& store, const User& u);
    const std::string& dummy_hash();

    // Handlers (docs/api.md).
    Outcome login(Call& c);
    Outcome logout(Call& c);
    Outcome me(Call& c);
    Outcome list_areas(Call& c);
    Outcome put_area(Call& c);
    Outcome import_areas(Call& c);
    Outcome list_users(Call& c);
    Outcome create_user(Call& c);
    Outcome update_user(Call& c);
    Outcome set_password(Call& c);
    Outcome list_records(Call& c);
    Outcome get_record(Call& c);
    Outcome put_record(Call& c);
    Outcome list_conflicts(Call& c);
    Outcome get_conflict(Call& c);
    Outcome resolve_conflict(Call& c);
    Outcome list_devices(Call& c);
    Outcome export_records(Call& c);
    Outcome get_schema(Call& c);
    Outcome put_schema(Call& c);
    Outcome overview(Call& c);

    // Shared pieces.
    std::pair<StoredRecord, p::RecordState> record_in_scope(Call& c, const std::string& collection,
                                                            const std::string& id_text);
    std::vector<std::string> check_areas_exist(Call& c, const std::vector<std::string>& areas,
                                               const std::string& where);
    RecordChangeResult store_change(Call& c, const p::RecordState* before,
                                    const std::string& before_area, const p::RecordState& after,
                                    std::string note, std::string resolution_json);
    void check_new_password(const std::string& pw, const std::string& where);

    StoreWorker& m_worker;
    ApiOptions m_options;
    std::once_flag m_dummy_once;
    std::string m_dummy_hash;
};

const std::vector<HttpApi::Impl::Route>& HttpApi::Impl::routes() {
    using A = Access;
    static const std::vector<Route> table = {
        {"POST", "/api/login", A::none, true, true, &Impl::login},
        {"POST", "/api/logout", A::signed_in, false, true, &Impl::logout},
        {"GET", "/api/me", A::signed_in, false, false, &Impl::me},
        {"GET", "/api/areas", A::signed_in, false, false, &Impl::list_areas},
        {"POST", "/api/areas", A::admin, true, true, &Impl::put_area},
        {"POST", "/api/areas/import", A::admin, false, true, &Impl::import_areas},
        {"GET", "/api/users", A::admin, false, false, &Impl::list_users},
        {"POST", "/api/users", A::admin, true, true, &Impl::create_user},
        {"PUT", "/api/users/{name}", A::admin, true, true, &Impl::update_user},
        {"POST", "/api/users/{name}/password", A::signed_in, true, true, &Impl::set_password},
        {"GET", "/api/records", A::signed_in, false, false, &Impl::list_records},
        {"GET", "/api/records/{collection}/{id}", A::signed_in, false, false, &Impl::get_record},
        {"PUT", "/api/records/{collection}/{id}", A::supervisor, true, true, &Impl::put_record},
        {"GET", "/api/conflicts", A::supervisor, false, false, &Impl::list_conflicts},
        {"GET", "/api/conflicts/{id}", A::supervisor, false, false, &Impl::get_conflict},
        {"POST", "/api/conflicts/{id}/resolve", A::supervisor, true, true, &Impl::resolve_conflict},
        {"GET", "/api/devices", A::supervisor, false, false, &Impl::list_devices},
        {"GET", "/api/export", A::supervisor, false, false, &Impl::export_records},
        {"GET", "/api/schema", A::signed_in, false, false, &Impl::get_schema},
        {"PUT", "/api/schema", A::admin, false, true, &Impl::put_schema},
        {"GET", "/api/overview", A::supervisor, false, false, &Impl::overview},
    };
    return table;
}

// --- Dispatch ---------------------------------------------------------------------------------

void HttpApi::Impl::handle(HttpRequest request, std::function<void(HttpResponse)> done) {
    auto call = std::make_shared<Call>();
    call->request = std::move(request);
    try {
        const HttpRequest& req = call->request;
        if (req.body.size() > m_options.max_body_bytes) {
            ApiError e;
            e.status = 413;
            e.code = "payload_too_large";
            e.message = "body: " + std::to_string(req.body.size()) + " bytes exceed the limit of " +
                        std::to_string(m_options.max_body_bytes) + " bytes";
            throw e;
        }
        call->target = api::parse_target(req.target);
        const auto& segs = call->target.segments;
        if (segs.empty() || segs[0] != "api")
            throw api::not_found("no API route " + call->target.path +
                                 " (the API lives under /api/)");
        std::vector<std::string> allowed;
        for (const auto& r : routes()) {
            std::vector<std::string> params;
            if (!api::match_route(r.pattern, segs, params)) continue;
            if (req.method == r.method) {
                call->route = &r;
                call->params = std::move(params);
                break;
            }
            allowed.emplace_back(r.method);
        }
        if (!call->route) {
            if (allowed.empty())
                throw api::not_found("no API route " + req.method + " " + call->target.path +
                                     " (docs/api.md lists them)");
            ApiError e;
            e.status = 405;
            e.code = "method_not_allowed";
            e.message = call->target.path + " does not take " + req.method + "; it takes " +
                        join(allowed, ", ");
            e.headers.emplace_back("Allow", join(allowed, ", "));
            throw e;
        }
        if (call->route->json_body) call->body = api::parse_json_body(req.body);
    } catch (const ApiError& e) {
        deliver(error_reply(e), std::move(done));
        return;
    } catch (const std::exception& e) {
        deliver(error_reply(api::internal_error(std::string("internal error: ") + e.what())),
                std::move(done));
        return;
    }
    post(std::move(call), std::move(done));
}

void HttpApi::Impl::deliver(HttpResponse r, std::function<void(HttpResponse)> done) {
    auto response = std::make_shared<HttpResponse>(std::move(r));
    m_worker.post(
        [](Store&, const p::Schema&) { return false; },
        [response, done = std::move(done)](const Status&) { done(std::move(*response)); });
}

void HttpApi::Impl::post(std::shared_ptr<Call> call, std::function<void(HttpResponse)> done) {
    auto self = shared_from_this();
    m_worker.post(
        [self, call](Store& store, const p::Schema& schema) {
            return self->execute(*call, store, schema);
        },
        [self, call, done = std::move(done)](const Status& committed) mutable {
            self->finish(call, std::move(done), committed);
        });
}

bool HttpApi::Impl::execute(Call& call, Store& store, const p::Schema& schema) {
    call.store = &store;
    call.schema = &schema;
    call.now = static_cast<std::int64_t>(m_worker.clock().physical_now());
    call.wrote = false;
    call.ran = true;
    call.outcome.reset();
    call.after_commit = nullptr;
    const bool writes = call.route->writes;
    if (writes) {
        if (auto st = store.savepoint(); !st) {
            call.outcome = error_reply(api::internal_error(
                "the server's store failed (savepoint): " + st.error().message));
            return false;
        }
    }
    try {
        if (call.route->access != Access::none) {
            authenticate(call);
            const Role need = call.route->access == Access::admin        ? Role::admin
                              : call.route->access == Access::supervisor ? Role::supervisor
                                                                         : Role::enumerator;
            if (call.user->role < need)
                throw api::forbidden(std::string(call.request.method) + " " + call.route->pattern +
                                     " needs the " + to_string(need) + " role" +
                                     (need == Role::supervisor ? " (or admin)" : "") +
                                     "; you are signed in as " + to_string(call.user->role));
        }
        call.outcome = (this->*(call.route->handler))(call);
    } catch (const ApiError& e) {
        call.outcome = error_reply(e);
        call.wrote = false;
        call.after_commit = nullptr;
    } catch (const std::exception& e) {
        call.outcome = error_reply(api::internal_error(std::string("internal error: ") + e.what()));
        call.wrote = false;
        call.after_commit = nullptr;
    }
    if (writes) {
        const auto* resp = std::get_if<HttpResponse>(&*call.outcome);
        if (call.wrote && resp && resp->status < 400) {
            if (auto st = store.release_savepoint(); !st) {
                store.rollback_savepoint();
                call.outcome = error_reply(api::internal_error(
                    "the server's store failed (release savepoint): " + st.error().message));
                call.wrote = false;
                call.after_commit = nullptr;
            }
        } else {
            store.rollback_savepoint();
            call.wrote = false;
        }
    }
    return call.wrote;
}

void HttpApi::Impl::finish(const std::shared_ptr<Call>& call,
                           std::function<void(HttpResponse)> done, const Status& committed) {
    if (!committed) {
        // Not even a read is answered: it may have seen the group's own writes, rolled back or
        // not durable. The worker's message says what happened to them.
        done(error_reply(
            api::internal_error("the server's store failed: " + committed.error().message)));
        return;
    }
    if (!call->outcome) {
        done(error_reply(api::internal_error("the request was not run")));
        return;
    }
    if (auto* need = std::get_if<NeedWork>(&*call->outcome)) {
        if (++call->reruns > max_work_reruns) {
            ApiError e;
            e.status = 503;
            e.code = "busy";
            e.message = "the account changed while the request was being processed; retry";
            done(error_reply(e));
            return;
        }
        auto self = shared_from_this();
        NeedWork work = std::move(*need);
        call->outcome.reset();
        auto run = [self, call, work = std::move(work), done = std::move(done)]() mutable {
            try {
                call->work_result = work.work();
            } catch (const std::exception& e) {
                // Failure of the random source or of OpenSSL: answer through the worker.
                self->deliver(error_reply(api::internal_error(
                                  std::string("password hashing failed: ") + e.what())),
                              std::move(done));
                return;
            }
            call->work_key = std::move(work.key);
            self->post(call, std::move(done));
        };
        if (m_options.offload)
            m_options.offload(std::move(run));
        else
            run();
        return;
    }
    if (call->after_commit) call->after_commit();
    done(std::get<HttpResponse>(std::move(*call->outcome)));
}

Scope HttpApi::Impl::scope_of(Store& store, const User& u) {
    Scope scope;
    if (u.role == Role::admin) {
        for (const auto& a : checked(store.list_areas(), "list_areas"))
            if (a.parent.empty()) scope.areas.push_back(a.code);
    } else {
        scope.areas = u.areas;
    }
    return scope;
}

void HttpApi::Impl::authenticate(Call& call) {
    std::string_view h = call.request.authorization;
    while (!h.empty() && h.front() == ' ')
        h.remove_prefix(1);
    if (h.empty())
        throw api::unauthenticated(
            "missing Authorization header: send \"Authorization: Bearer <token>\" with a token "
            "from POST /api/login");
    constexpr std::string_view scheme = "bearer ";
    if (h.size() <= scheme.size() || lower_ascii(std::string(h.substr(0, scheme.size()))) != scheme)
        throw api::unauthenticated(
            "the Authorization header must be \"Bearer <token>\" (a token from POST /api/login)");
    std::string_view token = h.substr(scheme.size());
    while (!token.empty() && token.front() == ' ')
        token.remove_prefix(1);
    while (!token.empty() && token.back() == ' ')
        token.remove_suffix(1);
    if (token.empty() || token.size() > 512)
        throw api::unauthenticated("the bearer token is empty or too long; log in again");
    Store& store = *call.store;
    call.token_hash = token_hash(token);
    auto t = checked(store.token(call.token_hash), "token");
    if (!t)
        throw api::unauthenticated(
            "the token is not valid (unknown to this server); log in again "
            "with POST /api/login");
    if (t->revoked)
        throw api::unauthenticated(
            "the token was revoked (logged out, password changed or "
            "account disabled); log in again");
    if (t->expires_at_ms <= call.now)
        throw api::unauthenticated("the token expired at " + iso(t->expires_at_ms) +
                                   "; log in again");
    auto u = checked(store.user_by_id(t->user_id), "user_by_id");
    if (!u) throw api::unauthenticated("the token's user no longer exists");
    if (u->disabled)
        throw api::unauthenticated("the account " + u->name + " is disabled; ask an administrator");
    call.token_expires_ms = t->expires_at_ms;
    call.scope = scope_of(store, *u);
    call.user = std::move(*u);
}

std::optional<Scope> HttpApi::Impl::revalidate(Store& store, const std::string& hash, Role min) {
    const auto now = static_cast<std::int64_t>(m_worker.clock().physical_now());
    auto t = store.token(hash);
    if (!t || !*t || (*t)->revoked || (*t)->expires_at_ms <= now) return std::nullopt;
    auto u = store.user_by_id((*t)->user_id);
    if (!u || !*u || (*u)->disabled || (*u)->role < min) return std::nullopt;
    try {
        return scope_of(store, **u);
    } catch (const ApiError&) {
        return std::nullopt;
    }
}

const std::string& HttpApi::Impl::dummy_hash() {
    std::call_once(m_dummy_once, [this] {
        m_dummy_hash = hash_password("fieldsync-no-such-user", m_options.password_iterations);
    });
    return m_dummy_hash;
}

// ===============================================================================================
// Sessions
// ===============================================================================================

HttpApi::Impl::Outcome HttpApi::Impl::login(Call& c) {
    api::ObjectReader body(c.body, "body");
    const std::string name = body.req_string("user");
    const std::string password = body.req_string("password");
    body.check_unknown();
    if (name.empty()) throw api::bad_request("body.user: must not be empty");
    if (password.size() > max_password_bytes)
        throw api::bad_request("body.password: longer than " + std::to_string(max_password_bytes) +
                               " bytes");
    LoginThrottle& throttle = m_worker.throttle();
    const std::string user_key = "user:" + name;
    const std::string peer_key = "peer:" + c.request.peer;
    const std::int64_t wait = std::max(throttle.retry_after_ms(user_key, c.now),
                                       throttle.retry_after_ms(peer_key, c.now));
    if (wait > 0) {
        const std::int64_t secs = (wait + 999) / 1000;
        ApiError e;
        e.status = 429;
        e.code = "throttled";
        e.message = "too many failed logins for this user or from this address; retry in " +
                    std::to_string(secs) + " s (after " + iso(c.now + wait) + ")";
        e.details["retry_after_seconds"] = secs;
        e.headers.emplace_back("Retry-After", std::to_string(secs));
        throw e;
    }
    auto user = checked(c.store->user_by_name(name), "user_by_name");
    // The hash the password is checked against: the user's, or a dummy one for an unknown name
    // (the same cost, so timing does not tell which names exist).
    const std::string key = user ? user->password_hash : std::string();
    if (!c.work_result || c.work_key != key) {
        auto self = shared_from_this();
        return NeedWork{key, [self, password, key] {
                            const std::string& h = key.empty() ? self->dummy_hash() : key;
                            const bool ok = verify_password(password, h);
                            return std::string(ok && !key.empty() ? "ok" : "fail");
                        }};
    }
    if (*c.work_result != "ok") {
        throttle.record_failure(user_key, c.now);
        throttle.record_failure(peer_key, c.now);
        throw api::unauthenticated("wrong user name or password");
    }
    throttle.record_success(user_key);
    if (user->disabled)
        throw api::forbidden("the account " + user->name + " is disabled; ask an administrator");
    Token t;
    const std::string token = new_token();
    t.token_hash = token_hash(token);
    t.user_id = user->id;
    t.created_at_ms = c.now;
    t.expires_at_ms = c.now + m_options.token_lifetime_ms;
    checked(c.store->put_token(t), "put_token");
    c.wrote = true;
    return json_reply(json::object{
        {"token", token}, {"expires_at", iso(t.expires_at_ms)}, {"user", user_json(*user, false)}});
}

HttpApi::Impl::Outcome HttpApi::Impl::logout(Call& c) {
    checked(c.store->revoke_token(c.token_hash), "revoke_token");
    c.wrote = true;
    return json_reply(json::object{{"revoked", true}});
}

HttpApi::Impl::Outcome HttpApi::Impl::me(Call& c) {
    api::Query q(c.target.query);
    q.check_unknown();
    return json_reply(json::object{{"user", user_json(*c.user, false)},
                                   {"scope", string_array(c.scope.areas)},
                                   {"expires_at", iso(c.token_expires_ms)}});
}

// ===============================================================================================
// Areas
// ===============================================================================================

HttpApi::Impl::Outcome HttpApi::Impl::list_areas(Call& c) {
    api::Query q(c.target.query);
    q.check_unknown();
    json::array out;
    for (const auto& a : checked(c.store->list_areas(), "list_areas"))
        out.push_back(area_json(a));
    return json_reply(json::object{{"areas", std::move(out)}});
}

namespace {

// Checks one area definition; returns the problem or "". `known` holds the codes that exist
// (stored, or defined elsewhere in the same import).
std::string area_problem(Area& a, const std::set<std::string>& known) {
    if (!p::is_valid_area_code(a.code))
        return "code \"" + a.code +
               "\" is not an area code (1-16 segments of [a-z0-9_-], starting with a letter or "
               "digit, separated by '/')";
    const auto slash = a.code.rfind('/');
    const std::string implied = slash == std::string::npos ? "" : a.code.substr(0, slash);
    if (a.parent.empty() && !implied.empty()) a.parent = implied;
    if (a.parent != implied)
        return "parent \"" + a.parent + "\" does not match the code: the parent of " + a.code +
               " is " + (implied.empty() ? "none (it is a root)" : "\"" + implied + "\"");
    if (!a.parent.empty() && !known.count(a.parent))
        return "parent " + a.parent + " does not exist; add it first";
    if (a.level.empty() || a.level.size() > 32 ||
        !std::all_of(a.level.begin(), a.level.end(),
                     [](char ch) { return (ch >= 'a' && ch <= 'z') || ch == '_'; }))
        return "level \"" + a.level +
               "\" must be a lower-case word such as city, banner, town, village";
    if (a.name_en.empty() && a.name_zh.empty()) return "name_en or name_zh is required";
    if (api::utf8_length(a.name_en) > 200 || api::utf8_length(a.name_zh) > 200)
        return "names are limited to 200 characters";
    if (!p::is_valid_utf8(a.name_en) || !p::is_valid_utf8(a.name_zh))
        return "names must be UTF-8 text";
    return "";
}

}  // namespace

HttpApi::Impl::Outcome HttpApi::Impl::put_area(Call& c) {
    api::ObjectReader body(c.body, "body");
    Area a;
    a.code = body.req_string("code");
    a.parent = body.opt_string("parent").value_or("");
    a.level = body.req_string("level");
    a.name_en = body.opt_string("name_en").value_or("");
    a.name_zh = body.opt_string("name_zh").value_or("");
    body.check_unknown();
    std::set<std::string> known;
    bool exists = false;
    for (const auto& x : checked(c.store->list_areas(), "list_areas")) {
        known.insert(x.code);
        if (x.code == a.code) exists = true;
    }
    if (auto why = area_problem(a, known); !why.empty())
        throw api::validation_error("body: " + why);
    checked(c.store->put_area(a), "put_area");
    c.wrote = true;
    return json_reply(json::object{{"area", area_json(a)}, {"created", !exists}},
                      exists ? 200 : 201);
}

HttpApi::Impl::Outcome HttpApi::Impl::import_areas(Call& c) {
    std::string ct = lower_ascii(c.request.content_type);
    if (auto semi = ct.find(';'); semi != std::string::npos) ct = ct.substr(0, semi);
    while (!ct.empty() && ct.back() == ' ')
        ct.pop_back();
    if (!ct.empty() && ct != "text/csv" && ct != "text/plain" && ct != "application/csv") {
        ApiError e;
        e.status = 415;
        e.code = "unsupported_media_type";
        e.message =
            "POST /api/areas/import takes a text/csv body (code,parent,level,name_en,"
            "name_zh), not " +
            c.request.content_type;
        throw e;
    }
    if (!p::is_valid_utf8(c.request.body))
        throw api::bad_request("body: the CSV is not UTF-8 text");
    auto rows = csv::parse(c.request.body);
    if (!rows) throw api::validation_error("body: " + rows.error().message);
    if (rows->empty())
        throw api::validation_error(
            "body: empty; expected the header row "
            "code,parent,level,name_en,name_zh");
    const std::vector<std::string> header = {"code", "parent", "level", "name_en", "name_zh"};
    {
        std::vector<std::string> got;
        for (auto f : rows->front().fields) {
            while (!f.empty() && f.back() == ' ')
                f.pop_back();
            while (!f.empty() && f.front() == ' ')
                f.erase(0, 1);
            got.push_back(lower_ascii(f));
        }
        if (got != header)
            throw api::validation_error("line " + std::to_string(rows->front().line) +
                                        ": the header must be code,parent,level,name_en,name_zh");
    }
    std::set<std::string> known;
    for (const auto& x : checked(c.store->list_areas(), "list_areas"))
        known.insert(x.code);
    const std::set<std::string> stored = known;
    std::map<std::string, std::size_t> seen;  // code -> line
    std::vector<std::pair<std::size_t, Area>> areas;
    for (std::size_t i = 1; i < rows->size(); ++i) {
        const auto& row = (*rows)[i];
        if (row.fields.size() != header.size())
            throw api::validation_error("line " + std::to_string(row.line) + ": " +
                                        std::to_string(row.fields.size()) +
                                        " fields; expected 5 (code,parent,level,name_en,name_zh)");
        Area a{row.fields[0], row.fields[1], row.fields[2], row.fields[3], row.fields[4]};
        if (auto it = seen.find(a.code); it != seen.end())
            throw api::validation_error("line " + std::to_string(row.line) + ": area " + a.code +
                                        " is already defined on line " +
                                        std::to_string(it->second));
        seen[a.code] = row.line;
        known.insert(a.code);  // parents may come later in the file
        areas.emplace_back(row.line, std::move(a));
    }
    std::vector<std::string> problems;
    for (auto& [line, a] : areas) {
        if (auto why = area_problem(a, known); !why.empty())
            problems.push_back("line " + std::to_string(line) + ": " + why);
    }
    if (!problems.empty()) {
        ApiError e = api::validation_error(problems.front() +
                                           (problems.size() > 1
                                                ? " (and " + std::to_string(problems.size() - 1) +
                                                      " more problems; nothing was imported)"
                                                : " (nothing was imported)"));
        e.details["problems"] = string_array(problems);
        throw e;
    }
    std::size_t created = 0;
    for (const auto& [line, a] : areas) {
        checked(c.store->put_area(a), "put_area");
        if (!stored.count(a.code)) ++created;
    }
    c.wrote = !areas.empty();
    return json_reply(json::object{
        {"imported", areas.size()}, {"created", created}, {"updated", areas.size() - created}});
}

// ===============================================================================================
// Users
// ===============================================================================================

HttpApi::Impl::Outcome HttpApi::Impl::list_users(Call& c) {
    api::Query q(c.target.query);
    q.check_unknown();
    json::array out;
    for (const auto& u : checked(c.store->list_users(), "list_users"))
        out.push_back(user_json(u, true));
    return json_reply(json::object{{"users", std::move(out)}});
}

std::vector<std::string> HttpApi::Impl::check_areas_exist(Call& c,
                                                          const std::vector<std::string>& areas,
                                                          const std::string& where) {
    std::set<std::string> known;
    for (const auto& a : checked(c.store->list_areas(), "list_areas"))
        known.insert(a.code);
    std::vector<std::string> out;
    for (std::size_t i = 0; i < areas.size(); ++i) {
        const std::string at = where + "[" + std::to_string(i) + "]";
        if (!p::is_valid_area_code(areas[i]))
            throw api::validation_error(at + ": \"" + areas[i] + "\" is not an area code");
        if (!known.count(areas[i]))
            throw api::validation_error(at + ": no area " + areas[i] +
                                        "; add it with POST /api/areas first");
        if (std::find(out.begin(), out.end(), areas[i]) == out.end()) out.push_back(areas[i]);
    }
    std::sort(out.begin(), out.end());
    return out;
}

void HttpApi::Impl::check_new_password(const std::string& pw, const std::string& where) {
    if (api::utf8_length(pw) < min_password_chars)
        throw api::validation_error(where + ": at least " + std::to_string(min_password_chars) +
                                    " characters are required");
    if (pw.size() > max_password_bytes)
        throw api::validation_error(where + ": longer than " + std::to_string(max_password_bytes) +
                                    " bytes");
}

namespace {

void check_user_name(const std::string& name) {
    const bool ok = !name.empty() && name.size() <= 64 &&
                    std::all_of(name.begin(), name.end(),
                                [](char ch) {
                                    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                                           (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' ||
                                           ch == '-' || ch == '@';
                                }) &&
                    name.front() != '.' && name.front() != '-';
    if (!ok)
        throw api::validation_error("body.name: \"" + name +
                                    "\" is not a user name (1-64 of A-Z a-z 0-9 . _ - @, not "
                                    "starting with . or -)");
}

void check_display_name(const std::string& d, const std::string& where) {
    if (d.empty() || api::utf8_length(d) > 128)
        throw api::validation_error(where + ": 1 to 128 characters");
}

Role role_value(const std::string& s, const std::string& where) {
    auto r = parse_role(s);
    if (!r)
        throw api::validation_error(where + ": \"" + s +
                                    "\" is not a role (enumerator, supervisor, admin)");
    return *r;
}

}  // namespace

HttpApi::Impl::Outcome HttpApi::Impl::create_user(Call& c) {
    api::ObjectReader body(c.body, "body");
    User u;
    u.name = body.req_string("name");
    u.display_name = body.opt_string("display_name").value_or(u.name);
    u.role = role_value(body.req_string("role"), "body.role");
    auto areas = body.opt_string_array("areas").value_or(std::vector<std::string>{});
    const std::string password = body.req_string("password");
    body.check_unknown();
    check_user_name(u.name);
    check_display_name(u.display_name, "body.display_name");
    u.areas = check_areas_exist(c, areas, "body.areas");
    check_new_password(password, "body.password");
    if (checked(c.store->user_by_name(u.name), "user_by_name"))
        throw api::conflict("duplicate", "a user named " + u.name + " already exists");
    if (!c.work_result) {
        const int iterations = m_options.password_iterations;
        return NeedWork{"", [password, iterations] { return hash_password(password, iterations); }};
    }
    u.password_hash = *c.work_result;
    u.created_at_ms = c.now;
    auto id = c.store->add_user(u);
    if (!id) {
        if (id.error().code == p::protocol_errc::invalid_value)
            throw api::conflict("duplicate", "a user named " + u.name + " already exists");
        checked(std::move(id), "add_user");
    }
    c.wrote = true;
    auto stored = checked(c.store->user_by_name(u.name), "user_by_name");
    return json_reply(json::object{{"user", user_json(stored ? *stored : u, true)}}, 201);
}

HttpApi::Impl::Outcome HttpApi::Impl::update_user(Call& c) {
    const std::string& name = c.params[0];
    api::ObjectReader body(c.body, "body");
    auto display = body.opt_string("display_name");
    auto role = body.opt_string("role");
    auto areas = body.opt_string_array("areas");
    auto disabled = body.opt_bool("disabled");
    body.check_unknown();
    auto found = checked(c.store->user_by_name(name), "user_by_name");
    if (!found) throw api::not_found("no user named " + name);
    User u = *found;
    if (display) {
        check_display_name(*display, "body.display_name");
        u.display_name = *display;
    }
    if (role) u.role = role_value(*role, "body.role");
    if (areas) u.areas = check_areas_exist(c, *areas, "body.areas");
    if (disabled) u.disabled = *disabled;
    if (u.id == c.user->id && (u.disabled || u.role != Role::admin))
        throw api::conflict("conflict",
                            "you cannot disable your own account or take away your "
                            "own admin role; ask another administrator");
    checked(c.store->update_user(u), "update_user");
    if (u.disabled && !found->disabled)
        checked(c.store->revoke_user_tokens(u.id), "revoke_user_tokens");
    m_worker.user_changed(u.name);  // open sync sessions end or re-bootstrap after the commit
    c.wrote = true;
    return json_reply(json::object{{"user", user_json(u, true)}});
}

HttpApi::Impl::Outcome HttpApi::Impl::set_password(Call& c) {
    const std::string& name = c.params[0];
    api::ObjectReader body(c.body, "body");
    const std::string password = body.req_string("password");
    auto old_password = body.opt_string("old_password");
    body.check_unknown();
    const bool self = name == c.user->name;
    if (!self && c.user->role != Role::admin)
        throw api::forbidden("only an administrator may set another user's password");
    auto found = checked(c.store->user_by_name(name), "user_by_name");
    if (!found) throw api::not_found("no user named " + name);
    check_new_password(password, "body.password");
    const int iterations = m_options.password_iterations;
    if (!self) {
        if (old_password)
            throw api::bad_request("body.old_password: only for changing your own password");
        if (!c.work_result) {
            return NeedWork{"",
                            [password, iterations] { return hash_password(password, iterations); }};
        }
    } else {
        if (!old_password)
            throw api::bad_request("body.old_password: required to change your own password");
        LoginThrottle& throttle = m_worker.throttle();
        const std::string key = "user:" + name;
        if (const auto wait = throttle.retry_after_ms(key, c.now); wait > 0) {
            ApiError e;
            e.status = 429;
            e.code = "throttled";
            const std::int64_t secs = (wait + 999) / 1000;
            e.message = "too many wrong passwords; retry in " + std::to_string(secs) + " s";
            e.headers.emplace_back("Retry-After", std::to_string(secs));
            throw e;
        }
        // One piece of work: verify the old password against the current hash, then hash the
        // new one. The result is valid only for that hash (the work key).
        if (!c.work_result || c.work_key != found->password_hash) {
            const std::string current = found->password_hash;
            const std::string old_pw = *old_password;
            return NeedWork{current, [current, old_pw, password, iterations] {
                                if (!verify_password(old_pw, current)) return std::string("fail");
                                return "ok:" + hash_password(password, iterations);
                            }};
        }
        if (c.work_result->rfind("ok:", 0) != 0) {
            throttle.record_failure(key, c.now);
            throw api::forbidden("body.old_password: wrong password");
        }
        throttle.record_success(key);
    }
    User u = *found;
    u.password_hash = self ? c.work_result->substr(3) : *c.work_result;
    checked(c.store->update_user(u), "update_user");
    checked(c.store->revoke_user_tokens(u.id), "revoke_user_tokens");
    m_worker.user_changed(u.name);  // its open sync sessions end after the commit
    c.wrote = true;
    return json_reply(
        json::object{{"user", u.name}, {"password_changed", true}, {"sessions_revoked", true}});
}

// ===============================================================================================
// Records
// ===============================================================================================

HttpApi::Impl::Outcome HttpApi::Impl::list_records(Call& c) {
    const p::Schema& schema = *c.schema;
    api::Query q(c.target.query);
    const std::string collection = q.get("collection").value_or("");
    const p::CollectionDef* coll =
        collection.empty() ? nullptr
                           : &collection_param(schema, collection, "query parameter collection");
    const std::string area = area_param(q);
    const std::string text = lower_ascii(q.get("q").value_or(""));
    std::vector<FieldFilter> filters;
    for (auto& [name, value] : q.with_prefix("field.")) {
        if (!coll)
            throw api::bad_request("query parameter field." + name +
                                   ": filtering by field needs a collection parameter");
        const p::FieldDef* def = coll->find(name);
        if (!def)
            throw api::bad_request("query parameter field." + name + ": no field named \"" + name +
                                   "\" in collection " + coll->name);
        if (def->type == p::FieldType::geo)
            throw api::bad_request("query parameter field." + name +
                                   ": geo fields cannot be filtered");
        if (!value.empty()) {
            if (def->type == p::FieldType::enumeration || def->type == p::FieldType::multi) {
                if (!def->find_value(value))
                    throw api::bad_request("query parameter field." + name + ": \"" + value +
                                           "\" is not one of the field's codes");
            } else if (def->type == p::FieldType::integer || def->type == p::FieldType::counter) {
                std::int64_t n = 0;
                auto [ptr, ec] = std::from_chars(value.data(), value.data() + value.size(), n);
                if (ec != std::errc{} || ptr != value.data() + value.size())
                    throw api::bad_request("query parameter field." + name + ": \"" + value +
                                           "\" is not an integer");
            } else if (def->type == p::FieldType::boolean && value != "true" && value != "false") {
                throw api::bad_request("query parameter field." + name + ": use true or false");
            }
        }
        filters.push_back(FieldFilter{def, value});
    }
    const bool include_deleted = q.get_bool("include_deleted", false);
    const std::uint64_t after = q.get_uint("after", 0, 0, UINT64_MAX);
    const std::size_t limit = q.get_uint("limit", 100, 1, max_list_limit);
    q.check_unknown();

    const bool filtering = !text.empty() || !filters.empty();
    RecordQuery rq;
    rq.collection = collection;
    rq.scope = narrowed(c.scope, area);
    rq.include_deleted = include_deleted;
    rq.after_seq = after;
    rq.limit = filtering ? export_page : limit + 1;
    json::array out;
    std::optional<std::uint64_t> next;
    std::size_t scanned = 0;
    if (!rq.scope.areas.empty()) {
        for (bool full = false; !full;) {
            auto rows = checked(c.store->query_records(rq), "query_records");
            const bool exhausted = rows.size() < rq.limit;
            for (std::size_t i = 0; i < rows.size(); ++i) {
                const auto& row = rows[i];
                p::RecordState state = decode_row(row);
                bool match = true;
                if (!text.empty()) match = matches_text(state, schema, text);
                for (const auto& f : filters)
                    if (match) match = matches_filter(state, f);
                if (!match) continue;
                out.push_back(record_json(state, row));
                if (out.size() == limit) {
                    if (!(exhausted && i + 1 == rows.size())) next = row.seq;
                    full = true;
                    break;
                }
            }
            if (full || exhausted) break;
            scanned += rows.size();
            rq.after_seq = rows.back().seq;
            if (scanned >= records_scan_budget) {
                next = rq.after_seq;  // more may match: the client continues from here
                break;
            }
        }
    }
    json::object body{{"records", std::move(out)}};
    body["next"] = next ? json::value(*next) : json::value(nullptr);
    return json_reply(std::move(body));
}

std::pair<StoredRecord, p::RecordState> HttpApi::Impl::record_in_scope(
    Call& c, const std::string& collection, const std::string& id_text) {
    const std::string what = collection + "/" + id_text;
    if (!c.schema->find(collection)) throw api::not_found("no collection named " + collection);
    auto id = p::Id128::parse(id_text);
    if (!id) throw api::not_found("no record " + what + " (not a record id)");
    auto row = checked(c.store->get_record(collection, *id), "get_record");
    if (!row || !c.scope.covers(row->area))
        throw api::not_found("no record " + what + " in your areas");
    p::RecordState state = decode_row(*row);
    return {std::move(*row), std::move(state)};
}

HttpApi::Impl::Outcome HttpApi::Impl::get_record(Call& c) {
    api::Query q(c.target.query);
    q.check_unknown();
    auto [row, state] = record_in_scope(c, c.params[0], c.params[1]);
    json::object out = record_json(state, row);
    json::array history;
    for (const auto& a :
         checked(c.store->audit_for(row.collection, row.id, history_entries), "audit_for")) {
        history.push_back(json::object{{"seq", a.seq},
                                       {"at", iso(a.at_ms)},
                                       {"user", a.user},
                                       {"device", a.device},
                                       {"summary", parse_stored_json(a.summary)}});
    }
    out["history"] = std::move(history);
    return json_reply(std::move(out));
}

RecordChangeResult HttpApi::Impl::store_change(Call& c, const p::RecordState* before,
                                               const std::string& before_area,
                                               const p::RecordState& after, std::string note,
                                               std::string resolution_json) {
    RecordChange change;
    change.before = before;
    change.before_area = before_area;
    change.after = &after;
    change.schema_version = c.schema->version();
    change.user = c.user->name;
    change.device = "api";
    change.note = std::move(note);
    change.resolution_json = std::move(resolution_json);
    change.at_ms = c.now;
    change.scope = &c.scope;
    auto r = write_record_change(*c.store, *c.schema, change, [this](std::string area) {
        m_worker.touch_area(std::move(area));
    });
    if (!r) {
        const auto code = static_cast<p::protocol_errc>(r.error().code.value());
        if (code == p::protocol_errc::validation_failed)
            throw api::validation_error(r.error().message);
        if (code == p::protocol_errc::forbidden) throw api::forbidden(r.error().message);
        throw api::internal_error("the server's store failed: " + r.error().message);
    }
    if (r->changed) c.wrote = true;
    return std::move(*r);
}

HttpApi::Impl::Outcome HttpApi::Impl::put_record(Call& c) {
    api::Query q(c.target.query);
    q.check_unknown();
    api::ObjectReader body(c.body, "body");
    const json::value* fields_value = body.value("fields");
    body.check_unknown();
    if (!fields_value) throw api::bad_request("body.fields: required (an object of field values)");
    api::ObjectReader fields(*fields_value, "body.fields");
    if (fields.object().empty()) throw api::bad_request("body.fields: no field to change");

    auto [row, state] = record_in_scope(c, c.params[0], c.params[1]);
    const p::Schema& schema = *c.schema;
    const p::CollectionDef& coll = *schema.find(row.collection);
    const auto conflicts = state.conflicts();
    const bool deletion_conflict =
        std::find(conflicts.begin(), conflicts.end(), p::deleted_field) != conflicts.end();
    std::optional<bool> set_deleted;
    if (const json::value* d = fields.value(p::deleted_field)) {
        if (!d->is_bool())
            throw api::bad_request("body.fields._deleted: expected true or false, got " +
                                   std::string(api::json_kind(*d)));
        set_deleted = d->get_bool();
    }
    if (deletion_conflict && !set_deleted)
        throw api::conflict("deletion_conflict",
                            "record " + row.collection + "/" + row.id.to_string() +
                                " has a delete conflict (deleted on one device, edited on "
                                "another): settle it first (\"_deleted\": true or false, or "
                                "POST /api/conflicts/{id}/resolve)");
    if (state.is_deleted() && !deletion_conflict && set_deleted.value_or(true))
        throw api::conflict("deleted",
                            "record " + row.collection + "/" + row.id.to_string() +
                                " is deleted; include \"_deleted\": false to restore it");

    p::RecordState next = state;
    p::Update update(next, m_worker.server_replica(), m_worker.clock().tick(), c.user->name);
    for (const auto& kv : fields.object()) {
        const std::string name(kv.key());
        if (name == p::deleted_field) continue;
        const json::value& jv = kv.value();
        const std::string where = "body.fields." + name;
        const p::FieldDef* def = coll.find(name);
        if (!def) {
            ApiError e = api::validation_error(where + ": no field named \"" + name +
                                               "\" in collection " + coll.name);
            e.details["field"] = name;
            throw e;
        }
        switch (def->rule) {
            case p::MergeRule::lww:
            case p::MergeRule::review: {
                p::Value v = field_value(schema, coll, *def, jv);
                if (auto st = update.set(name, def->rule, std::move(v)); !st)
                    throw api::validation_error(where + ": " + st.error().message);
                break;
            }
            case p::MergeRule::set: {
                // [..] replaces the set; {"add": [..], "remove": [..]} edits it.
                std::vector<p::Value> add, remove;
                auto elements = [&](const json::value& arr, const std::string& at) {
                    if (!arr.is_array())
                        throw api::bad_request(at + ": expected an array of codes, got " +
                                               std::string(api::json_kind(arr)));
                    std::vector<p::Value> out;
                    for (const auto& e : arr.get_array())
                        out.push_back(field_value(schema, coll, *def, e));
                    return out;
                };
                if (jv.is_array()) {
                    add = elements(jv, where);
                    if (auto v = state.view(name))
                        for (const auto& e : v->elements)
                            if (std::find(add.begin(), add.end(), e) == add.end())
                                remove.push_back(e);
                } else if (jv.is_object()) {
                    api::ObjectReader ops(jv, where);
                    if (const auto* a = ops.value("add")) add = elements(*a, where + ".add");
                    if (const auto* r = ops.value("remove"))
                        remove = elements(*r, where + ".remove");
                    ops.check_unknown();
                } else {
                    throw api::bad_request(where +
                                           ": expected an array of codes or {\"add\": [...], "
                                           "\"remove\": [...]}, got " +
                                           std::string(api::json_kind(jv)));
                }
                for (const auto& e : remove)
                    if (auto st = update.remove_element(name, e); !st)
                        throw api::validation_error(where + ": " + st.error().message);
                for (auto& e : add)
                    if (auto st = update.add_element(name, std::move(e)); !st)
                        throw api::validation_error(where + ": " + st.error().message);
                break;
            }
            case p::MergeRule::counter: {
                api::ObjectReader ops(jv, where);
                auto delta = ops.opt_int("delta");
                ops.check_unknown();
                if (!delta) throw api::bad_request(where + ".delta: required (an integer to add)");
                if (auto st = schema.validate_value(coll.name, name, p::Value{*delta}); !st)
                    throw api::validation_error(st.error().message);
                if (auto st = update.add_to_counter(name, *delta); !st)
                    throw api::validation_error(where + ": " + st.error().message);
                break;
            }
        }
    }
    if (set_deleted.value_or(false)) update.mark_deleted();
    json::object resolution;
    for (const auto& kv : fields.object())
        resolution[kv.key()] = kv.value();
    store_change(c, &state, row.area, next,
                 "settled by " + c.user->name + "'s edit through the API",
                 p::json_text(resolution));
    auto stored = checked(c.store->get_record(row.collection, row.id), "get_record");
    if (!stored) throw api::internal_error("the record vanished while it was being written");
    return json_reply(record_json(next, *stored));
}

// ===============================================================================================
// Conflicts
// ===============================================================================================

namespace {

// Every conflict matching `f` whose area lies in `scope` (one query per scope area; overlaps
// removed), oldest first.
std::vector<Conflict> conflicts_in_scope(Store& store, const Scope& scope, ConflictFilter f) {
    std::vector<Conflict> all;
    std::set<std::int64_t> ids;
    f.offset = 0;
    f.limit = max_conflicts_examined;
    for (const auto& a : scope.areas) {
        f.area_prefix = a;
        for (auto& c : checked(store.list_conflicts(f), "list_conflicts"))
            if (ids.insert(c.id).second) all.push_back(std::move(c));
    }
    std::sort(all.begin(), all.end(), [](const Conflict& x, const Conflict& y) {
        return std::tie(x.opened_at_ms, x.id) < std::tie(y.opened_at_ms, y.id);
    });
    return all;
}

}  // namespace

HttpApi::Impl::Outcome HttpApi::Impl::list_conflicts(Call& c) {
    api::Query q(c.target.query);
    ConflictFilter f;
    const std::string status = q.get("status").value_or("open");
    if (status == "open")
        f.open = true;
    else if (status == "resolved")
        f.open = false;
    else if (status != "all")
        throw api::bad_request("query parameter status: \"" + status +
                               "\" is not one of open, resolved, all");
    const std::string area = area_param(q);
    f.field = q.get("field").value_or("");
    const std::uint64_t days = q.get_uint("older_than_days", 0, 0, 36500);
    const std::size_t limit = q.get_uint("limit", 100, 1, max_list_limit);
    const std::size_t offset = q.get_uint("offset", 0, 0, max_conflicts_examined);
    q.check_unknown();
    if (days > 0) f.older_than_ms = c.now - static_cast<std::int64_t>(days) * day_ms;

    auto all = conflicts_in_scope(*c.store, narrowed(c.scope, area), f);
    std::map<std::string, std::size_t> by_village, by_field;
    for (const auto& x : all) {
        ++by_village[x.area];
        ++by_field[x.field];
    }
    json::array page;
    for (std::size_t i = offset; i < all.size() && i < offset + limit; ++i)
        page.push_back(conflict_json(all[i]));
    json::object villages, fields;
    for (const auto& [k, n] : by_village)
        villages[k] = n;
    for (const auto& [k, n] : by_field)
        fields[k] = n;
    return json_reply(json::object{{"conflicts", std::move(page)},
                                   {"total", all.size()},
                                   {"offset", offset},
                                   {"limit", limit},
                                   {"counts", json::object{{"by_village", std::move(villages)},
                                                           {"by_field", std::move(fields)}}}});
}

namespace {

std::int64_t conflict_id(const std::string& text) {
    std::int64_t id = 0;
    auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), id);
    if (ec != std::errc{} || ptr != text.data() + text.size() || id <= 0)
        throw api::not_found("no conflict " + text);
    return id;
}

}  // namespace

HttpApi::Impl::Outcome HttpApi::Impl::get_conflict(Call& c) {
    api::Query q(c.target.query);
    q.check_unknown();
    Store& store = *c.store;
    const p::Schema& schema = *c.schema;
    const std::int64_t id = conflict_id(c.params[0]);
    auto conflict = checked(store.get_conflict(id), "get_conflict");
    if (!conflict || !c.scope.covers(conflict->area))
        throw api::not_found("no conflict " + c.params[0] + " in your areas");
    json::object out = conflict_json(*conflict);
    auto row = checked(store.get_record(conflict->collection, conflict->record), "get_record");
    if (!row || !c.scope.covers(row->area)) {
        out["record"] = nullptr;
        return json_reply(json::object{{"conflict", std::move(out)}});
    }
    p::RecordState state = decode_row(*row);
    const p::CollectionDef* coll = schema.find(conflict->collection);
    if (const p::FieldDef* def = coll ? coll->find(conflict->field) : nullptr) {
        out["label"] = labels_json(def->label);
        out["merge"] = p::to_string(def->rule);
    }
    // The geo field of the record, if any: shown next to a value when that value's replica also
    // recorded the location (where the enumerator stood when answering).
    std::optional<p::Entry> gps;
    if (coll) {
        for (const auto& def : coll->fields) {
            if (def.type != p::FieldType::geo) continue;
            auto it = state.fields.find(def.name);
            if (it != state.fields.end())
                if (const auto* lww = std::get_if<p::LwwState>(&it->second)) gps = lww->entry;
            break;
        }
    }
    // For an open conflict, the values held now (what a "choice" indexes); for a resolved one,
    // those recorded when it was last open.
    auto view = state.view(conflict->field);
    if (conflict->open && view && view->conflict) {
        json::array values;
        std::map<p::ReplicaId, json::value> devices;
        for (const auto& e : view->competing) {
            json::object v{{"value", value_json(e.value)},
                           {"by", e.by},
                           {"replica", e.dot.replica.to_string()},
                           {"ts", e.ts.value},
                           {"at", p::iso8601_utc(e.ts.wall_ms())}};
            if (e.dot.replica == m_worker.server_replica()) {
                v["device"] = "api";
            } else if (auto d =
                           checked(store.device_by_replica(e.dot.replica), "device_by_replica")) {
                v["device"] = d->id;
                v["app_version"] = d->app_version;
            }
            if (gps && gps->dot.replica == e.dot.replica &&
                std::holds_alternative<p::GeoPoint>(gps->value))
                v["gps"] = value_json(gps->value);
            values.push_back(std::move(v));
        }
        out["values"] = std::move(values);
    }
    json::object record = record_json(state, *row);
    // Recent visits: records of "visits" whose reference field points at this record.
    json::array visits;
    if (const p::CollectionDef* vc = schema.find("visits")) {
        const p::FieldDef* ref = nullptr;
        const p::FieldDef* when = nullptr;
        for (const auto& def : vc->fields) {
            if (!ref && def.type == p::FieldType::reference && def.target == conflict->collection)
                ref = &def;
            if (!when && def.type == p::FieldType::datetime) when = &def;
        }
        if (ref) {
            const std::string target = row->id.to_string();
            std::vector<std::pair<std::string, json::object>> found;
            RecordQuery rq;
            rq.collection = vc->name;
            rq.scope = narrowed(c.scope, row->area);
            rq.limit = export_page;
            for (std::size_t scanned = 0;
                 scanned < max_visits_scanned && !rq.scope.areas.empty();) {
                auto rows = checked(store.query_records(rq), "query_records");
                for (const auto& r : rows) {
                    p::RecordState v = decode_row(r);
                    auto rv = v.view(ref->name);
                    if (!rv || value_text(rv->value) != target) continue;
                    std::string sort_key;
                    if (when)
                        if (auto w = v.view(when->name)) sort_key = value_text(w->value);
                    char seq[24];
                    std::snprintf(seq, sizeof seq, "%020llu",
                                  static_cast<unsigned long long>(r.seq));
                    found.emplace_back(sort_key + "|" + seq, record_json(v, r));
                }
                if (rows.size() < rq.limit) break;
                scanned += rows.size();
                rq.after_seq = rows.back().seq;
            }
            std::sort(found.begin(), found.end(),
                      [](const auto& x, const auto& y) { return x.first > y.first; });
            for (std::size_t i = 0; i < found.size() && i < recent_visits; ++i)
                visits.push_back(std::move(found[i].second));
        }
    }
    return json_reply(json::object{{"conflict", std::move(out)},
                                   {"record", std::move(record)},
                                   {"visits", std::move(visits)}});
}

HttpApi::Impl::Outcome HttpApi::Impl::resolve_conflict(Call& c) {
    api::Query q(c.target.query);
    q.check_unknown();
    api::ObjectReader body(c.body, "body");
    const json::value* value = body.value("value");
    auto choice = body.opt_int("choice");
    const std::string note = body.opt_string("note").value_or("");
    body.check_unknown();
    if ((value != nullptr) == choice.has_value())
        throw api::bad_request(
            "body: give exactly one of \"value\" (the settled value) or "
            "\"choice\" (an index into the conflict's values)");
    if (api::utf8_length(note) > max_note_chars)
        throw api::bad_request("body.note: at most " + std::to_string(max_note_chars) +
                               " characters");

    Store& store = *c.store;
    const p::Schema& schema = *c.schema;
    const std::int64_t id = conflict_id(c.params[0]);
    auto conflict = checked(store.get_conflict(id), "get_conflict");
    if (!conflict || !c.scope.covers(conflict->area))
        throw api::not_found("no conflict " + c.params[0] + " in your areas");
    if (!conflict->open)
        throw api::conflict("already_resolved",
                            "conflict " + c.params[0] + " was already resolved by " +
                                conflict->resolved_by + " at " + iso(conflict->resolved_at_ms));
    auto row = checked(store.get_record(conflict->collection, conflict->record), "get_record");
    if (!row || !c.scope.covers(row->area))
        throw api::not_found("no conflict " + c.params[0] + " in your areas");
    p::RecordState state = decode_row(*row);
    const std::string& field = conflict->field;
    auto view = state.view(field);
    if (!view || !view->conflict)
        throw api::conflict("already_resolved", "conflict " + c.params[0] +
                                                    ": the field no longer holds competing values "
                                                    "(a later write settled it)");
    const auto open = state.conflicts();
    const bool is_deletion = field == p::deleted_field;
    if (!is_deletion && std::find(open.begin(), open.end(), p::deleted_field) != open.end())
        throw api::conflict("deletion_conflict",
                            "the record also has a delete conflict; resolve that one first (any "
                            "write decides whether the record stays)");
    const p::CollectionDef* coll = schema.find(conflict->collection);
    const p::FieldDef* def = coll && !is_deletion ? coll->find(field) : nullptr;
    if (!is_deletion && !def)
        throw api::conflict("schema_mismatch", "field " + field + " is not in the current schema");

    p::Value chosen;
    if (choice) {
        if (*choice < 0 || static_cast<std::size_t>(*choice) >= view->competing.size())
            throw api::bad_request("body.choice: " + std::to_string(*choice) +
                                   " is not an index into the " +
                                   std::to_string(view->competing.size()) + " competing values");
        chosen = view->competing[static_cast<std::size_t>(*choice)].value;
        if (def) chosen = field_value(schema, *coll, *def, value_json(chosen));
    } else if (is_deletion) {
        if (!value->is_bool())
            throw api::bad_request(
                "body.value: expected true (delete) or false (keep) for the "
                "_deleted field, got " +
                std::string(api::json_kind(*value)));
        chosen = value->get_bool();
    } else {
        chosen = field_value(schema, *coll, *def, *value);
    }

    p::RecordState next = state;
    p::Update update(next, m_worker.server_replica(), m_worker.clock().tick(), c.user->name);
    if (is_deletion) {
        if (std::get<bool>(chosen)) update.mark_deleted();  // false: the update re-asserts it
    } else {
        if (auto st = update.set(field, def->rule, chosen); !st)
            throw api::validation_error("body.value: " + st.error().message);
        if (state.is_deleted()) update.mark_deleted();  // a tombstone stays one
    }
    store_change(c, &state, row->area, next, note, p::value_to_json(chosen));
    auto after = checked(store.get_conflict(id), "get_conflict");
    auto stored = checked(store.get_record(conflict->collection, conflict->record), "get_record");
    if (!after || !stored) throw api::internal_error("the conflict vanished while it was resolved");
    return json_reply(
        json::object{{"conflict", conflict_json(*after)}, {"record", record_json(next, *stored)}});
}

// ===============================================================================================
// Devices
// ===============================================================================================

HttpApi::Impl::Outcome HttpApi::Impl::list_devices(Call& c) {
    api::Query q(c.target.query);
    q.check_unknown();
    Store& store = *c.store;
    std::map<std::int64_t, User> users;
    for (auto& u : checked(store.list_users(), "list_users"))
        users.emplace(u.id, std::move(u));
    std::map<std::int64_t, std::size_t> open_by_user;
    ConflictFilter open_filter;
    open_filter.open = true;
    json::array out;
    for (const auto& d : checked(store.list_devices(), "list_devices")) {
        auto u = users.find(d.user_id);
        if (c.user->role != Role::admin) {
            if (u == users.end()) continue;
            const auto& areas = u->second.areas;
            if (!std::any_of(areas.begin(), areas.end(),
                             [&](const std::string& a) { return c.scope.covers(a); }))
                continue;
        }
        auto cached = open_by_user.find(d.user_id);
        if (cached == open_by_user.end()) {
            std::size_t n = 0;
            if (u != users.end()) {
                Scope areas;
                areas.areas = u->second.role == Role::admin ? scope_of(store, u->second).areas
                                                            : u->second.areas;
                n = conflicts_in_scope(store, areas, open_filter).size();
            }
            cached = open_by_user.emplace(d.user_id, n).first;
        }
        out.push_back(json::object{
            {"id", d.id},
            {"replica", d.replica.to_string()},
            {"user", u == users.end() ? std::string() : u->second.name},
            {"display_name", u == users.end() ? std::string() : u->second.display_name},
            {"app_version", d.app_version},
            {"last_seen", iso(d.last_seen_ms)},
            {"last_cursor", d.last_cursor},
            {"records_sent", d.records_sent},
            {"open_conflicts", cached->second}});
    }
    return json_reply(json::object{{"devices", std::move(out)},
                                   {"last_seq", checked(store.last_seq(), "last_seq")}});
}

// ===============================================================================================
// Export (streamed)
// ===============================================================================================

namespace {

// Pulls an export page by page: each next() posts one worker job that reads the next
// `export_page` records after the last sequence seen and formats them. Records are ordered by
// their latest change, so a record changed while the export runs comes round again: it is sent
// once (the state its page saw). The token is re-checked for every page: logging out or losing
// the role ends the stream.
class ExportSource final : public ChunkSource, public std::enable_shared_from_this<ExportSource> {
public:
    struct Spec {
        std::string token_hash;
        std::string collection;
        bool csv = true;
        bool bom = false;
        bool include_deleted = false;
        Scope scope;
        std::vector<p::FieldDef> columns;  // the schema's fields when the export began
    };

    ExportSource(std::shared_ptr<HttpApi::Impl> api, Spec spec)
        : m_api(std::move(api)), m_spec(std::move(spec)) {}

    void next(std::function<void(std::optional<std::string>)> done) override {
        auto self = shared_from_this();
        auto chunk = std::make_shared<std::optional<std::string>>();
        m_api->worker().post(
            [self, chunk](Store& store, const p::Schema&) {
                try {
                    *chunk = self->produce(store);
                } catch (const std::exception&) {
                    *chunk = std::nullopt;
                    self->m_finished = true;
                }
                return false;
            },
            [self, chunk, done = std::move(done)](const Status& st) {
                // A chunk read in a group that failed to commit or to sync is not sent: the
                // export ends there, as it does after any other store failure.
                if (!st) {
                    *chunk = std::nullopt;
                    self->m_finished = true;
                }
                done(std::move(*chunk));
            });
    }

private:
    std::optional<std::string> produce(Store& store) {
        if (m_finished || m_exhausted) {
            m_finished = true;
            return std::nullopt;
        }
        auto current = m_api->revalidate(store, m_spec.token_hash, Role::supervisor);
        if (!current) {
            m_finished = true;
            return std::nullopt;
        }
        // Areas taken from the user meanwhile are no longer exported.
        std::erase_if(m_spec.scope.areas,
                      [&](const std::string& a) { return !current->covers(a); });
        std::string out;
        if (!m_header_done) {
            m_header_done = true;
            if (m_spec.csv) {
                if (m_spec.bom) out += "\xEF\xBB\xBF";
                std::vector<std::string> cells = {"id", "area", "deleted"};
                for (const auto& f : m_spec.columns)
                    cells.push_back(f.name);
                cells.emplace_back("_conflicts");
                csv::append_row(out, cells);
            }
        }
        RecordQuery rq;
        rq.collection = m_spec.collection;
        rq.scope = m_spec.scope;
        rq.include_deleted = m_spec.include_deleted;
        rq.limit = export_page;
        for (int pages = 0; pages < 20 && !rq.scope.areas.empty(); ++pages) {
            rq.after_seq = m_after;
            auto rows = store.query_records(rq);
            if (!rows) {
                m_finished = true;
                return std::nullopt;
            }
            for (const auto& row : *rows) {
                m_after = row.seq;
                if (!m_seen.insert(row.id).second) continue;
                auto state = p::decode_record(row.state);
                if (!state) continue;  // corrupt: the record is skipped, not the export
                if (m_spec.csv)
                    append_csv(out, *state, row);
                else
                    out += p::record_to_json(*state) + "\n";
            }
            if (rows->size() < rq.limit) {
                m_exhausted = true;
                break;
            }
            if (!out.empty()) break;
        }
        if (rq.scope.areas.empty()) m_exhausted = true;
        if (out.empty()) {
            m_finished = true;
            return std::nullopt;
        }
        return out;
    }

    void append_csv(std::string& out, const p::RecordState& s, const StoredRecord& row) {
        std::vector<std::string> cells;
        cells.reserve(m_spec.columns.size() + 4);
        cells.push_back(row.id.to_string());
        cells.push_back(row.area);
        cells.emplace_back(s.is_deleted() ? "true" : "false");
        for (const auto& f : m_spec.columns)
            cells.push_back(csv_cell(s.view(f.name)));
        cells.push_back(join(s.conflicts(), ";"));
        csv::append_row(out, cells);
    }

    std::shared_ptr<HttpApi::Impl> m_api;
    Spec m_spec;
    // Worker thread only:
    std::uint64_t m_after = 0;
    bool m_header_done = false;
    bool m_exhausted = false;
    bool m_finished = false;
    std::unordered_set<p::RecordId> m_seen;
};

}  // namespace

HttpApi::Impl::Outcome HttpApi::Impl::export_records(Call& c) {
    api::Query q(c.target.query);
    ExportSource::Spec spec;
    spec.collection = q.get("collection").value_or("households");
    const p::CollectionDef& coll =
        collection_param(*c.schema, spec.collection, "query parameter collection");
    const std::string format = q.get("format").value_or("csv");
    if (format != "csv" && format != "jsonl")
        throw api::bad_request("query parameter format: \"" + format + "\" is not csv or jsonl");
    spec.csv = format == "csv";
    spec.scope = narrowed(c.scope, area_param(q));
    spec.include_deleted = q.get_bool("include_deleted", false);
    spec.bom = q.get_bool("bom", false);
    q.check_unknown();
    spec.token_hash = c.token_hash;
    spec.columns = coll.fields;
    HttpResponse r;
    r.content_type = spec.csv ? "text/csv; charset=utf-8" : "application/x-ndjson";
    const std::string date = civil_date(c.now / day_ms);
    r.headers.emplace_back("Content-Disposition", "attachment; filename=\"" + spec.collection +
                                                      "-" + date + (spec.csv ? ".csv" : ".jsonl") +
                                                      "\"");
    r.stream = std::make_shared<ExportSource>(shared_from_this(), std::move(spec));
    return r;
}

// ===============================================================================================
// Schema
// ===============================================================================================

namespace {

json::array problems_json(const std::vector<p::SchemaProblem>& problems) {
    json::array a;
    for (const auto& pr : problems)
        a.push_back(json::object{{"where", pr.where}, {"message", pr.message}});
    return a;
}

}  // namespace

HttpApi::Impl::Outcome HttpApi::Impl::get_schema(Call& c) {
    api::Query q(c.target.query);
    q.check_unknown();
    return json_reply(json::object{{"version", c.schema->version()},
                                   {"document", json::parse(c.schema->to_json())}});
}

HttpApi::Impl::Outcome HttpApi::Impl::put_schema(Call& c) {
    api::Query q(c.target.query);
    q.check_unknown();
    const p::Schema& current = *c.schema;
    auto problems = p::Schema::check(c.request.body);
    if (!problems.empty()) {
        ApiError e;
        e.status = 400;
        e.code = "schema_invalid";
        e.message = "the schema has " + std::to_string(problems.size()) + " problem" +
                    (problems.size() == 1 ? "" : "s") + ": " + p::to_string(problems);
        e.details["problems"] = problems_json(problems);
        throw e;
    }
    auto loaded = p::Schema::load(c.request.body);
    if (!loaded) throw api::validation_error(loaded.error().message);
    p::Schema schema = std::move(*loaded);
    if (auto st = schema.check_upgrade_from(current); !st) {
        ApiError e = api::conflict("incompatible_schema", "the schema cannot replace version " +
                                                              std::to_string(current.version()) +
                                                              ": " + st.error().message);
        json::array lines;
        std::string_view msg = st.error().message;
        while (!msg.empty()) {
            auto nl = msg.find('\n');
            lines.emplace_back(msg.substr(0, nl));
            msg = nl == std::string_view::npos ? std::string_view{} : msg.substr(nl + 1);
        }
        e.details["problems"] = std::move(lines);
        throw e;
    }
    const bool same = schema == current;
    if (!same) {
        auto st = c.store->put_schema(schema.version(), schema.to_json());
        if (!st) {
            if (st.error().code == p::protocol_errc::invalid_value)
                throw api::conflict("incompatible_schema", st.error().message);
            checked(st, "put_schema");
        }
        c.wrote = true;
        auto self = shared_from_this();
        c.after_commit = [self, schema] { self->m_worker.set_schema(schema); };
    }
    return json_reply(json::object{{"version", schema.version()},
                                   {"changed", !same},
                                   {"document", json::parse(schema.to_json())}});
}

// ===============================================================================================
// Overview
// ===============================================================================================

HttpApi::Impl::Outcome HttpApi::Impl::overview(Call& c) {
    api::Query q(c.target.query);
    const Scope scope = narrowed(c.scope, area_param(q));
    q.check_unknown();
    Store& store = *c.store;
    const p::Schema& schema = *c.schema;
    std::map<std::string, std::pair<std::string, std::string>> names;
    for (const auto& a : checked(store.list_areas(), "list_areas"))
        names[a.code] = {a.name_en, a.name_zh};

    // Households by poverty status per village.
    json::array statuses;
    json::array villages;
    json::object totals;
    const p::FieldDef* status_def = schema.find_field("households", "poverty_status");
    if (status_def && !scope.areas.empty()) {
        std::vector<std::string> codes;
        for (const auto& v : status_def->values)
            codes.push_back(v.code);
        codes.emplace_back("unknown");
        std::map<std::string, std::map<std::string, std::size_t>> counts;
        auto st = store.for_each_record(scope, "households", [&](const StoredRecord& r) {
            if (r.deleted) return true;
            auto s = p::decode_record(r.state);
            if (!s) return true;
            std::string code = "unknown";
            if (auto v = s->view(status_def->name))
                if (const auto* t = std::get_if<std::string>(&v->value)) code = *t;
            ++counts[r.area][code];
            return true;
        });
        checked(st, "for_each_record");
        std::map<std::string, std::size_t> sum;
        for (const auto& [area, by] : counts) {
            json::object o;
            std::size_t total = 0;
            for (const auto& code : codes) {
                auto it = by.find(code);
                const std::size_t n = it == by.end() ? 0 : it->second;
                o[code] = n;
                sum[code] += n;
                total += n;
            }
            auto nm = names.find(area);
            villages.push_back(
                json::object{{"area", area},
                             {"name_en", nm == names.end() ? std::string() : nm->second.first},
                             {"name_zh", nm == names.end() ? std::string() : nm->second.second},
                             {"counts", std::move(o)},
                             {"total", total}});
        }
        for (const auto& code : codes) {
            statuses.emplace_back(code);
            totals[code] = sum[code];
        }
    }

    // Visits per day over the last 60 days (UTC), today included.
    const std::int64_t today = c.now / day_ms;
    std::map<std::string, std::size_t> per_day;
    for (int i = overview_days - 1; i >= 0; --i)
        per_day[civil_date(today - i)] = 0;
    std::size_t visits_total = 0;
    const p::CollectionDef* vc = schema.find("visits");
    const p::FieldDef* when = nullptr;
    if (vc)
        for (const auto& def : vc->fields)
            if (def.type == p::FieldType::datetime || def.type == p::FieldType::date) {
                when = &def;
                break;
            }
    if (when && !scope.areas.empty()) {
        auto st = store.for_each_record(scope, vc->name, [&](const StoredRecord& r) {
            if (r.deleted) return true;
            auto s = p::decode_record(r.state);
            if (!s) return true;
            auto v = s->view(when->name);
            if (!v) return true;
            const auto* t = std::get_if<std::string>(&v->value);
            if (!t || t->size() < 10) return true;
            auto it = per_day.find(t->substr(0, 10));
            if (it != per_day.end()) {
                ++it->second;
                ++visits_total;
            }
            return true;
        });
        checked(st, "for_each_record");
    }
    json::array days;
    for (const auto& [date, n] : per_day)
        days.push_back(json::object{{"date", date}, {"count", n}});

    return json_reply(
        json::object{{"scope", string_array(scope.areas)},
                     {"households", json::object{{"statuses", std::move(statuses)},
                                                 {"villages", std::move(villages)},
                                                 {"totals", std::move(totals)}}},
                     {"visits", json::object{{"days", std::move(days)}, {"total", visits_total}}}});
}

// ===============================================================================================
// HttpApi
// ===============================================================================================

HttpApi::HttpApi(StoreWorker& worker, ApiOptions options)
    : m_impl(std::make_shared<Impl>(worker, std::move(options))) {}

HttpApi::~HttpApi() = default;

void HttpApi::handle(HttpRequest request, std::function<void(HttpResponse)> done) {
    m_impl->handle(std::move(request), std::move(done));
}

}  // namespace fieldsync::server
