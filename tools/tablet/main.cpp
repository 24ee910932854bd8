// fieldsync-tablet: a tablet on the command line. It keeps a real SDK replica (SQLite file)
// and syncs it with a fieldsync server, so scripts and tests can play enumerators: register
// households offline, sync, look at conflicts and what the server refused.
//
// It uses only the public SDK (fieldsync::sdk): Replica for the data, Replicator with the
// default WebSocket transport for sync. The server URL, user name and TLS settings live next
// to the database in "<db>.conf" (JSON); the session token lives in the replica itself. The
// password is never stored.
//
// Run `fieldsync-tablet --help` (and `fieldsync-tablet <command> --help`) for usage.
#include <CLI/CLI.hpp>

#include <boost/json.hpp>

#include <termios.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "fieldsync/protocol/json.hpp"
#include "fieldsync/replica.hpp"
#include "fieldsync/replicator.hpp"

namespace {

namespace fs = std::filesystem;
namespace json = boost::json;
namespace p = fieldsync::protocol;
using namespace std::chrono_literals;

constexpr int exit_ok = EXIT_SUCCESS;  // 0
constexpr int exit_failed = 1;         // the operation failed (validation, sync, not found)
constexpr int exit_usage = 2;          // bad command line

const char* const help_footer = R"(Commands:
  init     set up this tablet for a server and an account (logs in once, keeps the token)
  add      add a household, member or visit:  add household village=... head_name=...
  edit     change fields of a record:          edit households ID poverty_status=exited
  delete   delete a record:                    delete households ID
  list     list records:                       list households --area ordos/ejin-horo
  show     one record with conflicts:          show households ID
  sync     upload and download:                sync [--continuous] [--timeout S]
  status   pending changes, refused records, last sync, server and user

Values (key=value) are typed by the survey schema: text, enum codes and dates as written
(2024-05-01), integers as digits, booleans true/false, geo points as LAT,LON, multi-select
fields as comma-separated codes (the set becomes exactly those), counters add the number.
An empty value (key=) clears an optional field.

Example:
  fieldsync-tablet --db a.db init --server ws://127.0.0.1:8080 --user enumerator-longhuqu \
      --password-file pw.txt
  fieldsync-tablet --db a.db add household village=ordos/ejin-horo/altan-xire/longhuqu \
      head_name=Bater poverty_status=dibao_line members_count=4 assistance=lambs_for_ewes
  fieldsync-tablet --db a.db sync
  fieldsync-tablet --db a.db --json list households --where poverty_status=dibao_line

Exit status: 0 success; 1 the operation failed (validation error, sync failed, no such
record, not initialized); 2 bad command line.)";

/// A failure to report: message (and exit status 1).
struct Failure {
    std::string message;
    std::string code = "failed";
};

// --- Configuration next to the database -----------------------------------------------------

struct Config {
    std::string server;
    std::string user;
    std::string ca_file;
    std::vector<std::string> pins;
};

fs::path config_path(const fs::path& db) {
    return fs::path(db.string() + ".conf");
}

std::optional<Config> load_config(const fs::path& db) {
    std::ifstream in(config_path(db));
    if (!in) return std::nullopt;
    std::stringstream ss;
    ss << in.rdbuf();
    json::error_code ec;
    auto v = json::parse(ss.str(), ec);
    if (ec || !v.is_object())
        throw Failure{config_path(db).string() + ": not a valid configuration file"};
    const auto& o = v.as_object();
    Config c;
    auto str = [&](const char* k) -> std::string {
        if (auto* x = o.if_contains(k); x && x->is_string()) return std::string(x->as_string());
        return "";
    };
    c.server = str("server");
    c.user = str("user");
    c.ca_file = str("ca_file");
    if (auto* pins = o.if_contains("pins"); pins && pins->is_array())
        for (const auto& pin : pins->as_array())
            if (pin.is_string()) c.pins.emplace_back(pin.as_string());
    return c;
}

void save_config(const fs::path& db, const Config& c) {
    json::object o;
    o["server"] = c.server;
    o["user"] = c.user;
    if (!c.ca_file.empty()) o["ca_file"] = c.ca_file;
    json::array pins;
    for (const auto& pin : c.pins)
        pins.emplace_back(pin);
    o["pins"] = std::move(pins);
    const auto tmp = fs::path(config_path(db).string() + ".tmp");
    {
        std::ofstream out(tmp, std::ios::trunc);
        out << p::json_text(o) << "\n";
        if (!out) throw Failure{"cannot write " + tmp.string()};
    }
    fs::rename(tmp, config_path(db));
}

