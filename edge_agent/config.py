"""The agent's settings: one typed object, loaded by :func:`gridsight.settings.load_settings`.

Every key, its default and its meaning (TOML file ``agent.toml``; environment variables
``GRIDSIGHT_KEY`` and ``GRIDSIGHT_TABLE__KEY`` override it; ``MQTT_URL`` also sets
``mqtt.url``)::

    gateway_id = "gw-0001"          # required; letters, digits, . _ - (also the MQTT client id)
    data_dir = "/var/lib/gridsight" # outbox.sqlite lives here (environment: GRIDSIGHT_AGENT_DATA_DIR;
                                    # GRIDSIGHT_DATA_DIR is the collector's and is ignored here)
    interval_s = 900                # summary interval; must equal the model's interval
    poll_s = 1.0                    # how often every reader is polled (clock seconds)
    grace_s = 30.0                  # wait this long after an interval ends for stragglers
    raw_chunk_s = 60.0              # seal staged raw readings into one chunk message this often
    status_s = 60.0                 # retained status heartbeat period
    reader_backoff_max_s = 300.0    # a failing reader is retried with backoff up to this
    log_level = "info"              # debug | info | warning | error

    [mqtt]
    url = "mqtt://127.0.0.1:1883"   # or mqtts://host:8883 for TLS
    username = ""                   # optional
    password = ""                   # optional (prefer password_file or GRIDSIGHT_MQTT__PASSWORD)
    password_file = ""              # file holding the broker password (read at start-up)
    ca_file = ""                    # CA bundle for mqtts (default: system CAs)
    cert_file = ""                  # client certificate (mutual TLS)
    key_file = ""                   # client key
    protocol = "auto"               # auto (MQTT 5, falls back to 3.1.1) | 5 | 3.1.1
    keepalive_s = 30
    max_inflight = 50               # QoS 1 messages awaiting PUBACK
    reconnect_min_s = 1.0           # jittered exponential backoff, forever
    reconnect_max_s = 120.0
    drain_rate = 20.0               # backlog messages per second after an outage (0 = no limit)

    [outbox]
    budget_mb = 256.0               # disk budget; beyond it evict raw, then summaries, then flags
    synchronous = "full"            # full: survives power loss; normal: survives process crashes

    [model]
    path = ""                       # ONNX model file; empty = summaries without scores
    public_key = ""                 # Ed25519 public key (PEM) that signs models: enables
                                    # over-the-air updates from the cmd/model topics
    models_dir = ""                 # where verified updates are kept (default data_dir/models)
    source_dir = ""                 # file:// model URLs must point inside this folder (empty:
                                    # file:// refused); https and presigned S3 URLs need nothing

    [clock]
    speed = 1.0                     # >1 runs simulated time (fleet simulator, benchmarks)
    start = 0.0                     # simulated start, Unix s (0 = now)
    anchor = 0.0                    # wall time (Unix s) at which simulated time was `start`;
                                    # set it so restarts continue the same timeline (0 = start-up)

    [[readers]]                     # one table per meter source; see edge_agent/readers/
    type = "modbus_tcp"             # modbus_tcp | modbus_rtu | dsmr_p1 | replay | sim
    # ...options of that reader type
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gridsight.mqtt import MqttSetupError, TlsFiles, check_tls_files, read_password
from gridsight.settings import ConfigError

__all__ = ["AgentSettings", "MqttSettings", "OutboxSettings", "ModelSettings", "ClockSettings"]

_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_URL_RE = re.compile(r"^(mqtts?)://([^:/\s]+)(?::(\d{1,5}))?/?$")


def _positive(key: str, value: float) -> None:
    if not value > 0:
        raise ConfigError(key, f"must be positive, got {value}")


@dataclass
class MqttSettings:
    url: str = field(default="mqtt://127.0.0.1:1883", metadata={"env": "MQTT_URL"})
    username: str = ""
    password: str = ""
    password_file: str = ""
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    protocol: str = "auto"
    keepalive_s: int = 30
    max_inflight: int = 50
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 120.0
    drain_rate: float = 20.0

    def __post_init__(self) -> None:
        m = _URL_RE.match(self.url)
        if not m:
            raise ConfigError("mqtt.url", f"{self.url!r} is not mqtt://host[:port] or mqtts://host[:port]")
        if m.group(3) is not None and not 0 < int(m.group(3)) < 65536:
            raise ConfigError("mqtt.url", f"port {m.group(3)} is out of range")
        if self.protocol not in ("auto", "5", "3.1.1"):
            raise ConfigError("mqtt.protocol", f"{self.protocol!r} is not auto, 5 or 3.1.1")
        for key in ("ca_file", "cert_file", "key_file"):
            value = getattr(self, key)
            if value and not Path(value).expanduser().is_file():
                raise ConfigError(f"mqtt.{key}", f"{value} does not exist")
        if bool(self.cert_file) != bool(self.key_file):
            raise ConfigError(
                "mqtt.key_file" if self.cert_file else "mqtt.cert_file", "cert_file and key_file go together"
            )
        if (self.cert_file or self.ca_file) and not self.tls:
            raise ConfigError("mqtt.url", "certificates are set but the url is not mqtts://")
        if self.tls:
            try:
                check_tls_files(self.tls_files)
            except MqttSetupError as exc:
                raise ConfigError(
                    "mqtt.key_file"
                    if "key" in str(exc)
                    else "mqtt.ca_file"
                    if "CA file" in str(exc)
                    else "mqtt.cert_file",
                    str(exc),
                ) from None
        if self.password_file:
            try:
                self.password = read_password(None, self.password_file, env={}) or ""
            except MqttSetupError as exc:
                raise ConfigError("mqtt.password_file", str(exc)) from None
        if self.keepalive_s < 5:
            raise ConfigError("mqtt.keepalive_s", f"must be at least 5, got {self.keepalive_s}")
        if self.max_inflight < 1:
            raise ConfigError("mqtt.max_inflight", f"must be at least 1, got {self.max_inflight}")
        _positive("mqtt.reconnect_min_s", self.reconnect_min_s)
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ConfigError("mqtt.reconnect_max_s", "must not be below reconnect_min_s")
        if self.drain_rate < 0:
            raise ConfigError("mqtt.drain_rate", f"must be 0 (no limit) or positive, got {self.drain_rate}")

    @property
    def tls(self) -> bool:
        return self.url.startswith("mqtts://")

    @property
    def tls_files(self) -> TlsFiles:
        return TlsFiles(self.ca_file or None, self.cert_file or None, self.key_file or None)

    def _url_match(self) -> re.Match[str]:
        match = _URL_RE.match(self.url)
        if match is None:  # __post_init__ refused such a URL already
            raise ConfigError("mqtt.url", f"expected mqtt://host[:port] or mqtts://host[:port], got {self.url!r}")
        return match

    @property
    def host(self) -> str:
        return self._url_match().group(2)

    @property
    def port(self) -> int:
        port = self._url_match().group(3)
        return int(port) if port else (8883 if self.tls else 1883)


@dataclass
class OutboxSettings:
    budget_mb: float = 256.0
    synchronous: str = "full"

    def __post_init__(self) -> None:
        _positive("outbox.budget_mb", self.budget_mb)
        if self.synchronous.lower() not in ("full", "normal"):
            raise ConfigError("outbox.synchronous", f"{self.synchronous!r} is not full or normal")


@dataclass
class ModelSettings:
    path: str = ""
    public_key: str = ""
    models_dir: str = ""
    source_dir: str = ""

    def __post_init__(self) -> None:
        if self.path and not Path(self.path).expanduser().is_file():
            raise ConfigError("model.path", f"{self.path} does not exist")
        if self.public_key and not Path(self.public_key).expanduser().is_file():
            raise ConfigError("model.public_key", f"{self.public_key} does not exist")


@dataclass
class ClockSettings:
    speed: float = 1.0
    start: float = 0.0
    anchor: float = 0.0

    def __post_init__(self) -> None:
        _positive("clock.speed", self.speed)
        if self.start < 0:
            raise ConfigError("clock.start", f"must be a Unix time or 0, got {self.start}")
        if self.anchor < 0:
            raise ConfigError("clock.anchor", f"must be a Unix time or 0, got {self.anchor}")

    @property
    def simulated(self) -> bool:
        return self.speed != 1.0 or self.start > 0


@dataclass
class LocalSettings:
    """Optional integrations on the gateway (edge_agent/local); both off by default."""

    ha_mqtt_url: str = ""  # Home Assistant's broker, e.g. mqtt://127.0.0.1:1883; empty: off
    ha_discovery_prefix: str = "homeassistant"
    ha_username: str = ""
    ha_password_file: str = ""
    metrics_port: int = 0  # Prometheus text on metrics_host:metrics_port/metrics; 0: off
    metrics_host: str = "127.0.0.1"

    def __post_init__(self) -> None:
        if not 0 <= self.metrics_port <= 65535:
            raise ConfigError("local.metrics_port", f"{self.metrics_port} must be 0 (off) or 1..65535")
        if self.ha_mqtt_url and not self.ha_mqtt_url.startswith(("mqtt://", "mqtts://")):
            raise ConfigError("local.ha_mqtt_url", f"{self.ha_mqtt_url!r} must be mqtt://host[:port] or mqtts://...")


@dataclass
class AgentSettings:
    gateway_id: str = ""
    # Its own variable: a collector on the same machine keeps GRIDSIGHT_DATA_DIR for itself.
    data_dir: Path = field(
        default=Path("/var/lib/gridsight"), metadata={"env": "GRIDSIGHT_AGENT_DATA_DIR", "env_only": True}
    )
    interval_s: int = 900
    poll_s: float = 1.0
    grace_s: float = 30.0
    # The site's IANA time zone and holiday country for the day-type features; empty: the model's
    # (from its training), else UTC and no holidays.
    time_zone: str = ""
    holiday_country: str = ""
    raw_chunk_s: float = 60.0
    status_s: float = 60.0
    reader_backoff_max_s: float = 300.0
    log_level: str = "info"
    mqtt: MqttSettings = field(default_factory=MqttSettings)
    outbox: OutboxSettings = field(default_factory=OutboxSettings)
    model: ModelSettings = field(default_factory=ModelSettings)
    clock: ClockSettings = field(default_factory=ClockSettings)
    local: LocalSettings = field(default_factory=LocalSettings)
    readers: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.gateway_id:
            raise ConfigError("gateway_id", "missing (set gateway_id in the config file or GRIDSIGHT_GATEWAY_ID)")
        if not _ID_RE.match(self.gateway_id) or self.gateway_id == "fleet":
            raise ConfigError("gateway_id", f"{self.gateway_id!r} must be 1-64 letters, digits, '.', '_' or '-'")
        if not 1 <= self.interval_s <= 86_400 or 86_400 % self.interval_s:
            raise ConfigError("interval_s", f"{self.interval_s} must divide a day (e.g. 60, 300, 900, 3600)")
        for key in ("poll_s", "raw_chunk_s", "status_s", "reader_backoff_max_s"):
            _positive(key, getattr(self, key))
        if not 0 <= self.grace_s < self.interval_s:
            raise ConfigError("grace_s", f"must be between 0 and interval_s, got {self.grace_s}")
        if self.time_zone:
            from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

            try:
                ZoneInfo(self.time_zone)
            except (ZoneInfoNotFoundError, ValueError):
                raise ConfigError(
                    "time_zone", f"{self.time_zone!r} is not an IANA time zone (e.g. Europe/Paris)"
                ) from None
        if self.log_level.lower() not in ("debug", "info", "warning", "error"):
            raise ConfigError("log_level", f"{self.log_level!r} is not debug, info, warning or error")
        for i, table in enumerate(self.readers):
            if not isinstance(table, dict) or not isinstance(table.get("type"), str):
                raise ConfigError(f"readers[{i}].type", "missing")

    @property
    def outbox_path(self) -> Path:
        return Path(self.data_dir) / "outbox.sqlite"

    def describe(self) -> dict[str, Any]:
        """Settings as printed by ``check-config`` (the password masked)."""
        from gridsight.settings import settings_as_dict

        out = settings_as_dict(self)
        if out["mqtt"]["password"]:
            out["mqtt"]["password"] = "***"
        return out
