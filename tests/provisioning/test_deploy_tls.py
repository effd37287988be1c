"""Everything that talks to the shipped broker (TLS, require_certificate, password file, ACL)
connects through the one client factory: the collector and `model publish` with a client
certificate, and bad TLS input is one line before anything changes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from collector.settings import load_collector_settings
from gridsight import wire
from gridsight.mqtt import MqttSetupError, TlsFiles, check_tls_files, make_client
from gridsight.settings import ConfigError
from provisioning.ca import FleetCA
from provisioning.fleet import Fleet

from broker_support import connect, start_broker
from test_provisioning import signed_model  # noqa: F401  (session fixture)


@pytest.fixture
def shipped_broker(tmp_path):
    fleet = Fleet(tmp_path / "fleet")
    FleetCA.init(fleet.ca_dir)
    fleet.ca().issue_server(["127.0.0.1"], fleet.broker_dir)
    fleet.add_collector("collector")
    fleet.create_gateway("gw-a", "mqtts://127.0.0.1:8883")
    mosquitto, port = start_broker(fleet, tmp_path / "mosquitto")
    yield fleet, port
    mosquitto.close()


def _connack(url: str, **kwargs) -> int | None:
    client, endpoint = make_client(url, client_id="t-factory", **kwargs)
    answer: dict = {}
    done = threading.Event()
    client.on_connect = lambda c, u, f, rc, p=None: (answer.setdefault("rc", rc.value), done.set())
    client.on_disconnect = lambda *a, **k: done.set()
    try:
        client.connect(endpoint.host, endpoint.port)
    except OSError:
        return None
    client.loop_start()
    done.wait(10)
    client.disconnect()
    client.loop_stop()
    return answer.get("rc")


def _collector_env(fleet: Fleet, port: int, cert: bool = True) -> dict[str, str]:
    env = {"MQTT_URL": f"mqtts://127.0.0.1:{port}", "MQTT_USERNAME": "collector",
           "MQTT_PASSWORD_FILE": str(fleet.broker_dir / "collector.password"),
           "GRIDSIGHT_COLLECTOR_MQTT_CA_FILE": str(fleet.ca_dir / "ca.crt")}
    if cert:
        env["GRIDSIGHT_COLLECTOR_MQTT_CERT_FILE"] = str(fleet.broker_dir / "collector" / "client.crt")
        env["GRIDSIGHT_COLLECTOR_MQTT_KEY_FILE"] = str(fleet.broker_dir / "collector" / "client.key")
    return env


def test_the_collector_logs_in_to_the_shipped_broker_with_its_client_certificate(shipped_broker):
    fleet, port = shipped_broker
    with_cert = load_collector_settings(env=_collector_env(fleet, port))
    without = load_collector_settings(env=_collector_env(fleet, port, cert=False))
    assert with_cert.mqtt_password == (fleet.broker_dir / "collector.password").read_text().strip()
    common = dict(username="collector", password=with_cert.mqtt_password)
    assert _connack(with_cert.mqtt_url, tls=with_cert.tls_files, **common) == 0
    assert _connack(without.mqtt_url, tls=without.tls_files, **common) is None   # broker: no peer certificate


def test_a_collector_key_that_does_not_match_its_certificate_is_one_config_error(shipped_broker):
    fleet, port = shipped_broker
    env = _collector_env(fleet, port)
    env["GRIDSIGHT_COLLECTOR_MQTT_KEY_FILE"] = str(fleet.gateway_dir("gw-a") / "client.key")
    with pytest.raises(ConfigError) as err:
        load_collector_settings(env=env)
    assert err.value.key == "mqtt_key_file" and "does not belong to certificate" in str(err.value)
    env = _collector_env(fleet, port)
    env["GRIDSIGHT_COLLECTOR_MQTT_CERT_FILE"] = "/nonexistent/client.crt"
    with pytest.raises(ConfigError, match="mqtt_cert_file.*does not exist"):
        load_collector_settings(env=env)


def test_tls_files_on_a_plain_url_are_refused_rather_than_ignored(tmp_path):
    with pytest.raises(MqttSetupError, match="not mqtts"):
        make_client("mqtt://broker.invalid:8883", client_id="x", tls=TlsFiles(ca_file=str(tmp_path / "ca.crt")))
    with pytest.raises(MqttSetupError, match="go together"):
        TlsFiles(cert_file="a.crt")
    with pytest.raises(MqttSetupError, match="expected mqtt://host:port"):
        make_client("http://broker:1883", client_id="x")
    with pytest.raises(MqttSetupError, match="CA file .* does not exist"):
        check_tls_files(TlsFiles(ca_file=str(tmp_path / "missing.crt")))


def _publish(model: Path, public_key: Path, store: Path, fleet: Fleet, port: int, *extra: str,
             password_env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, **(password_env if password_env is not None else
                            {"MQTT_PASSWORD_FILE": str(fleet.broker_dir / "collector.password")})}
    return subprocess.run(
        [sys.executable, "-m", "gridsight", "model", "publish", str(model), "--public-key", str(public_key),
         "--store-dir", str(store), "--mqtt-url", f"mqtts://127.0.0.1:{port}", "--mqtt-username", "collector",
         "--ca-file", str(fleet.ca_dir / "ca.crt"), *extra], capture_output=True, text=True, env=env, timeout=120)


def test_model_publish_announces_over_mutual_tls_with_the_password_from_a_file(shipped_broker, signed_model, tmp_path):
    fleet, port = shipped_broker
    model, public_key = signed_model
    gateway = connect(port, fleet, "gw-a", (fleet.gateway_dir("gw-a") / "mqtt.password").read_text().strip(),
                      fleet.gateway_dir("gw-a"))
    gateway.subscribe(wire.fleet_command_topic("model"))
    proc = _publish(model, public_key, tmp_path / "store", fleet, port,
                    "--cert-file", str(fleet.broker_dir / "collector" / "client.crt"),
                    "--key-file", str(fleet.broker_dir / "collector" / "client.key"))
    assert proc.returncode == 0, proc.stderr
    topic, payload = gateway.wait_for(wire.fleet_command_topic("model"), timeout=20)[-1]
    gateway.close()
    announcement = wire.decode_command(payload)
    assert announcement.version == json.loads(proc.stdout)["version"]
    assert (tmp_path / "store" / json.loads(proc.stdout)["objects"]["model"]).is_file()


@pytest.mark.parametrize("case", ["no client certificate", "wrong password"])
def test_model_publish_uploads_nothing_when_the_broker_cannot_be_used(shipped_broker, signed_model, tmp_path, case):
    fleet, port = shipped_broker
    model, public_key = signed_model
    password_file = tmp_path / "wrong.password"
    password_file.write_text("not-the-password\n")
    extra = [] if case == "no client certificate" else [
        "--cert-file", str(fleet.broker_dir / "collector" / "client.crt"),
        "--key-file", str(fleet.broker_dir / "collector" / "client.key"), "--mqtt-password-file", str(password_file)]
    proc = _publish(model, public_key, tmp_path / "store", fleet, port, *extra)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "broker" in errors[0], proc.stderr
    assert not any(p.is_file() for p in (tmp_path / "store").rglob("*"))


def test_model_publish_with_a_key_from_another_certificate_says_so_in_one_line(shipped_broker, signed_model, tmp_path):
    fleet, port = shipped_broker
    model, public_key = signed_model
    proc = _publish(model, public_key, tmp_path / "store", fleet, port,
                    "--cert-file", str(fleet.broker_dir / "collector" / "client.crt"),
                    "--key-file", str(fleet.gateway_dir("gw-a") / "client.key"))
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "does not belong to certificate" in errors[0], proc.stderr
    assert not (tmp_path / "store").exists() or not any((tmp_path / "store").rglob("*.onnx"))


def test_an_announcement_the_broker_refuses_rolls_the_upload_back(shipped_broker, signed_model, tmp_path):
    """A gateway's account may log in but not write fleet commands: the publish leaves the store as it was."""
    fleet, port = shipped_broker
    model, public_key = signed_model
    proc = _publish(model, public_key, tmp_path / "store", fleet, port, "--mqtt-username", "gw-a",
                    "--cert-file", str(fleet.gateway_dir("gw-a") / "client.crt"),
                    "--key-file", str(fleet.gateway_dir("gw-a") / "client.key"),
                    password_env={"MQTT_PASSWORD": (fleet.gateway_dir("gw-a") / "mqtt.password").read_text().strip()})
    assert proc.returncode != 0
    assert "refused the announcement" in proc.stderr and "rolling back" in proc.stderr, proc.stderr
    assert not any(p.is_file() for p in (tmp_path / "store").rglob("*"))


