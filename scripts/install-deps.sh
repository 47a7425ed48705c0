#!/usr/bin/env bash
# Installs the system packages soci-rs's tests and demo use, when they are missing.
# Safe to run repeatedly; needs root (or sudo) on Debian/Ubuntu.
set -euo pipefail

packages=(pigz gzip zstd umoci skopeo debootstrap jq docker-registry apache2-utils openssl
          containerd runc protobuf-compiler busybox-static python3-venv)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "installing: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
