#include <doctest/doctest.h>

#include "fieldsync/protocol/ids.hpp"

using namespace fieldsync::protocol;

TEST_CASE("Ids: text form round-trips and rejects bad input") {
    auto id = Id128::parse("0190F3C2-7A1B-7C00-8000-0000000000FF");
    REQUIRE(id.ok());
    CHECK(id->to_string() == "0190f3c2-7a1b-7c00-8000-0000000000ff");
    CHECK(Id128::parse("0190f3c27a1b7c0080000000000000ff").value() == *id);
    CHECK_FALSE(Id128::parse("0190f3c2-7a1b-7c00-8000-0000000000f").ok());
    CHECK_FALSE(Id128::parse("0190f3c2x7a1b-7c00-8000-0000000000ff").ok());
    CHECK_FALSE(Id128::parse("0190f3c2-7a1b-7c00-8000-0000000000fg").ok());
    CHECK(Id128::from_bytes(std::string(16, 'a')).ok());
    auto bad = Id128::from_bytes("short");
    REQUIRE_FALSE(bad.ok());
    CHECK(bad.error().message == "an id is 16 bytes, got 5");
    CHECK(Id128{}.is_nil());
}

TEST_CASE("Ids: UUIDv7 carries the time and sorts by it") {
    std::array<std::uint8_t, 10> rnd{};
    rnd.fill(0xff);
    auto a = make_uuid_v7(1504999999000, rnd);
    auto b = make_uuid_v7(1504999999001, std::array<std::uint8_t, 10>{});
    CHECK(a < b);
    CHECK((a.bytes[6] >> 4) == 7);     // version
    CHECK((a.bytes[8] >> 6) == 0b10);  // variant
    std::uint64_t ms = 0;
    for (int i = 0; i < 6; ++i)
        ms = (ms << 8) | a.bytes[i];
    CHECK(ms == 1504999999000);
}
