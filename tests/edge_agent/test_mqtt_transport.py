"""The publisher speaks TLS with client certificates and passwords, and falls back to MQTT 3.1.1."""

from __future__ import annotations

import datetime
import ipaddress
import socket
import subprocess
import threading

import pytest

from edge_agent.clock import ManualClock
from edge_agent.config import AgentSettings, MqttSettings
from edge_agent.readers.replay import ReplayReader
from edge_agent.runtime import Agent
from gridsight.local_services import LocalMosquitto, free_port, wait_for_port
from meter_data import T0, Subscriber, readings_by_meter, recording, wait_until, write_csv


def make_pki(directory):
    """A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def cert(subject, key, issuer, issuer_key, ca=False, san=None):
        builder = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
                   .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=2))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        return builder.sign(issuer_key, hashes.SHA256())

    def write(name, key, certificate):
        (directory / f"{name}.key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                                  serialization.PrivateFormat.PKCS8,
                                                                  serialization.NoEncryption()))
        (directory / f"{name}.crt").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))

    ca_key = ec.generate_private_key(ec.SECP256R1())
    write("ca", ca_key, cert("test-ca", ca_key, "test-ca", ca_key, ca=True))
    server_key = ec.generate_private_key(ec.SECP256R1())
    write("server", server_key, cert("127.0.0.1", server_key, "test-ca", ca_key,
                                     san=[x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]))
    client_key = ec.generate_private_key(ec.SECP256R1())
    write("client", client_key, cert("gw-tls", client_key, "test-ca", ca_key))
    return directory


@pytest.fixture
def tls_broker(tmp_path):
    pki = make_pki(tmp_path)
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(tmp_path / "passwd"), "gw-tls", "s3cret"], check=True)
    tls_port = free_port()
    extra = (f"password_file {tmp_path / 'passwd'}\n"
             f"listener {tls_port} 127.0.0.1\ncafile {pki / 'ca.crt'}\ncertfile {pki / 'server.crt'}\n"
             f"keyfile {pki / 'server.key'}\nrequire_certificate true\n")
    broker = LocalMosquitto(tmp_path / "mqtt", extra_conf=extra, anonymous=False).start()
    wait_for_port(tls_port, 10, what="Mosquitto TLS listener")
    yield broker, tls_port, pki
    broker.close()


def run_agent_briefly(tmp_path, mqtt: MqttSettings, gateway_id: str) -> tuple[Agent, list]:
    taken = recording(2, T0, 1800, 30)
    clock = ManualClock(T0)
    agent = Agent(AgentSettings(gateway_id=gateway_id, data_dir=tmp_path / gateway_id, mqtt=mqtt),
                  readers=[ReplayReader(write_csv(tmp_path / f"{gateway_id}.csv", taken))], clock=clock, scorer=None)
    agent.transport.start()
    while clock.now() < T0 + 1800 + 120:
        agent.tick()
        clock.advance(30)
    return agent, taken


def test_agent_publishes_over_tls_with_a_client_certificate_and_password(tmp_path, tls_broker):
    broker, tls_port, pki = tls_broker
    subscriber = Subscriber(broker.port, username="gw-tls", password="s3cret")
    mqtt = MqttSettings(url=f"mqtts://127.0.0.1:{tls_port}", ca_file=str(pki / "ca.crt"),
                        cert_file=str(pki / "client.crt"), key_file=str(pki / "client.key"),
                        username="gw-tls", password="s3cret", reconnect_min_s=0.1, reconnect_max_s=0.5)
    agent, taken = run_agent_briefly(tmp_path, mqtt, "gw-tls")
    try:
        assert subscriber.wait_for(lambda: len(subscriber.raw_readings()) >= len(taken), timeout=20)
    finally:
        agent.shutdown()
        subscriber.close()
    assert readings_by_meter(subscriber.raw_readings()) == readings_by_meter(taken)


def test_a_wrong_password_is_reported_and_retried_while_readings_stay_queued(tmp_path, tls_broker):
    broker, tls_port, pki = tls_broker
    mqtt = MqttSettings(url=f"mqtts://127.0.0.1:{tls_port}", ca_file=str(pki / "ca.crt"),
                        cert_file=str(pki / "client.crt"), key_file=str(pki / "client.key"),
                        username="gw-tls", password="wrong", reconnect_min_s=0.1, reconnect_max_s=0.3)
    agent, taken = run_agent_briefly(tmp_path, mqtt, "gw-tls")
    try:
        wait_until(lambda: agent.transport.counters.connect_failures >= 2, timeout=20)
        status = agent.status()
    finally:
        agent.shutdown()
    assert agent.transport.counters.connects == 0
    assert "refused" in (agent.transport.last_error or "")
    assert status["counters"]["mqtt_connected"] == 0 and status["queue_depth"] > 0


class Mqtt311OnlyProxy:
    """A broker front that, like an MQTT 3.1.1-only broker, refuses MQTT 5 CONNECTs with CONNACK
    return code 1 and passes 3.1.1 connections through to a real Mosquitto."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self.refused_v5 = 0
        self._server = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        head = b""
        while len(head) < 12:
            chunk = conn.recv(12 - len(head))
            if not chunk:
                conn.close()
                return
            head += chunk
        level = head[head.index(b"MQTT") + 4]
        if level == 5:
            self.refused_v5 += 1
            conn.sendall(b"\x20\x02\x00\x01")  # CONNACK: unacceptable protocol version
            conn.close()
            return
        up = socket.create_connection(("127.0.0.1", self.upstream_port))
        up.sendall(head)

        def pipe(a: socket.socket, b: socket.socket) -> None:
            try:
                while data := a.recv(65536):
                    b.sendall(data)
            except OSError:
                pass
            finally:
                a.close()
                b.close()

        threading.Thread(target=pipe, args=(conn, up), daemon=True).start()
        threading.Thread(target=pipe, args=(up, conn), daemon=True).start()

    def close(self) -> None:
        self._server.close()


def test_protocol_auto_falls_back_to_mqtt_311_when_the_broker_refuses_mqtt_5(tmp_path, mosquitto, subscriber):
    proxy = Mqtt311OnlyProxy(mosquitto.port)
    mqtt = MqttSettings(url=f"mqtt://127.0.0.1:{proxy.port}", reconnect_min_s=0.1, reconnect_max_s=0.3)
    agent, taken = run_agent_briefly(tmp_path, mqtt, "gw-old")
    try:
        assert subscriber.wait_for(lambda: len(subscriber.raw_readings()) >= len(taken), timeout=20)
    finally:
        agent.shutdown()
        proxy.close()
    assert proxy.refused_v5 >= 1 and agent.transport.counters.protocol == "3.1.1"
    assert readings_by_meter(subscriber.raw_readings()) == readings_by_meter(taken)
