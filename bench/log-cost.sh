#!/usr/bin/env bash
# What the access log costs, measured in pairs (see BENCHMARKS.md, issue
# 23 point 1). Two Switchyards on the proxy CPU, one with --no-access-log
# and one with its access log to a file, are loaded AT THE SAME TIME, each
# by its own `wrk -c32` on the load CPU; each round's figure is the ratio of
# their CPU per request. Sequential rounds (bench/run.sh) swing by ±10%
# here with whatever else the host runs; a drift during a paired round
# hits both gateways alike, so the ratio holds still (±2%). Both gateways
# get about half the core: CPU per request is higher than in run.sh, for
# both.
#
#   bench/log-cost.sh [--rounds N] [--duration S] [--no-install] [--no-build]
#
# Defaults: 12 rounds of 5 s. Prints each round and the median with
# min–max; writes bench/results/<stamp>-log-cost.json. Exits non-zero on a
# failed request (a non-2xx answer or a socket error).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

ROUNDS=12
DURATION=5
INSTALL=1
BUILD=1
while (($#)); do
  case $1 in
    --rounds) ROUNDS=$2; shift ;;
    --duration) DURATION=$2; shift ;;
    --no-install) INSTALL=0 ;;
    --no-build) BUILD=0 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
  shift
done

bench_start "$INSTALL" "$BUILD"
check_ports_free "$BACKEND_PORT" "$SY_PORT" "$SY_ADMIN_PORT" "$SY_LOG_PORT" "$SY_LOG_ADMIN_PORT"
mkdir -p "$BENCH_DIR/results"
OUT=$BENCH_DIR/results/$(date -u +%Y%m%dT%H%M%SZ)-log-cost.json

start_backend backend "$BACKEND_PORT"
start_switchyard switchyard "$SY_PORT" "$SY_ADMIN_PORT"
start_switchyard switchyard_log "$SY_LOG_PORT" "$SY_LOG_ADMIN_PORT" --access-log "$BENCH_TMP/access.log"
bench_route "$SY_ADMIN_PORT" "$SY_LOG_ADMIN_PORT"
for port in "$SY_PORT" "$SY_LOG_PORT"; do wait_proxied "$port" /; done

python3 "$BENCH_DIR/log_cost.py" --off "$SY_PORT:$PID_switchyard" --on "$SY_LOG_PORT:$PID_switchyard_log" \
  --rounds "$ROUNDS" --duration "$DURATION" --load-cpu "$LOAD_CPU" --lua "$BENCH_DIR/wrk-report.lua" \
  --gateway "$SWITCHYARD_BIN ($("$SWITCHYARD_BIN" --version))" --out "$OUT"
