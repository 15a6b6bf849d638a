#!/usr/bin/env bash
# Installs the system packages ToolOps builds and tests against (Debian/Ubuntu), if missing.
set -euo pipefail
# prometheus: the telemetry tests have a real Prometheus scrape /metrics.
packages=(libhiredis-dev libssl-dev redis-server redis-tools pkg-config openssl prometheus)
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
# Without recommends: prometheus would pull in node-exporter and a container engine.
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# The Debian packages start a system redis on 6379 (and prometheus on 9090, under systemd);
# tests start their own servers on free ports.
