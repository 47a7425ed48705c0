# Sourced by scripts: start soci-snapshotter-grpc and a containerd 1.6 that uses it as the
# proxy snapshotter `soci`, both with their own state under a directory, and stop them.
#   start_soci_containerd DIR SNAPSHOTTER_BIN [CONFIG_TOML_TEXT]
#       sets CTD_ADDR (containerd socket), SOCI_SNAP_ROOT (daemon root), SOCI_METRICS
#       (host:port of /metrics); needs root
#   stop_soci_containerd DIR
#       kills containerd, its shims, the daemon and its FUSE manager; unmounts what is left
#   SOCI_ENV_FS_SIZE=16G (optional): DIR is a fresh ext4 filesystem of that size on a loop
#       file (DIR.img) for each start. Benchmarks set it: on a filesystem where the previous
#       run's tree was just deleted, ext4 skips recently freed inodes one by one when it
#       allocates new ones (`recently_deleted` in perf), and unpacking tens of thousands of
#       files then takes several times longer for whichever mode runs next.

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start_soci_containerd() {
    local dir="$1" bin="$2" extra="${3:-}"
    stop_soci_containerd "$dir"
    rm -rf "$dir"
    if [ -n "${SOCI_ENV_FS_SIZE:-}" ]; then
        rm -f "$dir.img"
        truncate -s "$SOCI_ENV_FS_SIZE" "$dir.img"
        mkfs.ext4 -q -F -E lazy_itable_init=1,lazy_journal_init=1 "$dir.img"
        mkdir -p "$dir"
        mount -o loop "$dir.img" "$dir"
    fi
    mkdir -p "$dir/ctd/root" "$dir/ctd/state" "$dir/soci"
    SOCI_SNAP_ROOT="$dir/soci/root"
    SOCI_METRICS="127.0.0.1:$(free_port)"
    printf 'metrics_address = "%s"\n%s\n' "$SOCI_METRICS" "$extra" >"$dir/soci/config.toml"
    "$bin" --root "$SOCI_SNAP_ROOT" --address "$dir/soci/soci.sock" \
        --config "$dir/soci/config.toml" >"$dir/soci/daemon.log" 2>&1 &
    echo $! >"$dir/soci/daemon.pid"
    disown
    for _ in $(seq 200); do [ -S "$dir/soci/soci.sock" ] && break; sleep 0.05; done
    [ -S "$dir/soci/soci.sock" ] || { cat "$dir/soci/daemon.log" >&2; return 1; }
    CTD_ADDR="$dir/ctd/containerd.sock"
    cat >"$dir/ctd/config.toml" <<TOML
version = 2
disabled_plugins = ["io.containerd.grpc.v1.cri"]
root = "$dir/ctd/root"
state = "$dir/ctd/state"

[grpc]
  address = "$CTD_ADDR"

[ttrpc]
  address = "$CTD_ADDR.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "$dir/ctd/opt"

[proxy_plugins]
  [proxy_plugins.soci]
    type = "snapshot"
    address = "$dir/soci/soci.sock"
TOML
    containerd --config "$dir/ctd/config.toml" >"$dir/ctd/containerd.log" 2>&1 &
    echo $! >"$dir/ctd/containerd.pid"
    disown
    for _ in $(seq 300); do
        ctr -a "$CTD_ADDR" version >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    tail -n 30 "$dir/ctd/containerd.log" >&2
    return 1
}

stop_soci_containerd() {
    local dir="$1" pid
    [ -d "$dir" ] || return 0
    # The keeper before its manager: it would start a new manager for the one killed.
    for f in "$dir/ctd/containerd.pid" "$dir/soci/daemon.pid" "$dir/soci/root/snapshotter/fuse-keeper.pid" \
        "$dir/soci/root/snapshotter/fuse-manager.pid"; do
        if [ -f "$f" ]; then
            pid=$(cat "$f")
            kill -9 "$pid" 2>/dev/null || true
            rm -f "$f"
        fi
    done
    # Shims outlive containerd by design; ours name our socket on their command line.
    pkill -9 -f "containerd-shim.*-address $dir/ctd/containerd.sock" 2>/dev/null || true
    awk -v d="$dir" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo | sort -r |
        while read -r m; do umount -l "$m" 2>/dev/null || true; done
    rm -f "$dir.img"
}