Config require_config(const fs::path& db) {
    auto c = load_config(db);
    if (!c)
        throw Failure{"this tablet is not set up (" + config_path(db).string() +
                          " is missing): run `fieldsync-tablet --db " + db.string() +
                          " init --server URL --user NAME` first",
                      "not_initialized"};
    return *c;
}

// --- Replica helpers ------------------------------------------------------------------------

std::shared_ptr<fieldsync::Replica> open_replica(const fs::path& db) {
    auto r = fieldsync::Replica::open(db);
    if (!r) throw Failure{r.error().message, "internal"};
    return *r;
}

std::string errc_name(const fieldsync::Error& e) {
    if (e.code.category() == p::protocol_category())
        return p::to_string(static_cast<p::protocol_errc>(e.code.value()));
    if (e.code.category() == fieldsync::transport_category()) {
        switch (static_cast<fieldsync::transport_errc>(e.code.value())) {
            case fieldsync::transport_errc::closed:
                return "closed";
            case fieldsync::transport_errc::connect_failed:
                return "connect_failed";
            case fieldsync::transport_errc::tls_failed:
                return "tls_failed";
            case fieldsync::transport_errc::pin_mismatch:
                return "pin_mismatch";
            case fieldsync::transport_errc::handshake_failed:
                return "handshake_failed";
            case fieldsync::transport_errc::timeout:
                return "timeout";
            case fieldsync::transport_errc::protocol_error:
                return "protocol_error";
            case fieldsync::transport_errc::invalid_url:
                return "invalid_url";
            case fieldsync::transport_errc::network:
                return "network";
        }
    }
    return "error";
}

Failure failure(const fieldsync::Error& e) {
    return Failure{e.message, errc_name(e)};
}

std::shared_ptr<const p::Schema> require_schema(const fieldsync::Replica& r) {
    auto s = r.schema();
    if (!s)
        throw Failure{"no survey schema yet: run `fieldsync-tablet sync` once",
                      "validation_failed"};
    return s;
}

/// "household" -> "households": the collection named, or named with an "s".
const p::CollectionDef& resolve_collection(const p::Schema& schema, const std::string& name) {
    if (const auto* c = schema.find(name)) return *c;
    if (const auto* c = schema.find(name + "s")) return *c;
    std::string known;
    for (const auto& c : schema.collections())
        known += (known.empty() ? "" : ", ") + c.name;
    throw Failure{"no collection named \"" + name + "\" (the survey has " + known + ")",
                  "validation_failed"};
}

p::RecordId parse_id(const std::string& text) {
    auto id = p::RecordId::parse(text);
    if (!id)
        throw Failure{"\"" + text + "\" is not a record id: " + id.error().message,
                      "invalid_value"};
    return *id;
}

std::vector<std::string> split(const std::string& s, char sep) {
    std::vector<std::string> out;
    std::string cur;
    for (char c : s) {
        if (c == sep) {
            out.push_back(cur);
            cur.clear();
        } else {
            cur += c;
        }
    }
    out.push_back(cur);
    return out;
}

std::string trim(std::string s) {
    const auto b = s.find_first_not_of(" \t\r\n");
    const auto e = s.find_last_not_of(" \t\r\n");
    return b == std::string::npos ? "" : s.substr(b, e - b + 1);
}

