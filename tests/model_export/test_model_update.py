"""Over-the-air updates: only a checksummed, correctly signed, self-testing model replaces the running one."""

from __future__ import annotations

import hashlib
import shutil

import onnx
import pytest
from onnx import numpy_helper

from edge_agent.model_update import ModelUpdater
from edge_agent.scorer import ModelError, Scorer
from gridsight.wire import ModelAnnouncement, decode_command, encode_command
from model_export.pipeline import train_and_export
from model_export.signing import generate_keypair, sign_file


@pytest.fixture
def release(tmp_path, fleet_csv, keypair):
    """Train, sign and 'host' models in a directory the updater fetches from over file:// URLs."""
    private, _ = keypair
    hosted = tmp_path / "hosted"
    hosted.mkdir()

    def make(version: str, name: str = "gridsight-test") -> tuple[ModelAnnouncement, object]:
        path = hosted / f"{name}-{version}.onnx"
        train_and_export(fleet_csv, path, n_estimators=10, max_samples=64, version=version, name=name)
        sig = sign_file(path, private)
        cmd = ModelAnnouncement(name, version, path.as_uri(), hashlib.sha256(path.read_bytes()).hexdigest(),
                                sig.as_uri(), 1_760_000_000.0)
        return cmd, path

    return make


@pytest.fixture
def updater(tmp_path, keypair, trained_model):
    _, public = keypair
    return ModelUpdater(tmp_path / "agent-models", public, gateway_id="gw-1", initial_model=trained_model,
                        source_dir=tmp_path / "hosted")


def test_a_signed_model_is_verified_loaded_and_swapped_in(updater, release):
    cmd, _ = release("v2")
    assert updater.current_scorer().version == "v1"
    ok, reason = updater.handle_announcement(decode_command(encode_command(cmd)))
    assert ok, reason
    assert updater.current_scorer().version == "v2"
    assert updater.status().current_version == "v2" and updater.status().last_ok is True


@pytest.mark.slow
def test_a_tampered_model_is_refused_and_the_running_one_kept(updater, release):
    cmd, path = release("v2")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    ok, reason = updater.handle_announcement(cmd)
    assert not ok and "checksum mismatch" in reason
    # An attacker who also rewrites the announced checksum still lacks the private key.
    forged = ModelAnnouncement(cmd.name, cmd.version, cmd.url, hashlib.sha256(bytes(data)).hexdigest(),
                               cmd.signature_url, cmd.issued_at)
    ok, reason = updater.handle_announcement(forged)
    assert not ok and "signature does not match" in reason
    assert updater.current_scorer().version == "v1"
    assert "kept gridsight-test v1" in reason


@pytest.mark.slow
def test_a_model_signed_with_another_key_is_refused(tmp_path, updater, release):
    cmd, path = release("v2")
    generate_keypair(tmp_path / "rogue.pem", tmp_path / "rogue.pub")
    sign_file(path, tmp_path / "rogue.pem")
    ok, reason = updater.handle_announcement(cmd)
    assert not ok and "signature does not match the pinned public key" in reason
    assert updater.current_scorer().version == "v1"


@pytest.mark.slow
def test_a_correctly_signed_model_failing_its_self_test_is_refused(tmp_path, keypair, updater, release):
    cmd, path = release("v2")
    model = onnx.load(str(path))
    for i, init in enumerate(model.graph.initializer):
        if init.name == "offset":
            shifted = numpy_helper.to_array(init) + 0.25
            model.graph.initializer[i].CopyFrom(numpy_helper.from_array(shifted, "offset"))
    onnx.save(model, str(path))
    sign_file(path, keypair[0])  # the key holder signed a broken build
    cmd = ModelAnnouncement(cmd.name, cmd.version, cmd.url, hashlib.sha256(path.read_bytes()).hexdigest(),
                            cmd.signature_url, cmd.issued_at)
    ok, reason = updater.handle_announcement(cmd)
    assert not ok and "self-test failed" in reason
    assert updater.current_scorer().version == "v1"


