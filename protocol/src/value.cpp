// Field values and their canonical encoding (SPEC.md §3.3).
#include "fieldsync/protocol/value.hpp"

#include <cstdio>

namespace fieldsync::protocol {

namespace {
constexpr std::int64_t max_lat = 900000000;
constexpr std::int64_t max_lon = 1800000000;
}  // namespace

void encode_value(CborWriter& w, const Value& v) {
    switch (v.index()) {
        case 0:
            w.null();
            break;
        case 1:
            w.boolean(std::get<bool>(v));
            break;
        case 2:
            w.int64(std::get<std::int64_t>(v));
            break;
        case 3:
            w.text(std::get<std::string>(v));
            break;
        case 4: {
            const auto& g = std::get<GeoPoint>(v);
            w.array(2);
            w.int64(g.lat_e7);
            w.int64(g.lon_e7);
            break;
        }
    }
}

Bytes encoded(const Value& v) {
    CborWriter w;
    encode_value(w, v);
    return w.take();
}

Result<Value> decode_value(CborReader& r) {
    auto t = r.peek_type();
    if (!t) return std::move(t).error();
    switch (*t) {
        case CborType::null: {
            auto it = r.next();
            if (!it) return std::move(it).error();
            return Value{};
        }
        case CborType::boolean: {
            auto b = r.read_bool();
            if (!b) return std::move(b).error();
            return Value{*b};
        }
        case CborType::unsigned_int:
        case CborType::negative_int: {
            auto i = r.read_int();
            if (!i) return std::move(i).error();
            return Value{*i};
        }
        case CborType::text: {
            auto s = r.read_text();
            if (!s) return std::move(s).error();
            if (!is_valid_utf8(*s))
                return Error{protocol_errc::invalid_value, "text is not valid UTF-8"};
            return Value{std::string(*s)};
        }
        case CborType::array: {
            auto n = r.read_array();
            if (!n) return std::move(n).error();
            if (*n != 2)
                return Error{
                    protocol_errc::invalid_value,
                    "a geo point is [latitude, longitude], got an array of " + std::to_string(*n)};
            auto lat = r.read_int();
            if (!lat) return std::move(lat).error().at("[0]");
            auto lon = r.read_int();
            if (!lon) return std::move(lon).error().at("[1]");
            if (*lat < -max_lat || *lat > max_lat)
                return Error{protocol_errc::invalid_value,
                             "[0]: latitude must be within +-900000000 (1e-7 degree)"};
            if (*lon < -max_lon || *lon > max_lon)
                return Error{protocol_errc::invalid_value,
                             "[1]: longitude must be within +-1800000000 (1e-7 degree)"};
            return Value{
                GeoPoint{static_cast<std::int32_t>(*lat), static_cast<std::int32_t>(*lon)}};
        }
        default:
            return Error{
                protocol_errc::wrong_type,
                std::string("a value is null, boolean, integer, text or geo point; found a ") +
                    to_string(*t)};
    }
}

const char* kind_name(const Value& v) noexcept {
    switch (v.index()) {
        case 0:
            return "null";
        case 1:
            return "boolean";
        case 2:
            return "integer";
        case 3:
            return "text";
        case 4:
            return "geo";
    }
    return "unknown";
}

std::string to_display(const Value& v) {
    switch (v.index()) {
        case 0:
            return "null";
        case 1:
            return std::get<bool>(v) ? "true" : "false";
        case 2:
            return std::to_string(std::get<std::int64_t>(v));
        case 3:
            return "\"" + std::get<std::string>(v) + "\"";
        case 4: {
            const auto& g = std::get<GeoPoint>(v);
            char buf[64];
            std::snprintf(buf, sizeof buf, "geo(%.7f,%.7f)", g.lat_e7 / 1e7, g.lon_e7 / 1e7);
            return buf;
        }
    }
    return "?";
}

std::size_t utf8_length(std::string_view s) noexcept {
    std::size_t n = 0;
    for (char c : s)
        if ((static_cast<unsigned char>(c) & 0xC0) != 0x80) ++n;
    return n;
}

bool is_valid_utf8(std::string_view s) noexcept {
    const auto* p = reinterpret_cast<const unsigned char*>(s.data());
    const auto* end = p + s.size();
    while (p < end) {
        unsigned char c = *p;
        if (c < 0x80) {
            ++p;
            continue;
        }
        int n;
        std::uint32_t cp;
        if (c >= 0xc2 && c <= 0xdf) {
            n = 1;
            cp = c & 0x1f;
        } else if (c >= 0xe0 && c <= 0xef) {
            n = 2;
            cp = c & 0x0f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            n = 3;
            cp = c & 0x07;
        } else {
            return false;
        }
        if (end - p <= n) return false;
        for (int i = 1; i <= n; ++i) {
            if ((p[i] & 0xc0) != 0x80) return false;
            cp = (cp << 6) | (p[i] & 0x3f);
        }
        if ((n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) || cp > 0x10ffff ||
            (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        p += n + 1;
    }
    return true;
}

}  // namespace fieldsync::protocol
