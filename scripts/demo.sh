#!/usr/bin/env bash
# The main job on embedded defaults: build a sample image (Debian bookworm minbase + python3
# as a base layer, a small app layer) as an OCI layout, index it with `soci create`, list
# and inspect the index, extract a file through its zTOC, and print the numbers.
#
#   DEMO_WORK=DIR   where the sample image and store live (default: ./bench/work/demo)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
work="${DEMO_WORK:-$PWD/bench/work/demo}"
mkdir -p "$work"
cargo build --release -q -p soci-cli
soci="$PWD/target/release/soci"
root="$work/store"

if [ ! -s "$work/image/index.json" ]; then
    if [ ! -x "$work/rootfs/usr/bin/python3" ]; then
        echo "== debootstrap bookworm minbase + python3 (about a minute)" >&2
        rm -rf "$work/rootfs"
        debootstrap --variant=minbase --include=python3 bookworm "$work/rootfs" >"$work/debootstrap.log" 2>&1 \
            || { tail -n 20 "$work/debootstrap.log" >&2; exit 1; }
    fi
    echo "== building OCI layout $work/image (umoci)" >&2
    rm -rf "$work/image"
    umoci init --layout "$work/image"
    umoci new --image "$work/image:latest"
    umoci insert --image "$work/image:latest" "$work/rootfs" /
    mkdir -p "$work/app"
    printf 'import json, sys\nprint("ready", sys.version.split()[0])\n' >"$work/app/app.py"
    umoci insert --image "$work/image:latest" "$work/app" /app
    umoci config --image "$work/image:latest" --config.cmd python3 --config.cmd /app/app.py \
        --os linux --architecture amd64
fi

rm -rf "$root"
echo "== soci create oci:$work/image:latest" >&2
start=$(date +%s.%N)
"$soci" --root "$root" create "oci:$work/image:latest"
end=$(date +%s.%N)
echo
"$soci" --root "$root" index list
echo
"$soci" --root "$root" ztoc list
ztoc=$("$soci" --root "$root" ztoc list -q | head -n 1)
echo
echo "== soci ztoc info $ztoc (summary)"
"$soci" --root "$root" ztoc info "$ztoc" | jq '{version, build_tool, size, span_size, num_spans, num_files, num_multi_span_files}'
echo "== soci ztoc get-file $ztoc usr/bin/python3.11"
"$soci" --root "$root" ztoc get-file --stats "$ztoc" usr/bin/python3.11 -o "$work/python3.11"
cmp "$work/python3.11" "$work/rootfs/usr/bin/python3.11" && echo "extracted file matches the original byte for byte"

# Numbers: index build time against plain decompression of the same layers.
layers=$("$soci" --root "$root" ztoc list | awk 'NR>1 {print $3}')
gz_start=$(date +%s.%N)
for l in $layers; do gzip -dc "$work/image/blobs/sha256/${l#sha256:}" >/dev/null; done
gz_end=$(date +%s.%N)
python3 - "$start" "$end" "$gz_start" "$gz_end" <<'PY'
import sys
s, e, gs, ge = map(float, sys.argv[1:])
print(f"\nsoci create (all layers, incl. image walk and store writes): {e - s:.2f} s")
print(f"gzip -dc of the indexed layers, sequentially:                 {ge - gs:.2f} s")
print(f"ratio: {(e - s) / (ge - gs):.2f}x")
PY
