# Sourced by scripts: start Debian's docker-registry (distribution 2.8) on a free loopback
# port with storage under $1; sets REGISTRY_ADDR and stops the registry on exit.
#   start_registry DIR
start_registry() {
    local dir="$1" port
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    rm -rf "$dir"
    mkdir -p "$dir"
    cat >"$dir/config.yml" <<YAML
version: 0.1
log: {level: warn, accesslog: {disabled: true}}
storage:
  filesystem: {rootdirectory: $dir/data}
  delete: {enabled: true}
http: {addr: "127.0.0.1:$port", secret: soci-local}
YAML
    docker-registry serve "$dir/config.yml" >"$dir/log" 2>&1 &
    REGISTRY_PID=$!
    trap 'kill $REGISTRY_PID 2>/dev/null || true' EXIT
    for _ in $(seq 100); do
        if python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/v2/')" 2>/dev/null; then
            REGISTRY_ADDR="127.0.0.1:$port"
            return 0
        fi
        sleep 0.2
    done
    echo "docker-registry did not start; its log:" >&2
    cat "$dir/log" >&2
    return 1
}
