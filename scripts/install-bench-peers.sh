#!/usr/bin/env bash
# Installs the systems `tessera-bench compare` measures Tessera against:
# Redis 7 (Debian `redis-server`) and etcd 3.4 (Debian `etcd-server`).
# Idempotent: installs only what is missing, then prints the versions.
# The benchmark starts its own instances on loopback with data in temporary
# directories; the system services these packages bring are not used, so
# this script stops and disables them where systemd runs.
set -euo pipefail

packages=(redis-server etcd-server)
missing=()
for package in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$package")
  fi
done

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  sudo="sudo"
fi

if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  $sudo systemctl disable --now redis-server etcd >/dev/null 2>&1 || true
fi

echo "redis-server: $(redis-server --version)"
echo "etcd: $(etcd --version | head -n 1)"
