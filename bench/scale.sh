#!/usr/bin/env bash
# Switchyard at config scale (see BENCHMARKS.md): 100,000 routes, 10,000
# hosts (each its own upstream) × 10 paths. PUT /admin/config (into an
# empty database, the same document again, then with two changes),
# GET /admin/config,
# start-up to ready, change live p99, failed requests across 1,000 changes
# under wrk load, resident memory, and proxied latency at a steady rate
# (bench/rate-load, 2,000/s): the admin API idle, whole configs written
# back to back, /metrics scraped back to back.
# The route lookup at this shape is criterion's `route_lookup_tenants`
# (cargo bench -p data-plane --bench hot_path -- route_lookup_tenants).
# Usage: bench/scale.sh [--smoke] [--hosts N] [--starts N] [--samples N]
#                       [--changes N] [--out FILE] [--no-install] [--no-build]
# --smoke: 1,000 hosts, 2 starts, 20 samples, 50 changes, 2 s steady windows.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

HOSTS=10000
STARTS=5
STEADY_SECONDS=10
SAMPLES=200
CHANGES=1000
OUT=
INSTALL=1
BUILD=1
while (($#)); do
  case $1 in
    --smoke) HOSTS=1000 STARTS=2 SAMPLES=20 CHANGES=50 STEADY_SECONDS=2 ;;
    --hosts) HOSTS=$2; shift ;;
    --starts) STARTS=$2; shift ;;
    --samples) SAMPLES=$2; shift ;;
    --changes) CHANGES=$2; shift ;;
    --out) OUT=$2; shift ;;
    --no-install) INSTALL=0 ;;
    --no-build) BUILD=0 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
  shift
done

bench_start "$INSTALL" "$BUILD"
check_ports_free "$BACKEND_PORT" "$BACKEND2_PORT" "$SY_PORT" "$SY_ADMIN_PORT" "$SY_METRICS_PORT"
mkdir -p "$BENCH_DIR/results"
[[ -n $OUT ]] || OUT=$BENCH_DIR/results/$(date -u +%Y%m%dT%H%M%SZ)-scale.json

start_backend backend "$BACKEND_PORT"
start_backend backend2 "$BACKEND2_PORT"
log "scale: $HOSTS hosts x 10 paths; gateway logs in $BENCH_TMP"
python3 "$BENCH_DIR/scale.py" --bin "$SWITCHYARD_BIN" --dir "$BENCH_TMP" \
  --proxy-port "$SY_PORT" --admin-port "$SY_ADMIN_PORT" --metrics-port "$SY_METRICS_PORT" \
  --backend-port "$BACKEND_PORT" --backend2-port "$BACKEND2_PORT" \
  --proxy-cpu "$PROXY_CPU" --load-cpu "$LOAD_CPU" --lua "$BENCH_DIR/wrk-report.lua" \
  --rate-load "$RATE_LOAD_BIN" --steady-seconds "$STEADY_SECONDS" \
  --hosts "$HOSTS" --starts "$STARTS" --samples "$SAMPLES" --changes "$CHANGES" --out "$OUT"
