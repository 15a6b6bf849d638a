#!/usr/bin/env bash
# Installs the system packages ToolOps needs (Debian/Ubuntu), if missing.
#   install-deps.sh        what building and running need (make run)
#   install-deps.sh test   plus what the tests drive as real parts (make test): Prometheus
#                          scraping /metrics, HAProxy in front of a local cluster, a headless
#                          chromium for the dashboard, wrk, docker-compose to validate the
#                          compose file
set -euo pipefail
packages=(libhiredis-dev libssl-dev redis-server redis-tools pkg-config openssl)
if [ "${1:-}" = "test" ]; then
    packages+=(prometheus haproxy chromium chromium-driver wrk docker-compose)
fi
missing=()
for package in "${packages[@]}"; do
    # "deinstall ok config-files" (removed, not purged) also exits 0: require "install ok installed".
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -eq 0 ]; then exit 0; fi
echo "installing: ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# Without recommends: prometheus would pull in node-exporter, docker-compose a container engine.
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# The Debian packages may start a system redis on 6379 (and prometheus on 9090, haproxy, under
# systemd); tests start their own servers on free ports.
