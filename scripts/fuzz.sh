#!/usr/bin/env bash
# Runs every fuzz target for N seconds (default 20) with cargo-fuzz (libFuzzer + ASan).
# Seeds come from fuzz/seeds/<target>; findings fail the run.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${1:-20}"

if ! command -v cargo-fuzz >/dev/null 2>&1; then
    cargo install --locked cargo-fuzz >/dev/null
fi
# cargo-fuzz needs nightly compiler flags; use a nightly toolchain when one is installed,
# otherwise let the stable compiler accept them.
toolchain=()
if rustup run nightly rustc --version >/dev/null 2>&1; then
    toolchain=(+nightly)
else
    export RUSTC_BOOTSTRAP=1
fi

cargo "${toolchain[@]}" fuzz build >/dev/null
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for target in $(cargo "${toolchain[@]}" fuzz list); do
    mkdir -p "corpus/$target"
    seeds=()
    [ -d "seeds/$target" ] && seeds=("seeds/$target")
    if ! cargo "${toolchain[@]}" fuzz run "$target" "corpus/$target" "${seeds[@]}" -- \
        -max_total_time="$seconds" -rss_limit_mb=4096 >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        echo "fuzz target $target failed: see fuzz/artifacts/$target" >&2
        exit 1
    fi
    echo "fuzz $target: $(grep -Eo '^#[0-9]+' "$log" | tail -n 1 | tr -d '#') runs in ${seconds}s, no crash" >&2
done
