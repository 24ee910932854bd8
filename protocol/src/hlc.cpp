// Hybrid logical clock. Algorithm: Kulkarni et al. 2014, Figure 5, with a drift bound.
#include "fieldsync/protocol/hlc.hpp"

#include <algorithm>

namespace fieldsync::protocol {

std::string HlcTimestamp::to_string() const {
    return std::to_string(wall_ms()) + "." + std::to_string(logical());
}

namespace {
// Next timestamp after `last` given physical time `pt`: the wall part is max(last.wall, pt);
// the logical part restarts at 0 when the wall part advanced. If the logical counter would
// overflow, borrow the next millisecond: still monotonic, still within drift bounds in practice.
HlcTimestamp advance(HlcTimestamp last, std::uint64_t pt) {
    pt = std::min(pt, HlcTimestamp::max_wall_ms);
    if (pt > last.wall_ms()) return HlcTimestamp::from_parts(pt, 0);
    if (last.logical() < HlcTimestamp::logical_mask) return HlcTimestamp{last.value + 1};
    return HlcTimestamp::from_parts(last.wall_ms() + 1, 0);
}
}  // namespace

HlcTimestamp HybridClock::tick() {
    m_last = advance(m_last, m_source());
    return m_last;
}

Status HybridClock::observe(HlcTimestamp remote) {
    const std::uint64_t pt = m_source();
    if (remote.wall_ms() > pt && remote.wall_ms() - pt > m_max_drift_ms) {
        return Error{
            protocol_errc::clock_drift,
            "timestamp " + remote.to_string() + " is " + std::to_string(remote.wall_ms() - pt) +
                " ms ahead of local time (limit " + std::to_string(m_max_drift_ms) +
                " ms); the sender's clock is wrong: correct it and restamp pending writes"};
    }
    const HlcTimestamp base = std::max(m_last, remote);
    m_last = advance(base, pt);
    return {};
}

}  // namespace fieldsync::protocol