/// The JSON text of a command-line value for `field` (see the help footer).
std::string value_json(const p::FieldDef& field, const std::string& raw, const std::string& where) {
    if (raw.empty()) return field.type == p::FieldType::multi ? "[]" : "null";
    auto quoted = [](const std::string& s) {
        return json::serialize(json::value(json::string(s)));
    };
    switch (field.type) {
        case p::FieldType::integer:
        case p::FieldType::counter: {
            std::size_t used = 0;
            try {
                const long long n = std::stoll(raw, &used);
                if (used == raw.size()) return std::to_string(n);
            } catch (const std::exception&) {
            }
            throw Failure{where + ": \"" + raw + "\" is not an integer", "validation_failed"};
        }
        case p::FieldType::boolean:
            if (raw == "true" || raw == "yes" || raw == "1") return "true";
            if (raw == "false" || raw == "no" || raw == "0") return "false";
            throw Failure{where + ": \"" + raw + "\" is not a boolean (true or false)",
                          "validation_failed"};
        case p::FieldType::geo: {
            auto parts = split(raw, ',');
            if (parts.size() != 2)
                throw Failure{where + ": \"" + raw + "\" is not a geo point (LAT,LON in degrees)",
                              "validation_failed"};
            return "{\"lat\":" + trim(parts[0]) + ",\"lon\":" + trim(parts[1]) + "}";
        }
        case p::FieldType::multi: {
            std::string out = "[";
            bool first = true;
            for (const auto& code : split(raw, ',')) {
                if (trim(code).empty()) continue;
                out += (first ? "" : ",") + quoted(trim(code));
                first = false;
            }
            return out + "]";
        }
        default:
            return quoted(raw);
    }
}

/// key=value arguments -> JSON values per field, typed by the collection's fields.
fieldsync::JsonFields parse_assignments(const p::CollectionDef& coll,
                                        const std::vector<std::string>& args) {
    fieldsync::JsonFields out;
    for (const auto& arg : args) {
        const auto eq = arg.find('=');
        if (eq == std::string::npos || eq == 0)
            throw Failure{"\"" + arg + "\": expected FIELD=VALUE", "validation_failed"};
        const std::string name = arg.substr(0, eq);
        const auto* field = coll.find(name);
        if (!field) {
            std::string known;
            for (const auto& f : coll.fields)
                known += (known.empty() ? "" : ", ") + f.name;
            throw Failure{coll.name + ": no field named \"" + name + "\" (fields: " + known + ")",
                          "validation_failed"};
        }
        out[name] = value_json(*field, arg.substr(eq + 1), coll.name + ": field " + name);
    }
    return out;
}

// --- Output ---------------------------------------------------------------------------------

json::value to_jv(const p::Value& v) {
    return json::parse(p::value_to_json(v));
}

std::string display(const p::Value& v) {
    if (const auto* s = std::get_if<std::string>(&v)) return *s;
    return p::to_display(v);
}

json::object record_json(const fieldsync::RecordView& v) {
    json::object o;
    o["collection"] = v.collection;
    o["id"] = v.id.to_string();
    o["area"] = v.area;
    o["deleted"] = v.deleted;
    o["delete_conflict"] = v.delete_conflict;
    o["sync"] = fieldsync::to_string(v.sync);
    if (v.sync == fieldsync::SyncStatus::rejected)
        o["reject"] = json::object{{"code", v.reject_code}, {"reason", v.reject_reason}};
    json::object fields;
    for (const auto& [name, r] : v.fields) {
        if (r.rule == p::MergeRule::set) {
            json::array a;
            for (const auto& e : r.elements)
                a.push_back(to_jv(e));
            fields[name] = std::move(a);
        } else {
            fields[name] = to_jv(r.value);
        }
    }
    o["fields"] = std::move(fields);
    json::object conflicts;
    for (const auto& name : v.conflicts) {
        auto view = v.state.view(name);
        if (!view) continue;
        json::array values;
        for (const auto& e : view->competing)
            values.push_back(json::object{{"value", to_jv(e.value)},
                                          {"by", e.by},
                                          {"replica", e.dot.replica.to_string()},
                                          {"at", p::iso8601_utc(e.ts.wall_ms())}});
        conflicts[name] = std::move(values);
    }
    o["conflicts"] = std::move(conflicts);
    return o;
}

std::string flags(const fieldsync::RecordView& v) {
    std::string f;
    if (!v.conflicts.empty()) f += "C";
    if (v.sync == fieldsync::SyncStatus::pending) f += "P";
    if (v.sync == fieldsync::SyncStatus::rejected) f += "R";
    if (v.deleted) f += "D";
    return f.empty() ? "-" : f;
}

// --- Progress -------------------------------------------------------------------------------

std::atomic<bool> g_interrupted{false};
void on_signal(int) {
    g_interrupted = true;
}

class Progress {
public:
    explicit Progress(bool enabled)
        : m_enabled(enabled), m_tty(enabled && ::isatty(STDOUT_FILENO)) {}

