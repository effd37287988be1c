"""The grid registry: regions, feeders, sites, gateways and meters as one JSON document.

Ingest only learns gateway and meter ids from traffic; where they are (site, coordinates,
feeder, region, urban or rural) has to be told. Without it the ``tableau`` maps, regional
comparisons and urban/rural views stay empty, so operators (and the fleet simulator) describe
their topology in a registry document and import it. The document holds no personal data:
sites are places by coordinates, never addresses or customers.

Format (``"format": "gridsight-registry/1"``; every key below, no others)::

    regions:  {id, name}
    feeders:  {id, region, name, capacity_kw}
    sites:    {id, name, feeder, region, latitude, longitude, area_type, timezone}
    gateways: {id, site, name}
    meters:   {id, gateway, site, name}

Optional keys: every ``name`` (defaults to the id for regions, feeders, sites), ``capacity_kw``,
a site's ``feeder``/``region`` (the region follows from the feeder), ``area_type``
(``urban``/``rural``), ``timezone`` (default ``UTC``), a gateway's ``site``, a meter's ``site``
(defaults to its gateway's site). References may point into the document or into the database.

The same sections may come as CSV files named after them (``sites.csv``: header = field
names, empty cell = absent), imported together with :func:`load_document`.

Import validates everything first and reports every problem as ``section[index].field: why``;
only a fully valid document is written, in one transaction, with idempotent upserts.
Export writes the database back in the same format, so export → import changes nothing.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import asyncpg

from gridsight.errors import GridsightError

__all__ = ["FORMAT", "RegistryError", "RegistryDocument", "RegionEntry", "FeederEntry", "SiteEntry",
           "GatewayEntry", "MeterEntry", "ImportResult", "parse_document", "load_document", "import_registry",
           "export_registry", "MAX_ENTRIES"]

FORMAT = "gridsight-registry/1"
SECTIONS = ("regions", "feeders", "sites", "gateways", "meters")
AREA_TYPES = ("urban", "rural")
MAX_ENTRIES = 200_000            # per section: a document larger than any real grid is a mistake
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_NAME_MAX = 200


class RegistryError(GridsightError, ValueError):
    """A document that cannot be imported; ``errors`` lists every problem as ``where: why``."""

    def __init__(self, errors: Iterable[str]) -> None:
        self.errors = list(errors)
        shown = "; ".join(self.errors[:20])
        more = f" (and {len(self.errors) - 20} more)" if len(self.errors) > 20 else ""
        super().__init__(f"{len(self.errors)} problem(s) in the registry document: {shown}{more}")


@dataclass(frozen=True, slots=True)
class RegionEntry:
    id: str
    name: str


@dataclass(frozen=True, slots=True)
class FeederEntry:
    id: str
    region: str
    name: str
    capacity_kw: float | None = None


@dataclass(frozen=True, slots=True)
class SiteEntry:
    id: str
    name: str
    latitude: float
    longitude: float
    feeder: str | None = None
    region: str | None = None
    area_type: str | None = None
    timezone: str = "UTC"


@dataclass(frozen=True, slots=True)
class GatewayEntry:
    id: str
    site: str | None = None
    name: str | None = None


@dataclass(frozen=True, slots=True)
class MeterEntry:
    id: str
    gateway: str
    site: str | None = None
    name: str | None = None


@dataclass(frozen=True, slots=True)
class RegistryDocument:
    regions: tuple[RegionEntry, ...] = ()
    feeders: tuple[FeederEntry, ...] = ()
    sites: tuple[SiteEntry, ...] = ()
    gateways: tuple[GatewayEntry, ...] = ()
    meters: tuple[MeterEntry, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """The JSON form, as :func:`parse_document` reads it."""
        return {"format": FORMAT, **{s: [asdict(e) for e in getattr(self, s)] for s in SECTIONS}}

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=1) + "\n"


@dataclass
class ImportResult:
    """Rows per table: ``inserted``, ``updated`` (a value changed) and ``unchanged``."""

    counts: dict[str, dict[str, int]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, dict[str, int]]:
        return self.counts

    def summary(self) -> str:
        return ", ".join(f"{t}: {c['inserted']} inserted, {c['updated']} updated, {c['unchanged']} unchanged"
                         for t, c in self.counts.items())


# ---------------------------------------------------------------- parsing (no database)

class _Fields:
    """Reads one entry's fields, noting each problem with its place."""

    def __init__(self, where: str, raw: Mapping[str, Any], allowed: tuple[str, ...], errors: list[str]) -> None:
        self.where, self.raw, self.errors = where, raw, errors
        for key in raw:
            if key not in allowed:
                errors.append(f"{where}.{key}: unknown field (allowed: {', '.join(allowed)})")

    def _fail(self, key: str, why: str) -> None:
        self.errors.append(f"{self.where}.{key}: {why}")

    def ident(self, key: str, required: bool = True) -> str | None:
        value = self.raw.get(key)
        if value is None:
            if required:
                self._fail(key, "required")
            return None
        if not isinstance(value, str) or not _ID.match(value):
            self._fail(key, "must be an id: 1-64 of letters, digits, '.', '_', '-', starting with a letter or digit")
            return None
        return value

    def text(self, key: str) -> str | None:
        value = self.raw.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip() or len(value) > _NAME_MAX or not value.isprintable():
            self._fail(key, f"must be printable text of 1-{_NAME_MAX} characters")
            return None
        return value

    def number(self, key: str, low: float | None, high: float | None, required: bool) -> float | None:
        value = self.raw.get(key)
        if value is None:
            if required:
                self._fail(key, "required")
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            self._fail(key, "must be a number")
            return None
        if (low is not None and value < low) or (high is not None and value > high):
            self._fail(key, f"must be between {low:g} and {high:g}" if high is not None else f"must be at least {low:g}")
            return None
        return float(value)

    def choice(self, key: str, options: tuple[str, ...]) -> str | None:
        value = self.raw.get(key)
        if value is None:
            return None
        if value not in options:
            self._fail(key, f"must be one of {', '.join(options)} (or null)")
            return None
        return value

    def timezone(self, key: str) -> str:
        value = self.raw.get(key)
        if value is None:
            return "UTC"
        from zoneinfo import ZoneInfo

        try:
            if not isinstance(value, str) or not value or len(value) > 64:
                raise ValueError
            ZoneInfo(value)
        except (ValueError, KeyError, OSError):
            self._fail(key, "must be an IANA time zone, e.g. Europe/Amsterdam")
            return "UTC"
        return value


