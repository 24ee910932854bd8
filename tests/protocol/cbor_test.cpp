#include <cbor.h>
#include <doctest/doctest.h>

#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "fieldsync/protocol/cbor.hpp"
#include "fieldsync/protocol/value.hpp"

using namespace fieldsync::protocol;

TEST_CASE("CBOR: the writer uses the shortest forms (RFC 8949 §4.2.1)") {
    CborWriter w;
    w.uint(23);
    w.uint(24);
    w.uint(65536);
    w.int64(-1);
    w.int64(std::numeric_limits<std::int64_t>::min());
    w.text("a");
    w.bytes(std::vector<std::uint8_t>{1, 2});
    w.array(0);
    w.map(1);
    w.boolean(true);
    w.null();
    CHECK(to_hex(w.data()) ==
          "17"
          "1818"
          "1a00010000"
          "20"
          "3b7fffffffffffffff"
          "6161"
          "420102"
          "80"
          "a1"
          "f5"
          "f6");
    auto diag = to_diagnostic(w.data());
    REQUIRE(diag.ok());
    CHECK(*diag == "23, 24, 65536, -1, -9223372036854775808, \"a\", h'0102', [], {true: null}");
}

TEST_CASE("CBOR: the reader rejects what is outside the profile or the limits") {
    auto read_all = [](const Bytes& b, CborLimits lim = {}) -> Status {
        CborReader r(b, lim);
        while (!r.at_end()) {
            if (auto s = r.skip(); !s) return s;
        }
        return {};
    };
    auto err = [&](const char* hex, CborLimits lim = {}) {
        auto s = read_all(from_hex(hex).value(), lim);
        REQUIRE_FALSE(s);
        return s.error();
    };
    CHECK(err("f97e00").message.find("floating-point") != std::string::npos);  // half float
    CHECK(err("c11a514b67b0").message.find("tag") != std::string::npos);
    CHECK(err("9fff").message.find("indefinite-length array") != std::string::npos);
    CHECK(err("5f41ff").message.find("indefinite") != std::string::npos);
    CHECK(err("1c").code == protocol_errc::malformed);  // reserved additional information
    CHECK(err("1a0000").message.find("truncated") != std::string::npos);
    CHECK(err("9b00000000ffffffff").code == protocol_errc::limit_exceeded);  // huge count
    CHECK(err("9903e8").code == protocol_errc::malformed);      // 1000 items declared, none follow
    CHECK(err("7a7fffffff").code == protocol_errc::malformed);  // string longer than the input
    CborLimits shallow;
    shallow.max_depth = 3;
    CHECK(err("81818181818100", shallow).code == protocol_errc::limit_exceeded);
    CborLimits tiny;
    tiny.max_input_bytes = 2;
    CHECK(err("83010203", tiny).code == protocol_errc::limit_exceeded);
    CHECK(read_all(from_hex("83010203").value()));
}

