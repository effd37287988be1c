"""The gridsight wire contract: topics, message types, strict parsing, JSON Schema export.

This is the only module that knows how messages look on the wire. The agent encodes
with it, the collector decodes with it, and `json_schemas()` exports the same rules for
other languages. It imports nothing beyond the standard library, so it runs on a gateway.

Every upward message is a UTF-8 JSON object with the envelope fields
``v`` (schema version), ``kind``, ``gateway_id``, ``epoch`` (the id of the outbox that made
it: random, born with the outbox, so a gateway whose data directory is wiped starts a new
one), ``seq`` (sequence number within the epoch, persisted across restarts),
``model_version`` (the model that scored it, or null) and ``sent_at`` (Unix seconds, UTC).
``(gateway_id, epoch, seq)`` is the idempotency key; :func:`content_digest` is what tells a
redelivery (same key, same content) from a conflict (same key, other content).

Versions: schema version 2 added ``epoch`` (required in v2). Version 1 messages, which have
no epoch, are still accepted and belong to the *legacy epoch* (``epoch`` is None);
:func:`encode` writes v1 for a message without an epoch, so old bytes stay byte-identical.
Downward commands keep their own version (:data:`COMMAND_VERSION`).
Times are Unix epoch seconds in UTC throughout.

Readings layout 2 (a compatible extension): a reading may also carry export energy, per-tariff
registers, per-phase voltage/current/power, demand, and non-electric channels (gas, water,
heat) as separate meters. A raw chunk holds only the layout-1 columns unless some reading has
an extension value; then it says ``"layout": 2`` and adds those columns only. Collectors accept
both layouts; a gateway whose meters give only layout-1 values sends byte-identical layout-1
chunks, so it can be upgraded before its collector.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import operator
import re
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterable, Union, cast

from gridsight.errors import GridsightError

__all__ = [
    "SCHEMA_VERSION",
    "ACCEPTED_VERSIONS",
    "COMMAND_VERSION",
    "TOPIC_ROOT",
    "UPWARD_KINDS",
    "MAX_PAYLOAD_BYTES",
    "MAX_RAW_READINGS",
    "WireError",
    "Reading",
    "READING_EXTENSIONS",
    "PHASE_FIELDS",
    "reading_extensions_used",
    "CHANNELS",
    "MeterSummary",
    "IntervalSummary",
    "AnomalyFlag",
    "RawChunk",
    "GatewayStatus",
    "ModelAnnouncement",
    "rollback_statement",
    "Message",
    "topic_for",
    "command_topic",
    "fleet_command_topic",
    "parse_topic",
    "reading_field_checks",
    "subscription_topics",
    "encode",
    "decode",
    "decode_command",
    "content_digest",
    "validate_gateway_id",
    "json_schemas",
]

SCHEMA_VERSION = 2  # v2: the envelope carries the outbox epoch
ACCEPTED_VERSIONS = (1, 2)  # v1 (no epoch) is the legacy epoch
COMMAND_VERSION = 1  # downward commands are versioned apart from upward messages
TOPIC_ROOT = "gridsight/v1"
UPWARD_KINDS = ("summary", "flag", "raw", "status")
# Mosquitto accepts up to 256 MB; a gateway message is never near that. Anything larger is
# an error or an attack, and is refused before JSON parsing spends memory on it.
MAX_PAYLOAD_BYTES = 1024 * 1024
MAX_RAW_READINGS = 20_000
MAX_METERS_PER_SUMMARY = 2_000
MAX_DECOMPRESSED_BYTES = 16 * 1024 * 1024

_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# 2000-01-01 .. 2100-01-01: a timestamp outside this is a broken clock or a broken encoder.
_TS_MIN, _TS_MAX = 946_684_800.0, 4_102_444_800.0


class WireError(GridsightError, ValueError):
    """A payload or topic that breaks the contract. ``field`` names the offending field."""

    def __init__(self, field_name: str, reason: str) -> None:
        super().__init__(f"{field_name}: {reason}")
        self.field = field_name
        self.reason = reason


# --------------------------------------------------------------------------- field rules
# Each rule validates one JSON value and returns the Python value; each also knows its
# JSON Schema, so validation and the exported schema can never disagree.


@dataclass(frozen=True)
class _Rule:
    check: Callable[[str, Any], Any]
    schema: dict


def _num(lo: float | None = None, hi: float | None = None, nullable: bool = False) -> _Rule:
    def check(name: str, v: Any) -> Any:
        if v is None and nullable:
            return None
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise WireError(name, f"expected a number, got {type(v).__name__}")
        try:
            v = float(v)
        except OverflowError:
            raise WireError(name, "number too large") from None
        if not math.isfinite(v):
            raise WireError(name, "must be finite")
        if lo is not None and v < lo:
            raise WireError(name, f"{v} is below the minimum {lo}")
        if hi is not None and v > hi:
            raise WireError(name, f"{v} is above the maximum {hi}")
        return v

    schema: dict = {"type": ["number", "null"] if nullable else "number"}
    if lo is not None:
        schema["minimum"] = lo
    if hi is not None:
        schema["maximum"] = hi
    return _Rule(check, schema)


def _int(lo: int | None = None, hi: int | None = None, nullable: bool = False) -> _Rule:
    def check(name: str, v: Any) -> Any:
        if v is None and nullable:
            return None
        if isinstance(v, bool) or not isinstance(v, int):
            raise WireError(name, f"expected an integer, got {type(v).__name__}")
        if lo is not None and v < lo:
            raise WireError(name, f"{v} is below the minimum {lo}")
        if hi is not None and v > hi:
            raise WireError(name, f"{v} is above the maximum {hi}")
        return v

    schema: dict = {"type": ["integer", "null"] if nullable else "integer"}
    if lo is not None:
        schema["minimum"] = lo
    if hi is not None:
        schema["maximum"] = hi
    return _Rule(check, schema)


def _str(
    pattern: re.Pattern | None = None,
    max_len: int = 256,
    nullable: bool = False,
    choices: tuple[str, ...] | None = None,
) -> _Rule:
    def check(name: str, v: Any) -> Any:
        if v is None and nullable:
            return None
        if not isinstance(v, str):
            raise WireError(name, f"expected a string, got {type(v).__name__}")
        if len(v) > max_len:
            raise WireError(name, f"longer than {max_len} characters")
        if pattern is not None and not pattern.match(v):
            raise WireError(name, f"{v[:40]!r} does not match {pattern.pattern}")
        if choices is not None and v not in choices:
            raise WireError(name, f"{v[:40]!r} is not one of {', '.join(choices)}")
        return v

    schema: dict = {"type": ["string", "null"] if nullable else "string", "maxLength": max_len}
    if pattern is not None:
        schema["pattern"] = pattern.pattern
    if choices is not None:
        schema["enum"] = list(choices) + ([None] if nullable else [])
    return _Rule(check, schema)


def _bool(nullable: bool = False) -> _Rule:
    def check(name: str, v: Any) -> Any:
        if v is None and nullable:
            return None
        if not isinstance(v, bool):
            raise WireError(name, f"expected true or false, got {type(v).__name__}")
        return v

    return _Rule(check, {"type": ["boolean", "null"] if nullable else "boolean"})


def _map(value: _Rule, max_items: int = 64) -> _Rule:
    def check(name: str, v: Any) -> Any:
        if not isinstance(v, dict):
            raise WireError(name, f"expected an object, got {type(v).__name__}")
        if len(v) > max_items:
            raise WireError(name, f"more than {max_items} entries")
        out = {}
        for k, item in v.items():
            if not isinstance(k, str) or not k or len(k) > 64:
                raise WireError(name, f"key {str(k)[:40]!r} must be a string of 1 to 64 characters")
            out[k] = value.check(f"{name}.{k}", item)
        return out

    return _Rule(check, {"type": "object", "maxProperties": max_items, "additionalProperties": value.schema})


def _record(cls: type, max_items: int) -> _Rule:
    def check(name: str, v: Any) -> Any:
        if not isinstance(v, list):
            raise WireError(name, f"expected an array, got {type(v).__name__}")
        if not v:
            raise WireError(name, "must not be empty")
        if len(v) > max_items:
            raise WireError(name, f"more than {max_items} items")
        return tuple(_build(cls, item, f"{name}[{i}]") for i, item in enumerate(v))

    return _Rule(check, {"type": "array", "minItems": 1, "maxItems": max_items, "items": _object_schema(cls)})


_ID = _str(_ID_RE, 64)
_TS = _num(_TS_MIN, _TS_MAX)
_KWH = _num(0.0, 1e12)


def _build(cls: Any, obj: Any, where: str = "", extra: dict | None = None) -> Any:
    """Build a record of ``cls`` from a decoded JSON object, checking every field."""
    prefix = f"{where}." if where else ""
    if not isinstance(obj, dict):
        raise WireError(where or "payload", f"expected an object, got {type(obj).__name__}")
    rules: dict[str, _Rule] = cls._RULES
    unknown = set(obj) - set(rules)
    if unknown:
        raise WireError(prefix + sorted(unknown)[0], "unknown field")
    values = {}
    for key, rule in rules.items():
        if key not in obj:
            if key in getattr(cls, "_OPTIONAL", ()):
                continue
            raise WireError(prefix + key, "missing")
        values[key] = rule.check(prefix + key, obj[key])
    return cls(**values, **(extra or {}))


def _object_schema(cls: Any) -> dict:
    required = [k for k in cls._RULES if k not in getattr(cls, "_OPTIONAL", ())]
    return {
        "type": "object",
        "additionalProperties": False,
        "required": required,
        "properties": {k: r.schema for k, r in cls._RULES.items()},
    }


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "_RULES"):
        omit = getattr(value, "_OMIT_NONE", ())
        return {k: _plain(getattr(value, k)) for k in value._RULES if not (k in omit and getattr(value, k) is None)}
    return value


# --------------------------------------------------------------------------- records


# Non-electric channels a meter may relay (DSMR/M-Bus sub-meters): each is its own meter id.
# gas and water carry ``volume_m3`` and no energy; heat carries ``energy_kwh``.
CHANNELS = ("gas", "water", "heat")
_VOLUME_CHANNELS = ("gas", "water")
_W = _num(-1e9, 1e9, nullable=True)
_V = _num(0.0, 1e6, nullable=True)
_A = _num(-1e6, 1e6, nullable=True)
_KWH_OPT = _num(0.0, 1e12, nullable=True)


@dataclass(frozen=True, slots=True)
class Reading:
    """One meter reading: the cumulative import register plus instantaneous values.

    Layout-1 fields first (``energy_kwh`` is total import, ``power_w`` net active power,
    negative while exporting; ``voltage_v``/``current_a`` phase 1 or the only phase), then the
    layout-2 extensions, all optional: export register, tariff registers and the active tariff,
    per-phase values, demand (1.4.0 average, 1.6.0 monthly peak) and the channel.
    """

    meter_id: str
    ts: float
    energy_kwh: float | None
    power_w: float | None = None
    voltage_v: float | None = None
    current_a: float | None = None
    power_factor: float | None = None
    export_kwh: float | None = None
    import_t1_kwh: float | None = None
    import_t2_kwh: float | None = None
    export_t1_kwh: float | None = None
    export_t2_kwh: float | None = None
    tariff: int | None = None
    voltage_l1_v: float | None = None
    voltage_l2_v: float | None = None
    voltage_l3_v: float | None = None
    current_l1_a: float | None = None
    current_l2_a: float | None = None
    current_l3_a: float | None = None
    power_l1_w: float | None = None
    power_l2_w: float | None = None
    power_l3_w: float | None = None
    demand_w: float | None = None
    demand_peak_w: float | None = None
    channel: str | None = None
    volume_m3: float | None = None

    _RULES: ClassVar[dict] = {
        "meter_id": _ID,
        "ts": _TS,
        "energy_kwh": _num(0.0, 1e12, nullable=True),  # null only on a gas or water channel
        "power_w": _W,
        "voltage_v": _V,
        "current_a": _A,
        "power_factor": _num(-1.0, 1.0, nullable=True),
        "export_kwh": _KWH_OPT,
        "import_t1_kwh": _KWH_OPT,
        "import_t2_kwh": _KWH_OPT,
        "export_t1_kwh": _KWH_OPT,
        "export_t2_kwh": _KWH_OPT,
        "tariff": _int(0, 9999, nullable=True),
        "voltage_l1_v": _V,
        "voltage_l2_v": _V,
        "voltage_l3_v": _V,
        "current_l1_a": _A,
        "current_l2_a": _A,
        "current_l3_a": _A,
        "power_l1_w": _W,
        "power_l2_w": _W,
        "power_l3_w": _W,
        "demand_w": _W,
        "demand_peak_w": _W,
        "channel": _str(max_len=16, nullable=True, choices=CHANNELS),
        "volume_m3": _num(0.0, 1e12, nullable=True),
    }
    _OPTIONAL: ClassVar[tuple] = tuple(k for k in _RULES if k not in ("meter_id", "ts", "energy_kwh"))

    def check_channel(self, where: str = "") -> "Reading":
        """Raise WireError unless energy and volume fit the channel (electricity needs energy)."""
        prefix = f"{where}." if where else ""
        if self.channel in _VOLUME_CHANNELS:
            if self.volume_m3 is None:
                raise WireError(prefix + "volume_m3", f"missing on a {self.channel} channel")
        elif self.energy_kwh is None:
            raise WireError(prefix + "energy_kwh", "missing")
        return self


READING_V1_COLUMNS = ("meter_id", "ts", "energy_kwh", "power_w", "voltage_v", "current_a", "power_factor")
READING_EXTENSIONS = tuple(k for k in Reading._RULES if k not in READING_V1_COLUMNS)
#: The per-phase fields of a reading, L1 to L3: voltages, currents, then active powers.
PHASE_FIELDS = tuple(
    f"{q}_l{p}_{u}" for q, u in (("voltage", "v"), ("current", "a"), ("power", "w")) for p in (1, 2, 3)
)
_EXTENSION_VALUES = operator.attrgetter(*READING_EXTENSIONS)
_NO_EXTENSIONS = (None,) * len(READING_EXTENSIONS)


def reading_extensions_used(readings: Iterable[Reading]) -> bool:
    """Whether any reading has a layout-2 value (checked at C speed: plain meters pay ~nothing)."""
    return bool(set(map(_EXTENSION_VALUES, readings)) - {_NO_EXTENSIONS})


@dataclass(frozen=True, slots=True)
class MeterSummary:
    """One meter's interval inside an :class:`IntervalSummary`."""

    meter_id: str
    kwh: float
    readings: int
    power_w_mean: float | None
    power_w_max: float | None
    score: float | None
    anomalous: bool | None
    export_kwh: float | None = None  # energy exported in the interval (layout 2; omitted when None)

    _RULES: ClassVar[dict] = {
        "meter_id": _ID,
        "kwh": _num(-1e9, 1e9),
        "readings": _int(0, 1_000_000),
        "power_w_mean": _num(-1e9, 1e9, nullable=True),
        "power_w_max": _num(-1e9, 1e9, nullable=True),
        "score": _num(-1e6, 1e6, nullable=True),
        "anomalous": _bool(nullable=True),
        "export_kwh": _num(-1e9, 1e9, nullable=True),
    }
    _OPTIONAL: ClassVar[tuple] = ("export_kwh",)
    _OMIT_NONE: ClassVar[tuple] = ("export_kwh",)


