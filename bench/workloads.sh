#!/usr/bin/env bash
# Builds the benchmark workload images as OCI image layouts, locally and reproducibly.
#
#   bench/workloads.sh OUT_DIR [NAME...]      (default: all of python-hello datascience model-header)
#
# For each NAME it writes
#   OUT_DIR/NAME        an OCI image layout, tag `latest`, linux/amd64, built with umoci
#                       (init, new, raw add-layer, config, gc; see "Layers" below)
#   OUT_DIR/NAME.cmd    the container command, one JSON array (["python3","/app/app.py"])
#   OUT_DIR/NAME.ready  the exact line the command prints when useful work begins
#   OUT_DIR/NAME.stamp  a hash of the recipe: a workload whose layout exists and whose stamp
#                       matches is reused; editing its recipe (or the shared code) rebuilds it
# and at the end prints per workload its layers, compressed and uncompressed sizes and build time.
#
# Workloads (all on one base layer: Debian bookworm minbase + python3 from debootstrap, apt
# lists and caches removed, as container base images do; built once under OUT_DIR/.cache):
#   python-hello   base + app layer (/app/app.py prints "ready python-hello")
#   datascience    base + 3 layers of pinned PyPI wheels for CPython 3.11 manylinux x86_64
#                  (numerics / dataframes / ml+plots, ~1.4 GB uncompressed in all) + app layer
#                  (pandas DataFrame + sklearn LinearRegression, prints "ready datascience 1.000")
#   model-header   base + one layer holding /model/weights.bin (500,000,000 incompressible,
#                  deterministic pseudo-random bytes) + app layer that hashes only its first 8 MiB
#
# Reproducible: wheels are pinned by version and sha256, files of the layers made here get a
# fixed mtime, .pyc files are compiled as unchecked-hash (no mtimes in them), and layer history
# and config carry a fixed creation time, so those layers have the same digests on every build.
# (The debootstrap base follows the Debian mirror of the day; it is cached, not rebuilt.)
# Layers are tar archives made by GNU tar (POSIX/pax format, names sorted, numeric owners, no
# atime/ctime) and added with `umoci raw add-layer`, which gzips them. Not with `umoci insert`:
# umoci 0.4.7 (Debian 12) never closes the tar writer of an inserted layer, so its layers lack
# the last entry's padding and the end-of-archive blocks (GNU tar: "Unexpected EOF in archive";
# umoci issue #436, fixed upstream in PR #534 after 0.4.7). The summary checks every layer.
# Every image is verified before it is published: unpacked with `umoci unpack` and its command
# run in a chroot, which must print the ready line.
set -euo pipefail
umask 022
export LC_ALL=C

