#include <doctest/doctest.h>

#include <limits>

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
