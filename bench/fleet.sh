#!/usr/bin/env bash
# A fleet behind one mirror: N simulated nodes (each its own `soci` root and lazy mount, all
# started at the same moment) start the same image lazily (`soci mount` + its command in a
# chroot, until its ready line), once through a pull-through cache and once without it. The
# origin registry sits behind a rate-capped link (bench/lib-link.sh); the cache is Debian's
# docker-registry in proxy mode on the host, named as a mirror in the nodes' hosts.toml.
#
#   bench/fleet.sh [--nodes N] [--rate MBIT] [--workload NAME]
#   (defaults: 8 nodes, 200 Mbit/s, python-hello)
#   BENCH_WORK=DIR   scratch space (default: bench/work/fleet)
# Per mode: bytes and requests the origin served (veth counter; the origin's request log,
# split into the nodes' and the cache's), the share of the nodes' requests kept off the
# origin, and each node's time to ready. Writes bench/results/fleet.md.
set -euo pipefail
cd "$(dirname "$0")/.."
nodes=8 rate=200 workload=python-hello
while [ $# -gt 0 ]; do
    case "$1" in
        --nodes) nodes="$2"; shift 2 ;;
        --rate) rate="$2"; shift 2 ;;
        --workload) workload="$2"; shift 2 ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
[ "$(id -u)" -eq 0 ] || { echo "bench/fleet.sh needs root (network namespaces, FUSE, chroot)" >&2; exit 1; }
work="${BENCH_WORK:-$PWD/bench/work/fleet}"
mkdir -p "$work"
scripts/install-deps.sh
cargo build --release -q -p soci-cli
soci="$PWD/target/release/soci"
. bench/lib-workload.sh
load_workload "$work/workloads" "$workload"
layout=$WORKLOAD_LAYOUT ready=$WORKLOAD_READY
cmd=("${WORKLOAD_CMD[@]}")

