#!/usr/bin/env bash
# User-space instructions per proxied request, counted by callgrind: the
# figure that tells two builds apart on this noisy machine (the same build
# gives the same count within ~1%, whatever else runs). See BENCHMARKS.md.
#
#   bench/callgrind.sh [--requests-seconds S] [--connections N] [--no-build] [--floor]
#
# Starts the bench backend and one Switchyard (`--workers 1
# --no-access-log` unless BENCH_GATEWAY_ARGS has `--access-log FILE`, one route `/`) under `valgrind --tool=callgrind` with
# collection off; warms up with wrk, turns collection on for S seconds
# (default 10) of `wrk -c N` (default 16), and prints instructions per
# request, plus the top functions (self and inclusive) from
# callgrind_annotate. Outputs stay in bench/results/callgrind-<stamp>.*.
# --floor profiles bench/floor (the featureless proxy) instead.
# Env: BENCH_SWITCHYARD_BIN (profile a prebuilt gateway), BENCH_PORT_BASE,
# BENCH_GATEWAY_ARGS (more flags for the gateway, e.g. --no-inline-server).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

SECONDS_ON=10
CONNS=16
BUILD=1
FLOOR=0
while (($#)); do
  case $1 in
    --requests-seconds) SECONDS_ON=$2; shift ;;
    --connections) CONNS=$2; shift ;;
    --no-build) BUILD=0 ;;
    --floor) FLOOR=1 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
  shift
done

command -v valgrind >/dev/null || die "valgrind is missing (apt-get install valgrind)"
trap bench_cleanup EXIT
trap 'exit 130' INT TERM
install_deps
((BUILD)) && build_all
((BUILD && FLOOR)) && build_floor
bench_tmp
check_ports_free "$BACKEND_PORT" "$SY_PORT" "$SY_ADMIN_PORT" "$FLOOR_PORT"

mkdir -p "$BENCH_DIR/results"
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=$BENCH_DIR/results/callgrind-$STAMP
start_backend backend "$BACKEND_PORT"
rm -f "$BENCH_TMP"/cg.db*
# On the proxy CPU, as in run.sh (callgrind runs its threads one at a time).
VALGRIND=(valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$OUT.out")
if ((FLOOR)); then
  SY_PORT=$FLOOR_PORT
  start_bg switchyard "$PROXY_CPU" "${VALGRIND[@]}" "$FLOOR_BIN" "127.0.0.1:$SY_PORT" "127.0.0.1:$BACKEND_PORT"
else
  # The access log off, unless BENCH_GATEWAY_ARGS sends it to a file.
  QUIET=--no-access-log
  [[ " ${BENCH_GATEWAY_ARGS:-} " == *" --access-log "* ]] && QUIET=
  start_bg switchyard "$PROXY_CPU" env SWITCHYARD_LOG=warn "${VALGRIND[@]}" \
    "$SWITCHYARD_BIN" --proxy-listen "127.0.0.1:$SY_PORT" --admin-listen "127.0.0.1:$SY_ADMIN_PORT" \
    --database-url "sqlite://$BENCH_TMP/cg.db" --workers 1 --drain-seconds 1 $QUIET \
    ${BENCH_GATEWAY_ARGS:-}
fi
for _ in $(seq 600); do
  port_open "$SY_PORT" && { ((FLOOR)) || port_open "$SY_ADMIN_PORT"; } && break
  kill -0 "$PID_switchyard" 2>/dev/null || die "the proxy exited under valgrind (see $BENCH_TMP)"
  sleep 0.1
done
if ((!FLOOR)); then
  admin POST /admin/routes \
    "{\"name\":\"bench\",\"path\":\"/\",\"backends\":[{\"url\":\"http://127.0.0.1:$BACKEND_PORT\"}]}" >/dev/null
fi
wait_proxied "$SY_PORT" /

run_wrk() { # SECONDS → wrk's output
  taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"${1}s" "http://127.0.0.1:$SY_PORT/"
}
log "warm-up (3 s of wrk -c$CONNS)"
run_wrk 3 >/dev/null
callgrind_control -i on "$PID_switchyard" >/dev/null 2>&1
log "collecting for ${SECONDS_ON}s of wrk -c$CONNS"
WRK_OUT=$(run_wrk "$SECONDS_ON")
callgrind_control -i off "$PID_switchyard" >/dev/null 2>&1
echo "$WRK_OUT" >"$OUT.wrk"
REQUESTS=$(awk '/requests in/ {print $1}' <<<"$WRK_OUT")
if grep -q 'Non-2xx\|Socket errors' <<<"$WRK_OUT"; then
  die "wrk saw errors: $(grep 'Non-2xx\|Socket errors' <<<"$WRK_OUT")"
fi
stop_all # the gateway writes its profile as it exits
[[ -s $OUT.out ]] || die "no callgrind output in $OUT.out"
TOTAL=$(awk '/^totals:/ {print $2; exit}' "$OUT.out")
callgrind_annotate --inclusive=no "$OUT.out" >"$OUT.self.txt" 2>/dev/null || true
callgrind_annotate --inclusive=yes "$OUT.out" >"$OUT.inclusive.txt" 2>/dev/null || true
GIT=$(git -C "$REPO_ROOT" describe --always --dirty 2>/dev/null || echo unknown)
LABEL="switchyard $GIT${BENCH_GATEWAY_ARGS:+ $BENCH_GATEWAY_ARGS}"
((FLOOR)) && LABEL="bench/floor"
python3 - "$TOTAL" "$REQUESTS" "$OUT" "$GIT" "$LABEL" <<'PY'
import json, sys
total, requests, out, git, label = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
per = total / requests
print(f"{label}: {requests} requests, {total} instructions, {per:,.0f} instructions per request")
json.dump({"git": git, "profiled": label, "requests": requests, "instructions": total,
           "instructions_per_request": round(per)}, open(out + ".json", "w"))
PY
log "profile: $OUT.out (self: $OUT.self.txt, inclusive: $OUT.inclusive.txt)"
