#!/usr/bin/env bash
# Fuzz the hand-written protocol code (fuzz/: the inline server's request
# heads, the inline client's response heads, the chunked decoder, the path
# normaliser, and the inline parser against hyper's server) for a bounded
# time per target, starting from the committed seed corpus; fail on any
# crash or broken invariant. cargo-fuzz needs unstable compiler flags
# (sanitizers): the stable toolchain gives them with RUSTC_BOOTSTRAP=1.
#
# Tunables (environment):
#   FUZZ_SECONDS   seconds per target (default 40)
#   FUZZ_TARGETS   space-separated targets (default: all)
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

seconds=${FUZZ_SECONDS:-40}
targets=${FUZZ_TARGETS:-"request_head response_head chunked path inline_vs_hyper"}

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked --quiet
fi
export RUSTC_BOOTSTRAP=1

echo "== cargo fuzz build"
cargo fuzz build -O

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for target in $targets; do
    # libFuzzer writes what it finds into the first corpus directory: a
    # scratch copy, so the committed seeds stay as they are.
    mkdir -p "$work/$target"
    cp corpus/"$target"/* "$work/$target/"
    echo "== fuzz $target for ${seconds}s"
    if ! cargo fuzz run -O "$target" "$work/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
        >"$work/$target.log" 2>&1; then
        tail -n 40 "$work/$target.log"
        echo "fuzz target $target failed: the input is in fuzz/artifacts/$target/"
        exit 1
    fi
    grep -E "^(Done|stat::number_of_executed_runs)" "$work/$target.log" || true
done
echo "fuzz: no crash in $targets"
