#!/usr/bin/env bash
# The dashboard in a real browser: headless Chromium from Debian's
# packages, driven by Playwright (playwright-core from npm, pinned in
# tests/browser/package-lock.json), against a gateway, demo backends and
# traffic that tests/browser/dashboard.test.mjs starts on 127.0.0.1 and
# stops by PID.
#
# - installs Chromium (apt) and Node.js (apt, only if missing) and the
#   test's npm package (npm ci, into tests/browser/node_modules);
# - builds the gateway (debug) and runs the browser tests, bounded by a
#   timeout.
#
#   UPDATE_SCREENSHOT=1 bash .ci/browser.sh
#
# also regenerates the README's screenshot (tests/browser/dashboard.png).
set -euo pipefail
cd "$(dirname "$0")/.."

apt_install() {
    if [[ $(id -u) -ne 0 ]]; then
        echo "browser tests need $* (apt-get install $*; run as root to let this script do it)" >&2
        exit 1
    fi
    if [[ -z "${APT_UPDATED:-}" ]]; then
        apt-get update -qq
        APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

[[ -x /usr/bin/chromium ]] || apt_install chromium
command -v node >/dev/null && command -v npm >/dev/null || apt_install nodejs npm
/usr/bin/chromium --version
node --version

(cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)

echo "== cargo build"
cargo build --bin switchyard
target_dir=$(cargo metadata --format-version 1 --no-deps |
    node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).target_directory))')

export SWITCHYARD_BIN="$target_dir/debug/switchyard"
if [[ -n "${UPDATE_SCREENSHOT:-}" ]]; then
    export SCREENSHOT="$PWD/tests/browser/dashboard.png"
fi
# Local traffic never goes through a proxy from the environment.
export NO_PROXY="127.0.0.1,localhost${NO_PROXY:+,$NO_PROXY}"
export no_proxy="$NO_PROXY"
echo "== node --test tests/browser/dashboard.test.mjs"
timeout --kill-after=10 600 node --test --test-concurrency=1 tests/browser/dashboard.test.mjs