    void update(const fieldsync::ReplicatorStatus& s) {
        if (!m_enabled) return;
        std::string line = fieldsync::to_string(s.state);
        if (s.state == fieldsync::ReplicatorState::pushing || s.pushed > 0)
            line += " | pushed " + std::to_string(s.pushed) + "/" + std::to_string(s.push_total);
        if (s.state == fieldsync::ReplicatorState::pulling || s.pulled > 0)
            line += " | pulled " + std::to_string(s.pulled) + " (" + std::to_string(s.pages) +
                    " pages)";
        if (s.rejected) line += " | refused " + std::to_string(s.rejected);
        line += " | pending " + std::to_string(s.pending);
        if (s.state == fieldsync::ReplicatorState::offline)
            line += " | retry in " + std::to_string((s.retry_in_ms + 999) / 1000) + " s (attempt " +
                    std::to_string(s.attempt) + ")";
        if (s.last_error) line += " | " + s.last_error->message;
        std::lock_guard lock(m_mutex);
        if (line == m_last) return;
        m_last = line;
        if (m_tty) {
            std::cout << "\r\033[K" << line << std::flush;  // one line, rewritten in place
        } else {
            std::cout << "sync: " << line << "\n" << std::flush;
        }
    }
    void finish() {
        if (m_tty && !m_last.empty()) std::cout << "\n" << std::flush;
    }

private:
    bool m_enabled;
    bool m_tty;
    std::mutex m_mutex;
    std::string m_last;
};

fieldsync::ReplicatorOptions replicator_options(const Config& c, fieldsync::Credentials creds) {
    fieldsync::ReplicatorOptions o;
    o.url = c.server;
    o.credentials = std::move(creds);
    o.app = "fieldsync-tablet/0.1";
    o.websocket.ca_file = c.ca_file;
    o.websocket.pins = c.pins;
    return o;
}

std::string read_password(const std::string& file, const std::string& user) {
    std::string pw;
    if (!file.empty()) {
        std::ifstream in(file);
        if (!in) throw Failure{"cannot read the password file " + file};
        std::getline(in, pw);
    } else if (::isatty(STDIN_FILENO)) {
        std::cerr << "Password for " << user << ": " << std::flush;
        termios old{};
        ::tcgetattr(STDIN_FILENO, &old);
        termios quiet = old;
        quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
        ::tcsetattr(STDIN_FILENO, TCSANOW, &quiet);
        std::getline(std::cin, pw);
        ::tcsetattr(STDIN_FILENO, TCSANOW, &old);
        std::cerr << "\n";
    } else {
        std::getline(std::cin, pw);
    }
    while (!pw.empty() && (pw.back() == '\n' || pw.back() == '\r'))
        pw.pop_back();
    if (pw.empty()) throw Failure{"empty password"};
    return pw;
}

json::object status_json(const fieldsync::ReplicatorStatus& s) {
    json::object o{{"state", fieldsync::to_string(s.state)},
                   {"up_to_date", s.up_to_date},
                   {"pushed", s.pushed},
                   {"push_total", s.push_total},
                   {"rejected", s.rejected},
                   {"pulled", s.pulled},
                   {"pages", s.pages},
                   {"cursor", s.cursor},
                   {"pending", s.pending}};
    if (s.last_error)
        o["error"] =
            json::object{{"code", errc_name(*s.last_error)}, {"message", s.last_error->message}};
    return o;
}

// --- The tool -------------------------------------------------------------------------------

struct Tool {
    std::string db = "tablet.db";
    bool as_json = false;

    void print(const json::value& v) const { std::cout << p::json_text(v) << "\n"; }

