#!/usr/bin/env bash
# Time to ready, lazy against full pull, over a rate-capped link, through real containerd.
#
# Builds the workloads (bench/workloads.sh), runs a registry in a network namespace reached
# over a veth pair capped with tbf (bench/lib-link.sh), seeds the images and their SOCI
# indexes (v2, `soci convert`; and a variant with a prefetch artifact learned from one
# recorded run), then for every workload runs N rounds, each mode from nothing local (fresh
# containerd root, fresh snapshotter root and span cache), in rotating order:
#   full      ctr images pull --plain-http + ctr run            (containerd's overlayfs)
#   parallel  soci image rpull of the image without an index, the snapshotter in parallel
#             pull mode (PARALLEL_CONFIG below: 8 MiB Range pieces, 4 at once per image,
#             2 layers unpacked at once per image) + ctr run --snapshotter soci
#   lazy      soci image rpull + ctr run --snapshotter soci     (soci-rs)
#   prefetch  the same with the image whose index has a prefetch artifact
#   optimized the same with the image `soci optimize --convert` made: one lazy run of the
#             image's own cmd learned its reads, the index's checkpoints sit around them
#             (spans of up to --optimized-span-size elsewhere) and its prefetch artifact
#             lists them
#   floor     ctr run of the image already pulled (ctr images pull before the clock starts):
#             what a start costs with nothing to fetch
# Every run's containerd root, snapshotter root and span cache are on a fresh ext4 filesystem
# (a loop file, SOCI_ENV_FS_SIZE in scripts/lib-containerd.sh says why).
# The clock runs from the start of the pull to the workload's ready line. Bytes are counted
# on the link (the host side of the veth) from pull start to the ready line. Also measured:
# `soci create` of each image from its local layout against `gzip -dc` of the same layers,
# and the snapshotter daemon's peak RSS (VmHWM) in each soci mode.
# Writes bench/results/time-to-ready.{md,json,png}.
#
#   bench/start.sh [--rate MBIT[,MBIT...]] [--rtt MS] [--runs N] [--workloads a,b,c] [--span-size BYTES]
#                  [--optimized-span-size BYTES] [--modes full,parallel,...]
#                  (--optimized-span-size: cold spans of the optimized index, default
#                  8 MiB: bench/span-sizes.sh's "around reads" rows fall as cold spans grow)
#   (--rate: every timed round runs at each rate in turn, 0 meaning no cap; default 200,0;
#   --rtt adds round-trip latency with a delaying proxy in front of the registry, default 0;
#   --span-size is the SOCI index's span size, default 1 MiB, `soci create`'s own default
#   (bench/results/span-sizes.md says why); --modes: a subset of the modes above, default
#   all)
#   BENCH_WORK=DIR   scratch space (default: bench/work/start); workload images are cached there
set -euo pipefail
cd "$(dirname "$0")/.."
rates=200,0
rtt=0
runs=3
workloads="python-hello,datascience,model-header"
span_size=1048576
optimized_span_size=8388608
mode_arg=full,parallel,lazy,prefetch,optimized,floor
# The parallel mode's snapshotter settings: pieces big enough that a request's round trip
# is small beside its transfer, enough connections to fill a link, and one layer unpacked
# per core while the next downloads.
PARALLEL_CONFIG='[pull_modes.parallel_pull_unpack]
enable = true
discard_unpacked_layers = true
concurrent_download_chunk_size = "8mb"
max_concurrent_downloads_per_image = 4
max_concurrent_unpacks_per_image = 2'
while [ $# -gt 0 ]; do
    case "$1" in
        --rate) rates="$2"; shift 2 ;;
        --rtt) rtt="$2"; shift 2 ;;
        --runs) runs="$2"; shift 2 ;;
        --workloads) workloads="$2"; shift 2 ;;
        --span-size) span_size="$2"; shift 2 ;;
        --optimized-span-size) optimized_span_size="$2"; shift 2 ;;
        --modes) mode_arg="$2"; shift 2 ;;
        -h|--help) sed -n '2,38p' "$0"; exit 0 ;;
        *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
IFS=',' read -r -a mode_list <<<"$mode_arg"
for m in "${mode_list[@]}"; do
    case "$m" in full | parallel | lazy | prefetch | optimized | floor) ;;
        *) echo "unknown mode $m (modes: full,parallel,lazy,prefetch,optimized,floor)" >&2; exit 2 ;;
    esac
