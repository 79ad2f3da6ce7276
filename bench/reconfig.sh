#!/usr/bin/env bash
# Switchyard reconfiguration and memory figures (see BENCHMARKS.md):
# admin POST latency and change-to-first-proxied-200 at 10 / 1,000 / 10,000
# routes, failed requests during 1,000 config changes under wrk load, RSS
# idle / with 10k routes / with 1,000 idle keep-alive client connections.
# Usage: bench/reconfig.sh [--smoke] [--samples N] [--changes N]
#                          [--out FILE] [--no-install] [--no-build]
set -euo pipefail
source "$(dirname "$0")/lib.sh"

SAMPLES=${BENCH_RECONFIG_SAMPLES:-100}
CHANGES=${BENCH_RECONFIG_CHANGES:-1000}
COUNTS=10,1000,10000
CONNS=1000
OUT=
INSTALL=1
BUILD=1
while (($#)); do
  case $1 in
    --smoke) SAMPLES=10 CHANGES=100 COUNTS=10,1000 CONNS=100 ;;
    --samples) SAMPLES=$2; shift ;;
    --changes) CHANGES=$2; shift ;;
    --out) OUT=$2; shift ;;
    --no-install) INSTALL=0 ;;
    --no-build) BUILD=0 ;;
    -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
  shift
done

bench_start "$INSTALL" "$BUILD"
check_ports_free "$BACKEND_PORT" "$SY_PORT" "$SY_ADMIN_PORT" "$BACKEND2_PORT"
mkdir -p "$BENCH_DIR/results"
[[ -n $OUT ]] || OUT=$BENCH_DIR/results/$(date -u +%Y%m%dT%H%M%SZ)-reconfig.json

start_backend backend "$BACKEND_PORT"
start_backend backend2 "$BACKEND2_PORT"
start_switchyard
sleep 0.5
python3 "$BENCH_DIR/reconfig.py" --admin-port "$SY_ADMIN_PORT" --proxy-port "$SY_PORT" \
  --backend-port "$BACKEND_PORT" --backend2-port "$BACKEND2_PORT" --pid "$PID_switchyard" \
  --load-cpu "$LOAD_CPU" --lua "$BENCH_DIR/wrk-report.lua" \
  --counts "$COUNTS" --samples "$SAMPLES" --changes "$CHANGES" --connections "$CONNS" --out "$OUT"
