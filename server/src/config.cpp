// The server's configuration file. Contract: fieldsync/server/server.hpp; every key is listed
// in docs/operations.md. The file is a JSON object; nested "limits" holds the size limits.
// Loading is strict, like the schema loader: an unknown key is an error naming it, so a typo
// never silently leaves a default in force.
#include <boost/json.hpp>

#include <algorithm>
#include <fstream>
#include <limits>
#include <sstream>

#include "fieldsync/server/log.hpp"
#include "fieldsync/server/server.hpp"

namespace fieldsync::server {

namespace {

namespace json = boost::json;
using protocol::Error;
using protocol::protocol_errc;

class Reader {
public:
    Reader(std::string file, std::filesystem::path base_dir)
        : m_file(std::move(file)), m_base(std::move(base_dir)) {}

    Error problem(const std::string& key, const std::string& what) const {
        return Error{protocol_errc::invalid_value, m_file + ": \"" + key + "\": " + what};
    }

    Status string(const json::value& v, const std::string& key, std::string& out) const {
        if (!v.is_string()) return problem(key, "expected a string");
        out = std::string(v.get_string());
        return {};
    }
    Status path(const json::value& v, const std::string& key, std::filesystem::path& out) const {
        std::string s;
        if (auto st = string(v, key, s); !st) return st;
        std::filesystem::path p(s);
        out = (s.empty() || p.is_absolute()) ? p : m_base / p;
        return {};
    }
    Status boolean(const json::value& v, const std::string& key, bool& out) const {
        if (!v.is_bool()) return problem(key, "expected true or false");
        out = v.get_bool();
        return {};
    }
    template <class T>
    Status number(const json::value& v, const std::string& key, T& out, std::int64_t min,
                  std::int64_t max) const {
        std::int64_t n = 0;
        if (v.is_int64()) {
            n = v.get_int64();
        } else if (v.is_uint64() && v.get_uint64() <= static_cast<std::uint64_t>(max)) {
            n = static_cast<std::int64_t>(v.get_uint64());
        } else if (v.is_uint64()) {
            return problem(key, "must be at most " + std::to_string(max));
        } else {
            return problem(key, "expected an integer");
        }
        if (n < min || n > max)
            return problem(
                key, "must be between " + std::to_string(min) + " and " + std::to_string(max));
        out = static_cast<T>(n);
        return {};
    }

private:
    std::string m_file;
    std::filesystem::path m_base;
};

constexpr std::int64_t kMaxSize = std::int64_t{1} << 40;

}  // namespace

Result<ServerConfig> load_config_file(const std::filesystem::path& file, ServerConfig c) {
    const std::string name = file.string();
    std::ifstream in(file, std::ios::binary);
    if (!in) return Error{protocol_errc::invalid_value, name + ": cannot read the file"};
    std::ostringstream buf;
    buf << in.rdbuf();
    std::string text = buf.str();

    json::parse_options opts;
    opts.max_depth = 16;
    boost::system::error_code ec;
    json::value doc = json::parse(text, ec, {}, opts);
    if (ec) {
        // Boost.JSON does not report a position; count the lines of the valid prefix instead.
        json::stream_parser p({}, opts);
        boost::system::error_code where;
        std::size_t used = p.write_some(text.data(), text.size(), where);
        if (!where) p.finish(where);  // the text ended too early
        if (where) ec = where;
        std::size_t line =
            1 + static_cast<std::size_t>(std::count(
                    text.begin(), text.begin() + static_cast<std::ptrdiff_t>(used), '\n'));
        return Error{protocol_errc::invalid_value, name + ": line " + std::to_string(line) +
                                                       ": not valid JSON (" + ec.message() + ")"};
    }
    if (!doc.is_object())
        return Error{protocol_errc::invalid_value, name + ": expected a JSON object"};

    auto base = file.parent_path();
    Reader r(name, base.empty() ? std::filesystem::path(".") : base);
    for (const auto& [k, v] : doc.get_object()) {
        const std::string key(k);
        Status st;
        if (key == "listen")
            st = r.string(v, key, c.listen_address);
        else if (key == "port")
            st = r.number(v, key, c.port, 0, 65535);
        else if (key == "tls_cert")
            st = r.path(v, key, c.tls_cert);
        else if (key == "tls_key")
            st = r.path(v, key, c.tls_key);
        else if (key == "allow_plain")
            st = r.boolean(v, key, c.allow_plain);
        else if (key == "io_threads")
            st = r.number(v, key, c.io_threads, 1, 64);
        else if (key == "data_dir")
            st = r.path(v, key, c.data_dir);
        else if (key == "db_file")
            st = r.string(v, key, c.db_file);
        else if (key == "console_dir")
            st = r.path(v, key, c.console_dir);
        else if (key == "schema_file")
            st = r.path(v, key, c.schema_file);
        else if (key == "demo")
            st = r.boolean(v, key, c.demo);
        else if (key == "demo_records")
            st = r.boolean(v, key, c.demo_records);
        else if (key == "log_level")
            st = r.string(v, key, c.log_level);
        else if (key == "tombstone_retention_days")
            st = r.number(v, key, c.tombstone_retention_days, 0, 36500);
        else if (key == "sync_token_lifetime_hours") {
            std::int64_t h = 0;
            st = r.number(v, key, h, 1, 24 * 3650);
            if (st) c.sync_token_lifetime_ms = h * 3600 * 1000;
        } else if (key == "api_token_lifetime_hours") {
            std::int64_t h = 0;
            st = r.number(v, key, h, 1, 24 * 365);
            if (st) c.api_token_lifetime_ms = h * 3600 * 1000;
        } else if (key == "password_iterations") {
            st = r.number(v, key, c.password_iterations, 1000, 10'000'000);
        } else if (key == "shutdown_grace_seconds") {
            std::int64_t s = 0;
            st = r.number(v, key, s, 0, 3600);
            if (st) c.shutdown_grace = std::chrono::seconds(s);
        } else if (key == "limits") {
            if (!v.is_object()) return r.problem(key, "expected an object");
            for (const auto& [lk, lv] : v.get_object()) {
                const std::string sub(lk);
                const std::string full = "limits." + sub;
                Status ls;
                if (sub == "max_frame_bytes")
                    ls = r.number(lv, full, c.max_frame_bytes, 1024, kMaxSize);
                else if (sub == "max_batch")
                    ls = r.number(lv, full, c.max_batch, 1, 1'000'000);
                else if (sub == "max_page")
                    ls = r.number(lv, full, c.max_page, 1, 1'000'000);
                else if (sub == "max_pending_bytes")
                    ls = r.number(lv, full, c.max_pending_bytes, 1024, kMaxSize);
                else if (sub == "max_connections")
                    ls = r.number(lv, full, c.max_connections, 1, 10'000'000);
                else if (sub == "max_body_bytes")
                    ls = r.number(lv, full, c.max_body_bytes, 1024, kMaxSize);
                else if (sub == "max_clock_ahead_seconds") {
                    std::int64_t s = 0;
                    ls = r.number(lv, full, s, 1, 365ll * 24 * 3600);
                    if (ls) c.max_clock_ahead_ms = s * 1000;
                } else {
                    return Error{protocol_errc::invalid_value,
                                 name + ": unknown key \"" + full + "\""};
                }
                if (!ls) return ls.error();
            }
        } else {
            return Error{protocol_errc::invalid_value, name + ": unknown key \"" + key + "\""};
        }
        if (!st) return st.error();
    }
    return c;
}

Status validate(const ServerConfig& c) {
    auto bad = [](std::string m) {
        return Status(Error{protocol_errc::invalid_value, std::move(m)});
    };
    if (c.tls_cert.empty() != c.tls_key.empty())
        return bad(c.tls_cert.empty()
                       ? "a TLS key is set but no certificate: set both --tls-cert and --tls-key"
                       : "a TLS certificate is set but no key: set both --tls-cert and --tls-key");
    if (!c.tls_enabled() && !c.allow_plain)
        return bad(
            "no TLS certificate is configured, and plain (unencrypted) HTTP/WebSocket is off.\n"
            "  Either make a certificate and key:  fieldsync-mkcert --out <data-dir>/tls\n"
            "    then start with --tls-cert <data-dir>/tls/cert.pem --tls-key "
            "<data-dir>/tls/key.pem,\n"
            "  or, for a local trial only, allow plain connections with --plain.");
    if (c.listen_address.empty()) return bad("the listen address is empty (e.g. 127.0.0.1)");
    if (c.io_threads < 1 || c.io_threads > 64) return bad("io_threads must be between 1 and 64");
    if (c.db_file.empty() || c.db_file.find('/') != std::string::npos)
        return bad("db_file must be a plain file name inside data_dir");
    if (c.data_dir.empty()) return bad("data_dir is empty");
    if (c.max_frame_bytes < 1024) return bad("max_frame_bytes must be at least 1024");
    if (c.max_pending_bytes < 1024) return bad("max_pending_bytes must be at least 1024");
    if (c.max_pending_bytes < c.max_frame_bytes)
        return bad("max_pending_bytes (" + std::to_string(c.max_pending_bytes) +
                   ") must be at least max_frame_bytes (" + std::to_string(c.max_frame_bytes) +
                   "): a connection must be able to queue its largest frame");
    if (c.max_batch < 1 || c.max_page < 1) return bad("max_batch and max_page must be at least 1");
    if (c.max_connections < 1) return bad("max_connections must be at least 1");
    if (c.max_body_bytes < 1024) return bad("max_body_bytes must be at least 1024");
    if (!log::parse_level(c.log_level))
        return bad("unknown log level \"" + c.log_level + "\" (debug, info, warn, error, off)");
    return {};
}

}  // namespace fieldsync::server
