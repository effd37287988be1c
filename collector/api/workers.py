"""N API processes on one port, each with its own ``SO_REUSEPORT`` listening socket.

uvicorn's own ``workers=N`` shares one listening socket between the processes, and whichever
process wakes first accepts a whole burst of connections: with keep-alive clients (dashboards,
Tableau, the query benchmark's 50 clients) one process ended up serving 50 connections of 50
while the other idled, and latency was that of a single process. With a socket per process the
kernel spreads new connections over the processes by hash, so each serves about 1/N of them.

The parent only supervises: it restarts a process that dies, and on SIGTERM/SIGINT asks every
process to finish its requests (uvicorn's graceful shutdown) before it returns.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import socket
import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collector.settings import CollectorSettings

__all__ = ["serve_workers", "reuseport_socket"]

_RESTART_BACKOFF_S = 1.0


def reuseport_socket(host: str, port: int, listen: bool = True) -> socket.socket:
    """A TCP socket on (host, port) that other processes may bind to the same address too;
    listening unless ``listen`` is false (only listening sockets are handed connections)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    if listen:
        sock.listen(2048)
    return sock


def _worker(host: str, port: int, settings: CollectorSettings, database_url: str) -> None:
    import uvicorn

    from collector.api.app import create_app

    sock = reuseport_socket(host, port)
    config = uvicorn.Config(create_app(settings, database_url=database_url), log_level="warning")
    uvicorn.Server(config).run(sockets=[sock])


def serve_workers(host: str, port: int, workers: int, stop: threading.Event, settings: CollectorSettings,
                  database_url: str) -> None:
    """Run ``workers`` API processes until ``stop`` is set, each building its app from ``settings``
    (handed over the process pipe, never through the environment) on ``database_url``."""
    if not hasattr(socket, "SO_REUSEPORT"):
        raise OSError("SO_REUSEPORT is not available on this platform: run one process per port")
    # the parent binds the port without listening (it must not be handed connections), so a
    # port taken by another program fails here, once, with one clear error
    guard = reuseport_socket(host, port, listen=False)
    ctx = mp.get_context("spawn")
    procs: list = [None] * workers
    try:
        while not stop.is_set():
            for i, proc in enumerate(procs):
                if proc is None or not proc.is_alive():
                    procs[i] = ctx.Process(target=_worker, args=(host, port, settings, database_url), name=f"gridsight-api-{i}", daemon=False)
                    procs[i].start()
            stop.wait(_RESTART_BACKOFF_S)
    finally:
        for proc in procs:
            if proc is not None and proc.is_alive():
                os.kill(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        for proc in procs:
            if proc is not None:
                proc.join(max(0.0, deadline - time.monotonic()))
                if proc.is_alive():
                    proc.kill()
        guard.close()
