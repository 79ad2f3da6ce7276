# Shared helpers for bench/run.sh and bench/reconfig.sh (sourced, not run).
# Every process started here is recorded in BENCH_PIDS and stopped by PID
# in bench_cleanup (installed as an EXIT/INT/TERM trap by the callers).

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(dirname "$BENCH_DIR")
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO_ROOT/target}
# BENCH_SWITCHYARD_BIN: measure this prebuilt gateway binary instead of building one.
SWITCHYARD_BIN=${BENCH_SWITCHYARD_BIN:-$TARGET_DIR/release/switchyard}
BACKEND_BIN=$TARGET_DIR/release/bench-backend
FLOOR_BIN=$TARGET_DIR/release/bench-floor
TLS_LOAD_BIN=$TARGET_DIR/release/bench-tls-load
RATE_LOAD_BIN=$TARGET_DIR/release/bench-rate-load
PORT_BASE=${BENCH_PORT_BASE:-19080}
BACKEND_PORT=$PORT_BASE
NGINX_PORT=$((PORT_BASE + 1))
HAPROXY_PORT=$((PORT_BASE + 2))
SY_PORT=$((PORT_BASE + 3))
SY_ADMIN_PORT=$((PORT_BASE + 4))
BACKEND2_PORT=$((PORT_BASE + 5))
# A second Switchyard, identical but for --no-inline-server (hyper's server
# takes every request): what the inline server gains, in the same rounds.
SY_BARE_PORT=$((PORT_BASE + 6))
SY_BARE_ADMIN_PORT=$((PORT_BASE + 7))
# bench/floor (run.sh --floor): a proxy that does nothing but parse and pass
# on heads, on the same runtime: the floor for any proxy built like ours.
FLOOR_PORT=$((PORT_BASE + 8))
# The defaults users run: nginx with its default access_log (combined, to a
# file) and Switchyard with its access log on, to a file.
NGINX_LOG_PORT=$((PORT_BASE + 9))
SY_LOG_PORT=$((PORT_BASE + 10))
SY_LOG_ADMIN_PORT=$((PORT_BASE + 11))
# TLS 1.3 on both, one certificate (ECDSA P-256): HTTPS keep-alive, a
# handshake per request, HTTP/2 with 10 streams per connection.
NGINX_TLS_PORT=$((PORT_BASE + 12))
SY_TLS_PORT=$((PORT_BASE + 13))
SY_TLS_ADMIN_PORT=$((PORT_BASE + 14))
# bench/scale.sh's gateway metrics listener (its proxy and admin ports are
# Switchyard's).
SY_METRICS_PORT=$((PORT_BASE + 15))
# CPU layout (BENCH-NOTES.md): proxy alone on PROXY_CPU, wrk + backend on LOAD_CPU.
PROXY_CPU=${BENCH_PROXY_CPU:-0}
LOAD_CPU=${BENCH_LOAD_CPU:-1}
BENCH_PIDS=()
BENCH_TMP=

