// The household records the protocol benchmarks work on (bench_protocol, protocol_counts).
//
// The household record is what an enumerator's tablet produces on the first identification
// visit of a household in a gaqa (village), plus a "look back" re-check made concurrently by a
// second enumerator who recorded a different income and poverty status: the 13 fields of the
// bundled schema's "households" collection that a first visit fills in (protocol/schemas/
// household-survey.json; exit_reason stays empty) plus "_deleted", written by two replicas
// (record.hpp, docs/merge-laws.md). Only public headers are used.
#pragma once

#include <array>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "fieldsync/protocol/hlc.hpp"
#include "fieldsync/protocol/ids.hpp"
#include "fieldsync/protocol/record.hpp"
#include "fieldsync/protocol/value.hpp"

namespace fieldsync_bench {

namespace fp = fieldsync::protocol;

// A failed Status in the fixture is a bug in the benchmark or the library: stop loudly.
inline void must(const fp::Status& s, const char* what) {
    if (!s) {
        std::fprintf(stderr, "benchmark fixture: %s failed: %s\n", what, s.error().message.c_str());
        std::abort();
    }
}

inline fp::ReplicaId replica(std::uint8_t n) {
    fp::ReplicaId r;
    for (std::size_t i = 0; i < r.bytes.size(); ++i) {
        r.bytes[i] = static_cast<std::uint8_t>(0x10 * n + i);
    }
    return r;
}

inline fp::HlcTimestamp at_ms(std::uint64_t ms) {
    return fp::HlcTimestamp::from_parts(ms, 0);
}

constexpr std::uint64_t visit_day_ms = 1504999999000;  // 2017-09-09, the seed's season

// What differs between the households of a village on their first identification visit.
struct FirstVisit {
    std::string head_name = "Bao Tegusi";
    std::int64_t members = 4;
    std::string poverty_status = "national_line";
    std::int64_t income_per_capita = 2950;
};

// Writes a first identification visit through `u`: every field of the bundled schema's
// households but exit_reason.
inline void write_first_visit(fp::Update& u, const FirstVisit& v) {
    using R = fp::MergeRule;
    must(u.set("village", R::lww, std::string{"ordos/ejin-horo/altan-xire/longhuqu"}), "village");
    must(u.set("head_name", R::review, v.head_name), "head_name");
    must(u.set("head_id_number", R::review, std::string{"150627196803121234"}), "head_id_number");
    must(u.set("members_count", R::review, v.members), "members_count");
    must(u.set("poverty_status", R::review, v.poverty_status), "poverty_status");
    must(u.set("identified_on", R::review, std::string{"2017-03-14"}), "identified_on");
    must(u.set("income_per_capita", R::review, v.income_per_capita), "income_per_capita");
    must(u.set("cooperative", R::lww, std::string{"Longhuqu Husbandry Cooperative"}), "coop");
    must(u.set("gps", R::lww, fp::GeoPoint{396087000, 1097813000}), "gps");
    must(u.set("phone", R::lww, std::string{"13904771234"}), "phone");
    must(u.set("notes", R::lww,
               std::string{"Two children at school in the banner town; head has a chronic "
                           "illness; 40 mu of adopted land; 25 ewes under entrusted breeding."}),
         "notes");
    must(u.add_element("assistance", std::string{"land_adoption"}), "assistance");
    must(u.add_element("assistance", std::string{"entrusted_breeding"}), "assistance");
    must(u.add_element("assistance", std::string{"lambs_for_ewes"}), "assistance");
    must(u.add_to_counter("visit_count", 1), "visit_count");
}

// Household number `n`: the first identification visit by enumerator A.
inline fp::RecordState identified_household(std::uint32_t n) {
    fp::RecordState s;
    s.collection = "households";
    std::array<std::uint8_t, 10> random{};
    for (std::size_t i = 0; i < random.size(); ++i) {
        random[i] = static_cast<std::uint8_t>((n >> (8 * (i % 4))) + i);
    }
    s.id = fp::make_uuid_v7(visit_day_ms + n, random);

    fp::Update u{s, replica(1), at_ms(visit_day_ms + 1000 * n), "enumerator.wang"};
    write_first_visit(u, FirstVisit{});
    return s;
}

struct Pair {
    fp::RecordState left;   // enumerator A after a further edit
    fp::RecordState right;  // enumerator B's concurrent look-back visit
};

// Both enumerators start from A's identification (synced once), then edit while offline.
inline Pair diverged_household(std::uint32_t n) {
    using R = fp::MergeRule;
    const fp::RecordState base = identified_household(n);
    Pair p{base, base};
    {
        fp::Update a{p.left, replica(1), at_ms(visit_day_ms + 86400000 + n), "enumerator.wang"};
        must(a.set("income_per_capita", R::review, std::int64_t{3120}), "a.income");
        must(a.set("notes", R::lww, std::string{"Income re-checked with the cooperative."}),
             "a.notes");
        must(a.add_to_counter("visit_count", 1), "a.visit_count");
    }
    {
        fp::Update b{p.right, replica(2), at_ms(visit_day_ms + 86400500 + n), "enumerator.li"};
        must(b.set("income_per_capita", R::review, std::int64_t{3480}), "b.income");
        must(b.set("poverty_status", R::review, std::string{"dibao_line"}), "b.status");
        must(b.set("members_count", R::review, std::int64_t{5}), "b.members");
        must(b.remove_element("assistance", std::string{"lambs_for_ewes"}), "b.assistance");
        must(b.add_element("assistance", std::string{"shareholding_dividend"}), "b.assistance");
        must(b.add_to_counter("visit_count", 1), "b.visit_count");
    }
    return p;
}

inline fp::RecordState joined_household(std::uint32_t n) {
    Pair p = diverged_household(n);
    must(p.left.join(p.right), "join");
    return p.left;
}

}  // namespace fieldsync_bench
