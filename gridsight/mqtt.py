"""The one MQTT client factory: every role connects to the broker through :func:`make_client`.

One place parses ``mqtt://`` / ``mqtts://`` URLs, loads the CA, the client certificate and key
(mutual TLS, as the shipped broker config requires), and reads the broker password from a file
or the environment. Bad input (a missing certificate, a key that does not match it, a URL
without a host) raises :class:`MqttSetupError` with one line saying what to fix, before any
connection is tried. paho-mqtt is imported only when a client is made, so the kernel stays
importable without it.
"""

from __future__ import annotations

import os
import ssl
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from gridsight.errors import GridsightError

__all__ = [
    "MqttEndpoint",
    "MqttSetupError",
    "TlsFiles",
    "make_client",
    "parse_mqtt_url",
    "read_password",
    "check_tls_files",
]


class MqttSetupError(GridsightError):
    """The broker URL, TLS files or credentials cannot be used; the message names the one at fault."""


@dataclass(frozen=True, slots=True)
class MqttEndpoint:
    host: str
    port: int
    tls: bool
    username: str | None = None  # only when the URL carries user:password@
    password: str | None = None

    @property
    def url(self) -> str:
        """The URL without credentials, safe to print."""
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


def parse_mqtt_url(url: str, what: str = "broker URL") -> MqttEndpoint:
    """``mqtt://host[:port]`` (1883) or ``mqtts://host[:port]`` (8883); user:password@ is accepted."""
    parts = urllib.parse.urlsplit(url or "")
    if parts.scheme not in ("mqtt", "mqtts"):
        raise MqttSetupError(f"{what} {url!r}: expected mqtt://host:port or mqtts://host:port")
    try:
        port = parts.port
    except ValueError:
        raise MqttSetupError(f"{what} {url!r}: bad port") from None
    if not parts.hostname:
        raise MqttSetupError(f"{what} {url!r}: no host")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise MqttSetupError(f"{what} {url!r}: nothing may follow host:port")
    tls = parts.scheme == "mqtts"
    username = urllib.parse.unquote(parts.username) if parts.username else None
    password = urllib.parse.unquote(parts.password) if parts.password is not None else None
    return MqttEndpoint(parts.hostname, port or (8883 if tls else 1883), tls, username, password)


def read_password(
    password: str | None = None,
    password_file: str | Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    env_name: str = "MQTT_PASSWORD",
) -> str | None:
    """The broker password: an explicit value, else a file, else ``{env_name}_FILE``, else ``{env_name}``.

    A file is read whole and stripped of its trailing newline; an unreadable one is an error
    naming it, never a silent fall-back to no password."""
    env = os.environ if env is None else env
    if password:
        return password
    for source, path in (("password file", password_file), (f"{env_name}_FILE", env.get(f"{env_name}_FILE"))):
        if path:
            try:
                return Path(path).expanduser().read_text().strip()
            except OSError as exc:
                raise MqttSetupError(f"{source} {path}: cannot read ({exc.strerror or exc})") from None
    return env.get(env_name) or None


@dataclass(frozen=True, slots=True)
class TlsFiles:
    ca_file: str | None = None  # None: the system's CA store
    cert_file: str | None = None  # client certificate (mutual TLS)
    key_file: str | None = None

    def __post_init__(self) -> None:
        if bool(self.cert_file) != bool(self.key_file):
            raise MqttSetupError("a client certificate and its key go together: give both or neither")


def check_tls_files(tls: TlsFiles) -> ssl.SSLContext:
    """An SSL context with the CA and client certificate loaded; one clear line when a file is bad."""
    # Only the given CA is trusted when there is one (not the system store besides it): a fleet's
    # broker certificate must chain to the fleet CA and nothing else.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if not tls.ca_file:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    else:
        try:
            context.load_verify_locations(cafile=str(tls.ca_file))
        except FileNotFoundError:
            raise MqttSetupError(f"CA file {tls.ca_file} does not exist") from None
        except (ssl.SSLError, OSError) as exc:
            raise MqttSetupError(f"CA file {tls.ca_file} is not a PEM certificate ({_reason(exc)})") from None
    if tls.cert_file:
        for label, path in (("client certificate", tls.cert_file), ("client key", tls.key_file)):
            if not path or not Path(path).is_file():
                raise MqttSetupError(f"{label} {path} does not exist")
        try:
            context.load_cert_chain(str(tls.cert_file), str(tls.key_file))
        except (ssl.SSLError, OSError) as exc:
            reason = _reason(exc)
            if "KEY_VALUES_MISMATCH" in reason.upper() or "key values mismatch" in reason.lower():
                raise MqttSetupError(
                    f"client key {tls.key_file} does not belong to certificate {tls.cert_file}"
                ) from None
            raise MqttSetupError(
                f"client certificate {tls.cert_file} / key {tls.key_file} unusable ({reason})"
            ) from None
    return context


def _reason(exc: BaseException) -> str:
    return str(getattr(exc, "reason", None) or getattr(exc, "strerror", None) or exc)


def make_client(
    url: str | MqttEndpoint,
    *,
    client_id: str,
    username: str | None = None,
    password: str | None = None,
    tls: TlsFiles | None = None,
    protocol: str = "5",
    manual_ack: bool = False,
    clean_session: bool | None = None,
) -> tuple[Any, MqttEndpoint]:
    """A configured, unconnected paho client and the endpoint to connect it to.

    ``protocol`` is ``"5"`` or ``"3.1.1"``. Credentials in the URL are used when ``username`` is
    not given. With ``mqtts://`` the CA and client certificate of ``tls`` are loaded (and checked)
    here; with ``mqtt://`` any TLS file is refused, so a config never looks secure without being so."""
    import paho.mqtt.client as mqtt

    endpoint = url if isinstance(url, MqttEndpoint) else parse_mqtt_url(url)
    tls = tls or TlsFiles()
    if not endpoint.tls and (tls.ca_file or tls.cert_file):
        raise MqttSetupError(f"{endpoint.url}: certificates are given but the URL is not mqtts://")
    version = mqtt.MQTTv5 if protocol == "5" else mqtt.MQTTv311
    kwargs: dict[str, Any] = {"client_id": client_id, "protocol": version, "manual_ack": manual_ack}
    if version == mqtt.MQTTv311 and clean_session is not None:
        kwargs["clean_session"] = clean_session
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, **kwargs)
    user = username if username else endpoint.username
    secret = password if username else (password or endpoint.password)
    if user:
        client.username_pw_set(user, secret or None)
    if endpoint.tls:
        context = check_tls_files(tls)
        client.tls_set_context(context)
    return client, endpoint
