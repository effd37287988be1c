"""Oversized and slowly trickled request bodies are cut off by a real HTTP server."""

from __future__ import annotations

import socket
import time

import pytest

from identity_support import serve


@pytest.fixture
def served(identity_db):
    """The identity app behind uvicorn: 64 KiB body limit, 1 s allowed per body chunk."""
    with serve(identity_db, max_body_bytes=64 * 1024, body_timeout_s=1.0) as (port, _ctx):
        yield port




def _exchange(port: int, head: bytes, body_parts: list[bytes], pause: float = 0.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(head)
        for part in body_parts:
            try:
                s.sendall(part)
            except OSError:
                break
            time.sleep(pause)
        chunks = []
        while True:
            try:
                data = s.recv(65536)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
        return b"".join(chunks)


def test_an_announced_oversized_body_is_refused_with_413(served):
    head = (b"POST /enrollment/enroll HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 10000000\r\nConnection: close\r\n\r\n")
    reply = _exchange(served, head, [b"{" + b" " * 1000])
    assert reply.startswith(b"HTTP/1.1 413")


def test_a_streamed_oversized_body_is_refused_with_413(served):
    head = (b"POST /enrollment/enroll HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
    chunk = b" " * 16384
    parts = [b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(8)] + [b"0\r\n\r\n"]
    reply = _exchange(served, head, parts)
    assert reply.startswith(b"HTTP/1.1 413")


@pytest.mark.slow
def test_a_client_trickling_its_body_is_cut_off_with_408(served):
    head = (b"POST /enrollment/enroll HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\nConnection: close\r\n\r\n")
    reply = _exchange(served, head, [b"{", b" "], pause=2.5)
    assert reply.startswith(b"HTTP/1.1 408")


def test_a_normal_request_still_passes(served):
    body = b'{"token": "gse_unknown_token_value", "gateway_id": "gw-1"}'
    head = (b"POST /enrollment/enroll HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body))
    reply = _exchange(served, head, [body])
    assert reply.startswith(b"HTTP/1.1 403") and b"unknown enrollment token" in reply