done
wants() { [[ ",$mode_arg," == *",$1,"* ]]; }
[ "$(id -u)" -eq 0 ] || { echo "bench/start.sh needs root (network namespaces, FUSE, containerd)" >&2; exit 1; }
work="${BENCH_WORK:-$PWD/bench/work/start}"
mkdir -p "$work" bench/results
scripts/install-deps.sh
/usr/bin/python3 -c 'import matplotlib' 2>/dev/null || {
    echo "installing python3-matplotlib (for the chart)" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-matplotlib >/dev/null
}
cargo build --release -q -p soci-cli -p soci-snapshotter -p soci-bench
DELAY_PROXY="$PWD/target/release/delay-proxy"
soci="$PWD/target/release/soci"
snap="$PWD/target/release/soci-snapshotter-grpc"

IFS=',' read -r -a names <<<"$workloads"
echo "== building workloads: ${names[*]}" >&2
bench/workloads.sh "$work/workloads" "${names[@]}"

. bench/lib-link.sh
. scripts/lib-containerd.sh
cleanup() {
    stop_soci_containerd "$work/env" || true
    "$soci" --root "$work/cli" unmount --force "$work/mnt" >/dev/null 2>&1 || true
    link_down
}
trap cleanup EXIT
IFS=',' read -r -a rate_list <<<"$rates"
link_up "$work/link" 1000 "$rtt"
echo "== registry at $LINK_REGISTRY behind a tbf cap of ${rates} Mbit/s in turn (0: none), ${rtt} ms added round trip (namespace $LINK_NS)" >&2
rx_bytes() { cat "/sys/class/net/$LINK_HOST_IF/statistics/rx_bytes"; }

results="$work/results.jsonl"
: >"$results"
record() { echo "$1" >>"$results"; }

