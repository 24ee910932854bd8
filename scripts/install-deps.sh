#!/usr/bin/env bash
# Installs everything fieldsync needs to build, test, fuzz and benchmark on a fresh Debian 12
# (bookworm). Idempotent: packages already installed are left alone, and `apt-get update` runs
# only when something is missing. Run as root, or as a user with sudo.
#
#   scripts/install-deps.sh            # install what is missing
#   scripts/install-deps.sh --check    # only report what is missing; exit 1 if anything is
set -euo pipefail

# --- Packages -------------------------------------------------------------------------------
# Toolchain and build system.
packages=(
    build-essential cmake ninja-build pkg-config git
    # Clang for the libFuzzer targets (the `fuzz` preset) and the thread-safety analysis job.
    clang clang-14 libclang-rt-14-dev
)
# Libraries (see the top-level CMakeLists.txt for where each is used).
packages+=(
    libboost1.81-dev libboost-json1.81-dev  # server net (Beast/Asio), JSON
    libsqlite3-dev                          # server and SDK stores
    libcbor-dev                             # protocol codec
    libssl-dev                              # TLS, SHA-256, random ids
    libjemalloc-dev                         # fieldsync-server's allocator (server/net.cmake)
    doctest-dev                             # unit tests
    libbenchmark-dev                        # tools/bench
    valgrind                                # tools/bench: callgrind counts (scripts/bench.sh)
    libcli11-dev                            # command-line tools
)
# The supervisor console's browser tests (tests/console/): Debian's chromium, driven by
# playwright-core from npm (console_npm_ci below); a CJK font for legible Chinese screenshots.
# Node.js and npm come from Debian unless a node/npm is already installed (a NodeSource nodejs
# bundles npm, and Debian's npm package would conflict with it).
packages+=(chromium fonts-wqy-microhei)
command -v node >/dev/null 2>&1 || packages+=(nodejs)
command -v npm >/dev/null 2>&1 || packages+=(npm)
# `npm ci` in tests/console when its packages are missing (--check: report them).
console_npm_ci() {
    local dir
    dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/tests/console"
    [[ -f "$dir/package-lock.json" ]] || return 0
    if [[ -d "$dir/node_modules/playwright-core" && -d "$dir/node_modules/ws" ]]; then return 0; fi
    if [[ $check_only -eq 1 ]]; then
        echo "install-deps: missing: npm packages of tests/console (npm ci)"
        return 1
    fi
    echo "install-deps: npm ci in tests/console"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error) ||
        echo "install-deps: warning: npm ci in tests/console failed; the browser tests will be skipped" >&2
}
# ---------------------------------------------------------------------------------------------

check_only=0
if [[ "${1:-}" == "--check" ]]; then check_only=1; fi

missing=()
for p in "${packages[@]}"; do
    status="$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)"
    if [[ "$status" != "installed" ]]; then missing+=("$p"); fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
    echo "install-deps: all ${#packages[@]} packages present"
    console_npm_ci
    exit 0
fi
echo "install-deps: missing: ${missing[*]}"
if [[ $check_only -eq 1 ]]; then exit 1; fi

as_root=()
if [[ "$(id -u)" -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then
        as_root=(sudo)
    else
        echo "install-deps: not root and sudo is not available; run as root:" >&2
        echo "  apt-get install ${missing[*]}" >&2
        exit 1
    fi
fi

export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends -o Dpkg::Use-Pty=0 "${missing[@]}" >/dev/null
echo "install-deps: installed ${#missing[@]} package(s)"
console_npm_ci
