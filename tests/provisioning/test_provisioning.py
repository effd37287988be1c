"""The technician flow end to end, offline: fleet CA, gateway identity, meter binding, bundle;
then the gateway's doctor against a real broker started with the shipped configuration."""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from edge_agent.clock import ClockHealth
from edge_agent.config import AgentSettings
from provisioning.cli import main as provision
from edge_agent.doctor import run_doctor
from gridsight.settings import load_settings
from gridsight.local_services import free_port

from broker_support import start_broker
from provisioning.fleet import Fleet

START = 1_767_225_600.0
SYNCED = lambda: ClockHealth(True, 0.002, 0.01)  # noqa: E731


@pytest.fixture(scope="session")
def signed_model(tmp_path_factory) -> tuple[Path, Path]:
    """A small Isolation Forest trained on a synthetic week, signed with a fresh Ed25519 key."""
    from gridsight.wire import Reading
    from model_export.pipeline import train_and_export
    from model_export.signing import generate_keypair, sign_file

    folder = tmp_path_factory.mktemp("model")
    rng = random.Random(7)
    readings = []
    for meter in ("m-1", "m-2", "m-3"):
        energy = 0.0
        for i in range(7 * 288):
            ts = START + i * 300
            power = 400 + 300 * math.sin(ts / 86400 * 2 * math.pi) + rng.random() * 50
            energy += power * 300 / 3.6e6
            readings.append(Reading(meter, ts, energy, power))
    model = folder / "model.onnx"
    train_and_export(readings, model, n_estimators=20, max_samples=64)
    generate_keypair(folder / "signing.key", folder / "signing.pub.pem")
    sign_file(model, folder / "signing.key")
    return model, folder / "signing.pub.pem"


def _meter_csv(path: Path) -> Path:
    rows = ["meter_id,ts,energy_kwh,power_w"] + [f"m-1,{START + i * 60},{10 + i * 0.01:.2f},600" for i in range(30)]
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.fixture
def provisioned(tmp_path, signed_model):
    """A fleet with one gateway bound to one meter, its bundle, and a running broker."""
    fleet_dir, bundle = tmp_path / "fleet", tmp_path / "bundle-gw-1"
    tls_port = free_port()
    model, public_key = signed_model
    steps = [
        ["ca", "init", "--fleet", str(fleet_dir)],
        ["ca", "server-cert", "--fleet", str(fleet_dir), "--host", "127.0.0.1"],
        ["collector-account", "--fleet", str(fleet_dir)],
        ["gateway", "gw-1", "--fleet", str(fleet_dir), "--broker", f"mqtts://127.0.0.1:{tls_port}"],
        ["bind-meter", "gw-1", "--fleet", str(fleet_dir), "--meter-id", "m-1", "--type", "replay",
         "--option", f"path={_meter_csv(tmp_path / 'meter.csv')}", "--site", "substation-7", "--lat", "52.37",
         "--lon", "4.89"],
        ["bundle", "gw-1", "--fleet", str(fleet_dir), "--out", str(bundle), "--install-dir", str(bundle),
         "--data-dir", str(tmp_path / "data"), "--model", str(model), "--model-public-key", str(public_key)],
    ]
    for argv in steps:
        assert provision(argv) == 0, argv
    fleet = Fleet(fleet_dir)
    mosquitto, _ = start_broker(fleet, tmp_path / "mosquitto", tls_port)
    yield fleet, bundle, mosquitto
    mosquitto.close()


def test_a_fresh_bundle_passes_every_doctor_check(provisioned):
    _, bundle, _ = provisioned
    checks = run_doctor(bundle / "agent.toml", clock_probe=SYNCED)
    assert [c.name for c in checks] == ["config valid", "bundle intact", "gateway identity", "clock synchronised",
                                        "broker reachable",
                                        "meter readers[0] (replay) answers", "model loads", "outbox writable", "disk budget"]
    assert [c.line() for c in checks if not c.ok] == []
    assert "signature verified" in next(c.detail for c in checks if c.name == "model loads")


