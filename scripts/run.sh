#!/usr/bin/env bash
# The run command (README): installs dependencies, builds the `release` preset and runs it.
#
#   scripts/run.sh [ARGS...]
#
# It starts fieldsync-server on 127.0.0.1:8470 with the demo survey, areas and accounts on one
# SQLite file in ./data (plain HTTP: fine for a local trial; the server prints how to turn TLS
# on with fieldsync-mkcert). The demo passwords are printed at the first start and kept in
# ./data/demo-credentials.txt. ARGS go to the server (e.g. --port 9000, --console-dir DIR);
# docs/operations.md lists every option. Ctrl-C stops it gracefully.
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
cmake --build "$dir" --parallel "$jobs" --target fieldsync-server fieldsync-mkcert

echo "run: $dir/bin/fieldsync-server --demo --plain --listen 127.0.0.1 --data-dir ./data $*"
echo "run: for TLS: $dir/bin/fieldsync-mkcert --out ./data/tls, then run with" \
     "--tls-cert ./data/tls/cert.pem --tls-key ./data/tls/key.pem"
exec "$dir/bin/fieldsync-server" --demo --plain --listen 127.0.0.1 --data-dir ./data "$@"
