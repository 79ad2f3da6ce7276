#!/usr/bin/env bash
# Contract test: run Schemathesis against a live gateway with
# openapi/openapi.yaml and fail on any response that breaks the contract.
#
# - installs Schemathesis into target/schemathesis-venv (reused if present);
# - builds the gateway (debug) and starts it on 127.0.0.1 with a free admin
#   port and a throw-away database;
# - runs the standard response checks; stops the gateway on exit.
#
# Tunables (environment):
#   PYTHON                     interpreter for the venv (default python3)
#   SCHEMATHESIS_MAX_EXAMPLES  test cases per operation and phase (default
#                              50: about 1.5 minutes of testing on 2 cores)
#   SCHEMATHESIS_SEED          fixed seed, to reproduce a run
#   SCHEMATHESIS_WORKERS       default 1 (generation is CPU-bound Python;
#                              more workers are not faster)
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

SCHEMATHESIS_VERSION=4.32.5
PYTHON=${PYTHON:-python3}
MAX_EXAMPLES=${SCHEMATHESIS_MAX_EXAMPLES:-50}
WORKERS=${SCHEMATHESIS_WORKERS:-1}
VENV="$repo/target/schemathesis-venv"
SPEC="$repo/openapi/openapi.yaml"

# --- Schemathesis ----------------------------------------------------------
if [[ "$("$VENV/bin/schemathesis" --version 2>/dev/null || true)" != *" $SCHEMATHESIS_VERSION" ]]; then
    echo "== installing schemathesis==$SCHEMATHESIS_VERSION into $VENV"
    mkdir -p "$repo/target"
    "$PYTHON" -m venv --clear "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        "schemathesis==$SCHEMATHESIS_VERSION"
fi
"$VENV/bin/schemathesis" --version

# Local traffic never goes through a proxy from the environment.
export NO_PROXY="127.0.0.1,localhost${NO_PROXY:+,$NO_PROXY}"
export no_proxy="$NO_PROXY"

# --- gateway ---------------------------------------------------------------
echo "== cargo build"
cargo build --bin switchyard
target_dir=$(cargo metadata --format-version 1 --no-deps |
    "$VENV/bin/python" -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
bin="$target_dir/debug/switchyard"

work=$(mktemp -d "${TMPDIR:-/tmp}/switchyard-schemathesis.XXXXXX")
gateway_pid=""
cleanup() {
    local status=$?
    if [[ -n "$gateway_pid" ]] && kill -0 "$gateway_pid" 2>/dev/null; then
        kill -TERM "$gateway_pid" 2>/dev/null || true
        wait "$gateway_pid" 2>/dev/null || true
    fi
    if [[ $status -ne 0 && -s "$work/gateway.log" ]]; then
        echo "== gateway log (last 50 lines)"
        tail -n 50 "$work/gateway.log" || true
    fi
    rm -rf "$work"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A port that was free a moment ago (the proxy takes an ephemeral one).
port=$("$VENV/bin/python" -c '
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()')
base="http://127.0.0.1:$port"

echo "== starting the gateway, admin API on $base"
SWITCHYARD_LOG=${SWITCHYARD_LOG:-warn} "$bin" \
    --proxy-listen 127.0.0.1:0 \
    --admin-listen "127.0.0.1:$port" \
    --database-url "sqlite://$work/switchyard.db" \
    --drain-seconds 1 \
    >"$work/gateway.log" 2>&1 &
gateway_pid=$!

# Ready when /admin/status answers; give up after 60 s or if it exits.
"$VENV/bin/python" - "$base/admin/status" "$gateway_pid" <<'EOF'
import os, sys, time, urllib.request
url, pid = sys.argv[1], int(sys.argv[2])
deadline = time.monotonic() + 60
while True:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            if r.status == 200:
                break
    except OSError:
        pass
    try:
        os.kill(pid, 0)
        # A zombie still accepts signals: check it is not a finished child.
        with open(f"/proc/{pid}/stat") as f:
            if f.read().split(") ")[-1].startswith("Z"):
                raise ProcessLookupError
    except (ProcessLookupError, FileNotFoundError):
        sys.exit("the gateway exited before it was ready")
    if time.monotonic() > deadline:
        sys.exit(f"the gateway did not answer {url} within 60 s")
    time.sleep(0.1)
EOF

# --- contract test ---------------------------------------------------------
checks=not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance
run_schemathesis() {
    local args=(
        run "$SPEC"
        --url "$base"
        --checks "$checks"
        --max-examples "$MAX_EXAMPLES"
        --workers "$WORKERS"
        --generation-database none
        --request-timeout 10
        --no-color
        # A stream that stays open while the gateway runs: every request
        # would time out. tests/e2e/dashboard.rs checks its contract.
        --exclude-path /admin/events
    )
    if [[ -n "${SCHEMATHESIS_SEED:-}" ]]; then
        args+=(--seed "$SCHEMATHESIS_SEED")
    fi
    # From the scratch directory: Schemathesis keeps a cache (.schemathesis/)
    # in its working directory, which must not land in the repository.
    #
    # Schemathesis 4.32.5's negative-mode generator sometimes builds an
    # array "demand" from a negated item schema it cannot draw from and
    # stops with "Schema Error: Cannot generate an array with 1 demanded
    # elements" (for PUT /admin/config, whose items are large objects; seen
    # with --seed 6 on that operation alone). That is the tool failing to
    # make a test case, not the API failing one: such a run, and only such a
    # run (no failed check), is run again with another seed, at most twice.
    local try out="$work/schemathesis.out"
    for try in 1 2 3; do
        if (cd "$work" && "$VENV/bin/schemathesis" "${args[@]}" "$@") | tee "$out"; then
            return 0
        fi
        if [[ -n "${SCHEMATHESIS_SEED:-}" ]] || grep -q "❌" "$out" ||
            ! grep -q "Cannot generate an array with" "$out" || ((try == 3)); then
            return 1
        fi
        echo "== only Schemathesis's generator failed (see above): again with another seed"
    done
}

echo "== schemathesis run openapi/openapi.yaml: every phase"
run_schemathesis

# The coverage phase sends its request-body variants together with one
# malformed If-Match value, which the API refuses (412) before it reads the
# body. Again with `If-Match: *` (= unconditional) so those bodies reach
# validation and the store.
echo "== schemathesis run openapi/openapi.yaml: coverage and fuzzing with If-Match: *"
run_schemathesis --phases coverage,fuzzing --header 'If-Match: *'