# --------------------------------------------------------------------------- messages

_ENVELOPE: dict[str, _Rule] = {
    "gateway_id": _ID,
    "seq": _int(0, 2**63 - 1),
    "model_version": _str(_ID_RE, 64, nullable=True),
    "sent_at": _TS,
    "epoch": _str(_ID_RE, 64),
}
# optional in the record (None = the legacy epoch of v1 messages); required on the wire in v2
_ENVELOPE_OPTIONAL = ("epoch",)


@dataclass(frozen=True, slots=True)
class IntervalSummary:
    """All of one gateway's meters for one interval, in one message."""

    gateway_id: str
    seq: int
    model_version: str | None
    sent_at: float
    interval_start: float
    interval_s: int
    meters: tuple[MeterSummary, ...]
    epoch: str | None = None

    KIND: ClassVar[str] = "summary"
    _RULES: ClassVar[dict] = {
        **_ENVELOPE,
        "interval_start": _TS,
        "interval_s": _int(1, 86_400),
        "meters": _record(MeterSummary, MAX_METERS_PER_SUMMARY),
    }
    _OPTIONAL: ClassVar[tuple] = _ENVELOPE_OPTIONAL


@dataclass(frozen=True, slots=True)
class AnomalyFlag:
    """One meter-interval the model scored as anomalous; sent at once."""

    gateway_id: str
    seq: int
    model_version: str | None
    sent_at: float
    meter_id: str
    interval_start: float
    interval_s: int
    score: float
    threshold: float
    kwh: float
    features: dict[str, float] = field(default_factory=dict)
    reason: str | None = None
    epoch: str | None = None

    KIND: ClassVar[str] = "flag"
    _RULES: ClassVar[dict] = {
        **_ENVELOPE,
        "meter_id": _ID,
        "interval_start": _TS,
        "interval_s": _int(1, 86_400),
        "score": _num(-1e6, 1e6),
        "threshold": _num(-1e6, 1e6),
        "kwh": _num(-1e9, 1e9),
        "features": _map(_num(-1e12, 1e12)),
        "reason": _str(max_len=200, nullable=True),
    }
    _OPTIONAL: ClassVar[tuple] = ("features", "reason", *_ENVELOPE_OPTIONAL)


