#!/usr/bin/env bash
# Installs the Debian 12 packages easel builds against (idempotent; quick when present).
set -euo pipefail
PKGS="build-essential cmake pkg-config libopenblas-dev libopenblas0-pthread libdnnl-dev libhwy-dev
  nlohmann-json3-dev libcli11-dev libcpp-httplib-dev libpng-dev libjpeg-dev zlib1g-dev libzip-dev
  libssl-dev libicu-dev libopencv-core-dev libopencv-imgproc-dev time libgtest-dev libgmock-dev libbenchmark-dev libicu-dev"
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q $missing
fi
