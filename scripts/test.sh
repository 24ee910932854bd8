#!/usr/bin/env bash
# The test command (README): everything CI checks, on a fresh Debian 12 machine.
#
#   scripts/test.sh
#
# Stages, in order (each stage configures, builds and runs its own build directory):
#   deps    scripts/install-deps.sh (apt; needs root or sudo)
#   debug   preset `debug`: Debug, warnings as errors, the whole ctest suite
#   asan    preset `asan`: AddressSanitizer + UndefinedBehaviorSanitizer, the whole suite
#   tsan    preset `tsan`: ThreadSanitizer over the server's concurrency tests (the store worker,
#           sync sessions and HTTP API on their threads: server_tests, sync_tests, api_tests)
#   fuzz    preset `fuzz`: clang-14 libFuzzer targets, each run for FIELDSYNC_FUZZ_SECONDS
#           (default 45) over its seed corpus; any finding fails
#   bench   benchmark smoke run at tiny size (from the debug build); proves the benchmarks still
#           run, never asserts timing
#
# Environment:
#   FIELDSYNC_STAGES        stages to run, default "deps debug asan tsan fuzz bench"
#   FIELDSYNC_BUILD_ROOT    where build directories go, default build (build/<preset>, as the
#                           presets); relative paths are taken from the repository root
#   FIELDSYNC_FUZZ_SECONDS  seconds per fuzzer, default 45
#   FIELDSYNC_ASAN_CASES, FIELDSYNC_ASAN_SIM_SEEDS
#                           property-test cases (default 400) and simulation seeds (default 50)
#                           under the asan stage; the debug stage runs the suites' defaults
#   FIELDSYNC_JOBS          build and test parallelism, default 2
#
# Prints a summary and, last, the line "N passed, N failed" (ctest results summed over all
# stages; a stage that fails to configure or build counts as one failure). Exits non-zero when
# anything failed.
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root" || exit 1

stages="${FIELDSYNC_STAGES:-deps debug asan tsan fuzz bench}"
build_root="${FIELDSYNC_BUILD_ROOT:-build}"
jobs="${FIELDSYNC_JOBS:-2}"
export FIELDSYNC_FUZZ_SECONDS="${FIELDSYNC_FUZZ_SECONDS:-45}"

total_passed=0
total_failed=0
summary=()

banner() { printf '\n==== %s ====\n' "$*"; }

# record STAGE STATUS SECONDS PASSED FAILED [NOTE]
record() {
    summary+=("$(printf '%-6s %-7s %5ss  %3s passed, %3s failed  %s' "$1" "$2" "$3" "$4" "$5" "${6:-}")")
    total_passed=$((total_passed + $4))
    total_failed=$((total_failed + $5))
}

# run_ctest DIR LOGFILE [ctest args...]: runs ctest; sets c_passed/c_failed; returns its status.
run_ctest() {
    local dir="$1" log="$2"
    shift 2
    local rc
    ctest --test-dir "$dir" --output-on-failure --no-tests=error -j "$jobs" "$@" 2>&1 | tee "$log"
    rc=${PIPESTATUS[0]}
    local line total
    line="$(grep -E 'tests passed, [0-9]+ tests? failed out of [0-9]+' "$log" | tail -n 1)"
    if [[ -n "$line" ]]; then
        c_failed="$(sed -E 's/.* ([0-9]+) tests? failed out of ([0-9]+).*/\1/' <<<"$line")"
        total="$(sed -E 's/.* failed out of ([0-9]+).*/\1/' <<<"$line")"
        c_passed=$((total - c_failed))
    else
        c_passed=0
        c_failed=1  # ctest itself failed (e.g. no tests found)
    fi
    if [[ $rc -ne 0 && $c_failed -eq 0 ]]; then c_failed=1; fi
    return "$rc"
}

# build_stage STAGE PRESET CTEST_ARGS TARGET...: configure + build (+ ctest unless CTEST_ARGS
# is "-"). TARGET defaults to all.
build_stage() {
    local stage="$1" preset="$2" ctest_args="$3"
    shift 3
    local dir="$build_root/$preset" start=$SECONDS
    stage_built=0
    banner "$stage: configure ($preset -> $dir)"
    if ! cmake --preset "$preset" -B "$dir" >"$log_dir/$stage-configure.log" 2>&1; then
        cat "$log_dir/$stage-configure.log"
        record "$stage" FAILED $((SECONDS - start)) 0 1 "configure failed"
        return 1
    fi
    banner "$stage: build"
    local targets=()
    for t in "$@"; do targets+=(--target "$t"); done
    if ! cmake --build "$dir" --parallel "$jobs" "${targets[@]}"; then
        record "$stage" FAILED $((SECONDS - start)) 0 1 "build failed"
        return 1
    fi
    stage_built=1
    if [[ "$ctest_args" == "-" ]]; then
        record "$stage" ok $((SECONDS - start)) 0 0 "built"
        return 0
    fi
    banner "$stage: test"
    # shellcheck disable=SC2086  # ctest_args is a list of words
    if run_ctest "$dir" "$log_dir/$stage-ctest.log" $ctest_args; then
        record "$stage" ok $((SECONDS - start)) "$c_passed" "$c_failed"
        return 0
    fi
    record "$stage" FAILED $((SECONDS - start)) "$c_passed" "$c_failed"
    return 1
}

