#!/usr/bin/env bash
# Installs, with apt-get, only the Debian packages this machine lacks.
# Usage: Scripts/install-deps.sh [PACKAGE...]   (default: what build, run and tests need)
set -euo pipefail
packages=("$@")
if [ ${#packages[@]} -eq 0 ]; then
    packages=(libpcap-dev liburing-dev iproute2 iputils-ping netcat-openbsd tcpdump tshark python3 python3-prometheus-client man-db bind9-dnsutils procps util-linux)
fi
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: missing packages: ${missing[*]} (run as root, or install them)" >&2
    exit 1
fi
echo "install-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
