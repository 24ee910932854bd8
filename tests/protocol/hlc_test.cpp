#include <doctest/doctest.h>

#include "fieldsync/protocol/hlc.hpp"

using namespace fieldsync::protocol;

TEST_CASE("HLC: ticks are strictly increasing even when the wall clock stalls or goes back") {
    ManualClock wall(1000);
    HybridClock c(wall.source());
    auto t1 = c.tick();
    auto t2 = c.tick();
    CHECK(t1 < t2);
    CHECK(t2.wall_ms() == 1000);
    CHECK(t2.logical() == 1);
    wall.set(500);  // clock stepped back
    auto t3 = c.tick();
    CHECK(t2 < t3);
    wall.set(2000);
    auto t4 = c.tick();
    CHECK(t4 == HlcTimestamp::from_parts(2000, 0));
}

TEST_CASE("HLC: observing a remote timestamp orders later local events after it") {
    ManualClock wall(1000);
    HybridClock c(wall.source(), 60'000);
    auto remote = HlcTimestamp::from_parts(30'000, 7);  // 29 s ahead: within the bound
    REQUIRE(c.observe(remote));
    CHECK(c.tick() > remote);
}

TEST_CASE("HLC: a timestamp too far ahead is refused and does not move the clock") {
    ManualClock wall(1000);
    HybridClock c(wall.source(), 60'000);
    auto before = c.tick();
    auto year_ahead = HlcTimestamp::from_parts(1000 + 365ull * 24 * 3600 * 1000, 0);
    auto st = c.observe(year_ahead);
    REQUIRE_FALSE(st);
    CHECK(st.error().code == protocol_errc::clock_drift);
    CHECK(st.error().code == protocol_condition::retryable);
    CHECK(st.error().message.find("ahead of local time") != std::string::npos);
    CHECK(c.last() == before);
    CHECK(c.tick().wall_ms() == 1000);
}

TEST_CASE("HLC: logical overflow borrows the next millisecond") {
    ManualClock wall(5);
    HybridClock c(wall.source());
    c.restore(HlcTimestamp::from_parts(5, HlcTimestamp::logical_mask));
    auto t = c.tick();
    CHECK(t == HlcTimestamp::from_parts(6, 0));
    CHECK(HlcTimestamp::from_parts(6, 2).to_string() == "6.2");
}