def _entries(doc: Mapping[str, Any], section: str, errors: list[str]) -> list[tuple[str, Mapping[str, Any]]]:
    raw = doc.get(section, [])
    if not isinstance(raw, list):
        errors.append(f"{section}: must be a list")
        return []
    if len(raw) > MAX_ENTRIES:
        errors.append(f"{section}: {len(raw)} entries, at most {MAX_ENTRIES}")
        return []
    out = []
    for i, entry in enumerate(raw):
        where = f"{section}[{i}]"
        if not isinstance(entry, dict):
            errors.append(f"{where}: must be an object")
            continue
        out.append((where, entry))
    return out


def _unique(section: str, entries: list, errors: list[str]) -> None:
    seen: dict[str, int] = {}
    for i, e in enumerate(entries):
        if e.id in seen:
            errors.append(f"{section}[{i}].id: {e.id!r} appears twice (first at {section}[{seen[e.id]}])")
        seen.setdefault(e.id, i)


def parse_document(data: str | bytes | Mapping[str, Any]) -> RegistryDocument:
    """Validate a registry document (JSON text or an already-decoded object); raises :class:`RegistryError`.

    Checks each entry's fields and the references inside the document; references to ids that
    are not in the document are checked against the database by :func:`import_registry`.
    """
    if isinstance(data, (str, bytes)):
        try:
            data = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise RegistryError([f"document: not valid JSON ({exc})"]) from None
    if not isinstance(data, Mapping):
        raise RegistryError(["document: must be a JSON object"])
    errors: list[str] = []
    if data.get("format", FORMAT) != FORMAT:
        errors.append(f"format: must be {FORMAT!r}")
    for key in data:
        if key not in (*SECTIONS, "format"):
            errors.append(f"{key}: unknown section (allowed: format, {', '.join(SECTIONS)})")

    regions, feeders, sites, gateways, meters = [], [], [], [], []
    for where, raw in _entries(data, "regions", errors):
        f = _Fields(where, raw, ("id", "name"), errors)
        rid = f.ident("id")
        name = f.text("name")
        if rid:
            regions.append(RegionEntry(rid, name or rid))
    for where, raw in _entries(data, "feeders", errors):
        f = _Fields(where, raw, ("id", "region", "name", "capacity_kw"), errors)
        fid, region, name = f.ident("id"), f.ident("region"), f.text("name")
        capacity = f.number("capacity_kw", 0, None, required=False)
        if fid and region:
            feeders.append(FeederEntry(fid, region, name or fid, capacity))
    for where, raw in _entries(data, "sites", errors):
        f = _Fields(where, raw, ("id", "name", "feeder", "region", "latitude", "longitude", "area_type", "timezone"),
                    errors)
        sid, name = f.ident("id"), f.text("name")
        feeder, region = f.ident("feeder", required=False), f.ident("region", required=False)
        lat = f.number("latitude", -90, 90, required=True)
        lon = f.number("longitude", -180, 180, required=True)
        area, tz = f.choice("area_type", AREA_TYPES), f.timezone("timezone")
        if sid and lat is not None and lon is not None:
            sites.append(SiteEntry(sid, name or sid, lat, lon, feeder, region, area, tz))
    for where, raw in _entries(data, "gateways", errors):
        f = _Fields(where, raw, ("id", "site", "name"), errors)
        gid, site, name = f.ident("id"), f.ident("site", required=False), f.text("name")
        if gid:
            gateways.append(GatewayEntry(gid, site, name))
    for where, raw in _entries(data, "meters", errors):
        f = _Fields(where, raw, ("id", "gateway", "site", "name"), errors)
        mid, gw, site, name = f.ident("id"), f.ident("gateway"), f.ident("site", required=False), f.text("name")
        if mid and gw:
            meters.append(MeterEntry(mid, gw, site, name))
    for section, entries in zip(SECTIONS, (regions, feeders, sites, gateways, meters)):
        _unique(section, entries, errors)
    if errors:
        raise RegistryError(errors)
    return RegistryDocument(tuple(regions), tuple(feeders), tuple(sites), tuple(gateways), tuple(meters))