@dataclass(frozen=True, slots=True)
class RawChunk:
    """A batch of raw readings, zlib-compressed on the wire with a SHA-256 of the plain bytes."""

    gateway_id: str
    seq: int
    model_version: str | None
    sent_at: float
    readings: tuple[Reading, ...]
    epoch: str | None = None
    # SHA-256 of the chunk's plain bytes as received (set by decode; not a wire field)
    chunk_sha256: str | None = field(default=None, compare=False, repr=False)

    KIND: ClassVar[str] = "raw"
    _RULES: ClassVar[dict] = {**_ENVELOPE}
    _OPTIONAL: ClassVar[tuple] = _ENVELOPE_OPTIONAL
    _COLUMNS: ClassVar[tuple] = READING_V1_COLUMNS


@dataclass(frozen=True, slots=True)
class GatewayStatus:
    """Retained heartbeat of a gateway; also its last will (``online`` false)."""

    gateway_id: str
    seq: int
    model_version: str | None
    sent_at: float
    online: bool
    uptime_s: float = 0.0
    queue_depth: int = 0
    clock_synced: bool | None = None
    clock_offset_s: float | None = None
    agent_version: str | None = None
    counters: dict[str, float] = field(default_factory=dict)
    epoch: str | None = None

    KIND: ClassVar[str] = "status"
    _RULES: ClassVar[dict] = {
        **_ENVELOPE,
        "online": _bool(),
        "uptime_s": _num(0, 1e10),
        "queue_depth": _int(0, 2**63 - 1),
        "clock_synced": _bool(nullable=True),
        "clock_offset_s": _num(-1e10, 1e10, nullable=True),
        "agent_version": _str(max_len=64, nullable=True),
        "counters": _map(_num(-1e15, 1e15), max_items=256),
    }
    _OPTIONAL: ClassVar[tuple] = (
        "uptime_s",
        "queue_depth",
        "clock_synced",
        "clock_offset_s",
        "agent_version",
        "counters",
        *_ENVELOPE_OPTIONAL,
    )


