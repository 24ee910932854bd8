// JSON forms of values and records, for HTTP APIs, exports, tools and the C API.
//
// Value -> JSON: null, true/false, integers as numbers, text as strings, a geo point as
// {"lat": <degrees>, "lon": <degrees>} with 7 decimals. JSON -> Value is typed by the field
// definition (a date is a string that must parse as a date, a geo point an object, ...), so the
// same text means the same value everywhere.
//
// Record -> JSON (docs/api.md shows an example):
//   {"collection": "households", "id": "<uuid>", "deleted": false,
//    "fields": {"<name>": <value> | [<elements>] | <counter sum>, ...},
//    "conflicts": {"<name>": [{"value": <v>, "by": "<user>", "replica": "<uuid>",
//                              "ts": <hlc>, "at": "<ISO 8601 UTC>"}, ...]}}
// Only fields with a value appear; conflicts only for review fields holding several values.
//
// Thread-safe free functions (no shared state).
#pragma once

#include <string>
#include <string_view>

#include "fieldsync/protocol/record.hpp"
#include "fieldsync/protocol/schema.hpp"
#include "fieldsync/protocol/value.hpp"

namespace boost::json {
class value;
}

namespace fieldsync::protocol {

/// Compact JSON text of any JSON value, as boost::json::serialize but with numbers that are not
/// integers written in plain decimal notation (at most 7 decimals, trailing zeros dropped:
/// 39.6087, not 3.96087E1), so geo points read as degrees. Use it wherever JSON built from
/// values is written out (HTTP responses, exports, tools).
std::string json_text(const boost::json::value& v);

/// The JSON kind of a value for error messages: "null", "a boolean", "a number", "a string",
/// "an array", "an object".
const char* json_kind(const boost::json::value& v) noexcept;

/// The JSON form of a value as a Boost.JSON value (the same form value_to_json prints), for
/// building larger documents without printing and parsing each value.
boost::json::value value_to_json_value(const Value& v);

/// Compact JSON text of a value.
std::string value_to_json(const Value& v);
/// Appends value_to_json(v) to `out` (for writing larger documents without a Boost.JSON tree).
void append_value_json(const Value& v, std::string& out);
/// Appends `text` as a JSON string (quoted and escaped exactly as Boost.JSON writes it).
void append_json_string(std::string_view text, std::string& out);
/// Parses JSON text into a value for `field` (its type decides the form). Failure:
/// validation_failed naming the field and what was expected. The value is also checked with
/// FieldDef::validate (enum codes, ranges), except for a multi field where the JSON may be one
/// code (an element).
Result<Value> value_from_json(std::string_view json_text, const FieldDef& field);
/// The JSON object above.
std::string record_to_json(const RecordState& record);
/// "2017-09-10T09:34:39.000Z" for Unix milliseconds.
std::string iso8601_utc(std::uint64_t unix_ms);

}  // namespace fieldsync::protocol
