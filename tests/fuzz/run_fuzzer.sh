#!/usr/bin/env bash
# Runs one libFuzzer binary for a bounded time over a scratch copy of its seed corpus.
#
#   run_fuzzer.sh FUZZER CORPUS_ROOT ARTIFACT_DIR [extra libFuzzer flags...]
#
# The seed corpus of fuzzer `fuzz_x` is CORPUS_ROOT/fuzz_x/ or, failing that, CORPUS_ROOT/x/.
# FIELDSYNC_FUZZ_SECONDS (default 60) bounds the run. The seed corpus in the repository is never
# written: new inputs go to a temporary directory that is removed afterwards. A dictionary
# CORPUS_ROOT/../fuzz_x.dict (or x.dict) is used when it exists. Exits non-zero on any finding
# (crash, sanitizer report, leak, timeout of one input > 10 s, RSS > 2 GiB); the reproducer is
# kept in ARTIFACT_DIR. Reproduce with: FUZZER ARTIFACT_DIR/crash-...
set -euo pipefail

if [[ $# -lt 3 ]]; then
    echo "Usage: $0 FUZZER CORPUS_ROOT ARTIFACT_DIR [libFuzzer flags...]" >&2
    exit 2
fi
fuzzer="$1"
corpus_root="$2"
artifacts="$3"
shift 3
seconds="${FIELDSYNC_FUZZ_SECONDS:-60}"
name="$(basename "$fuzzer")"
short="${name#fuzz_}"

seeds="$corpus_root/$name"
if [[ ! -d "$seeds" ]]; then seeds="$corpus_root/$short"; fi
dict=""
for d in "$corpus_root/../$name.dict" "$corpus_root/../$short.dict"; do
    if [[ -f "$d" ]]; then dict="$d"; break; fi
done

scratch="$(mktemp -d "${TMPDIR:-/tmp}/${name}.XXXXXX")"
trap 'rm -rf "$scratch"' EXIT
if [[ -d "$seeds" ]]; then
    cp -R "$seeds/." "$scratch/"
else
    echo "$name: no seed corpus in $corpus_root/$name or $corpus_root/$short; starting empty"
fi
mkdir -p "$artifacts"

flags=(-max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
       -artifact_prefix="$artifacts/")
if [[ -n "$dict" ]]; then flags+=(-dict="$dict"); fi

echo "$name: fuzzing for ${seconds}s from $(find "$scratch" -type f | wc -l) seed(s) of $seeds"
set +e
# Progress lines (NEW, REDUCE, pulse) and the recommended dictionary are dropped; the final
# stats and any sanitizer report are kept whole.
"$fuzzer" "${flags[@]}" "$@" "$scratch" 2>&1 \
    | grep -avE '^#[0-9]+[[:space:]]+(NEW|REDUCE|pulse|RELOAD)|NEW_FUNC|# Uses: [0-9]+$|ecommended dictionary'
rc=${PIPESTATUS[0]}
set -e
if [[ $rc -ne 0 ]]; then
    echo "$name: FAILED (exit $rc); reproducer(s) in $artifacts:" >&2
    ls -l "$artifacts" >&2 || true
    exit 1
fi
echo "$name: no findings in ${seconds}s"