    int init(const std::string& server, const std::string& user, const std::string& password_file,
             const std::string& ca_file, const std::vector<std::string>& pins, int timeout_s) {
        if (auto url = fieldsync::parse_sync_url(server); !url) throw failure(url.error());
        for (const auto& pin : pins)
            if (auto raw = fieldsync::parse_spki_pin(pin); !raw) throw failure(raw.error());
        Config c{server, user, ca_file, pins};
        if (auto old = load_config(db); old && old->user != user)
            std::cerr << "note: this tablet was set up for " << old->user << "; now " << user
                      << "\n";
        const std::string password = read_password(password_file, user);
        auto replica = open_replica(db);
        Progress progress(!as_json);
        auto options = replicator_options(c, {user, password, ""});
        options.on_status = [&](const fieldsync::ReplicatorStatus& s) { progress.update(s); };
        fieldsync::Replicator r(replica, std::move(options));
        auto st = r.sync_once(std::chrono::seconds(timeout_s));
        progress.finish();
        if (!st)
            throw Failure{"login and first sync failed: " + st.error().message,
                          errc_name(st.error())};
        save_config(db, c);
        auto info = replica->sync_info();
        if (!info) throw failure(info.error());
        if (as_json) {
            json::array scope;
            for (const auto& a : info->scope)
                scope.emplace_back(a);
            print(json::object{{"ok", true},
                               {"db", db},
                               {"server", server},
                               {"user", info->user},
                               {"role", info->role},
                               {"scope", std::move(scope)},
                               {"schema_version", info->schema_version},
                               {"device_id", info->device_id.to_string()}});
        } else {
            std::cout << "tablet " << db << " set up for " << info->user << " (" << info->role
                      << ") at " << server << "\nscope: ";
            for (std::size_t i = 0; i < info->scope.size(); ++i)
                std::cout << (i ? ", " : "") << info->scope[i];
            std::cout << "\nsurvey schema version " << info->schema_version
                      << "; the password was not stored\n";
        }
        return exit_ok;
    }

    int add(const std::string& collection, const std::vector<std::string>& args) {
        auto replica = open_replica(db);
        auto schema = require_schema(*replica);
        const auto& coll = resolve_collection(*schema, collection);
        auto id = replica->create_json(coll.name, parse_assignments(coll, args));
        if (!id) throw failure(id.error());
        if (as_json)
            print(json::object{{"ok", true}, {"collection", coll.name}, {"id", id->to_string()}});
        else
            std::cout << id->to_string() << "\n";
        return exit_ok;
    }

    int edit(const std::string& collection, const std::string& id,
             const std::vector<std::string>& args) {
        auto replica = open_replica(db);
        auto schema = require_schema(*replica);
        const auto& coll = resolve_collection(*schema, collection);
        if (args.empty())
            throw Failure{"nothing to change: give FIELD=VALUE arguments", "validation_failed"};
        auto st = replica->update_json(coll.name, parse_id(id), parse_assignments(coll, args));
        if (!st) throw failure(st.error());
        if (as_json) print(json::object{{"ok", true}, {"collection", coll.name}, {"id", id}});
        return exit_ok;
    }

    int remove(const std::string& collection, const std::string& id) {
        auto replica = open_replica(db);
        auto schema = require_schema(*replica);
        const auto& coll = resolve_collection(*schema, collection);
        auto st = replica->remove(coll.name, parse_id(id));
        if (!st) throw failure(st.error());
        if (as_json) print(json::object{{"ok", true}, {"collection", coll.name}, {"id", id}});
        return exit_ok;
    }

    int list(const std::string& collection, const std::string& area,
             const std::vector<std::string>& where, bool conflicts, bool deleted, bool unsynced) {
        auto replica = open_replica(db);
        auto schema = require_schema(*replica);
        const auto& coll = resolve_collection(*schema, collection);
        fieldsync::Filter f;
        f.area_prefix = area;
        f.only_conflicts = conflicts;
        f.include_deleted = deleted;
        f.only_unsynced = unsynced;
        for (const auto& [name, text] : parse_assignments(coll, where)) {
            auto v = p::value_from_json(text, *coll.find(name));
            if (!v) throw failure(v.error());
            f.equals.emplace(name, *v);
        }
        auto records = replica->list(coll.name, f);
        if (!records) throw failure(records.error());
        if (as_json) {
            json::array a;
            for (const auto& r : *records)
                a.push_back(record_json(r));
            print(a);
            return exit_ok;
        }
        // Columns: id, flags, then up to three declared fields (required ones first), area.
        std::vector<std::string> cols;
        for (int pass = 0; pass < 2; ++pass)
            for (const auto& fd : coll.fields)
                if (fd.name != coll.area_field && fd.required == (pass == 0) && cols.size() < 3)
                    cols.push_back(fd.name);
        std::vector<std::vector<std::string>> rows;
        rows.push_back({"id", "flags"});
        for (const auto& c : cols)
            rows.back().push_back(c);
        rows.back().push_back("area");
        for (const auto& r : *records) {
            std::vector<std::string> row{r.id.to_string(), flags(r)};
            for (const auto& c : cols) {
                const auto it = r.fields.find(c);
                std::string text = "-";
                if (it != r.fields.end()) {
                    if (it->second.rule == p::MergeRule::set) {
                        text.clear();
                        for (const auto& e : it->second.elements)
                            text += (text.empty() ? "" : ",") + display(e);
                    } else {
                        text = display(it->second.value);
                    }
                    if (it->second.conflict) text += " (?)";
                }
                row.push_back(text);
            }
            row.push_back(r.area);
            rows.push_back(std::move(row));
        }
        std::vector<std::size_t> width(rows.front().size(), 0);
        for (const auto& row : rows)
            for (std::size_t i = 0; i < row.size(); ++i)
                width[i] = std::max(width[i], row[i].size());
        for (const auto& row : rows) {
            for (std::size_t i = 0; i < row.size(); ++i)
                std::cout << row[i]
                          << (i + 1 < row.size() ? std::string(width[i] - row[i].size() + 2, ' ')
                                                 : "");
            std::cout << "\n";
        }
        std::cout << records->size()
                  << " record(s). Flags: C conflict, P pending upload, R refused by the server, D "
                     "deleted\n";
        return exit_ok;
    }

