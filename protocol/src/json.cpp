// JSON forms of values and records. Format: json.hpp.
#include "fieldsync/protocol/json.hpp"

#include <boost/json.hpp>

#include <charconv>
#include <cmath>
#include <cstdio>
#include <ctime>

namespace fieldsync::protocol {

namespace json = boost::json;

namespace {

json::value to_value(const Value& v) {
    switch (v.index()) {
        case 1:
            return json::value(std::get<bool>(v));
        case 2:
            return json::value(std::get<std::int64_t>(v));
        case 3:
            return json::value(std::get<std::string>(v));
        case 4: {
            const auto& g = std::get<GeoPoint>(v);
            // Round-trips exactly: 7 decimals of degrees are the stored integers.
            return json::object{{"lat", std::round(g.lat_e7) / 1e7},
                                {"lon", std::round(g.lon_e7) / 1e7}};
        }
        default:
            return nullptr;
    }
}

template <typename Int>
void append_integer(Int v, std::string& out) {
    char buf[24];
    auto r = std::to_chars(buf, buf + sizeof buf, v);
    out.append(buf, r.ptr);
}

// Plain notation for the magnitudes values have (degrees, ratios); false for anything else
// (huge, tiny, not finite), which Boost.JSON writes.
bool append_plain_double(double d, std::string& out) {
    if (!(std::isfinite(d) && std::fabs(d) < 1e9 && (d == 0 || std::fabs(d) >= 1e-7))) return false;
    char buf[40];
    const int n = std::snprintf(buf, sizeof buf, "%.7f", d);
    std::string_view text(buf, static_cast<std::size_t>(n));
    while (text.back() == '0')
        text.remove_suffix(1);
    if (text == "-0." || text == "0.") {
        out += "0.0";
        return true;
    }
    out += text;
    if (text.back() == '.') out += '0';
    return true;
}

void append_json(const json::value& v, std::string& out) {
    switch (v.kind()) {
        case json::kind::object: {
            out += '{';
            bool first = true;
            for (const auto& kv : v.get_object()) {
                if (!first) out += ',';
                first = false;
                append_json_string(kv.key(), out);
                out += ':';
                append_json(kv.value(), out);
            }
            out += '}';
            return;
        }
        case json::kind::array: {
            out += '[';
            bool first = true;
            for (const auto& e : v.get_array()) {
                if (!first) out += ',';
                first = false;
                append_json(e, out);
            }
            out += ']';
            return;
        }
        case json::kind::double_:
            if (!append_plain_double(v.get_double(), out)) out += json::serialize(v);
            return;
        case json::kind::string:
            append_json_string(v.get_string(), out);
            return;
        case json::kind::int64:
            append_integer(v.get_int64(), out);
            return;
        case json::kind::uint64:
            append_integer(v.get_uint64(), out);
            return;
        case json::kind::bool_:
            out += v.get_bool() ? "true" : "false";
            return;
        case json::kind::null:
            out += "null";
            return;
        default:
            out += json::serialize(v);
            return;
    }
}

Error expected(const FieldDef& f, const char* what) {
    return Error{protocol_errc::validation_failed,
                 "field " + f.name + ": expected " + what + " (a " + to_string(f.type) + " field)"};
}

Result<std::int32_t> degrees_e7(const json::value& v, double limit) {
    double d;
    if (v.is_double())
        d = v.get_double();
    else if (v.is_int64())
        d = static_cast<double>(v.get_int64());
    else if (v.is_uint64())
        d = static_cast<double>(v.get_uint64());
    else
        return Error{protocol_errc::validation_failed, "not a number"};
    if (!(d >= -limit && d <= limit))
        return Error{protocol_errc::validation_failed, "out of range"};
    return static_cast<std::int32_t>(std::llround(d * 1e7));
}

}  // namespace

std::string json_text(const json::value& v) {
    std::string out;
    append_json(v, out);
    return out;
}

const char* json_kind(const json::value& v) noexcept {
    switch (v.kind()) {
        case json::kind::null:
            return "null";
        case json::kind::bool_:
            return "a boolean";
        case json::kind::int64:
        case json::kind::uint64:
        case json::kind::double_:
            return "a number";
        case json::kind::string:
            return "a string";
        case json::kind::array:
            return "an array";
        case json::kind::object:
            return "an object";
    }
    return "a value";
}

json::value value_to_json_value(const Value& v) {
    return to_value(v);
}

void append_json_string(std::string_view text, std::string& out) {
    // As Boost.JSON's serializer writes strings (json_test checks every byte value against it).
    static constexpr char hex[] = "0123456789abcdef";
    out += '"';
    std::size_t run = 0;  // start of the bytes copied as they are
    for (std::size_t i = 0; i < text.size(); ++i) {
        const auto c = static_cast<unsigned char>(text[i]);
        if (c >= 0x20 && c != '"' && c != '\\') continue;
        out.append(text.data() + run, i - run);
        run = i + 1;
        switch (c) {
            case '"':
                out += "\\\"";
                break;
            case '\\':
                out += "\\\\";
                break;
            case '\b':
                out += "\\b";
                break;
            case '\f':
                out += "\\f";
                break;
            case '\n':
                out += "\\n";
                break;
            case '\r':
                out += "\\r";
                break;
            case '\t':
                out += "\\t";
                break;
            default:
                out += "\\u00";
                out += hex[c >> 4];
                out += hex[c & 0xf];
        }
    }
    out.append(text.data() + run, text.size() - run);
    out += '"';
}

void append_value_json(const Value& v, std::string& out) {
    switch (v.index()) {
        case 1:
            out += std::get<bool>(v) ? "true" : "false";
            return;
        case 2:
            append_integer(std::get<std::int64_t>(v), out);
            return;
        case 3:
            append_json_string(std::get<std::string>(v), out);
            return;
        case 4: {
            const auto& g = std::get<GeoPoint>(v);
            // As to_value(): degrees rounded from the stored integers.
            out += "{\"lat\":";
            if (!append_plain_double(std::round(g.lat_e7) / 1e7, out))
                out += json::serialize(json::value(std::round(g.lat_e7) / 1e7));
            out += ",\"lon\":";
            if (!append_plain_double(std::round(g.lon_e7) / 1e7, out))
                out += json::serialize(json::value(std::round(g.lon_e7) / 1e7));
            out += '}';
            return;
        }
        default:
            out += "null";
            return;
    }
}

std::string value_to_json(const Value& v) {
    std::string out;
    append_value_json(v, out);
    return out;
}

Result<Value> value_from_json(std::string_view json_text, const FieldDef& field) {
    boost::system::error_code ec;
    json::value jv = json::parse(json_text, ec);
    if (ec) {
        return Error{protocol_errc::validation_failed,
                     "field " + field.name + ": not valid JSON (" + ec.message() + ")"};
    }
    Value out;
    if (jv.is_null()) {
        out = Value{};
    } else {
        switch (field.type) {
            case FieldType::boolean:
                if (!jv.is_bool()) return expected(field, "true or false");
                out = jv.get_bool();
                break;
            case FieldType::integer:
            case FieldType::counter:
                if (jv.is_int64())
                    out = jv.get_int64();
                else if (jv.is_uint64() && jv.get_uint64() <= INT64_MAX)
                    out = static_cast<std::int64_t>(jv.get_uint64());
                else
                    return expected(field, "an integer");
                break;
            case FieldType::geo: {
                if (!jv.is_object() || !jv.as_object().contains("lat") ||
                    !jv.as_object().contains("lon"))
                    return expected(field, "an object {\"lat\": degrees, \"lon\": degrees}");
                auto lat = degrees_e7(jv.as_object().at("lat"), 90.0);
                auto lon = degrees_e7(jv.as_object().at("lon"), 180.0);
                if (!lat || !lon)
                    return expected(field, "latitude within +-90 and longitude within +-180");
                out = GeoPoint{*lat, *lon};
                break;
            }
            default:
                if (!jv.is_string()) return expected(field, "a string");
                out = std::string(jv.get_string());
                break;
        }
    }
    if (field.type == FieldType::multi || field.type == FieldType::counter) {
        // An element or a delta: checked by CollectionDef::validate_value at write time.
        return out;
    }
    if (auto st = field.validate(out); !st) return std::move(st).error();
    return out;
}

std::string iso8601_utc(std::uint64_t unix_ms) {
    std::time_t secs = static_cast<std::time_t>(unix_ms / 1000);
    std::tm tm{};
    gmtime_r(&secs, &tm);
    char buf[96];
    std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                  tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                  static_cast<int>(unix_ms % 1000));
    return buf;
}

