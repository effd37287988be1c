"""A TCP forwarder per gateway, so the fleet simulator can cut one gateway's uplink.

A network partition is the one fault a broker restart cannot imitate: the broker stays up
for everyone else while one site loses its link. Each simulated gateway connects to the
broker through its own :class:`TcpProxy`; :meth:`TcpProxy.cut` drops its open connections
and refuses new ones until :meth:`TcpProxy.restore`. Real sockets, no root, no iptables.
"""

from __future__ import annotations

import asyncio
import threading

from gridsight.local_services import free_port

__all__ = ["TcpProxy", "ProxyHub"]


class TcpProxy:
    """Forward 127.0.0.1:``port`` to ``target_host:target_port`` (runs on a :class:`ProxyHub` loop)."""

    def __init__(self, hub: "ProxyHub", target_port: int, target_host: str = "127.0.0.1",
                 port: int | None = None) -> None:
        self.hub = hub
        self.target = (target_host, target_port)
        self.port = port or free_port()
        self.connected = True
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.connections = 0

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError, OSError):
            pass
        finally:
            writer.close()

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        if not self.connected:
            client_w.close()
            return
        try:
            up_r, up_w = await asyncio.open_connection(*self.target)
        except OSError:
            client_w.close()
            return
        self.connections += 1
        self._writers |= {client_w, up_w}
        try:
            await asyncio.gather(self._pipe(client_r, up_w), self._pipe(up_r, client_w))
        finally:
            self._writers -= {client_w, up_w}

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    def _drop_all(self) -> None:
        for w in list(self._writers):
            transport = w.transport
            if transport is not None:
                transport.abort()
        self._writers.clear()

    def cut(self) -> None:
        """Partition: drop every connection and refuse new ones."""
        self.connected = False
        self.hub.call(self._drop_all)

    def restore(self) -> None:
        self.connected = True

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"


class ProxyHub:
    """One event loop thread serving all proxies."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="proxy-hub", daemon=True)
        self._thread.start()
        self.proxies: list[TcpProxy] = []

    def call(self, fn) -> None:
        self.loop.call_soon_threadsafe(fn)

    def proxy(self, target_port: int) -> TcpProxy:
        p = TcpProxy(self, target_port)
        asyncio.run_coroutine_threadsafe(p._start(), self.loop).result(10)
        self.proxies.append(p)
        return p

    def close(self) -> None:
        async def shutdown() -> None:
            for p in self.proxies:
                p._drop_all()
                if p._server is not None:
                    p._server.close()
        asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
