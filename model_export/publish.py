"""`gridsight model publish`: upload a signed model, register it with the collector, announce it.

Layout in the object store (S3 via boto3, or a local directory standing in for it)::

    models/{name}/{version}/model.onnx        the model file, byte for byte
    models/{name}/{version}/model.onnx.sig    raw 64-byte Ed25519 signature
    models/{name}/{version}/manifest.json     name, version, sha256, size, metadata, object keys

A published version is immutable: uploading different bytes under an existing version is
refused. Registration upserts the collector's ``model_versions`` row (see
``collector/db/SCHEMA.md``). The announcement is a retained :class:`~gridsight.wire.ModelAnnouncement`
on the fleet topic, or on each canary gateway's own topic when ``gateways`` is given.
"""

from __future__ import annotations

import hashlib
import json
import urllib.parse
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Sequence

from gridsight import wire
from edge_agent.scorer import ModelError, Scorer

__all__ = ["PublishError", "model_prefix", "publish_model", "announce", "register_version",
           "PRESIGNED_URL_SECONDS"]

PRESIGNED_URL_SECONDS = 7 * 86_400  # the longest a SigV4 presigned URL may live


class PublishError(Exception):
    """Publishing could not complete; the message says which step and why."""


def model_prefix(name: str, version: str) -> str:
    return f"models/{name}/{version}/"


def _now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class _DirStore:
    def __init__(self, root: Path, base_url: str | None) -> None:
        self.root, self.base_url = root, base_url

    def get(self, key: str) -> bytes | None:
        path = self.root / key
        return path.read_bytes() if path.exists() else None

    def put(self, key: str, data: bytes) -> None:
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".part")
        tmp.write_bytes(data)
        tmp.replace(path)

    def url(self, key: str) -> str:
        if self.base_url:
            return self.base_url.rstrip("/") + "/" + key
        return (self.root / key).resolve().as_uri()


class _S3Store:
    def __init__(self, bucket: str, endpoint_url: str | None, base_url: str | None) -> None:
        import boto3
        from botocore.exceptions import BotoCoreError, ClientError

        self._errors = (BotoCoreError, ClientError)
        self.bucket, self.base_url = bucket, base_url
        self.client = boto3.client("s3", endpoint_url=endpoint_url)

    def get(self, key: str) -> bytes | None:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except self._errors as exc:
            code = getattr(exc, "response", {}).get("Error", {}).get("Code")
            if code in ("NoSuchKey", "404"):
                return None
            raise PublishError(f"s3://{self.bucket}/{key}: {exc}") from None

    def put(self, key: str, data: bytes) -> None:
        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=data)
        except self._errors as exc:
            raise PublishError(f"upload to s3://{self.bucket}/{key} failed: {exc}") from None

    def url(self, key: str) -> str:
        if self.base_url:
            return self.base_url.rstrip("/") + "/" + key
        return self.client.generate_presigned_url("get_object", Params={"Bucket": self.bucket, "Key": key},
                                                  ExpiresIn=PRESIGNED_URL_SECONDS)


def register_version(database_url: str, manifest: dict, object_key: str) -> None:
    """Upsert the collector's ``model_versions`` row for this version."""
    import psycopg

    url = database_url.replace("postgresql+asyncpg://", "postgresql://").replace("postgresql+psycopg://",
                                                                                 "postgresql://")
    try:
        with psycopg.connect(url, connect_timeout=10) as conn:
            conn.execute(
                """INSERT INTO model_versions (version, name, sha256, threshold, interval_s, feature_names,
                                               object_key, published_at, first_seen_at)
                   VALUES (%s, %s, %s, %s, %s, %s::jsonb, %s, now(), now())
                   ON CONFLICT (version) DO UPDATE SET name = EXCLUDED.name, sha256 = EXCLUDED.sha256,
                       threshold = EXCLUDED.threshold, interval_s = EXCLUDED.interval_s,
                       feature_names = EXCLUDED.feature_names, object_key = EXCLUDED.object_key,
                       published_at = EXCLUDED.published_at""",
                (manifest["version"], manifest["name"], manifest["sha256"], manifest["threshold"],
                 manifest["interval_s"], json.dumps(manifest["feature_names"]), object_key))
    except psycopg.Error as exc:
        raise PublishError(f"registering {manifest['version']} in model_versions failed: "
                           f"{str(exc).strip().splitlines()[0]}") from None


