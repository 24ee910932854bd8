// fieldsync: the administrator's command line for a fieldsync server. It speaks the HTTP JSON
// API (docs/api.md) with a bearer token from `fieldsync login`; `schema validate` works offline
// with the protocol library's own schema checks. Guide: docs/admin-cli.md.
//
// Exit status: 0 success; 1 usage (bad flags or arguments, unreadable or invalid input file,
// not logged in); 2 the server refused the request (its message is printed with what to do);
// 3 network or TLS failure (server down, wrong address, certificate not trusted).
#include <CLI/CLI.hpp>

#include <boost/json.hpp>

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "fieldsync/protocol/json.hpp"
#include "fieldsync/protocol/schema.hpp"
#include "http_client.hpp"
#include "session.hpp"

namespace {

namespace fs = std::filesystem;
namespace json = boost::json;
namespace p = fieldsync::protocol;
using namespace fieldsync::admin;

constexpr int exit_ok = 0;
constexpr int exit_usage = 1;
constexpr int exit_refused = 2;
constexpr int exit_network = 3;

const char* const exit_help = R"(Exit status:
  0  success
  1  usage: bad flags or arguments, an input file that cannot be used, not logged in
  2  the server refused the request (its message is printed, with what to do)
  3  network or TLS failure: server down or unreachable, certificate not trusted)";

/// The server answered with an error (exit status 2).
struct ServerRefused {
    unsigned status = 0;
    std::string code;
    std::string message;
    json::value details;
};

/// Options shared by every command.
struct Globals {
    std::string server;
    std::string token;
    std::string cacert;
    int timeout = 60;
    bool json = false;
};

// --- Output -------------------------------------------------------------------------------------

/// Display width of UTF-8 text: CJK and full-width characters count two columns.
std::size_t display_width(std::string_view s) {
    std::size_t w = 0;
    for (std::size_t i = 0; i < s.size();) {
        const auto c = static_cast<unsigned char>(s[i]);
        std::uint32_t cp = c;
        std::size_t n = 1;
        if (c >= 0xF0) {
            cp = c & 0x07u;
            n = 4;
        } else if (c >= 0xE0) {
            cp = c & 0x0Fu;
            n = 3;
        } else if (c >= 0xC0) {
            cp = c & 0x1Fu;
            n = 2;
        }
        for (std::size_t k = 1; k < n && i + k < s.size(); ++k)
            cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3Fu);
        i += n;
        const bool wide = (cp >= 0x1100 && cp <= 0x115F) || (cp >= 0x2E80 && cp <= 0xA4CF) ||
                          (cp >= 0xAC00 && cp <= 0xD7A3) || (cp >= 0xF900 && cp <= 0xFAFF) ||
                          (cp >= 0xFE30 && cp <= 0xFE4F) || (cp >= 0xFF00 && cp <= 0xFF60) ||
                          (cp >= 0xFFE0 && cp <= 0xFFE6) || (cp >= 0x20000 && cp <= 0x3FFFD);
        w += wide ? 2 : 1;
    }
    return w;
}

/// A plain text table with aligned columns.
class Table {
public:
    explicit Table(std::vector<std::string> header) { m_rows.push_back(std::move(header)); }
    void add(std::vector<std::string> row) { m_rows.push_back(std::move(row)); }
    void print(std::ostream& out) const {
        std::vector<std::size_t> width;
        for (const auto& r : m_rows)
            for (std::size_t i = 0; i < r.size(); ++i) {
                if (width.size() <= i) width.push_back(0);
                width[i] = std::max(width[i], display_width(r[i]));
            }
        for (const auto& r : m_rows) {
            std::string line;
            for (std::size_t i = 0; i < r.size(); ++i) {
                line += r[i];
                if (i + 1 < r.size()) line += std::string(width[i] - display_width(r[i]) + 2, ' ');
            }
            out << line << "\n";
        }
    }

private:
    std::vector<std::vector<std::string>> m_rows;
};

/// JSON as compact text, with numbers as people write them (39.5651234, not 3.95651234E1).
std::string to_text(const json::value& v) {
    switch (v.kind()) {
        case json::kind::double_: {
            char buf[32];
            std::snprintf(buf, sizeof buf, "%.10g", v.get_double());
            return buf;
        }
        case json::kind::array: {
            std::string out = "[";
            for (const auto& x : v.get_array())
                out += (out.size() > 1 ? "," : "") + to_text(x);
            return out + "]";
        }
        case json::kind::object: {
            std::string out = "{";
            for (const auto& kv : v.get_object())
                out += (out.size() > 1 ? "," : "") + json::serialize(json::value(kv.key())) + ":" +
                       to_text(kv.value());
            return out + "}";
        }
        default:
            return p::json_text(v);
    }
}

std::string str(const json::value* v) {
    if (!v || v->is_null()) return "";
    if (v->is_string()) return std::string(v->as_string());
    if (v->is_bool()) return v->as_bool() ? "true" : "false";
    return to_text(*v);
}