for name in "${names[@]}"; do
    layout="$work/workloads/$name"
    cmd_json=$(cat "$layout.cmd")
    ready=$(cat "$layout.ready")
    mapfile -t cmd < <(python3 -c 'import json,sys; print("\n".join(json.load(open(sys.argv[1]))))' "$layout.cmd")
    echo "== $name: seeding the registry (inside the namespace, no cap)" >&2
    link_exec skopeo copy -q --dest-tls-verify=false "oci:$layout:latest" "docker://$LINK_LOCAL/$name:latest"

    # Index build from the local layout against decompressing the same layers.
    rm -rf "$work/cli"
    t0=$(date +%s.%N)
    "$soci" --root "$work/cli" create --span-size "$span_size" "oci:$layout:latest" >/dev/null
    t1=$(date +%s.%N)
    layers=$("$soci" --root "$work/cli" ztoc list | awk 'NR>1 {print $3}' | sort -u)
    g0=$(date +%s.%N)
    for l in $layers; do gzip -dc "$layout/blobs/sha256/${l#sha256:}" >/dev/null; done
    g1=$(date +%s.%N)
    record "{\"workload\":\"$name\",\"mode\":\"index\",\"seconds\":$(python3 -c "print($t1-$t0)"),\"gzip_seconds\":$(python3 -c "print($g1-$g0)")}"

    # v2 image (soci convert) in the registry, built inside the namespace (no cap).
    link_exec "$soci" --root "$work/cli" convert --span-size "$span_size" "$LINK_LOCAL/$name:latest" "$LINK_LOCAL/$name:soci" >/dev/null

    if wants prefetch || wants optimized; then
    # Learn the read set: `soci optimize` runs the image's own cmd once lazily (inside the
    # namespace, no cap), records the byte ranges read, and writes the optimized image.
    link_exec "$soci" --root "$work/cli" optimize --span-size "$optimized_span_size" \
        --ready-line "$ready" --record-read-ranges "$work/$name.ranges.json" \
        --convert "$LINK_LOCAL/$name:optimized" "$LINK_LOCAL/$name:latest" >"$work/$name.optimize.out"
    record "$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(json.dumps({"workload":sys.argv[2],"mode":"readset","files":len(r),"bytes":sum(b-a for v in r.values() for a,b in v)}))' "$work/$name.ranges.json" "$name")"
    # The same reads as a prefetch artifact of an index with uniform checkpoints.
    link_exec "$soci" --root "$work/cli" convert --span-size "$span_size" --prefetch-files-json "$work/$name.ranges.json" \
        "$LINK_LOCAL/$name:latest" "$LINK_LOCAL/$name:prefetch" >/dev/null
    fi

  for rate in "${rate_list[@]}"; do
    link_set_rate "$rate"
    for r in $(seq "$runs"); do
        modes=("${mode_list[@]}")
        # Rotate the order so no mode always runs first (or right after another's writeback).
        for k in $(seq 0 $(( ${#modes[@]} - 1 ))); do
            mode=${modes[$(( (k + r) % ${#modes[@]} ))]}
            extra=""
            [ "$mode" = parallel ] && extra="$PARALLEL_CONFIG"
            SOCI_ENV_FS_SIZE=24G start_soci_containerd "$work/env" "$snap" "[registry]
config_path = \"$work/link/certs.d\"
$extra"
            sync
            case "$mode" in
                full | floor | parallel) ref="$LINK_REGISTRY/$name:latest" ;;
                lazy) ref="$LINK_REGISTRY/$name:soci" ;;
                prefetch) ref="$LINK_REGISTRY/$name:prefetch" ;;
                optimized) ref="$LINK_REGISTRY/$name:optimized" ;;
            esac
            if [ "$mode" = floor ]; then
                ctr -a "$CTD_ADDR" images pull --plain-http "$ref" >/dev/null
                sync
            fi
            before=$(rx_bytes)
            out=$(python3 - "$mode" "$CTD_ADDR" "$ref" "$name-$mode-$r" "$ready" "$soci" "$work/env/cli" "/sys/class/net/$LINK_HOST_IF/statistics/rx_bytes" "${cmd[@]}" <<'PY'
import subprocess, sys, time
mode, addr, ref, cid, ready, soci, cli_root, rx = sys.argv[1:9]
cmd = sys.argv[9:]
t0 = time.monotonic()
if mode == "floor":
    run = ["ctr", "-a", addr, "run", "--rm", ref, cid] + cmd
elif mode == "full":
    subprocess.run(["ctr", "-a", addr, "images", "pull", "--plain-http", ref],
                   check=True, stdout=subprocess.DEVNULL)
    run = ["ctr", "-a", addr, "run", "--rm", ref, cid] + cmd
else:
    subprocess.run([soci, "--root", cli_root, "--address", addr, "image", "rpull",
                    "--plain-http", ref], check=True, stdout=subprocess.DEVNULL)
    run = ["ctr", "-a", addr, "run", "--rm", "--snapshotter", "soci", ref, cid] + cmd
p = subprocess.Popen(run, stdout=subprocess.PIPE, text=True)
seen = None
for line in p.stdout:
    if line.rstrip("\n") == ready and seen is None:
        seen = time.monotonic() - t0
        at_ready = int(open(rx).read())
if p.wait() != 0 or seen is None:
    sys.exit(f"{mode} run of {ref} failed or printed no ready line")
print(f"{seen} {at_ready}")
PY
)
            secs=${out% *}
            bytes=$(( ${out#* } - before ))
            # The daemon's peak resident memory over the whole pull and start, in KiB.
            rss=$(awk '/^VmHWM/ {print $2}' "/proc/$(cat "$work/env/soci/daemon.pid")/status" 2>/dev/null || echo 0)
            stop_soci_containerd "$work/env"
            record "{\"workload\":\"$name\",\"mode\":\"$mode\",\"rate\":$rate,\"run\":$r,\"seconds\":$secs,\"bytes\":$bytes,\"daemon_rss_kib\":${rss:-0}}"
            printf '%s at %s Mbit/s %s run %s: %.2f s, %.1f MB over the link\n' "$name" "$rate" "$mode" "$r" "$secs" "$(python3 -c "print($bytes/1e6)")" >&2
        done
    done
  done
done

/usr/bin/python3 - "$results" "$rates" "$runs" "$span_size" "$rtt" "$optimized_span_size" <<'PY'
import json, platform, statistics, subprocess, sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt

rows = [json.loads(l) for l in open(sys.argv[1])]
rates_arg, runs, span, rtt = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
rates = [int(x) for x in rates_arg.split(",")]
cold = int(sys.argv[6])
names = list(dict.fromkeys(r["workload"] for r in rows))
modes = [m for m in ["full", "parallel", "lazy", "prefetch", "optimized", "floor"]
         if any(r.get("mode") == m for r in rows)]
labels = {"full": "overlayfs full pull", "parallel": "soci-rs parallel pull (no index)",
          "lazy": "soci-rs lazy", "prefetch": "soci-rs lazy + prefetch",
          "optimized": "soci-rs optimized (`soci optimize`)",
          "floor": "run of the pulled image (floor)"}
link = lambda r: "uncapped" if r == 0 else f"{r} Mbit/s"
cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"],
                     capture_output=True, text=True).stdout.strip()
out = [f"# Time to ready over a {', then '.join(link(r) for r in rates)} link\n",
       f"`bench/start.sh --rate {rates_arg} --rtt {rtt} --runs {runs} --span-size {span} --optimized-span-size {cold}`; "
       f"SOCI indexes with {span / 1048576:g} MiB spans (optimized: `soci optimize`, around the reads, up to {cold / 1048576:g} MiB "
       f"elsewhere); {runs} runs per mode and link, rotating order, each "
       f"from nothing local. Machine: {cpu}, {subprocess.run(['nproc'], capture_output=True, text=True).stdout.strip()} cores, "
       f"kernel {platform.release()}. Link: veth pair into a network namespace, `tbf` at each rate each way "
       f"(none when uncapped), {'no added latency' if rtt == 0 else f'{rtt} ms added round trip (delay-proxy)'}. "
       "containerd 1.6 + runc; registry: Debian's docker-registry 2.8.\n",
       "| workload | link | mode | time to ready, median (min–max) | vs full | vs floor | bytes over the link before ready (median) | snapshotter peak RSS (max) |",
       "|---|---|---|---|---|---|---|---|"]
def peak_rss(sel, mode):
    # full and floor do not use the snapshotter; older rows have no figure.
    kib = [r.get("daemon_rss_kib", 0) for r in sel]
    return "–" if mode in ("full", "floor") or not any(kib) else f"{max(kib) / 1024:.0f} MiB"

medians = {}
for n in names:
    for rate in rates:
        for m in modes:
            sel = [r for r in rows if r["workload"] == n and r["mode"] == m and r.get("rate") == rate]
            xs = [r["seconds"] for r in sel]
            bs = [r["bytes"] for r in sel]
            if not xs:
                continue
            med = statistics.median(xs)
            medians[(n, rate, m)] = med
            full = medians.get((n, rate, "full"))
            floor_ = None
            fl = [r["seconds"] for r in rows if r["workload"] == n and r["mode"] == "floor" and r.get("rate") == rate]
            if fl:
                floor_ = statistics.median(fl)
            out.append(f"| {n} | {link(rate)} | {labels[m]} | {med:.2f} s ({min(xs):.2f}–{max(xs):.2f}) "
                       f"| {f'{med / full:.2f}×' if full else '–'} | {f'{med / floor_:.1f}×' if floor_ else '–'} "
                       f"| {statistics.median(bs) / 1e6:.1f} MB | {peak_rss(sel, m)} |")
out.append("\n| workload | files read at start | bytes of them read (distinct ranges) | lazy bytes / read bytes | `soci create` (local layout) | `gzip -dc` of the same layers |")
out.append("|---|---|---|---|---|---|")
for n in names:
    rs = [r for r in rows if r["workload"] == n and r["mode"] == "readset"]
    ix = [r for r in rows if r["workload"] == n and r["mode"] == "index"]
    lazy_b = statistics.median([r["bytes"] for r in rows if r["workload"] == n and r["mode"] == "lazy"
                                and r.get("rate") == rates[0]] or [0])
    if rs and ix:
        rb = rs[0]["bytes"]
        out.append(f"| {n} | {rs[0]['files']} | {rb / 1e6:.1f} MB | {lazy_b / rb if rb else float('nan'):.2f}× "
                   f"| {ix[0]['seconds']:.2f} s | {ix[0]['gzip_seconds']:.2f} s |")
text = "\n".join(out) + "\n"
open("bench/results/time-to-ready.md", "w").write(text)
json.dump(rows, open("bench/results/time-to-ready.json", "w"), indent=1)
print(text)

fig, axes = plt.subplots(1, len(rates), figsize=(8 * len(rates), 4.5), squeeze=False)
width = 0.8 / max(len(modes), 1)
for ax, rate in zip(axes[0], rates):
    for i, m in enumerate(modes):
        xs = [j + (i - (len(modes) - 1) / 2) * width for j in range(len(names))]
        ys = [medians.get((n, rate, m), 0) for n in names]
        bars = ax.bar(xs, ys, width, label=labels[m])
        ax.bar_label(bars, fmt="%.1f s", fontsize=7)
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel("seconds from pull start to ready (median)")
    ax.set_title(f"Time to ready, {link(rate)} (containerd 1.6)")
axes[0][0].legend(fontsize=8)
fig.tight_layout()
fig.savefig("bench/results/time-to-ready.png", dpi=120)
print("wrote bench/results/time-to-ready.md, .json and .png")
PY