def announce(mqtt_url: str, announcement: wire.ModelAnnouncement, timeout_s: float = 15.0) -> list[str]:
    """Publish the announcement retained (QoS 1) and wait for the broker's acknowledgement; returns topics."""
    import paho.mqtt.client as mqtt

    parsed = urllib.parse.urlparse(mqtt_url)
    if parsed.scheme not in ("mqtt", "mqtts") or not parsed.hostname:
        raise PublishError(f"--mqtt-url must look like mqtt://host:port or mqtts://host:port, got {mqtt_url!r}")
    topics = ([wire.fleet_command_topic("model")] if announcement.gateways is None
              else [wire.command_topic(g, "model") for g in announcement.gateways])
    payload = wire.encode_command(announcement)
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"gridsight-publish-{announcement.version}"[:64])
    if parsed.username:
        client.username_pw_set(urllib.parse.unquote(parsed.username),
                               urllib.parse.unquote(parsed.password or ""))
    if parsed.scheme == "mqtts":
        client.tls_set()
    try:
        client.connect(parsed.hostname, parsed.port or (8883 if parsed.scheme == "mqtts" else 1883), keepalive=30)
    except OSError as exc:
        raise PublishError(f"cannot reach the broker at {mqtt_url} ({exc})") from None
    client.loop_start()
    try:
        for topic in topics:
            info = client.publish(topic, payload, qos=1, retain=True)
            info.wait_for_publish(timeout_s)
            if not info.is_published():
                raise PublishError(f"the broker did not acknowledge the announcement on {topic}")
    finally:
        client.disconnect()
        client.loop_stop()
    return topics


def publish_model(model: str | Path, *, signature: str | Path | None = None, public_key: str | Path | None = None,
                  store_dir: str | Path | None = None, s3_bucket: str | None = None,
                  s3_endpoint_url: str | None = None, base_url: str | None = None,
                  database_url: str | None = None, mqtt_url: str | None = None,
                  gateways: Sequence[str] | None = None,
                  progress: Callable[[str], None] | None = None) -> dict:
    """Upload, register and announce a signed model; returns a report with keys, URL and topics."""
    say = progress or (lambda _m: None)
    model = Path(model)
    try:
        scorer = Scorer.load(model)
    except ModelError as exc:
        raise PublishError(str(exc)) from None
    data = model.read_bytes()
    sig_path = Path(signature) if signature else model.with_name(model.name + ".sig")
    try:
        sig = sig_path.read_bytes()
    except FileNotFoundError:
        raise PublishError(f"{sig_path}: no signature; run 'gridsight model sign' first") from None
    public_key_sha = None
    if public_key is not None:
        from edge_agent.model_update import SignatureError, load_public_key, verify_signature

        try:
            verify_signature(data, sig, load_public_key(public_key))
        except SignatureError as exc:
            raise PublishError(f"{sig_path}: {exc}") from None
        public_key_sha = hashlib.sha256(Path(public_key).read_bytes()).hexdigest()
    if gateways is not None:
        try:
            gateways = [wire.validate_gateway_id(g) for g in gateways]
        except wire.WireError as exc:
            raise PublishError(f"--gateways: {exc}") from None
        if not gateways:
            raise PublishError("--gateways is empty; leave it out to announce to the whole fleet")

    sha = hashlib.sha256(data).hexdigest()
    prefix = model_prefix(scorer.name, scorer.version)
    keys = {"model": prefix + "model.onnx", "signature": prefix + "model.onnx.sig", "manifest": prefix + "manifest.json"}
    meta = {k: v for k, v in scorer.metadata.items() if k not in ("selftest", "feature_names")}
    manifest = {"name": scorer.name, "version": scorer.version, "sha256": sha, "size": len(data),
                "feature_names": list(scorer.feature_names), "threshold": scorer.threshold,
                "interval_s": scorer.interval_s, "meter_class": scorer.meter_class,
                "signature": {"algorithm": "ed25519", "key": keys["signature"], "public_key_sha256": public_key_sha},
                "objects": keys, "published_at": _now_iso(), "metadata": meta}

    store = _DirStore(Path(store_dir), base_url) if store_dir is not None else _S3Store(s3_bucket, s3_endpoint_url,
                                                                                       base_url)
    existing = store.get(keys["model"])
    if existing is not None and hashlib.sha256(existing).hexdigest() != sha:
        raise PublishError(f"{prefix} already holds a different model; published versions are immutable, "
                           f"train with a new --version")
    say(f"uploading {scorer.name} {scorer.version} to {prefix}")
    store.put(keys["model"], data)
    store.put(keys["signature"], sig)
    store.put(keys["manifest"], json.dumps(manifest, indent=2).encode())
    report = {"name": scorer.name, "version": scorer.version, "sha256": sha, "objects": keys,
              "url": store.url(keys["model"]), "registered": False, "announced_on": []}
    if database_url:
        say("registering the version in model_versions")
        register_version(database_url, manifest, keys["model"])
        report["registered"] = True
    if mqtt_url:
        announcement = wire.ModelAnnouncement(
            name=scorer.name, version=scorer.version, url=report["url"], sha256=sha,
            signature_url=store.url(keys["signature"]), issued_at=datetime.now(timezone.utc).timestamp(),
            gateways=tuple(gateways) if gateways is not None else None)
        say(f"announcing on {mqtt_url}")
        report["announced_on"] = announce(mqtt_url, announcement)
    return report
