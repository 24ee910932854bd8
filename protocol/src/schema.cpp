// Survey schema: loading, canonical JSON, validation of writes and record states, upgrades.
//
// The document format, the validation semantics and the upgrade rules are specified in
// docs/schema.md; this file implements that text and does not restate it. Structure:
//
//  1. Text helpers shared by messages (quoting, code-point counts) and the value-level checks
//     (dates, date-times, record ids, area codes).
//  2. FieldDef / CollectionDef lookups and the check of one value against one field.
//  3. JSON input. Boost.JSON's `basic_parser` runs with our own handler, which builds the DOM
//     through a `value_stack` exactly as `boost::json::parser` does, and additionally tracks the
//     path of the value being parsed so that it can report duplicate object keys (the DOM keeps
//     only one of them, silently) with their location. A syntax error is reported at
//     "line L, column C" (column counted in code points), from the byte offset where the parser
//     stopped.
//  4. SchemaLoader walks the DOM once, in document order, collecting every problem (capped by
//     SchemaLimits::max_problems) and building the model as it goes; the model is returned only
//     when no problem was found.
//  5. Schema: canonical JSON, record validation, area_of, and the upgrade check.
//
// Bounds: the document size is checked before parsing, nesting by the parser (max_depth), and
// every array the model keeps (collections, fields, values) against its limit before its items
// are looked at, so the work done is linear in the input and bounded by the limits.
#include "fieldsync/protocol/schema.hpp"

#include "fieldsync/protocol/json.hpp"

#include <algorithm>
#include <array>
#include <exception>
#include <limits>
#include <set>
#include <span>
#include <utility>

#include <boost/json/basic_parser_impl.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>
#include <boost/json/value_stack.hpp>

namespace fieldsync::protocol {

namespace json = boost::json;

// ---------------------------------------------------------------------------------------------
// 1. Text helpers
// ---------------------------------------------------------------------------------------------

namespace {

constexpr std::size_t max_name_length = 63;
constexpr std::int64_t max_schema_version = std::numeric_limits<std::int32_t>::max();
constexpr std::int64_t max_text_length_bound = std::numeric_limits<std::int32_t>::max();
constexpr std::int64_t max_lat_e7 = 900000000;
constexpr std::int64_t max_lon_e7 = 1800000000;
constexpr std::size_t max_record_problems = 32;
constexpr std::size_t max_codes_in_message = 16;
constexpr std::size_t max_quoted_code_points = 64;

bool is_lower(char c) noexcept {
    return c >= 'a' && c <= 'z';
}
bool is_digit(char c) noexcept {
    return c >= '0' && c <= '9';
}
bool is_hex(char c) noexcept {
    return is_digit(c) || (c >= 'a' && c <= 'f');
}

/// Field and collection names: [a-z][a-z0-9_]{0,62}.
bool is_name(std::string_view s) noexcept {
    if (s.empty() || s.size() > max_name_length || !is_lower(s[0])) return false;
    return std::all_of(s.begin(), s.end(),
                       [](char c) { return is_lower(c) || is_digit(c) || c == '_'; });
}

/// Schema names: [a-z][a-z0-9_-]{0,62}.
bool is_schema_name(std::string_view s) noexcept {
    if (s.empty() || s.size() > max_name_length || !is_lower(s[0])) return false;
    return std::all_of(s.begin(), s.end(),
                       [](char c) { return is_lower(c) || is_digit(c) || c == '_' || c == '-'; });
}

/// Enum and multi codes: [a-z0-9][a-z0-9_]{0,62}.
bool is_code(std::string_view s) noexcept {
    if (s.empty() || s.size() > max_name_length || !(is_lower(s[0]) || is_digit(s[0])))
        return false;
    return std::all_of(s.begin(), s.end(),
                       [](char c) { return is_lower(c) || is_digit(c) || c == '_'; });
}

/// Language tags: [a-z]{2,3}(-[A-Za-z0-9]{1,8}){0,3}, e.g. "en", "zh", "zh-Hant", "mn-Mong".
bool is_language_tag(std::string_view s) noexcept {
    std::size_t i = 0;
    while (i < s.size() && is_lower(s[i]))
        ++i;
    if (i < 2 || i > 3) return false;
    int subtags = 0;
    while (i < s.size()) {
        if (s[i] != '-' || ++subtags > 3) return false;
        std::size_t start = ++i;
        while (i < s.size() && (is_lower(s[i]) || is_digit(s[i]) || (s[i] >= 'A' && s[i] <= 'Z')))
            ++i;
        if (i == start || i - start > 8) return false;
    }
    return true;
}

/// `s` as a JSON string literal for messages: escapes quotes, backslashes and control
/// characters, shortens long text to its first 64 code points plus "...".
std::string quote(std::string_view s) {
    if (!is_valid_utf8(s)) return "(" + std::to_string(s.size()) + " bytes of invalid UTF-8)";
    std::string out = "\"";
    std::size_t cps = 0;
    for (std::size_t i = 0; i < s.size(); ++i) {
        const auto c = static_cast<unsigned char>(s[i]);
        if ((c & 0xc0) != 0x80 && ++cps > max_quoted_code_points) {
            out += "...";
            break;
        }
        if (c == '"' || c == '\\') {
            out += '\\';
            out += static_cast<char>(c);
        } else if (c < 0x20 || c == 0x7f) {
            static constexpr char hex[] = "0123456789abcdef";
            out += "\\u00";
            out += hex[c >> 4];
            out += hex[c & 15];
        } else {
            out += static_cast<char>(c);
        }
    }
    out += '"';
    return out;
}

/// A value for messages: text quoted as above, everything else as to_display.
std::string show(const Value& v) {
    if (const auto* s = std::get_if<std::string>(&v)) return quote(*s);
    return to_display(v);
}

/// "text \"five\"", "integer 5", "null": what a message says was found.
std::string found(const Value& v) {
    if (std::holds_alternative<std::monostate>(v)) return "null";
    return std::string(kind_name(v)) + " " + show(v);
}

int digits_at(std::string_view s, std::size_t pos, std::size_t n) noexcept {
    int v = 0;
    for (std::size_t i = pos; i < pos + n; ++i) {
        if (!is_digit(s[i])) return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

/// "YYYY-MM-DD", a proleptic Gregorian date in years 0001..9999.
bool is_valid_date(std::string_view s) noexcept {
    if (s.size() != 10 || s[4] != '-' || s[7] != '-') return false;
    const int y = digits_at(s, 0, 4), m = digits_at(s, 5, 2), d = digits_at(s, 8, 2);
    if (y < 1 || m < 1 || m > 12 || d < 1) return false;
    static constexpr std::array<int, 12> days = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    const bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    const int limit = days[static_cast<std::size_t>(m - 1)] + (m == 2 && leap ? 1 : 0);
    return d <= limit;
}

/// "YYYY-MM-DDTHH:MM:SSZ" (UTC; no fractions, offsets or leap seconds).
bool is_valid_datetime(std::string_view s) noexcept {
    if (s.size() != 20 || !is_valid_date(s.substr(0, 10)) || s[10] != 'T' || s[13] != ':' ||
        s[16] != ':' || s[19] != 'Z')
        return false;
    const int h = digits_at(s, 11, 2), mi = digits_at(s, 14, 2), sec = digits_at(s, 17, 2);
    return h >= 0 && h < 24 && mi >= 0 && mi < 60 && sec >= 0 && sec < 60;
}

/// The canonical text form of a non-nil record id: 36 characters, lower-case hex, 8-4-4-4-12.
bool is_record_id_text(std::string_view s) noexcept {
    if (s.size() != 36) return false;
    bool nonzero = false;
    for (std::size_t i = 0; i < s.size(); ++i) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i] != '-') return false;
        } else if (!is_hex(s[i])) {
            return false;
        } else if (s[i] != '0') {
            nonzero = true;
        }
    }
    return nonzero;
}