@dataclass(frozen=True, slots=True)
class ModelAnnouncement:
    """Downward command: a model version the gateways should fetch, verify and load."""

    name: str
    version: str
    url: str
    sha256: str
    signature_url: str
    issued_at: float
    gateways: tuple[str, ...] | None = None  # None: the whole fleet; else a canary set
    # An explicit rollback: gateways running ``rollback_from`` may move back to this (older)
    # version, because the model signing key signed :func:`rollback_statement` for exactly that
    # step (base64 Ed25519). Without it a gateway only ever moves to a newer version.
    rollback_from: str | None = None
    rollback_signature: str | None = None

    KIND: ClassVar[str] = "model"
    _RULES: ClassVar[dict] = {
        "name": _ID,
        "version": _ID,
        "url": _str(max_len=2048),
        "sha256": _str(re.compile(r"^[0-9a-f]{64}$"), 64),
        "signature_url": _str(max_len=2048),
        "issued_at": _TS,
        "rollback_from": _ID,
        "rollback_signature": _str(re.compile(r"^[A-Za-z0-9+/]{86}==$"), 88),
    }
    _OPTIONAL: ClassVar[tuple[str, ...]] = ("rollback_from", "rollback_signature")


def rollback_statement(name: str, version: str, sha256: str, rollback_from: str) -> bytes:
    """The bytes a model rollback signature signs: model, target version and file, and the version it replaces."""
    return f"gridsight-model-rollback/1\n{name}\n{version}\n{sha256}\nfrom {rollback_from}\n".encode()


