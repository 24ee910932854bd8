// Request plumbing of the HTTP API. Contract: api_router.hpp.
#include "api_router.hpp"

#include <algorithm>
#include <charconv>

#include "fieldsync/protocol/value.hpp"

namespace fieldsync::server::api {

namespace json = boost::json;

namespace {

ApiError make(unsigned status, std::string code, std::string message) {
    ApiError e;
    e.status = status;
    e.code = std::move(code);
    e.message = std::move(message);
    return e;
}

int hex_digit(char c) noexcept {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

std::string decode(std::string_view s, bool plus_is_space, std::string_view what) {
    std::string out;
    out.reserve(s.size());
    for (std::size_t i = 0; i < s.size(); ++i) {
        char c = s[i];
        if (c == '%') {
            const int hi = i + 2 < s.size() ? hex_digit(s[i + 1]) : -1;
            const int lo = i + 2 < s.size() ? hex_digit(s[i + 2]) : -1;
            if (hi < 0 || lo < 0)
                throw bad_request(std::string(what) + ": bad percent-encoding in \"" +
                                  std::string(s) + "\" (expected %XX with two hex digits)");
            out += static_cast<char>(hi * 16 + lo);
            i += 2;
        } else if (c == '+' && plus_is_space) {
            out += ' ';
        } else {
            out += c;
        }
    }
    if (!protocol::is_valid_utf8(out) || out.find('\0') != std::string::npos)
        throw bad_request(std::string(what) + ": \"" + std::string(s) +
                          "\" does not decode to UTF-8 text");
    return out;
}

}  // namespace

ApiError bad_request(std::string message) {
    return make(400, "bad_request", std::move(message));
}
ApiError validation_error(std::string message) {
    return make(400, "validation_failed", std::move(message));
}
ApiError unauthenticated(std::string message) {
    ApiError e = make(401, "unauthenticated", std::move(message));
    e.headers.emplace_back("WWW-Authenticate", "Bearer realm=\"fieldsync\"");
    return e;
}
ApiError forbidden(std::string message) {
    return make(403, "forbidden", std::move(message));
}
ApiError not_found(std::string message) {
    return make(404, "not_found", std::move(message));
}
ApiError conflict(std::string code, std::string message) {
    return make(409, std::move(code), std::move(message));
}
ApiError internal_error(std::string message) {
    return make(500, "internal", std::move(message));
}

namespace {

// Text that is valid UTF-8 whatever the input: each byte that does not start a valid sequence
// becomes "\xNN". Error messages quote what the client sent, and a response must stay valid
// JSON even when that was not UTF-8 (found by fuzz_http_api).
std::string utf8_safe(std::string_view s) {
    if (protocol::is_valid_utf8(s)) return std::string(s);
    std::string out;
    std::size_t i = 0;
    while (i < s.size()) {
        const auto c = static_cast<unsigned char>(s[i]);
        const std::size_t len = c < 0x80           ? 1
                                : (c >> 5) == 0x6  ? 2
                                : (c >> 4) == 0xE  ? 3
                                : (c >> 3) == 0x1E ? 4
                                                   : 0;
        if (len > 0 && i + len <= s.size() && protocol::is_valid_utf8(s.substr(i, len))) {
            out.append(s.substr(i, len));
            i += len;
            continue;
        }
        static constexpr char hex[] = "0123456789abcdef";
        out += "\\x";
        out += hex[c >> 4];
        out += hex[c & 0xF];
        ++i;
    }
    return out;
}

void make_utf8_safe(json::value& v) {
    if (v.is_string()) {
        if (!protocol::is_valid_utf8(v.get_string())) v = utf8_safe(v.get_string());
    } else if (v.is_array()) {
        for (auto& e : v.get_array())
            make_utf8_safe(e);
    } else if (v.is_object()) {
        for (auto& kv : v.get_object())
            make_utf8_safe(kv.value());
    }
}

}  // namespace

std::string error_body(const ApiError& e) {
    json::value err = json::object{{"code", utf8_safe(e.code)}, {"message", utf8_safe(e.message)}};
    for (const auto& [k, v] : e.details)
        err.get_object()[utf8_safe(k)] = v;
    make_utf8_safe(err);
    return json::serialize(json::object{{"error", std::move(err)}});
}

Target parse_target(std::string_view target) {
    Target t;
    const auto q = target.find('?');
    std::string_view path = target.substr(0, q);
    std::string_view query =
        q == std::string_view::npos ? std::string_view{} : target.substr(q + 1);
    if (auto h = query.find('#'); h != std::string_view::npos) query = query.substr(0, h);
    t.path = std::string(path);
    // Segments: "/api/records/x" -> api, records, x. A trailing slash gives an empty segment,
    // which no route matches.
    std::size_t start = path.empty() || path[0] != '/' ? 0 : 1;
    while (start <= path.size()) {
        auto end = path.find('/', start);
        if (end == std::string_view::npos) end = path.size();
        t.segments.push_back(decode(path.substr(start, end - start), false, "path"));
        start = end + 1;
    }
    while (!query.empty()) {
        auto amp = query.find('&');
        std::string_view part = query.substr(0, amp);
        query = amp == std::string_view::npos ? std::string_view{} : query.substr(amp + 1);
        if (part.empty()) continue;
        auto eq = part.find('=');
        std::string key = decode(part.substr(0, eq), true, "query");
        std::string value = eq == std::string_view::npos
                                ? std::string()
                                : decode(part.substr(eq + 1), true, "query");
        t.query.emplace_back(std::move(key), std::move(value));
    }
    return t;
}

bool match_route(std::string_view pattern, const std::vector<std::string>& segments,
                 std::vector<std::string>& params) {
    std::vector<std::string> captured;
    std::size_t i = 0;
    std::size_t start = pattern.empty() || pattern[0] != '/' ? 0 : 1;
    while (start <= pattern.size()) {
        auto end = pattern.find('/', start);
        if (end == std::string_view::npos) end = pattern.size();
        std::string_view seg = pattern.substr(start, end - start);
        if (i >= segments.size()) return false;
        if (seg.size() >= 2 && seg.front() == '{' && seg.back() == '}') {
            if (segments[i].empty()) return false;
            captured.push_back(segments[i]);
        } else if (seg != segments[i]) {
            return false;
        }
        ++i;
        start = end + 1;
    }
    if (i != segments.size()) return false;
    for (auto& c : captured)
        params.push_back(std::move(c));
    return true;
}

json::value parse_json_body(std::string_view body) {
    std::size_t ws = 0;
    while (ws < body.size() &&
           (body[ws] == ' ' || body[ws] == '\t' || body[ws] == '\r' || body[ws] == '\n'))
        ++ws;
    if (ws == body.size()) {
        ApiError e = bad_request("body: expected a JSON document, but the request body is empty");
        e.code = "invalid_json";
        throw e;
    }
    json::parse_options opt;
    opt.max_depth = 32;
    json::stream_parser parser({}, opt);
    json::error_code ec;
    std::size_t n = parser.write_some(body.data(), body.size(), ec);
    if (!ec && !parser.done()) {
        parser.finish(ec);
        if (ec) n = body.size();
    }
    if (!ec) {
        // Only whitespace may follow the document.
        std::size_t rest = n;
        while (rest < body.size() && (body[rest] == ' ' || body[rest] == '\t' ||
                                      body[rest] == '\r' || body[rest] == '\n'))
            ++rest;
        if (rest != body.size()) {
            ec = json::error::extra_data;
            n = rest;
        }
    }
    if (ec) {
        std::size_t line = 1, column = 1;
        for (std::size_t i = 0; i < n && i < body.size(); ++i) {
            if (body[i] == '\n') {
                ++line;
                column = 1;
            } else if ((static_cast<unsigned char>(body[i]) & 0xC0) != 0x80) {
                ++column;
            }
        }
        ApiError e = bad_request("body: invalid JSON at line " + std::to_string(line) +
                                 ", column " + std::to_string(column) + " (byte " +
                                 std::to_string(n) + "): " + ec.message());
        e.code = "invalid_json";
        e.details["line"] = line;
        e.details["column"] = column;
        throw e;
    }
    return parser.release();
}

// --- Query ------------------------------------------------------------------------------------

Query::Query(std::vector<std::pair<std::string, std::string>> params)
    : m_params(std::move(params)), m_used(m_params.size(), false) {}

std::optional<std::string> Query::get(std::string_view key) {
    std::optional<std::string> out;
    for (std::size_t i = 0; i < m_params.size(); ++i) {
        if (m_params[i].first == key) {
            m_used[i] = true;
            out = m_params[i].second;
        }
    }
    return out;
}

std::uint64_t Query::get_uint(std::string_view key, std::uint64_t def, std::uint64_t min,
                              std::uint64_t max) {
    auto v = get(key);
    if (!v) return def;
    std::uint64_t n = 0;
    auto [ptr, ec] = std::from_chars(v->data(), v->data() + v->size(), n);
    if (v->empty() || ec != std::errc{} || ptr != v->data() + v->size())
        throw bad_request("query parameter " + std::string(key) + ": \"" + *v +
                          "\" is not a non-negative integer");
    if (n < min || n > max)
        throw bad_request("query parameter " + std::string(key) + ": " + *v + " is outside " +
                          std::to_string(min) + ".." + std::to_string(max));
    return n;
}

bool Query::get_bool(std::string_view key, bool def) {
    auto v = get(key);
    if (!v) return def;
    if (*v == "1" || *v == "true" || *v == "yes") return true;
    if (*v == "0" || *v == "false" || *v == "no") return false;
    throw bad_request("query parameter " + std::string(key) + ": \"" + *v +
                      "\" is not a boolean (use 1 or 0)");
}

std::vector<std::pair<std::string, std::string>> Query::with_prefix(std::string_view prefix) {
    std::vector<std::pair<std::string, std::string>> out;
    for (std::size_t i = 0; i < m_params.size(); ++i) {
        const auto& k = m_params[i].first;
        if (k.size() >= prefix.size() && std::string_view(k).substr(0, prefix.size()) == prefix) {
            m_used[i] = true;
            out.emplace_back(k.substr(prefix.size()), m_params[i].second);
        }
    }
    return out;
}

void Query::check_unknown() const {
    for (std::size_t i = 0; i < m_params.size(); ++i)
        if (!m_used[i]) throw bad_request("unknown query parameter \"" + m_params[i].first + "\"");
}

// --- ObjectReader -----------------------------------------------------------------------------

ObjectReader::ObjectReader(const json::value& v, std::string where) : m_where(std::move(where)) {
    if (!v.is_object())
        throw bad_request(m_where + ": expected a JSON object, got " + json_kind(v));
    m_obj = &v.get_object();
}

bool ObjectReader::has(std::string_view key) const {
    return m_obj->contains(key);
}

std::string ObjectReader::path(std::string_view key) const {
    return m_where + "." + std::string(key);
}

const json::value* ObjectReader::value(std::string_view key) {
    m_used.emplace_back(key);
    return m_obj->if_contains(key);
}

std::optional<std::string> ObjectReader::opt_string(std::string_view key) {
    const json::value* v = value(key);
    if (!v) return std::nullopt;
    if (!v->is_string()) throw bad_request(path(key) + ": expected a string, got " + json_kind(*v));
    return std::string(v->get_string());
}

std::string ObjectReader::req_string(std::string_view key) {
    auto s = opt_string(key);
    if (!s) throw bad_request(path(key) + ": required (a string)");
    return *s;
}

std::optional<bool> ObjectReader::opt_bool(std::string_view key) {
    const json::value* v = value(key);
    if (!v) return std::nullopt;
    if (!v->is_bool())
        throw bad_request(path(key) + ": expected true or false, got " + json_kind(*v));
    return v->get_bool();
}

std::optional<std::int64_t> ObjectReader::opt_int(std::string_view key) {
    const json::value* v = value(key);
    if (!v) return std::nullopt;
    if (v->is_int64()) return v->get_int64();
    if (v->is_uint64() && v->get_uint64() <= static_cast<std::uint64_t>(INT64_MAX))
        return static_cast<std::int64_t>(v->get_uint64());
    throw bad_request(path(key) + ": expected an integer, got " +
                      (v->is_double() ? std::string("a fraction") : std::string(json_kind(*v))));
}

std::optional<std::vector<std::string>> ObjectReader::opt_string_array(std::string_view key) {
    const json::value* v = value(key);
    if (!v) return std::nullopt;
    if (!v->is_array())
        throw bad_request(path(key) + ": expected an array of strings, got " + json_kind(*v));
    std::vector<std::string> out;
    const auto& arr = v->get_array();
    for (std::size_t i = 0; i < arr.size(); ++i) {
        if (!arr[i].is_string())
            throw bad_request(path(key) + "[" + std::to_string(i) + "]: expected a string, got " +
                              json_kind(arr[i]));
        out.emplace_back(arr[i].get_string());
    }
    return out;
}

void ObjectReader::check_unknown() const {
    for (const auto& kv : *m_obj) {
        if (std::find(m_used.begin(), m_used.end(), std::string_view(kv.key())) == m_used.end())
            throw bad_request(path(kv.key()) + ": unknown key");
    }
}

}  // namespace fieldsync::server::api
