"""Over-the-air model updates on the gateway: fetch, verify, self-test, swap atomically, roll back.

The agent owns one :class:`ModelUpdater`. For every model announcement it receives (the
retained ``cmd/model`` topics) it calls :meth:`ModelUpdater.handle_announcement`, which

0. refuses a version older than the running one, unless the announcement carries a rollback
   signed by the model key for exactly this step (:func:`gridsight.wire.rollback_statement`),
1. fetches the model from ``cmd.url``: ``https://``, a presigned S3 URL, or ``file://`` inside
   the configured ``source_dir``; anything else is refused before it is opened, and the size
   limit applies while the bytes arrive (an announced ``Content-Length`` above it is refused
   before the body is read),
2. checks its SHA-256 against ``cmd.sha256``,
3. fetches ``cmd.signature_url`` and checks the Ed25519 signature against the public key
   pinned in the gateway's configuration,
4. loads it in a fresh onnxruntime session, which runs the model's built-in self-test,
5. checks name, version and interval against the announcement and the agent,
6. writes it under ``models_dir`` (temp file, fsync, rename) and flips the ``current.json``
   pointer the same way, then swaps the in-memory scorer.

Any failure returns ``(False, reason)`` and the running model stays. :meth:`rollback` returns
to the previous model. After a restart, :meth:`ModelUpdater` reloads (and re-verifies) the
model ``current.json`` points at, falling back to the previous one, then to the initial model.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
import threading
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge_agent.scorer import MAX_MODEL_BYTES, ModelError, Scorer
from gridsight.wire import ModelAnnouncement, rollback_statement
from gridsight.errors import FetchError, GridsightError
from gridsight.files import write_atomically

__all__ = [
    "SignatureError",
    "ModelFetcher",
    "UrlFetcher",
    "ModelUpdater",
    "UpdateStatus",
    "load_public_key",
    "verify_signature",
    "version_key",
    "url_allowed",
]

_MAX_SIGNATURE_BYTES = 1024
_POINTER = "current.json"


class SignatureError(GridsightError):
    """A signature that is missing, malformed, or not made by the pinned key."""


def load_public_key(source: str | Path | bytes) -> Ed25519PublicKey:
    """The pinned Ed25519 public key from a PEM file path or PEM bytes."""
    try:
        pem = source if isinstance(source, bytes) else Path(source).read_bytes()
        key = serialization.load_pem_public_key(pem)
    except FileNotFoundError:
        raise SignatureError(f"public key {source!s} does not exist") from None
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise SignatureError(f"public key is not a PEM public key ({exc})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise SignatureError("public key is not an Ed25519 key")
    return key


def verify_signature(data: bytes, signature: bytes, public_key: Ed25519PublicKey) -> None:
    """Raise :class:`SignatureError` unless ``signature`` (raw 64 bytes or base64) signs ``data``."""
    raw = signature
    if len(raw) != 64:
        try:
            raw = base64.b64decode(signature.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise SignatureError("signature is neither 64 raw bytes nor base64") from None
    if len(raw) != 64:
        raise SignatureError(f"signature has {len(raw)} bytes, an Ed25519 signature has 64")
    try:
        public_key.verify(raw, data)
    except InvalidSignature:
        raise SignatureError("signature does not match the pinned public key") from None


class ModelFetcher(Protocol):
    def fetch(self, url: str, max_bytes: int) -> bytes:
        """The bytes at ``url``; raise :class:`FetchError` if unreachable or larger than ``max_bytes``."""


_CHUNK = 64 * 1024
_PRESIGNED_V4 = ("X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Signature")
_PRESIGNED_V2 = ("AWSAccessKeyId", "Signature", "Expires")


def url_allowed(url: str, source_dir: Path | None) -> str | None:
    """Why ``url`` may not be fetched, or None when it may: ``https://``, a presigned S3 URL
    (``http`` too: S3-compatible stores inside the network), or ``file://`` resolving inside
    ``source_dir``. Plain paths, other schemes and unsigned ``http`` are refused, so an
    announcement cannot point the agent at local files or internal services."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme == "https":
        return None
    if parsed.scheme == "http":
        names = {k for k, _ in urllib.parse.parse_qsl(parsed.query, keep_blank_values=True)}
        if all(n in names for n in _PRESIGNED_V4) or all(n in names for n in _PRESIGNED_V2):
            return None
        return "plain http is not allowed (https, a presigned S3 URL, or file:// in the models source folder)"
    if parsed.scheme == "file":
        if source_dir is None:
            return "file:// is not allowed: no model.source_dir is configured"
        if parsed.netloc not in ("", "localhost"):
            return "file:// with a host is not allowed"
        target = os.path.realpath(urllib.parse.unquote(parsed.path))
        root = os.path.realpath(source_dir)
        if os.path.commonpath([target, root]) != root:
            return f"file:// outside {root} is not allowed"
        return None
    return (
        f"URL scheme {parsed.scheme or '(none)'!r} is not allowed (https, presigned S3, or file:// in model.source_dir)"
    )


