#!/usr/bin/env bash
# Lazy time to ready of two snapshotter builds side by side: for a change to the read path,
# the same image (one workload of bench/workloads.sh, its v2 SOCI index from `soci convert`)
# started through real containerd with snapshotter A and with snapshotter B in rotating
# order, each round from nothing local, at each link rate in turn. Same link, registry and
# clock as bench/start.sh (veth into a network namespace, tbf; pull start to ready line).
#
#   bench/ab-lazy.sh --a PATH --b PATH [--workload NAME] [--rate MBIT[,MBIT...]] [--runs N]
#                    [--span-size BYTES] [--a-config TOML] [--b-config TOML]
#   (--a/--b: soci-snapshotter-grpc binaries, e.g. one built from the base commit in a git
#   worktree and one from the change, or one binary twice with different --a-config/--b-config
#   (TOML appended to that side's config, e.g. $'[fuse]\npassthrough = false'); defaults:
#   python-hello, rates 200,0 with 0 meaning uncapped, 5 runs, 2 MiB spans)
#   BENCH_WORK=DIR   scratch space (default: bench/work/ab); workload images are cached there
# Prints one line per round and a median table (seconds, MB over the link, B/A ratio, and
# the part of the time `soci image rpull` took).
set -euo pipefail
cd "$(dirname "$0")/.."
a="" b="" workload=python-hello rates=200,0 runs=5 span_size=2097152 a_config="" b_config=""
while [ $# -gt 0 ]; do
    case "$1" in
        --a) a="$2"; shift 2 ;;
        --b) b="$2"; shift 2 ;;
        --workload) workload="$2"; shift 2 ;;
        --rate) rates="$2"; shift 2 ;;
        --runs) runs="$2"; shift 2 ;;
        --span-size) span_size="$2"; shift 2 ;;
        --a-config) a_config="$2"; shift 2 ;;
        --b-config) b_config="$2"; shift 2 ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
[ -x "$a" ] && [ -x "$b" ] || { echo "bench/ab-lazy.sh: --a and --b must name snapshotter binaries (see --help)" >&2; exit 2; }
[ "$(id -u)" -eq 0 ] || { echo "bench/ab-lazy.sh needs root (network namespaces, FUSE, containerd)" >&2; exit 1; }
work="${BENCH_WORK:-$PWD/bench/work/ab}"
mkdir -p "$work"
scripts/install-deps.sh
cargo build --release -q -p soci-cli
soci="$PWD/target/release/soci"
. bench/lib-workload.sh
load_workload "$work/workloads" "$workload"
layout=$WORKLOAD_LAYOUT ready=$WORKLOAD_READY
cmd=("${WORKLOAD_CMD[@]}")

. bench/lib-link.sh
. scripts/lib-containerd.sh
cleanup() {
    stop_soci_containerd "$work/env" || true
    link_down
}
trap cleanup EXIT
link_up "$work/link" 1000 0
link_seed "$layout" "$workload" "$soci" "$work/cli" --span-size "$span_size"
ref="$LINK_REGISTRY/$workload:soci"
results="$work/results.jsonl"
: >"$results"
IFS=',' read -r -a rate_list <<<"$rates"
for rate in "${rate_list[@]}"; do
    link_set_rate "$rate"
    for r in $(seq "$runs"); do
        order=(A B)
        [ $((r % 2)) -eq 0 ] && order=(B A)
        for which in "${order[@]}"; do
            snap=$a extra=$a_config
            [ "$which" = B ] && snap=$b extra=$b_config
            start_soci_containerd "$work/env" "$snap" "[registry]
config_path = \"$work/link/certs.d\"
$extra"
            sync
            rx="/sys/class/net/$LINK_HOST_IF/statistics/rx_bytes"
            before=$(cat "$rx")
            out=$(python3 - "$CTD_ADDR" "$ref" "ab-$which-$r" "$ready" "$soci" "$work/env/cli" "$rx" "${cmd[@]}" <<'PY'
import subprocess, sys, time
addr, ref, cid, ready, soci, cli_root, rx = sys.argv[1:8]
cmd = sys.argv[8:]
t0 = time.monotonic()
subprocess.run([soci, "--root", cli_root, "--address", addr, "image", "rpull", "--plain-http", ref],
               check=True, stdout=subprocess.DEVNULL)
pulled = time.monotonic() - t0
p = subprocess.Popen(["ctr", "-a", addr, "run", "--rm", "--snapshotter", "soci", ref, cid] + cmd,
                     stdout=subprocess.PIPE, text=True)
seen = None
for line in p.stdout:
    if line.rstrip("\n") == ready and seen is None:
        seen = time.monotonic() - t0
        at_ready = int(open(rx).read())
if p.wait() != 0 or seen is None:
    sys.exit(f"run of {ref} failed or printed no ready line")
print(f"{seen} {pulled} {at_ready}")
PY
)
            stop_soci_containerd "$work/env"
            read -r secs pulled at_ready <<<"$out"
            bytes=$(( at_ready - before ))
            echo "{\"which\":\"$which\",\"rate\":$rate,\"run\":$r,\"seconds\":$secs,\"pull_seconds\":$pulled,\"bytes\":$bytes}" >>"$results"
            printf '%s at %s Mbit/s run %s: %.3f s (rpull %.3f s), %.1f MB\n' "$which" "$rate" "$r" "$secs" "$pulled" "$(python3 -c "print($bytes/1e6)")" >&2
        done
    done
done
python3 - "$results" "$a" "$b" "$workload" "$runs" "$a_config" "$b_config" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
def side(exe, extra):
    return exe + (f" with {extra!r}" if extra else "")
print(f"{sys.argv[4]}, {sys.argv[5]} runs each, medians (min-max); A = {side(sys.argv[2], sys.argv[6])}, B = {side(sys.argv[3], sys.argv[7])}")
print("| link | A | B | B/A | rpull A | rpull B |")
print("|---|---|---|---|---|---|")
for rate in dict.fromkeys(r["rate"] for r in rows):
    cell = {}
    for w in "AB":
        s = [r["seconds"] for r in rows if r["rate"] == rate and r["which"] == w]
        mb = statistics.median(r["bytes"] for r in rows if r["rate"] == rate and r["which"] == w) / 1e6
        cell[w] = (statistics.median(s), f"{statistics.median(s):.3f} s ({min(s):.3f}-{max(s):.3f}), {mb:.1f} MB")
    link = "uncapped" if rate == 0 else f"{rate} Mbit/s"
    pull = {w: statistics.median(r["pull_seconds"] for r in rows if r["rate"] == rate and r["which"] == w) for w in "AB"}
    print(f"| {link} | {cell['A'][1]} | {cell['B'][1]} | {cell['B'][0] / cell['A'][0]:.2f} | {pull['A']:.3f} s | {pull['B']:.3f} s |")
PY
