"""A small JSON-over-HTTP client shared by the weather and carbon-intensity providers.

Public APIs ration requests and fail in ordinary ways: 429 with ``Retry-After``, 5xx during
maintenance, timeouts. This client spaces calls (``min_interval_s``), waits out 429/503 up to
a bound and retries transient failures a few times, then raises :class:`FetchError` with the
status and the provider's own message. Successful responses are cached for ``cache_ttl_s``
(memory, and on disk when ``cache_dir`` is set) under a key that omits credentials.
Time and sleeping are injected so tests can drive rate limits without waiting.
"""

from __future__ import annotations

import hashlib
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Callable, Mapping

from gridsight.errors import FetchError

__all__ = ["JsonHttpClient"]

SECRET_PARAMS = frozenset({"appid", "apikey", "api_key", "key", "token"})


class JsonHttpClient:
    def __init__(self, *, timeout_s: float = 15.0, min_interval_s: float = 0.0, max_retries: int = 3,
                 max_wait_s: float = 60.0, cache_ttl_s: float = 3600.0, cache_dir: str | Path | None = None,
                 user_agent: str = "gridsight-collector", clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.timeout_s = timeout_s
        self.min_interval_s = min_interval_s
        self.max_retries = max_retries
        self.max_wait_s = max_wait_s
        self.cache_ttl_s = cache_ttl_s
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.user_agent = user_agent
        self._clock = clock
        self._sleep = sleep
        self._last_call: float | None = None
        self._memory: dict[str, tuple[float, Any]] = {}
        self.requests_made = 0

    def get_json(self, url: str, params: Mapping[str, Any] | None = None) -> Any:
        """GET ``url`` with ``params`` and return the decoded JSON body (from cache when fresh)."""
        params = {k: v for k, v in (params or {}).items() if v is not None}
        key = self._cache_key(url, params)
        cached = self._cached(key)
        if cached is not None:
            return cached
        full = url + ("?" + urllib.parse.urlencode(params) if params else "")
        public = url + ("?" + urllib.parse.urlencode({k: ("***" if k.lower() in SECRET_PARAMS else v)
                                                       for k, v in params.items()}) if params else "")
        attempt = 0
        while True:
            attempt += 1
            self._space_calls()
            try:
                body = self._request(full)
            except urllib.error.HTTPError as exc:
                message = _error_message(exc)
                wait = _retry_after(exc)
                retriable = exc.code in (429, 500, 502, 503, 504)
                if not retriable or attempt > self.max_retries:
                    what = "rate limited" if exc.code == 429 else f"HTTP {exc.code}"
                    raise FetchError(f"{public}: {what}: {message}", url=public, status=exc.code) from None
                self._sleep(min(wait if wait is not None else 2.0 ** attempt, self.max_wait_s))
                continue
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
                if attempt > self.max_retries:
                    reason = getattr(exc, "reason", exc)
                    raise FetchError(f"{public}: unreachable: {reason}", url=public) from None
                self._sleep(min(2.0 ** attempt, self.max_wait_s))
                continue
            try:
                value = json.loads(body)
            except ValueError:
                raise FetchError(f"{public}: response is not JSON", url=public) from None
            self._store(key, value)
            return value

    # ------------------------------------------------------------------ private

    def _request(self, url: str) -> bytes:
        self.requests_made += 1
        request = urllib.request.Request(url, headers={"User-Agent": self.user_agent, "Accept": "application/json"})
        with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
            return response.read()

    def _space_calls(self) -> None:
        now = self._clock()
        if self._last_call is not None and self.min_interval_s > 0:
            wait = self._last_call + self.min_interval_s - now
            if wait > 0:
                self._sleep(wait)
                now = self._clock()
        self._last_call = now

    def _cache_key(self, url: str, params: Mapping[str, Any]) -> str:
        public = sorted((k, str(v)) for k, v in params.items() if k.lower() not in SECRET_PARAMS)
        return hashlib.sha256(json.dumps([url, public]).encode()).hexdigest()[:32]

    def _cached(self, key: str) -> Any:
        if self.cache_ttl_s <= 0:
            return None
        now = self._clock()
        hit = self._memory.get(key)
        if hit and now - hit[0] < self.cache_ttl_s:
            return hit[1]
        if self.cache_dir is not None:
            path = self.cache_dir / f"{key}.json"
            try:
                stored = json.loads(path.read_text())
            except (OSError, ValueError):
                return None
            if now - float(stored.get("at", 0)) < self.cache_ttl_s:
                self._memory[key] = (float(stored["at"]), stored["body"])
                return stored["body"]
        return None

    def _store(self, key: str, value: Any) -> None:
        if self.cache_ttl_s <= 0:
            return
        now = self._clock()
        self._memory[key] = (now, value)
        if self.cache_dir is not None:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            tmp = self.cache_dir / f"{key}.json.tmp"
            tmp.write_text(json.dumps({"at": now, "body": value}))
            tmp.replace(self.cache_dir / f"{key}.json")


def _retry_after(exc: urllib.error.HTTPError) -> float | None:
    value = exc.headers.get("Retry-After") if exc.headers else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _error_message(exc: urllib.error.HTTPError) -> str:
    try:
        body = exc.read()[:2000]
        data = json.loads(body)
    except (OSError, ValueError):
        return exc.reason if isinstance(exc.reason, str) else str(exc.reason)
    if isinstance(data, dict):
        for field in ("message", "reason", "error"):
            if isinstance(data.get(field), str):
                return data[field]
        if isinstance(data.get("error"), dict) and isinstance(data["error"].get("message"), str):
            return data["error"]["message"]
    return str(data)[:200]
