#!/usr/bin/env bash
# Many streams at once: h2load -n 200000 -c 100 -m 100 over TLS (HTTP/2,
# 10,000 requests in flight) through Switchyard to one fast backend. The
# whole load must end with every answer a 2xx: a burst of streams must not
# turn into a storm of backend connections that overflows the backend's
# accept queue and times out on SYN retransmits (issue 16, point 12; see
# transport/pool.rs). Prints h2load's summary and the kernel's listen-queue
# overflow count during the run; exits non-zero on any non-2xx.
#
#   bench/streams.sh [--requests N] [--no-install] [--no-build]
# Env: BENCH_PORT_BASE (default 19080), CARGO_TARGET_DIR, BENCH_KEEP_TMP=1.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

REQUESTS=200000
INSTALL=1
BUILD=1
while (($#)); do
  case $1 in
    --requests) REQUESTS=$2; shift ;;
    --no-install) INSTALL=0 ;;
    --no-build) BUILD=0 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
  shift
done

trap bench_cleanup EXIT
trap 'exit 130' INT TERM

if ((INSTALL)) && ! { command -v h2load >/dev/null && command -v openssl >/dev/null; }; then
  log "installing from Debian: nghttp2-client openssl"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    nghttp2-client openssl >/dev/null
fi
command -v h2load >/dev/null || die "h2load missing (Debian package nghttp2-client)"
((BUILD)) && build_all
bench_tmp
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
check_ports_free "$BACKEND_PORT" "$SY_PORT" "$SY_ADMIN_PORT"

openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost \
  -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
  -keyout "$BENCH_TMP/key.pem" -out "$BENCH_TMP/cert.pem" 2>/dev/null

# Unpinned, default workers: this checks answers, not speed.
start_bg backend "0-$(($(nproc) - 1))" "$BACKEND_BIN" "127.0.0.1:$BACKEND_PORT"
wait_port "$BACKEND_PORT" "$PID_backend" backend
start_bg switchyard "0-$(($(nproc) - 1))" env SWITCHYARD_LOG=warn "$SWITCHYARD_BIN" \
  --proxy-listen "127.0.0.1:$SY_PORT" --admin-listen "127.0.0.1:$SY_ADMIN_PORT" \
  --database-url "sqlite://$BENCH_TMP/streams.db" --drain-seconds 1 --no-access-log \
  --tls-cert "$BENCH_TMP/cert.pem" --tls-key "$BENCH_TMP/key.pem"
wait_port "$SY_ADMIN_PORT" "$PID_switchyard" switchyard
wait_port "$SY_PORT" "$PID_switchyard" switchyard
admin POST /admin/routes "{\"name\":\"bench\",\"path\":\"/\",\"backends\":[{\"url\":\"http://127.0.0.1:$BACKEND_PORT\"}]}" >/dev/null

overflows() { nstat -az TcpExtListenOverflows 2>/dev/null | awk '/ListenOverflows/ {print $2}'; }
before=$(overflows || true)
log "h2load -n $REQUESTS -c 100 -m 100 https://127.0.0.1:$SY_PORT/"
h2load -n "$REQUESTS" -c 100 -m 100 "https://127.0.0.1:$SY_PORT/" >"$BENCH_TMP/h2load.txt" 2>&1 || true
after=$(overflows || true)
grep -E "^(finished|requests|status codes|time for request)" "$BENCH_TMP/h2load.txt"
[[ -n $before && -n $after ]] && echo "listen queue overflows during the run: $((after - before))"

read -r ok bad < <(awk '/^status codes:/ {gsub(",", ""); print $3, $5 + $7 + $9}' "$BENCH_TMP/h2load.txt")
done_n=$(awk '/^requests:/ {print $8}' "$BENCH_TMP/h2load.txt")
if [[ ${ok:-0} != "$REQUESTS" || ${bad:-1} != 0 || ${done_n:-0} != "$REQUESTS" ]]; then
  curl -s "http://127.0.0.1:$SY_ADMIN_PORT/metrics" | grep -E '^switchyard_(requests|upstream_errors)_total' >&2 || true
  die "not every request got a 2xx: ${ok:-?} 2xx of $REQUESTS, ${bad:-?} other"
fi
log "all $REQUESTS answers 2xx"
