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
ROUTE="{\"name\":\"bench\",\"path\":\"/\",\"backends\":[{\"url\":\"http://127.0.0.1:$BACKEND_PORT\"}]}"
for admin_port in "$SY_ADMIN_PORT" "$SY_LOG_ADMIN_PORT"; do
  ADMIN_PORT=$admin_port admin POST /admin/routes "$ROUTE" >/dev/null
done
for port in "$SY_PORT" "$SY_LOG_PORT"; do wait_proxied "$port" /; done

# cpu_ticks PID: user + system clock ticks of every thread of PID.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# load PORT SECONDS OUT: wrk -c32 on the load CPU, its report in OUT.
load() {
  taskset -c "$LOAD_CPU" wrk -t1 -c32 -d"${2}s" -s "$BENCH_DIR/wrk-report.lua" \
    "http://127.0.0.1:$1/" >"$3"
}

log "warm-up (3 s, both at once)"
load "$SY_PORT" 3 /dev/null & warm=$!
load "$SY_LOG_PORT" 3 /dev/null
wait "$warm"

ROWS=$BENCH_TMP/rows
: >"$ROWS"
for round in $(seq "$ROUNDS"); do
  off0=$(cpu_ticks "$PID_switchyard")
  on0=$(cpu_ticks "$PID_switchyard_log")
  load "$SY_PORT" "$DURATION" "$BENCH_TMP/off.out" & off_load=$!
  load "$SY_LOG_PORT" "$DURATION" "$BENCH_TMP/on.out"
  wait "$off_load"
  off1=$(cpu_ticks "$PID_switchyard")
  on1=$(cpu_ticks "$PID_switchyard_log")
  python3 - "$round" "$off0" "$off1" "$on0" "$on1" "$(getconf CLK_TCK)" \
    "$BENCH_TMP/off.out" "$BENCH_TMP/on.out" >>"$ROWS" <<'PY'
import json, re, sys
round_, off0, off1, on0, on1, hz = (float(v) for v in sys.argv[1:7])
def report(path):
    text = open(path).read()
    m = re.search(r"^WRKJSON (.*)$", text, re.M)
    if not m:
        sys.exit(f"no wrk report in {path}: {text[-300:]}")
    return json.loads(m.group(1))
off, on = report(sys.argv[7]), report(sys.argv[8])
row = {"round": int(round_)}
for name, r, cpu in (("off", off, off1 - off0), ("on", on, on1 - on0)):
    failed = sum(r[k] for k in ("connect_errors", "read_errors", "write_errors", "timeouts", "non2xx"))
    row[name] = {"requests": r["requests"], "failed": failed,
                 "cpu_us_per_request": round(cpu / hz * 1e6 / max(r["requests"], 1), 3)}
row["ratio"] = round(row["on"]["cpu_us_per_request"] / row["off"]["cpu_us_per_request"], 4)
print(json.dumps(row))
print(f"round {row['round']}: log on {row['on']['cpu_us_per_request']} µs/req, "
      f"off {row['off']['cpu_us_per_request']} µs/req, on ÷ off {row['ratio']}", file=sys.stderr)
PY
done

python3 - "$ROWS" "$OUT" "$ROUNDS" "$DURATION" "$SWITCHYARD_BIN ($("$SWITCHYARD_BIN" --version))" <<'PY'
import json, statistics, subprocess, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
ratios = [r["ratio"] for r in rows]
failed = sum(r[k]["failed"] for r in rows for k in ("on", "off"))
git = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True).stdout.strip()
result = {"git": git, "gateway": sys.argv[5], "rounds": int(sys.argv[3]), "duration_s": int(sys.argv[4]),
          "ratio_median": statistics.median(ratios), "ratio_min": min(ratios),
          "ratio_max": max(ratios), "failed": failed, "rows": rows}
json.dump(result, open(sys.argv[2], "w"), indent=1)
print(f"access log on ÷ off, CPU per request, {len(rows)} paired rounds: "
      f"{result['ratio_median']:.3f} ({min(ratios):.3f}–{max(ratios):.3f}); failed requests {failed}")
print(f"written {sys.argv[2]}")
sys.exit(1 if failed else 0)
PY