def test_the_bundle_config_is_the_agents_own_format(provisioned):
    _, bundle, _ = provisioned
    settings = load_settings(AgentSettings, bundle / "agent.toml", env={})
    assert settings.gateway_id == "gw-1" and settings.mqtt.username == "gw-1" and settings.mqtt.tls
    assert settings.mqtt.cert_file == str(bundle / "client.crt")
    assert settings.readers == [{"type": "replay", "path": str(bundle.parent / "meter.csv")}]
    assert settings.model.path == str(bundle / "model.onnx")


def test_the_tarball_holds_everything_and_keeps_secrets_private(provisioned):
    _, bundle, _ = provisioned
    with tarfile.open(bundle.with_name(bundle.name + ".tar.gz")) as tar:
        members = {Path(m.name).name: m for m in tar.getmembers()}
    assert set(members) == {"agent.toml", "ca.crt", "client.crt", "client.key", "gridsight-agent.service",
                            "meters.json", "model.onnx", "model.onnx.sig", "model_public.pem", "MANIFEST.json"}
    for secret in ("agent.toml", "client.key"):
        assert members[secret].mode & 0o007 == 0, f"{secret} is readable by others"
        assert (members[secret].uname, members[secret].gname) == ("root", "gridsight")
    assert "ca.key" not in members
    unit = (bundle / "gridsight-agent.service").read_text()
    assert "User=gridsight" in unit and "--config /etc/gridsight/agent.toml" in unit
    meters = json.loads((bundle / "meters.json").read_text())
    assert meters[0]["meter_id"] == "m-1" and meters[0]["site"] == "substation-7" and meters[0]["lat"] == 52.37


def test_doctor_reports_an_unreachable_broker_and_exits_non_zero(provisioned):
    _, bundle, mosquitto = provisioned
    mosquitto.close()
    result = subprocess.run([sys.executable, "-m", "gridsight", "provision", "doctor", "--config",
                             str(bundle / "agent.toml"), "--broker-timeout", "3"], capture_output=True, text=True)
    assert result.returncode == 1
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 9 and all(line.startswith(("ok  ", "FAIL")) for line in lines)
    assert any(line.startswith("FAIL  broker reachable") for line in lines)


def test_doctor_refuses_a_revoked_gateway(provisioned):
    fleet, bundle, mosquitto = provisioned
    assert provision(["revoke", "gw-1", "--fleet", str(fleet.root)]) == 0
    mosquitto.stop()
    mosquitto.start()
    broker = next(c for c in run_doctor(bundle / "agent.toml", clock_probe=SYNCED) if c.name == "broker reachable")
    assert not broker.ok


def test_doctor_catches_a_tampered_model(provisioned):
    _, bundle, _ = provisioned
    model = bundle / "model.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    checks = {c.name: c for c in run_doctor(bundle / "agent.toml", clock_probe=SYNCED)}
    assert not checks["bundle intact"].ok and "model.onnx" in checks["bundle intact"].detail
    assert not checks["model loads"].ok and "signature" in checks["model loads"].detail


def test_doctor_reports_clock_and_disk_problems(provisioned):
    _, bundle, _ = provisioned
    checks = {c.name: c for c in run_doctor(bundle / "agent.toml", clock_probe=lambda: ClockHealth(False, 0.0, 16.0),
                                            disk_free=lambda p: 10 * 2**20)}
    assert not checks["clock synchronised"].ok and "NTP" in checks["clock synchronised"].detail
    assert not checks["disk budget"].ok and "10 MB free" in checks["disk budget"].detail
    lost = {c.name: c for c in run_doctor(bundle / "agent.toml", clock_probe=SYNCED, now=lambda: 86_400.0)}
    assert not lost["clock synchronised"].ok and "1970-01-02" in lost["clock synchronised"].detail


def test_doctor_reports_a_meter_that_does_not_answer(provisioned):
    _, bundle, _ = provisioned
    (bundle.parent / "meter.csv").write_text("serial,when\nx,y\n")
    meter = next(c for c in run_doctor(bundle / "agent.toml", clock_probe=SYNCED) if c.name == "meter readers[0] (replay) answers")
    assert not meter.ok and "header" in meter.detail


