#!/usr/bin/env bash
# Switchyard proxy benchmark: direct backend, nginx, haproxy and Switchyard
# measured in one run, pinned, rounds interleaved with the order rotated.
# See BENCHMARKS.md. Usage:
#   bench/run.sh [--rounds N] [--duration S] [--c1-duration S] [--warmup S]
#                [--fixed-rounds N] [--fixed-duration S] [--smoke]
#                [--no-reconfig] [--no-install] [--no-build] [--floor]
# --floor also measures bench/floor, a featureless proxy on the same runtime.
# The fixed-rate mode runs bench/rate-load at half nginx's saturated rate
# (requests released every 100 µs; BENCH_FIXED_TICK_US).
# Env equivalents: BENCH_ROUNDS, BENCH_DURATION, BENCH_C1_DURATION,
# BENCH_WARMUP, BENCH_FIXED_ROUNDS (9), BENCH_FIXED_DURATION (5),
# BENCH_PORT_BASE (default 19080), BENCH_PROXY_CPU (0), BENCH_LOAD_CPU (1),
# CARGO_TARGET_DIR, BENCH_KEEP_TMP=1 (keep logs).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

ROUNDS=${BENCH_ROUNDS:-5}
DURATION=${BENCH_DURATION:-10}
C1_DURATION=${BENCH_C1_DURATION:-5}
WARMUP=${BENCH_WARMUP:-3}
FIXED_ROUNDS=${BENCH_FIXED_ROUNDS:-9}
FIXED_DURATION=${BENCH_FIXED_DURATION:-5}
FIXED_TICK_US=${BENCH_FIXED_TICK_US:-100}
SMOKE=0
RECONFIG=1
INSTALL=1
BUILD=1
FLOOR=0
while (($#)); do
  case $1 in
    --rounds) ROUNDS=$2; shift ;;
    --duration) DURATION=$2; shift ;;
    --c1-duration) C1_DURATION=$2; shift ;;
    --warmup) WARMUP=$2; shift ;;
    --fixed-rounds) FIXED_ROUNDS=$2; shift ;;
    --fixed-duration) FIXED_DURATION=$2; shift ;;
    --smoke) SMOKE=1 ;;
    --no-reconfig) RECONFIG=0 ;;
    --no-install) INSTALL=0 ;;
    --no-build) BUILD=0 ;;
    --floor) FLOOR=1 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
  shift
done
if ((SMOKE)); then
  ROUNDS=1 DURATION=1 C1_DURATION=1 WARMUP=0 FIXED_ROUNDS=1 FIXED_DURATION=1
fi

trap bench_cleanup EXIT
trap 'exit 130' INT TERM

((INSTALL)) && install_deps
((BUILD)) && build_all
((BUILD && FLOOR)) && build_floor
bench_tmp
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
check_ports_free "$BACKEND_PORT" "$NGINX_PORT" "$HAPROXY_PORT" "$SY_PORT" "$SY_ADMIN_PORT" "$BACKEND2_PORT" \
  "$SY_BARE_PORT" "$SY_BARE_ADMIN_PORT" "$FLOOR_PORT" "$NGINX_LOG_PORT" "$SY_LOG_PORT" "$SY_LOG_ADMIN_PORT" \
  "$NGINX_TLS_PORT" "$SY_TLS_PORT" "$SY_TLS_ADMIN_PORT"

log "starting peers (proxies on CPU $PROXY_CPU, backend + wrk on CPU $LOAD_CPU); logs in $BENCH_TMP"
start_backend backend "$BACKEND_PORT"
start_nginx
start_nginx nginx_log "$NGINX_LOG_PORT" file
make_cert "$BENCH_TMP"
start_nginx nginx_tls "$NGINX_TLS_PORT" off "$BENCH_TMP/cert.pem" "$BENCH_TMP/key.pem"
start_haproxy
start_switchyard
start_switchyard switchyard_bare "$SY_BARE_PORT" "$SY_BARE_ADMIN_PORT" --no-inline-server
# Switchyard's defaults: the access log on (to a file, as nginx's).
start_switchyard switchyard_log "$SY_LOG_PORT" "$SY_LOG_ADMIN_PORT" --access-log "$BENCH_TMP/switchyard_log-access.log"
start_switchyard switchyard_tls "$SY_TLS_PORT" "$SY_TLS_ADMIN_PORT" --tls-cert "$BENCH_TMP/cert.pem" --tls-key "$BENCH_TMP/key.pem"
bench_route "$SY_ADMIN_PORT" "$SY_BARE_ADMIN_PORT" "$SY_LOG_ADMIN_PORT" "$SY_TLS_ADMIN_PORT"
FLOOR_PEER=()
if ((FLOOR)); then
  start_floor
  FLOOR_PEER=(--peer "floor:$FLOOR_PORT:$PID_floor")
