"""Where the collector's database, broker and object store are: configured, or embedded.

With ``DATABASE_URL`` unset the collector runs an embedded PostgreSQL in ``data_dir/postgres``
(port remembered in ``data_dir/postgres.port`` so the API, the ingest worker and `status` in
other processes find the same server). With ``MQTT_URL`` unset it starts a local Mosquitto on
``embedded_mqtt_port`` unless one already answers there. With ``S3_BUCKET`` unset the archive
is ``data_dir/archive``. Whoever starts an embedded service stops it in :meth:`Services.close`.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from collector.archive import ObjectStore, open_store
from collector.settings import CollectorSettings

__all__ = ["Services", "open_services", "embedded_database_url"]


@dataclass
class Services:
    database_url: str
    mqtt_url: str | None
    store: ObjectStore
    embedded: list[str] = field(default_factory=list)
    _closers: list[Callable[[], None]] = field(default_factory=list)

    def close(self) -> None:
        while self._closers:
            self._closers.pop()()

    def __enter__(self) -> "Services":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def embedded_database_url(settings: CollectorSettings) -> str | None:
    """URL of the embedded PostgreSQL of ``data_dir`` if it is running, else None."""
    port_file = Path(settings.data_dir) / "postgres.port"
    if port_file.exists():
        port = int(port_file.read_text().strip() or 0)
        if port and _listening(port):
            return f"postgresql://postgres@127.0.0.1:{port}/postgres"
    return None


def open_services(settings: CollectorSettings, *, mqtt: bool = True, migrate: bool = True) -> Services:
    """Resolve (and start, when embedded) the services; migrate the database when asked."""
    from gridsight.local_services import EmbeddedPostgres, LocalMosquitto, free_port

    data_dir = Path(settings.data_dir)
    closers: list[Callable[[], None]] = []
    embedded: list[str] = []
    url = settings.database_url
    if url is None:
        url = embedded_database_url(settings)
        if url is None:
            data_dir.mkdir(parents=True, exist_ok=True)
            port_file = data_dir / "postgres.port"
            port = int(port_file.read_text().strip()) if port_file.exists() else 0
            if not port or _listening(port):
                port = free_port()
            server = EmbeddedPostgres(data_dir / "postgres", port=port).start()
            port_file.write_text(str(port))
            closers.append(server.stop)
            embedded.append(f"PostgreSQL {server.url} (data in {server.data_dir})")
            url = server.url
    mqtt_url = settings.mqtt_url
    if mqtt and mqtt_url is None:
        port = settings.embedded_mqtt_port
        if not _listening(port):
            broker = LocalMosquitto(data_dir / "mosquitto", port=port).start()
            closers.append(broker.stop)
            embedded.append(f"Mosquitto {broker.url}")
        mqtt_url = f"mqtt://127.0.0.1:{port}"
    services = Services(url, mqtt_url, open_store(settings), embedded, closers)
    if migrate:
        from collector.db import migrate as run_migrations
        try:
            run_migrations(url)
        except BaseException:
            services.close()
            raise
    return services
