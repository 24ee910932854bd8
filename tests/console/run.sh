#!/usr/bin/env bash
# Runs the console's browser tests (console.test.mjs) and the codec test (cbor.test.mjs) with
# Node's test runner. CTest registers this (tests/console/CMakeLists.txt, label "browser").
#
# Exits 77, which CTest reports as "skipped", when a prerequisite is missing: Node.js >= 20,
# Debian's chromium, or the npm packages (npm ci in tests/console). scripts/install-deps.sh
# installs all three.
#
# Environment: FIELDSYNC_SERVER_BIN, FIELDSYNC_SCREENSHOT_DIR, FIELDSYNC_CHROMIUM (see
# console.test.mjs).
set -u
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

skip() {
    echo "SKIP: $1"
    echo "      (scripts/install-deps.sh installs what the browser tests need)"
    exit 77
}

command -v node >/dev/null 2>&1 || skip "node is not installed"
major="$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)"
[[ "$major" -ge 20 ]] || skip "node $major is too old (playwright-core needs Node.js 20 or newer)"
chromium="${FIELDSYNC_CHROMIUM:-/usr/bin/chromium}"
[[ -x "$chromium" ]] || skip "no chromium at $chromium (apt-get install chromium, or set FIELDSYNC_CHROMIUM)"
for pkg in playwright-core ws; do
    [[ -d "$here/node_modules/$pkg" ]] || skip "the npm package $pkg is missing: run (cd tests/console && npm ci)"
done

cd "$here" || exit 1
exec node --test --test-concurrency=1 cbor.test.mjs console.test.mjs
