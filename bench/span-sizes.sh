#!/usr/bin/env bash
# Span-size trade-off from the read ranges bench/start.sh recorded (`soci optimize
# --record-read-ranges`): for each workload, the bytes a lazy start moves (zTOCs + spans
# holding the bytes read), with whole and with lean zTOCs, at 256 KiB to 8 MiB spans.
# Exact byte counts from zTOCs built locally; no network, no root. Writes
# bench/results/span-sizes.md.
#
#   bench/span-sizes.sh [WORK_DIR]     (default: bench/work/start, as bench/start.sh leaves it)
set -euo pipefail
cd "$(dirname "$0")/.."
work="${1:-$PWD/bench/work/start}"
cargo build --release -q -p soci-bench
tool="$PWD/target/release/span-sizes-bench"
out=bench/results/span-sizes.md
mkdir -p bench/results

# Layer blobs of a layout's (first) image, bottom layer first.
layers_of() {
    /usr/bin/python3 - "$1" <<'PY'
import json, os, sys
d = sys.argv[1]
def blob(digest):
    return os.path.join(d, "blobs", *digest.split(":", 1))
m = json.load(open(os.path.join(d, "index.json")))["manifests"][0]
doc = json.load(open(blob(m["digest"])))
if "manifests" in doc:
    doc = json.load(open(blob(doc["manifests"][0]["digest"])))
print("\n".join(blob(l["digest"]) for l in doc["layers"]))
PY
}

{
    echo "# Span size: bytes a lazy start moves"
    echo
    echo "\`bench/span-sizes.sh\` on $(date -u +%F). For each span size, the zTOCs of the workload's"
    echo "layers are built locally and the compressed bytes of every span holding a byte of a file"
    echo "the workload read are added up (byte ranges recorded by \`soci optimize"
    echo "--record-read-ranges\` in \`bench/start.sh\`, kernel readahead included; files up to 1 MiB"
    echo "count whole, as the reader fetches them). \"lean\": the lean zTOCs plus the windows a"
    echo "reader must fetch, instead of the whole zTOCs."
    echo "Exact byte counts, no network. \"read\" counts uncompressed bytes; \"moved\" is compressed,"
    echo "so a compressible read set can move less than it reads."
    found=0
    for ranges in "$work"/*.ranges.json; do
        [ -e "$ranges" ] || continue
        name=$(basename "$ranges" .ranges.json)
        layout="$work/workloads/$name"
        [ -d "$layout" ] || continue
        found=1
        mapfile -t layers < <(layers_of "$layout")
        echo
        echo "## $name"
        echo
        "$tool" --ranges "$ranges" "${layers[@]}"
    done
    [ "$found" = 1 ] || { echo "no read ranges under $work: run bench/start.sh first" >&2; exit 1; }
} >"$out.tmp"
mv "$out.tmp" "$out"
cat "$out"