_NUMERIC = ("latitude", "longitude", "capacity_kw")


def _csv_section(path: Path, text: str) -> tuple[str, list[dict[str, Any]]]:
    """One section from a CSV file named after it (``sites.csv``): header = field names, empty cell = absent."""
    import csv

    section = path.stem.lower()
    if section not in SECTIONS:
        raise RegistryError([f"{path}: a CSV file is named after its section ({', '.join(SECTIONS)}).csv"])
    rows = []
    for row in csv.DictReader(text.splitlines()):
        entry: dict[str, Any] = {}
        for key, value in row.items():
            if key is None:
                raise RegistryError([f"{path}: line {len(rows) + 2} has more cells than the header"])
            value = (value or "").strip()
            if not value:
                continue
            if key in _NUMERIC:
                try:
                    entry[key] = float(value)
                    continue
                except ValueError:
                    pass       # kept as text: validation names the field
            entry[key] = value
        rows.append(entry)
    return section, rows


def load_document(*paths: str | Path) -> RegistryDocument:
    """Read and validate one JSON document, or several files merged: JSON documents and CSV files
    named after their section (``regions.csv``, ``sites.csv``, ...; entry ``sites[i]`` is line i+2).
    A section may come from one file only."""
    merged: dict[str, Any] = {"format": FORMAT}
    origin: dict[str, Path] = {}
    for name in paths:
        path = Path(name)
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise RegistryError([f"{path}: cannot read ({exc.strerror})"]) from None
        if path.suffix.lower() == ".csv":
            try:
                sections = dict([_csv_section(path, raw.decode("utf-8-sig"))])
            except UnicodeDecodeError:
                raise RegistryError([f"{path}: not UTF-8 text"]) from None
        else:
            if len(paths) == 1:
                return parse_document(raw)
            try:
                sections = json.loads(raw)
            except (ValueError, UnicodeDecodeError) as exc:
                raise RegistryError([f"{path}: not valid JSON ({exc})"]) from None
            if not isinstance(sections, dict):
                raise RegistryError([f"{path}: must be a JSON object"])
        for key, value in sections.items():
            if key == "format":
                if value != FORMAT:
                    merged[key] = value       # parse_document names it
                continue
            if key in origin:
                raise RegistryError([f"{path}: section {key} also comes from {origin[key]}"])
            origin[key] = path
            merged[key] = value
    return parse_document(merged)