Message = Union[IntervalSummary, AnomalyFlag, RawChunk, GatewayStatus]
_BY_KIND: dict[str, type] = {c.KIND: c for c in (IntervalSummary, AnomalyFlag, RawChunk, GatewayStatus)}

# --------------------------------------------------------------------------- topics


def reading_field_checks() -> dict[str, Callable[[str, Any], Any]]:
    """Each :class:`Reading` field's check, in field order: ``check(key, value)`` returns the
    value or raises a :class:`WireError` naming ``key`` (for readers that refuse bad meter values)."""
    return {key: rule.check for key, rule in Reading._RULES.items()}


def validate_gateway_id(gateway_id: str) -> str:
    """Return ``gateway_id`` if it is a valid id (also a safe MQTT topic level), else raise."""
    return _ID.check("gateway_id", gateway_id)


def topic_for(gateway_id: str, kind: str) -> str:
    """The upward topic ``gridsight/v1/{gateway_id}/{kind}``."""
    if kind not in UPWARD_KINDS:
        raise WireError("kind", f"{kind!r} is not one of {', '.join(UPWARD_KINDS)}")
    return f"{TOPIC_ROOT}/{validate_gateway_id(gateway_id)}/{kind}"


def command_topic(gateway_id: str, command: str) -> str:
    """A downward command topic for one gateway, e.g. ``gridsight/v1/gw-1/cmd/model``."""
    return f"{TOPIC_ROOT}/{validate_gateway_id(gateway_id)}/cmd/{command}"


def fleet_command_topic(command: str) -> str:
    """A downward command topic for every gateway: ``gridsight/v1/fleet/cmd/{command}``."""
    return f"{TOPIC_ROOT}/fleet/cmd/{command}"


def parse_topic(topic: str) -> tuple[str, str]:
    """Split an upward topic into ``(gateway_id, kind)``; raise :class:`WireError` otherwise."""
    parts = topic.split("/")
    if len(parts) != 4 or "/".join(parts[:2]) != TOPIC_ROOT:
        raise WireError("topic", f"{topic[:120]!r} is not {TOPIC_ROOT}/{{gateway_id}}/{{kind}}")
    gateway_id, kind = parts[2], parts[3]
    if kind not in UPWARD_KINDS:
        raise WireError("topic", f"unknown kind {kind[:40]!r}")
    if gateway_id == "fleet" or not _ID_RE.match(gateway_id):
        raise WireError("topic", f"invalid gateway id {gateway_id[:40]!r}")
    return gateway_id, kind


