"""Fixtures for the collector's tests: a migrated database, a publisher on the test's broker,
and in-process ingest workers the test can start, stop and inspect (helpers: collector_kit)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import pytest

from collector.archive import LocalDirStore
from collector.db import migrate
from collector.services import Services
from collector.settings import CollectorSettings
from collector_kit import Publisher, RunningWorker


@pytest.fixture
def collector_db(database_url) -> str:
    """A fresh database migrated to the newest schema."""
    migrate(database_url)
    return database_url


@pytest.fixture
def publisher(mosquitto) -> Iterator[Publisher]:
    pub = Publisher(mosquitto.port)
    yield pub
    pub.close()


@pytest.fixture
def start_worker(tmp_path, mosquitto, collector_db) -> Iterator[Callable[..., RunningWorker]]:
    """Start in-process ingest workers on the test's broker and database."""
    running: list[RunningWorker] = []

    def start(replica_id: str = "r1", *, database_url: str | None = None, store=None, **overrides) -> RunningWorker:
        url = database_url or collector_db
        settings = CollectorSettings(database_url=url, mqtt_url=mosquitto.url, data_dir=tmp_path / replica_id,
                                     replica_id=replica_id, archive_interval_s=0.2, batch_max_wait_s=0.05,
                                     **{"unknown_gateways": "register", **overrides})
        services = Services(url, mosquitto.url, store or LocalDirStore(tmp_path / "archive"))
        worker = RunningWorker(settings, services).start()
        running.append(worker)
        return worker

    yield start
    for worker in running:
        if worker.thread.is_alive():
            worker.stop()


@pytest.fixture
def archive_dir(tmp_path) -> Path:
    return tmp_path / "archive"
