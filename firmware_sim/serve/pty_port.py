"""A pseudo-terminal standing in for a meter's serial port: the agent's reader opens ``device``.

:class:`PtyPushPort` writes ``frame(n, now)`` every ``period_s`` clock seconds (push meters: SML,
DLMS/COSEM HAN ports); :class:`PtyResponder` answers what the reader writes (request/response
meters: IEC 62056-21, M-Bus) with ``respond(request_bytes)``.
"""

from __future__ import annotations

import os
import select
import threading
import tty
from typing import Callable

from edge_agent.clock import Clock

__all__ = ["PtyPushPort", "PtyResponder"]


class _Pty:
    def __init__(self) -> None:
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)  # a raw serial line: no CR/LF translation, no echo
        tty.setraw(self._master)
        self.device = os.ttyname(self._slave)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _run(self) -> None:
        raise NotImplementedError

    def start(self):
        self._thread = threading.Thread(target=self._run, name=type(self).__name__, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        for fd in (self._master, self._slave):
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class PtyPushPort(_Pty):
    """Writes one frame every ``period_s`` of ``clock`` until stopped."""

    def __init__(self, frame: Callable[[int, float], bytes], clock: Clock, period_s: float = 1.0) -> None:
        super().__init__()
        self.frame = frame
        self.clock = clock
        self.period_s = period_s
        self.sent = 0

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sent += 1
            data = self.frame(self.sent, self.clock.now())
            try:
                if data:
                    os.write(self._master, data)
            except OSError:
                return
            waited = getattr(self.clock, "wait", None)
            if waited is not None:
                if waited(self._stop, self.period_s):
                    return
            elif self._stop.wait(0.05):
                return


class PtyResponder(_Pty):
    """Feeds what the reader writes to ``respond`` and writes back what it returns."""

    def __init__(self, respond: Callable[[bytes], bytes]) -> None:
        super().__init__()
        self.respond = respond
        self.requests = 0

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([self._master], [], [], 0.05)
                if not ready:
                    continue
                data = os.read(self._master, 4096)
            except OSError:
                return
            self.requests += 1
            answer = self.respond(data)
            if answer:
                try:
                    os.write(self._master, answer)
                except OSError:
                    return