def subscription_topics(shared_group: str | None = None) -> list[str]:
    """Topic filters a collector subscribes to; with a group, as an MQTT 5 shared subscription."""
    filters = [f"{TOPIC_ROOT}/+/{kind}" for kind in UPWARD_KINDS]
    if shared_group:
        return [f"$share/{shared_group}/{f}" for f in filters]
    return filters


# --------------------------------------------------------------------------- encode / decode


def _encode_readings(readings: tuple[Reading, ...]) -> dict:
    columns = {c: [getattr(r, c) for r in readings] for c in RawChunk._COLUMNS}
    extra: dict[str, list] = {}
    if reading_extensions_used(readings):
        extra = {c: [getattr(r, c) for r in readings] for c in READING_EXTENSIONS}
        extra = {c: v for c, v in extra.items() if any(x is not None for x in v)}
    columns.update(extra)
    plain = json.dumps(columns, separators=(",", ":")).encode()
    out = {
        "codec": "zlib",
        "count": len(readings),
        "sha256": hashlib.sha256(plain).hexdigest(),
        "data": base64.b64encode(zlib.compress(plain, 6)).decode("ascii"),
    }
    if extra:
        out["layout"] = 2
    return out


def _decode_readings(obj: Any) -> tuple[Reading, ...]:
    if not isinstance(obj, dict):
        raise WireError("chunk", "expected an object")
    if obj.get("codec") != "zlib":
        raise WireError("chunk.codec", f"unsupported codec {str(obj.get('codec'))[:20]!r}")
    layout = obj.get("layout", 1)
    if layout not in (1, 2) or isinstance(layout, bool):
        raise WireError("chunk.layout", f"unsupported readings layout {str(layout)[:20]}, expected 1 or 2")
    count = _int(1, MAX_RAW_READINGS).check("chunk.count", obj.get("count"))
    digest = _str(re.compile(r"^[0-9a-f]{64}$"), 64).check("chunk.sha256", obj.get("sha256"))
    data = obj.get("data")
    if not isinstance(data, str):
        raise WireError("chunk.data", "expected base64 text")
    try:
        packed = base64.b64decode(data, validate=True)
        inflater = zlib.decompressobj()
        plain = inflater.decompress(packed, MAX_DECOMPRESSED_BYTES)
        if inflater.unconsumed_tail:
            raise WireError("chunk.data", f"inflates beyond {MAX_DECOMPRESSED_BYTES} bytes")
    except (ValueError, zlib.error) as exc:
        if isinstance(exc, WireError):
            raise
        raise WireError("chunk.data", f"not base64 zlib data ({exc})") from None
    if hashlib.sha256(plain).hexdigest() != digest:
        raise WireError("chunk.sha256", "checksum does not match the data")
    try:
        columns = json.loads(plain)
    except (ValueError, RecursionError):
        raise WireError("chunk.data", "decompressed data is not JSON") from None
    allowed = set(RawChunk._COLUMNS) | (set(READING_EXTENSIONS) if layout == 2 else set())
    if not isinstance(columns, dict) or not set(RawChunk._COLUMNS) <= set(columns) <= allowed:
        extra = "" if layout == 1 else f" and optionally {', '.join(READING_EXTENSIONS)}"
        raise WireError("chunk.data", f"columns must be {', '.join(RawChunk._COLUMNS)}{extra} (layout {layout})")
    names = [c for c in Reading._RULES if c in columns]
    for name in names:
        if not isinstance(columns[name], list) or len(columns[name]) != count:
            raise WireError(f"chunk.data.{name}", f"expected {count} values")
    fast = [_column_fast(Reading._RULES[c], columns[c]) for c in names]
    if all(col is not None for col in fast):
        if names == list(RawChunk._COLUMNS):
            rows = tuple(map(Reading, *cast(list[list], fast)))
        else:
            rows = tuple(Reading(**dict(zip(names, values))) for values in zip(*fast))
        if None in columns["energy_kwh"]:
            for i, r in enumerate(rows):
                r.check_channel(f"readings[{i}]")
        return rows
    checked: list[Reading] = []
    for i in range(count):
        row = {c: columns[c][i] for c in names}
        checked.append(_build(Reading, row, f"readings[{i}]").check_channel(f"readings[{i}]"))
    return tuple(checked)


