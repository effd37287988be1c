#!/usr/bin/env bash
# Installs the system packages gridsight's demo and tests need on Debian/Ubuntu:
# python3-venv (Debian splits venv out of python3), the Mosquitto broker binary, headless Chromium,
# and Debian's python3-numpy and python3-cryptography for the tested armv7l-style gateway install.
# The broker is only started by gridsight itself, on a free port; the service the
# package enables is not used. Without root it prints what to install and fails.
set -euo pipefail
need=()
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
# headless Chromium: the built-in dashboard page's browser tests and README screenshots
command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || need+=(chromium fonts-liberation)
# Debian's own numpy and cryptography: the tested armv7l-style gateway install (docs/examples/debian-armv7l.sh)
if [ -x /usr/bin/python3 ] && command -v apt-get >/dev/null 2>&1; then
  /usr/bin/python3 -c 'import numpy' 2>/dev/null || need+=(python3-numpy)
  /usr/bin/python3 -c 'import cryptography' 2>/dev/null || need+=(python3-cryptography)
fi
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO=sudo; else
    echo "gridsight setup: please install: sudo apt-get install -y ${need[*]}" >&2; exit 1; fi
else SUDO=; fi
echo "gridsight setup: installing ${need[*]} with apt-get"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# Debian starts the packaged broker on 1883; gridsight never relies on it.
