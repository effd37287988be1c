"""The collector's one typed settings object.

Loaded with :func:`gridsight.settings.load_settings`, so precedence is the same as every other
component: defaults < TOML file < environment < CLI overrides. The conventional deployment
variables (``DATABASE_URL``, ``MQTT_URL``, ``S3_ENDPOINT_URL``, ``S3_BUCKET``,
``GRIDSIGHT_DATA_DIR``) are read as such; every other field is ``GRIDSIGHT_COLLECTOR_<FIELD>``.
Leaving ``DATABASE_URL`` unset means an embedded PostgreSQL in ``data_dir``; leaving
``S3_BUCKET`` unset means a local directory object store in ``data_dir``.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlsplit

from gridsight.mqtt import MqttSetupError, TlsFiles, check_tls_files, read_password
from gridsight.settings import ConfigError, load_settings

__all__ = ["CollectorSettings", "CollectorSecrets", "load_collector_settings", "load_secrets", "ENV_PREFIX",
           "MIN_JWT_SECRET_BYTES", "UNKNOWN_GATEWAY_POLICIES",
           "asyncpg_dsn", "sqlalchemy_url", "mqtt_endpoint"]

ENV_PREFIX = "GRIDSIGHT_COLLECTOR_"
# "refuse" (default): a gateway nobody registered (registry import, enrollment) has its messages
# dead-lettered as unknown_gateway. "register": a gateway seen for the first time is added to
# `gateways` (auto_registered=true); for the demo and the simulator, never for a real fleet.
UNKNOWN_GATEWAY_POLICIES = ("register", "refuse")
# HS256 keys shorter than the hash output weaken every token (RFC 7518, section 3.2).
MIN_JWT_SECRET_BYTES = 32


def _secret(variable: str) -> Any:
    return field(default=None, repr=False, metadata={"env": variable, "env_only": True, "secret": True})


@dataclass
class CollectorSecrets:
    """Every secret and provider key of the collector, each from its variable ``NAME`` or from the
    file named by ``NAME_FILE`` (a mounted secret; it wins), never from a command line. Unset
    values are None; ``repr`` never shows them."""

    # signs API access tokens; unset: a random per-process secret (tokens end with the process)
    jwt_secret: str | None = _secret("GRIDSIGHT_JWT_SECRET")
    # base64 of 32 random bytes; wraps every customer's data key (unset: personal data disabled)
    master_key: str | None = _secret("GRIDSIGHT_MASTER_KEY")
    # the OpenWeatherMap provider's key (weather for forecasts)
    openweathermap_api_key: str | None = _secret("OPENWEATHERMAP_API_KEY")
    # the password 'gridsight accounts create-user' sets when no --password-file is given
    new_password: str | None = _secret("GRIDSIGHT_NEW_PASSWORD")

    def __post_init__(self) -> None:
        if self.jwt_secret is not None and len(self.jwt_secret.encode()) < MIN_JWT_SECRET_BYTES:
            raise ConfigError("GRIDSIGHT_JWT_SECRET", f"must be at least {MIN_JWT_SECRET_BYTES} bytes")


def _default_replica_id() -> str:
    host = socket.gethostname().split(".")[0] or "collector"
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in host)[:40]


@dataclass
class CollectorSettings:
    """Everything a collector replica needs; one instance is passed to ingest, API and jobs."""

    database_url: str | None = field(default=None, metadata={"env": "DATABASE_URL"})
    mqtt_url: str | None = field(default=None, metadata={"env": "MQTT_URL"})
    mqtt_username: str | None = field(default=None, metadata={"env": "MQTT_USERNAME"})
    mqtt_password: str | None = field(default=None, metadata={"env": "MQTT_PASSWORD"})
    mqtt_password_file: Path | None = field(default=None, metadata={"env": "MQTT_PASSWORD_FILE"})
    mqtt_ca_file: Path | None = None
    # The shipped broker config requires a client certificate of every account (the one
    # 'gridsight provision collector-account' writes to broker/{account}/client.{crt,key}).
    mqtt_cert_file: Path | None = None
    mqtt_key_file: Path | None = None
    s3_endpoint_url: str | None = field(default=None, metadata={"env": "S3_ENDPOINT_URL"})
    s3_bucket: str | None = field(default=None, metadata={"env": "S3_BUCKET"})
    # GRIDSIGHT_COLLECTOR_DATA_DIR; GRIDSIGHT_DATA_DIR is still read (older deployments), the agent ignores it
    data_dir: Path = field(default=Path(".gridsight/collector"), metadata={"env": "GRIDSIGHT_DATA_DIR"})
    # customers' wrapped data keys, one file each, destroyed on erasure (default: data_dir/keys);
    # outside PostgreSQL so erasure is not undone by dead tuples, the WAL or database backups
    key_store_dir: Path | None = None
    # Stable per replica: the broker keeps the persistent session (and unacked messages) under it.
    replica_id: str = field(default_factory=_default_replica_id)
    shared_group: str = "collectors"
    unknown_gateways: str = "refuse"
    # Embedded broker port used only when mqtt_url is unset (the no-configuration default).
    embedded_mqtt_port: int = 1883
    batch_max_messages: int = 500
    batch_max_wait_s: float = 0.2
    # Messages the broker may have in flight to this replica before acks come back.
    receive_maximum: int = 2000
    archive_interval_s: float = 2.0
    archive_batch_messages: int = 5000
    archive_max_backoff_s: float = 60.0
    partition_months_ahead: int = 2
    retention_days: int = 0          # 0 keeps facts forever; else monthly partitions older than this are dropped
    dedupe_days: int = 90            # how long (gateway_id, seq) keys are remembered
    dead_letter_days: int = 30
    maintenance_interval_s: float = 3600.0
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    api_max_page: int = 1000
    api_max_points: int = 2000
    api_hot_connections: int = 4     # database connections per API process for GET /anomalies and /consumption
    clock_skew_warn_s: float = 120.0
    # a Dask scheduler (tcp://host:8786) that fits forecasts; unset: local processes
    dask_scheduler: str | None = field(default=None, metadata={"env": "GRIDSIGHT_DASK_SCHEDULER"})
    secrets: CollectorSecrets = field(default_factory=CollectorSecrets)

    def __post_init__(self) -> None:
        if self.unknown_gateways not in UNKNOWN_GATEWAY_POLICIES:
            raise ConfigError("unknown_gateways", f"{self.unknown_gateways!r} is not one of "
                              f"{', '.join(UNKNOWN_GATEWAY_POLICIES)}")
        if self.database_url is not None:
            asyncpg_dsn(self.database_url, key="database_url")
        if self.mqtt_url is not None:
            _, _, tls = mqtt_endpoint(self.mqtt_url, key="mqtt_url")
            self._check_mqtt_tls(tls)
        if self.mqtt_password_file is not None:     # the file wins, as every NAME_FILE does
            try:
                self.mqtt_password = read_password(None, self.mqtt_password_file, env={})
            except MqttSetupError as exc:
                raise ConfigError("mqtt_password_file", str(exc)) from None
        if not self.replica_id or any(not (c.isalnum() or c in "-_") for c in self.replica_id):
            raise ConfigError("replica_id", "use letters, digits, '-' and '_' only")
        if not self.shared_group or any(c in self.shared_group for c in "/+#"):
            raise ConfigError("shared_group", "must be non-empty without '/', '+' or '#'")
        for key in ("batch_max_messages", "receive_maximum", "archive_batch_messages", "api_max_page",
                    "api_max_points", "api_hot_connections", "partition_months_ahead"):
            if getattr(self, key) < 1:
                raise ConfigError(key, "must be at least 1")
        for key in ("retention_days", "dedupe_days", "dead_letter_days"):
            if getattr(self, key) < 0:
                raise ConfigError(key, "must be 0 or more")
        for key in ("batch_max_wait_s", "archive_interval_s", "archive_max_backoff_s", "maintenance_interval_s"):
            if getattr(self, key) <= 0:
                raise ConfigError(key, "must be greater than 0")
        if not 0 < self.api_port < 65536:
            raise ConfigError("api_port", f"{self.api_port} is not a TCP port")
        if not 0 < self.embedded_mqtt_port < 65536:
            raise ConfigError("embedded_mqtt_port", f"{self.embedded_mqtt_port} is not a TCP port")

    def _check_mqtt_tls(self, tls: bool) -> None:
        files = {"mqtt_ca_file": self.mqtt_ca_file, "mqtt_cert_file": self.mqtt_cert_file,
                 "mqtt_key_file": self.mqtt_key_file}
        if not tls:
            given = [k for k, v in files.items() if v is not None]
            if given:
                raise ConfigError(given[0], "is set but mqtt_url is not mqtts://")
            return
        if (self.mqtt_cert_file is None) != (self.mqtt_key_file is None):
            raise ConfigError("mqtt_key_file" if self.mqtt_cert_file else "mqtt_cert_file",
                              "mqtt_cert_file and mqtt_key_file go together")
        try:
            check_tls_files(self.tls_files)
        except MqttSetupError as exc:
            text = str(exc)
            key = ("mqtt_ca_file" if text.startswith("CA file") else
                   "mqtt_key_file" if text.startswith("client key") else "mqtt_cert_file")
            raise ConfigError(key, text) from None

    @property
    def tls_files(self) -> TlsFiles:
        return TlsFiles(*(str(p) if p is not None else None
                          for p in (self.mqtt_ca_file, self.mqtt_cert_file, self.mqtt_key_file)))

    @property
    def key_store_path(self) -> Path:
        return self.key_store_dir or self.data_dir / "keys"

    @property
    def client_id(self) -> str:
        """MQTT client id: fixed per replica so a restart resumes the same persistent session.

        With a broker account it is the account name, as a broker that binds client ids to
        accounts (the shipped config's ``use_username_as_clientid``) would make it anyway; so
        each replica needs its own account (``gridsight provision collector-account --replica N``)."""
        return self.mqtt_username or f"gridsight-collector-{self.replica_id}"


def load_collector_settings(path: str | Path | None = None, *, env: Mapping[str, str] | None = None,
                            overrides: Mapping[str, Any] | None = None) -> CollectorSettings:
    """Collector settings from an optional TOML file, the environment and CLI overrides."""
    return load_settings(CollectorSettings, path, env_prefix=ENV_PREFIX, env=env, overrides=overrides)


def load_secrets(env: Mapping[str, str] | None = None) -> CollectorSecrets:
    """Only the secrets (from ``env``, default the process environment), for code that is handed
    no :class:`CollectorSettings` (an app assembled by hand, a test)."""
    return load_settings(CollectorSecrets, env_prefix=f"{ENV_PREFIX}SECRETS__", env=env)


def asyncpg_dsn(url: str, key: str = "database_url") -> str:
    """The URL as asyncpg wants it (``postgresql://``), whatever SQLAlchemy driver suffix it had."""
    parts = urlsplit(url)
    scheme = parts.scheme.split("+")[0]
    if scheme not in ("postgresql", "postgres"):
        raise ConfigError(key, f"expected a postgresql:// URL, got scheme {parts.scheme!r}")
    return "postgresql" + url[len(parts.scheme):]


def sqlalchemy_url(url: str) -> str:
    """The URL for SQLAlchemy/Alembic, on the psycopg 3 driver."""
    return "postgresql+psycopg" + asyncpg_dsn(url)[len("postgresql"):]


def mqtt_endpoint(url: str, key: str = "mqtt_url") -> tuple[str, int, bool]:
    """``(host, port, tls)`` from ``mqtt://host:port`` or ``mqtts://host:port``."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts"):
        raise ConfigError(key, f"expected mqtt:// or mqtts://, got {url!r}")
    try:
        port = parts.port
    except ValueError:
        raise ConfigError(key, f"bad port in {url!r}") from None
    if not parts.hostname:
        raise ConfigError(key, f"no host in {url!r}")
    tls = parts.scheme == "mqtts"
    return parts.hostname, port or (8883 if tls else 1883), tls
