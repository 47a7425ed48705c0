# Sourced by bench scripts: a registry behind a rate-capped link. The registry (Debian's
# docker-registry) runs in a network namespace of its own, reached from the host over a veth
# pair addressed from the benchmarking range 198.18.0.0/15, with a `tbf` cap on both
# directions (this kernel has no `netem`). Needs root.
#
#   link_up DIR RATE_MBIT [RTT_MS]
#                              creates the namespace, the veth pair and the cap, and starts the
#                              registry; sets LINK_REGISTRY (host:port seen from the host, over
#                              the cap) and LINK_LOCAL (host:port inside the namespace, no cap,
#                              for seeding images); writes DIR/certs.d (containerd-style
#                              hosts.toml: plain HTTP for LINK_REGISTRY). With RTT_MS > 0 the
#                              registry sits behind bench's delay-proxy in the namespace, which
#                              adds RTT_MS/2 to each direction of every exchange (the TCP
#                              handshake itself is not delayed); LINK_LOCAL bypasses it.
#                              LINK_LOG_LEVEL=info makes the registry log every request
#                              ("response completed" lines in DIR/registry.log).
#   link_set_rate RATE_MBIT    changes the cap on both ends; 0 removes it (uncapped veth)
#   link_exec CMD...           runs CMD inside the namespace
#   link_seed LAYOUT NAME SOCI CLI_ROOT [CONVERT_ARGS...]
#                              pushes the OCI layout as NAME:latest and `soci convert`s it to
#                              NAME:soci (v2 index), both inside the namespace (no cap); the
#                              CLI's root CLI_ROOT is made anew
#   link_down                  stops the registry and deletes the namespace (and the veth pair)

LINK_NS=""
LINK_HOST_IF="sbh0"
LINK_NS_IF="sbn0"
LINK_HOST_ADDR="198.18.0.1"
LINK_NS_ADDR="198.18.0.2"
LINK_PORT=5000

link_exec() {
    ip netns exec "$LINK_NS" "$@"
}

link_seed() {
    local layout="$1" name="$2" soci="$3" cli_root="$4"
    shift 4
    link_exec skopeo copy -q --dest-tls-verify=false "oci:$layout:latest" "docker://$LINK_LOCAL/$name:latest"
    rm -rf "$cli_root"
    link_exec "$soci" --root "$cli_root" convert "$@" "$LINK_LOCAL/$name:latest" "$LINK_LOCAL/$name:soci" >/dev/null
}

link_up() {
    local dir="$1" rate="$2" rtt="${3:-0}" registry_addr
    # The machine's own addresses must not overlap the range we take (198.18.0.0/30).
    if ip -4 addr show | grep -q ' 198\.18\.0\.[0-3]/' || ip -4 route show | grep -q '^198\.18\.0\.'; then
        echo "198.18.0.0/30 is already in use on this machine (ip addr / ip route); not touching it" >&2
        return 1
    fi
    if ! command -v docker-registry >/dev/null || ! command -v tc >/dev/null; then
        echo "docker-registry and tc (iproute2) are needed: scripts/install-deps.sh" >&2
        return 1
    fi
    LINK_NS="soci-bench-$$"
    ip netns add "$LINK_NS"
    ip link add "$LINK_HOST_IF" type veth peer name "$LINK_NS_IF"
    ip link set "$LINK_NS_IF" netns "$LINK_NS"
    ip addr add "$LINK_HOST_ADDR/30" dev "$LINK_HOST_IF"
    ip link set "$LINK_HOST_IF" up
    link_exec ip addr add "$LINK_NS_ADDR/30" dev "$LINK_NS_IF"
    link_exec ip link set "$LINK_NS_IF" up
    link_exec ip link set lo up
    # tbf: the burst must hold at least one timer tick of data at the rate (rate / HZ); 1 MB
    # covers any HZ up to 1000 at 2 Gbit/s while keeping bursts short against the cap.
    tc qdisc add dev "$LINK_HOST_IF" root tbf rate "${rate}mbit" burst 1mb latency 100ms
    link_exec tc qdisc add dev "$LINK_NS_IF" root tbf rate "${rate}mbit" burst 1mb latency 100ms
    # Offloads would let the veth hand tbf 64 KB super-packets; keep segments real.
    ethtool -K "$LINK_HOST_IF" tso off gso off gro off >/dev/null 2>&1 || true
    link_exec ethtool -K "$LINK_NS_IF" tso off gso off gro off >/dev/null 2>&1 || true

    mkdir -p "$dir"
    # With added latency the registry listens on loopback only and the proxy takes its port.
    registry_addr="0.0.0.0:$LINK_PORT"
    LINK_LOCAL="127.0.0.1:$LINK_PORT"
    if [ "$rtt" -gt 0 ]; then
        registry_addr="127.0.0.1:$((LINK_PORT + 1))"
        LINK_LOCAL="$registry_addr"
        link_exec "$DELAY_PROXY" --listen "0.0.0.0:$LINK_PORT" --to "$registry_addr" \
            --delay-ms "$((rtt / 2))" >"$dir/delay-proxy.log" 2>&1 &
        disown
    fi
    cat >"$dir/registry.yml" <<YAML
version: 0.1
log: {level: ${LINK_LOG_LEVEL:-warn}, accesslog: {disabled: true}}
storage:
  filesystem: {rootdirectory: $dir/data}
  delete: {enabled: true}
http: {addr: "$registry_addr", secret: soci-bench}
YAML
    link_exec docker-registry serve "$dir/registry.yml" >"$dir/registry.log" 2>&1 &
    LINK_REGISTRY_PID=$!
    disown
    LINK_REGISTRY="$LINK_NS_ADDR:$LINK_PORT"
    local ok=""
    for _ in $(seq 100); do
        if curl -sf -o /dev/null "http://$LINK_REGISTRY/v2/"; then ok=1; break; fi
        sleep 0.1
    done
    if [ -z "$ok" ]; then
        echo "the registry in $LINK_NS did not answer at $LINK_REGISTRY; its log:" >&2
        cat "$dir/registry.log" >&2
        return 1
    fi
    mkdir -p "$dir/certs.d/$LINK_REGISTRY"
    cat >"$dir/certs.d/$LINK_REGISTRY/hosts.toml" <<TOML
server = "http://$LINK_REGISTRY"

[host."http://$LINK_REGISTRY"]
  capabilities = ["pull", "resolve", "push"]
TOML
}

link_set_rate() {
    local rate="$1"
    if [ "$rate" = 0 ]; then
        tc qdisc del dev "$LINK_HOST_IF" root 2>/dev/null || true
        link_exec tc qdisc del dev "$LINK_NS_IF" root 2>/dev/null || true
    else
        tc qdisc replace dev "$LINK_HOST_IF" root tbf rate "${rate}mbit" burst 1mb latency 100ms
        link_exec tc qdisc replace dev "$LINK_NS_IF" root tbf rate "${rate}mbit" burst 1mb latency 100ms
    fi
}

link_down() {
    [ -n "$LINK_NS" ] || return 0
    [ -n "${LINK_REGISTRY_PID:-}" ] && kill "$LINK_REGISTRY_PID" 2>/dev/null || true
    # Anything else still running in the namespace goes with it.
    ip netns pids "$LINK_NS" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
    ip netns del "$LINK_NS" 2>/dev/null || true
    ip link del "$LINK_HOST_IF" 2>/dev/null || true
    LINK_NS=""
}