def test_doctor_names_the_config_key_at_fault_and_still_runs_the_later_checks(tmp_path):
    config = tmp_path / "agent.toml"
    config.write_text(f'gateway_id = "gw-1"\ndata_dir = "{tmp_path / "data"}"\ninterval_s = "often"\n'
                      '[mqtt]\nurl = "http://nope"\n')
    checks = run_doctor(config, clock_probe=SYNCED, broker_timeout_s=2)
    first = checks[0]
    assert not first.ok and first.name == "config valid"
    assert "interval_s" in first.detail and "mqtt.url" in first.detail
    names = [c.name for c in checks]
    assert names[1:] == ["clock synchronised", "broker reachable", "meters answer", "model loads", "outbox writable",
                         "disk budget"]
    assert next(c for c in checks if c.name == "outbox writable").ok


def test_a_config_that_is_not_toml_is_one_failed_check_and_the_clock_is_still_checked(tmp_path):
    config = tmp_path / "agent.toml"
    config.write_text("gateway_id = \n")
    checks = run_doctor(config, clock_probe=SYNCED)
    assert [c.name for c in checks] == ["config valid", "clock synchronised"] and "not valid TOML" in checks[0].detail


def test_the_bundle_config_turns_on_over_the_air_updates_with_the_model_key(provisioned):
    _, bundle, _ = provisioned
    settings = load_settings(AgentSettings, bundle / "agent.toml", env={})
    assert settings.model.public_key == str(bundle / "model_public.pem")
    from edge_agent.runtime import build_model_updater
    assert build_model_updater(settings) is not None


def test_enrollment_consuming_its_token_is_not_tampering_but_a_changed_token_is(provisioned, tmp_path):
    fleet, _, _ = provisioned
    bundle = tmp_path / "bundle-with-token"
    token = tmp_path / "token"
    token.write_text("one-time-token\n")
    assert provision(["bundle", "gw-1", "--fleet", str(fleet.root), "--out", str(bundle), "--install-dir", str(bundle),
                      "--data-dir", str(tmp_path / "data2"), "--enroll-token-file", str(token)]) == 0
    (bundle / "enroll.token").unlink()               # what 'provision enroll' does once the token is redeemed
    intact = next(c for c in run_doctor(bundle / "agent.toml", clock_probe=SYNCED) if c.name == "bundle intact")
    assert intact.ok, intact.detail
    (bundle / "enroll.token").write_text("another token\n")
    intact = next(c for c in run_doctor(bundle / "agent.toml", clock_probe=SYNCED) if c.name == "bundle intact")
    assert not intact.ok and "enroll.token" in intact.detail


