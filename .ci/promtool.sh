#!/usr/bin/env bash
# Lint a live /metrics scrape with Prometheus' own `promtool check metrics`:
# zero complaints allowed. Installs Debian's prometheus package (for
# promtool) without starting its service, runs the gateway with a demo
# backend and some traffic, scrapes, checks, and stops what it started.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v promtool >/dev/null; then
    echo "== installing promtool (Debian package prometheus)"
    SUDO=""
    [[ $(id -u) -eq 0 ]] || SUDO="sudo"
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod +x /usr/sbin/policy-rc.d
    trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
    $SUDO rm -f /usr/sbin/policy-rc.d
    trap - EXIT
fi
promtool --version | head -1

echo "== cargo build"
cargo build --bin switchyard
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
bin="$target_dir/debug/switchyard"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

backend_port=$(free_port); proxy_port=$(free_port); admin_port=$(free_port)
"$bin" demo-backend --port "$backend_port" --name demo >"$work/backend.log" 2>&1 & pids+=($!)
"$bin" --proxy-listen "127.0.0.1:$proxy_port" --admin-listen "127.0.0.1:$admin_port" \
    --database-url "sqlite://$work/gw.db" >"$work/gateway.log" 2>&1 & pids+=($!)

python3 - "$admin_port" "$proxy_port" "$backend_port" "$work/metrics.txt" <<'PY'
import json, sys, time, urllib.request, urllib.error
admin, proxy, backend, out = sys.argv[1:]
def call(method, url, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
deadline = time.time() + 60
while True:
    try:
        call("GET", f"http://127.0.0.1:{admin}/admin/status"); break
    except OSError:
        if time.time() > deadline: sys.exit("gateway did not start")
        time.sleep(0.1)
status, _ = call("POST", f"http://127.0.0.1:{admin}/admin/upstreams", {
    "name": "demo", "health_check": {"interval_ms": 200, "timeout_ms": 100},
    "backends": [{"url": f"http://127.0.0.1:{backend}"}, {"url": "http://127.0.0.1:1"}]})
assert status == 201, status
status, _ = call("POST", f"http://127.0.0.1:{admin}/admin/routes", {"name": "demo", "path": "/", "upstream": "demo"})
assert status == 201, status
for i in range(50):
    call("GET", f"http://127.0.0.1:{proxy}/item/{i}")
    call("POST", f"http://127.0.0.1:{proxy}/item", {"i": i})
call("GET", f"http://127.0.0.1:{admin}/admin/nope")
time.sleep(0.5)  # let a few health probes land (pass and fail)
with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=10) as r:
    open(out, "wb").write(r.read())
PY

lines=$(grep -vc '^#' "$work/metrics.txt" || true)
echo "== promtool check metrics ($lines samples)"
if ! report=$(promtool check metrics < "$work/metrics.txt" 2>&1); then
    echo "$report"; exit 1
fi
if [[ -n "$report" ]]; then
    echo "$report"; echo "promtool complained"; exit 1
fi
echo "promtool: no complaints"
