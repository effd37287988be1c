"""SQLModel models of the dimension tables (created by migration 0001_core).

Dimensions are small and edited by people and the API, so they get ORM models; the
high-volume facts (readings, summaries, flags) are written with COPY by the ingest worker
and read with SQL in `collector.db.queries`. Column meanings: collector/db/SCHEMA.md.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Optional

from sqlalchemy import Column, DateTime, Float
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

__all__ = ["Region", "Feeder", "Site", "Gateway", "Meter", "ModelVersion"]


def _ts(nullable: bool = True) -> Any:
    return Field(default=None, sa_column=Column(DateTime(timezone=True), nullable=nullable))


class Region(SQLModel, table=True):
    __tablename__ = "regions"
    id: str = Field(primary_key=True)
    name: str
    created_at: Optional[datetime] = _ts(nullable=False)


class Feeder(SQLModel, table=True):
    __tablename__ = "feeders"
    id: str = Field(primary_key=True)
    region_id: str = Field(foreign_key="regions.id", index=True)
    name: str
    capacity_kw: Optional[float] = None
    created_at: Optional[datetime] = _ts(nullable=False)


class Site(SQLModel, table=True):
    __tablename__ = "sites"
    id: str = Field(primary_key=True)
    name: str
    region_id: Optional[str] = Field(default=None, foreign_key="regions.id", index=True)
    feeder_id: Optional[str] = Field(default=None, foreign_key="feeders.id", index=True)
    lat: Optional[float] = Field(default=None, ge=-90, le=90)
    lon: Optional[float] = Field(default=None, ge=-180, le=180)
    timezone: str = "UTC"
    created_at: Optional[datetime] = _ts(nullable=False)


class Gateway(SQLModel, table=True):
    __tablename__ = "gateways"
    id: str = Field(primary_key=True)
    site_id: Optional[str] = Field(default=None, foreign_key="sites.id", index=True)
    name: Optional[str] = None
    status: str = "active"
    auto_registered: bool = False
    registered_at: Optional[datetime] = _ts(nullable=False)
    last_seen_at: Optional[datetime] = _ts()
    last_seq: Optional[int] = None
    model_version: Optional[str] = None
    online: Optional[bool] = None
    status_at: Optional[datetime] = _ts()
    uptime_s: Optional[float] = None
    queue_depth: Optional[int] = None
    clock_synced: Optional[bool] = None
    clock_offset_s: Optional[float] = None
    agent_version: Optional[str] = None
    skew_s: Optional[float] = None
    epoch: Optional[str] = None             # current outbox epoch ('' = legacy, schema-1 messages)
    epoch_started_at: Optional[datetime] = _ts()
    epochs: int = 0


class Meter(SQLModel, table=True):
    __tablename__ = "meters"
    id: str = Field(primary_key=True)
    gateway_id: str = Field(foreign_key="gateways.id", index=True)
    site_id: Optional[str] = Field(default=None, foreign_key="sites.id", index=True)
    name: Optional[str] = None
    first_seen_at: Optional[datetime] = _ts(nullable=False)
    last_seen_at: Optional[datetime] = _ts()
    last_interval_start: Optional[datetime] = _ts()
    last_reading_ts: Optional[datetime] = _ts()


class ModelVersion(SQLModel, table=True):
    __tablename__ = "model_versions"
    version: str = Field(primary_key=True)
    name: Optional[str] = None
    sha256: Optional[str] = None
    threshold: Optional[float] = Field(default=None, sa_column=Column(Float))
    interval_s: Optional[int] = None
    feature_names: Optional[list] = Field(default=None, sa_column=Column(JSONB))
    object_key: Optional[str] = None
    published_at: Optional[datetime] = _ts()
    first_seen_at: Optional[datetime] = _ts(nullable=False)
