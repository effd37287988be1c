"""Helpers for the registry tests: run calls on an asyncpg connection, and a small valid document."""

from __future__ import annotations

import asyncio
import copy

import asyncpg


def on_db(url: str, work):
    """Run ``await work(conn)`` on one asyncpg connection to ``url``."""
    async def run():
        conn = await asyncpg.connect(url)
        try:
            return await work(conn)
        finally:
            await conn.close()
    return asyncio.run(run())


def fetch(url: str, sql: str, *args) -> list[tuple]:
    return [tuple(r) for r in on_db(url, lambda c: c.fetch(sql, *args))]


def table_counts(url: str) -> tuple[int, ...]:
    return fetch(url, "SELECT (SELECT count(*) FROM regions), (SELECT count(*) FROM feeders), "
                      "(SELECT count(*) FROM sites), (SELECT count(*) FROM gateways), (SELECT count(*) FROM meters)")[0]


_DOCUMENT = {
    "format": "gridsight-registry/1",
    "regions": [{"id": "north", "name": "North"}, {"id": "south"}],
    "feeders": [{"id": "n-f1", "region": "north", "name": "North feeder 1", "capacity_kw": 800.0},
                {"id": "s-f1", "region": "south"}],
    "sites": [{"id": "site-a", "name": "Substation A", "feeder": "n-f1", "latitude": 52.37, "longitude": 4.89,
               "area_type": "urban", "timezone": "Europe/Amsterdam"},
              {"id": "site-b", "feeder": "s-f1", "latitude": 51.5, "longitude": 5.9, "area_type": "rural"}],
    "gateways": [{"id": "gw-a", "site": "site-a"}, {"id": "gw-b", "site": "site-b", "name": "barn"}],
    "meters": [{"id": "m-a1", "gateway": "gw-a"}, {"id": "m-a2", "gateway": "gw-a", "name": "commercial"},
               {"id": "m-b1", "gateway": "gw-b", "site": "site-b"}],
}


def document() -> dict:
    """A fresh copy of a small valid registry document (two regions, urban and rural)."""
    return copy.deepcopy(_DOCUMENT)