std::string record_to_json(const RecordState& record) {
    json::object fields;
    json::object conflicts;
    for (const auto& [name, state] : record.fields) {
        if (name == deleted_field) continue;
        auto view = record.view(name);
        if (!view) continue;
        switch (view->rule) {
            case MergeRule::set: {
                json::array elements;
                for (const auto& e : view->elements)
                    elements.push_back(to_value(e));
                fields[name] = std::move(elements);
                break;
            }
            default:
                if (!std::holds_alternative<std::monostate>(view->value))
                    fields[name] = to_value(view->value);
                break;
        }
        if (view->conflict) {
            json::array competing;
            for (const auto& e : view->competing) {
                competing.push_back(json::object{{"value", to_value(e.value)},
                                                 {"by", e.by},
                                                 {"replica", e.dot.replica.to_string()},
                                                 {"ts", e.ts.value},
                                                 {"at", iso8601_utc(e.ts.wall_ms())}});
            }
            conflicts[name] = std::move(competing);
        }
    }
    auto del = record.view(deleted_field);
    if (del && del->conflict) {
        json::array competing;
        for (const auto& e : del->competing)
            competing.push_back(json::object{{"value", to_value(e.value)},
                                             {"by", e.by},
                                             {"replica", e.dot.replica.to_string()},
                                             {"ts", e.ts.value},
                                             {"at", iso8601_utc(e.ts.wall_ms())}});
        conflicts[std::string(deleted_field)] = std::move(competing);
    }
    json::object out{{"collection", record.collection},
                     {"id", record.id.to_string()},
                     {"deleted", record.is_deleted()},
                     {"fields", std::move(fields)}};
    if (!conflicts.empty()) out["conflicts"] = std::move(conflicts);
    return json_text(out);
}

}  // namespace fieldsync::protocol
