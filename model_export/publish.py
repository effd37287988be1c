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
import ssl
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Sequence

from gridsight import wire
from gridsight.errors import GridsightError
from gridsight.mqtt import MqttSetupError, TlsFiles, make_client
from edge_agent.scorer import ModelError, Scorer

__all__ = ["PublishError", "model_prefix", "publish_model", "announce", "register_version",
           "rollback_announcement", "announce_rollback", "PRESIGNED_URL_SECONDS"]

PRESIGNED_URL_SECONDS = 7 * 86_400  # the longest a SigV4 presigned URL may live


class PublishError(GridsightError):
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

    def delete(self, key: str) -> None:
        (self.root / key).unlink(missing_ok=True)

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

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=key)
        except self._errors as exc:
            raise PublishError(f"removing s3://{self.bucket}/{key} failed: {exc}") from None

    def url(self, key: str) -> str:
        if self.base_url:
            return self.base_url.rstrip("/") + "/" + key
        return self.client.generate_presigned_url("get_object", Params={"Bucket": self.bucket, "Key": key},
                                                  ExpiresIn=PRESIGNED_URL_SECONDS)


def _psycopg_url(database_url: str) -> str:
    return database_url.replace("postgresql+asyncpg://", "postgresql://").replace("postgresql+psycopg://",
                                                                                  "postgresql://")


_REGISTER_SQL = """INSERT INTO model_versions (version, name, sha256, threshold, interval_s, feature_names,
                                               object_key, published_at, first_seen_at)
                   VALUES (%s, %s, %s, %s, %s, %s::jsonb, %s, now(), now())
                   ON CONFLICT (version) DO UPDATE SET name = EXCLUDED.name, sha256 = EXCLUDED.sha256,
                       threshold = EXCLUDED.threshold, interval_s = EXCLUDED.interval_s,
                       feature_names = EXCLUDED.feature_names, object_key = EXCLUDED.object_key,
                       published_at = EXCLUDED.published_at"""


def _register_params(manifest: dict, object_key: str) -> tuple:
    return (manifest["version"], manifest["name"], manifest["sha256"], manifest["threshold"],
            manifest["interval_s"], json.dumps(manifest["feature_names"]), object_key)


def _db_error(manifest: dict, exc: Exception) -> PublishError:
    return PublishError(f"registering {manifest['version']} in model_versions failed: "
                        f"{str(exc).strip().splitlines()[0]}")


def register_version(database_url: str, manifest: dict, object_key: str) -> None:
    """Upsert the collector's ``model_versions`` row for this version."""
    import psycopg

    try:
        with psycopg.connect(_psycopg_url(database_url), connect_timeout=10) as conn:
            conn.execute(_REGISTER_SQL, _register_params(manifest, object_key))
    except psycopg.Error as exc:
        raise _db_error(manifest, exc) from None


