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
// The records are the households of household_fixture.hpp (a first identification visit and
// a concurrent "look back" re-check). Only public headers are used, so this file doubles as an
// example of the record API.
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
#include "household_fixture.hpp"

namespace {

using namespace fieldsync_bench;

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
        for (std::uint32_t i = 0; i < join_batch; ++i)
            work[i] = pairs[i].left;
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
