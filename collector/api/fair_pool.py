"""A first-come-first-served gate in front of asyncpg's connection pool.

asyncpg hands out free connections through an ``asyncio.Queue``: a released connection wakes
the oldest waiter, but a request that arrives before that waiter runs takes the connection
instead, and the waiter goes back to the *end* of the line. Under a steady load (more
concurrent requests than connections) some requests were passed over again and again: with
uvloop the query benchmark's p95 was seven times its median. Here a released connection is
handed to the oldest waiting request directly, so requests get a connection in arrival order.
"""

from __future__ import annotations

import asyncio
from collections import deque
from contextlib import asynccontextmanager
from typing import AsyncIterator

import asyncpg

__all__ = ["FairPool"]


class FairPool:
    """``pool`` with at most ``size`` connections lent at once, to requests in arrival order."""

    def __init__(self, pool: asyncpg.Pool, size: int) -> None:
        self.pool = pool
        self._free = size
        self._waiters: deque[asyncio.Future] = deque()

    async def _enter(self) -> None:
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return
        turn = asyncio.get_running_loop().create_future()
        self._waiters.append(turn)
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self._leave()              # our turn came as we were cancelled: pass it on
            else:
                self._waiters.remove(turn)
            raise

    def _leave(self) -> None:
        while self._waiters:
            turn = self._waiters.popleft()
            if not turn.done():
                turn.set_result(None)      # the turn goes to the oldest waiter, never to a newcomer
                return
        self._free += 1

    @asynccontextmanager
    async def acquire(self, timeout: float | None = None) -> AsyncIterator[asyncpg.Connection]:
        """A connection for the block; ``timeout`` bounds the wait for a turn and, again, asyncpg's
        own wait for the connection (``asyncio.TimeoutError``)."""
        if timeout is None:
            await self._enter()
        else:
            await asyncio.wait_for(self._enter(), timeout)
        try:
            async with self.pool.acquire(timeout=timeout) as conn:
                yield conn
        finally:
            self._leave()

    async def close(self) -> None:
        await self.pool.close()