class _Broker:
    """A connection to the broker made *before* anything is uploaded, so an unreachable broker, a
    refused login or a bad certificate stops the publish with nothing changed."""

    def __init__(self, mqtt_url: str, *, username: str | None, password: str | None, tls: TlsFiles,
                 client_id: str, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        try:
            self.client, self.endpoint = make_client(mqtt_url, client_id=client_id, username=username,
                                                     password=password, tls=tls)
        except MqttSetupError as exc:
            raise PublishError(f"--mqtt-url: {exc}") from None
        self._answer: dict = {}
        self._done = threading.Event()

    def connect(self) -> "_Broker":
        def on_connect(c, userdata, flags, reason_code, properties=None):
            self._answer["rc"] = reason_code
            self._done.set()

        self.client.on_connect = on_connect
        self.client.on_disconnect = lambda *a, **k: self._done.set()
        where = self.endpoint.url
        try:
            self.client.connect(self.endpoint.host, self.endpoint.port, keepalive=30)
        except ssl.SSLError as exc:
            raise PublishError(f"cannot reach the broker at {where}: TLS handshake failed "
                               f"({exc.reason or exc}); check --ca-file") from None
        except OSError as exc:
            raise PublishError(f"cannot reach the broker at {where} ({exc.strerror or exc})") from None
        self.client.loop_start()
        if not self._done.wait(self.timeout_s):
            self.close()
            raise PublishError(f"the broker at {where} did not answer within {self.timeout_s:.0f} s")
        rc = self._answer.get("rc")
        if rc is None or rc.is_failure:
            self.close()
            why = (f"refused the login ({rc})" if rc is not None else
                   "closed the connection (client certificate missing or refused? give --cert-file and --key-file)")
            raise PublishError(f"the broker at {where} {why}")
        return self

    def publish_retained(self, topics: list[str], payload: bytes) -> None:
        acks: dict[int, object] = {}
        self.client.on_publish = lambda c, u, mid, reason_code, properties=None: acks.__setitem__(mid, reason_code)
        for topic in topics:
            info = self.client.publish(topic, payload, qos=1, retain=True)
            try:
                info.wait_for_publish(self.timeout_s)
            except (RuntimeError, ValueError):    # paho: the connection is gone
                raise PublishError(f"the broker closed the connection before acknowledging the announcement on "
                                   f"{topic} (another client logged in with this account?)") from None
            rc = acks.get(info.mid)
            if not info.is_published() or rc is None:
                raise PublishError(f"the broker did not acknowledge the announcement on {topic}")
            if getattr(rc, "is_failure", False):   # MQTT 5 PUBACK: e.g. the ACL does not let this account write
                raise PublishError(f"the broker refused the announcement on {topic} ({rc}): this broker account "
                                   "may not write model commands; use the collector's account")

    def close(self) -> None:
        try:
            self.client.disconnect()
        finally:
            self.client.loop_stop()


def _topics(announcement: wire.ModelAnnouncement) -> list[str]:
    return ([wire.fleet_command_topic("model")] if announcement.gateways is None
            else [wire.command_topic(g, "model") for g in announcement.gateways])


def announce(mqtt_url: str, announcement: wire.ModelAnnouncement, timeout_s: float = 15.0, *,
             username: str | None = None, password: str | None = None, tls: TlsFiles | None = None) -> list[str]:
    """Publish the announcement retained (QoS 1) and wait for the broker's acknowledgement; returns topics."""
    broker = _Broker(mqtt_url, username=username, password=password, tls=tls or TlsFiles(),
                     client_id=f"gridsight-publish-{announcement.version}"[:64], timeout_s=timeout_s).connect()
    topics = _topics(announcement)
    try:
        broker.publish_retained(topics, wire.encode_command(announcement))
    finally:
        broker.close()
    return topics


def rollback_announcement(model: str | Path, private_key: str | Path, *, rollback_from: str, url: str,
                          signature_url: str, gateways: Sequence[str] | None = None,
                          issued_at: float | None = None) -> wire.ModelAnnouncement:
    """An announcement that takes gateways running ``rollback_from`` back to the (older) ``model``.

    Gateways refuse older versions unless the model signing key signed this exact step (model
    name, target version and file digest, and the version it replaces), so a captured or replayed
    old announcement cannot downgrade them."""
    from model_export.signing import SigningError, load_private_key

    model = Path(model)
    try:
        scorer = Scorer.load(model)
        key = load_private_key(private_key)
    except (ModelError, SigningError) as exc:
        raise PublishError(str(exc)) from None
    try:
        wire.validate_gateway_id(rollback_from)
    except wire.WireError:
        raise PublishError(f"--from {rollback_from!r} is not a model version") from None
    if rollback_from == scorer.version:
        raise PublishError(f"--from {rollback_from} is the version of {model.name} itself")
    sha = hashlib.sha256(model.read_bytes()).hexdigest()
    statement = wire.rollback_statement(scorer.name, scorer.version, sha, rollback_from)
    import base64

    return wire.ModelAnnouncement(scorer.name, scorer.version, url, sha, signature_url,
                                  datetime.now(timezone.utc).timestamp() if issued_at is None else issued_at,
                                  tuple(gateways) if gateways is not None else None, rollback_from,
                                  base64.b64encode(key.sign(statement)).decode("ascii"))


def announce_rollback(model: str | Path, private_key: str | Path, rollback_from: str, *,
                      store_dir: str | Path | None = None, s3_bucket: str | None = None,
                      s3_endpoint_url: str | None = None, base_url: str | None = None, mqtt_url: str,
                      mqtt_username: str | None = None, mqtt_password: str | None = None,
                      mqtt_tls: TlsFiles | None = None, gateways: Sequence[str] | None = None,
                      timeout_s: float = 15.0) -> dict:
    """Announce a signed rollback to ``model``, a version published before (its objects must be
    in the store, byte for byte), for gateways running ``rollback_from``."""
    model = Path(model)
    try:
        scorer = Scorer.load(model)
    except ModelError as exc:
        raise PublishError(str(exc)) from None
    prefix = model_prefix(scorer.name, scorer.version)
    keys = {"model": prefix + "model.onnx", "signature": prefix + "model.onnx.sig"}
    store = _DirStore(Path(store_dir), base_url) if store_dir is not None else _S3Store(s3_bucket, s3_endpoint_url,
                                                                                       base_url)
    stored = store.get(keys["model"])
    if stored is None or stored != model.read_bytes() or store.get(keys["signature"]) is None:
        raise PublishError(f"{prefix} does not hold {model.name} and its signature: publish it first "
                           "(a rollback names a version that was published)")
    cmd = rollback_announcement(model, private_key, rollback_from=rollback_from, url=store.url(keys["model"]),
                                signature_url=store.url(keys["signature"]), gateways=gateways)
    topics = announce(mqtt_url, cmd, timeout_s, username=mqtt_username, password=mqtt_password, tls=mqtt_tls)
    return {"name": cmd.name, "version": cmd.version, "rollback_from": rollback_from, "sha256": cmd.sha256,
            "url": cmd.url, "announced_on": topics}


def publish_model(model: str | Path, *, signature: str | Path | None = None, public_key: str | Path | None = None,
                  store_dir: str | Path | None = None, s3_bucket: str | None = None,
                  s3_endpoint_url: str | None = None, base_url: str | None = None,
                  database_url: str | None = None, mqtt_url: str | None = None,
                  mqtt_username: str | None = None, mqtt_password: str | None = None,
                  mqtt_tls: TlsFiles | None = None, gateways: Sequence[str] | None = None,
                  progress: Callable[[str], None] | None = None, timeout_s: float = 15.0) -> dict:
    """Upload, register and announce a signed model; returns a report with keys, URL and topics.

    All or nothing: the broker and the database are reached before anything is uploaded; the
    registration is committed only after the broker acknowledged the announcement, and objects
    this call uploaded are deleted again when a later step fails."""
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

    broker = conn = None
    uploaded: list[str] = []
    try:
        if mqtt_url:
            say(f"connecting to the broker at {mqtt_url.split('@')[-1]}")
            broker = _Broker(mqtt_url, username=mqtt_username, password=mqtt_password, tls=mqtt_tls or TlsFiles(),
                             client_id=f"gridsight-publish-{scorer.version}"[:64], timeout_s=timeout_s).connect()
        if database_url:
            import psycopg
            try:
                conn = psycopg.connect(_psycopg_url(database_url), connect_timeout=10)
            except psycopg.Error as exc:
                raise _db_error(manifest, exc) from None
        say(f"uploading {scorer.name} {scorer.version} to {prefix}")
        for key, body in ((keys["model"], data), (keys["signature"], sig),
                          (keys["manifest"], json.dumps(manifest, indent=2).encode())):
            if store.get(key) is None:
                uploaded.append(key)
            store.put(key, body)
        report = {"name": scorer.name, "version": scorer.version, "sha256": sha, "objects": keys,
                  "url": store.url(keys["model"]), "registered": False, "announced_on": []}
        if conn is not None:
            say("registering the version in model_versions")
            try:
                conn.execute(_REGISTER_SQL, _register_params(manifest, keys["model"]))
            except psycopg.Error as exc:
                raise _db_error(manifest, exc) from None
        if broker is not None:
            announcement = wire.ModelAnnouncement(
                name=scorer.name, version=scorer.version, url=report["url"], sha256=sha,
                signature_url=store.url(keys["signature"]), issued_at=datetime.now(timezone.utc).timestamp(),
                gateways=tuple(gateways) if gateways is not None else None)
            say(f"announcing on {broker.endpoint.url}")
            topics = _topics(announcement)
            broker.publish_retained(topics, wire.encode_command(announcement))
            report["announced_on"] = topics
        if conn is not None:
            try:
                conn.commit()
            except psycopg.Error as exc:
                raise _db_error(manifest, exc) from None
            report["registered"] = True
        uploaded.clear()    # everything succeeded: nothing to roll back
        return report
    finally:
        if uploaded:
            say(f"rolling back: removing {len(uploaded)} uploaded object(s)")
            for key in uploaded:
                try:
                    store.delete(key)
                except PublishError:
                    pass
        if conn is not None:
            conn.close()    # rolls back an uncommitted registration
        if broker is not None:
            broker.close()