log_dir="$(mktemp -d "${TMPDIR:-/tmp}/fieldsync-test.XXXXXX")"
trap 'rm -rf "$log_dir"' EXIT
overall_start=$SECONDS

# The build directories of all stages take about 7.5 GiB (asan 3.5, debug 2.4, tsan 1.0,
# fuzz 0.4); a full disk shows up later as a compiler "No space left on device" in whichever
# stage is building. Say so first, with the figures, so that failure is not a mystery.
need_kib=$((9 * 1024 * 1024))
mkdir -p "$build_root" 2>/dev/null
free_kib="$(df -Pk "$build_root" 2>/dev/null | awk 'NR == 2 { print $4 }')"
if [[ -n "$free_kib" && "$free_kib" -lt "$need_kib" ]]; then
    echo "WARNING: $((free_kib / 1024)) MiB free under '$build_root'; the stages' build" \
        "directories need about 9 GiB. Free space (old build/ folders, old clones) or set" \
        "FIELDSYNC_BUILD_ROOT to a bigger disk, or builds will fail with 'No space left on device'."
fi

for stage in $stages; do
    case "$stage" in
    deps)
        banner "deps"
        start=$SECONDS
        if ! bash scripts/install-deps.sh; then
            record deps FAILED $((SECONDS - start)) 0 1 "cannot install build dependencies"
            break  # nothing else can build
        fi
        record deps ok $((SECONDS - start)) 0 0
        ;;
    debug)
        debug_built=1
        build_stage debug debug "-LE bench" || debug_built="$stage_built"
        ;;
    asan)
        # The same suite; the seeded property tests and the simulation run fewer cases here
        # (sanitized code is several times slower), the debug stage runs them in full.
        FIELDSYNC_CASES="${FIELDSYNC_ASAN_CASES:-400}" \
        FIELDSYNC_SIM_SEEDS="${FIELDSYNC_ASAN_SIM_SEEDS:-50}" \
        ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:strict_string_checks=1}" \
        UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}" \
            build_stage asan asan "-LE bench"
        ;;
    tsan)
        TSAN_OPTIONS="${TSAN_OPTIONS:-halt_on_error=1:second_deadlock_stack=1}" \
            build_stage tsan tsan "-R ^(server_tests|sync_tests|api_tests)$" \
                server_tests sync_tests api_tests
        ;;
    fuzz)
        if ! compgen -G "tests/fuzz/fuzz_*.cpp" >/dev/null; then
            banner "fuzz"
            echo "WARNING: no tests/fuzz/fuzz_*.cpp yet; nothing to fuzz"
            record fuzz skipped 0 0 0 "no fuzz targets in the tree"
            continue
        fi
        echo "fuzz: ${FIELDSYNC_FUZZ_SECONDS}s per fuzzer"
        build_stage fuzz fuzz "-L fuzz --verbose" fuzzers
        ;;
    bench)
        banner "bench (smoke, tiny size; timings are not checked)"
        start=$SECONDS
        dir="$build_root/debug"
        if [[ ! -f "$dir/CTestTestfile.cmake" || "${debug_built:-1}" == 0 ]]; then
            echo "bench: skipped, the debug build it uses is missing or failed"
            record bench FAILED 0 0 1 "needs a working debug build"
            continue
        fi
        if ! cmake --build "$dir" --parallel "$jobs" --target bench_protocol; then
            record bench FAILED $((SECONDS - start)) 0 1 "build failed"
            continue
        fi
        if run_ctest "$dir" "$log_dir/bench-ctest.log" -L bench -j 1 --verbose; then
            record bench ok $((SECONDS - start)) "$c_passed" "$c_failed"
        else
            record bench FAILED $((SECONDS - start)) "$c_passed" "$c_failed"
        fi
        ;;
    *)
        echo "unknown stage '$stage' (known: deps debug asan tsan fuzz bench)" >&2
        record "$stage" FAILED 0 0 1 "unknown stage"
        ;;
    esac
done

banner "summary ($((SECONDS - overall_start))s)"
for line in "${summary[@]}"; do echo "$line"; done
echo
echo "${total_passed} passed, ${total_failed} failed"
if [[ $total_failed -ne 0 ]]; then exit 1; fi
for line in "${summary[@]}"; do
    if [[ "$line" == *FAILED* ]]; then exit 1; fi
done
exit 0
