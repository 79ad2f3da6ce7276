#!/usr/bin/env bash
# A throwaway PostgreSQL for the shared-store tests (several gateways on
# one database): Debian's package, installed if missing; a new cluster in
# a temporary directory, run as the `postgres` user (initdb refuses root)
# on a free loopback port; the command; then the cluster is stopped
# (pg_ctl, by its PID file) and its directory removed.
#
#   bash .ci/postgres.sh               # the shared-store e2e tests and the
#                                      # store's own PostgreSQL tests
#   bash .ci/postgres.sh -- CMD ARGS   # CMD with the database's URL in
#                                      # $SWITCHYARD_TEST_POSTGRES
#
# The tests also get $SWITCHYARD_TEST_PG_CTL, the pg_ctl command of the
# cluster, to stop and start the database under running gateways, and
# $SWITCHYARD_TEST_POSTGRES_CA, the CA of the server's TLS certificate.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || ! command -v openssl >/dev/null; then
    echo "== installing from Debian: postgresql, openssl (PostgreSQL's own service is kept from starting)"
    SUDO=""
    [[ $(id -u) -eq 0 ]] || SUDO="sudo"
    had_policy=0
    [[ -e /usr/sbin/policy-rc.d ]] && had_policy=1
    if ((had_policy == 0)); then
        printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
        $SUDO chmod +x /usr/sbin/policy-rc.d
    fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends postgresql openssl >/dev/null
    ((had_policy == 1)) || $SUDO rm -f /usr/sbin/policy-rc.d
fi
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)

# In /tmp, which the postgres user can reach (a $TMPDIR under /root it cannot).
dir=$(mktemp -d /tmp/switchyard-pg.XXXXXX)
if [ "$(id -u)" = 0 ]; then
    chown postgres: "$dir"
    as_postgres=(runuser -u postgres --)
else
    as_postgres=()
fi
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
pg_ctl="$bin/pg_ctl -D $dir/data -l $dir/server.log -w -t 60"

stop() {
    "${as_postgres[@]}" $pg_ctl stop -m fast >/dev/null 2>&1 || true
    rm -rf "$dir"
}
trap stop EXIT

"${as_postgres[@]}" "$bin/initdb" -D "$dir/data" -A trust -U postgres -E UTF8 >/dev/null
# TLS too (plain connections still work): a test CA and a certificate for
# 127.0.0.1, so a URL's sslmode/sslrootcert can be tried for real.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj "/CN=Switchyard test CA" -keyout "$dir/ca.key" -out "$dir/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=127.0.0.1" \
    -keyout "$dir/server.key" -out "$dir/server.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >"$dir/server.ext"
openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial \
    -days 2 -extfile "$dir/server.ext" -out "$dir/server.crt" 2>/dev/null
chmod 600 "$dir/server.key"
if [ "$(id -u)" = 0 ]; then chown postgres: "$dir/server.key" "$dir/server.crt"; fi
chmod 644 "$dir/ca.pem"
cat >>"$dir/data/postgresql.conf" <<EOF
port = $port
listen_addresses = '127.0.0.1'
unix_socket_directories = '$dir'
max_connections = 200
ssl = on
ssl_cert_file = '$dir/server.crt'
ssl_key_file = '$dir/server.key'
EOF
"${as_postgres[@]}" $pg_ctl start >/dev/null
echo "PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$port ($dir)"

export SWITCHYARD_TEST_POSTGRES="postgres://postgres@127.0.0.1:$port/postgres"
export SWITCHYARD_TEST_PG_CTL="${as_postgres[*]} $pg_ctl"
export SWITCHYARD_TEST_POSTGRES_CA="$dir/ca.pem"

if [ "${1:-}" = "--" ]; then
    shift
    "$@"
else
    timeout 900 cargo test --test e2e shared_store -- --ignored --test-threads=1
    # The store's own PostgreSQL tests (its SQL where the two databases differ).
    timeout 300 cargo test -p control-plane --lib postgres_ -- --ignored
fi
