// Hybrid logical clock (Kulkarni et al., "Logical Physical Clocks", 2014).
//
// Format: one unsigned 64-bit integer. The high 48 bits are wall-clock milliseconds since the
// Unix epoch (enough until the year 10889); the low 16 bits are a logical counter that orders
// events within one millisecond. Comparing two timestamps is comparing the integers. On the wire
// a timestamp is a CBOR unsigned integer (SPEC.md §3.2). Text form: "<ms>.<logical>".
//
// Invariants (SPEC.md §3.2):
//  - tick() returns a timestamp greater than every timestamp this clock issued or observed.
//  - observe(remote) refuses, with protocol_errc::clock_drift, a remote timestamp whose wall part
//    is more than `max_drift_ms` ahead of local physical time, and then leaves the clock
//    untouched: a tablet whose clock is a year fast cannot drag everyone's clocks a year ahead.
//  - The physical time comes from an injected ClockSource; this code never reads the system
//    clock, so tests and simulations are deterministic.
//
// HybridClock is thread-compatible: guard it externally when shared.
#pragma once

#include <compare>
#include <cstdint>
#include <functional>
#include <string>

#include "fieldsync/protocol/error.hpp"

namespace fieldsync::protocol {

struct HlcTimestamp {
    std::uint64_t value = 0;

    static constexpr int logical_bits = 16;
    static constexpr std::uint64_t logical_mask = (1u << logical_bits) - 1;
    static constexpr std::uint64_t max_wall_ms = (~std::uint64_t{0}) >> logical_bits;

    static constexpr HlcTimestamp from_parts(std::uint64_t wall_ms, std::uint64_t logical) {
        return HlcTimestamp{(wall_ms << logical_bits) | (logical & logical_mask)};
    }
    constexpr std::uint64_t wall_ms() const { return value >> logical_bits; }
    constexpr std::uint64_t logical() const { return value & logical_mask; }
    auto operator<=>(const HlcTimestamp&) const = default;
    /// "<ms>.<logical>", e.g. "1504999999000.3".
    std::string to_string() const;
};

/// Physical time in Unix milliseconds. Production code passes the system clock (plus the offset
/// learned from the server); tests pass a fake.
using ClockSource = std::function<std::uint64_t()>;

class HybridClock {
public:
    /// `max_drift_ms`: how far ahead of local physical time a received timestamp may be.
    explicit HybridClock(ClockSource source, std::uint64_t max_drift_ms = 5 * 60 * 1000)
        : m_source(std::move(source)), m_max_drift_ms(max_drift_ms) {}

    /// A timestamp for a local event: greater than any issued or observed so far.
    HlcTimestamp tick();
    /// Merges a timestamp received from another replica. On success the next tick() is greater
    /// than `remote`. Fails with clock_drift (and changes nothing) when `remote` is too far ahead.
    Status observe(HlcTimestamp remote);
    /// The latest timestamp issued or observed.
    HlcTimestamp last() const noexcept { return m_last; }
    /// Restores the state persisted by a replica (never moves backwards).
    void restore(HlcTimestamp last) noexcept {
        if (last > m_last) m_last = last;
    }
    std::uint64_t physical_now() const { return m_source(); }
    std::uint64_t max_drift_ms() const noexcept { return m_max_drift_ms; }

private:
    ClockSource m_source;
    std::uint64_t m_max_drift_ms;
    HlcTimestamp m_last{};
};

/// A fake clock for tests: time moves only when told to.
class ManualClock {
public:
    explicit ManualClock(std::uint64_t start_ms = 0) : m_now(start_ms) {}
    std::uint64_t now() const noexcept { return m_now; }
    void set(std::uint64_t ms) noexcept { m_now = ms; }
    void advance(std::uint64_t ms) noexcept { m_now += ms; }
    /// A ClockSource reading this clock; the ManualClock must outlive it.
    ClockSource source() const {
        return [this] { return m_now; };
    }

private:
    std::uint64_t m_now;
};

}  // namespace fieldsync::protocol
