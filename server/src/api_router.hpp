// Request plumbing of the HTTP API (private to the server): errors as values thrown inside a
// handler, request-target parsing (path segments, query parameters, percent-decoding), route
// patterns, JSON bodies with the parser's position on error, and strict readers of JSON objects
// and query strings whose messages name the offending key.
//
// Handlers throw ApiError; the dispatcher in http_api.cpp turns it into the response
// {"error": {"code": ..., "message": ..., <details>}} and rolls the job's savepoint back, so a
// failed request writes nothing.
//
// Thread-compatible value types and thread-safe free functions.
#pragma once

#include <boost/json.hpp>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "fieldsync/protocol/json.hpp"
#include "fieldsync/protocol/value.hpp"

namespace fieldsync::server::api {

/// A failed request: status, machine-readable code, human message, optional extra members of
/// the error object (e.g. "problems") and extra response headers (Allow, Retry-After, ...).
struct ApiError {
    unsigned status = 400;
    std::string code;
    std::string message;
    boost::json::object details;
    std::vector<std::pair<std::string, std::string>> headers;
};

ApiError bad_request(std::string message);                 ///< 400 bad_request
ApiError validation_error(std::string message);            ///< 400 validation_failed
ApiError unauthenticated(std::string message);             ///< 401 unauthenticated
ApiError forbidden(std::string message);                   ///< 403 forbidden
ApiError not_found(std::string message);                   ///< 404 not_found
ApiError conflict(std::string code, std::string message);  ///< 409 <code>
ApiError internal_error(std::string message);              ///< 500 internal

/// The error body: {"error": {"code", "message", ...details}}.
std::string error_body(const ApiError& e);

/// A request target split into decoded path segments and query parameters (in order).
struct Target {
    std::string path;  ///< the raw path (before '?')
    std::vector<std::string> segments;
    std::vector<std::pair<std::string, std::string>> query;
};

/// Splits and percent-decodes a target ("/api/records?area=ordos%2Fdalad&q=ba+tu"): '+' is a
/// space in the query. Throws ApiError 400 on bad percent-encoding or decoded text that is not
/// UTF-8, or a NUL byte.
Target parse_target(std::string_view target);

/// True when `segments` match `pattern` ("/api/records/{collection}/{id}"); the values of the
/// {placeholders} are appended to `params` in order.
bool match_route(std::string_view pattern, const std::vector<std::string>& segments,
                 std::vector<std::string>& params);

/// Parses a JSON request body. Throws ApiError 400 invalid_json with Boost.JSON's message and
/// the position ("line 3, column 7 (byte 41)").
boost::json::value parse_json_body(std::string_view body);

/// Query parameters, read by name. Every getter marks its key as known; check_unknown() then
/// refuses the rest, so a misspelt parameter is an error rather than silently ignored.
class Query {
public:
    explicit Query(std::vector<std::pair<std::string, std::string>> params);

    /// The last value of `key`, or nullopt.
    std::optional<std::string> get(std::string_view key);
    /// An unsigned integer in [min, max]; `def` when absent. 400 naming the key otherwise.
    std::uint64_t get_uint(std::string_view key, std::uint64_t def, std::uint64_t min,
                           std::uint64_t max);
    /// "1"/"true"/"yes" or "0"/"false"/"no"; `def` when absent.
    bool get_bool(std::string_view key, bool def);
    /// Every parameter whose key starts with `prefix`, as (rest of key, value).
    std::vector<std::pair<std::string, std::string>> with_prefix(std::string_view prefix);
    /// Throws 400 naming the first parameter no getter asked for.
    void check_unknown() const;

private:
    std::vector<std::pair<std::string, std::string>> m_params;
    std::vector<bool> m_used;
};

/// Strict reader of one JSON object: getters name the key in their errors ("body.role: expected
/// a string"), and check_unknown() refuses keys nobody asked for.
class ObjectReader {
public:
    /// Throws 400 when `v` is not an object. `where` prefixes messages ("body", "body.fields").
    ObjectReader(const boost::json::value& v, std::string where);

    bool has(std::string_view key) const;
    /// The raw value, or nullptr when absent.
    const boost::json::value* value(std::string_view key);
    std::optional<std::string> opt_string(std::string_view key);
    std::string req_string(std::string_view key);
    std::optional<bool> opt_bool(std::string_view key);
    std::optional<std::int64_t> opt_int(std::string_view key);
    std::optional<std::vector<std::string>> opt_string_array(std::string_view key);
    /// "<where>.<key>", for messages about a key's value.
    std::string path(std::string_view key) const;
    void check_unknown() const;
    const boost::json::object& object() const noexcept { return *m_obj; }

private:
    const boost::json::object* m_obj;
    std::string m_where;
    std::vector<std::string> m_used;
};

// The JSON kind of a value and the length of UTF-8 text, for messages (the protocol library's).
using protocol::json_kind;
using protocol::utf8_length;

}  // namespace fieldsync::server::api
