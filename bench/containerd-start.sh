#!/usr/bin/env bash
# Time to ready through real containerd: `soci image rpull` + `ctr run --snapshotter soci` of
# an image with a SOCI index, against `ctr images pull` + `ctr run` (overlayfs) of the same
# image, side by side and alternating. Every round starts from nothing local: a fresh
# containerd and a fresh snapshotter root (empty span cache). Prints each round and the
# medians. Needs root, and a registry serving both references.
#
#   bench/containerd-start.sh LAZY_REF PLAIN_REF ROUNDS COMMAND...
#   e.g. bench/containerd-start.sh 127.0.0.1:5000/py:soci 127.0.0.1:5000/py:latest 5 python3 /app/app.py
#   BENCH_WORK=DIR   scratch directory (default: bench/work/containerd-start)
set -euo pipefail
cd "$(dirname "$0")/.."
lazy_ref="$1" plain_ref="$2" rounds="$3"
shift 3
[ "$#" -gt 0 ] || { echo "usage: $0 LAZY_REF PLAIN_REF ROUNDS COMMAND..." >&2; exit 2; }
work="${BENCH_WORK:-$PWD/bench/work/containerd-start}"
cargo build --release -q -p soci-cli -p soci-snapshotter
soci="$PWD/target/release/soci"
snap="$PWD/target/release/soci-snapshotter-grpc"
. scripts/lib-containerd.sh
trap 'stop_soci_containerd "$work/env"' EXIT

now() { date +%s.%N; }
results="$work/results.txt"
mkdir -p "$work"
: >"$results"

run_lazy() {
    local i="$1" t0 t1 fetched
    shift
    start_soci_containerd "$work/env" "$snap" $'[background_fetch]\ndisable = true'
    sync # earlier rounds' dirty pages must not be written back on this round's clock
    t0=$(now)
    "$soci" --root "$work/env/cli" --address "$CTD_ADDR" image rpull "$lazy_ref" >/dev/null
    ctr -a "$CTD_ADDR" run --rm --snapshotter soci "$lazy_ref" "lazy-$i" "$@" >"$work/out.lazy"
    t1=$(now)
    fetched=$(python3 - "$SOCI_METRICS" <<'PY'
import sys, urllib.request
text = urllib.request.urlopen(f"http://{sys.argv[1]}/metrics").read().decode()
print(int(sum(float(l.rsplit(" ", 1)[1]) for l in text.splitlines()
              if l.startswith("soci_fetched_bytes_total"))))
PY
)
    stop_soci_containerd "$work/env"
    echo "lazy $(python3 -c "print(f'{$t1 - $t0:.3f}')") $fetched" >>"$results"
}

run_full() {
    local i="$1" t0 t1
    shift
    start_soci_containerd "$work/env" "$snap"
    sync
    t0=$(now)
    ctr -a "$CTD_ADDR" images pull --plain-http "$plain_ref" >/dev/null
    ctr -a "$CTD_ADDR" run --rm "$plain_ref" "full-$i" "$@" >"$work/out.full"
    t1=$(now)
    stop_soci_containerd "$work/env"
    echo "full $(python3 -c "print(f'{$t1 - $t0:.3f}')") 0" >>"$results"
}

for i in $(seq "$rounds"); do
    if [ $((i % 2)) -eq 1 ]; then run_lazy "$i" "$@"; run_full "$i" "$@"; else run_full "$i" "$@"; run_lazy "$i" "$@"; fi
    echo "round $i: lazy $(grep '^lazy' "$results" | tail -n1 | cut -d' ' -f2) s, full $(grep '^full' "$results" | tail -n1 | cut -d' ' -f2) s" >&2
done
if ! cmp -s "$work/out.lazy" "$work/out.full"; then
    echo "the two runs printed different output:" >&2
    diff "$work/out.lazy" "$work/out.full" >&2 || true
    exit 1
fi
echo "program output: $(head -c 200 "$work/out.lazy")"
python3 - "$results" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
lazy = [float(r[1]) for r in rows if r[0] == "lazy"]
full = [float(r[1]) for r in rows if r[0] == "full"]
fetched = statistics.median(int(r[2]) for r in rows if r[0] == "lazy")
ml, mf = statistics.median(lazy), statistics.median(full)
print(f"time to ready, lazy (soci image rpull + ctr run --snapshotter soci): median {ml:.2f} s of {len(lazy)} ({', '.join(f'{x:.2f}' for x in lazy)})")
print(f"time to ready, full (ctr images pull + ctr run, overlayfs):          median {mf:.2f} s of {len(full)} ({', '.join(f'{x:.2f}' for x in full)})")
print(f"lazy/full {ml / mf:.2f}x; the lazy runs fetched a median {fetched / 1e6:.1f} MB of layer data")
PY
