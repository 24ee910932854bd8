// CBOR writer and pull reader over libcbor. See cbor.hpp for the profile and the limits.
#include "fieldsync/protocol/cbor.hpp"

#include <cbor.h>

#include <algorithm>
#include <cstring>
#include <limits>

namespace fieldsync::protocol {

// ---------------------------------------------------------------------------------------------
// Writer

namespace {
template <class F, class... A>
void append_head(Bytes& out, F encode, A... args) {
    unsigned char buf[9];
    std::size_t n = encode(args..., buf, sizeof buf);
    out.insert(out.end(), buf, buf + n);
}
}  // namespace

void CborWriter::uint(std::uint64_t v) {
    append_head(m_out, cbor_encode_uint, v);
}

void CborWriter::int64(std::int64_t v) {
    if (v >= 0) {
        append_head(m_out, cbor_encode_uint, static_cast<std::uint64_t>(v));
    } else {
        // -1 - v, computed without overflow for INT64_MIN.
        append_head(m_out, cbor_encode_negint, static_cast<std::uint64_t>(-(v + 1)));
    }
}

void CborWriter::boolean(bool v) {
    append_head(m_out, cbor_encode_bool, v);
}
void CborWriter::null() {
    append_head(m_out, cbor_encode_null);
}

void CborWriter::text(std::string_view s) {
    append_head(m_out, cbor_encode_string_start, s.size());
    m_out.insert(m_out.end(), s.begin(), s.end());
}

void CborWriter::bytes(ByteView b) {
    append_head(m_out, cbor_encode_bytestring_start, b.size());
    m_out.insert(m_out.end(), b.begin(), b.end());
}

void CborWriter::array(std::size_t count) {
    append_head(m_out, cbor_encode_array_start, count);
}
void CborWriter::map(std::size_t count) {
    append_head(m_out, cbor_encode_map_start, count);
}
void CborWriter::raw(ByteView encoded) {
    m_out.insert(m_out.end(), encoded.begin(), encoded.end());
}

void CanonicalMap::write_to(CborWriter& w) {
    std::sort(m_entries.begin(), m_entries.end(),
              [](const Entry& a, const Entry& b) { return a.key < b.key; });
    w.map(m_entries.size());
    for (const auto& e : m_entries) {
        w.raw(e.key);
        w.raw(e.value);
    }
}

// ---------------------------------------------------------------------------------------------
// Reader

const char* to_string(CborType t) noexcept {
    switch (t) {
        case CborType::unsigned_int:
            return "unsigned integer";
        case CborType::negative_int:
            return "negative integer";
        case CborType::bytes:
            return "byte string";
        case CborType::text:
            return "text string";
        case CborType::array:
            return "array";
        case CborType::map:
            return "map";
        case CborType::boolean:
            return "boolean";
        case CborType::null:
            return "null";
    }
    return "unknown";
}

namespace {

// What the streaming callbacks saw for one item head.
struct Decoded {
    CborItem item;
    const char* unsupported = nullptr;  // set when the item is outside the fieldsync profile
    bool seen = false;
};

Decoded* ctx(void* p) {
    return static_cast<Decoded*>(p);
}

void set_int(void* p, CborType t, std::uint64_t v) {
    Decoded& c = *ctx(p);
    c = {};
    c.item.type = t;
    c.item.uint_value = v;
    c.seen = true;
}
void on_uint8(void* p, uint8_t v) {
    set_int(p, CborType::unsigned_int, v);
}
void on_uint16(void* p, uint16_t v) {
    set_int(p, CborType::unsigned_int, v);
}
void on_uint32(void* p, uint32_t v) {
    set_int(p, CborType::unsigned_int, v);
}
void on_uint64(void* p, uint64_t v) {
    set_int(p, CborType::unsigned_int, v);
}
void on_neg8(void* p, uint8_t v) {
    set_int(p, CborType::negative_int, v);
}
void on_neg16(void* p, uint16_t v) {
    set_int(p, CborType::negative_int, v);
}
void on_neg32(void* p, uint32_t v) {
    set_int(p, CborType::negative_int, v);
}
void on_neg64(void* p, uint64_t v) {
    set_int(p, CborType::negative_int, v);
}
void on_bytes(void* p, cbor_data d, uint64_t n) {
    Decoded& c = *ctx(p);
    c = {};
    c.item.type = CborType::bytes;
    c.item.str = std::string_view(reinterpret_cast<const char*>(d), static_cast<std::size_t>(n));
    c.seen = true;
}
void on_text(void* p, cbor_data d, uint64_t n) {
    on_bytes(p, d, n);
    ctx(p)->item.type = CborType::text;
}
void on_array(void* p, uint64_t n) {
    Decoded& c = *ctx(p);
    c = {};
    c.item.type = CborType::array;
    c.item.count = static_cast<std::size_t>(n);
    c.seen = true;
}
void on_map(void* p, uint64_t n) {
    on_array(p, n);
    ctx(p)->item.type = CborType::map;
}
void on_bool(void* p, bool v) {
    Decoded& c = *ctx(p);
    c = {};
    c.item.type = CborType::boolean;
    c.item.bool_value = v;
    c.seen = true;
}
void on_null(void* p) {
    Decoded& c = *ctx(p);
    c = {};
    c.item.type = CborType::null;
    c.seen = true;
}
void unsupported(void* p, const char* what) {
    Decoded& c = *ctx(p);
    c = {};
    c.unsupported = what;
    c.seen = true;
}
void on_indef_bytes(void* p) {
    unsupported(p, "indefinite-length byte string");
}
void on_indef_text(void* p) {
    unsupported(p, "indefinite-length text string");
}
void on_indef_array(void* p) {
    unsupported(p, "indefinite-length array");
}
void on_indef_map(void* p) {
    unsupported(p, "indefinite-length map");
}
void on_tag(void* p, uint64_t) {
    unsupported(p, "tag");
}
void on_float(void* p, float) {
    unsupported(p, "floating-point number");
}
void on_double(void* p, double) {
    unsupported(p, "floating-point number");
}
void on_undefined(void* p) {
    unsupported(p, "undefined");
}
void on_break(void* p) {
    unsupported(p, "break");
}

// The libcbor 0.8 callback struct takes byte and collection sizes as size_t; adapt.
void on_bytes_sz(void* p, cbor_data d, std::size_t n) {
    on_bytes(p, d, n);
}
void on_text_sz(void* p, cbor_data d, std::size_t n) {
    on_text(p, d, n);
}
void on_array_sz(void* p, std::size_t n) {
    on_array(p, n);
}
void on_map_sz(void* p, std::size_t n) {
    on_map(p, n);
}

// Reads the head of one plain item by hand: major types 0-5 with a definite argument, and the
// simple values false, true and null (RFC 8949 §3: the initial byte's top three bits are the
// major type, its low five the argument: below 24 the value itself, 24-27 the value in the
// next 1, 2, 4 or 8 bytes, big-endian). These are nearly every item a record holds, and going
// through cbor_stream_decode and its callbacks cost a quarter of decoding one (callgrind,
// BENCHMARKS.md). Returns false for everything else: major type 6, other simple values and
// floats, the reserved arguments 28-30, indefinite lengths, and a head or string that runs past
// the end of the input. The caller then decodes the item with libcbor, so every error is still
// the one libcbor's result gives. For what it accepts, the result (type, value, view, bytes
// read) is what the libcbor path gives: tests/protocol/cbor_test.cpp checks the two against
// each other for every initial byte. Always inlined: next() and peek_type() run it for every
// item, and a call costs as much as the work (callgrind).
[[gnu::always_inline]] inline bool read_plain_head(const std::uint8_t* p, std::size_t n,
                                                   CborItem& item, std::size_t& read) noexcept {
    if (n == 0) return false;
    const unsigned major = p[0] >> 5;
    const unsigned info = p[0] & 0x1fu;
    if (major == 7) {
        if (info < 20 || info > 22) return false;
        item = {};
        item.type = info == 22 ? CborType::null : CborType::boolean;
        item.bool_value = info == 21;
        read = 1;
        return true;
    }
    if (major == 6 || info > 27) return false;
    std::uint64_t arg = info;
    std::size_t head = 1;
    if (info >= 24) {
        const std::size_t width = std::size_t{1} << (info - 24);  // 1, 2, 4 or 8 bytes
        if (n - 1 < width) return false;
        arg = 0;
        for (std::size_t i = 1; i <= width; ++i)
            arg = (arg << 8) | p[i];
        head = 1 + width;
    }
    item = {};
    switch (major) {
        case 0:
            item.type = CborType::unsigned_int;
            item.uint_value = arg;
            break;
        case 1:
            item.type = CborType::negative_int;
            item.uint_value = arg;
            break;
        case 2:
        case 3:
            if (arg > n - head) return false;  // truncated: libcbor reports it
            item.type = major == 2 ? CborType::bytes : CborType::text;
            item.str = std::string_view(reinterpret_cast<const char*>(p + head),
                                        static_cast<std::size_t>(arg));
            read = head + static_cast<std::size_t>(arg);
            return true;
        case 4:
            item.type = CborType::array;
            item.count = static_cast<std::size_t>(arg);
            break;
        default:  // 5
            item.type = CborType::map;
            item.count = static_cast<std::size_t>(arg);
            break;
    }
    read = head;
    return true;
}

const cbor_callbacks& callbacks() {
    static const cbor_callbacks cb = [] {
        cbor_callbacks c = cbor_empty_callbacks;
        c.uint8 = on_uint8;
        c.uint16 = on_uint16;
        c.uint32 = on_uint32;
        c.uint64 = on_uint64;
        c.negint8 = on_neg8;
        c.negint16 = on_neg16;
        c.negint32 = on_neg32;
        c.negint64 = on_neg64;
        c.byte_string = on_bytes_sz;
        c.byte_string_start = on_indef_bytes;
        c.string = on_text_sz;
        c.string_start = on_indef_text;
        c.array_start = on_array_sz;
        c.indef_array_start = on_indef_array;
        c.map_start = on_map_sz;
        c.indef_map_start = on_indef_map;
        c.tag = on_tag;
        c.float2 = on_float;
        c.float4 = on_float;
        c.float8 = on_double;
        c.undefined = on_undefined;
        c.null = on_null;
        c.boolean = on_bool;
        c.indef_break = on_break;
        return c;
    }();
    return cb;
}

Error type_error(CborType want, CborType got) {
    return Error{protocol_errc::wrong_type,
                 std::string("expected a ") + to_string(want) + ", found a " + to_string(got)};
}

}  // namespace

Result<CborItem> CborReader::next() {
    // The short path: a plain head within every limit. Anything else, failures included, goes
    // to next_in_full, which decodes it with libcbor and checks the same limits in order.
    CborItem it;
    std::size_t read = 0;
    if (m_in.size() <= m_limits.max_input_bytes && !at_end() &&
        read_plain_head(m_in.data() + m_pos, m_in.size() - m_pos, it, read)) {
        const std::size_t left = m_in.size() - m_pos - read;
        bool within = true;
        if (it.type == CborType::bytes || it.type == CborType::text) {
            within = it.str.size() <= m_limits.max_string_bytes;
        } else if (it.type == CborType::array || it.type == CborType::map) {
            within = it.count <= m_limits.max_items &&
                     it.count <= (it.type == CborType::map ? left / 2 : left);
        }
        if (within) {
            m_pos += read;
            return it;
        }
    }
    return next_in_full();
}

[[gnu::noinline]] Result<CborItem> CborReader::next_in_full() {
    if (m_in.size() > m_limits.max_input_bytes) {
        return Error{protocol_errc::limit_exceeded, "input of " + std::to_string(m_in.size()) +
                                                        " bytes exceeds the limit of " +
                                                        std::to_string(m_limits.max_input_bytes)};
    }
    if (at_end()) return Error{protocol_errc::malformed, "unexpected end of input"};
    Decoded d;
    cbor_decoder_result r =
        cbor_stream_decode(m_in.data() + m_pos, m_in.size() - m_pos, &callbacks(), &d);
    if (r.status == CBOR_DECODER_NEDATA) {
        return Error{protocol_errc::malformed, "truncated item at byte " + std::to_string(m_pos)};
    }
    if (r.status != CBOR_DECODER_FINISHED || !d.seen) {
        return Error{protocol_errc::malformed, "malformed item at byte " + std::to_string(m_pos) +
                                                   " (reserved or invalid "
                                                   "initial byte 0x" +
                                                   to_hex(ByteView(m_in.data() + m_pos, 1)) + ")"};
    }
    if (d.unsupported) {
        return Error{protocol_errc::malformed, std::string(d.unsupported) + " at byte " +
                                                   std::to_string(m_pos) +
                                                   " is outside the fieldsync CBOR profile"};
    }
    const std::size_t at = m_pos;
    m_pos += r.read;
    CborItem& it = d.item;
    if (it.type == CborType::bytes || it.type == CborType::text) {
        if (it.str.size() > m_limits.max_string_bytes) {
            return Error{protocol_errc::limit_exceeded,
                         std::string(to_string(it.type)) + " of " + std::to_string(it.str.size()) +
                             " bytes at byte " + std::to_string(at) + " exceeds the limit of " +
                             std::to_string(m_limits.max_string_bytes)};
        }
    }
    if (it.type == CborType::array || it.type == CborType::map) {
        if (it.count > m_limits.max_items) {
            return Error{protocol_errc::limit_exceeded,
                         std::string(to_string(it.type)) + " of " + std::to_string(it.count) +
                             " entries at byte " + std::to_string(at) + " exceeds the limit of " +
                             std::to_string(m_limits.max_items)};
        }
        // Every item takes at least one byte, so a count larger than what is left is a lie.
        // (A map's count is compared with half of it: count * 2 could wrap around.)
        if (it.count > (it.type == CborType::map ? remaining() / 2 : remaining())) {
            return Error{protocol_errc::malformed,
                         std::string(to_string(it.type)) + " at byte " + std::to_string(at) +
                             " declares " + std::to_string(it.count) + " entries but only " +
                             std::to_string(remaining()) + " bytes follow"};
        }
    }
    return it;
}

Result<CborType> CborReader::peek_type() {
    // A plain head (read_plain_head) gives its type without consuming it; a string or
    // collection over its size limit is reported by the read that consumes it. Anything else
    // (major type 6, floats, an indefinite length, a reserved argument, input cut short or
    // over max_input_bytes) is decoded in full, which reports it.
    CborItem it;
    std::size_t read = 0;
    if (m_in.size() <= m_limits.max_input_bytes && !at_end() &&
        read_plain_head(m_in.data() + m_pos, m_in.size() - m_pos, it, read)) {
        return it.type;
    }
    const std::size_t save_pos = m_pos;
    auto r = next();
    m_pos = save_pos;
    if (!r) return std::move(r).error();
    return r->type;
}

Result<std::uint64_t> CborReader::read_uint() {
    auto r = next();
    if (!r) return std::move(r).error();
    if (r->type != CborType::unsigned_int) return type_error(CborType::unsigned_int, r->type);
    return r->uint_value;
}

Result<std::int64_t> CborReader::read_int() {
    auto r = next();
    if (!r) return std::move(r).error();
    constexpr auto max = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
    if (r->type == CborType::unsigned_int) {
        if (r->uint_value > max)
            return Error{protocol_errc::invalid_value, "integer does not fit in 64 signed bits"};
        return static_cast<std::int64_t>(r->uint_value);
    }
    if (r->type == CborType::negative_int) {
        if (r->uint_value > max)
            return Error{protocol_errc::invalid_value, "integer does not fit in 64 signed bits"};
        return -1 - static_cast<std::int64_t>(r->uint_value);
    }
    return Error{protocol_errc::wrong_type,
                 std::string("expected an integer, found a ") + to_string(r->type)};
}

Result<bool> CborReader::read_bool() {
    auto r = next();
    if (!r) return std::move(r).error();
    if (r->type != CborType::boolean) return type_error(CborType::boolean, r->type);
    return r->bool_value;
}

Result<std::string_view> CborReader::read_text() {
    auto r = next();
    if (!r) return std::move(r).error();
    if (r->type != CborType::text) return type_error(CborType::text, r->type);
    return r->str;
}

Result<std::string_view> CborReader::read_bytes() {
    auto r = next();
    if (!r) return std::move(r).error();
    if (r->type != CborType::bytes) return type_error(CborType::bytes, r->type);
    return r->str;
}

Result<std::size_t> CborReader::read_array() {
    auto r = next();
    if (!r) return std::move(r).error();
    if (r->type != CborType::array) return type_error(CborType::array, r->type);
    return r->count;
}

Result<std::size_t> CborReader::read_map() {
    auto r = next();
    if (!r) return std::move(r).error();
    if (r->type != CborType::map) return type_error(CborType::map, r->type);
    return r->count;
}

Status CborReader::enter() {
    if (m_depth >= m_limits.max_depth) {
        return Error{protocol_errc::limit_exceeded,
                     "nesting deeper than " + std::to_string(m_limits.max_depth) + " levels"};
    }
    ++m_depth;
    return {};
}

Status CborReader::check_count(std::size_t n) const {
    if (n > remaining()) {
        return Error{protocol_errc::malformed, std::to_string(n) + " items declared but only " +
                                                   std::to_string(remaining()) + " bytes follow"};
    }
    return {};
}

Status CborReader::skip() {
    // Iterative: `pending` counts the items still to consume at each open level.
    std::vector<std::size_t> pending;
    std::size_t todo = 1;
    const std::size_t base_depth = m_depth;
    for (;;) {
        while (todo == 0) {
            if (pending.empty()) return {};
            todo = pending.back();
            pending.pop_back();
            leave();
        }
        --todo;
        auto r = next();
        if (!r) {
            m_depth = base_depth;
            return std::move(r).error();
        }
        if (r->type == CborType::array || r->type == CborType::map) {
            if (auto s = enter(); !s) {
                m_depth = base_depth;
                return s;
            }
            pending.push_back(todo);
            todo = r->type == CborType::map ? r->count * 2 : r->count;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Hex and diagnostic notation

std::string to_hex(ByteView b) {
    static const char* digits = "0123456789abcdef";
    std::string s;
    s.reserve(b.size() * 2);
    for (std::uint8_t c : b) {
        s.push_back(digits[c >> 4]);
        s.push_back(digits[c & 15]);
    }
    return s;
}

Result<Bytes> from_hex(std::string_view hex) {
    Bytes out;
    int hi = -1;
    for (char ch : hex) {
        if (ch == ' ' || ch == '\n' || ch == '\t' || ch == '\r') continue;
        int v;
        if (ch >= '0' && ch <= '9')
            v = ch - '0';
        else if (ch >= 'a' && ch <= 'f')
            v = ch - 'a' + 10;
        else if (ch >= 'A' && ch <= 'F')
            v = ch - 'A' + 10;
        else
            return Error{protocol_errc::invalid_value,
                         std::string("'") + ch + "' is not a hexadecimal digit"};
        if (hi < 0) {
            hi = v;
        } else {
            out.push_back(static_cast<std::uint8_t>(hi * 16 + v));
            hi = -1;
        }
    }
    if (hi >= 0) return Error{protocol_errc::invalid_value, "odd number of hexadecimal digits"};
    return out;
}

namespace {

void escape_text(std::string& out, std::string_view s) {
    out.push_back('"');
    for (unsigned char c : s) {
        if (c == '"' || c == '\\') {
            out.push_back('\\');
            out.push_back(static_cast<char>(c));
        } else if (c < 0x20) {
            static const char* digits = "0123456789abcdef";
            out += "\\u00";
            out.push_back(digits[c >> 4]);
            out.push_back(digits[c & 15]);
        } else {
            out.push_back(static_cast<char>(c));
        }
    }
    out.push_back('"');
}

Status diag_item(CborReader& r, std::string& out) {
    auto it = r.next();
    if (!it) return std::move(it).error();
    switch (it->type) {
        case CborType::unsigned_int:
            out += std::to_string(it->uint_value);
            break;
        case CborType::negative_int:
            if (it->uint_value == std::numeric_limits<std::uint64_t>::max())
                out += "-18446744073709551616";
            else
                out += "-" + std::to_string(it->uint_value + 1);
            break;
        case CborType::bytes:
            out += "h'" +
                   to_hex(ByteView(reinterpret_cast<const std::uint8_t*>(it->str.data()),
                                   it->str.size())) +
                   "'";
            break;
        case CborType::text:
            escape_text(out, it->str);
            break;
        case CborType::boolean:
            out += it->bool_value ? "true" : "false";
            break;
        case CborType::null:
            out += "null";
            break;
        case CborType::array:
        case CborType::map: {
            const bool is_map = it->type == CborType::map;
            if (auto s = r.enter(); !s) return s;
            out.push_back(is_map ? '{' : '[');
            for (std::size_t i = 0; i < it->count; ++i) {
                if (i) out += ", ";
                if (auto s = diag_item(r, out); !s) return s;
                if (is_map) {
                    out += ": ";
                    if (auto s = diag_item(r, out); !s) return s;
                }
            }
            out.push_back(is_map ? '}' : ']');
            r.leave();
            break;
        }
    }
    return {};
}

}  // namespace

Result<std::string> to_diagnostic(ByteView b, CborLimits limits) {
    CborReader r(b, limits);
    std::string out;
    bool first = true;
    while (!r.at_end()) {
        if (!first) out += ", ";
        first = false;
        if (auto s = diag_item(r, out); !s) return std::move(s).error();
    }
    return out;
}

}  // namespace fieldsync::protocol