def _column_fast(rule: _Rule, values: list) -> list | None:
    """Check a whole column at once against ``rule`` (from its schema); None when unsure.

    The collector decodes raw chunks at tens of thousands of readings per second, and the
    per-field path spends most of its time naming fields. This path accepts only values the
    rule certainly accepts (numbers in range, strings matching, null where allowed) and
    returns them exactly as the rule would; anything else falls back to the per-field path,
    which raises the precise error. Both paths therefore accept and reject the same input.
    """
    types = rule.schema["type"]
    nullable = isinstance(types, list) and "null" in types
    kind = types[0] if isinstance(types, list) else types
    if kind == "number":
        lo, hi = rule.schema.get("minimum", -math.inf), rule.schema.get("maximum", math.inf)
        ints = False
        for v in values:
            t = type(v)
            if t is float:
                if not lo <= v <= hi:
                    return None
            elif t is int:
                if not lo <= v <= hi:
                    return None
                ints = True
            elif v is not None or not nullable:
                return None
        if ints:
            return [float(v) if v is not None else None for v in values]
        return values
    if kind == "string" and "enum" not in rule.schema:
        pattern = re.compile(rule.schema["pattern"]) if "pattern" in rule.schema else None
        max_len = rule.schema["maxLength"]
        try:
            distinct = set(values)
        except TypeError:
            return None
        for v in distinct:
            if type(v) is not str:
                if v is None and nullable:
                    continue
                return None
            if len(v) > max_len or (pattern is not None and not pattern.match(v)):
                return None
        return values
    if kind == "integer":
        lo, hi = rule.schema.get("minimum", -math.inf), rule.schema.get("maximum", math.inf)
        for v in values:
            if type(v) is int:
                if not lo <= v <= hi:
                    return None
            elif v is not None or not nullable:
                return None
        return values
    if kind == "string" and "enum" in rule.schema:
        try:
            distinct = set(values)
        except TypeError:
            return None
        return values if distinct <= set(rule.schema["enum"]) else None
    return None


def encode(msg: Message) -> bytes:
    """Serialise a message to its wire bytes (compact JSON, raw readings compressed)."""
    kind = type(msg).KIND
    body: dict[str, Any] = {"v": SCHEMA_VERSION if msg.epoch is not None else 1, "kind": kind}
    body.update({k: _plain(getattr(msg, k)) for k in type(msg)._RULES})
    if msg.epoch is None:
        del body["epoch"]  # the legacy epoch: a version-1 message, byte-identical to before
    if isinstance(msg, RawChunk):
        if not msg.readings or len(msg.readings) > MAX_RAW_READINGS:
            raise WireError("readings", f"a chunk holds 1 to {MAX_RAW_READINGS} readings")
        body["chunk"] = _encode_readings(msg.readings)
    payload = json.dumps(body, separators=(",", ":"), allow_nan=False).encode()
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise WireError("payload", f"{len(payload)} bytes exceeds {MAX_PAYLOAD_BYTES}")
    return payload


