"""Bounds on what one HTTP request may cost the API: body size and body read time.

A client that announces or streams a body beyond ``max_body_bytes`` gets 413 before the
body is buffered; one that trickles its body slower than one chunk per ``body_timeout_s``
gets 408, so slow-loris clients cannot pin workers. Pure ASGI, so it wraps any app.
"""

from __future__ import annotations

import asyncio
import json

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["RequestLimits"]


class RequestLimits:
    def __init__(self, app: ASGIApp, max_body_bytes: int = 1024 * 1024, body_timeout_s: float = 10.0) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.body_timeout_s = body_timeout_s

    async def _reply(self, send: Send, status: int, detail: str) -> None:
        body = json.dumps({"detail": detail}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    announced = int(value)
                except ValueError:
                    await self._reply(send, 400, "Content-Length is not a number")
                    return
                if announced > self.max_body_bytes:
                    await self._reply(send, 413, f"request body exceeds {self.max_body_bytes} bytes")
                    return
        received = 0
        body_done = False

        async def bounded_receive() -> Message:
            nonlocal received, body_done
            if body_done:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.body_timeout_s)
            except asyncio.TimeoutError:
                raise HTTPException(status_code=408, detail="request body arrived too slowly") from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise HTTPException(status_code=413, detail=f"request body exceeds {self.max_body_bytes} bytes")
                body_done = not message.get("more_body", False)
            return message

        await self.app(scope, bounded_receive, send)
