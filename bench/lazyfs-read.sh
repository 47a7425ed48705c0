#!/usr/bin/env bash
# Read speed of the lazy filesystem, side by side with the local filesystem, in one run:
#   1. sequential read of a 200 MB file through `soci mount` once the background fetch has
#      put every span on local disk, against the same file on local disk (page cache dropped
#      before every read, so both come from disk; 7 alternating rounds, medians), with FUSE
#      passthrough (the default: the first open after the fetch is served by soci and makes
#      the file's backing copy, later opens are read by the kernel) and with
#      `--no-passthrough` (every read served by soci), side by side;
#   2. random 4 KiB reads (distinct pages) through the mount and locally, p50/p99;
#   3. random 4 KiB reads on a fresh lazy mount (nothing fetched: each read may fetch a span
#      from the loopback registry), p50/p99.
# Writes bench/results/lazyfs-read.md.
#
#   BENCH_WORK=DIR   scratch space (default ./bench/work/lazyfs-read)
#   SIZE_MB=N        file size (default 200)
set -euo pipefail
cd "$(dirname "$0")/.."
work="${BENCH_WORK:-$PWD/bench/work/lazyfs-read}"
size_mb="${SIZE_MB:-200}"
mkdir -p "$work"
cargo build --release -q -p soci-cli
soci="$PWD/target/release/soci"

if [ ! -s "$work/image/index.json" ]; then
    echo "== building a ${size_mb} MB single-file layer from /usr contents" >&2
    rm -rf "$work/rootfs" "$work/image"
    mkdir -p "$work/rootfs/model"
    python3 - "$work/rootfs/model/weights.bin" "$size_mb" <<'PY'
import os, sys
out, limit = sys.argv[1], int(sys.argv[2]) << 20
written = 0
with open(out, "wb") as f:
    for d, dirs, files in os.walk("/usr"):
        dirs.sort()
        for name in sorted(files):
            p = os.path.join(d, name)
            if os.path.islink(p) or not os.path.isfile(p):
                continue
            try:
                data = open(p, "rb").read(limit - written)
            except OSError:
                continue
            f.write(data)
            written += len(data)
            if written >= limit:
                sys.exit(0)
PY
    umoci init --layout "$work/image"
    umoci new --image "$work/image:latest"
    umoci insert --image "$work/image:latest" "$work/rootfs/model" /model
    umoci config --image "$work/image:latest" --os linux --architecture amd64
fi
local_file="$work/rootfs/model/weights.bin"

. scripts/lib-registry.sh
start_registry "$work/registry"
ref="$REGISTRY_ADDR/bench/model:latest"
skopeo copy -q --dest-tls-verify=false "oci:$work/image:latest" "docker://$ref"
root="$work/root"
rm -rf "$root" "$root-cold"
"$soci" --root "$root" create --min-layer-size 0 "$ref" >/dev/null
"$soci" --root "$root" push "$ref" >/dev/null

mnt="$work/mnt"
mkdir -p "$mnt"
cleanup() {
    "$soci" --root "$root" unmount --force "$mnt" >/dev/null 2>&1 || true
    "$soci" --root "$root" unmount --force "$mnt-served" >/dev/null 2>&1 || true
    "$soci" --root "$root-cold" unmount --force "$mnt-cold" >/dev/null 2>&1 || true
    kill "$REGISTRY_PID" 2>/dev/null || true
}
trap cleanup EXIT
"$soci" --root "$root" mount "$ref" "$mnt" >&2
echo "== waiting for the background fetch to finish" >&2
for _ in $(seq 600); do
    if python3 - "$root" <<'PY'
import glob, json, sys
stats = [l for f in glob.glob(sys.argv[1] + "/mounts/*/stats.json") for l in json.load(open(f))]
sys.exit(0 if stats and all(l["spans_cached"] == l["spans_total"] for l in stats if l["lazy"]) else 1)
PY
    then break; fi
    sleep 0.5
done

# Mounted once every span is cached, so it finds them all (its counters then show no fetch).
mkdir -p "$mnt-served"
"$soci" --root "$root" mount --no-passthrough --no-background-fetch "$ref" "$mnt-served" >&2
mkdir -p "$mnt-cold"
"$soci" --root "$root-cold" mount --no-background-fetch "$ref" "$mnt-cold" >&2

python3 - "$local_file" "$mnt/model/weights.bin" "$mnt-cold/model/weights.bin" "$size_mb" "$mnt-served/model/weights.bin" "$root" >"$work/result.md" <<'PY'
import glob, json, os, random, statistics, sys, time
local, lazy, cold, size_mb, served, root = sys.argv[1:7]

def drop_caches():
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")

