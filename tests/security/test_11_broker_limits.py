"""Item 11: the shipped broker config limits connections: idle TLS connections that never send CONNECT
cannot exhaust the broker beyond ``max_connections``."""

from __future__ import annotations

import re
import resource
import socket
import time
import pytest

from broker_support import SHIPPED_CONF
from security_support import MqttSession, gateway_password


def _setting(name: str) -> int | None:
    match = re.search(rf"^{name}\s+(-?\d+)\s*$", SHIPPED_CONF.read_text(), re.M)
    return int(match.group(1)) if match else None


def _still_open(sock: socket.socket) -> bool:
    """True while the broker has not closed ``sock`` (nothing is ever sent on it)."""
    sock.setblocking(False)
    try:
        return sock.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        sock.setblocking(True)


@pytest.mark.slow
@pytest.mark.serial  # thousands of sockets against the broker's own silence limit: not beside other tests
def test_the_shipped_config_caps_connections_and_the_broker_enforces_it(shipped_broker):
    fleet, _, port = shipped_broker
    cap = _setting("max_connections")
    assert cap is not None and 0 < cap <= 20_000, "the shipped config sets no max_connections"
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, cap + 500)), hard))
    idle: list[socket.socket] = []
    try:
        # TCP connections that never start TLS nor send CONNECT. On a slow machine opening them can
        # outlast the broker's own limit for a silent connection (~94 s), which then closes the first
        # ones: top the set up until all `cap` are open at once before the one beyond the cap.
        for _attempt in range(5):
            idle = [s for s in idle if _still_open(s)]
            while len(idle) < cap:
                idle.append(socket.create_connection(("127.0.0.1", port), timeout=60))
            time.sleep(0.5)
            if all(_still_open(s) for s in idle):
                break
        extra = socket.create_connection(("127.0.0.1", port), timeout=60)
        extra.settimeout(60)
        try:
            assert extra.recv(1) == b"", "the broker kept a connection beyond max_connections"
        except ConnectionResetError:
            pass
        finally:
            extra.close()
    finally:
        for s in idle:
            s.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    time.sleep(0.5)
    gateway = MqttSession(port, fleet, "gw-a", gateway_password(fleet, "gw-a"), fleet.gateway_dir("gw-a"), "gw-a")
    assert gateway.connack == 0, "a gateway could not connect once the idle connections were gone"
    gateway.close()