template <class Range, class Fn>
std::string join(const Range& items, Fn&& fn, std::size_t max_items = SIZE_MAX) {
    std::string out;
    std::size_t n = 0;
    for (const auto& item : items) {
        if (n == max_items) {
            out += ", ... (" + std::to_string(std::size(items)) + " in all)";
            break;
        }
        if (n++) out += ", ";
        out += fn(item);
    }
    return out;
}

/// "an area", "a text": the article for a type name in messages.
std::string with_article(std::string_view type_name) {
    const bool vowel = !type_name.empty() &&
                       std::string_view("aeiou").find(type_name[0]) != std::string_view::npos;
    return (vowel ? "an " : "a ") + std::string(type_name);
}

std::string codes_of(const FieldDef& f) {
    return join(
        f.values, [](const Choice& c) { return c.code; }, max_codes_in_message);
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Names of enums, labels, area codes
// ---------------------------------------------------------------------------------------------

namespace {
constexpr std::array<std::pair<FieldType, const char*>, 11> field_type_names = {{
    {FieldType::text, "text"},
    {FieldType::integer, "integer"},
    {FieldType::boolean, "boolean"},
    {FieldType::date, "date"},
    {FieldType::datetime, "datetime"},
    {FieldType::enumeration, "enum"},
    {FieldType::multi, "multi"},
    {FieldType::geo, "geo"},
    {FieldType::reference, "reference"},
    {FieldType::area, "area"},
    {FieldType::counter, "counter"},
}};
}  // namespace

const char* to_string(FieldType t) noexcept {
    for (const auto& [type, name] : field_type_names)
        if (type == t) return name;
    return "unknown";
}

std::optional<FieldType> parse_field_type(std::string_view s) noexcept {
    for (const auto& [type, name] : field_type_names)
        if (s == name) return type;
    return std::nullopt;
}

bool merge_rule_allowed(FieldType t, MergeRule r) noexcept {
    switch (t) {
        case FieldType::multi:
            return r == MergeRule::set;
        case FieldType::counter:
            return r == MergeRule::counter;
        default:
            return r == MergeRule::lww || r == MergeRule::review;
    }
}

std::string_view label_for(const Labels& labels, std::string_view lang) noexcept {
    if (auto it = labels.find(lang); it != labels.end()) return it->second;
    if (auto it = labels.find(std::string_view("en")); it != labels.end()) return it->second;
    if (!labels.empty()) return labels.begin()->second;
    return {};
}

bool is_valid_area_code(std::string_view code) noexcept {
    if (code.empty() || code.size() > 255) return false;
    std::size_t segments = 0;
    std::size_t start = 0;
    while (true) {
        const std::size_t end = std::min(code.find('/', start), code.size());
        const std::string_view seg = code.substr(start, end - start);
        if (seg.empty() || seg.size() > 64 || ++segments > 16) return false;
        if (!(is_lower(seg[0]) || is_digit(seg[0]))) return false;
        for (char c : seg)
            if (!(is_lower(c) || is_digit(c) || c == '_' || c == '-')) return false;
        if (end == code.size()) return true;
        start = end + 1;
    }
}

bool area_contains(std::string_view scope, std::string_view area) noexcept {
    if (area.size() < scope.size() || area.substr(0, scope.size()) != scope) return false;
    return area.size() == scope.size() || area[scope.size()] == '/';
}

std::string SchemaProblem::to_string() const {
    return where + ": " + message;
}

std::string to_string(const std::vector<SchemaProblem>& problems) {
    std::string out;
    for (const auto& p : problems) {
        if (!out.empty()) out += '\n';
        out += p.to_string();
    }
    return out;
}

// ---------------------------------------------------------------------------------------------
// 2. Fields and values
// ---------------------------------------------------------------------------------------------

namespace {

/// How a value reaches a field: as a write through the SDK, or held in a record state.
enum class ValueUse {
    write,  ///< lww/review: new value (null clears, refused when required); set: element to add;
            ///< counter: a delta
    held,   ///< lww/review entry value (null allowed: `required` is checked on the provisional
            ///< value); set element
};

const char* expectation(FieldType t) noexcept {
    switch (t) {
        case FieldType::text:
            return "text";
        case FieldType::integer:
            return "an integer";
        case FieldType::boolean:
            return "true or false";
        case FieldType::date:
            return "a date as text \"YYYY-MM-DD\"";
        case FieldType::datetime:
            return "a date-time as text \"YYYY-MM-DDTHH:MM:SSZ\"";
        case FieldType::enumeration:
            return "one of the field's codes as text";
        case FieldType::multi:
            return "one of the field's codes as text";
        case FieldType::geo:
            return "a geo point";
        case FieldType::reference:
            return "a record id as text";
        case FieldType::area:
            return "an area code as text";
        case FieldType::counter:
            return "an integer";
    }
    return "a value";
}

/// Why `v` does not fit `f`, or nullopt when it does.
std::optional<std::string> value_problem(const FieldDef& f, const Value& v, ValueUse use) {
    if (std::holds_alternative<std::monostate>(v) && f.rule != MergeRule::set &&
        f.rule != MergeRule::counter) {
        if (use == ValueUse::write && f.required)
            return std::string("is required; null would clear it");
        return std::nullopt;
    }
    const auto mismatch = [&] {
        return std::string("expected ") + expectation(f.type) + ", got " + found(v);
    };
    switch (f.type) {
        case FieldType::integer:
        case FieldType::counter: {
            const auto* i = std::get_if<std::int64_t>(&v);
            if (!i) return mismatch();
            if (f.min && *i < *f.min)
                return std::to_string(*i) + " is below the minimum " + std::to_string(*f.min);
            if (f.max && *i > *f.max)
                return std::to_string(*i) + " is above the maximum " + std::to_string(*f.max);
            return std::nullopt;
        }
        case FieldType::boolean:
            if (!std::holds_alternative<bool>(v)) return mismatch();
            return std::nullopt;
        case FieldType::geo: {
            const auto* g = std::get_if<GeoPoint>(&v);
            if (!g) return mismatch();
            if (g->lat_e7 < -max_lat_e7 || g->lat_e7 > max_lat_e7 || g->lon_e7 < -max_lon_e7 ||
                g->lon_e7 > max_lon_e7)
                return show(v) + " is not on Earth (latitude within +-90, longitude within +-180)";
            return std::nullopt;
        }
        default:
            break;
    }
    // Every other type holds text.
    const auto* s = std::get_if<std::string>(&v);
    if (!s) return mismatch();
    if (!is_valid_utf8(*s)) return std::string("text is not valid UTF-8");
    switch (f.type) {
        case FieldType::text: {
            if (!f.min_length && !f.max_length) return std::nullopt;
            const std::size_t n = utf8_length(*s);
            if (f.min_length && n < *f.min_length)
                return quote(*s) + " has " + std::to_string(n) + " characters; the minimum is " +
                       std::to_string(*f.min_length);
            if (f.max_length && n > *f.max_length)
                return quote(*s) + " has " + std::to_string(n) + " characters; the maximum is " +
                       std::to_string(*f.max_length);
            return std::nullopt;
        }
        case FieldType::date:
            if (!is_valid_date(*s))
                return quote(*s) + " is not a calendar date in the form YYYY-MM-DD";
            return std::nullopt;
        case FieldType::datetime:
            if (!is_valid_datetime(*s))
                return quote(*s) + " is not a UTC date-time in the form YYYY-MM-DDTHH:MM:SSZ";
            return std::nullopt;
        case FieldType::enumeration:
        case FieldType::multi:
            if (!f.find_value(*s)) return quote(*s) + " is not one of " + codes_of(f);
            return std::nullopt;
        case FieldType::reference:
            if (!is_record_id_text(*s))
                return quote(*s) + " is not a record id (36 characters, lower-case hex, " +
                       "8-4-4-4-12, not nil)";
            return std::nullopt;
        case FieldType::area:
            if (!is_valid_area_code(*s))
                return quote(*s) +
                       " is not an area code (segments of a-z, 0-9, '_', '-' joined by '/')";
            return std::nullopt;
        default:
            return std::nullopt;
    }
}

}  // namespace

const Choice* FieldDef::find_value(std::string_view code) const noexcept {
    for (const auto& c : values)
        if (c.code == code) return &c;
    return nullptr;
}

Status FieldDef::validate(const Value& v) const {
    if (auto why = value_problem(*this, v, ValueUse::write))
        return Error{protocol_errc::validation_failed, "field " + name + ": " + *why};
    return {};
}

const FieldDef* CollectionDef::find(std::string_view field) const noexcept {
    for (const auto& f : fields)
        if (f.name == field) return &f;
    return nullptr;
}

Status CollectionDef::validate_value(std::string_view field, const Value& v) const {
    const FieldDef* f = find(field);
    if (!f)
        return Error{protocol_errc::validation_failed,
                     name + ": no field named " + quote(field) + " in this collection"};
    Status st = f->validate(v);
    if (!st) return std::move(st).error().at(name);
    return st;
}

// ---------------------------------------------------------------------------------------------
// 3. JSON input
// ---------------------------------------------------------------------------------------------

namespace {

/// ".key" for keys that are ASCII words, `["odd key"]` otherwise.
std::string key_step(std::string_view key) {
    const bool plain = !key.empty() && std::all_of(key.begin(), key.end(), [](char c) {
        return is_lower(c) || is_digit(c) || c == '_' || (c >= 'A' && c <= 'Z');
    });
    if (plain) return "." + std::string(key);
    return "[" + quote(key) + "]";
}

std::string index_step(std::size_t i) {
    return "[" + std::to_string(i) + "]";
}

/// Paths are built from steps; the leading '.' of the first key is dropped.
std::string path_of(std::string path) {
    if (!path.empty() && path[0] == '.') path.erase(0, 1);
    return path.empty() ? std::string("document") : path;
}

/// "line L, column C" of byte offset `pos` (1-based; columns count code points).
std::string line_column(std::string_view text, std::size_t pos) {
    pos = std::min(pos, text.size());
    std::size_t line = 1, col = 1;
    for (std::size_t i = 0; i < pos; ++i) {
        const auto c = static_cast<unsigned char>(text[i]);
        if (c == '\n') {
            ++line;
            col = 1;
        } else if ((c & 0xc0) != 0x80) {
            ++col;
        }
    }
    return "line " + std::to_string(line) + ", column " + std::to_string(col);
}

/// Collects problems up to a limit; the last slot says that it stopped.
class ProblemSink {
public:
    ProblemSink(std::vector<SchemaProblem>& out, std::size_t max) : m_out(out), m_max(max) {}

    void add(std::string where, std::string message) {
        if (m_full) return;
        if (m_out.size() + 1 >= m_max) {
            m_out.push_back(
                {"document", "too many problems; stopped after " + std::to_string(m_out.size())});
            m_full = true;
            return;
        }
        m_out.push_back({std::move(where), std::move(message)});
    }
    bool full() const noexcept { return m_full; }
    bool empty() const noexcept { return m_out.empty(); }

private:
    std::vector<SchemaProblem>& m_out;
    std::size_t m_max;
    bool m_full = false;
};

/// basic_parser handler: builds the DOM like boost::json's own handler, and reports duplicate
/// keys with their paths.
class DomHandler {
public:
    static constexpr std::size_t max_object_size = json::object::max_size();
    static constexpr std::size_t max_array_size = json::array::max_size();
    static constexpr std::size_t max_key_size = json::string::max_size();
    static constexpr std::size_t max_string_size = json::string::max_size();

    explicit DomHandler(ProblemSink& sink) : m_sink(sink) { m_stack.reset(); }

    json::value release() { return m_stack.release(); }

    bool on_document_begin(json::error_code&) { return true; }
    bool on_document_end(json::error_code&) { return true; }

    bool on_object_begin(json::error_code&) {
        open(true);
        return true;
    }
    bool on_object_end(std::size_t n, json::error_code&) {
        m_stack.push_object(n);
        m_frames.pop_back();
        return true;
    }
    bool on_array_begin(json::error_code&) {
        open(false);
        return true;
    }
    bool on_array_end(std::size_t n, json::error_code&) {
        m_stack.push_array(n);
        m_frames.pop_back();
        return true;
    }
    bool on_key_part(json::string_view s, std::size_t, json::error_code&) {
        m_stack.push_chars(s);
        m_key.append(s.data(), s.size());
        return true;
    }
    bool on_key(json::string_view s, std::size_t, json::error_code&) {
        m_stack.push_key(s);
        m_key.append(s.data(), s.size());
        Frame& f = m_frames.back();
        if (!f.keys.insert(m_key).second)
            m_sink.add(path_of(path() + key_step(m_key)), "duplicate key; a key may appear once");
        f.key = std::move(m_key);
        m_key.clear();
        return true;
    }
    bool on_string_part(json::string_view s, std::size_t, json::error_code&) {
        m_stack.push_chars(s);
        return true;
    }
    bool on_string(json::string_view s, std::size_t, json::error_code&) {
        scalar();
        m_stack.push_string(s);
        return true;
    }
    bool on_number_part(json::string_view, json::error_code&) { return true; }
    bool on_int64(std::int64_t i, json::string_view, json::error_code&) {
        scalar();
        m_stack.push_int64(i);
        return true;
    }
    bool on_uint64(std::uint64_t u, json::string_view, json::error_code&) {
        scalar();
        m_stack.push_uint64(u);
        return true;
    }
    bool on_double(double d, json::string_view, json::error_code&) {
        scalar();
        m_stack.push_double(d);
        return true;
    }
    bool on_bool(bool b, json::error_code&) {
        scalar();
        m_stack.push_bool(b);
        return true;
    }
    bool on_null(json::error_code&) {
        scalar();
        m_stack.push_null();
        return true;
    }
    bool on_comment_part(json::string_view, json::error_code&) { return true; }
    bool on_comment(json::string_view, json::error_code&) { return true; }

private:
    struct Frame {
        bool object = false;
        std::string step;  ///< how the parent addresses this container
        std::size_t count = 0;
        std::string key;  ///< object: the current key
        std::set<std::string, std::less<>> keys;
    };

    void open(bool object) {
        std::string step;
        if (!m_frames.empty()) {
            Frame& parent = m_frames.back();
            step = parent.object ? key_step(parent.key) : index_step(parent.count++);
        }
        m_frames.push_back(Frame{object, std::move(step), 0, {}, {}});
    }
    void scalar() {
        if (!m_frames.empty() && !m_frames.back().object) ++m_frames.back().count;
    }
    std::string path() const {
        std::string p;
        for (const auto& f : m_frames)
            p += f.step;
        return p;
    }

    ProblemSink& m_sink;
    json::value_stack m_stack;
    std::vector<Frame> m_frames;
    std::string m_key;
};

/// Parses `text` into a DOM, reporting syntax errors and duplicate keys. nullopt on a syntax
/// error.
std::optional<json::value> parse_json(std::string_view text, const SchemaLimits& limits,
                                      ProblemSink& sink) {
    json::parse_options opts;
    opts.max_depth = limits.max_depth;
    json::basic_parser<DomHandler> parser(opts, sink);
    json::error_code ec;
    const std::size_t n = parser.write_some(false, text.data(), text.size(), ec);
    if (ec) {
        std::string what = ec.message();
        if (ec == json::error::too_deep)
            what = "nested deeper than " + std::to_string(limits.max_depth) + " levels";
        sink.add(line_column(text, n), "invalid JSON: " + what);
        return std::nullopt;
    }
    if (n != text.size()) {
        sink.add(line_column(text, n), "invalid JSON: unexpected text after the document");
        return std::nullopt;
    }
    return parser.handler().release();
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// 4. The loader
// ---------------------------------------------------------------------------------------------

/// Walks a parsed document in document order, reporting problems to the sink and building the
/// model. Befriended by Schema.
class SchemaLoader {
public:
    SchemaLoader(const SchemaLimits& limits, ProblemSink& sink) : m_limits(limits), m_sink(sink) {}

    Schema load(const json::value& root);

private:
    // -- generic accessors: each reports its own problems and returns nullopt on failure --

    void problem(const std::string& where, std::string message) {
        m_sink.add(path_of(where), std::move(message));
    }

    void check_keys(const json::object& o, const std::string& path,
                    std::span<const std::string_view> allowed) {
        for (const auto& kv : o) {
            const std::string_view key(kv.key().data(), kv.key().size());
            if (std::find(allowed.begin(), allowed.end(), key) == allowed.end())
                problem(path + key_step(key),
                        "unknown key (allowed here: " + join(allowed, [](std::string_view k) {
                            return std::string(k);
                        }) + ")");
        }
    }

    const json::value* member(const json::object& o, std::string_view key) {
        return o.if_contains(json::string_view(key.data(), key.size()));
    }

    std::optional<std::string> get_string(const json::object& o, const std::string& path,
                                          std::string_view key, bool required,
                                          std::string_view why_required = {}) {
        const json::value* v = member(o, key);
        if (!v) {
            if (required)
                problem(
                    path + key_step(key),
                    "missing" + (why_required.empty() ? std::string()
                                                      : " (" + std::string(why_required) + ")"));
            return std::nullopt;
        }
        if (!v->is_string()) {
            problem(path + key_step(key), std::string("expected a string, got ") + json_kind(*v));
            return std::nullopt;
        }
        return std::string(v->get_string().data(), v->get_string().size());
    }

    std::optional<std::int64_t> get_int(const json::object& o, const std::string& path,
                                        std::string_view key, bool required) {
        const json::value* v = member(o, key);
        if (!v) {
            if (required) problem(path + key_step(key), "missing");
            return std::nullopt;
        }
        if (v->is_int64()) return v->get_int64();
        if (v->is_uint64()) {
            problem(path + key_step(key),
                    std::to_string(v->get_uint64()) + " is too large (the maximum is 2^63-1)");
            return std::nullopt;
        }
        if (v->is_double()) {
            problem(path + key_step(key),
                    "expected an integer, got a number with a fraction "
                    "or an exponent");
            return std::nullopt;
        }
        problem(path + key_step(key), std::string("expected an integer, got ") + json_kind(*v));
        return std::nullopt;
    }

    std::optional<bool> get_bool(const json::object& o, const std::string& path,
                                 std::string_view key) {
        const json::value* v = member(o, key);
        if (!v) return std::nullopt;
        if (!v->is_bool()) {
            problem(path + key_step(key),
                    std::string("expected true or false, got ") + json_kind(*v));
            return std::nullopt;
        }
        return v->get_bool();
    }

    const json::array* get_array(const json::object& o, const std::string& path,
                                 std::string_view key, std::size_t max, const char* what) {
        const std::string where = path + key_step(key);
        const json::value* v = member(o, key);
        if (!v) {
            problem(where, std::string("missing (a list of ") + what + ")");
            return nullptr;
        }
        if (!v->is_array()) {
            problem(where, std::string("expected an array, got ") + json_kind(*v));
            return nullptr;
        }
        const json::array& a = v->get_array();
        if (a.empty()) {
            problem(where, std::string("is empty; list at least one of the ") + what);
            return nullptr;
        }
        if (a.size() > max) {
            problem(where, "has " + std::to_string(a.size()) + " " + what + "; the limit is " +
                               std::to_string(max));
            return nullptr;
        }
        return &a;
    }

    Labels get_labels(const json::object& o, const std::string& path, std::string_view key) {
        Labels out;
        const json::value* v = member(o, key);
        if (!v) return out;
        const std::string where = path + key_step(key);
        if (!v->is_object()) {
            problem(where, std::string("expected an object of language tag to text, such as "
                                       "{\"en\": \"Village\", \"zh\": \"嘎查/村\"}, got ") +
                               json_kind(*v));
            return out;
        }
        for (const auto& kv : v->get_object()) {
            const std::string lang(kv.key().data(), kv.key().size());
            const std::string at = where + key_step(lang);
            if (!is_language_tag(lang)) {
                problem(at, quote(lang) + " is not a language tag (such as en, zh, zh-Hant)");
                continue;
            }
            if (!kv.value().is_string()) {
                problem(at, std::string("expected a string, got ") + json_kind(kv.value()));
                continue;
            }
            const auto& s = kv.value().get_string();
            if (s.empty()) {
                problem(at, "is empty; leave the language out instead");
                continue;
            }
            out.emplace(lang, std::string(s.data(), s.size()));
        }
        return out;
    }

    // -- the document --

    void load_collection(const json::value& v, const std::string& path, CollectionDef& out);
    bool load_field(const json::value& v, const std::string& path, FieldDef& out);
    void load_values(const json::object& o, const std::string& path, FieldDef& out);

    const SchemaLimits& m_limits;
    ProblemSink& m_sink;
    std::vector<std::string> m_collection_names;  // every name declared, for targets
};

namespace {
constexpr std::array<std::string_view, 5> root_keys = {"name", "version", "title", "description",
                                                       "collections"};
constexpr std::array<std::string_view, 5> collection_keys = {"name", "area_field", "title",
                                                             "description", "fields"};
constexpr std::array<std::string_view, 13> field_keys = {
    "name",       "type",       "merge",  "required", "values", "min",        "max",
    "min_length", "max_length", "target", "unit",     "label",  "description"};
constexpr std::array<std::string_view, 2> choice_keys = {"code", "label"};

/// Which types each type-specific key applies to.
bool key_applies(std::string_view key, FieldType t) noexcept {
    if (key == "values") return t == FieldType::enumeration || t == FieldType::multi;
    if (key == "min" || key == "max") return t == FieldType::integer;
    if (key == "min_length" || key == "max_length") return t == FieldType::text;
    if (key == "target") return t == FieldType::reference;
    if (key == "unit") return t == FieldType::integer || t == FieldType::counter;
    return true;
}
const char* applies_to(std::string_view key) noexcept {
    if (key == "values") return "enum and multi fields";
    if (key == "min" || key == "max") return "integer fields";
    if (key == "min_length" || key == "max_length") return "text fields";
    if (key == "target") return "reference fields";
    if (key == "unit") return "integer and counter fields";
    return "all fields";
}

std::string name_rule_problem(std::string_view name) {
    if (!name.empty() && name[0] == '_')
        return quote(name) + " is reserved: names starting with \"_\" belong to the protocol " +
               "(\"_deleted\" is in every collection)";
    return quote(name) + " is not a valid name (a lower-case letter, then up to 62 lower-case " +
           "letters, digits or '_')";
}
}  // namespace

Schema SchemaLoader::load(const json::value& root) {
    Schema s;
    if (!root.is_object()) {
        problem("", std::string("expected a JSON object, got ") + json_kind(root));
        return s;
    }
    const json::object& o = root.get_object();
    check_keys(o, "", root_keys);
    if (auto name = get_string(o, "", "name", true)) {
        if (is_schema_name(*name))
            s.m_name = std::move(*name);
        else
            problem(".name", quote(*name) + " is not a valid schema name (a lower-case letter, " +
                                 "then up to 62 lower-case letters, digits, '_' or '-')");
    }
    if (auto version = get_int(o, "", "version", true)) {
        if (*version < 1 || *version > max_schema_version)
            problem(".version", std::to_string(*version) + " is out of range (1 to 2147483647)");
        else
            s.m_version = static_cast<std::uint32_t>(*version);
    }
    s.m_title = get_labels(o, "", "title");
    s.m_description = get_labels(o, "", "description");

    const json::array* cols =
        get_array(o, "", "collections", m_limits.max_collections, "collections");
    if (!cols) return s;
    // Every declared name first, so that references may point forwards.
    for (const auto& c : *cols) {
        if (!c.is_object()) continue;
        if (const auto* n = c.get_object().if_contains("name"); n && n->is_string()) {
            const std::string_view name(n->get_string().data(), n->get_string().size());
            if (is_name(name)) m_collection_names.emplace_back(name);
        }
    }
    std::map<std::string, std::size_t, std::less<>> seen;
    for (std::size_t i = 0; i < cols->size() && !m_sink.full(); ++i) {
        const std::string path = ".collections" + index_step(i);
        CollectionDef c;
        load_collection((*cols)[i], path, c);
        if (!c.name.empty()) {
            auto [it, fresh] = seen.emplace(c.name, i);
            if (!fresh)
                problem(path + ".name", quote(c.name) + " is already the name of collections" +
                                            index_step(it->second));
        }
        s.m_collections.push_back(std::move(c));
    }
    return s;
}

void SchemaLoader::load_collection(const json::value& v, const std::string& path,
                                   CollectionDef& out) {
    if (!v.is_object()) {
        problem(path, std::string("expected an object (a collection), got ") + json_kind(v));
        return;
    }
    const json::object& o = v.get_object();
    check_keys(o, path, collection_keys);
    if (auto name = get_string(o, path, "name", true)) {
        if (is_name(*name))
            out.name = std::move(*name);
        else
            problem(path + ".name", name_rule_problem(*name));
    }
    auto area_field = get_string(o, path, "area_field", true,
                                 "the name of the required area field that places each record");
    out.title = get_labels(o, path, "title");
    out.description = get_labels(o, path, "description");

    const json::array* fields = get_array(o, path, "fields", m_limits.max_fields, "fields");
    std::map<std::string, std::size_t, std::less<>> seen;
    std::map<std::string, bool, std::less<>> type_known;  // name -> its type was understood
    if (fields) {
        for (std::size_t i = 0; i < fields->size() && !m_sink.full(); ++i) {
            const std::string fpath = path + ".fields" + index_step(i);
            FieldDef f;
            const bool complete = load_field((*fields)[i], fpath, f);
            if (f.name.empty()) continue;
            auto [it, fresh] = seen.emplace(f.name, i);
            if (!fresh) {
                problem(fpath + ".name",
                        quote(f.name) + " is already the name of fields" + index_step(it->second));
                continue;
            }
            type_known.emplace(f.name, complete);
            out.fields.push_back(std::move(f));
        }
    }
    if (!area_field) return;
    out.area_field = *area_field;
    const std::string where = path + ".area_field";
    auto known = type_known.find(*area_field);
    if (known == type_known.end()) {
        if (fields)
            problem(where, quote(*area_field) + " is not a field of this collection; declare " +
                               "it with \"type\": \"area\" and \"required\": true");
        return;
    }
    if (!known->second) return;  // the field itself has problems, already reported
    const FieldDef* f = out.find(*area_field);
    if (f->type != FieldType::area)
        problem(where, "field " + quote(*area_field) + " has type " + to_string(f->type) +
                           "; the area field must have type area");
    else if (!f->required)
        problem(where, "field " + quote(*area_field) +
                           " must be required (\"required\": true): every record needs an area");
}

bool SchemaLoader::load_field(const json::value& v, const std::string& path, FieldDef& out) {
    if (!v.is_object()) {
        problem(path, std::string("expected an object (a field), got ") + json_kind(v));
        return false;
    }
    const json::object& o = v.get_object();
    check_keys(o, path, field_keys);
    if (auto name = get_string(o, path, "name", true)) {
        if (is_name(*name))
            out.name = std::move(*name);
        else
            problem(path + ".name", name_rule_problem(*name));
    }
    std::optional<FieldType> type;
    if (auto t = get_string(o, path, "type", true)) {
        type = parse_field_type(*t);
        if (type)
            out.type = *type;
        else
            problem(path + ".type", quote(*t) + " is not a field type (" +
                                        join(field_type_names,
                                             [](const auto& p) { return std::string(p.second); }) +
                                        ")");
    }
    std::optional<MergeRule> rule;
    if (auto m = get_string(o, path, "merge", true)) {
        rule = parse_merge_rule(*m);
        if (rule)
            out.rule = *rule;
        else
            problem(path + ".merge",
                    quote(*m) + " is not a merge rule (lww, review, set, counter)");
    }
    if (type && rule && !merge_rule_allowed(*type, *rule)) {
        std::string allowed = *type == FieldType::multi ? "a multi field merges with \"set\""
                              : *type == FieldType::counter
                                  ? "a counter field merges with "
                                    "\"counter\""
                                  : std::string("use \"lww\" or \"review\"");
        problem(path + ".merge", quote(to_string(*rule)) + " is not allowed for " +
                                     with_article(to_string(*type)) + " field (" + allowed + ")");
        rule.reset();
    }
    if (auto req = get_bool(o, path, "required")) {
        if (*req && type == FieldType::counter)
            problem(path + ".required",
                    "a counter field cannot be required (it always has a value, 0 at first)");
        else
            out.required = *req;
    }
    out.label = get_labels(o, path, "label");
    out.description = get_labels(o, path, "description");
    if (!type) return false;

    for (std::string_view key :
         {"values", "min", "max", "min_length", "max_length", "target", "unit"}) {
        if (member(o, key) && !key_applies(key, *type))
            problem(path + key_step(key), std::string("applies only to ") + applies_to(key) +
                                              ", not to " + to_string(*type) + " fields");
    }
    switch (*type) {
        case FieldType::enumeration:
        case FieldType::multi:
            load_values(o, path, out);
            break;
        case FieldType::integer: {
            out.min = get_int(o, path, "min", false);
            out.max = get_int(o, path, "max", false);
            if (out.min && out.max && *out.min > *out.max)
                problem(path + ".min", "min " + std::to_string(*out.min) + " is greater than max " +
                                           std::to_string(*out.max));
            break;
        }
        case FieldType::text: {
            for (auto [key, slot] : {std::pair{"min_length", &out.min_length},
                                     std::pair{"max_length", &out.max_length}}) {
                auto n = get_int(o, path, key, false);
                if (!n) continue;
                if (*n < 0 || *n > max_text_length_bound)
                    problem(path + key_step(key),
                            std::to_string(*n) + " is out of range (0 to 2147483647)");
                else
                    *slot = static_cast<std::uint32_t>(*n);
            }
            if (out.max_length && *out.max_length == 0)
                problem(path + ".max_length", "0 allows only empty text; leave the field out");
            if (out.min_length && out.max_length && *out.min_length > *out.max_length)
                problem(path + ".min_length", "min_length " + std::to_string(*out.min_length) +
                                                  " is greater than max_length " +
                                                  std::to_string(*out.max_length));
            break;
        }
        case FieldType::reference: {
            auto target = get_string(o, path, "target", true,
                                     "the name of the collection the reference points into");
            if (!target) break;
            if (std::find(m_collection_names.begin(), m_collection_names.end(), *target) ==
                m_collection_names.end())
                problem(path + ".target", quote(*target) + " is not a collection of this schema" +
                                              (m_collection_names.empty()
                                                   ? std::string()
                                                   : " (" +
                                                         join(
                                                             m_collection_names,
                                                             [](const std::string& n) { return n; },
                                                             max_codes_in_message) +
                                                         ")"));
            else
                out.target = std::move(*target);
            break;
        }
        default:
            break;
    }
    if (key_applies("unit", *type)) {
        if (auto unit = get_string(o, path, "unit", false)) {
            if (unit->empty())
                problem(path + ".unit", "is empty; leave it out instead");
            else
                out.unit = std::move(*unit);
        }
    }
    return rule.has_value();
}

void SchemaLoader::load_values(const json::object& o, const std::string& path, FieldDef& out) {
    const json::array* values = get_array(o, path, "values", m_limits.max_values, "codes");
    if (!values) return;
    std::map<std::string, std::size_t, std::less<>> seen;
    for (std::size_t i = 0; i < values->size() && !m_sink.full(); ++i) {
        const std::string vpath = path + ".values" + index_step(i);
        const json::value& v = (*values)[i];
        Choice c;
        std::string code_path = vpath;
        if (v.is_string()) {
            c.code.assign(v.get_string().data(), v.get_string().size());
        } else if (v.is_object()) {
            check_keys(v.get_object(), vpath, choice_keys);
            auto code = get_string(v.get_object(), vpath, "code", true);
            if (!code) continue;
            c.code = std::move(*code);
            c.label = get_labels(v.get_object(), vpath, "label");
            code_path += ".code";
        } else {
            problem(vpath, std::string("expected a code (a string) or {\"code\": ..., "
                                       "\"label\": {...}}, got ") +
                               json_kind(v));
            continue;
        }
        if (!is_code(c.code)) {
            problem(code_path, quote(c.code) +
                                   " is not a valid code (a lower-case letter or "
                                   "digit, then up to 62 lower-case letters, digits "
                                   "or '_')");
            continue;
        }
        auto [it, fresh] = seen.emplace(c.code, i);
        if (!fresh) {
            problem(code_path,
                    quote(c.code) + " is already listed at values" + index_step(it->second));
            continue;
        }
        out.values.push_back(std::move(c));
    }
}

// ---------------------------------------------------------------------------------------------
// 5. Schema
// ---------------------------------------------------------------------------------------------

namespace {
/// Loads, or only checks: the model is returned when no problem was found.
std::optional<Schema> load_into(std::string_view text, const SchemaLimits& limits,
                                std::vector<SchemaProblem>& problems) {
    ProblemSink sink(problems, std::max<std::size_t>(limits.max_problems, 2));
    if (text.size() > limits.max_document_bytes) {
        sink.add("document", "is " + std::to_string(text.size()) + " bytes; the limit is " +
                                 std::to_string(limits.max_document_bytes));
        return std::nullopt;
    }
    try {
        auto root = parse_json(text, limits, sink);
        if (!root) return std::nullopt;
        SchemaLoader loader(limits, sink);
        Schema s = loader.load(*root);
        if (!sink.empty()) return std::nullopt;
        return s;
    } catch (const std::exception& e) {
        // Boost.JSON reports allocation failure and its own size limits by throwing.
        sink.add("document", std::string("could not be processed: ") + e.what());
        return std::nullopt;
    }
}

}  // namespace

std::vector<SchemaProblem> Schema::check(std::string_view json_text, const SchemaLimits& limits) {
    std::vector<SchemaProblem> problems;
    (void)load_into(json_text, limits, problems);
    return problems;
}

Result<Schema> Schema::load(std::string_view json_text, const SchemaLimits& limits) {
    std::vector<SchemaProblem> problems;
    auto s = load_into(json_text, limits, problems);
    if (!s) return Error{protocol_errc::schema_invalid, to_string(problems)};
    return std::move(*s);
}

namespace {
json::object labels_json(const Labels& l) {
    json::object o;
    for (const auto& [lang, text] : l)
        o[lang] = text;
    return o;
}
}  // namespace

const CollectionDef* Schema::find(std::string_view collection) const noexcept {
    for (const auto& c : m_collections)
        if (c.name == collection) return &c;
    return nullptr;
}

const FieldDef* Schema::find_field(std::string_view collection,
                                   std::string_view field) const noexcept {
    const CollectionDef* c = find(collection);
    return c ? c->find(field) : nullptr;
}

std::string Schema::to_json() const {
    json::object root;
    root["name"] = m_name;
    root["version"] = m_version;
    if (!m_title.empty()) root["title"] = labels_json(m_title);
    if (!m_description.empty()) root["description"] = labels_json(m_description);
    json::array cols;
    for (const auto& c : m_collections) {
        json::object co;
        co["name"] = c.name;
        co["area_field"] = c.area_field;
        if (!c.title.empty()) co["title"] = labels_json(c.title);
        if (!c.description.empty()) co["description"] = labels_json(c.description);
        json::array fields;
        for (const auto& f : c.fields) {
            json::object fo;
            fo["name"] = f.name;
            fo["type"] = to_string(f.type);
            fo["merge"] = to_string(f.rule);
            if (f.required) fo["required"] = true;
            if (!f.values.empty()) {
                json::array values;
                for (const auto& v : f.values) {
                    if (v.label.empty()) {
                        values.emplace_back(v.code);
                    } else {
                        json::object vo;
                        vo["code"] = v.code;
                        vo["label"] = labels_json(v.label);
                        values.emplace_back(std::move(vo));
                    }
                }
                fo["values"] = std::move(values);
            }
            if (f.min) fo["min"] = *f.min;
            if (f.max) fo["max"] = *f.max;
            if (f.min_length) fo["min_length"] = *f.min_length;
            if (f.max_length) fo["max_length"] = *f.max_length;
            if (!f.target.empty()) fo["target"] = f.target;
            if (!f.unit.empty()) fo["unit"] = f.unit;
            if (!f.label.empty()) fo["label"] = labels_json(f.label);
            if (!f.description.empty()) fo["description"] = labels_json(f.description);
            fields.emplace_back(std::move(fo));
        }
        co["fields"] = std::move(fields);
        cols.emplace_back(std::move(co));
    }
    root["collections"] = std::move(cols);
    return json::serialize(root);
}

Status Schema::validate_value(std::string_view collection, std::string_view field,
                              const Value& v) const {
    const CollectionDef* c = find(collection);
    if (!c)
        return Error{protocol_errc::validation_failed,
                     quote(collection) + " is not a collection of schema " + m_name + " v" +
                         std::to_string(m_version)};
    return c->validate_value(field, v);
}

Status Schema::validate_record(const RecordState& record) const {
    const std::string who = record.collection + "/" + record.id.to_string();
    const CollectionDef* c = find(record.collection);
    if (!c)
        return Error{protocol_errc::validation_failed,
                     who + ": " + quote(record.collection) + " is not a collection of schema " +
                         m_name + " v" + std::to_string(m_version)};

    std::vector<std::string> lines;
    std::size_t dropped = 0;
    auto report = [&](std::string_view field, const std::string& why) {
        if (lines.size() < max_record_problems)
            lines.push_back(who + ": field " + std::string(field) + ": " + why);
        else
            ++dropped;
    };
    auto written_by = [](const Entry& e) {
        return e.by.empty() ? std::string() : " (written by " + quote(e.by) + ")";
    };

    // "_deleted": a review register of booleans (record.hpp).
    bool deleted = false;
    if (auto it = record.fields.find(std::string(deleted_field)); it != record.fields.end()) {
        if (const auto* r = std::get_if<ReviewState>(&it->second)) {
            bool ok = true;
            for (const auto& e : r->entries) {
                if (!std::holds_alternative<bool>(e.value)) {
                    report(deleted_field,
                           "expected true or false, got " + found(e.value) + written_by(e));
                    ok = false;
                }
            }
            deleted = ok && record.is_deleted();
        } else {
            report(deleted_field, std::string("holds a ") + to_string(rule_of(it->second)) +
                                      " state; it is always a review register of booleans");
        }
    }

    for (const FieldDef& f : c->fields) {
        auto it = record.fields.find(f.name);
        const bool must_have = f.required && !deleted;
        if (it == record.fields.end()) {
            if (must_have) report(f.name, "is required but has no value");
            continue;
        }
        const FieldState& state = it->second;
        if (rule_of(state) != f.rule) {
            report(f.name, std::string("holds a ") + to_string(rule_of(state)) +
                               " state, but the schema merges it with " + to_string(f.rule));
            continue;
        }
        switch (f.rule) {
            case MergeRule::lww: {
                const Entry& e = std::get<LwwState>(state).entry;
                if (auto why = value_problem(f, e.value, ValueUse::held))
                    report(f.name, *why + written_by(e));
                else if (must_have && std::holds_alternative<std::monostate>(e.value))
                    report(f.name, "is required but is null");
                break;
            }
            case MergeRule::review: {
                bool all_ok = true;
                for (const Entry& e : std::get<ReviewState>(state).entries) {
                    if (auto why = value_problem(f, e.value, ValueUse::held)) {
                        report(f.name, *why + written_by(e));
                        all_ok = false;
                    }
                }
                if (all_ok && must_have) {
                    auto view = record.view(f.name);
                    if (!view || std::holds_alternative<std::monostate>(view->value))
                        report(f.name, "is required but its provisional value is null");
                }
                break;
            }
            case MergeRule::set: {
                const auto& elements = std::get<SetState>(state).elements;
                for (const auto& kv : elements) {
                    if (std::holds_alternative<std::monostate>(kv.first))
                        report(f.name, "null is not a code; expected one of " + codes_of(f));
                    else if (auto why = value_problem(f, kv.first, ValueUse::held))
                        report(f.name, *why);
                }
                if (must_have && elements.empty()) report(f.name, "is required but has no element");
                break;
            }
            case MergeRule::counter: {
                std::uint64_t inc = 0, dec = 0;
                bool overflow = false;
                for (const auto& kv : std::get<CounterState>(state).slots) {
                    overflow |= kv.second.inc > std::numeric_limits<std::uint64_t>::max() - inc;
                    overflow |= kv.second.dec > std::numeric_limits<std::uint64_t>::max() - dec;
                    if (overflow) break;
                    inc += kv.second.inc;
                    dec += kv.second.dec;
                }
                constexpr auto max_pos =
                    static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
                if (overflow || (inc >= dec ? inc - dec > max_pos : dec - inc > max_pos + 1))
                    report(f.name, "the counter's total does not fit in a 64-bit integer");
                break;
            }
        }
    }
    if (lines.empty()) return {};
    std::string message;
    for (const auto& l : lines) {
        if (!message.empty()) message += '\n';
        message += l;
    }
    if (dropped) message += "\n" + who + ": ... and " + std::to_string(dropped) + " more";
    return Error{protocol_errc::validation_failed, std::move(message)};
}

Result<std::string> Schema::area_of(const RecordState& record) const {
    const std::string who = record.collection + "/" + record.id.to_string();
    const CollectionDef* c = find(record.collection);
    if (!c)
        return Error{protocol_errc::validation_failed,
                     who + ": " + quote(record.collection) + " is not a collection of schema " +
                         m_name + " v" + std::to_string(m_version)};
    auto view = record.view(c->area_field);
    if (!view || std::holds_alternative<std::monostate>(view->value))
        return Error{protocol_errc::validation_failed,
                     who + ": area field " + c->area_field + " has no value"};
    const auto* s = std::get_if<std::string>(&view->value);
    if (!s || !is_valid_area_code(*s))
        return Error{protocol_errc::validation_failed, who + ": area field " + c->area_field +
                                                           ": " + show(view->value) +
                                                           " is not an area code"};
    return *s;
}

Status Schema::check_upgrade_from(const Schema& previous) const {
    std::vector<SchemaProblem> problems;
    auto add = [&](std::string where, std::string message) {
        problems.push_back({std::move(where), std::move(message)});
    };
    const std::string prev = "version " + std::to_string(previous.m_version);
    if (m_name != previous.m_name)
        add("name", quote(m_name) + " differs from " + quote(previous.m_name) +
                        "; a schema keeps its name across versions");
    if (m_version < previous.m_version)
        add("version", std::to_string(m_version) + " is older than the current " + prev);
    else if (m_version == previous.m_version && !(*this == previous))
        add("version", prev + " is already published with different content; publish this " +
                           "as version " + std::to_string(m_version + 1));

    for (const CollectionDef& old_c : previous.m_collections) {
        const CollectionDef* c = find(old_c.name);
        if (!c) {
            add("collections", "collection " + quote(old_c.name) + " of " + prev +
                                   " is missing; collections are never removed");
            continue;
        }
        const std::string cpath =
            "collections" + index_step(static_cast<std::size_t>(c - m_collections.data()));
        if (c->area_field != old_c.area_field)
            add(cpath + ".area_field",
                quote(c->area_field) + " differs from " + quote(old_c.area_field) + " of " + prev);
        for (const FieldDef& old_f : old_c.fields) {
            const FieldDef* f = c->find(old_f.name);
            if (!f) {
                add(cpath + ".fields", "field " + quote(old_f.name) + " of " + prev +
                                           " is missing; fields are never removed (records "
                                           "hold it)");
                continue;
            }
            const std::string fpath =
                cpath + ".fields" + index_step(static_cast<std::size_t>(f - c->fields.data()));
            if (f->type != old_f.type)
                add(fpath + ".type", std::string(to_string(f->type)) + " differs from " +
                                         to_string(old_f.type) + " of " + prev);
            if (f->rule != old_f.rule)
                add(fpath + ".merge", std::string(to_string(f->rule)) + " differs from " +
                                          to_string(old_f.rule) + " of " + prev);
            if (f->target != old_f.target)
                add(fpath + ".target",
                    quote(f->target) + " differs from " + quote(old_f.target) + " of " + prev);
            if (f->required && !old_f.required)
                add(fpath + ".required",
                    "the field was optional in " + prev + "; records written under it may lack it");
            for (const Choice& v : old_f.values)
                if (!f->find_value(v.code))
                    add(fpath + ".values", "code " + quote(v.code) + " of " + prev +
                                               " is missing; codes are never removed");
            const auto raised = [](const auto& now, const auto& before) {
                return now && (!before || *now > *before);
            };
            const auto lowered = [](const auto& now, const auto& before) {
                return now && (!before || *now < *before);
            };
            if (raised(f->min, old_f.min)) add(fpath + ".min", "narrows the range of " + prev);
            if (lowered(f->max, old_f.max)) add(fpath + ".max", "narrows the range of " + prev);
            if (raised(f->min_length, old_f.min_length))
                add(fpath + ".min_length", "narrows the length range of " + prev);
            if (lowered(f->max_length, old_f.max_length))
                add(fpath + ".max_length", "narrows the length range of " + prev);
        }
        for (std::size_t j = 0; j < c->fields.size(); ++j) {
            const FieldDef& f = c->fields[j];
            if (f.required && !old_c.find(f.name))
                add(cpath + ".fields" + index_step(j) + ".required",
                    "a field added to an existing collection cannot be required (records "
                    "written under " +
                        prev + " lack it)");
        }
    }
    if (problems.empty()) return {};
    return Error{protocol_errc::schema_invalid, to_string(problems)};
}

}  // namespace fieldsync::protocol