. bench/lib-link.sh
MIRROR_PID=""
unmount_all() {
    for m in "$work"/run/*/mnt; do
        [ -d "$m" ] && "$soci" --root "${m%/mnt}/root" unmount --force "$m" >/dev/null 2>&1 || true
    done
}
cleanup() {
    unmount_all
    [ -n "$MIRROR_PID" ] && kill "$MIRROR_PID" 2>/dev/null || true
    link_down
}
trap cleanup EXIT
LINK_LOG_LEVEL=info link_up "$work/link" 1000 0
link_seed "$layout" "$workload" "$soci" "$work/cli"
link_set_rate "$rate"
ref="$LINK_REGISTRY/$workload:soci"
origin_log="$work/link/registry.log"
results="$work/results.jsonl"
: >"$results"

# One fleet: every node mounts and runs at once; prints nothing, appends to $results.
run_fleet() {
    local mode="$1" hosts="$2" mirror_log="${3:-}"
    unmount_all
    rm -rf "$work/run"
    local rx="/sys/class/net/$LINK_HOST_IF/statistics/rx_bytes"
    local rx_before origin_lines mirror_lines=0
    rx_before=$(cat "$rx")
    origin_lines=$(wc -l <"$origin_log")
    [ -n "$mirror_log" ] && mirror_lines=$(wc -l <"$mirror_log")
    local start pids=()
    start=$(date +%s.%N)
    for i in $(seq "$nodes"); do
        local node="$work/run/n$i"
        mkdir -p "$node/mnt"
        (
            "$soci" --root "$node/root" mount --hosts-dir "$hosts" --no-background-fetch "$ref" "$node/mnt" >"$node/mount.log" 2>&1
            timeout 120 chroot "$node/mnt" /usr/bin/env -i PATH=/usr/local/bin:/usr/bin:/bin HOME=/root "${cmd[@]}" 2>"$node/run.err" \
                | { grep -m1 -qxF "$ready" && date +%s.%N >"$node/ready"; cat >/dev/null; }
        ) &
        pids+=($!)
    done
    # Only the nodes: the cache's registry is a child of this shell too.
    wait "${pids[@]}"
    python3 - "$mode" "$nodes" "$start" "$work/run" "$(( $(cat "$rx") - rx_before ))" \
        "$origin_log" "$origin_lines" "$mirror_log" "$mirror_lines" >>"$results" <<'PY'
import json, sys
mode, nodes, start, run, origin_bytes, origin_log, origin_from, mirror_log, mirror_from = sys.argv[1:10]
def new_requests(path, skip):
    if not path:
        return []
    lines = open(path, errors="replace").read().splitlines()[int(skip):]
    return [l for l in lines if 'msg="response completed' in l and "/blobs/sha256:" in l]
times = []
for i in range(1, int(nodes) + 1):
    try:
        times.append(float(open(f"{run}/n{i}/ready").read()) - float(start))
    except OSError:
        sys.exit(f"node {i} never printed its ready line: see {run}/n{i}/mount.log and run.err")
origin = new_requests(origin_log, origin_from)
mirror = new_requests(mirror_log, mirror_from)
ours = lambda reqs: [l for l in reqs if "useragent=soci-rs/" in l]
print(json.dumps({
    "mode": mode,
    "times": times,
    "origin_bytes": int(origin_bytes),
    "origin_requests_nodes": len(ours(origin)),
    "origin_requests_cache": len(origin) - len(ours(origin)),
    "mirror_requests": len(ours(mirror)),
}))
PY
    unmount_all
}

echo "== $nodes nodes without a mirror" >&2
run_fleet direct "$work/link/certs.d"

echo "== $nodes nodes through a pull-through cache" >&2
rm -rf "$work/mirror"
mkdir -p "$work/mirror"
mirror_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$work/mirror/config.yml" <<YAML
version: 0.1
log: {level: info, accesslog: {disabled: true}}
storage:
  filesystem: {rootdirectory: $work/mirror/data}
http: {addr: "127.0.0.1:$mirror_port", secret: soci-bench}
proxy: {remoteurl: "http://$LINK_REGISTRY"}
YAML
docker-registry serve "$work/mirror/config.yml" >"$work/mirror/registry.log" 2>&1 &
MIRROR_PID=$!
for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$mirror_port/v2/" && break; sleep 0.1; done
mkdir -p "$work/mirror-hosts/$LINK_REGISTRY"
cat >"$work/mirror-hosts/$LINK_REGISTRY/hosts.toml" <<TOML
server = "http://$LINK_REGISTRY"

[host."http://127.0.0.1:$mirror_port"]
  capabilities = ["pull", "resolve"]
TOML
run_fleet mirror "$work/mirror-hosts" "$work/mirror/registry.log"
echo "== the same again, the cache now warm" >&2
run_fleet mirror-warm "$work/mirror-hosts" "$work/mirror/registry.log"

python3 - "$results" "$nodes" "$rate" "$workload" >"$work/fleet.md" <<'PY'
import json, statistics, sys, time
rows = [json.loads(l) for l in open(sys.argv[1])]
nodes, rate, workload = sys.argv[2:5]
names = {"direct": "no mirror", "mirror": "pull-through cache, cold", "mirror-warm": "pull-through cache, warm"}
# Without a mirror every blob request of the nodes reaches the origin: the same workload makes
# the same requests, so that count is what a mirror can keep off the origin.
wanted = next(r["origin_requests_nodes"] for r in rows if r["mode"] == "direct")
print(f"# {nodes} nodes start {workload} lazily at once (bench/fleet.sh, {time.strftime('%Y-%m-%d')})\n")
print(f"Origin behind a {rate} Mbit/s link; each node is its own `soci mount` (own root, no background fetch) plus the workload in a chroot; the cache is Debian's docker-registry 2.8 in proxy mode on the host. "
      f"Origin requests: blob GETs in the origin's log, from the nodes (soci's user agent) and from the cache. Kept off the origin: the nodes' {wanted} blob requests (as many as without a mirror) minus those that reached the origin.\n")
print("| mode | origin MB | origin requests (nodes / cache) | node requests kept off the origin | time to ready, median (min–max) | per node (s) |")
print("|---|---|---|---|---|---|")
for r in rows:
    t = r["times"]
    kept = "" if r["mode"] == "direct" else f"{1 - r['origin_requests_nodes'] / max(wanted, 1):.2f} ({wanted - r['origin_requests_nodes']} of {wanted})"
    per = " ".join(f"{x:.2f}" for x in t)
    print(f"| {names[r['mode']]} | {r['origin_bytes'] / 1e6:.1f} | {r['origin_requests_nodes']} / {r['origin_requests_cache']} | {kept} | {statistics.median(t):.2f} s ({min(t):.2f}–{max(t):.2f}) | {per} |")
PY
cat "$work/fleet.md"
mkdir -p bench/results
cp "$work/fleet.md" bench/results/fleet.md