fi
for port in "$BACKEND_PORT" "$NGINX_PORT" "$NGINX_LOG_PORT" "$HAPROXY_PORT" "$SY_PORT" "$SY_BARE_PORT" "$SY_LOG_PORT"; do
  wait_proxied "$port" /
done
for port in "$NGINX_TLS_PORT" "$SY_TLS_PORT"; do
  wait_proxied "$port" / https
done
# The modes besides plain HTTP/1.1 keep-alive (measure.py's MODES).
EXTRA=()
for mode in https https_handshake h2; do
  EXTRA+=(--extra "$mode:nginx_tls:https://127.0.0.1:$NGINX_TLS_PORT/:$PID_nginx_tls"
          --extra "$mode:switchyard_tls:https://127.0.0.1:$SY_TLS_PORT/:$PID_switchyard_tls")
done
EXTRA+=(--extra "1mib:direct:http://127.0.0.1:$BACKEND_PORT/1mib:"
        --extra "1mib:nginx:http://127.0.0.1:$NGINX_PORT/1mib:$PID_nginx"
        --extra "1mib:switchyard:http://127.0.0.1:$SY_PORT/1mib:$PID_switchyard")

mkdir -p "$BENCH_DIR/results"
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=$BENCH_DIR/results/$STAMP.json
GIT=$(git -C "$REPO_ROOT" describe --always --dirty 2>/dev/null || echo unknown)
[[ -n ${BENCH_SWITCHYARD_BIN:-} ]] && GIT="prebuilt $BENCH_SWITCHYARD_BIN (tree $GIT)"
SMOKE_ARG=()
((SMOKE)) && SMOKE_ARG=(--smoke)
log "measuring: $ROUNDS round(s) of ${DURATION}s (c64) + ${C1_DURATION}s (c1), warm-up ${WARMUP}s"
python3 "$BENCH_DIR/measure.py" \
  --peer "direct:$BACKEND_PORT" \
  --peer "nginx:$NGINX_PORT:$PID_nginx" \
  --peer "nginx_log:$NGINX_LOG_PORT:$PID_nginx_log" \
  --peer "haproxy:$HAPROXY_PORT:$PID_haproxy" \
  --peer "switchyard:$SY_PORT:$PID_switchyard" \
  --peer "switchyard_hyper_server:$SY_BARE_PORT:$PID_switchyard_bare" \
  --peer "switchyard_log:$SY_LOG_PORT:$PID_switchyard_log" "${FLOOR_PEER[@]}" "${EXTRA[@]}" \
  --rounds "$ROUNDS" --duration "$DURATION" --c1-duration "$C1_DURATION" --warmup "$WARMUP" \
  --proxy-cpu "$PROXY_CPU" --load-cpu "$LOAD_CPU" --lua "$BENCH_DIR/wrk-report.lua" \
  --out "$OUT" --git "$GIT" "${SMOKE_ARG[@]}" \
  --fixed-rate direct,nginx,nginx_log,switchyard,switchyard_log \
  --fixed-rounds "$FIXED_ROUNDS" --fixed-duration "$FIXED_DURATION" --fixed-tick-us "$FIXED_TICK_US" \
  --rate-load "$RATE_LOAD_BIN" --tls-load "$TLS_LOAD_BIN"

# Stop the peers before the reconfiguration run (it starts its own).
stop_all

if ((RECONFIG)); then
  RECONFIG_ARGS=(--no-install --no-build --out "$BENCH_DIR/results/$STAMP-reconfig.json")
  ((SMOKE)) && RECONFIG_ARGS+=(--smoke)
  "$BENCH_DIR/reconfig.sh" "${RECONFIG_ARGS[@]}"
fi
