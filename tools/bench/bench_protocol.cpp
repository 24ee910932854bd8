// bench_protocol: Google Benchmark microbenchmarks of the protocol library's hot paths.
//
// What is measured (see tools/bench/README.md for how to run and read it):
//   BM_JoinHousehold/diverged   join of two replicas' copies of a household record that were
//                               edited concurrently (review conflicts, set add/remove, counter)
//   BM_JoinHousehold/converged  join of a record with an equal copy (the common re-sync case)
//   BM_EncodeHousehold          canonical CBOR encoding of one household record state
//   BM_DecodeHousehold          decoding + invariant check of the same bytes
//   BM_RecordDigest             SHA-256 of the canonical encoding (convergence checks)
//   BM_HlcTick                  one hybrid-logical-clock tick (same ms / advancing ms)
//
// The household record is what an enumerator's tablet produces on the first identification
// visit of a household in a gaqa (village), plus a "look back" re-check made concurrently by a
// second enumerator who recorded a different income and poverty status: the 13 fields of the
// bundled schema's "households" collection that a first visit fills in (protocol/schemas/
// household-survey.json; exit_reason stays empty) plus "_deleted", written by two replicas
// (record.hpp, docs/merge-laws.md).
//
// Only public headers are used, so this file doubles as an example of the record API.
#include <benchmark/benchmark.h>

#include <array>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "fieldsync/protocol/hlc.hpp"
#include "fieldsync/protocol/ids.hpp"
#include "fieldsync/protocol/record.hpp"
#include "fieldsync/protocol/value.hpp"

namespace {

namespace fp = fieldsync::protocol;

// A failed Status in the fixture is a bug in the benchmark or the library: stop loudly.
void must(const fp::Status& s, const char* what) {
    if (!s) {
        std::fprintf(stderr, "bench_protocol: %s failed: %s\n", what, s.error().message.c_str());
        std::abort();
    }
}

fp::ReplicaId replica(std::uint8_t n) {
    fp::ReplicaId r;
    for (std::size_t i = 0; i < r.bytes.size(); ++i) {
        r.bytes[i] = static_cast<std::uint8_t>(0x10 * n + i);
    }
    return r;
}

fp::HlcTimestamp at_ms(std::uint64_t ms) { return fp::HlcTimestamp::from_parts(ms, 0); }

constexpr std::uint64_t visit_day_ms = 1504999999000;  // 2017-09-09, the seed's season

// Household number `n`: the first identification visit by enumerator A.
fp::RecordState identified_household(std::uint32_t n) {
    fp::RecordState s;
    s.collection = "households";
    std::array<std::uint8_t, 10> random{};
    for (std::size_t i = 0; i < random.size(); ++i) {
        random[i] = static_cast<std::uint8_t>((n >> (8 * (i % 4))) + i);
    }
    s.id = fp::make_uuid_v7(visit_day_ms + n, random);

    using R = fp::MergeRule;
    fp::Update u{s, replica(1), at_ms(visit_day_ms + 1000 * n), "enumerator.wang"};
    must(u.set("village", R::lww, std::string{"ordos/ejin-horo/altan-xire/longhuqu"}), "village");
    must(u.set("head_name", R::review, std::string{"Bao Tegusi"}), "head_name");
    must(u.set("head_id_number", R::review, std::string{"150627196803121234"}), "head_id_number");
    must(u.set("members_count", R::review, std::int64_t{4}), "members_count");
    must(u.set("poverty_status", R::review, std::string{"national_line"}), "poverty_status");
    must(u.set("identified_on", R::review, std::string{"2017-03-14"}), "identified_on");
    must(u.set("income_per_capita", R::review, std::int64_t{2950}), "income_per_capita");
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
    return s;
}

struct Pair {
    fp::RecordState left;   // enumerator A after a further edit
    fp::RecordState right;  // enumerator B's concurrent look-back visit
};

// Both enumerators start from A's identification (synced once), then edit while offline.
Pair diverged_household(std::uint32_t n) {
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

fp::RecordState joined_household(std::uint32_t n) {
    Pair p = diverged_household(n);
    must(p.left.join(p.right), "join");
    return p.left;
}

// Joins a batch of record pairs per iteration; copying the left sides (join is in place) is
// excluded from the timing, and the pause cost is spread over the batch.
constexpr std::uint32_t join_batch = 64;

void BM_JoinHousehold(benchmark::State& state) {
    const bool converged = state.range(0) != 0;
    std::vector<Pair> pairs;
    pairs.reserve(join_batch);
    for (std::uint32_t n = 0; n < join_batch; ++n) {
        if (converged) {
            fp::RecordState s = joined_household(n);
            pairs.push_back(Pair{s, s});
        } else {
            pairs.push_back(diverged_household(n));
        }
    }
    std::vector<fp::RecordState> work(join_batch);
    for (auto _ : state) {
        state.PauseTiming();
        for (std::uint32_t i = 0; i < join_batch; ++i) work[i] = pairs[i].left;
        state.ResumeTiming();
        for (std::uint32_t i = 0; i < join_batch; ++i) {
            fp::Status s = work[i].join(pairs[i].right);
            benchmark::DoNotOptimize(s);
        }
        benchmark::ClobberMemory();
    }
    // Both cases end in the joined state, which holds review conflicts (income, status).
    if (work[0].conflicts().empty()) state.SkipWithError("join produced no review conflict");
    state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()) * join_batch);
    state.SetLabel(converged ? "converged" : "diverged");
}
BENCHMARK(BM_JoinHousehold)->ArgName("converged")->Arg(0)->Arg(1);

void BM_EncodeHousehold(benchmark::State& state) {
    const fp::RecordState s = joined_household(1);
    std::size_t size = 0;
    for (auto _ : state) {
        fp::Bytes bytes = fp::encode_record(s);
        size = bytes.size();
        benchmark::DoNotOptimize(bytes.data());
    }
    state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * size));
    state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
    state.counters["record_bytes"] = static_cast<double>(size);
}
BENCHMARK(BM_EncodeHousehold);

void BM_DecodeHousehold(benchmark::State& state) {
    const fp::Bytes bytes = fp::encode_record(joined_household(1));
    for (auto _ : state) {
        auto decoded = fp::decode_record(bytes);
        if (!decoded) {
            state.SkipWithError(decoded.error().message.c_str());
            break;
        }
        benchmark::DoNotOptimize(decoded);
    }
    state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * bytes.size()));
    state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
    state.counters["record_bytes"] = static_cast<double>(bytes.size());
}
BENCHMARK(BM_DecodeHousehold);

void BM_RecordDigest(benchmark::State& state) {
    const fp::RecordState s = joined_household(1);
    for (auto _ : state) {
        auto digest = fp::record_digest(s);
        benchmark::DoNotOptimize(digest);
    }
    state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}
BENCHMARK(BM_RecordDigest);

// Arg 0: physical time stands still (logical counter advances); 1: time advances 1 ms a tick.
void BM_HlcTick(benchmark::State& state) {
    const bool advancing = state.range(0) != 0;
    std::uint64_t now = visit_day_ms;
    fp::HybridClock clock{[&now, advancing] { return advancing ? ++now : now; }};
    for (auto _ : state) {
        benchmark::DoNotOptimize(clock.tick());
    }
    state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}
BENCHMARK(BM_HlcTick)->ArgName("advancing")->Arg(0)->Arg(1);

}  // namespace

BENCHMARK_MAIN();
