"""Talking to the collector's enrollment API: a technician asks for a one-time token, and the
gateway redeems it once with its certificate's fingerprint. Standard library HTTP only."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from gridsight.errors import ProvisionError
from gridsight.settings import load_settings
from gridsight.tls import cert_fingerprint

__all__ = ["ApiCredentials", "api_headers", "request_enrollment_token", "enroll_gateway"]


@dataclass
class ApiCredentials:
    """A technician's credentials for the collector API: ``GRIDSIGHT_API_KEY`` (an API key) or
    ``GRIDSIGHT_API_TOKEN`` (a login token), each also as ``NAME_FILE``; never from argv."""

    api_key: str | None = field(
        default=None, repr=False, metadata={"env": "GRIDSIGHT_API_KEY", "env_only": True, "secret": True}
    )
    api_token: str | None = field(
        default=None, repr=False, metadata={"env": "GRIDSIGHT_API_TOKEN", "env_only": True, "secret": True}
    )

    def headers(self) -> dict[str, str]:
        if self.api_key:
            return {"X-API-Key": self.api_key}
        if self.api_token:
            return {"Authorization": f"Bearer {self.api_token}"}
        raise ProvisionError("set GRIDSIGHT_API_KEY (a technician API key) or GRIDSIGHT_API_TOKEN (a login token)")


def api_headers(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Request headers with the :class:`ApiCredentials` of ``env`` (default: the process environment)."""
    return load_settings(ApiCredentials, env=env).headers()


def _post(url: str, body: dict, headers: dict[str, str], timeout_s: float) -> dict:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), method="POST", headers={"Content-Type": "application/json", **headers}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return json.loads(response.read(1024 * 1024))
    except urllib.error.HTTPError as exc:
        try:
            detail = json.loads(exc.read(65536)).get("detail")
        except ValueError:
            detail = exc.reason
        raise ProvisionError(f"{url}: {exc.code} {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise ProvisionError(f"{url}: {getattr(exc, 'reason', exc)}") from None


def request_enrollment_token(
    api_url: str, gateway_id: str, ttl_s: int, headers: dict[str, str], timeout_s: float = 15.0
) -> dict:
    return _post(
        urllib.parse.urljoin(api_url.rstrip("/") + "/", "enrollment/tokens"),
        {"gateway_id": gateway_id, "ttl_s": ttl_s},
        headers,
        timeout_s,
    )


def enroll_gateway(api_url: str, token: str, gateway_id: str, cert_file: Path | None, timeout_s: float = 15.0) -> dict:
    body: dict = {
        "token": token.strip(),
        "gateway_id": gateway_id,
        "credential": "certificate" if cert_file else "password",
    }
    if cert_file:
        body["fingerprint"] = cert_fingerprint(Path(cert_file).read_bytes())
    return _post(urllib.parse.urljoin(api_url.rstrip("/") + "/", "enrollment/enroll"), body, {}, timeout_s)
