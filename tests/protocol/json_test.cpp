// Unit tests of the JSON forms of values (json.hpp): the text each value type is written as,
// parsing back by field type, the errors, and json_text's plain decimal numbers.
#include <doctest/doctest.h>

#include <boost/json.hpp>

#include <string>

#include "fieldsync/protocol/json.hpp"
#include "fieldsync/protocol/schema.hpp"

using namespace fieldsync::protocol;

namespace {

FieldDef field(const char* name, FieldType type) {
    FieldDef f;
    f.name = name;
    f.type = type;
    return f;
}

}  // namespace

TEST_CASE("value_to_json writes each value type in its documented form") {
    CHECK(value_to_json(Value{}) == "null");
    CHECK(value_to_json(Value{true}) == "true");
    CHECK(value_to_json(Value{std::int64_t{-42}}) == "-42");
    CHECK(value_to_json(Value{std::string("Bayan \"Gol\"\n")}) == R"("Bayan \"Gol\"\n")");
    // Geo points as degrees in plain notation, never 3.96087E1.
    CHECK(value_to_json(Value{GeoPoint{396087000, 1099812345}}) ==
          R"({"lat":39.6087,"lon":109.9812345})");
    CHECK(value_to_json(Value{GeoPoint{-1, -1800000000}}) == R"({"lat":-0.0000001,"lon":-180.0})");
    CHECK(value_to_json(Value{GeoPoint{0, 0}}) == R"({"lat":0.0,"lon":0.0})");
}

TEST_CASE("value_from_json round-trips every geo point it writes") {
    const FieldDef gps = field("gps", FieldType::geo);
    for (GeoPoint g : {GeoPoint{396087000, 1099812345}, GeoPoint{-899999999, 1799999999},
                       GeoPoint{1, -1}, GeoPoint{0, 0}, GeoPoint{-900000000, -1800000000}}) {
        auto back = value_from_json(value_to_json(Value{g}), gps);
        REQUIRE_MESSAGE(back.ok(), value_to_json(Value{g}));
        CHECK(std::get<GeoPoint>(*back) == g);
    }
}

TEST_CASE("value_from_json is typed by the field and names what was expected") {
    auto n = value_from_json("7", field("members_count", FieldType::integer));
    REQUIRE(n.ok());
    CHECK(std::get<std::int64_t>(*n) == 7);
    auto b = value_from_json("false", field("has_disability", FieldType::boolean));
    REQUIRE(b.ok());
    CHECK(std::get<bool>(*b) == false);
    auto null = value_from_json("null", field("note", FieldType::text));
    REQUIRE(null.ok());
    CHECK(std::holds_alternative<std::monostate>(*null));

    auto wrong = value_from_json("\"seven\"", field("members_count", FieldType::integer));
    REQUIRE_FALSE(wrong.ok());
    CHECK(wrong.error().message.find("members_count") != std::string::npos);
    CHECK(wrong.error().message.find("an integer") != std::string::npos);

    auto not_json = value_from_json("{", field("note", FieldType::text));
    REQUIRE_FALSE(not_json.ok());
    CHECK(not_json.error().message.find("not valid JSON") != std::string::npos);

    auto off_earth = value_from_json(R"({"lat":91,"lon":0})", field("gps", FieldType::geo));
    REQUIRE_FALSE(off_earth.ok());
    CHECK(off_earth.error().message.find("latitude within +-90") != std::string::npos);

    auto bad_date = value_from_json("\"2024-02-30\"", field("visit_date", FieldType::date));
    CHECK_FALSE(bad_date.ok());
}

TEST_CASE("json_text writes non-integer numbers in plain decimal and everything else as Boost") {
    namespace json = boost::json;
    json::value v = json::parse(R"({"a":[1,-2,true,null,"x\u0001"],"b":{"c":0.5,"d":-12.25}})");
    CHECK(json_text(v) == R"({"a":[1,-2,true,null,"x\u0001"],"b":{"c":0.5,"d":-12.25}})");
    CHECK(json_text(json::value(1e300)) == json::serialize(json::value(1e300)));
    CHECK(json::parse(json_text(json::value(1e-9))).as_double() == doctest::Approx(1e-9));
    CHECK(json_text(json::value(-0.0)) == "0.0");
}

TEST_CASE("the direct writers print exactly what Boost.JSON prints") {
    namespace json = boost::json;
    // Every byte value, alone and between letters (Boost copies bytes >= 0x20 as they are).
    for (int c = 0; c < 256; ++c) {
        for (const std::string& text : {std::string(1, static_cast<char>(c)),
                                        "ab" + std::string(1, static_cast<char>(c)) + "cd"}) {
            std::string out = "<";
            append_json_string(text, out);
            CHECK(out == "<" + json::serialize(json::string_view(text)));
        }
    }
    CHECK(json_text(json::value(std::int64_t{-9223372036854775807 - 1})) == "-9223372036854775808");
    CHECK(json_text(json::value(std::uint64_t{18446744073709551615u})) == "18446744073709551615");
    // value_to_json is the text of value_to_json_value, for every value type.
    for (const Value& v :
         {Value{}, Value{false}, Value{std::int64_t{7}}, Value{std::string("Dalad \"Qi\"\t\u00e4")},
          Value{GeoPoint{396087000, 1099812345}}, Value{GeoPoint{0, -1}}}) {
        CHECK(value_to_json(v) == json_text(value_to_json_value(v)));
        std::string out = "[";
        append_value_json(v, out);
        CHECK(out == "[" + value_to_json(v));
    }
}

TEST_CASE("iso8601_utc") {
    CHECK(iso8601_utc(0) == "1970-01-01T00:00:00.000Z");
    CHECK(iso8601_utc(1505036079123) == "2017-09-10T09:34:39.123Z");
}
