#!/usr/bin/env bash
# Installs the Debian bookworm packages needed to build and test AgentMesh. Idempotent: when every
# package is already installed it returns at once; otherwise it runs apt-get (as root, or via sudo).
#
# Test servers: the PostgreSQL and DNS tests start their own throw-away `postgres` and `dnsmasq`
# on free loopback ports. Nothing here may leave a system service running: DNS comes from
# dnsmasq-base (the binary, without the dnsmasq package's system service that would claim port
# 53), and packages are installed with a policy-rc.d that forbids starting services (unless the
# host already has one), so the postgresql package does not start its "main" cluster either.
set -euo pipefail

PACKAGES=(
  g++ cmake make pkg-config git ca-certificates
  libsodium-dev nlohmann-json3-dev libfmt-dev catch2
  libuv1-dev libwslay-dev libhttp-parser-dev libssl-dev openssl
  libsqlite3-dev libcurl4-openssl-dev libcli11-dev libvalijson-dev libc-ares-dev libpq-dev
  libjemalloc-dev
  postgresql postgresql-client dnsmasq-base
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

# Keep maintainer scripts from starting services (exit 101 = "action forbidden", honoured by
# invoke-rc.d and deb-systemd-invoke). Only when the host has no policy of its own; removed on exit.
POLICY=/usr/sbin/policy-rc.d
if [ ! -e "$POLICY" ]; then
  printf '#!/bin/sh\n# written by agentmesh scripts/deps.sh for the duration of apt-get\nexit 101\n' |
    $SUDO tee "$POLICY" >/dev/null
  $SUDO chmod 0755 "$POLICY"
  trap '$SUDO rm -f "$POLICY"' EXIT
fi

echo "deps.sh: installing ${missing[*]}" >&2
if ! $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"; then
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if dpkg-query -W -f='${Status}' dnsmasq 2>/dev/null | grep -q "install ok installed"; then
  echo "deps.sh: note: the full 'dnsmasq' package is installed; its system service (port 53) is" \
       "not needed by the tests, which run their own dnsmasq on a free loopback port" >&2
fi