@pytest.mark.slow
def test_an_unreachable_model_is_refused_with_the_reason(updater, release):
    cmd, path = release("v2")
    path.unlink()
    ok, reason = updater.handle_announcement(cmd)
    assert not ok and "cannot fetch" in reason and updater.current_scorer().version == "v1"


def test_announcement_for_a_canary_set_is_ignored_by_other_gateways(updater, release):
    cmd, _ = release("v2")
    canary = ModelAnnouncement(cmd.name, cmd.version, cmd.url, cmd.sha256, cmd.signature_url, cmd.issued_at,
                               gateways=("gw-7",))
    ok, reason = updater.handle_announcement(canary)
    assert ok and "other gateways" in reason and updater.current_scorer().version == "v1"


@pytest.mark.slow
def test_rollback_returns_to_the_previous_model(updater, release):
    for version in ("v2", "v3"):
        cmd, _ = release(version)
        assert updater.handle_announcement(cmd)[0]
    ok, reason = updater.rollback()
    assert ok, reason
    assert updater.current_scorer().version == "v2"
    ok, _ = updater.rollback()  # rolling back again toggles to the one before (v3), a known pair
    assert ok and updater.current_scorer().version == "v3"


@pytest.mark.slow
def test_rollback_to_the_initial_model_after_the_first_update(updater, release):
    cmd, _ = release("v2")
    assert updater.handle_announcement(cmd)[0]
    ok, reason = updater.rollback()
    assert ok and updater.current_scorer().version == "v1", reason


def test_a_restarted_agent_runs_the_model_it_last_switched_to(tmp_path, keypair, trained_model, updater, release):
    cmd, _ = release("v2")
    assert updater.handle_announcement(cmd)[0]
    again = ModelUpdater(tmp_path / "agent-models", keypair[1], gateway_id="gw-1", initial_model=trained_model)
    assert again.current_scorer().version == "v2"


@pytest.mark.slow
def test_a_model_corrupted_on_disk_falls_back_after_restart(tmp_path, keypair, trained_model, updater, release):
    for version in ("v2", "v3"):
        assert updater.handle_announcement(release(version)[0])[0]
    (tmp_path / "agent-models" / "gridsight-test-v3.onnx").write_bytes(b"garbage")
    again = ModelUpdater(tmp_path / "agent-models", keypair[1], gateway_id="gw-1", initial_model=trained_model)
    assert again.current_scorer().version == "v2"


def test_scorer_refuses_a_file_that_is_not_a_gridsight_model(tmp_path, trained_model):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00not onnx")
    with pytest.raises(ModelError, match="not a loadable ONNX model"):
        Scorer.load(junk)
    model = onnx.load(str(trained_model))
    del model.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(model, str(bare))
    with pytest.raises(ModelError, match="not a gridsight model"):
        Scorer.load(bare)
    with pytest.raises(ModelError, match="cannot read"):
        Scorer.load(tmp_path / "missing.onnx")


@pytest.mark.slow
def test_scorer_labels_rows_below_the_threshold_and_explains_them(trained_model, fleet):
    import numpy as np

    from edge_agent.features import batch_features
    from model_export.readings import ReadingTable, interval_series

    scorer = Scorer.load(trained_model)
    meters = list(fleet.kwh)
    table = ReadingTable("interval", [m for m in meters for _ in fleet.kwh[m]],
                         np.concatenate([fleet.ts(m) for m in meters]),
                         np.concatenate([fleet.kwh[m] for m in meters]), None)
    X, _ = batch_features(interval_series(table, 900)[0], scorer.feature_names)
    scores, flags = scorer.score(X)
    assert np.array_equal(flags, scores < scorer.threshold) and flags.any() and not flags.all()
    reasons = [scorer.explain(row) for row in X[flags][:50]]
    assert any(r and ("drop" in r or "spike" in r or "outage" in r or "stuck" in r) for r in reasons)
    with pytest.raises(ValueError, match="features"):
        scorer.score(X[:, :3])
