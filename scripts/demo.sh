#!/usr/bin/env bash
# The main job on embedded defaults: build a sample image (Debian bookworm minbase + python3
# as a base layer, a small app layer), push it to a registry on loopback, index it from the
# registry with `soci create`, `soci push` the index, list it remotely, `soci convert` the
# image (v2), extract a file through its zTOC with HTTP Range reads, start it lazily with
# `soci mount` and through containerd (soci-snapshotter-grpc + `soci image rpull` + `ctr run`)
# against full pulls, and print the numbers.
#
#   DEMO_WORK=DIR   where the sample image and store live (default: ./bench/work/demo)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
work="${DEMO_WORK:-$PWD/bench/work/demo}"
mkdir -p "$work"
cargo build --release -q -p soci-cli -p soci-snapshotter
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

# A registry on loopback (Debian's docker-registry, distribution 2.8), stopped on exit.
. scripts/lib-registry.sh
start_registry "$work/registry"
ref="$REGISTRY_ADDR/demo/python:latest"
echo "== skopeo copy oci:$work/image:latest docker://$ref" >&2
skopeo copy -q --dest-tls-verify=false "oci:$work/image:latest" "docker://$ref"

now() { date +%s.%N; }
echo "== plain pull for comparison: skopeo copy docker://$ref oci:$work/pulled" >&2
rm -rf "$work/pulled"
p_start=$(now)
skopeo copy -q --src-tls-verify=false "docker://$ref" "oci:$work/pulled:latest"
p_end=$(now)

echo "== soci create $ref (each layer streamed from the registry once; no image data stored)" >&2
start=$(now)
"$soci" --root "$root" create "$ref"
end=$(now)
echo
echo "== soci push $ref" >&2
"$soci" --root "$root" push "$ref"
echo
echo "== soci index list --remote $ref" >&2
"$soci" --root "$root" index list --remote "$ref"
echo
echo "== soci convert $ref ${ref%:latest}:latest-soci (SOCI index manifest v2)" >&2
"$soci" --root "$root" convert "$ref" "${ref%:latest}:latest-soci"
echo
"$soci" --root "$root" index list
echo
ztoc=$("$soci" --root "$root" ztoc list -q | head -n 1)
echo "== soci ztoc info $ztoc (summary)"
"$soci" --root "$root" ztoc info "$ztoc" | jq '{version, build_tool, size, span_size, num_spans, num_files, num_multi_span_files}'
echo "== soci ztoc get-file $ztoc usr/bin/python3.11 (spans fetched from the registry with HTTP Range)"
"$soci" --root "$root" ztoc get-file --stats "$ztoc" usr/bin/python3.11 -o "$work/python3.11"
cmp "$work/python3.11" "$work/rootfs/usr/bin/python3.11" && echo "extracted file matches the original byte for byte"

# Lazy start: mount the image from the registry and run its program in a chroot, against a
# full pull (skopeo copy) plus unpack (umoci) and the same run. Both start from nothing local.
mnt="$work/mnt"
mkdir -p "$mnt"
"$soci" --root "$root" unmount --force "$mnt" >/dev/null 2>&1 || true
rm -rf "$root/cache" "$work/full"
echo
echo "== lazy start: soci mount $ref $mnt && chroot $mnt python3 /app/app.py" >&2
l_start=$(now)
"$soci" --root "$root" mount --no-background-fetch "$ref" "$mnt"
chroot "$mnt" python3 /app/app.py
l_end=$(now)
"$soci" --root "$root" mount --stats "$mnt"
"$soci" --root "$root" unmount "$mnt" >/dev/null
echo "== full pull for comparison: skopeo copy + umoci unpack + the same run" >&2
mkdir -p "$work/full"
f_start=$(now)
skopeo copy -q --src-tls-verify=false "docker://$ref" "oci:$work/full/image:latest"
umoci unpack --image "$work/full/image:latest" "$work/full/bundle" >/dev/null
chroot "$work/full/bundle/rootfs" python3 /app/app.py
f_end=$(now)
rm -rf "$work/full"

# Lazy start through containerd: soci-snapshotter-grpc as containerd's proxy snapshotter,
# `soci image rpull` + `ctr run` of the v2 image against `ctr images pull` + `ctr run` on
# overlayfs, three rounds each, alternating, every round from nothing local.
echo
echo "== through containerd: soci image rpull + ctr run --snapshotter soci vs ctr images pull + ctr run" >&2
BENCH_WORK="$work/containerd" bench/containerd-start.sh "${ref%:latest}:latest-soci" "$ref" 3 \
    python3 /app/app.py | tee "$work/containerd.txt"

# Numbers: index build against a plain pull and against decompressing the same layers.
layers=$("$soci" --root "$root" ztoc list | awk 'NR>1 {print $3}' | sort -u)
gz_start=$(now)
for l in $layers; do gzip -dc "$work/image/blobs/sha256/${l#sha256:}" >/dev/null; done
gz_end=$(now)
python3 - "$start" "$end" "$p_start" "$p_end" "$gz_start" "$gz_end" "$l_start" "$l_end" "$f_start" "$f_end" <<'PY'
import sys
s, e, ps, pe, gs, ge, ls, le, fs, fe = map(float, sys.argv[1:])
print(f"\ntime to ready, lazy (soci mount + python3 in a chroot): {le - ls:.2f} s")
print(f"time to ready, full pull + unpack + the same run:       {fe - fs:.2f} s   lazy/full {(le - ls) / (fe - fs):.2f}x")
print(f"\nsoci create from the registry (all layers):   {e - s:.2f} s")
print(f"skopeo copy of the same image (plain pull):   {pe - ps:.2f} s   soci/skopeo {(e - s) / (pe - ps):.2f}x")
print(f"gzip -dc of the indexed layers, one by one:   {ge - gs:.2f} s   soci/gzip {(e - s) / (ge - gs):.2f}x")
PY
echo
tail -n 3 "$work/containerd.txt"
