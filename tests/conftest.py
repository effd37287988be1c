"""Fixtures that bring their own services: a throwaway embedded PostgreSQL, Mosquitto brokers
and an S3-protocol server, each on free ports. No test touches a service already running on
the machine: the conventional URLs are removed from the environment for the whole run."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
import uuid
from pathlib import Path

import pytest

from gridsight.local_services import EmbeddedPostgres, LocalMosquitto, LocalS3Server

for _var in ("DATABASE_URL", "MQTT_URL", "S3_ENDPOINT_URL", "S3_BUCKET", "PGHOST", "PGPORT"):
    os.environ.pop(_var, None)
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")


@pytest.fixture(scope="session")
def postgres_server() -> EmbeddedPostgres:
    """One embedded PostgreSQL server for the session (fsync off: tests need speed, not durability).

    Its data lives outside pytest's temporary root: as root the server runs as an unprivileged
    user, and pytest makes its own root private again whenever a session starts."""
    root = Path(tempfile.mkdtemp(prefix="gridsight-test-pg-"))
    server = EmbeddedPostgres(root / "data", durable=False).start()
    yield server
    server.close()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def database_url(postgres_server) -> str:
    """A fresh, empty database on the session's server; dropped after the test."""
    import asyncio

    import asyncpg

    name = f"t_{uuid.uuid4().hex[:12]}"

    async def run(sql: str) -> None:
        conn = await asyncpg.connect(postgres_server.dsn("postgres"))
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run(f'CREATE DATABASE "{name}"'))
    yield postgres_server.dsn(name)
    asyncio.run(run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def mosquitto(tmp_path) -> LocalMosquitto:
    """A fresh Mosquitto broker on a free port, with persistence in the test's directory."""
    broker = LocalMosquitto(tmp_path / "mosquitto").start()
    yield broker
    broker.close()


@pytest.fixture(scope="session")
def s3_server() -> LocalS3Server:
    server = LocalS3Server().start()
    yield server
    server.close()


@pytest.fixture
def s3_bucket(s3_server) -> tuple[str, str]:
    """``(endpoint_url, bucket)`` of a fresh bucket on the session's S3-protocol server."""
    import boto3

    bucket = f"gridsight-test-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=s3_server.endpoint_url, region_name="us-east-1").create_bucket(Bucket=bucket)
    return s3_server.endpoint_url, bucket


@pytest.fixture
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


_CHECKOUT = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def _holding_the_build_lock():
    """An exclusive lock while the checkout is built: setuptools writes build/ and *.egg-info inside
    the checkout, and tests run in parallel (pytest-xdist) would otherwise build over each other."""
    path = _CHECKOUT / ".gridsight" / "wheel-build.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def repo_build_lock():
    """The build lock as a context manager, for a test that builds the checkout its own way."""
    return _holding_the_build_lock


@pytest.fixture(scope="session")
def checkout_wheel(tmp_path_factory) -> Path:
    """The checkout built into a wheel (``pip wheel --no-deps``), once per test process."""
    import subprocess
    import sys

    dist = tmp_path_factory.mktemp("checkout-wheel")
    with _holding_the_build_lock():
        built = subprocess.run([sys.executable, "-m", "pip", "wheel", str(_CHECKOUT), "--no-deps", "-q", "-w",
                                str(dist)], capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-2000:]
    [wheel] = dist.glob("gridsight-*.whl")
    return wheel