    int show(const std::string& collection, const std::string& id) {
        auto replica = open_replica(db);
        auto schema = require_schema(*replica);
        const auto& coll = resolve_collection(*schema, collection);
        auto got = replica->get(coll.name, parse_id(id));
        if (!got) throw failure(got.error());
        if (!*got)
            throw Failure{coll.name + "/" + id + ": no such record on this tablet", "not_found"};
        const auto& v = **got;
        if (as_json) {
            print(record_json(v));
            return exit_ok;
        }
        std::cout << coll.name << "/" << v.id.to_string()
                  << "\n  area: " << (v.area.empty() ? "-" : v.area)
                  << "\n  sync: " << fieldsync::to_string(v.sync);
        if (v.sync == fieldsync::SyncStatus::rejected)
            std::cout << " (" << v.reject_code << ": " << v.reject_reason << ")";
        std::cout << "\n";
        if (v.deleted) std::cout << "  DELETED\n";
        auto print_competing = [&](const std::string& name) {
            auto view = v.state.view(name);
            if (!view) return;
            for (const auto& e : view->competing)
                std::cout << "        - " << display(e.value) << "  by " << e.by << " at "
                          << p::iso8601_utc(e.ts.wall_ms()) << "\n";
        };
        if (v.delete_conflict) {
            std::cout
                << "  CONFLICT: deleted on one tablet, edited on another (a supervisor decides)\n";
            print_competing(std::string(p::deleted_field));
        }
        std::size_t width = 0;
        for (const auto& fd : coll.fields)
            width = std::max(width, fd.name.size());
        auto line = [&](const std::string& name, const fieldsync::FieldReading* r) {
            std::cout << "  " << name
                      << std::string(width + 2 - std::min(width + 1, name.size()), ' ');
            if (!r) {
                std::cout << "-\n";
                return;
            }
            if (r->rule == p::MergeRule::set) {
                std::string text;
                for (const auto& e : r->elements)
                    text += (text.empty() ? "" : ", ") + display(e);
                std::cout << (text.empty() ? "(none)" : text) << "\n";
            } else {
                std::cout << display(r->value);
                if (r->conflict)
                    std::cout << "   [CONFLICT: " << r->competing.size()
                              << " values, supervisor review]";
                if (!r->declared) std::cout << "   (field of a newer survey version)";
                std::cout << "\n";
                if (r->conflict) print_competing(name);
            }
        };
        for (const auto& fd : coll.fields) {
            auto it = v.fields.find(fd.name);
            line(fd.name, it == v.fields.end() ? nullptr : &it->second);
        }
        for (const auto& [name, r] : v.fields)
            if (!coll.find(name)) line(name, &r);
        return exit_ok;
    }

