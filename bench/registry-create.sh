#!/usr/bin/env bash
# `soci create` from a registry against a plain pull of the same image, side by side.
# The image: the demo's Debian+python3 image (scripts/demo.sh builds it) plus, with
# BIG_MB=N (default 1200; 0 skips it), an image of two ~N MB /usr layers built here.
# Each run alternates: skopeo copy docker://REF oci:TMP (plain pull), soci create REF
# (fresh store), soci create oci:LAYOUT (fresh store). Medians of RUNS (default 3).
# Output: a markdown table on stdout and in bench/results/registry-create.md.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
work="${BENCH_WORK:-$PWD/bench/work}"
runs="${RUNS:-3}"
big_mb="${BIG_MB:-1200}"
mkdir -p "$work" bench/results
cargo build --release -q -p soci-cli
soci="$PWD/target/release/soci"

images=()
if [ -s "$work/demo/image/index.json" ]; then
    images+=("demo/python=$work/demo/image:latest")
else
    echo "no demo image yet (run scripts/demo.sh once); measuring the big image only" >&2
fi
if [ "$big_mb" -gt 0 ]; then
    big="$work/big-image"
    if [ ! -s "$big/index.json" ]; then
        echo "building $big: two ${big_mb} MB layers of /usr (gzip -6)" >&2
        rm -rf "$big" "$work/big-layers"
        mkdir -p "$work/big-layers"
        for i in 1 2; do
            python3 bench/make-layer.py "$work/big-layers/layer$i.tar" "$big_mb" /usr $(( (i - 1) * 40000 ))
        done
        umoci init --layout "$big"
        umoci new --image "$big:latest"
        # umoci writes its own layers; raw layers go in as-is via `umoci raw add-layer`.
        for i in 1 2; do
            umoci raw add-layer --image "$big:latest" "$work/big-layers/layer$i.tar"
        done
        rm -rf "$work/big-layers"
    fi
    images+=("big/usr=$big:latest")
fi

. scripts/lib-registry.sh
start_registry "$work/bench-registry"

now() { date +%s.%N; }
results="$work/registry-create.tsv"
: >"$results"
for entry in "${images[@]}"; do
    name="${entry%%=*}"
    layout="${entry#*=}"
    ref="$REGISTRY_ADDR/$name:latest"
    skopeo copy -q --dest-tls-verify=false "oci:$layout" "docker://$ref"
    for run in $(seq "$runs"); do
        rm -rf "$work/pull-tmp" "$work/store-reg" "$work/store-oci"
        t0=$(now); skopeo copy -q --src-tls-verify=false "docker://$ref" "oci:$work/pull-tmp:latest"; t1=$(now)
        "$soci" --root "$work/store-reg" create "$ref" >/dev/null; t2=$(now)
        "$soci" --root "$work/store-oci" create "oci:$layout" >/dev/null; t3=$(now)
        printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$run" \
            "$t0" "$t1" "$t2" "$t3" >>"$results"
    done
done
rm -rf "$work/pull-tmp" "$work/store-reg" "$work/store-oci"

python3 - "$results" "$runs" <<'PY' | tee bench/results/registry-create.md
import sys, statistics, collections
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    name, run, t0, t1, t2, t3 = line.split("\t")
    t0, t1, t2, t3 = map(float, (t0, t1, t2, t3))
    rows[name].append((t1 - t0, t2 - t1, t3 - t2))
print(f"`soci create` from a loopback registry vs a plain pull (`skopeo copy docker:// oci:`), medians of {sys.argv[2]}, alternated in one run\n")
print("| image | skopeo copy (s) | soci create REF (s) | soci create oci:DIR (s) | create REF / pull |")
print("|---|---:|---:|---:|---:|")
for name, v in rows.items():
    pull, reg, oci = (statistics.median(x) for x in zip(*v))
    print(f"| {name} | {pull:.2f} | {reg:.2f} | {oci:.2f} | {reg / pull:.2f}x |")
PY