class UrlFetcher:
    """Fetches the URLs :func:`url_allowed` admits, reading at most ``max_bytes`` (streamed, with a timeout)."""

    def __init__(self, timeout_s: float = 30.0, source_dir: str | Path | None = None) -> None:
        self.timeout_s = timeout_s
        self.source_dir = Path(source_dir) if source_dir else None

    def fetch(self, url: str, max_bytes: int) -> bytes:
        refused = url_allowed(url, self.source_dir)
        if refused is not None:
            raise FetchError(f"{url[:200]}: {refused}")
        parsed = urllib.parse.urlsplit(url)
        try:
            if parsed.scheme == "file":
                path = Path(os.path.realpath(urllib.parse.unquote(parsed.path)))
                if not path.is_file():
                    raise FetchError(f"cannot fetch {url[:200]} (no such regular file)")
                if path.stat().st_size > max_bytes:
                    raise FetchError(f"{url[:200]} is larger than {max_bytes} bytes")
                with path.open("rb") as fh:
                    return _read_capped(fh, max_bytes, url)
            opener = urllib.request.build_opener(_CheckedRedirects(self.source_dir))
            with opener.open(url, timeout=self.timeout_s) as response:  # noqa: S310 (url_allowed, redirects too)
                declared = response.headers.get("Content-Length")
                if declared is not None and declared.isdigit() and int(declared) > max_bytes:
                    raise FetchError(f"{url[:200]} is larger than {max_bytes} bytes ({declared} announced)")
                return _read_capped(response, max_bytes, url)
        except OSError as exc:
            raise FetchError(f"cannot fetch {url[:200]} ({exc})") from None


class _CheckedRedirects(urllib.request.HTTPRedirectHandler):
    """Follow a redirect only to a URL :func:`url_allowed` admits (https -> http://internal is refused)."""

    def __init__(self, source_dir: Path | None) -> None:
        self.source_dir = source_dir

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        refused = url_allowed(newurl, self.source_dir)
        if refused is not None or newurl.startswith("file:"):
            raise FetchError(f"redirect to {newurl[:200]} refused: {refused or 'file:// by redirect'}")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _read_capped(stream, max_bytes: int, url: str) -> bytes:
    """Read in chunks, stopping as soon as more than ``max_bytes`` arrived."""
    data = bytearray()
    while True:
        chunk = stream.read(min(_CHUNK, max_bytes + 1 - len(data)))
        if not chunk:
            return bytes(data)
        data += chunk
        if len(data) > max_bytes:
            raise FetchError(f"{url[:200]} is larger than {max_bytes} bytes")


def version_key(version: str) -> tuple:
    """Sort key of a model version: digit runs compare as numbers (v9 < v10, 2026-01-02 < 2026-11-01)."""
    parts = re.findall(r"\d+|[^\d]+", version)
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts)


@dataclass(frozen=True)
class UpdateStatus:
    """What the agent reports in its status message."""

    current_version: str | None
    current_name: str | None
    previous_version: str | None
    last_result: str | None
    last_ok: bool | None


