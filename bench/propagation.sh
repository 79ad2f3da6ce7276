#!/usr/bin/env bash
# How fast a change made on one gateway is live on the others when several
# share one PostgreSQL (see BENCHMARKS.md, "Several gateways"): a throwaway
# Debian PostgreSQL (.ci/postgres.sh), 3 gateways on it with 10,000 routes,
# 300 new routes posted in turn on each node, each timed from the writer's
# answer until every other node proxies it.
# Usage: bench/propagation.sh [--smoke] [--nodes N] [--routes N]
#                             [--changes N] [--rounds N] [--no-build]
set -euo pipefail
cd "$(dirname "$0")/.."
args=()
BUILD=1
OUT=bench/results/$(date -u +%Y%m%dT%H%M%SZ)-propagation.json
while (($#)); do
  case $1 in
    --smoke) args+=(--routes 1000 --changes 30); OUT= ;;
    --nodes|--routes|--changes|--rounds) args+=("$1" "$2"); shift ;;
    --no-build) BUILD=0 ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) echo "propagation.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
((BUILD)) && cargo build --release --bin switchyard
target=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
[[ -n $OUT ]] && mkdir -p bench/results && args+=(--out "$OUT")
bash .ci/postgres.sh -- python3 -u bench/propagation.py --binary "$target/release/switchyard" "${args[@]}"
