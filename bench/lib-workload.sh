# Sourced by bench scripts that run one workload of bench/workloads.sh.
#
#   load_workload DIR NAME    builds (or reuses) workload NAME under DIR and sets
#                             WORKLOAD_LAYOUT (its OCI layout), WORKLOAD_READY (the line it
#                             prints when useful work begins) and WORKLOAD_CMD (its command,
#                             an array)
load_workload() {
    local dir="$1" name="$2"
    bench/workloads.sh "$dir" "$name"
    WORKLOAD_LAYOUT="$dir/$name"
    WORKLOAD_READY=$(cat "$WORKLOAD_LAYOUT.ready")
    mapfile -t WORKLOAD_CMD < <(python3 -c 'import json,sys; print("\n".join(json.load(open(sys.argv[1]))))' "$WORKLOAD_LAYOUT.cmd")
}