std::string str(const json::object& o, const char* key) {
    return str(o.if_contains(key));
}

std::string join(const json::value* arr, const char* sep = ",") {
    if (!arr || !arr->is_array()) return "";
    std::string out;
    for (const auto& x : arr->as_array()) {
        if (!out.empty()) out += sep;
        out += str(&x);
    }
    return out;
}

/// "2024-05-01T10:00:00.000Z" -> "2024-05-01 10:00Z".
std::string short_time(const std::string& iso) {
    if (iso.size() < 16) return iso;
    return iso.substr(0, 10) + " " + iso.substr(11, 5) + "Z";
}

std::string read_file(const std::string& file, const char* what) {
    std::ifstream in(file, std::ios::binary);
    if (!in) throw UsageError(std::string(what) + " " + file + ": cannot read it");
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

std::vector<std::string> split_list(const std::string& text) {
    std::vector<std::string> out;
    std::string cur;
    for (char c : text) {
        if (c == ',') {
            if (!cur.empty()) out.push_back(cur);
            cur.clear();
        } else if (c != ' ') {
            cur += c;
        }
    }
    if (!cur.empty()) out.push_back(cur);
    return out;
}

// --- Talking to the server ----------------------------------------------------------------------

class Api {
public:
    Api(ServerUrl server, ClientOptions options, std::string token)
        : m_server(std::move(server)), m_options(std::move(options)), m_token(std::move(token)) {}

    const ServerUrl& server() const { return m_server; }

    /// A JSON request; the parsed reply body, or ServerRefused.
    json::value call(const std::string& method, const std::string& target,
                     const std::optional<json::value>& body = std::nullopt) {
        HttpRequestSpec spec;
        spec.method = method;
        spec.target = target;
        spec.token = m_token;
        if (body) {
            spec.body = json::serialize(*body);
            spec.content_type = "application/json";
        }
        return parse(http_request(m_server, m_options, spec));
    }

    /// A request with a raw body (CSV, a schema document).
    json::value send(const std::string& method, const std::string& target, std::string body,
                     const std::string& content_type) {
        HttpRequestSpec spec{method, target, std::move(body), content_type, m_token};
        return parse(http_request(m_server, m_options, spec));
    }

    /// A streamed GET: the body goes to `sink`. Errors as call().
    void stream(const std::string& target, const std::function<bool(std::string_view)>& sink) {
        HttpRequestSpec spec;
        spec.target = target;
        spec.token = m_token;
        auto reply = http_request(m_server, m_options, spec, sink);
        if (reply.status >= 300) parse(reply);
    }

private:
    static json::value parse(const HttpReply& reply) {
        json::error_code ec;
        json::value v = reply.body.empty() ? json::value(nullptr) : json::parse(reply.body, ec);
        if (reply.status >= 300) {
            ServerRefused r;
            r.status = reply.status;
            if (!ec && v.is_object())
                if (const auto* e = v.as_object().if_contains("error"); e && e->is_object()) {
                    r.code = str(e->as_object(), "code");
                    r.message = str(e->as_object(), "message");
                    r.details = *e;
                }
            if (r.message.empty())
                r.message = "HTTP " + std::to_string(reply.status) +
                            (reply.body.empty() ? std::string() : ": " + reply.body.substr(0, 300));
            throw r;
        }
        if (ec)
            throw NetworkError("the server's answer is not JSON (is this a fieldsync server?): " +
                               reply.body.substr(0, 200));
        return v;
    }

    ServerUrl m_server;
    ClientOptions m_options;
    std::string m_token;
};

/// The server, token and CA file to use: flags and environment first, then the saved login.
Api connect(const Globals& g, bool need_token = true) {
    std::optional<SavedSession> saved;
    try {
        saved = load_session();
    } catch (const UsageError&) {
        if (need_token && g.token.empty()) throw;
    }
    std::string server_text = g.server;
    if (server_text.empty() && saved) server_text = saved->server;
    if (server_text.empty())
        throw UsageError(
            "no server: pass --server URL (or set FIELDSYNC_SERVER), or log in first "
            "with: fieldsync login --server URL --user NAME");
    ServerUrl server = parse_server_url(server_text);
    const bool same = saved && parse_server_url(saved->server).text == server.text;
    std::string token = g.token;
    if (token.empty() && same) token = saved->token;
    if (need_token && token.empty()) {
        if (saved && !same)
            throw UsageError("you are logged in to " + saved->server + ", not " + server.text +
                             ": run fieldsync login --server " + server.text + " --user NAME");
        throw UsageError("not logged in: run fieldsync login --server " + server.text +
                         " --user NAME (or pass --token / set FIELDSYNC_TOKEN)");
    }
    ClientOptions options;
    options.cacert = !g.cacert.empty() ? g.cacert : (same ? saved->cacert : std::string());
    options.timeout = std::chrono::seconds(g.timeout);
    return Api(std::move(server), std::move(options), std::move(token));
}

/// What to do about a refusal, by status.
std::string advice(const ServerRefused& r, const std::string& command) {
    switch (r.status) {
        case 400:
        case 422:
            return "correct the request as the message says";
        case 401:
            if (command == "login")
                return "check the user name and password (passwords are case-sensitive)";
            return "log in again: fieldsync login --server URL --user NAME";
        case 403:
            return "your account's role does not allow this; ask an administrator";
        case 404:
            return "check the name or number you gave (it may also lie outside your areas)";
        case 409:
            return "the current state does not allow this; look at it again (list/show) and retry";
        case 413:
            return "the file is too large for the server";
        case 415:
            return "send the file in the expected format";
        case 429:
            return "wait and retry later";
        default:
            if (r.status >= 500)
                return "the server failed; its log (stderr of fieldsync-server) says why";
            return "";
    }
}

int report_refused(const ServerRefused& r, const std::string& command) {
    std::cerr << "fieldsync: the server refused: " << r.message;
    if (!r.code.empty()) std::cerr << " (" << r.code << ", HTTP " << r.status << ")";
    std::cerr << "\n";
    if (r.details.is_object())
        if (const auto* probs = r.details.as_object().if_contains("problems");
            probs && probs->is_array()) {
            const auto& a = probs->as_array();
            if (a.size() > 1 || (a.size() == 1 && str(&a[0]) != r.message)) {
                for (const auto& pr : a) {
                    if (pr.is_object())
                        std::cerr << "  " << str(pr.as_object(), "where") << ": "
                                  << str(pr.as_object(), "message") << "\n";
                    else
                        std::cerr << "  " << str(&pr) << "\n";
                }
            }
        }
    if (auto a = advice(r, command); !a.empty()) std::cerr << "  what to do: " << a << "\n";
    return exit_refused;
}

void print_json(const json::value& v) {
    std::cout << p::json_text(v) << "\n";
}

// --- Commands -----------------------------------------------------------------------------------

int cmd_login(const Globals& g, const std::string& user, const std::string& password_file) {
    if (g.server.empty())
        throw UsageError(
            "login needs --server URL, e.g. fieldsync login --server https://survey.example.org "
            "--user admin");
    ServerUrl server = parse_server_url(g.server);
    const std::string password =
        password_file.empty()
            ? read_password("Password for " + user + " at " + server.text + ": ", false)
            : read_password_file(password_file);
    ClientOptions options;
    options.cacert = g.cacert;
    options.timeout = std::chrono::seconds(g.timeout);
    Api api(server, options, "");
    auto reply =
        api.call("POST", "/api/login", json::object{{"user", user}, {"password", password}});
    const auto& o = reply.as_object();
    SavedSession s;
    s.server = server.text;
    s.user = user;
    s.token = str(o, "token");
    s.expires_at = str(o, "expires_at");
    s.cacert = g.cacert.empty() ? "" : fs::absolute(g.cacert).string();
    save_session(s);
    std::string role;
    if (const auto* u = o.if_contains("user"); u && u->is_object())
        role = str(u->as_object(), "role");
    std::cout << "Logged in to " << server.text << " as " << user
              << (role.empty() ? "" : " (" + role + ")") << " until " << s.expires_at
              << ".\nThe token is in " << token_file().string() << " (readable only by you).\n";
    return exit_ok;
}

int cmd_logout(const Globals& g) {
    auto saved = load_session();
    Api api = connect(g);
    try {
        api.call("POST", "/api/logout");
    } catch (const ServerRefused& r) {
        if (r.status != 401) throw;
        std::cout << "The token was no longer valid on the server.\n";
    }
    if (saved && g.token.empty() && parse_server_url(saved->server).text == api.server().text) {
        remove_session();
        std::cout << "Logged out of " << api.server().text << "; removed " << token_file().string()
                  << ".\n";
    } else {
        std::cout << "Logged out of " << api.server().text << " (the token is revoked).\n";
    }
    return exit_ok;
}

int cmd_users_list(const Globals& g) {
    Api api = connect(g);
    auto reply = api.call("GET", "/api/users");
    if (g.json) return print_json(reply), exit_ok;
    Table t({"NAME", "ROLE", "AREAS", "STATUS", "DISPLAY NAME"});
    for (const auto& u : reply.as_object().at("users").as_array()) {
        const auto& o = u.as_object();
        const bool disabled =
            o.if_contains("disabled") && o.at("disabled").is_bool() && o.at("disabled").as_bool();
        t.add({str(o, "name"), str(o, "role"), join(o.if_contains("areas")),
               disabled ? "disabled" : "active", str(o, "display_name")});
    }
    t.print(std::cout);
    return exit_ok;
}

std::string new_password(const std::string& file, const std::string& user) {
    return file.empty()
               ? read_password("New password for " + user + " (at least 10 characters): ", true)
               : read_password_file(file);
}

int cmd_users_add(const Globals& g, const std::string& name, const std::string& role,
                  const std::string& areas, const std::string& display,
                  const std::string& pw_file) {
    Api api = connect(g);
    const std::string password = new_password(pw_file, name);
    json::object body{{"name", name}, {"role", role}, {"password", password}};
    json::array a;
    for (const auto& x : split_list(areas))
        a.emplace_back(x);
    body["areas"] = std::move(a);
    if (!display.empty()) body["display_name"] = display;
    auto reply = api.call("POST", "/api/users", json::value(std::move(body)));
    if (g.json) return print_json(reply), exit_ok;
    std::cout << "Added " << role << " " << name << (areas.empty() ? "" : " for " + areas) << ".\n";
    return exit_ok;
}

int cmd_users_update(const Globals& g, const std::string& name, json::object body,
                     const std::string& done) {
    Api api = connect(g);
    auto reply = api.call("PUT", "/api/users/" + url_encode(name), json::value(std::move(body)));
    if (g.json) return print_json(reply), exit_ok;
    std::cout << done << "\n";
    return exit_ok;
}

int cmd_users_reset_password(const Globals& g, const std::string& name,
                             const std::string& pw_file) {
    Api api = connect(g);
    const std::string password = new_password(pw_file, name);
    api.call("POST", "/api/users/" + url_encode(name) + "/password",
             json::object{{"password", password}});
    std::cout << "Password of " << name << " changed; their sessions are signed out.\n";
    return exit_ok;
}

int cmd_areas_import(const Globals& g, const std::string& file) {
    std::string csv = read_file(file, "areas import");
    Api api = connect(g);
    auto reply = api.send("POST", "/api/areas/import", std::move(csv), "text/csv; charset=utf-8");
    if (g.json) return print_json(reply), exit_ok;
    const auto& o = reply.as_object();
    std::cout << "Imported " << str(o, "imported") << " areas from " << file << " ("
              << str(o, "created") << " new, " << str(o, "updated") << " updated).\n";
    return exit_ok;
}

int cmd_areas_list(const Globals& g) {
    Api api = connect(g);
    auto reply = api.call("GET", "/api/areas");
    if (g.json) return print_json(reply), exit_ok;
    std::vector<json::object> areas;
    for (const auto& a : reply.as_object().at("areas").as_array())
        areas.push_back(a.as_object());
    std::sort(areas.begin(), areas.end(), [](const json::object& x, const json::object& y) {
        return str(x, "code") < str(y, "code");
    });
    Table t({"CODE", "LEVEL", "NAME (EN)", "NAME (ZH)"});
    for (const auto& a : areas) {
        const std::string code = str(a, "code");
        const auto depth = static_cast<std::size_t>(std::count(code.begin(), code.end(), '/'));
        t.add({std::string(depth * 2, ' ') + code, str(a, "level"), str(a, "name_en"),
               str(a, "name_zh")});
    }
    t.print(std::cout);
    return exit_ok;
}

int cmd_schema_validate(const std::string& file) {
    const std::string text = read_file(file, "schema validate");
    auto problems = p::Schema::check(text);
    if (!problems.empty()) {
        std::cerr << file << ": " << problems.size() << " problem"
                  << (problems.size() == 1 ? "" : "s") << "\n";
        for (const auto& pr : problems)
            std::cerr << file << ": " << pr.to_string() << "\n";
        std::cerr << "  what to do: fix each problem (docs/schema.md describes the format) and run "
                     "this again\n";
        return exit_usage;
    }
    auto schema = p::Schema::load(text);
    if (!schema) {
        std::cerr << file << ": " << schema.error().message << "\n";
        return exit_usage;
    }
    std::size_t fields = 0;
    for (const auto& c : schema->collections())
        fields += c.fields.size();
    std::cout << file << ": valid — " << schema->name() << " version " << schema->version() << ", "
              << schema->collections().size() << " collections, " << fields << " fields\n";
    return exit_ok;
}

int cmd_schema_publish(const Globals& g, const std::string& file) {
    if (int rc = cmd_schema_validate(file); rc != exit_ok) return rc;
    Api api = connect(g);
    auto reply =
        api.send("PUT", "/api/schema", read_file(file, "schema publish"), "application/json");
    if (g.json) return print_json(reply), exit_ok;
    const auto& o = reply.as_object();
    const bool changed =
        o.if_contains("changed") && o.at("changed").is_bool() && o.at("changed").as_bool();
    if (changed)
        std::cout << "Published schema version " << str(o, "version")
                  << "; tablets receive it at their next sync.\n";
    else
        std::cout << "The server already has this schema (version " << str(o, "version")
                  << "); nothing changed.\n";
    return exit_ok;
}

std::string values_text(const json::value* values) {
    if (!values || !values->is_array()) return "";
    std::string out;
    for (const auto& v : values->as_array()) {
        if (!v.is_object()) continue;
        if (!out.empty()) out += " | ";
        out += str(v.as_object().if_contains("value")) + " (" + str(v.as_object(), "by") + ")";
    }
    return out;
}

int cmd_conflicts_list(const Globals& g, const std::string& area, const std::string& field,
                       const std::string& status, int older_than, int limit) {
    Api api = connect(g);
    std::string target =
        "/api/conflicts?status=" + url_encode(status) + "&limit=" + std::to_string(limit);
    if (!area.empty()) target += "&area=" + url_encode(area);
    if (!field.empty()) target += "&field=" + url_encode(field);
    if (older_than > 0) target += "&older_than_days=" + std::to_string(older_than);
    auto reply = api.call("GET", target);
    if (g.json) return print_json(reply), exit_ok;
    const auto& o = reply.as_object();
    const auto& list = o.at("conflicts").as_array();
    if (list.empty()) {
        std::cout << "No " << (status == "all" ? "" : status + " ") << "conflicts"
                  << (area.empty() ? "" : " in " + area) << ".\n";
        return exit_ok;
    }
    Table t({"ID", "OPENED", "STATUS", "AREA", "RECORD", "FIELD", "VALUES"});
    for (const auto& c : list) {
        const auto& x = c.as_object();
        t.add({str(x, "id"), short_time(str(x, "opened_at")), str(x, "status"), str(x, "area"),
               str(x, "collection") + "/" + str(x, "record").substr(0, 8), str(x, "field"),
               str(x, "status") == "open" ? values_text(x.if_contains("values"))
                                          : "= " + str(x.if_contains("resolution"))});
    }
    t.print(std::cout);
    std::cout << list.size() << " of " << str(o, "total") << " shown (oldest first).\n";
    return exit_ok;
}

int cmd_conflicts_show(const Globals& g, const std::string& id) {
    Api api = connect(g);
    auto reply = api.call("GET", "/api/conflicts/" + url_encode(id));
    if (g.json) return print_json(reply), exit_ok;
    const auto& o = reply.as_object();
    const auto& c = o.at("conflict").as_object();
    std::cout << "Conflict " << str(c, "id") << " (" << str(c, "status")
              << "): " << str(c, "collection") << "/" << str(c, "record") << " field "
              << str(c, "field") << "\n"
              << "  area:    " << str(c, "area") << "\n"
              << "  opened:  " << str(c, "opened_at") << "\n";
    if (const auto* vals = c.if_contains("values"); vals && vals->is_array()) {
        std::cout << (str(c, "status") == "open" ? "Competing values (use --choice N):\n"
                                                 : "Values that competed:\n");
        std::size_t i = 0;
        for (const auto& v : vals->as_array()) {
            const auto& x = v.as_object();
            std::cout << "  [" << i++ << "] " << str(x.if_contains("value")) << "\n"
                      << "      by " << str(x, "by") << " at " << str(x, "at");
            if (!str(x, "device").empty()) std::cout << ", device " << str(x, "device");
            if (!str(x, "app_version").empty()) std::cout << " (" << str(x, "app_version") << ")";
            if (x.if_contains("gps")) std::cout << ", gps " << str(x.if_contains("gps"));
            std::cout << "\n";
        }
    }
    if (str(c, "status") == "resolved")
        std::cout << "Resolved by " << str(c, "resolved_by") << " at " << str(c, "resolved_at")
                  << ": " << str(c.if_contains("resolution")) << "\n  note: " << str(c, "note")
                  << "\n";
    if (const auto* rec = o.if_contains("record"); rec && rec->is_object())
        if (const auto* f = rec->as_object().if_contains("fields"); f && f->is_object()) {
            std::cout << "Record fields:\n";
            for (const auto& kv : f->as_object())
                std::cout << "  " << std::string(kv.key()) << ": " << str(&kv.value()) << "\n";
        }
    return exit_ok;
}

int cmd_conflicts_resolve(const Globals& g, const std::string& id,
                          const std::optional<std::string>& value, const std::optional<int>& choice,
                          const std::string& note) {
    if (value.has_value() == choice.has_value())
        throw UsageError("conflicts resolve: give exactly one of --value JSON or --choice N");
    json::object body{{"note", note}};
    if (choice) {
        body["choice"] = *choice;
    } else {
        json::error_code ec;
        json::value v = json::parse(*value, ec);
        // A bare word such as exited is taken as text; anything that parses is JSON.
        body["value"] = ec ? json::value(*value) : v;
    }
    Api api = connect(g);
    auto reply = api.call("POST", "/api/conflicts/" + url_encode(id) + "/resolve",
                          json::value(std::move(body)));
    if (g.json) return print_json(reply), exit_ok;
    const auto& c = reply.as_object().at("conflict").as_object();
    std::cout << "Conflict " << id << " resolved: " << str(c, "field") << " = "
              << str(c.if_contains("resolution")) << ". Tablets receive it at their next sync.\n";
    return exit_ok;
}

int cmd_export(const Globals& g, const std::string& collection, const std::string& format,
               const std::string& area, const std::string& out_file) {
    Api api = connect(g);
    std::string target =
        "/api/export?collection=" + url_encode(collection) + "&format=" + url_encode(format);
    if (!area.empty()) target += "&area=" + url_encode(area);
    std::size_t bytes = 0;
    if (out_file.empty() || out_file == "-") {
        api.stream(target, [&bytes](std::string_view piece) {
            std::cout.write(piece.data(), static_cast<std::streamsize>(piece.size()));
            bytes += piece.size();
            return static_cast<bool>(std::cout);
        });
        std::cout.flush();
        if (!std::cout) {
            std::cerr << "fieldsync: export: writing to standard output failed\n";
            return exit_usage;
        }
        return exit_ok;
    }
    const fs::path part = out_file + ".part";
    std::ofstream out(part, std::ios::binary | std::ios::trunc);
    if (!out) throw UsageError("-o " + out_file + ": cannot write " + part.string());
    try {
        api.stream(target, [&out, &bytes](std::string_view piece) {
            out.write(piece.data(), static_cast<std::streamsize>(piece.size()));
            bytes += piece.size();
            return static_cast<bool>(out);
        });
        out.close();
        if (!out) throw UsageError("-o " + out_file + ": writing failed (disk full?)");
    } catch (...) {
        std::error_code ec;
        fs::remove(part, ec);
        throw;
    }
    fs::rename(part, out_file);
    std::cerr << "Exported " << collection << " (" << format << ", " << bytes << " bytes) to "
              << out_file << ".\n";
    return exit_ok;
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{
        "fieldsync: administer a fieldsync server (users, areas, survey schema, conflicts, "
        "exports) over its HTTP API.",
        "fieldsync"};
    app.set_version_flag("--version", std::string("fieldsync admin 0.1.0"));
    app.require_subcommand(1);
    // Global options may come after the subcommand too: fieldsync users list --server URL.
    // Set before the subcommands are added, which inherit it.
    app.fallthrough();
    app.footer(
        std::string(
            "Example:\n"
            "  fieldsync login --server https://survey.example.org --user admin\n"
            "  fieldsync users add enumerator-07 --role enumerator --areas "
            "ordos/ejin-horo/altan-xire/longhuqu\n"
            "  fieldsync conflicts list --area ordos/ejin-horo\n"
            "  fieldsync export --collection households --format csv -o households.csv\n\n"
            "The login is kept in ~/.config/fieldsync/token (mode 0600); FIELDSYNC_SERVER,\n"
            "FIELDSYNC_TOKEN and FIELDSYNC_CACERT stand in for --server, --token, --cacert.\n"
            "Guide: docs/admin-cli.md\n\n") +
        exit_help);

    Globals g;
    app.add_option(
           "--server", g.server,
           "server URL, e.g. https://survey.example.org (default: the one you logged in to)")
        ->envname("FIELDSYNC_SERVER");
    app.add_option("--token", g.token, "bearer token to use instead of the saved login")
        ->envname("FIELDSYNC_TOKEN");
    app.add_option("--cacert", g.cacert,
                   "PEM file of the CA (or self-signed certificate) to trust for https")
        ->envname("FIELDSYNC_CACERT");
    app.add_option("--timeout", g.timeout, "seconds to wait for each network step (default 60)")
        ->check(CLI::Range(1, 3600));
    app.add_flag("--json", g.json, "print the server's JSON answer instead of a table");

    auto with_help = [](CLI::App* sub, const std::string& examples) {
        sub->footer("Example:\n" + examples + "\n\n" + exit_help);
        return sub;
    };

    // login / logout
    std::string user, password_file;
    auto* login = with_help(
        app.add_subcommand("login", "log in and keep the token for the next commands"),
        "  fieldsync login --server https://survey.example.org --user admin\n"
        "  fieldsync login --server http://127.0.0.1:8470 --user admin --password-file pw.txt");
    login->add_option("--user,-u", user, "user name")->required();
    login->add_option("--password-file", password_file,
                      "read the password from the first line of this file "
                      "(default: ask, or read standard input)");
    auto* logout =
        with_help(app.add_subcommand("logout", "revoke the token on the server and forget it"),
                  "  fieldsync logout");

    // users
    auto* users = app.add_subcommand("users", "list and manage accounts (administrators)");
    users->require_subcommand(1);
    with_help(users,
              "  fieldsync users list\n  fieldsync users add enumerator-07 --role enumerator "
              "--areas ordos/hanggin/xini");
    std::string u_name, u_role, u_areas, u_display, u_pw_file;
    auto* users_list =
        with_help(users->add_subcommand("list", "list every account"), "  fieldsync users list");
    auto* users_add = with_help(
        users->add_subcommand(
            "add",
            "create an account (the password is asked, or read from stdin or --password-file)"),
        "  fieldsync users add enumerator-07 --role enumerator --areas "
        "ordos/ejin-horo/altan-xire/longhuqu \\\n"
        "      --display-name \"Longhuqu enumerator 07\" --password-file pw.txt");
    users_add->add_option("name", u_name, "user name (A-Z a-z 0-9 . _ - @)")->required();
    users_add->add_option("--role", u_role, "enumerator, supervisor or admin")
        ->required()
        ->check(CLI::IsMember({"enumerator", "supervisor", "admin"}));
    users_add->add_option("--areas", u_areas,
                          "comma-separated area codes, e.g. ordos/ejin-horo,ordos/hanggin");
    users_add->add_option("--display-name", u_display, "name shown in the console");
    users_add->add_option("--password-file", u_pw_file,
                          "read the new password from this file's first line");
    auto* users_disable =
        with_help(users->add_subcommand("disable", "disable an account (signs it out everywhere)"),
                  "  fieldsync users disable enumerator-07");
    users_disable->add_option("name", u_name, "user name")->required();
    auto* users_enable = with_help(users->add_subcommand("enable", "enable a disabled account"),
                                   "  fieldsync users enable enumerator-07");
    users_enable->add_option("name", u_name, "user name")->required();
    auto* users_reset = with_help(
        users->add_subcommand("reset-password", "set a new password (signs the user out)"),
        "  fieldsync users reset-password enumerator-07 --password-file pw.txt");
    users_reset->add_option("name", u_name, "user name")->required();
    users_reset->add_option("--password-file", u_pw_file,
                            "read the new password from this file's first line");
    auto* users_assign = with_help(
        users->add_subcommand("assign", "change an account's role and/or areas"),
        "  fieldsync users assign supervisor-02 --role supervisor --areas ordos/dalad\n"
        "  fieldsync users assign enumerator-07 --areas ordos/ejin-horo/altan-xire/hashatu");
    users_assign->add_option("name", u_name, "user name")->required();
    users_assign->add_option("--role", u_role, "enumerator, supervisor or admin")
        ->check(CLI::IsMember({"enumerator", "supervisor", "admin"}));
    users_assign->add_option("--areas", u_areas,
                             "comma-separated area codes (replaces the current ones)");

    // areas
    auto* areas = app.add_subcommand("areas", "the area tree (city > banner > town > village)");
    areas->require_subcommand(1);
    with_help(areas, "  fieldsync areas list\n  fieldsync areas import areas.csv");
    std::string a_file;
    auto* areas_import = with_help(
        areas->add_subcommand("import",
                              "add or update areas from a CSV file "
                              "(header code,parent,level,name_en,name_zh); all or nothing"),
        "  fieldsync areas import areas.csv\n"
        "  (areas.csv:  code,parent,level,name_en,name_zh\n"
        "               ordos/dalad/shulinzhao/xinmin,ordos/dalad/shulinzhao,village,Xinmin "
        "Village,新民村)");
    areas_import->add_option("file", a_file, "CSV file (UTF-8)")->required();
    auto* areas_list =
        with_help(areas->add_subcommand("list", "print the area tree"), "  fieldsync areas list");

    // schema
    auto* schema = app.add_subcommand("schema", "the survey schema");
    schema->require_subcommand(1);
    with_help(schema,
              "  fieldsync schema validate survey.json\n  fieldsync schema publish survey.json");
    std::string s_file;
    auto* schema_validate = with_help(
        schema->add_subcommand("validate", "check a schema file offline and print every problem"),
        "  fieldsync schema validate protocol/schemas/household-survey.json");
    schema_validate->add_option("file", s_file, "schema document (JSON, docs/schema.md)")
        ->required();
    auto* schema_publish =
        with_help(schema->add_subcommand(
                      "publish", "validate, then publish a new schema version to the server"),
                  "  fieldsync schema publish survey-v2.json");
    schema_publish->add_option("file", s_file, "schema document (JSON, docs/schema.md)")
        ->required();

    // conflicts
    auto* conflicts = app.add_subcommand(
        "conflicts", "answers two tablets recorded differently, for a supervisor to settle");
    conflicts->require_subcommand(1);
    with_help(
        conflicts,
        "  fieldsync conflicts list\n  fieldsync conflicts show 12\n"
        "  fieldsync conflicts resolve 12 --choice 1 --note \"checked with the village head\"");
    std::string c_area, c_field, c_status = "open", c_id, c_note;
    int c_older = 0;
    int c_limit = 100;
    std::optional<std::string> c_value;
    std::optional<int> c_choice;
    auto* conflicts_list =
        with_help(conflicts->add_subcommand("list", "list conflicts, oldest first"),
                  "  fieldsync conflicts list --area ordos/ejin-horo --field poverty_status\n"
                  "  fieldsync conflicts list --status resolved --json");
    conflicts_list->add_option("--area", c_area, "only this area and below");
    conflicts_list->add_option("--field", c_field, "only this field, e.g. poverty_status");
    conflicts_list->add_option("--status", c_status, "open (default), resolved or all")
        ->check(CLI::IsMember({"open", "resolved", "all"}));
    conflicts_list
        ->add_option("--older-than", c_older, "only conflicts open for more than DAYS days")
        ->check(CLI::Range(0, 36500));
    conflicts_list->add_option("--limit", c_limit, "at most this many (default 100, at most 500)")
        ->check(CLI::Range(1, 500));
    auto* conflicts_show =
        with_help(conflicts->add_subcommand(
                      "show", "one conflict: the competing values, who, when, which device"),
                  "  fieldsync conflicts show 12");
    conflicts_show->add_option("id", c_id, "conflict number")->required();
    auto* conflicts_resolve =
        with_help(conflicts->add_subcommand(
                      "resolve", "settle a conflict with one of its values or a new one"),
                  "  fieldsync conflicts resolve 12 --choice 0 --note \"confirmed with the village "
                  "committee\"\n"
                  "  fieldsync conflicts resolve 13 --value '\"dibao_line\"' --note \"dibao "
                  "certificate seen\"\n"
                  "  fieldsync conflicts resolve 14 --value 4600 --note \"income recomputed from "
                  "the wage slips\"");
    conflicts_resolve->add_option("id", c_id, "conflict number")->required();
    auto* value_opt =
        conflicts_resolve->add_option("--value", c_value,
                                      "the settled value as JSON (\"text\", 12, true, "
                                      "{\"lat\":..,\"lon\":..}); a bare word is taken as text");
    auto* choice_opt = conflicts_resolve->add_option(
        "--choice", c_choice, "index of a competing value (conflicts show lists them)");
    value_opt->excludes(choice_opt);
    conflicts_resolve->add_option("--note", c_note, "why this value (kept in the audit log)")
        ->required();

    // export
    std::string e_collection = "households", e_format = "csv", e_area, e_out;
    auto* exp =
        with_help(app.add_subcommand("export", "download the records of a collection (streamed)"),
                  "  fieldsync export --collection households --format csv -o households.csv\n"
                  "  fieldsync export --collection visits --format jsonl --area ordos/hanggin > "
                  "visits.jsonl");
    exp->add_option("--collection", e_collection, "households (default), members, visits, ...");
    exp->add_option("--format", e_format, "csv (default) or jsonl")
        ->check(CLI::IsMember({"csv", "jsonl"}));
    exp->add_option("--area", e_area, "only this area and below");
    exp->add_option("-o,--output", e_out, "write to FILE (default: standard output)");

    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        const int code = app.exit(e);
        return code == 0 ? exit_ok : exit_usage;
    }

    std::string command;
    for (const auto* sub : app.get_subcommands()) {
        command = sub->get_name();
        for (const auto* s2 : sub->get_subcommands())
            command += " " + s2->get_name();
    }
    try {
        if (login->parsed()) return cmd_login(g, user, password_file);
        if (logout->parsed()) return cmd_logout(g);
        if (users_list->parsed()) return cmd_users_list(g);
        if (users_add->parsed())
            return cmd_users_add(g, u_name, u_role, u_areas, u_display, u_pw_file);
        if (users_disable->parsed())
            return cmd_users_update(g, u_name, json::object{{"disabled", true}},
                                    "Disabled " + u_name + "; their sessions are signed out.");
        if (users_enable->parsed())
            return cmd_users_update(g, u_name, json::object{{"disabled", false}},
                                    "Enabled " + u_name + ".");
        if (users_reset->parsed()) return cmd_users_reset_password(g, u_name, u_pw_file);
        if (users_assign->parsed()) {
            json::object body;
            if (!u_role.empty()) body["role"] = u_role;
            if (users_assign->count("--areas")) {
                json::array a;
                for (const auto& x : split_list(u_areas))
                    a.emplace_back(x);
                body["areas"] = std::move(a);
            }
            if (body.empty()) throw UsageError("users assign: give --role and/or --areas");
            return cmd_users_update(
                g, u_name, std::move(body),
                "Updated " + u_name + (u_role.empty() ? "" : ": role " + u_role) +
                    (users_assign->count("--areas")
                         ? "; areas " + (u_areas.empty() ? std::string("(none)") : u_areas)
                         : "") +
                    ".");
        }
        if (areas_import->parsed()) return cmd_areas_import(g, a_file);
        if (areas_list->parsed()) return cmd_areas_list(g);
        if (schema_validate->parsed()) return cmd_schema_validate(s_file);
        if (schema_publish->parsed()) return cmd_schema_publish(g, s_file);
        if (conflicts_list->parsed())
            return cmd_conflicts_list(g, c_area, c_field, c_status, c_older, c_limit);
        if (conflicts_show->parsed()) return cmd_conflicts_show(g, c_id);
        if (conflicts_resolve->parsed())
            return cmd_conflicts_resolve(g, c_id, c_value, c_choice, c_note);
        if (exp->parsed()) return cmd_export(g, e_collection, e_format, e_area, e_out);
        std::cerr << app.help();
        return exit_usage;
    } catch (const ServerRefused& r) {
        return report_refused(r, command);
    } catch (const UsageError& e) {
        std::cerr << "fieldsync: " << e.what() << "\n";
        return exit_usage;
    } catch (const NetworkError& e) {
        std::cerr << "fieldsync: " << e.what() << "\n";
        return exit_network;
    } catch (const std::exception& e) {
        std::cerr << "fieldsync: " << e.what() << "\n";
        return exit_usage;
    }
}