def test_an_on_site_edit_fails_doctor_until_resealed_and_the_reseal_is_recorded(provisioned):
    _, bundle, _ = provisioned
    config = bundle / "agent.toml"
    config.write_text(config.read_text().replace("[[readers]]", "[[readers]]\nname = \"new-meter-ip\""))
    intact = next(c for c in run_doctor(config, clock_probe=SYNCED) if c.name == "bundle intact")
    assert not intact.ok and "agent.toml" in intact.detail and "provision reseal" in intact.detail
    result = subprocess.run([sys.executable, "-m", "gridsight", "provision", "reseal", "--config", str(config),
                             "--reason", "meter moved to 10.0.0.7"], capture_output=True, text=True)
    assert result.returncode == 0 and "agent.toml" in result.stdout, result.stderr
    checks = run_doctor(config, clock_probe=SYNCED)
    assert [c.line() for c in checks if not c.ok] == []
    assert "resealed 1x" in next(c.detail for c in checks if c.name == "bundle intact")
    manifest = json.loads((bundle / "MANIFEST.json").read_text())
    assert manifest["reseals"][0]["files"] == ["agent.toml"] and manifest["reseals"][0]["reason"] == "meter moved to 10.0.0.7"
    (bundle / "client.crt").unlink()
    result = subprocess.run([sys.executable, "-m", "gridsight", "provision", "reseal", "--config", str(config),
                             "--reason", "x"], capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "client.crt is missing" in result.stderr



def test_cli_errors_are_one_line_and_non_zero(tmp_path):
    result = subprocess.run([sys.executable, "-m", "gridsight", "provision", "gateway", "gw-9",
                             "--fleet", str(tmp_path / "empty"), "--broker", "mqtts://b:8883"],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "ca init" in result.stderr


def test_a_meter_cannot_be_bound_to_two_gateways(provisioned):
    fleet, _, _ = provisioned
    assert provision(["gateway", "gw-2", "--fleet", str(fleet.root), "--broker", "mqtts://127.0.0.1:8883"]) == 0
    assert provision(["bind-meter", "gw-2", "--fleet", str(fleet.root), "--meter-id", "m-1", "--type", "modbus_tcp",
                      "--register-map", "sdm630", "--option", "host=10.0.0.5", "--option", "unit=3"]) == 2


def test_modbus_meters_are_bound_with_their_register_map_and_typed_options(provisioned):
    fleet, _, _ = provisioned
    assert provision(["bind-meter", "gw-1", "--fleet", str(fleet.root), "--meter-id", "SDM-0042", "--type",
                      "modbus_tcp", "--register-map", "sdm630", "--option", "host=10.0.0.5",
                      "--option", "unit=3"]) == 0
    reader = fleet.load_gateway("gw-1").meters[-1].reader
    assert reader == {"type": "modbus_tcp", "meter_id": "SDM-0042", "map": "sdm630", "host": "10.0.0.5", "unit": 3}


def test_gateway_ids_that_break_the_topic_scheme_are_refused(tmp_path):
    fleet = str(tmp_path / "fleet")
    assert provision(["ca", "init", "--fleet", fleet]) == 0
    for bad in ("gw/1", "fleet", "+", "#", "gw 1"):
        assert provision(["gateway", bad, "--fleet", fleet, "--broker", "mqtts://b:8883"]) == 2, bad


def test_the_ca_key_and_gateway_secrets_are_private_files(provisioned):
    fleet, _, _ = provisioned
    for path in (fleet.ca_dir / "ca.key", fleet.gateway_dir("gw-1") / "client.key",
                 fleet.gateway_dir("gw-1") / "mqtt.password", fleet.passwd_file):
        assert os.stat(path).st_mode & 0o077 == 0, path


def test_the_agent_boots_from_the_bundle_and_reaches_the_collector_over_mutual_tls(provisioned, tmp_path):
    from gridsight import wire
    from broker_support import connect

    fleet, bundle, _ = provisioned
    tls_port = int(load_settings(AgentSettings, bundle / "agent.toml", env={}).mqtt.port)
    collector_password = (fleet.broker_dir / "collector.password").read_text().strip()
    collector = connect(tls_port, fleet, "collector", collector_password, fleet.broker_dir / "collector")
    assert collector.connected == 0
    collector.subscribe("gridsight/v1/#")
    env = {**os.environ, "GRIDSIGHT_CLOCK__SPEED": "120", "GRIDSIGHT_CLOCK__START": str(START),
           "GRIDSIGHT_RAW_CHUNK_S": "60"}
    agent = subprocess.Popen([sys.executable, "-m", "gridsight", "agent", "run", "--config", str(bundle / "agent.toml")],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        raw_topic = wire.topic_for("gw-1", "raw")
        received = collector.wait_for(raw_topic, timeout=60)
    finally:
        agent.terminate()
        agent.wait(30)
        collector.close()
    raw = wire.decode(*received[-1])
    assert raw.gateway_id == "gw-1" and {r.meter_id for r in raw.readings} == {"m-1"}


def test_a_bundle_installed_on_another_gateway_fails_doctor_in_one_line(provisioned, tmp_path):
    """gw-2's certificate and key in gw-1's folder (a technician copied the wrong bundle's files)."""
    fleet, bundle, _ = provisioned
    assert provision(["gateway", "gw-2", "--fleet", str(fleet.root), "--broker", "mqtts://127.0.0.1:8883"]) == 0
    for name in ("client.crt", "client.key"):
        (bundle / name).write_bytes((fleet.gateway_dir("gw-2") / name).read_bytes())
    checks = {c.name: c for c in run_doctor(bundle / "agent.toml", clock_probe=SYNCED)}
    identity = checks["gateway identity"]
    assert not identity.ok and "client.crt says gw-2" in identity.detail and "agent.toml says gw-1" in identity.detail