class _BrokerAsItsOwnUser:
    """Mosquitto with the shipped gridsight.conf, dropping to the `mosquitto` user as a packaged
    broker does, reading its files from ``dest`` (the folder the config names)."""

    def __init__(self, dest: Path, work_dir: Path) -> None:
        from gridsight.local_services import LocalMosquitto, free_port
        from broker_support import SHIPPED_CONF

        self.port = free_port()
        text = SHIPPED_CONF.read_text().replace("/etc/mosquitto/gridsight/", f"{dest}/")
        text = text.replace("listener 8883\n", f"listener {self.port} 127.0.0.1\n")
        conf = "user mosquitto\npersistence false\nlog_dest stdout\nlog_type error\nlog_type warning\n" + text
        self.broker = LocalMosquitto(work_dir, port=self.port)
        self.broker.write_config = lambda: (work_dir.mkdir(parents=True, exist_ok=True),
                                            (work_dir / "mosquitto.conf").write_text(conf),
                                            work_dir / "mosquitto.conf")[-1]

    def log(self) -> str:
        return (self.broker.work_dir / "mosquitto.log").read_text()


@pytest.mark.skipif(os.geteuid() != 0, reason="changing a file's owner needs root")
def test_broker_files_installed_with_owner_are_readable_by_a_broker_running_as_its_own_user(tmp_path):
    import pwd
    import shutil
    import tempfile

    pwd.getpwnam("mosquitto")
    fleet = Fleet(tmp_path / "fleet")
    FleetCA.init(fleet.ca_dir)
    fleet.ca().issue_server(["127.0.0.1"], fleet.broker_dir)
    fleet.add_collector("collector")
    # outside pytest's 0700 tmp folder, so the mosquitto user can reach it, as /etc/mosquitto/gridsight
    dest = Path(tempfile.mkdtemp(prefix="gridsight-broker-files-")) / "gridsight"
    os.chmod(dest.parent, 0o755)
    try:
        proc = subprocess.run([sys.executable, "-m", "gridsight", "provision", "broker-files", "--fleet",
                               str(fleet.root), "--dest", str(dest), "--owner", "mosquitto"],
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        owner = pwd.getpwnam("mosquitto").pw_uid
        assert all(p.stat().st_uid == owner and p.stat().st_mode & 0o077 in (0, 0o044) for p in dest.iterdir())
        assert (dest / "server.key").stat().st_mode & 0o077 == 0 and (dest / "passwd").stat().st_mode & 0o077 == 0
        runner = _BrokerAsItsOwnUser(dest, tmp_path / "mosquitto")
        runner.broker.start()
        try:
            password = (fleet.broker_dir / "collector.password").read_text().strip()
            rc = _connack(f"mqtts://127.0.0.1:{runner.port}", username="collector", password=password,
                          tls=TlsFiles(str(fleet.ca_dir / "ca.crt"), str(fleet.broker_dir / "collector/client.crt"),
                                       str(fleet.broker_dir / "collector/client.key")))
            assert rc == 0, runner.log()
        finally:
            runner.broker.close()
    finally:
        shutil.rmtree(dest.parent, ignore_errors=True)


def test_broker_files_for_a_user_that_does_not_exist_is_one_line(tmp_path):
    fleet = Fleet(tmp_path / "fleet")
    FleetCA.init(fleet.ca_dir)
    fleet.ca().issue_server(["127.0.0.1"], fleet.broker_dir)
    fleet.add_collector("collector")
    proc = subprocess.run([sys.executable, "-m", "gridsight", "provision", "broker-files", "--fleet", str(fleet.root),
                           "--dest", str(tmp_path / "dest"), "--owner", "no-such-broker-user"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "no user 'no-such-broker-user'" in proc.stderr
    assert not (tmp_path / "dest").exists()
