"""Headless Chromium over the DevTools protocol on a pipe: load a page with headers, read it, screenshot it.

The built-in dashboard needs an API key header, which ``chromium --screenshot`` cannot send,
so this speaks the DevTools protocol directly over ``--remote-debugging-pipe`` (JSON messages
separated by NUL bytes on file descriptors 3 and 4): no websocket library, no driver download.
Used by the page's tests and by ``gridsight dashboards screenshot`` for the README images.
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping

from gridsight.errors import GridsightError

__all__ = ["BrowserError", "HeadlessChromium", "chromium_binary"]


class BrowserError(GridsightError, RuntimeError):
    """Chromium is missing, crashed, or a page did not load; the message says which."""

    exit_code = 1


def chromium_binary() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    raise BrowserError("Chromium is not installed: run 'sudo apt-get install -y chromium' "
                       "(scripts/install-system-deps.sh does)")


class HeadlessChromium:
    """One headless Chromium process with one tab. Use as a context manager."""

    def __init__(self, width: int = 1240, height: int = 900, timeout: float = 60.0) -> None:
        self.width, self.height, self.timeout = width, height, timeout
        self._proc: subprocess.Popen | None = None
        self._next_id = 0
        self._buffer = b""
        self._events: list[dict] = []
        self._session: str | None = None
        self._profile = tempfile.TemporaryDirectory(prefix="gridsight-chromium-")

    # ------------------------------------------------------------------ process

    def start(self) -> "HeadlessChromium":
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()

        def wire_pipes() -> None:  # Chromium reads commands on fd 3 and writes replies on fd 4
            os.dup2(to_browser_r, 3)
            os.dup2(from_browser_w, 4)

        args = [chromium_binary(), "--headless", "--remote-debugging-pipe", "--no-first-run", "--disable-gpu",
                "--no-default-browser-check", "--disable-extensions", "--hide-scrollbars", "--mute-audio",
                f"--user-data-dir={self._profile.name}", f"--window-size={self.width},{self.height}"]
        if os.geteuid() == 0:
            args.append("--no-sandbox")  # Chromium refuses to run as root with its sandbox
        self._proc = subprocess.Popen(args + ["about:blank"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL, preexec_fn=wire_pipes, pass_fds=(3, 4),
                                      start_new_session=True)
        os.close(to_browser_r)
        os.close(from_browser_w)
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self._session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for method in ("Page.enable", "Network.enable", "Runtime.enable"):
            self.call(method)
        self.call("Emulation.setDeviceMetricsOverride", {"width": self.width, "height": self.height,
                                                         "deviceScaleFactor": 1, "mobile": False})
        return self

    def close(self) -> None:
        if self._proc is not None:
            try:
                self._send({"id": self._id(), "method": "Browser.close"})
                self._proc.wait(10)
            except (OSError, subprocess.TimeoutExpired, BrowserError):
                self._proc.kill()
                self._proc.wait(10)
            for fd in (self._to_browser, self._from_browser):
                try:
                    os.close(fd)
                except OSError:
                    pass
            self._proc = None
        self._profile.cleanup()

    def __enter__(self) -> "HeadlessChromium":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ protocol

    def _id(self) -> int:
        self._next_id += 1
        return self._next_id

    def _send(self, message: dict) -> None:
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")

    def _receive(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError("Chromium did not answer in time")
            ready, _, _ = select.select([self._from_browser], [], [], left)
            if ready:
                chunk = os.read(self._from_browser, 1 << 20)
                if not chunk:
                    raise BrowserError("Chromium exited")
                self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, params: Mapping[str, Any] | None = None) -> dict:
        """Send one DevTools command (to the tab once attached) and return its result."""
        mid = self._id()
        message: dict[str, Any] = {"id": mid, "method": method, "params": dict(params or {})}
        if self._session and not method.startswith(("Target.", "Browser.")):
            message["sessionId"] = self._session
        self._send(message)
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._receive(deadline)
            if reply.get("id") == mid:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error'].get('message')}")
                return reply.get("result", {})
            if "method" in reply:
                self._events.append(reply)

    def _wait_event(self, method: str, deadline: float) -> dict:
        while True:
            for i, event in enumerate(self._events):
                if event["method"] == method:
                    return self._events.pop(i)
            self._events.append(self._receive(deadline))

    # ------------------------------------------------------------------ pages

    def open(self, url: str, headers: Mapping[str, str] | None = None) -> int:
        """Load ``url`` (sending ``headers`` with every request) and return the document's HTTP status."""
        self.call("Network.setExtraHTTPHeaders", {"headers": dict(headers or {})})
        self._events.clear()
        frame = self.call("Page.navigate", {"url": url})
        if frame.get("errorText"):
            raise BrowserError(f"{url}: {frame['errorText']}")
        deadline = time.monotonic() + self.timeout
        status = None
        while status is None:
            event = self._wait_event("Network.responseReceived", deadline)
            if event["params"].get("type") == "Document":
                status = int(event["params"]["response"]["status"])
        self._wait_event("Page.loadEventFired", deadline)
        return status

    def evaluate(self, expression: str) -> Any:
        """The JSON value of a JavaScript expression in the page."""
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression}: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    def screenshot(self, path: str | Path) -> Path:
        """A PNG of the whole page (beyond the window when the page is taller)."""
        height = int(self.evaluate("Math.ceil(document.documentElement.scrollHeight)") or self.height)
        shot = self.call("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": self.width, "height": max(height, 1), "scale": 1}})
        path = Path(path)
        path.write_bytes(base64.b64decode(shot["data"]))
        return path