class ModelUpdater:
    """Keeps the gateway's current model and replaces it only with a verified, self-tested one."""

    def __init__(
        self,
        models_dir: str | Path,
        public_key: Ed25519PublicKey | str | Path | bytes,
        *,
        gateway_id: str | None = None,
        initial_model: str | Path | None = None,
        fetcher: ModelFetcher | None = None,
        interval_s: int | None = None,
        max_model_bytes: int = MAX_MODEL_BYTES,
        source_dir: str | Path | None = None,
    ) -> None:
        self.models_dir = Path(models_dir)
        self.models_dir.mkdir(parents=True, exist_ok=True)
        self.public_key = public_key if isinstance(public_key, Ed25519PublicKey) else load_public_key(public_key)
        self.gateway_id = gateway_id
        self.fetcher = fetcher or UrlFetcher(source_dir=source_dir)
        self.interval_s = interval_s
        self.max_model_bytes = max_model_bytes
        self._lock = threading.Lock()
        self._current: Scorer | None = None
        self._current_file: str | None = None
        self._previous_file: str | None = None
        self._last: tuple[bool, str] | None = None
        self._initial = Path(initial_model) if initial_model else None
        self._restore(Path(initial_model) if initial_model else None)

    # ------------------------------------------------------------------ public API

    def current_scorer(self) -> Scorer | None:
        """The model to score with now (None until one has loaded)."""
        return self._current

    def status(self) -> UpdateStatus:
        previous = self._pointer().get("previous_version")
        cur = self._current
        return UpdateStatus(
            cur.version if cur else None,
            cur.name if cur else None,
            previous,
            self._last[1] if self._last else None,
            self._last[0] if self._last else None,
        )

    def handle_announcement(self, cmd: ModelAnnouncement) -> tuple[bool, str]:
        """Fetch, verify, self-test and switch to the announced model; ``(ok, reason)``, never raises."""
        with self._lock:
            result = self._apply(cmd)
            self._last = result
            return result

    def rollback(self) -> tuple[bool, str]:
        """Return to the previous model (re-verified from disk); ``(ok, reason)``."""
        with self._lock:
            pointer = self._pointer()
            previous = pointer.get("previous")
            if not previous and self._initial is not None and self._current_file is not None:
                result = self._rollback_to_initial(pointer)
            elif not previous:
                result = (False, "no previous model to roll back to")
            else:
                try:
                    scorer = self._load_verified(self.models_dir / previous)
                except (ModelError, SignatureError, OSError) as exc:
                    result = (False, f"previous model unusable, kept {self._describe()}: {exc}")
                else:
                    self._set_pointer(previous, scorer.version, pointer.get("current"), pointer.get("current_version"))
                    old = self._describe()
                    self._current, self._current_file = scorer, previous
                    result = (True, f"rolled back from {old} to {scorer.name} {scorer.version}")
            self._last = result
            return result

    # ------------------------------------------------------------------ internals

    def _describe(self) -> str:
        return f"{self._current.name} {self._current.version}" if self._current else "no model"

    def _apply(self, cmd: ModelAnnouncement) -> tuple[bool, str]:
        keep = f"kept {self._describe()}"
        if cmd.gateways is not None and self.gateway_id not in cmd.gateways:
            return True, f"announcement of {cmd.version} is for other gateways; {keep}"
        if self._current is not None and self._current.version == cmd.version and self._current.name == cmd.name:
            return True, f"already running {cmd.name} {cmd.version}"
        if self._current is not None and version_key(cmd.version) < version_key(self._current.version):
            refused = self._rollback_refusal(cmd)
            if refused is not None:
                return False, f"refused {cmd.name} {cmd.version}: {refused}; {keep}"
        try:
            data = self.fetcher.fetch(cmd.url, self.max_model_bytes)
            digest = hashlib.sha256(data).hexdigest()
            if digest != cmd.sha256:
                return (
                    False,
                    f"checksum mismatch for {cmd.version} (got {digest[:12]}…, announced {cmd.sha256[:12]}…); {keep}",
                )
            signature = self.fetcher.fetch(cmd.signature_url, _MAX_SIGNATURE_BYTES)
            verify_signature(data, signature, self.public_key)
            scorer = Scorer.from_bytes(data, f"{cmd.name} {cmd.version}")
        except (FetchError, SignatureError, ModelError) as exc:
            return False, f"refused {cmd.name} {cmd.version}: {exc}; {keep}"
        if scorer.version != cmd.version or scorer.name != cmd.name:
            return False, (
                f"refused: file is {scorer.name} {scorer.version}, announcement says {cmd.name} {cmd.version}; {keep}"
            )
        if self.interval_s is not None and scorer.interval_s != self.interval_s:
            return False, (
                f"refused {cmd.version}: it scores {scorer.interval_s} s intervals, this agent "
                f"builds {self.interval_s} s; {keep}"
            )
        filename = f"{cmd.name}-{cmd.version}.onnx"
        try:
            write_atomically(self.models_dir / (filename + ".sig"), signature)
            write_atomically(self.models_dir / filename, data)
            self._set_pointer(
                filename, scorer.version, self._current_file, self._current.version if self._current else None
            )
        except OSError as exc:
            return False, f"cannot store {cmd.version} ({exc}); {keep}"
        old = self._describe()
        self._current, self._current_file = scorer, filename
        return True, f"switched from {old} to {scorer.name} {scorer.version}"

    def _rollback_refusal(self, cmd: ModelAnnouncement) -> str | None:
        """Why an announcement of an older version may not apply here, or None for a valid signed rollback."""
        current = self._current.version  # type: ignore[union-attr]  # an announcement older than the running model
        if cmd.rollback_signature is None:
            return (
                f"older than the running {current} (models only move forward; a rollback must be "
                "signed: gridsight model rollback)"
            )
        if cmd.rollback_from != current:
            return f"the signed rollback is from {cmd.rollback_from}, this gateway runs {current}"
        try:
            verify_signature(
                rollback_statement(cmd.name, cmd.version, cmd.sha256, cmd.rollback_from or ""),
                cmd.rollback_signature.encode(),
                self.public_key,
            )
        except SignatureError as exc:
            return f"rollback {exc}"
        return None

    def _rollback_to_initial(self, pointer: dict) -> tuple[bool, str]:
        try:
            scorer = Scorer.load(self._initial)  # type: ignore[arg-type]  # rollback happens only with an initial model
        except ModelError as exc:
            return False, f"initial model unusable, kept {self._describe()}: {exc}"
        (self.models_dir / _POINTER).unlink(missing_ok=True)
        old = self._describe()
        self._current, self._current_file = scorer, None
        return True, f"rolled back from {old} to the initial {scorer.name} {scorer.version}"

    def _load_verified(self, path: Path) -> Scorer:
        data = path.read_bytes()
        verify_signature(data, path.with_name(path.name + ".sig").read_bytes(), self.public_key)
        return Scorer.from_bytes(data, str(path))

    def _pointer(self) -> dict:
        try:
            obj = json.loads((self.models_dir / _POINTER).read_text())
            return obj if isinstance(obj, dict) else {}
        except (OSError, ValueError):
            return {}

    def _set_pointer(
        self, current: str, current_version: str, previous: str | None, previous_version: str | None
    ) -> None:
        body = {
            "current": current,
            "current_version": current_version,
            "previous": previous,
            "previous_version": previous_version,
        }
        write_atomically(self.models_dir / _POINTER, json.dumps(body).encode())

    def _restore(self, initial_model: Path | None) -> None:
        """After a restart: the pointed-at model, else the previous one, else the configured initial file."""
        pointer = self._pointer()
        for key in ("current", "previous"):
            name = pointer.get(key)
            if not name:
                continue
            try:
                self._current = self._load_verified(self.models_dir / name)
                self._current_file = name
                if key == "previous":
                    self._last = (False, f"current model {pointer.get('current')} unusable; restored previous")
                return
            except (ModelError, SignatureError, OSError):
                continue
        if initial_model is not None:
            # The initial model arrives with the gateway image (provisioning), not over the air:
            # it is trusted as installed, but it must still load and pass its self-test.
            self._current = Scorer.load(initial_model)
            self._current_file = None
