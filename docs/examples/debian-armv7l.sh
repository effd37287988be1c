#!/usr/bin/env bash
# The agent on 32-bit Raspberry Pi OS / Debian 12 (armv7l), where PyPI has no numpy,
# cffi or onnxruntime wheels: numpy and cryptography come from Debian, the rest is pure Python,
# the agent scores with its numpy scorer. Run as root. docs/agent.md shows this file;
# tests/edge_agent/test_debian_packages_install.py runs it on this machine with only the paths changed.
set -euo pipefail
: "${WHEEL:=gridsight-0.1.0-py3-none-any.whl}"   # the wheel (or the bundle's wheelhouse/)
: "${GATEWAY_VENV:=/opt/gridsight}"
: "${PYTHON:=/usr/bin/python3}"                 # Debian's own Python 3.11
: "${WHEELHOUSE:=}"                             # optional: a folder of wheels for an offline install

apt-get install -y python3-venv python3-numpy python3-cryptography
"$PYTHON" -m venv --system-site-packages "$GATEWAY_VENV"
# pure-Python dependencies (paho-mqtt 2.x: Debian 12's python3-paho-mqtt is 1.6, too old)
"$GATEWAY_VENV/bin/pip" install ${WHEELHOUSE:+--no-index --find-links "$WHEELHOUSE"} \
    "paho-mqtt>=2.0" "pymodbus>=3.6" "pyserial>=3.5" "dlms-cosem>=21.3"
# our wheel without dependency resolution: numpy and cryptography are Debian's
"$GATEWAY_VENV/bin/pip" install --no-deps "$WHEEL"
"$GATEWAY_VENV/bin/python" -c "import numpy, cryptography, paho.mqtt, edge_agent.runtime; print('ok: numpy', numpy.__version__, 'cryptography', cryptography.__version__)"