here=$(cd "$(dirname "$0")/.." && pwd)
all_names=(python-hello datascience model-header)
if [ $# -lt 1 ] || [ "$1" = -h ] || [ "$1" = --help ]; then
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
    exit 2
fi
mkdir -p "$1"
out=$(cd "$1" && pwd)
shift
names=("$@")
[ ${#names[@]} -gt 0 ] || names=("${all_names[@]}")
for n in "${names[@]}"; do
    case " ${all_names[*]} " in *" $n "*) ;; *) echo "workloads.sh: unknown workload '$n' (known: ${all_names[*]})" >&2; exit 2;; esac
done

"$here/scripts/install-deps.sh"

cache="$out/.cache"
mkdir -p "$cache"
exec 9>"$out/.lock"
flock -w 1800 9 || { echo "workloads.sh: $out is locked by another build for 30 min; giving up" >&2; exit 1; }

# Fixed creation time for layer contents, history entries and image configs (2024-01-01).
EPOCH=1704067200
CREATED=2024-01-01T00:00:00Z
PYDIST=/usr/local/lib/python3.11/dist-packages

die() { echo "workloads.sh: $*" >&2; exit 1; }
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

# run LOG LIMIT_SECONDS CMD...: runs CMD with its output in LOG, killed after LIMIT_SECONDS;
# on failure says so and shows the tail of LOG.
run() {
    local log=$1 limit=$2 rc=0
    shift 2
    timeout --kill-after=10 "$limit" "$@" >"$log" 2>&1 || rc=$?
    if [ "$rc" -ne 0 ]; then
        if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
            echo "workloads.sh: timed out after ${limit}s: $*" >&2
        else
            echo "workloads.sh: failed (exit $rc): $*" >&2
        fi
        echo "---- last lines of $log:" >&2
        tail -n 30 "$log" >&2
        exit 1
    fi
}

# safe_rm PATH...: unmounts whatever is mounted below PATH (a debootstrap killed half way
# leaves proc/sys mounted in its target) and removes PATH, never crossing into other filesystems.
safe_rm() {
    local p m
    for p in "$@"; do
        [ -e "$p" ] || continue
        p=$(realpath "$p")
        findmnt -rn -o TARGET | awk -v p="$p/" 'index($0, p) == 1' | sort -r | while read -r m; do
            umount -l "$m" || true
        done
        rm -rf --one-file-system "$p"
    done
}

# normalize DIR: every file and directory under DIR gets the fixed mtime.
normalize() { find "$1" -exec touch -h -d "@$EPOCH" {} +; }

# make_tar DIR TAR: a tar of what is in DIR, names relative to it ("usr/...", as in docker
# layers), sorted, numeric owners, no atime/ctime, fixed pax header names: reproducible.
make_tar() {
    local dir=$1 tarfile=$2 top=()
    mapfile -t top < <(cd "$dir" && find . -mindepth 1 -maxdepth 1 -printf '%P\n' | sort)
    [ ${#top[@]} -gt 0 ] || die "nothing in $dir to make a layer of"
    run "$tarfile.log" 900 tar --create --file "$tarfile" --format=posix \
        --pax-option='exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime' \
        --sort=name --numeric-owner -C "$dir" -- "${top[@]}"
}

# add_tar IMG TAR CREATED_BY: TAR becomes the next layer of IMG (gzipped by umoci).
add_tar() {
    run "$2.add.log" 900 umoci raw add-layer --image "$1:latest" \
        --history.created "$CREATED" --history.created_by "$3" "$2"
}

# ---------------------------------------------------------------------------------------------
# The shared base: rootfs (debootstrap) and a one-layer OCI layout made from it.

build_rootfs() { # DIR
    local dir=$1
    run "$cache/debootstrap.log" 900 \
        debootstrap --variant=minbase --include=python3 bookworm "$dir" http://deb.debian.org/debian
    [ -x "$dir/usr/bin/python3" ] || die "debootstrap made no $dir/usr/bin/python3"
    # What container base images drop: apt's package lists and caches (~90 MB).
    rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/*.bin "$dir"/var/cache/apt/archives/*.deb
    mkdir -p "$dir/var/lib/apt/lists/partial"
}

build_base_layout() { # ROOTFS LAYOUT
    local rootfs=$1 img=$2
    umoci init --layout "$img"
    umoci new --image "$img:latest"
    make_tar "$rootfs" "$cache/base.tar"
    add_tar "$img" "$cache/base.tar" "debootstrap --variant=minbase --include=python3 bookworm"
    rm -f "$cache/base.tar"
}

rootfs_stamp() { declare -f build_rootfs | sha256sum | cut -c1-64; }
base_stamp() { { rootfs_stamp; declare -f build_base_layout make_tar add_tar; } | sha256sum | cut -c1-64; }

ensure_base() {
    local stamp t0
    BASE_BUILT=""
    stamp=$(rootfs_stamp)
    if [ ! -x "$cache/rootfs/usr/bin/python3" ] || [ "$(cat "$cache/rootfs.stamp" 2>/dev/null)" != "$stamp" ]; then
        echo "== base rootfs: debootstrap --variant=minbase --include=python3 bookworm (about a minute)" >&2
        t0=$(now)
        safe_rm "$cache/rootfs.tmp" "$cache/rootfs" "$cache/base"
        rm -f "$cache/rootfs.stamp" "$cache/base.stamp"
        build_rootfs "$cache/rootfs.tmp"
        mv "$cache/rootfs.tmp" "$cache/rootfs"
        echo "$stamp" >"$cache/rootfs.stamp"
        BASE_BUILT=1
        echo "   done in $(secs "$t0" "$(now)") s ($(du -sh --apparent-size "$cache/rootfs" | cut -f1))" >&2
    fi
    stamp=$(base_stamp)
    if [ ! -s "$cache/base/index.json" ] || [ "$(cat "$cache/base.stamp" 2>/dev/null)" != "$stamp" ]; then
        echo "== base layout: the rootfs as one layer" >&2
        t0=$(now)
        safe_rm "$cache/base.tmp" "$cache/base"
        build_base_layout "$cache/rootfs" "$cache/base.tmp"
        mv "$cache/base.tmp" "$cache/base"
        echo "$stamp" >"$cache/base.stamp"
        BASE_BUILT=1
        echo "   done in $(secs "$t0" "$(now)") s" >&2
    fi
}

# ---------------------------------------------------------------------------------------------
# Building blocks of the workloads.

# add_layer IMG DIR CREATED_BY: DIR (a tree laid out from /) becomes a new layer of IMG.
add_layer() {
    local img=$1 dir=$2 by=$3 t0
    t0=$(now)
    normalize "$dir"
    make_tar "$dir" "$dir.tar"
    add_tar "$img" "$dir.tar" "$by"
    rm -f "$dir.tar"
    echo "   layer '$by': $(du -sh --apparent-size "$dir" | cut -f1) in $(secs "$t0" "$(now)") s" >&2
}

# add_app IMG WORK: WORK/app.py (written by the recipe) becomes the layer /app/app.py.
add_app() {
    local img=$1 work=$2
    mkdir -p "$work/app-layer/app"
    mv "$work/app.py" "$work/app-layer/app/app.py"
    add_layer "$img" "$work/app-layer" "app: /app/app.py"
}

# The python used for pip and compileall: a venv of the host's Debian python3, which is the
# image's interpreter (3.11), so its .pyc files are the ones the image would write.
host_python() {
    local venv="$cache/venv"
    if [ ! -x "$venv/bin/python" ]; then
        /usr/bin/python3 -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' \
            || die "need the host's /usr/bin/python3 to be 3.11 (the image's python)"
        run "$cache/venv.log" 300 /usr/bin/python3 -m venv "$venv.tmp"
        mv "$venv.tmp" "$venv"
    fi
    echo "$venv/bin/python"
}

# pip_layer WORK LAYER REQS: installs the pinned wheels of REQS (lines "name==version sha256")
# for CPython 3.11 manylinux x86_64 into WORK/LAYER$PYDIST, wheels cached under .cache/pip.
pip_layer() {
    local work=$1 layer=$2 reqs=$3 py target req t0
    t0=$(now)
    py=$(host_python)
    target="$work/$layer$PYDIST"
    req="$work/$layer.txt"
    mkdir -p "$target" "$cache/pip"
    awk 'NF == 2 { print $1 " --hash=sha256:" $2 }' <<<"$reqs" >"$req"
    local plat=(--only-binary=:all: --no-deps --require-hashes --implementation cp --python-version 3.11
                --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64
                --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
    run "$work/$layer.download.log" 900 "$py" -m pip download --disable-pip-version-check -d "$cache/pip" "${plat[@]}" -r "$req"
    run "$work/$layer.install.log" 900 "$py" -m pip install --disable-pip-version-check --no-index \
        --find-links "$cache/pip" --no-compile --target "$target" "${plat[@]}" -r "$req"
    # Console scripts would name the host's python in their #! line; an image has no use for them.
    rm -rf "$target/bin"
    # Byte-compile as pip would, but as unchecked-hash .pyc (no source mtime inside: reproducible).
    # Like pip, accept that a few files (test data, python 2 leftovers) do not compile.
    "$py" -m compileall -q -j 2 --invalidation-mode unchecked-hash -d "$PYDIST" "$target" \
        >"$work/$layer.compile.log" 2>&1 || echo "   note: some files of $layer did not byte-compile (see $work/$layer.compile.log)" >&2
    echo "   pip $layer: $(grep -c . "$req") wheels downloaded (or cached), installed, compiled in $(secs "$t0" "$(now)") s" >&2
}

# ---------------------------------------------------------------------------------------------
# The recipes. Each is called as recipe_NAME IMG WORK, with IMG a copy of the base layout
# and WORK a scratch directory; it adds its layers and sets CMD (array) and READY.

recipe_python_hello() {
    local img=$1 work=$2
    cat >"$work/app.py" <<'EOF'
print("ready python-hello", flush=True)
EOF
    add_app "$img" "$work"
    CMD=(python3 /app/app.py)
    READY="ready python-hello"
}

recipe_datascience() {
    local img=$1 work=$2
    # Pinned wheels (name==version wheel-sha256), the full dependency closure, installed
    # --no-deps with --require-hashes.
    # Resolved once with pip for cp311 manylinux_2_28 x86_64 (numpy, scipy, pandas, pyarrow,
    # scikit-learn, matplotlib, sympy, statsmodels, polars, seaborn, plotly, numba,
    # opencv-python-headless, duckdb); uncompressed sizes are of the installed layers.
    pip_layer "$work" numerics "
numpy==2.4.6 89cd468399cfd2504718f0ba50e410dca55a170b61a02ad92bb18c8a65186e93
scipy==1.17.1 43af8d1f3bea642559019edfe64e9b11192a8978efbd1539d7bc2aaa23d92de4
llvmlite==0.50.0 a6ffde00d4be8772a24e3e8b3af6bf86a79e7cf066d944ef56136b3957d707dc
numba==0.68.1 58fe7a3810261cf13797d8aa94c018cfe91e1e8adf634df60eb60ef834f9367b
"
    add_layer "$img" "$work/numerics" "pip: numpy scipy numba llvmlite"
    safe_rm "$work/numerics"
    pip_layer "$work" dataframes "
pandas==3.1.1 4f1602f614bb83f443381dbcbb94c4ac764b2e50c8d6c965614c5cd83e328c47
python-dateutil==4.0.0 a5e246f79eb80475e691bf93862cead98decd8a498cf53ba0516fcdc0f50dc1c
tzdata==2026.6 0a10eec6e13ef16b627fabed9a5f2ba61a62b1c67f327305f4e7e412a70b4aec
pyarrow==26.0.1 39cb0f2418282c24bea6ceda77b03e5a8f0a5766b63a8bf194d4e2a2c423548c
polars==2.1.0 63c50ce3533f5a03d17c3a2a24f1d0e0c7eda98fbde4268a3cba900d34060e67
polars-runtime-32==2.1.0 0b838056cf365d7497971d9d9825c547766923338771c48c545b86ead2ebc572
duckdb==2.0.1 eb32b389d99d14cbbec4c110f58237c77eacefc65ef6f737619f413c97a91a77
narwhals==2.29.0 1c69b3dc30240f6e848c5a673cafc86affa44184ecce721e25b7194663ad10dc
"
    add_layer "$img" "$work/dataframes" "pip: pandas pyarrow polars duckdb"
    safe_rm "$work/dataframes"
    pip_layer "$work" ml-plots "
scikit-learn==1.9.1 52a0703bbc07ad27f560fa63fa68e4c54dd735bfbbf65b4dd3c225dc7547b6df
joblib==1.6.0 3dbbf9f6e4b592a2357b854608e980fe6390d131d7a82f011a377ef2ebef7aba
threadpoolctl==3.8.0 f1b49c82704d50f13ffae019c727b0fa4f6791a58f48f06a09c45face1be66da
statsmodels==0.15.0 b67886b66d9c7ca118526accedb5c6de7ffd74c015dc0492ea0b1690192b65da
patsy==1.0.3 d3dbebe8fd5f46e29912d030b63c6268647b59bf788a99e2af28a30234cf357c
formulaic==1.2.2 0f84ff49e3fc9dc0e68ab08a0a9427874021aa6c558e66b44dc634a35739b09b
interface_meta==2.0.1 f38016bef9a4429b6d0792d809be7b65e9781820c674bf7f463999086b6e6323
wrapt==2.5.2 0743950d3dda9940e56f81f5334ba051c4fe2e1421e4e4a4ef8eb8fb86a90894
typing_extensions==4.16.0 481caa481374e813c1b176ada14e97f1f67a4539ce9cfeb3f350d78d6370c2e8
packaging==26.4 81383611a09c1bc0b08b76e0fd5829d7c6824c65b27a6aee339da133f4233ea2
cloudpickle==3.1.3 1654f4f18e416447210a63c5c25a135d65a292156aa5fa519dfa4baf7726dddb
matplotlib==3.11.2 07d9b9fa60cd4c393692f50d0bb03123242ddf61c99bb0e95e75feb354e7c1a8
contourpy==1.3.3 51e79c1f7470158e838808d4a996fa9bac72c498e93d8ebe5119bc1e6becb0db
cycler==0.12.1 85cef7cff222d8644161529808465972e51340599459b8ac3ccbac5a854e0d30
fonttools==4.68.0 4b9c89b5876f1a74b1341632dfaf4c4c2be565d76c060445df401ebe7a4ceefa
kiwisolver==1.5.1 95a02752aa032eef4aed01cda6d9b687c669bd0396bf4519eef8bba22a286720
pillow==13.0.0 a625df9a2a5597fa5e5266e01aefc82604bb85d291e3547981e863560d75da6c
pyparsing==3.3.3 ece8c00a69cf01b45d0b1dedabb469c90d8caf996d4fda40f147627a122849a4
seaborn==0.13.2 636f8336facf092165e27924f223d3c62ca560b1f2bb5dff7ab7fad265361987
plotly==7.1.0 dbb7fa18afce40d0a8e80d1bf162eceb3faa0ce5a77fe741ad09a74cf78f53f3
sympy==1.14.0 e091cc3e99d2141a0ba2847328f5479b05d94a6635cb96148ccb3f34671bd8f5
mpmath==1.3.0 a0b2b9fe80bbcd81a6647ff13108738cfb482d481d826cc0e02f5b35e5c88d2c
opencv-python-headless==5.0.0.93 ed709fdf9aa0bd1f2ed8549e71d19449b03a675bb581eb292285f6861953be37
"
    add_layer "$img" "$work/ml-plots" "pip: scikit-learn statsmodels matplotlib seaborn plotly sympy opencv-python-headless"
    safe_rm "$work/ml-plots"
    cat >"$work/app.py" <<'EOF'
import pandas as pd
from sklearn.linear_model import LinearRegression

df = pd.DataFrame({"x": [float(i) for i in range(10)]})
df["y"] = 3.0 * df["x"] + 2.0
model = LinearRegression().fit(df[["x"]], df["y"])
print(f"ready datascience {model.score(df[['x']], df['y']):.3f}", flush=True)
EOF
    add_app "$img" "$work"
    CMD=(python3 /app/app.py)
    READY="ready datascience 1.000"
    # Beyond the app: every wheel of the image imports on the image's python.
    VERIFY_EXTRA=(python3 -c 'import numpy, scipy, numba, pandas, pyarrow, polars, duckdb, sklearn, statsmodels.api, matplotlib.pyplot, seaborn, plotly, sympy, cv2; print("all wheels import")')
}

recipe_model_header() {
    local img=$1 work=$2 weights size=500000000 sum
    weights="$work/model-layer/model/weights.bin"
    mkdir -p "$(dirname "$weights")"
    # AES-256-CTR keystream of a fixed password: incompressible and the same on every build.
    # (openssl ends on SIGPIPE when head has enough; the size check below is the real test.)
    { openssl enc -aes-256-ctr -pass pass:soci -nosalt </dev/zero 2>/dev/null || true; } | head -c "$size" >"$weights"
    [ "$(stat -c %s "$weights")" -eq "$size" ] || die "openssl made $(stat -c %s "$weights") bytes of $weights, not $size"
    sum=$(head -c $((8 << 20)) "$weights" | sha256sum | cut -c1-12)
    add_layer "$img" "$work/model-layer" "model: /model/weights.bin ($size pseudo-random bytes)"
    safe_rm "$work/model-layer"
    cat >"$work/app.py" <<'EOF'
import hashlib

with open("/model/weights.bin", "rb") as f:
    header = f.read(8 << 20)  # the first 8 MiB only, as a loader reading a model's header
assert len(header) == 8 << 20, len(header)
print(f"ready model-header {hashlib.sha256(header).hexdigest()[:12]}", flush=True)
EOF
    add_app "$img" "$work"
    CMD=(python3 /app/app.py)
    READY="ready model-header $sum"
}

# ---------------------------------------------------------------------------------------------
# build_and_verify NAME: builds NAME from a copy of the base layout, runs its command in a
# chroot of the unpacked image (it must print the ready line) and publishes OUT_DIR/NAME,
# NAME.cmd and NAME.ready.
build_and_verify() {
    local name=$1 img work vdir t0 output env args
    img="$out/.$name.tmp"
    work="$cache/work-$name"
    vdir="$cache/verify-$name"
    safe_rm "$img" "$work" "$vdir"
    mkdir -p "$img" "$work"
    # Blobs are content-addressed and umoci writes new ones beside them, so links are safe.
    cp -al "$cache/base/blobs" "$img/blobs"
    cp "$cache/base/index.json" "$cache/base/oci-layout" "$img/"
    CMD=() READY="" VERIFY_EXTRA=()
    "recipe_${name//-/_}" "$img" "$work"
    [ ${#CMD[@]} -gt 0 ] && [ -n "$READY" ] || die "recipe of $name set no CMD or READY"
    local cmdopts=() a
    for a in "${CMD[@]}"; do cmdopts+=(--config.cmd "$a"); done
    run "$work/config.log" 120 umoci config --image "$img:latest" --no-history \
        --os linux --architecture amd64 --created "$CREATED" --author "soci-rs bench/workloads.sh" \
        --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        --config.workingdir / "${cmdopts[@]}"
    run "$work/gc.log" 120 umoci gc --layout "$img"

    echo "   verify: umoci unpack + chroot ROOTFS ${CMD[*]}" >&2
    run "$work/unpack.log" 900 umoci unpack --image "$img:latest" "$vdir"
    mapfile -t env < <(jq -r '.process.env[]' "$vdir/config.json")
    mapfile -t args < <(jq -r '.process.args[]' "$vdir/config.json")
    [ "${args[*]}" = "${CMD[*]}" ] || die "$name: the unpacked image runs '${args[*]}', not '${CMD[*]}'"
    t0=$(now)
    output=$(timeout 300 chroot "$vdir/rootfs" /usr/bin/env -i "${env[@]}" "${args[@]}" 2>&1) \
        || { printf '%s\n' "$output" | tail -n 30 >&2; die "$name: '${CMD[*]}' failed in the unpacked image"; }
    printf '%s\n' "$output" | sed 's/^/   app> /' >&2
    echo "   (the app ran in $(secs "$t0" "$(now)") s, page cache warm)" >&2
    grep -Fxq -- "$READY" <<<"$output" || die "$name: the app did not print the ready line '$READY'"
    if [ ${#VERIFY_EXTRA[@]} -gt 0 ]; then
        output=$(timeout 300 chroot "$vdir/rootfs" /usr/bin/env -i "${env[@]}" "${VERIFY_EXTRA[@]}" 2>&1) \
            || { printf '%s\n' "$output" | tail -n 30 >&2; die "$name: the extra check failed in the unpacked image"; }
        printf '%s\n' "$output" | sed 's/^/   check> /' >&2
    fi
    safe_rm "$vdir" "$work" "$out/$name"
    rm -f "$out/$name.cmd" "$out/$name.ready"
    mv "$img" "$out/$name"
    jq -cn '$ARGS.positional' --args "${CMD[@]}" >"$out/$name.cmd"
    printf '%s\n' "$READY" >"$out/$name.ready"
}

# stamp_of NAME: hash of everything that decides how NAME is built.
stamp_of() {
    {
        base_stamp
        declare -f run normalize make_tar add_tar add_layer add_app host_python pip_layer build_and_verify
        declare -f "recipe_${1//-/_}"
        echo "$EPOCH $CREATED $PYDIST"
    } | sha256sum | cut -c1-64
}

# summary NAME=SECONDS|reused...: layers, compressed sizes (the manifest's) and uncompressed
# sizes (each layer decompressed and checked against the config's diff ID; cached by digest).
summary() {
    python3 - "$out" "$@" <<'PY'
import hashlib, json, os, sys, zlib

out, items = sys.argv[1], sys.argv[2:]
cache_path = os.path.join(out, ".cache", "layer-sizes.json")
try:
    known = json.load(open(cache_path))
except (OSError, ValueError):
    known = {}

def blob(img, digest):
    return os.path.join(img, "blobs", *digest.split(":", 1))

def uncompressed(img, layer, diff_id):
    key = layer["digest"]
    if known.get(key, {}).get("diff_id") == diff_id and known[key].get("tar_end_ok"):
        return known[key]["size"]
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    h, n, tail = hashlib.sha256(), 0, b""
    with open(blob(img, key), "rb") as f:
        while chunk := f.read(1 << 20):
            data = d.decompress(chunk)
            h.update(data)
            n += len(data)
            tail = (tail + data)[-1024:]
    data = d.flush()
    h.update(data)
    n += len(data)
    tail = (tail + data)[-1024:]
    if "sha256:" + h.hexdigest() != diff_id:
        sys.exit(f"{img}: layer {key} decompresses to sha256:{h.hexdigest()}, the config says {diff_id}")
    if n % 512 or tail != bytes(1024):
        sys.exit(f"{img}: layer {key} is not a complete tar ({n} bytes, no end-of-archive blocks)")
    known[key] = {"diff_id": diff_id, "size": n, "tar_end_ok": True}
    return n

mb = lambda n: f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n / 1e3:.1f} kB"
print(f"\n{'workload':<14} {'layers':>6} {'compressed':>12} {'uncompressed':>13}  build")
for item in items:
    name, took = item.split("=", 1)
    img = os.path.join(out, name)
    index = json.load(open(os.path.join(img, "index.json")))
    mdesc = next(m for m in index["manifests"]
                 if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == "latest")
    manifest = json.load(open(blob(img, mdesc["digest"])))
    config = json.load(open(blob(img, manifest["config"]["digest"])))
    diff_ids = config["rootfs"]["diff_ids"]
    history = [h.get("created_by", "") for h in config.get("history", []) if not h.get("empty_layer")]
    layers = manifest["layers"]
    if len(diff_ids) != len(layers):
        sys.exit(f"{name}: {len(layers)} layers but {len(diff_ids)} diff IDs")
    sizes = [uncompressed(img, l, d) for l, d in zip(layers, diff_ids)]
    took = took if took == "reused" else f"{float(took):.1f} s"
    print(f"{name:<14} {len(layers):>6} {mb(sum(l['size'] for l in layers)):>12} {mb(sum(sizes)):>13}  {took}")
    for i, (l, u) in enumerate(zip(layers, sizes)):
        by = history[i] if i < len(history) else ""
        print(f"   {l['digest'][7:19]} {mb(l['size']):>10} {mb(u):>12}   {by[:72]}")
    print(f"   manifest {mdesc['digest']}")
json.dump(known, open(cache_path + ".tmp", "w"), indent=1)
os.replace(cache_path + ".tmp", cache_path)
PY
}

# ---------------------------------------------------------------------------------------------
t_all=$(now)
base_ready=""
results=()
for name in "${names[@]}"; do
    stamp=$(stamp_of "$name")
    if [ -s "$out/$name/index.json" ] && [ -s "$out/$name.cmd" ] && [ -s "$out/$name.ready" ] \
        && [ "$(cat "$out/$name.stamp" 2>/dev/null)" = "$stamp" ]; then
        echo "== $name: up to date, reused ($out/$name)" >&2
        results+=("$name=reused")
        continue
    fi
    if [ -z "$base_ready" ]; then
        t0=$(now)
        ensure_base
        base_ready=1
        base_took=$(secs "$t0" "$(now)")
    fi
    echo "== $name: building $out/$name" >&2
    rm -f "$out/$name.stamp"
    t0=$(now)
    build_and_verify "$name"
    echo "$stamp" >"$out/$name.stamp"
    results+=("$name=$(secs "$t0" "$(now)")")
done
summary "${results[@]}"
[ -z "${BASE_BUILT:-}" ] || echo "base (debootstrap rootfs + its layer, now cached in $out/.cache): ${base_took} s"
echo "total: $(secs "$t_all" "$(now)") s"
