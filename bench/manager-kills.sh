#!/usr/bin/env bash
# FUSE manager crash survival under load (issue 18): KILLS `kill -9`s of the FUSE manager
# spread over a start-heavy workload, through real containerd + runc. Counts failed reads
# and measures how long a read that arrives while no manager runs waits.
#
# Workload (python-hello of bench/workloads.sh, lazy through its v2 SOCI index), all at once:
#   starts   containers start one after another (`ctr run --rm`), each after the page cache
#            was dropped, so every start reads its files through FUSE again; a start fails
#            when it exits non-zero or does not print its ready line
#   probe    right after each kill, a 4 KiB O_DIRECT read at a new offset of a file in the
#            lazy mount: its duration is the wait of a read issued while no manager runs
#   killer   KILLS times: kill -9 the manager, wait for the keeper's new one, pause 0.2-0.6 s
# Bounded: each start has 60 s, each probe 30 s, the whole run MAX_SECONDS.
#
#   bench/manager-kills.sh [--kills N] [--max-seconds S]     (defaults: 100 kills, 900 s)
#   BENCH_WORK=DIR   scratch space (default: bench/work/kills)
# Writes bench/results/manager-kills.md.
set -euo pipefail
cd "$(dirname "$0")/.."
kills=100 max_seconds=900 workload=python-hello
while [ $# -gt 0 ]; do
    case "$1" in
        --kills) kills="$2"; shift 2 ;;
        --max-seconds) max_seconds="$2"; shift 2 ;;
        -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
        *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
[ "$(id -u)" -eq 0 ] || { echo "bench/manager-kills.sh needs root (FUSE, containerd)" >&2; exit 1; }
work="${BENCH_WORK:-$PWD/bench/work/kills}"
mkdir -p "$work" bench/results
scripts/install-deps.sh
cargo build --release -q -p soci-cli -p soci-snapshotter
soci="$PWD/target/release/soci"
snap="$PWD/target/release/soci-snapshotter-grpc"
. bench/lib-workload.sh
load_workload "$work/workloads" "$workload"
layout=$WORKLOAD_LAYOUT ready=$WORKLOAD_READY

. bench/lib-link.sh
. scripts/lib-containerd.sh
cleanup() {
    stop_soci_containerd "$work/env" || true
    link_down
}
trap cleanup EXIT
link_up "$work/link" 1000 0
link_set_rate 0
link_seed "$layout" "$workload" "$soci" "$work/cli"
ref="$LINK_REGISTRY/$workload:soci"
start_soci_containerd "$work/env" "$snap" "[registry]
config_path = \"$work/link/certs.d\""
"$soci" --root "$work/env/cli" --address "$CTD_ADDR" image rpull --plain-http "$ref" >/dev/null
python3 - "$CTD_ADDR" "$ref" "$ready" "$SOCI_SNAP_ROOT" "$kills" "$max_seconds" "$layout.cmd" \
    "$snap" >"$work/summary.json" <<'PY'
import json, os, random, statistics, subprocess, sys, threading, time
addr, ref, ready, root, kills, max_seconds, cmd_file, snap = sys.argv[1:9]
kills, max_seconds = int(kills), float(max_seconds)
cmd = json.load(open(cmd_file))
sdir = os.path.join(root, "snapshotter")
deadline = time.monotonic() + max_seconds
stop = threading.Event()
starts = {"ok": 0, "failed": 0, "errors": []}

def manager_pid():
    try:
        pid = int(open(os.path.join(sdir, "fuse-manager.pid")).read())
        return pid if os.path.exists(f"/proc/{pid}") else None
    except (OSError, ValueError):
        return None

def lazy_file():
    mounts = [l.split()[4] for l in open("/proc/self/mountinfo")
              if " - fuse" in l and l.split()[4].startswith(root)]
    best = None
    for m in mounts:
        for d, _, files in os.walk(m):
            for f in files:
                p = os.path.join(d, f)
                try:
                    st = os.lstat(p)
                except OSError:
                    continue
                if os.path.isfile(p) and not os.path.islink(p) and (best is None or st.st_size > best[1]):
                    best = (p, st.st_size)
    return best

def starter():
    i = 0
    while not stop.is_set() and time.monotonic() < deadline:
        i += 1
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3")
        try:
            p = subprocess.run(["ctr", "-a", addr, "run", "--rm", "--snapshotter", "soci", ref,
                                f"kill-{i}"] + cmd, capture_output=True, text=True, timeout=60)
            good = p.returncode == 0 and ready in p.stdout.splitlines()
            err = p.stderr[-300:]
        except subprocess.TimeoutExpired:
            good, err = False, "timed out after 60 s"
        if good:
            starts["ok"] += 1
        else:
            starts["failed"] += 1
            starts["errors"].append(err)

path, size = lazy_file()
print(f"probe file {path} ({size} bytes)", file=sys.stderr)
t = threading.Thread(target=starter)
t.start()
waits, probe_failures, done = [], 0, 0
for k in range(kills):
    if time.monotonic() > deadline:
        break
    old = manager_pid()
    if old is None:
        time.sleep(0.05)
        continue
    os.kill(old, 9)
    off = random.randrange(0, max(1, size // 4096))
    t0 = time.monotonic()
    try:
        r = subprocess.run(["dd", f"if={path}", "iflag=direct", "bs=4096", "count=1", f"skip={off}",
                            "of=/dev/null"], capture_output=True, timeout=30)
        ok = r.returncode == 0
    except subprocess.TimeoutExpired:
        ok = False
    waits.append(time.monotonic() - t0)
    probe_failures += 0 if ok else 1
    done += 1
    while manager_pid() in (None, old) and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(random.uniform(0.2, 0.6))
stop.set()
t.join()
json.dump({"kills": done, "probe_failures": probe_failures, "starts_ok": starts["ok"],
           "starts_failed": starts["failed"], "errors": starts["errors"][:5],
           "wait_median_ms": statistics.median(waits) * 1000 if waits else None,
           "wait_max_ms": max(waits) * 1000 if waits else None,
           "wait_p90_ms": sorted(waits)[int(len(waits) * 0.9)] * 1000 if waits else None}, sys.stdout)
PY
cat "$work/summary.json" >&2
python3 - "$work/summary.json" "$(date -u +%F)" "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)" "$(nproc)" >bench/results/manager-kills.md <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
print(f"# FUSE manager kills under load ({sys.argv[2]}, {sys.argv[3]}, {sys.argv[4]} cores)\n")
print("`bench/manager-kills.sh`: python-hello started lazily over and over (page cache dropped")
print("before each start) while the FUSE manager is killed with SIGKILL; after each kill a 4 KiB")
print("O_DIRECT read of the lazy mount is timed (it arrives while no manager runs).\n")
print("| kills | failed reads (probe) | container starts ok | failed | read wait median | p90 | max |")
print("|---|---|---|---|---|---|---|")
print(f"| {s['kills']} | {s['probe_failures']} | {s['starts_ok']} | {s['starts_failed']} | "
      f"{s['wait_median_ms']:.0f} ms | {s['wait_p90_ms']:.0f} ms | {s['wait_max_ms']:.0f} ms |")
for e in s["errors"]:
    print(f"\nfailed start: `{e.strip()}`")
PY
cat bench/results/manager-kills.md