# ---------------------------------------------------------------- database

async def _existing(conn: asyncpg.Connection, table: str, column: str, ids: set[str]) -> dict[str, Any]:
    if not ids:
        return {}
    rows = await conn.fetch(f"SELECT id, {column} AS v FROM {table} WHERE id = ANY($1::text[])", sorted(ids))
    return {r["id"]: r["v"] for r in rows}


async def _resolve(conn: asyncpg.Connection, doc: RegistryDocument) -> tuple[list[tuple], list[tuple]]:
    """Check references against document + database; returns site and meter rows with derived fields."""
    errors: list[str] = []
    region_ids = {r.id for r in doc.regions}
    feeder_region = {f.id: f.region for f in doc.feeders}
    site_ids = {s.id for s in doc.sites}
    gateway_site = {g.id: g.site for g in doc.gateways}

    wanted_regions = ({f.region for f in doc.feeders} | {s.region for s in doc.sites if s.region}) - region_ids
    db_regions = await _existing(conn, "regions", "id", wanted_regions)
    db_feeders = await _existing(conn, "feeders", "region_id",
                                 {s.feeder for s in doc.sites if s.feeder} - set(feeder_region))
    feeder_region.update(db_feeders)
    known_regions = region_ids | set(db_regions)
    db_sites = await _existing(conn, "sites", "id",
                               ({g.site for g in doc.gateways if g.site} | {m.site for m in doc.meters if m.site})
                               - site_ids)
    known_sites = site_ids | set(db_sites)
    db_gateways = await _existing(conn, "gateways", "site_id", {m.gateway for m in doc.meters} - set(gateway_site))
    gateway_site.update(db_gateways)

    for i, f in enumerate(doc.feeders):
        if f.region not in known_regions:
            errors.append(f"feeders[{i}].region: no region {f.region!r} in the document or the database")
    site_rows = []
    for i, s in enumerate(doc.sites):
        region = s.region
        if s.feeder is not None:
            if s.feeder not in feeder_region:
                errors.append(f"sites[{i}].feeder: no feeder {s.feeder!r} in the document or the database")
            elif region is None:
                region = feeder_region[s.feeder]
            elif region != feeder_region[s.feeder]:
                errors.append(f"sites[{i}].region: {region!r}, but feeder {s.feeder!r} is in region "
                              f"{feeder_region[s.feeder]!r}")
        if s.region is not None and s.region not in known_regions:
            errors.append(f"sites[{i}].region: no region {s.region!r} in the document or the database")
        site_rows.append((s.id, s.name, region, s.feeder, s.latitude, s.longitude, s.area_type, s.timezone))
    for i, g in enumerate(doc.gateways):
        if g.site is not None and g.site not in known_sites:
            errors.append(f"gateways[{i}].site: no site {g.site!r} in the document or the database")
    meter_rows = []
    for i, m in enumerate(doc.meters):
        if m.gateway not in gateway_site:
            errors.append(f"meters[{i}].gateway: no gateway {m.gateway!r} in the document or the database")
            continue
        if m.site is not None and m.site not in known_sites:
            errors.append(f"meters[{i}].site: no site {m.site!r} in the document or the database")
        meter_rows.append((m.id, m.gateway, m.site if m.site is not None else gateway_site[m.gateway], m.name))
    if errors:
        raise RegistryError(errors)
    return site_rows, meter_rows


