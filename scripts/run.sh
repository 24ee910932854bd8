#!/usr/bin/env bash
# The run command (README): installs dependencies, builds the `release` preset and runs it.
#
#   scripts/run.sh [ARGS...]
#
# For now fieldsync is its protocol library, so this builds and runs the self-check tool
# (fieldsync-selfcheck: loads the bundled demo survey, exercises the record model, encodes and
# decodes messages, and prints what it checked); ARGS go to it. When the server exists, this
# script starts it with the demo survey on one SQLite file instead.
#
# Environment: FIELDSYNC_BUILD_ROOT (default build), FIELDSYNC_JOBS (default 2).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
build_root="${FIELDSYNC_BUILD_ROOT:-build}"
jobs="${FIELDSYNC_JOBS:-2}"
dir="$build_root/release"

bash scripts/install-deps.sh
echo "run: configuring and building the release preset in $dir"
cmake --preset release -B "$dir" >/dev/null
if ! cmake --build "$dir" --parallel "$jobs" --target fieldsync-selfcheck; then
    if [[ ! -f tools/selfcheck/CMakeLists.txt ]]; then
        echo "run: the self-check tool (tools/selfcheck/, target fieldsync-selfcheck) is not in" \
             "this tree yet" >&2
    fi
    exit 1
fi

echo "run: $dir/bin/fieldsync-selfcheck $*"
exec "$dir/bin/fieldsync-selfcheck" "$@"
