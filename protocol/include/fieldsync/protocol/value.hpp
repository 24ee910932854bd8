// Field values: the scalars a survey field can hold.
//
//   null | bool | int64 | text (UTF-8) | geo point
//
// Encoding (SPEC.md §3.3): CBOR null, boolean, integer, text string, and a geo point as a
// two-element array [latitude, longitude] of integers in units of 1e-7 degree. There are no
// floating-point values anywhere in fieldsync, so canonical encodings are byte-exact on every
// platform. Dates are text "YYYY-MM-DD", date-times text "YYYY-MM-DDTHH:MM:SSZ", enums and
// multi-select elements text codes, references the target's id in text form.
//
// Values are totally ordered (variant index, then value) for deterministic tie-breaks.
// Thread-compatible value types.
#pragma once

#include <compare>
#include <cstdint>
#include <string>
#include <variant>

#include "fieldsync/protocol/cbor.hpp"

namespace fieldsync::protocol {

struct GeoPoint {
    std::int32_t lat_e7 = 0;  ///< latitude, 1e-7 degree, -900000000..900000000
    std::int32_t lon_e7 = 0;  ///< longitude, 1e-7 degree, -1800000000..1800000000
    auto operator<=>(const GeoPoint&) const = default;
};

using Value = std::variant<std::monostate, bool, std::int64_t, std::string, GeoPoint>;

/// Appends the canonical encoding of `v`.
void encode_value(CborWriter& w, const Value& v);
/// Reads one value. Fails with wrong_type on other CBOR items, invalid_value on a geo point out
/// of range or text that is not valid UTF-8.
Result<Value> decode_value(CborReader& r);
/// Canonical encoding of `v` alone.
Bytes encoded(const Value& v);
/// A short human-readable form: null, true, 42, "text", geo(39.6087,109.7813).
std::string to_display(const Value& v);
/// The name of the value's kind: "null", "boolean", "integer", "text", "geo".
const char* kind_name(const Value& v) noexcept;

/// True when `s` is well-formed UTF-8 (RFC 3629: no overlongs, no surrogates, <= U+10FFFF).
bool is_valid_utf8(std::string_view s) noexcept;
/// Number of Unicode code points in valid UTF-8 text (continuation bytes are not counted).
std::size_t utf8_length(std::string_view s) noexcept;

}  // namespace fieldsync::protocol
