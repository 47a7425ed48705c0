#!/usr/bin/env bash
# Index-build benchmark: two ~500 MB gzip layers built from /usr, then
# `index-build-bench` times zTOC builds against `gzip -dc` side by side.
# Output: a markdown table on stdout (also written to bench/results/index-build.md).
set -euo pipefail
cd "$(dirname "$0")/.."
work="${BENCH_WORK:-bench/work}"
size_mb="${LAYER_MB:-1200}"   # uncompressed; /usr content gzips to roughly 40%
mkdir -p "$work" bench/results
for i in 1 2; do
    if [ ! -s "$work/layer$i.tar.gz" ]; then
        echo "building $work/layer$i.tar.gz (${size_mb} MB of /usr, gzip -6)" >&2
        python3 bench/make-layer.py "$work/layer$i.tar" "$size_mb" /usr $(( (i - 1) * 40000 ))
        gzip -6 -n -f "$work/layer$i.tar"
    fi
done
cargo build --release -q -p soci-bench
target/release/index-build-bench --runs "${RUNS:-3}" "$work/layer1.tar.gz" "$work/layer2.tar.gz" \
    | tee bench/results/index-build.md