async def _upsert(conn: asyncpg.Connection, table: str, columns: tuple[str, ...], types: tuple[str, ...],
                  rows: list[tuple]) -> dict[str, int]:
    """Insert or update ``rows`` by id; a row whose values are all equal is left alone (and not counted changed)."""
    if not rows:
        return {"inserted": 0, "updated": 0, "unchanged": 0}
    rows = sorted(rows)            # id order, as ingest locks meters: concurrent writers cannot deadlock
    cols = ", ".join(columns)
    arrays = ", ".join(f"${i + 1}::{t}[]" for i, t in enumerate(types))
    updated = [c for c in columns if c != "id"]
    sets = ", ".join(f"{c} = EXCLUDED.{c}" for c in updated)
    differs = " OR ".join(f"{table}.{c} IS DISTINCT FROM EXCLUDED.{c}" for c in updated)
    result = await conn.fetch(
        f"INSERT INTO {table} ({cols}) SELECT * FROM unnest({arrays}) "
        f"ON CONFLICT (id) DO UPDATE SET {sets} WHERE {differs} RETURNING (xmax = 0) AS inserted",
        *[list(col) for col in zip(*rows)])
    inserted = sum(1 for r in result if r["inserted"])
    return {"inserted": inserted, "updated": len(result) - inserted, "unchanged": len(rows) - len(result)}


async def import_registry(conn: asyncpg.Connection, doc: RegistryDocument) -> ImportResult:
    """Check ``doc``'s references and upsert it in one transaction; nothing changes if anything is wrong.

    Idempotent: importing the same document again reports every row unchanged. Gateways that
    ingest auto-registered become registered ones. Rows not in the document are kept (the
    document adds and corrects; it never deletes history-bearing meters or gateways).
    """
    async with conn.transaction():
        site_rows, meter_rows = await _resolve(conn, doc)
        result = ImportResult()
        result.counts["regions"] = await _upsert(conn, "regions", ("id", "name"), ("text", "text"),
                                                 [(r.id, r.name) for r in doc.regions])
        result.counts["feeders"] = await _upsert(
            conn, "feeders", ("id", "region_id", "name", "capacity_kw"), ("text", "text", "text", "float8"),
            [(f.id, f.region, f.name, f.capacity_kw) for f in doc.feeders])
        result.counts["sites"] = await _upsert(
            conn, "sites", ("id", "name", "region_id", "feeder_id", "lat", "lon", "area_type", "timezone"),
            ("text", "text", "text", "text", "float8", "float8", "text", "text"), site_rows)
        result.counts["gateways"] = await _upsert(
            conn, "gateways", ("id", "site_id", "name", "auto_registered"), ("text", "text", "text", "bool"),
            [(g.id, g.site, g.name, False) for g in doc.gateways])
        result.counts["meters"] = await _upsert(conn, "meters", ("id", "gateway_id", "site_id", "name"),
                                                ("text", "text", "text", "text"), meter_rows)
    return result


async def export_registry(conn: asyncpg.Connection) -> RegistryDocument:
    """The database's topology as a registry document (sites without coordinates are left out:
    the format requires them, and only sites made outside the registry can lack them)."""
    regions = [RegionEntry(r["id"], r["name"]) for r in await conn.fetch("SELECT id, name FROM regions ORDER BY id")]
    feeders = [FeederEntry(r["id"], r["region_id"], r["name"], r["capacity_kw"]) for r in await conn.fetch(
        "SELECT id, region_id, name, capacity_kw FROM feeders ORDER BY id")]
    sites = [SiteEntry(r["id"], r["name"], r["lat"], r["lon"], r["feeder_id"], r["region_id"], r["area_type"],
                       r["timezone"]) for r in await conn.fetch(
        "SELECT id, name, region_id, feeder_id, lat, lon, area_type, timezone FROM sites "
        "WHERE lat IS NOT NULL AND lon IS NOT NULL ORDER BY id")]
    placed = {s.id for s in sites}
    gateways = [GatewayEntry(r["id"], r["site_id"] if r["site_id"] in placed else None, r["name"])
                for r in await conn.fetch("SELECT id, site_id, name FROM gateways ORDER BY id")]
    meters = [MeterEntry(r["id"], r["gateway_id"], r["site_id"] if r["site_id"] in placed else None, r["name"])
              for r in await conn.fetch("SELECT id, gateway_id, site_id, name FROM meters ORDER BY id")]
    return RegistryDocument(tuple(regions), tuple(feeders), tuple(sites), tuple(gateways), tuple(meters))