namespace {

// The reference for CborReader::next: what libcbor's streaming decoder itself says about the
// first item head of an input. The reader reads plain heads by hand (src/cbor.cpp,
// read_plain_head) and hands the rest to libcbor; both must give the same answer.
struct LibcborHead {
    enum Kind { none, uint, negint, bytes, text, array, map, boolean, null, other };
    Kind kind = none;
    std::uint64_t value = 0;
    const unsigned char* data = nullptr;
    std::size_t length = 0;
    bool finished = false;
    std::size_t read = 0;
};

LibcborHead& head_of(void* p) {
    return *static_cast<LibcborHead*>(p);
}
void set_head(void* p, LibcborHead::Kind k, std::uint64_t v) {
    head_of(p).kind = k;
    head_of(p).value = v;
}

LibcborHead libcbor_head(const Bytes& in) {
    static const cbor_callbacks cb = [] {
        cbor_callbacks c = cbor_empty_callbacks;
        c.uint8 = [](void* p, uint8_t v) { set_head(p, LibcborHead::uint, v); };
        c.uint16 = [](void* p, uint16_t v) { set_head(p, LibcborHead::uint, v); };
        c.uint32 = [](void* p, uint32_t v) { set_head(p, LibcborHead::uint, v); };
        c.uint64 = [](void* p, uint64_t v) { set_head(p, LibcborHead::uint, v); };
        c.negint8 = [](void* p, uint8_t v) { set_head(p, LibcborHead::negint, v); };
        c.negint16 = [](void* p, uint16_t v) { set_head(p, LibcborHead::negint, v); };
        c.negint32 = [](void* p, uint32_t v) { set_head(p, LibcborHead::negint, v); };
        c.negint64 = [](void* p, uint64_t v) { set_head(p, LibcborHead::negint, v); };
        c.byte_string = [](void* p, cbor_data d, std::size_t n) {
            set_head(p, LibcborHead::bytes, 0);
            head_of(p).data = d;
            head_of(p).length = n;
        };
        c.string = [](void* p, cbor_data d, std::size_t n) {
            set_head(p, LibcborHead::text, 0);
            head_of(p).data = d;
            head_of(p).length = n;
        };
        c.array_start = [](void* p, std::size_t n) { set_head(p, LibcborHead::array, n); };
        c.map_start = [](void* p, std::size_t n) { set_head(p, LibcborHead::map, n); };
        c.boolean = [](void* p, bool v) { set_head(p, LibcborHead::boolean, v ? 1 : 0); };
        c.null = [](void* p) { set_head(p, LibcborHead::null, 0); };
        auto other = [](void* p) { set_head(p, LibcborHead::other, 0); };
        c.byte_string_start = other;
        c.string_start = other;
        c.indef_array_start = other;
        c.indef_map_start = other;
        c.undefined = other;
        c.indef_break = other;
        c.tag = [](void* p, uint64_t) { set_head(p, LibcborHead::other, 0); };
        c.float2 = [](void* p, float) { set_head(p, LibcborHead::other, 0); };
        c.float4 = [](void* p, float) { set_head(p, LibcborHead::other, 0); };
        c.float8 = [](void* p, double) { set_head(p, LibcborHead::other, 0); };
        return c;
    }();
    LibcborHead h;
    if (in.empty()) return h;
    const cbor_decoder_result r = cbor_stream_decode(in.data(), in.size(), &cb, &h);
    h.finished = r.status == CBOR_DECODER_FINISHED;
    h.read = r.read;
    return h;
}

// Checks CborReader::next on `in` against libcbor: the same item where libcbor decodes one
// inside the profile (unless the reader's own count check refuses it), an error elsewhere.
void check_head_against_libcbor(const Bytes& in, const CborLimits& limits) {
    CborReader reader(in, limits);
    const auto got = reader.next();
    const LibcborHead want = libcbor_head(in);
    INFO("input: ", to_hex(in), ", max_items ", limits.max_items, ", max_string_bytes ",
         limits.max_string_bytes);
    const bool in_profile =
        want.finished && want.kind != LibcborHead::none && want.kind != LibcborHead::other;
    CborReader peeker(in, limits);
    const auto peeked = peeker.peek_type();
    CHECK(peeker.position() == 0);  // peeking consumes nothing
    if (!in_profile) {
        CHECK_FALSE(got);
        CHECK_FALSE(peeked);
        return;
    }
    if (got) {
        REQUIRE(peeked);
        CHECK(*peeked == got->type);
    }
    const bool is_string = want.kind == LibcborHead::bytes || want.kind == LibcborHead::text;
    const bool is_collection = want.kind == LibcborHead::array || want.kind == LibcborHead::map;
    if ((is_string && want.length > limits.max_string_bytes) ||
        (is_collection && want.value > limits.max_items)) {
        REQUIRE_FALSE(got);
        CHECK(got.error().code == protocol_errc::limit_exceeded);
        return;
    }
    if (is_collection) {
        // The reader refuses a count larger than the bytes left could hold.
        const std::uint64_t need = want.kind == LibcborHead::map ? want.value * 2 : want.value;
        if (want.value > in.size() || need > in.size() - want.read) {
            CHECK_FALSE(got);
            return;
        }
    }
    REQUIRE(got);
    CHECK(reader.position() == want.read);
    switch (want.kind) {
        case LibcborHead::uint:
        case LibcborHead::negint:
            CHECK(got->type == (want.kind == LibcborHead::uint ? CborType::unsigned_int
                                                               : CborType::negative_int));
            CHECK(got->uint_value == want.value);
            break;
        case LibcborHead::bytes:
        case LibcborHead::text:
            CHECK(got->type ==
                  (want.kind == LibcborHead::bytes ? CborType::bytes : CborType::text));
            CHECK(reinterpret_cast<const unsigned char*>(got->str.data()) == want.data);
            CHECK(got->str.size() == want.length);
            break;
        case LibcborHead::array:
        case LibcborHead::map:
            CHECK(got->type == (want.kind == LibcborHead::array ? CborType::array : CborType::map));
            CHECK(got->count == want.value);
            break;
        case LibcborHead::boolean:
            CHECK(got->type == CborType::boolean);
            CHECK(got->bool_value == (want.value == 1));
            break;
        default:
            CHECK(got->type == CborType::null);
            break;
    }
}

}  // namespace