def timed_read(f):
    """MB/s of reading open file `f` to its end in 1 MiB reads."""
    t = time.perf_counter()
    n = 0
    while True:
        b = f.read(1 << 20)
        if not b:
            break
        n += len(b)
    return n / (time.perf_counter() - t) / 1e6

def seq_read(path):
    drop_caches()
    with open(path, "rb", buffering=0) as f:
        return timed_read(f)

def seq_read_warm(path, drop_own_pages):
    # The local file comes from the page cache; the lazy file's own page cache is dropped
    # (its span files stay cached), so every byte goes through FUSE: this isolates the cost
    # of the lazy filesystem from the disk.
    with open(path, "rb", buffering=0) as f:
        if drop_own_pages:
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        return timed_read(f)

def random_reads(path, count, seed, drop=True):
    if drop:
        drop_caches()
    size = os.path.getsize(path)
    pages = random.Random(seed).sample(range(size // 4096), count)
    fd = os.open(path, os.O_RDONLY)
    lat = []
    for p in pages:
        t = time.perf_counter()
        os.pread(fd, 4096, p * 4096)
        lat.append((time.perf_counter() - t) * 1e3)
    os.close(fd)
    lat.sort()
    return lat[len(lat) // 2], lat[int(len(lat) * 0.99) - 1]

def backing_files():
    return sum(l.get("backing_files", 0)
               for f in glob.glob(root + "/mounts/*/stats.json") for l in json.load(open(f)))

# The first open after the full fetch is served by soci and queues the backing copy.
first = seq_read(lazy)
for _ in range(300):
    if backing_files() >= 1:
        break
    time.sleep(0.1)
else:
    sys.exit("no backing file after 30 s: passthrough is not working")

rounds = 7
loc, laz, srv = [], [], []
for _ in range(rounds):
    loc.append(seq_read(local))
    laz.append(seq_read(lazy))
    srv.append(seq_read(served))
ml, mz, ms = statistics.median(loc), statistics.median(laz), statistics.median(srv)
seq_read_warm(local, False)
seq_read_warm(lazy, False)
seq_read_warm(served, False)
wloc, wlaz, wsrv = [], [], []
for _ in range(rounds):
    wloc.append(seq_read_warm(local, False))
    wlaz.append(seq_read_warm(lazy, False))
    wsrv.append(seq_read_warm(served, True))
wl, wz, ws = statistics.median(wloc), statistics.median(wlaz), statistics.median(wsrv)
rl = random_reads(local, 2000, 1)
rz = random_reads(lazy, 2000, 1)
rc = random_reads(cold, 300, 2, drop=False)
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
print(f"# Lazy filesystem read speed ({size_mb} MB file, one run, {time.strftime('%Y-%m-%d')})\n")
print(f"Machine: {os.cpu_count()} cores, {cpu}. Registry: Debian docker-registry on loopback. "
      "Unless noted, the page cache is dropped before every measured read; the span cache and the local file are on the same disk. Rounds alternate local and lazy.\n")
rs = random_reads(served, 2000, 1)
def cell(xs):
    return f"{statistics.median(xs):.0f} ({min(xs):.0f}–{max(xs):.0f})"
print("| read | local fs | soci, passthrough (default) | passthrough / local | soci, `--no-passthrough` | no-passthrough / local |")
print("|---|---|---|---|---|---|")
print(f"| sequential, 1 MiB reads, median of {rounds} (MB/s) | {cell(loc)} | {cell(laz)} | {mz/ml:.2f}× | {cell(srv)} | {ms/ml:.2f}× |")
print(f"| sequential, data in the page cache (no-passthrough: span files cached, FUSE pages dropped), median of {rounds} (MB/s) | {cell(wloc)} | {cell(wlaz)} | {wz/wl:.2f}× | {cell(wsrv)} | {ws/wl:.2f}× |")
print(f"| sequential, first read after the full fetch (served by soci; queues the backing copy), MB/s | | {first:.0f} | {first/ml:.2f}× | | |")
print(f"| random 4 KiB, 2000 distinct pages, p50 (ms) | {rl[0]:.3f} | {rz[0]:.3f} | | {rs[0]:.3f} | |")
print(f"| random 4 KiB, 2000 distinct pages, p99 (ms) | {rl[1]:.3f} | {rz[1]:.3f} | | {rs[1]:.3f} | |")
print(f"| random 4 KiB on a fresh mount (spans fetched from the registry), 300 reads, p50 / p99 (ms) | | {rc[0]:.2f} / {rc[1]:.2f} | | | |")
PY
cat "$work/result.md"
mkdir -p bench/results
cp "$work/result.md" bench/results/lazyfs-read.md
