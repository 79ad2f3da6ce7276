#!/usr/bin/env bash
# Latency at a steady rate with the peers interleaved (see BENCHMARKS.md,
# issue 23 point 3). The direct backend, nginx, nginx again (the same
# server on other connections: how far nginx differs from itself is the
# resolution), nginx with its access log, Switchyard and Switchyard with
# its access log are measured by ONE
# bench/rate-load at half of nginx's saturated rate (measured first with
# wrk), whose schedule is cut into slices of 100 ms: each slice goes to one
# peer, each cycle visits every peer once in a shuffled order. bench/run.sh
# measures each peer for 5 s after the other; on this shared machine a few
# millisecond stalls of the host's CPUs set a 5 s run's p99, and they fall
# on one peer's run or another's. Interleaved, each peer gets hundreds of
# slices spread over the same minutes, so the stalls fall on all alike.
#
#   bench/tail.sh [--rounds N] [--duration S] [--slice-ms MS] [--rate R]
#                 [--no-install] [--no-build]
#
# Defaults: 6 runs of 60 s (10 s per peer each). Prints each run and the
# medians over runs; writes bench/results/<stamp>-tail.json. Exits non-zero
# on a failed request (a non-2xx answer, a socket error, or a request not
# answered within 2 s of the end).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

ROUNDS=6
DURATION=60
SLICE_MS=100
RATE=0
INSTALL=1
BUILD=1
while (($#)); do
  case $1 in
    --rounds) ROUNDS=$2; shift ;;
    --duration) DURATION=$2; shift ;;
    --slice-ms) SLICE_MS=$2; shift ;;
    --rate) RATE=$2; shift ;;
    --no-install) INSTALL=0 ;;
    --no-build) BUILD=0 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
  shift
done

bench_start "$INSTALL" "$BUILD"
check_ports_free "$BACKEND_PORT" "$NGINX_PORT" "$NGINX_LOG_PORT" "$SY_PORT" "$SY_ADMIN_PORT" \
  "$SY_LOG_PORT" "$SY_LOG_ADMIN_PORT"
mkdir -p "$BENCH_DIR/results"
OUT=$BENCH_DIR/results/$(date -u +%Y%m%dT%H%M%SZ)-tail.json

start_backend backend "$BACKEND_PORT"
start_nginx
start_nginx nginx_log "$NGINX_LOG_PORT" file
start_switchyard switchyard "$SY_PORT" "$SY_ADMIN_PORT"
start_switchyard switchyard_log "$SY_LOG_PORT" "$SY_LOG_ADMIN_PORT" --access-log "$BENCH_TMP/access.log"
bench_route "$SY_ADMIN_PORT" "$SY_LOG_ADMIN_PORT"
for port in "$BACKEND_PORT" "$NGINX_PORT" "$NGINX_LOG_PORT" "$SY_PORT" "$SY_LOG_PORT"; do
  wait_proxied "$port" /
done

python3 "$BENCH_DIR/tail.py" \
  --peer "direct:$BACKEND_PORT" \
  --peer "nginx:$NGINX_PORT:$PID_nginx" \
  --peer "nginx_again:$NGINX_PORT" \
  --peer "nginx_log:$NGINX_LOG_PORT:$PID_nginx_log" \
  --peer "switchyard:$SY_PORT:$PID_switchyard" \
  --peer "switchyard_log:$SY_LOG_PORT:$PID_switchyard_log" \
  --rounds "$ROUNDS" --duration "$DURATION" --slice-ms "$SLICE_MS" --rate "$RATE" \
  --proxy-cpu "$PROXY_CPU" --load-cpu "$LOAD_CPU" --rate-load "$RATE_LOAD_BIN" --lua "$BENCH_DIR/wrk-report.lua" \
  --gateway "$SWITCHYARD_BIN ($("$SWITCHYARD_BIN" --version))" --out "$OUT"