log() { printf '[bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

bench_tmp() {
  if [[ -z $BENCH_TMP ]]; then
    BENCH_TMP=$(mktemp -d /tmp/switchyard-bench.XXXXXX)
  fi
}

# Stop every process started so far: TERM, up to 5 s, then KILL.
stop_all() {
  local pid
  for pid in "${BENCH_PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${BENCH_PIDS[@]}"; do
    for _ in $(seq 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  BENCH_PIDS=()
}

bench_cleanup() {
  local rc=$?
  stop_all
  if [[ -n $BENCH_TMP && -d $BENCH_TMP ]]; then
    if [[ $rc -eq 0 && -z ${BENCH_KEEP_TMP:-} ]]; then
      rm -rf "$BENCH_TMP"
    else
      log "logs kept in $BENCH_TMP"
    fi
  fi
  return $rc
}

as_root() {
  if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi
}

# Install nginx-light, haproxy, wrk (and curl, python3) from Debian when
# missing, without letting the packages start their services.
# bench_start INSTALL BUILD: what a bench script does before it starts
# peers: cleanup on exit, dependencies and the build (each unless 0), a
# temp dir, the open-files limit raised.
bench_start() {
  trap bench_cleanup EXIT
  trap 'exit 130' INT TERM
  (($1)) && install_deps
  (($2)) && build_all
  bench_tmp
  ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
}

install_deps() {
  local missing=()
  command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || missing+=(nginx-light)
  command -v haproxy >/dev/null || [[ -x /usr/sbin/haproxy ]] || missing+=(haproxy)
  command -v wrk >/dev/null || missing+=(wrk)
  command -v curl >/dev/null || missing+=(curl)
  command -v python3 >/dev/null || missing+=(python3)
  command -v taskset >/dev/null || missing+=(util-linux)
  command -v h2load >/dev/null || missing+=(nghttp2-client)
  command -v openssl >/dev/null || missing+=(openssl)
  ((${#missing[@]} == 0)) && return 0
  log "installing from Debian: ${missing[*]}"
  local had_policy=0
  [[ -e /usr/sbin/policy-rc.d ]] && had_policy=1
  if ((had_policy == 0)); then
    printf '#!/bin/sh\nexit 101\n' | as_root tee /usr/sbin/policy-rc.d >/dev/null
    as_root chmod +x /usr/sbin/policy-rc.d
  fi
  local rc=0
  as_root apt-get update -qq || rc=$?
  if ((rc == 0)); then
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || rc=$?
  fi
  ((had_policy == 0)) && as_root rm -f /usr/sbin/policy-rc.d
  ((rc == 0)) || die "apt-get failed ($rc)"
}

build_all() {
  if [[ -z ${BENCH_SWITCHYARD_BIN:-} ]]; then
    log "cargo build --release (gateway, target $TARGET_DIR)"
    (cd "$REPO_ROOT" && CARGO_TARGET_DIR=$TARGET_DIR cargo build --release --quiet)
  fi
  log "cargo build --release (bench/backend)"
  CARGO_TARGET_DIR=$TARGET_DIR cargo build --release --quiet --locked \
    --manifest-path "$BENCH_DIR/backend/Cargo.toml"
  log "cargo build --release (bench/tls-load)"
  CARGO_TARGET_DIR=$TARGET_DIR cargo build --release --quiet --locked \
    --manifest-path "$BENCH_DIR/tls-load/Cargo.toml"
  log "cargo build --release (bench/rate-load)"
  CARGO_TARGET_DIR=$TARGET_DIR cargo build --release --quiet --locked \
    --manifest-path "$BENCH_DIR/rate-load/Cargo.toml"
  [[ -x $SWITCHYARD_BIN && -x $BACKEND_BIN && -x $TLS_LOAD_BIN && -x $RATE_LOAD_BIN ]] ||
    die "build outputs missing"
}

build_floor() {
  log "cargo build --release (bench/floor)"
  CARGO_TARGET_DIR=$TARGET_DIR cargo build --release --quiet --locked \
    --manifest-path "$BENCH_DIR/floor/Cargo.toml"
  [[ -x $FLOOR_BIN ]] || die "build output missing: $FLOOR_BIN"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {
  local port=$1 pid=$2 name=$3
  for _ in $(seq 200); do
    port_open "$port" && return 0
    kill -0 "$pid" 2>/dev/null || die "$name exited during start (see $BENCH_TMP)"
    sleep 0.05
  done
  die "$name did not listen on port $port"
}

check_ports_free() {
  local p
  for p in "$@"; do
    port_open "$p" && die "port $p is already in use (set BENCH_PORT_BASE)"
  done
  return 0
}

# start_bg NAME CPU CMD... : start pinned, record PID in BENCH_PIDS and in
# the variable PID_<NAME>.
start_bg() {
  local name=$1 cpu=$2
  shift 2
  taskset -c "$cpu" "$@" >"$BENCH_TMP/$name.log" 2>&1 &
  local pid=$!
  BENCH_PIDS+=("$pid")
  printf -v "PID_$name" '%s' "$pid"
}

start_backend() { # NAME PORT
  start_bg "$1" "$LOAD_CPU" "$BACKEND_BIN" "127.0.0.1:$2"
  local v="PID_$1"
  wait_port "$2" "${!v}" "$1"
}

start_floor() {
  start_bg floor "$PROXY_CPU" "$FLOOR_BIN" "127.0.0.1:$FLOOR_PORT" "127.0.0.1:$BACKEND_PORT"
  wait_port "$FLOOR_PORT" "$PID_floor" floor
}

# start_nginx [NAME PORT ACCESS_LOG [CERT KEY]]: ACCESS_LOG "off" (the
# default, as BENCH-NOTES.md's fair config) or "file": nginx's default
# access_log (combined format, one write per request, no buffer) to a file.
# With CERT and KEY: TLS 1.3 only, HTTP/2 and HTTP/1.1 (ALPN).
start_nginx() {
  local name=${1:-nginx} port=${2:-$NGINX_PORT} access=${3:-off} cert=${4:-} key=${5:-}
  local dir=$BENCH_TMP/$name
  local access_log="access_log off;" listen="listen 127.0.0.1:$port backlog=4096;"
  [[ $access == file ]] && access_log="access_log $dir/access.log;"
  [[ -n $cert ]] && listen="listen 127.0.0.1:$port ssl http2 backlog=4096;
    ssl_certificate $cert; ssl_certificate_key $key; ssl_protocols TLSv1.3;"
  mkdir -p "$dir"
  cat >"$dir/nginx.conf" <<CONF
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 16384; }
http {
  $access_log
  keepalive_requests 1000000;
  client_body_temp_path $dir/body;
  proxy_temp_path $dir/proxy;
  upstream backend { server 127.0.0.1:$BACKEND_PORT; keepalive 256;
                     keepalive_requests 1000000; keepalive_timeout 60s; }
  server { $listen
    location / { proxy_pass http://backend; proxy_http_version 1.1;
                 proxy_set_header Connection ""; } } }
CONF
  # One process (no master): the worker is the PID we pin and measure.
  start_bg "$name" "$PROXY_CPU" /usr/sbin/nginx -p "$dir" -e "$dir/error.log" \
    -c "$dir/nginx.conf" -g 'daemon off; master_process off;'
  local v="PID_$name"
  wait_port "$port" "${!v}" "$name"
}

start_haproxy() {
  cat >"$BENCH_TMP/haproxy.cfg" <<CONF
global
    nbthread 1
    maxconn 8000
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    option http-keep-alive
    http-reuse safe
frontend fe
    bind 127.0.0.1:$HAPROXY_PORT
    default_backend be
backend be
    server s1 127.0.0.1:$BACKEND_PORT
CONF
  start_bg haproxy "$PROXY_CPU" /usr/sbin/haproxy -db -f "$BENCH_TMP/haproxy.cfg"
  wait_port "$HAPROXY_PORT" "$PID_haproxy" haproxy
}

# start_switchyard [NAME PORT ADMIN_PORT EXTRA_ARGS...]: one worker, no
# access log (like the nginx config) unless EXTRA_ARGS has --access-log,
# everything else as shipped.
start_switchyard() {
  local name=${1:-switchyard} port=${2:-$SY_PORT} admin_port=${3:-$SY_ADMIN_PORT}
  (($# >= 3)) && shift 3
  local quiet=(--no-access-log)
  [[ " $* " == *" --access-log "* ]] && quiet=()
  rm -f "$BENCH_TMP/$name".db*
  start_bg "$name" "$PROXY_CPU" env SWITCHYARD_LOG="${SWITCHYARD_LOG:-info}" "$SWITCHYARD_BIN" \
    --proxy-listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin_port" \
    --database-url "sqlite://$BENCH_TMP/$name.db" --workers 1 --drain-seconds 1 "${quiet[@]}" "$@"
  local v="PID_$name"
  wait_port "$admin_port" "${!v}" "$name"
  wait_port "$port" "${!v}" "$name"
}

# admin METHOD PATH [JSON]: call the admin API, fail on a non-2xx answer.
admin() {
  local method=$1 path=$2 body=${3:-}
  local args=(-sS -X "$method" --fail-with-body "http://127.0.0.1:${ADMIN_PORT:-$SY_ADMIN_PORT}$path")
  [[ -n $body ]] && args+=(-H 'content-type: application/json' -d "$body")
  curl "${args[@]}"
}

# bench_route ADMIN_PORT...: each gateway's route `bench` on `/` to the
# backend on BACKEND_PORT.
bench_route() {
  local route="{\"name\":\"bench\",\"path\":\"/\",\"backends\":[{\"url\":\"http://127.0.0.1:$BACKEND_PORT\"}]}"
  local port
  for port in "$@"; do
    ADMIN_PORT=$port admin POST /admin/routes "$route" >/dev/null
  done
}

# wait_proxied PORT PATH [SCHEME]: until a GET answers 200 (max 5 s).
wait_proxied() {
  for _ in $(seq 100); do
    [[ $(curl -sk -o /dev/null -w '%{http_code}' "${3:-http}://127.0.0.1:$1$2") == 200 ]] && return 0
    sleep 0.05
  done
  die "no 200 from ${3:-http}://127.0.0.1:$1$2"
}

# make_cert DIR: DIR/cert.pem and DIR/key.pem, self-signed ECDSA P-256 for
# 127.0.0.1 and localhost.
make_cert() {
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
    -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -keyout "$1/key.pem" -out "$1/cert.pem" 2>/dev/null || die "openssl could not make a certificate"
}

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
