#!/usr/bin/env bash
# Install Debian's chromium for the browser tests when no Chromium is on PATH
# (MMOPS_CHROMIUM names another binary). Needs root or sudo for apt-get.
set -eu
if [ -n "${MMOPS_CHROMIUM:-}" ] || command -v chromium >/dev/null 2>&1 \
  || command -v chromium-browser >/dev/null 2>&1 || command -v google-chrome >/dev/null 2>&1; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
echo "installing chromium (Debian package) for the browser tests"
$SUDO apt-get update -q
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q chromium