    int sync(bool continuous, int timeout_s) {
        const Config c = require_config(db);
        auto replica = open_replica(db);
        Progress progress(!as_json);
        auto options = replicator_options(c, {c.user, "", ""});
        options.on_status = [&](const fieldsync::ReplicatorStatus& s) { progress.update(s); };
        if (!continuous) {
            fieldsync::Replicator r(replica, std::move(options));
            auto st = r.sync_once(std::chrono::seconds(timeout_s > 0 ? timeout_s : 120));
            progress.finish();
            if (as_json) {
                auto o = status_json(r.status());
                o["ok"] = st.ok();
                if (!st)
                    o["error"] = json::object{{"code", errc_name(st.error())},
                                              {"message", st.error().message}};
                print(o);
                if (!st)
                    std::cerr << "fieldsync-tablet: error: sync failed: " << st.error().message
                              << "\n";
                return st ? exit_ok : exit_failed;
            }
            if (!st) {
                std::string msg = st.error().message;
                if (st.error().code == p::protocol_errc::unauthenticated)
                    msg += " (run `fieldsync-tablet init` again to sign in)";
                throw Failure{"sync failed: " + msg, errc_name(st.error())};
            }
            if (!as_json) {
                const auto s = r.status();
                std::cout << "sync complete: pushed " << s.pushed << ", pulled " << s.pulled
                          << ", refused " << s.rejected << ", pending " << s.pending << "\n";
            }
            return exit_ok;
        }
        options.mode = fieldsync::ReplicatorMode::continuous;
        options.poll_outbox_ms = 1000;  // `add`/`edit` run as other processes
        std::signal(SIGINT, on_signal);
        std::signal(SIGTERM, on_signal);
        fieldsync::Replicator r(replica, std::move(options));
        r.start();
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
        while (!g_interrupted && r.running() &&
               (timeout_s <= 0 || std::chrono::steady_clock::now() < deadline))
            std::this_thread::sleep_for(100ms);
        const bool ended_by_itself = !r.running();
        r.stop();
        progress.finish();
        const auto s = r.status();
        if (as_json) print(status_json(s));
        if (ended_by_itself && s.last_error) throw failure(*s.last_error);
        return exit_ok;
    }

    int status() {
        auto replica = open_replica(db);
        const auto c = load_config(db);
        auto info = replica->sync_info();
        if (!info) throw failure(info.error());
        auto rejected = replica->rejected();
        if (!rejected) throw failure(rejected.error());
        if (as_json) {
            json::array rej;
            for (const auto& r : *rejected)
                rej.push_back(json::object{{"collection", r.collection},
                                           {"id", r.id.to_string()},
                                           {"code", r.code},
                                           {"reason", r.reason}});
            json::array scope;
            for (const auto& a : info->scope)
                scope.emplace_back(a);
            json::object o{{"db", db},
                           {"server", c ? c->server : ""},
                           {"user", info->user.empty() && c ? c->user : info->user},
                           {"role", info->role},
                           {"scope", std::move(scope)},
                           {"device_id", info->device_id.to_string()},
                           {"schema_version", info->schema_version},
                           {"cursor", info->cursor},
                           {"signed_in", info->has_token},
                           {"pending", info->pending},
                           {"rejected", std::move(rej)}};
            o["last_sync"] = info->last_sync_ms ? json::value(p::iso8601_utc(info->last_sync_ms))
                                                : json::value(nullptr);
            if (info->last_error)
                o["last_error"] = json::object{{"code", errc_name(*info->last_error)},
                                               {"message", info->last_error->message},
                                               {"at", p::iso8601_utc(info->last_error_ms)}};
            else
                o["last_error"] = nullptr;
            print(o);
            return exit_ok;
        }
        std::cout << "server:          " << (c ? c->server : "(not set up: run init)") << "\n"
                  << "user:            " << (info->user.empty() ? (c ? c->user : "-") : info->user)
                  << (info->role.empty() ? "" : " (" + info->role + ")")
                  << (info->has_token ? "" : ", not signed in") << "\n"
                  << "device:          " << info->device_id.to_string() << "\n"
                  << "survey schema:   "
                  << (info->schema_version ? "version " + std::to_string(info->schema_version)
                                           : "none yet")
                  << "\n"
                  << "last sync:       "
                  << (info->last_sync_ms ? p::iso8601_utc(info->last_sync_ms) : "never") << "\n"
                  << "pending changes: " << info->pending << "\n";
        if (info->last_error)
            std::cout << "last error:      " << info->last_error->message << " ("
                      << p::iso8601_utc(info->last_error_ms) << ")\n";
        std::cout << "refused by the server: " << rejected->size() << "\n";
        for (const auto& r : *rejected)
            std::cout << "  " << r.collection << "/" << r.id.to_string() << "  " << r.code << ": "
                      << r.reason << "\n";
        return exit_ok;
    }
};

}  // namespace

