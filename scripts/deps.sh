#!/usr/bin/env bash
# Installs the Debian bookworm packages needed to build and test AgentMesh. Idempotent: when every
# package is already installed it returns at once; otherwise it runs apt-get (as root, or via sudo).
set -euo pipefail

PACKAGES=(
  g++ cmake make pkg-config git ca-certificates
  libsodium-dev nlohmann-json3-dev libfmt-dev catch2
  libuv1-dev libwslay-dev libhttp-parser-dev libssl-dev openssl
  libsqlite3-dev libcurl4-openssl-dev libcli11-dev libvalijson-dev libc-ares-dev libpq-dev
)

missing=()
for pkg in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "deps.sh: need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
  SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
echo "deps.sh: installing ${missing[*]}" >&2
if ! $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"; then
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
