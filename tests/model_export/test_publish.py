"""Signing, verifying and publishing: object store layout, immutability, registration, retained announcement."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
import urllib.request
import pytest

import boto3
import onnx

from gridsight import wire
from edge_agent.features import DEFAULT_FEATURES
from edge_agent.model_update import ModelUpdater
from edge_agent.scorer import Scorer


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gridsight", "model", *args], capture_output=True, text=True,
                          timeout=240)


def _signed(trained_model, keypair):
    proc = _cli("sign", str(trained_model), "--private-key", str(keypair[0]))
    assert proc.returncode == 0, proc.stderr
    return trained_model.with_name(trained_model.name + ".sig")


@pytest.mark.slow
def test_verify_passes_a_good_signed_model(trained_model, keypair, fleet_csv):
    _signed(trained_model, keypair)
    proc = _cli("verify", str(trained_model), "--public-key", str(keypair[1]), "--readings", str(fleet_csv))
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["max_abs_diff"] < 1e-5 and report["signature"] == "valid" and report["rows_checked"] > 2000


def test_verify_fails_loudly_when_scores_were_altered_consistently(tmp_path, trained_model):
    """A file whose arithmetic was changed (and whose self-test was rewritten to match) is caught."""
    import numpy as np
    import onnxruntime as ort
    from onnx import numpy_helper

    model = onnx.load(str(trained_model))
    for i, init in enumerate(model.graph.initializer):
        if init.name == "scale":
            model.graph.initializer[i].CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * 1.01, "scale"))
    meta = {p.key: p for p in model.metadata_props}
    selftest = json.loads(meta["gridsight.selftest"].value)
    session = ort.InferenceSession(model.SerializeToString())
    selftest["scores"] = session.run(None, {"features": np.asarray(selftest["X"], dtype=np.float32)})[0].tolist()
    meta["gridsight.selftest"].value = json.dumps(selftest)
    altered = tmp_path / "altered.onnx"
    onnx.save(model, str(altered))
    proc = _cli("verify", str(altered))
    assert proc.returncode == 1
    assert "FAILED" in proc.stderr and "normalising constant" in proc.stderr


def test_verify_refuses_a_wrong_signature(tmp_path, trained_model, keypair):
    from model_export.signing import generate_keypair

    _signed(trained_model, keypair)
    generate_keypair(tmp_path / "other.pem", tmp_path / "other.pub")
    proc = _cli("verify", str(trained_model), "--public-key", str(tmp_path / "other.pub"))
    assert proc.returncode == 1 and "signature does not match" in proc.stderr


def test_publish_to_a_directory_store_lays_out_model_signature_and_manifest(tmp_path, trained_model, keypair):
    _signed(trained_model, keypair)
    store = tmp_path / "store"
    proc = _cli("publish", str(trained_model), "--store-dir", str(store), "--public-key", str(keypair[1]))
    assert proc.returncode == 0, proc.stderr
    prefix = store / "models" / "gridsight-test" / "v1"
    manifest = json.loads((prefix / "manifest.json").read_text())
    assert manifest["sha256"] == hashlib.sha256((prefix / "model.onnx").read_bytes()).hexdigest()
    assert (prefix / "model.onnx").read_bytes() == trained_model.read_bytes()
    assert (prefix / "model.onnx.sig").stat().st_size == 64
    assert manifest["feature_names"] and manifest["interval_s"] == 900


@pytest.mark.slow
def test_publishing_different_bytes_under_an_existing_version_is_refused(tmp_path, fleet_csv, keypair):
    from model_export.pipeline import train_and_export
    from model_export.signing import sign_file

    store = tmp_path / "store"
    for seed in (1, 2):
        path = tmp_path / f"m{seed}.onnx"
        train_and_export(fleet_csv, path, n_estimators=5, version="v9", name="dup", random_state=seed)
        sign_file(path, keypair[0])
        proc = _cli("publish", str(path), "--store-dir", str(store))
    assert proc.returncode == 2 and "immutable" in proc.stderr


def test_publish_refuses_an_unsigned_model(tmp_path, trained_model):
    proc = _cli("publish", str(trained_model), "--store-dir", str(tmp_path / "store"))
    assert proc.returncode == 2 and "no signature" in proc.stderr


@pytest.mark.slow
def test_published_model_reaches_a_gateway_through_s3_and_a_retained_announcement(
        tmp_path, fleet_csv, trained_model, keypair, s3_bucket, mosquitto):
    """Publish to S3 and announce retained; a gateway subscribing later fetches, verifies and swaps it in."""
    import paho.mqtt.client as mqtt

    from model_export.pipeline import train_and_export
    from model_export.signing import sign_file

    endpoint, bucket = s3_bucket
    v2 = tmp_path / "v2.onnx"
    train_and_export(fleet_csv, v2, n_estimators=10, version="v2", name="gridsight-test")
    sign_file(v2, keypair[0])
    proc = _cli("publish", str(v2), "--s3-bucket", bucket, "--s3-endpoint-url", endpoint,
                "--mqtt-url", mosquitto.url, "--gateways", "gw-1,gw-2")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["announced_on"] == [wire.command_topic("gw-1", "model"), wire.command_topic("gw-2", "model")]
    keys = {o["Key"] for o in boto3.client("s3", endpoint_url=endpoint).list_objects_v2(Bucket=bucket)["Contents"]}
    assert keys == {"models/gridsight-test/v2/model.onnx", "models/gridsight-test/v2/model.onnx.sig",
                    "models/gridsight-test/v2/manifest.json"}

    # A gateway connecting after the publish still receives the retained announcement.
    received: list[bytes] = []
    got = threading.Event()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="gw-1")
    client.on_connect = lambda c, *_: c.subscribe(wire.command_topic("gw-1", "model"), qos=1)
    client.on_message = lambda c, u, msg: (received.append(msg.payload), got.set())
    host, port = mosquitto.url.removeprefix("mqtt://").split(":")
    client.connect(host, int(port))
    client.loop_start()
    try:
        assert got.wait(20)
    finally:
        client.disconnect()
        client.loop_stop()
    cmd = wire.decode_command(received[0])
    assert cmd.version == "v2" and cmd.gateways == ("gw-1", "gw-2")
    assert urllib.request.urlopen(cmd.url, timeout=10).status == 200
    updater = ModelUpdater(tmp_path / "gw-models", keypair[1], gateway_id="gw-1", initial_model=trained_model)
    ok, reason = updater.handle_announcement(cmd)
    assert ok, reason
    assert updater.current_scorer().version == "v2"


def test_publish_registers_the_version_in_the_collector_database(tmp_path, trained_model, keypair, database_url):
    import psycopg

    from collector.db import migrate

    migrate(database_url, "0001_core")
    _signed(trained_model, keypair)
    proc = _cli("publish", str(trained_model), "--store-dir", str(tmp_path / "store"), "--database-url", database_url)
    assert proc.returncode == 0, proc.stderr
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT name, sha256, interval_s, feature_names, object_key, published_at "
                           "FROM model_versions WHERE version = 'v1'").fetchone()
    assert row[0] == "gridsight-test" and row[1] == hashlib.sha256(trained_model.read_bytes()).hexdigest()
    # the features the model was trained on: the default set less those without data (no voltage here)
    model_features = list(Scorer.load(trained_model).feature_names)
    assert set(model_features) < set(DEFAULT_FEATURES)
    assert row[2] == 900 and row[3] == model_features and row[4] == "models/gridsight-test/v1/model.onnx"
    assert row[5] is not None


def test_keygen_never_overwrites_an_existing_signing_key(tmp_path, keypair):
    private, public = keypair
    before = private.read_bytes()
    proc = _cli("keygen", "--private-key", str(private), "--public-key", str(tmp_path / "new.pub"))
    assert proc.returncode == 2 and "refusing to overwrite" in proc.stderr
    assert private.read_bytes() == before
    assert private.stat().st_mode & 0o077 == 0  # the private key is readable by its owner only