def _load_json(payload: bytes) -> dict:
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise WireError("payload", "expected bytes")
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise WireError("payload", f"{len(payload)} bytes exceeds {MAX_PAYLOAD_BYTES}")
    try:
        obj = json.loads(bytes(payload).decode("utf-8"), parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
    except (UnicodeDecodeError, ValueError) as exc:
        raise WireError("payload", f"not UTF-8 JSON ({str(exc)[:80]})") from None
    except RecursionError:
        raise WireError("payload", "JSON nested too deeply") from None
    if not isinstance(obj, dict):
        raise WireError("payload", "expected a JSON object")
    return obj


def decode(topic: str, payload: bytes) -> Message:
    """Parse and check an upward message. The topic's gateway and kind must match the body."""
    gateway_id, kind = parse_topic(topic)
    obj = _load_json(payload)
    version = obj.get("v")
    if type(version) is not int or version not in ACCEPTED_VERSIONS:
        raise WireError(
            "v",
            f"unsupported schema version {str(version)[:20]}, expected one of {', '.join(map(str, ACCEPTED_VERSIONS))}",
        )
    if version == 1 and "epoch" in obj:
        raise WireError("epoch", "not a field of schema version 1 (send v 2)")
    if version >= 2 and "epoch" not in obj:
        raise WireError("epoch", "missing (required from schema version 2)")
    if obj.get("kind") != kind:
        raise WireError("kind", f"body says {str(obj.get('kind'))[:20]!r}, topic says {kind!r}")
    cls = _BY_KIND[kind]
    body = {k: v for k, v in obj.items() if k not in ("v", "kind", "chunk")}
    if cls is RawChunk:
        if "chunk" not in obj:
            raise WireError("chunk", "missing")
        msg = _build(
            cls, body, extra={"readings": _decode_readings(obj["chunk"]), "chunk_sha256": obj["chunk"]["sha256"]}
        )
    else:
        if "chunk" in obj:
            raise WireError("chunk", "unknown field")
        msg = _build(cls, body)
    if msg.gateway_id != gateway_id:
        raise WireError("gateway_id", f"body says {msg.gateway_id!r}, topic says {gateway_id!r}")
    return msg


def encode_command(cmd: ModelAnnouncement) -> bytes:
    body = {
        "v": COMMAND_VERSION,
        "kind": cmd.KIND,
        **{k: _plain(getattr(cmd, k)) for k in cmd._RULES if getattr(cmd, k) is not None or k not in cmd._OPTIONAL},
    }
    body["gateways"] = list(cmd.gateways) if cmd.gateways is not None else None
    return json.dumps(body, separators=(",", ":")).encode()


def decode_command(payload: bytes) -> ModelAnnouncement:
    """Parse a downward model announcement."""
    obj = _load_json(payload)
    if obj.get("v") != COMMAND_VERSION or obj.get("kind") != ModelAnnouncement.KIND:
        raise WireError("kind", "not a version-1 model announcement")
    gateways = obj.get("gateways")
    if gateways is not None:
        if not isinstance(gateways, list) or len(gateways) > 100_000:
            raise WireError("gateways", "expected null or a list of gateway ids")
        gateways = tuple(_ID.check(f"gateways[{i}]", g) for i, g in enumerate(gateways))
    body = {k: v for k, v in obj.items() if k not in ("v", "kind", "gateways")}
    cmd = _build(ModelAnnouncement, body)
    if (cmd.rollback_from is None) != (cmd.rollback_signature is None):
        raise WireError("rollback_signature", "rollback_from and rollback_signature go together")
    return ModelAnnouncement(
        cmd.name,
        cmd.version,
        cmd.url,
        cmd.sha256,
        cmd.signature_url,
        cmd.issued_at,
        gateways,
        cmd.rollback_from,
        cmd.rollback_signature,
    )


def content_digest(msg: Message) -> bytes:
    """SHA-256 of what a message says, to tell a redelivery from a conflict under one key.

    Everything in the envelope and body counts except ``sent_at`` (a sender that re-encodes a
    retry with a new send time is still sending the same message); a raw chunk counts by the
    SHA-256 of its plain column bytes (the checksum it travels with, recomputed when the chunk
    was built here rather than decoded).
    """
    cls = type(msg)
    body = {k: _plain(getattr(msg, k)) for k in cls._RULES if k != "sent_at"}
    body["kind"] = cls.KIND
    if isinstance(msg, RawChunk):
        body["chunk"] = msg.chunk_sha256 or _encode_readings(msg.readings)["sha256"]
    canonical = json.dumps(body, separators=(",", ":"), sort_keys=True, allow_nan=False)
    return hashlib.sha256(canonical.encode()).digest()


# --------------------------------------------------------------------------- JSON Schema


def json_schemas() -> dict[str, dict]:
    """JSON Schema (draft 2020-12) of each upward message kind, for implementations in other languages."""
    out = {}
    for kind, cls in _BY_KIND.items():
        schema = _object_schema(cls)
        schema["properties"] = {"v": {"enum": list(ACCEPTED_VERSIONS)}, "kind": {"const": kind}, **schema["properties"]}
        schema["properties"]["epoch"] = {
            **schema["properties"]["epoch"],
            "description": "id of the outbox that made the message (v2); absent in v1 (the legacy epoch)",
        }
        schema["required"] = ["v", "kind", *schema["required"]]
        # v2 requires the epoch; v1 (the legacy epoch) must not carry one
        schema["if"] = {"properties": {"v": {"const": 1}}}
        schema["then"] = {"not": {"required": ["epoch"]}}
        schema["else"] = {"required": ["epoch"]}
        if cls is RawChunk:
            schema["properties"]["chunk"] = {
                "type": "object",
                "required": ["codec", "count", "sha256", "data"],
                "additionalProperties": False,
                "description": "data: base64 of zlib-compressed JSON object of equal-length column "
                f"arrays {', '.join(RawChunk._COLUMNS)} (layout 2 adds any of "
                f"{', '.join(READING_EXTENSIONS)}); sha256 of the uncompressed bytes",
                "properties": {
                    "codec": {"const": "zlib"},
                    "count": {"type": "integer", "minimum": 1, "maximum": MAX_RAW_READINGS},
                    "layout": {"enum": [1, 2]},
                    "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                    "data": {"type": "string", "contentEncoding": "base64"},
                },
            }
            schema["required"].append("chunk")
        schema.update(
            {
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "$id": f"https://gridsight.example/schemas/v{SCHEMA_VERSION}/{kind}.json",
                "title": f"gridsight {kind} message v{SCHEMA_VERSION}",
                "description": (cls.__doc__ or "").strip(),
            }
        )
        out[kind] = schema
    return out