TEST_CASE("CBOR: item heads read and peeked as libcbor reads them, for every initial byte") {
    // Every initial byte, followed by argument bytes of each width (whole and cut short) and
    // by payloads shorter than, equal to and longer than small declared lengths.
    const std::vector<Bytes> tails = {
        {},
        {0x00},
        {0x05},
        {0xff},
        {0x01, 0x02},
        {0x00, 0x03, 'a', 'b', 'c'},
        {0xff, 0xff, 0xff},
        {0x00, 0x00, 0x00, 0x02, 'x', 'y'},
        {0x80, 0x00, 0x00, 0x00},
        {0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01},  // 2^63: doubled, it wraps to 0
        {0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 'z'},
        {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
        {0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00},
        Bytes(40, 'q'),
    };
    // Without limits, and with limits a few of those inputs exceed.
    CborLimits unlimited;
    unlimited.max_items = std::numeric_limits<std::size_t>::max();
    unlimited.max_string_bytes = std::numeric_limits<std::size_t>::max();
    CborLimits tight;
    tight.max_items = 2;
    tight.max_string_bytes = 3;
    for (const CborLimits& limits : {unlimited, tight}) {
        for (int b = 0; b < 256; ++b) {
            for (const Bytes& tail : tails) {
                Bytes in{static_cast<std::uint8_t>(b)};
                in.insert(in.end(), tail.begin(), tail.end());
                check_head_against_libcbor(in, limits);
            }
        }
    }
    // And random inputs of up to 16 bytes, biased to short arguments and lengths.
    std::mt19937_64 rng(20261129);
    for (int i = 0; i < 20000; ++i) {
        Bytes in(rng() % 17);
        for (auto& byte : in)
            byte = static_cast<std::uint8_t>(rng() % 4 == 0 ? rng() % 8 : rng());
        check_head_against_libcbor(in, i % 2 ? unlimited : tight);
    }
}

TEST_CASE("CBOR: deep nesting is bounded, not recursive") {
    Bytes deep(100000, 0x81);
    deep.push_back(0x00);
    CborReader r(deep);
    auto s = r.skip();
    REQUIRE_FALSE(s);
    CHECK(s.error().code == protocol_errc::limit_exceeded);
}

TEST_CASE("CBOR: typed reads report the type found") {
    Bytes b = from_hex("6161").value();
    CborReader r(b);
    auto u = r.read_uint();
    REQUIRE_FALSE(u.ok());
    CHECK(u.error().message == "expected a unsigned integer, found a text string");
}

TEST_CASE("CBOR: canonical map sorts keys by encoded bytes") {
    CanonicalMap m;
    auto key = [](std::string_view s) {
        CborWriter w;
        w.text(s);
        return w.take();
    };
    auto val = [](std::uint64_t v) {
        CborWriter w;
        w.uint(v);
        return w.take();
    };
    m.add(key("bb"), val(1));
    m.add(key("c"), val(2));
    m.add(key("a"), val(3));
    CborWriter w;
    m.write_to(w);
    CHECK(to_diagnostic(w.data()).value() == "{\"a\": 3, \"c\": 2, \"bb\": 1}");
}

TEST_CASE("Values: encoding, validation, display") {
    for (const Value& v : {Value{}, Value{true}, Value{std::int64_t{-42}},
                           Value{std::string("嘎查")}, Value{GeoPoint{397000000, 1098000000}}}) {
        Bytes b = encoded(v);
        CborReader r(b);
        auto back = decode_value(r);
        REQUIRE(back.ok());
        CHECK(*back == v);
    }
    CHECK(to_display(Value{GeoPoint{397000000, 1098000000}}) == "geo(39.7000000,109.8000000)");
    Bytes bad_geo = from_hex("821a7fffffff00").value();  // latitude out of range
    CborReader r1(bad_geo);
    CHECK(decode_value(r1).error().message.find("latitude") != std::string::npos);
    Bytes bad_utf8 = from_hex("62c328").value();
    CborReader r2(bad_utf8);
    CHECK(decode_value(r2).error().message == "text is not valid UTF-8");
    CHECK(is_valid_utf8("Ordos 鄂尔多斯"));
    CHECK_FALSE(is_valid_utf8("\xed\xa0\x80"));      // surrogate
    CHECK_FALSE(is_valid_utf8("\xc0\xaf"));          // overlong
    CHECK_FALSE(is_valid_utf8("\xf4\x90\x80\x80"));  // > U+10FFFF
}