int main(int argc, char** argv) {
    Tool tool;
    CLI::App app{"fieldsync-tablet: a tablet on the command line (a local replica that syncs)",
                 "fieldsync-tablet"};
    app.footer(help_footer);
    app.require_subcommand(1);
    app.add_option("--db", tool.db, "replica file (default ./tablet.db; settings in FILE.conf)");
    app.add_flag("--json", tool.as_json, "machine-readable JSON output (errors too)");

    std::string server, user, password_file, ca_file;
    std::vector<std::string> pins;
    int init_timeout = 60;
    auto* init = app.add_subcommand("init", "set up this tablet for a server and an account");
    init->add_option("--server", server, "ws://host:port or wss://host:port (path /sync)")
        ->required();
    init->add_option("--user", user, "user name")->required();
    init->add_option("--password-file", password_file,
                     "read the password from this file (else prompt)");
    init->add_option("--ca-file", ca_file,
                     "PEM file of trusted CAs for wss:// (default: system store)");
    init->add_option("--pin", pins, "certificate pin sha256/BASE64 of the server key (repeatable)");
    init->add_option("--timeout", init_timeout, "seconds for the first sync (default 60)");

    std::string collection, id;
    std::vector<std::string> fields;
    auto* add =
        app.add_subcommand("add", "add a record: add household|member|visit FIELD=VALUE...");
    add->add_option("collection", collection, "household(s), member(s), visit(s)")->required();
    add->add_option("fields", fields, "FIELD=VALUE")->required();

    auto* edit = app.add_subcommand("edit", "change fields: edit COLLECTION ID FIELD=VALUE...");
    edit->add_option("collection", collection)->required();
    edit->add_option("id", id)->required();
    edit->add_option("fields", fields, "FIELD=VALUE")->required();

    auto* del = app.add_subcommand("delete", "delete a record: delete COLLECTION ID");
    del->add_option("collection", collection)->required();
    del->add_option("id", id)->required();

    std::string area;
    std::vector<std::string> where;
    bool conflicts = false, deleted = false, unsynced = false;
    auto* list =
        app.add_subcommand("list", "list records: list COLLECTION [--area A] [--where F=V]...");
    list->add_option("collection", collection)->required();
    list->add_option("--area", area, "only this area and below");
    list->add_option("--where", where, "FIELD=VALUE (repeatable; all must hold)");
    list->add_flag("--conflicts", conflicts, "only records with a conflict");
    list->add_flag("--deleted", deleted, "include deleted records");
    list->add_flag("--unsynced", unsynced, "only records not yet accepted by the server");

    auto* show = app.add_subcommand("show", "one record, its conflicts and competing values");
    show->add_option("collection", collection)->required();
    show->add_option("id", id)->required();

    bool continuous = false;
    int timeout = 0;
    auto* sync = app.add_subcommand("sync", "upload local changes and download the server's");
    sync->add_flag("--continuous", continuous,
                   "stay connected (Ctrl-C to stop); reconnects with backoff");
    sync->add_option("--timeout", timeout,
                     "give up after S seconds (default 120; continuous: run for S seconds)");

    auto* status =
        app.add_subcommand("status", "pending changes, refused records, last sync, server, user");

    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        const int rc = app.exit(e);
        return rc == 0 ? exit_ok : exit_usage;
    }

    try {
        if (*init) return tool.init(server, user, password_file, ca_file, pins, init_timeout);
        if (*add) return tool.add(collection, fields);
        if (*edit) return tool.edit(collection, id, fields);
        if (*del) return tool.remove(collection, id);
        if (*list) return tool.list(collection, area, where, conflicts, deleted, unsynced);
        if (*show) return tool.show(collection, id);
        if (*sync) return tool.sync(continuous, timeout);
        if (*status) return tool.status();
    } catch (const Failure& f) {
        if (tool.as_json)
            std::cout << json::serialize(json::object{
                             {"ok", false},
                             {"error", json::object{{"code", f.code}, {"message", f.message}}}})
                      << "\n";
        std::cerr << "fieldsync-tablet: error: " << f.message << "\n";
        return exit_failed;
    } catch (const std::exception& e) {
        std::cerr << "fieldsync-tablet: error: " << e.what() << "\n";
        return exit_failed;
    }
    return exit_usage;
}
