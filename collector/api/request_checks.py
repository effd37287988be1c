"""Checks every request passes before it reaches a route: text parameters without control
characters, and OPTIONS answered with the methods a path allows.

PostgreSQL text cannot hold NUL, and control characters in identifiers and filters are never
meaningful, so a query or path parameter holding one (C0 controls and DEL, NUL included) is a
422 naming the parameter, in FastAPI's validation-error shape, for every route at once.
"""

from __future__ import annotations

import json
import re
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["RequestChecks", "CONTROL_CHARACTERS"]

CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")
_METHODS = ("get", "put", "post", "delete", "patch", "head")


class RequestChecks:
    """Pure ASGI middleware; ``app`` is the FastAPI application whose routes OPTIONS consults."""

    def __init__(self, app: ASGIApp, routes_app=None) -> None:
        self.app = app
        self.routes_app = routes_app
        self._paths: list | None = None

    @staticmethod
    async def _reply(send: Send, status: int, body: dict | None, headers: list[tuple[bytes, bytes]] = ()) -> None:
        raw = json.dumps(body).encode() if body is not None else b""
        head = [(b"content-length", str(len(raw)).encode()), *headers]
        if body is not None:
            head.append((b"content-type", b"application/json"))
        await send({"type": "http.response.start", "status": status, "headers": head})
        await send({"type": "http.response.body", "body": raw})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        bad = self._control_character(scope)
        if bad is not None:
            where, name = bad
            await self._reply(send, 422, {"detail": [{"loc": [where, name], "msg": "control characters "
                                                      "(including NUL) are not allowed", "type": "value_error"}]})
            return
        if scope["method"] == "OPTIONS" and self.routes_app is not None:
            allowed = self._allowed_methods(scope)
            if allowed:
                await self._reply(send, 204, None, [(b"allow", ", ".join(allowed).encode())])
                return
        await self.app(scope, receive, send)

    @staticmethod
    def _control_character(scope: Scope) -> tuple[str, str] | None:
        if CONTROL_CHARACTERS.search(scope.get("path", "")):
            return "path", "path"
        query = scope.get("query_string", b"").decode("latin-1")
        if "%" in query or CONTROL_CHARACTERS.search(query):
            try:
                pairs = parse_qsl(query, keep_blank_values=True, errors="strict")
            except UnicodeDecodeError:
                return "query", "query"
            for key, value in pairs:
                if CONTROL_CHARACTERS.search(key) or CONTROL_CHARACTERS.search(value):
                    return "query", key[:64]
        return None

    def _allowed_methods(self, scope: Scope) -> list[str]:
        """The methods the OpenAPI document lists for the request's path (plus HEAD for GET, OPTIONS)."""
        if self._paths is None:
            self._paths = [(re.compile("^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(path)) + "$"),
                            {m.upper() for m in ops if m in _METHODS})
                           for path, ops in self.routes_app.openapi().get("paths", {}).items()]
        methods: set[str] = set()
        for pattern, ops in self._paths:
            if pattern.match(scope.get("path", "")):
                methods |= ops
        if not methods:
            return []
        if "GET" in methods:
            methods.add("HEAD")
        return sorted(methods | {"OPTIONS"})
