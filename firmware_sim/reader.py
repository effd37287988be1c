"""``[[readers]] type = "sim"``: simulated meters behind the agent's MeterReader interface.

One reader serves one gateway of a seeded :class:`~firmware_sim.fleet_model.Fleet`. Readings
are pure functions of (seed, meter, time), so the same seed gives the same data however the
agent polls: every minute, once an hour, or after a restart. A poll at ``now`` returns the
readings the meters handed over since the previous poll (on the first poll: those of the
last ``backfill_s`` seconds); a clock that runs backwards returns nothing until it passes
the previous poll again, so a reading is never handed over twice unless a ``duplicate``
data fault says so.

Options (all optional): ``seed`` (1), ``gateway`` (index, 0), ``meters`` (per gateway, 4),
``step_s`` (60), ``anomalies`` (false), ``anomaly_rate`` (0.1), ``fault_rate`` (0.05),
``start``/``end`` (ISO-8601 or Unix seconds; the window anomalies are planned in, required
with ``anomalies = true``), ``kinds`` and ``classes`` (lists restricting what is drawn),
``labels`` (path: this gateway's ground truth is written there as CSV), ``tz``
("America/New_York"), ``country`` ("US"), ``backfill_s`` (= step_s), ``name``,
``since`` (ISO-8601 or Unix seconds: the first poll hands over everything after it instead of
``backfill_s``), ``state_path`` (file keeping the hand-over cursor across agent restarts),
``channels`` (false: with true the readings carry what a smart meter shows beyond the import
register: export of PV homes, tariff registers, per-phase values of three-phase meters with
one phase near 0 V during a phase loss, and gas-heated homes' gas meter as ``<meter>-gas``).

With ``state_path`` the meters behave like meters with a load-profile log read by index:
after a crash and restart, the agent gets every reading it has not confirmed again. The agent
confirms with :meth:`SimulatedMeterReader.commit` once the outbox transaction holding everything
handed over so far has committed; only then does the cursor move (written to a temporary file,
fsynced, renamed over ``state_path``). A reading is therefore either in the outbox or handed over
again after a restart (at least once, never lost), whatever instant the agent is killed at.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from edge_agent.failpoints import hit
from edge_agent.readers.base import option, reject_unknown
from gridsight.settings import ConfigError
from gridsight.wire import Reading
from firmware_sim.anomalies import ALL_KINDS, parse_time, write_labels_csv
from firmware_sim.fleet_model import Fleet
from firmware_sim.meter import SimulatedMeter
from firmware_sim.profiles import MeterClass

__all__ = ["SimulatedMeterReader", "committed_cursor"]

_KNOWN = {"seed", "gateway", "meters", "step_s", "anomalies", "anomaly_rate", "fault_rate", "start", "end",
          "kinds", "classes", "labels", "tz", "country", "backfill_s", "name", "since", "state_path", "channels"}


def committed_cursor(path: Path) -> float:
    """The hand-over cursor committed in ``path``: everything the meters handed over before it has
    been taken by the agent (ValueError if the file holds no cursor; OSError if it cannot be read)."""
    try:
        return float(json.loads(path.read_text())["cursor"])
    except (KeyError, TypeError) as exc:
        raise ValueError(f"no cursor: {exc}") from None


class SimulatedMeterReader:
    """The meters of one simulated gateway, read at clock time ``now``."""

    def __init__(self, meters: Sequence[SimulatedMeter], *, name: str = "sim", backfill_s: float | None = None,
                 since: float | None = None, state_path: str | Path | None = None, channels: bool = False) -> None:
        self.meters = list(meters)
        self.channels = channels
        self.name = name
        self.step_s = self.meters[0].step_s if self.meters else 60
        self.backfill_s = float(self.step_s if backfill_s is None else backfill_s)
        self.state_path = Path(state_path) if state_path else None
        self._last: float | None = since
        self._uncommitted: float | None = None
        if self.state_path is not None and self.state_path.exists():
            try:
                self._last = committed_cursor(self.state_path)
            except ValueError as exc:
                raise ConfigError("state_path", f"{self.state_path} is not a reader cursor ({exc})") from None

    def _write_cursor(self, cursor: float) -> None:
        if self.state_path is None:
            return
        tmp = self.state_path.with_name(self.state_path.name + ".tmp")
        with open(tmp, "w") as fh:
            fh.write(json.dumps({"cursor": cursor}))
            fh.flush()
            os.fsync(fh.fileno())
        hit("reader.cursor_written")
        os.replace(tmp, self.state_path)

    @classmethod
    def for_gateway(cls, fleet: Fleet, index: int, **kwargs: Any) -> "SimulatedMeterReader":
        return cls(fleet.gateway_meters(index), **kwargs)

    @classmethod
    def from_config(cls, options: Mapping[str, Any]) -> "SimulatedMeterReader":
        reject_unknown(options, _KNOWN)
        seed = option(options, "seed", int, 1)
        gateway = option(options, "gateway", int, 0, check=lambda v: v >= 0, why="must be >= 0")
        meters = option(options, "meters", int, 4, check=lambda v: 1 <= v <= 2000, why="must be 1..2000")
        step_s = option(options, "step_s", int, 60, check=lambda v: v > 0 and 900 % v == 0,
                        why="must divide 900 seconds")
        anomalies = option(options, "anomalies", bool, False)
        anomaly_rate = option(options, "anomaly_rate", float, 0.1, check=lambda v: 0 <= v <= 1, why="must be 0..1")
        fault_rate = option(options, "fault_rate", float, 0.05, check=lambda v: 0 <= v <= 1, why="must be 0..1")
        kinds = option(options, "kinds", list, None)
        if kinds is not None:
            for k in kinds:
                if k not in ALL_KINDS:
                    raise ConfigError("kinds", f"{k!r} is not one of {', '.join(ALL_KINDS)}")
        classes = option(options, "classes", list, None)
        if classes is not None:
            for c in classes:
                if c not in {m.value for m in MeterClass}:
                    raise ConfigError("classes", f"{c!r} is not one of {', '.join(m.value for m in MeterClass)}")
        window = []
        for key in ("start", "end"):
            raw = option(options, key, (str, int, float), None)
            try:
                window.append(None if raw is None else parse_time(raw, key))
            except ValueError as exc:
                raise ConfigError(key, str(exc)) from None
        if anomalies and None in window:
            raise ConfigError("start" if window[0] is None else "end", "required when anomalies = true")
        if None not in window and window[1] <= window[0]:
            raise ConfigError("end", "must be after start")
        labels = option(options, "labels", str, None)
        tz = option(options, "tz", str, "America/New_York")
        country = option(options, "country", str, "US")
        backfill_s = option(options, "backfill_s", (int, float), None, check=lambda v: v >= 0, why="must be >= 0")
        name = option(options, "name", str, f"sim:gw{gateway}")
        since_raw = option(options, "since", (str, int, float), None)
        try:
            since = None if since_raw is None else parse_time(since_raw, "since")
        except ValueError as exc:
            raise ConfigError("since", str(exc)) from None
        state_path = option(options, "state_path", str, None)
        try:
            fleet = Fleet(seed, gateway + 1, meters, start=window[0], end=window[1], step_s=step_s,
                          anomaly_rate=anomaly_rate if anomalies else 0.0,
                          fault_rate=fault_rate if anomalies else 0.0, kinds=kinds, classes=classes,
                          tz=tz, country=country)
        except ValueError as exc:
            key = "tz" if "time zone" in str(exc) else "country" if "holidays" in str(exc) else "seed"
            raise ConfigError(key, str(exc)) from None
        reader = cls.for_gateway(fleet, gateway, name=name, backfill_s=backfill_s, since=since,
                                 state_path=state_path, channels=option(options, "channels", bool, False))
        if labels:
            try:
                write_labels_csv([e for m in reader.meters for e in m.events], Path(labels))
            except OSError as exc:
                raise ConfigError("labels", f"cannot write {labels}: {exc.strerror or exc}") from None
        return reader

    def read(self, now: float) -> list[Reading]:
        """Readings handed over since the previous poll (see the module docstring)."""
        after = now - self.backfill_s if self._last is None else self._last
        if now <= after:
            return []
        out: list[Reading] = []
        for meter in self.meters:
            out.extend(meter.emitted(after, now, channels=self.channels).readings(meter.meter_id))
        # handed over only once every meter's readings are out: a poll that fails hands them over again
        self._last = self._uncommitted = now
        return out

    def commit(self) -> None:
        """The agent has stored everything handed over so far: move the persisted cursor to it."""
        if self._uncommitted is not None:
            self._write_cursor(self._uncommitted)
            self._uncommitted = None

    def close(self) -> None:
        """Nothing to release; the cursor stays where the agent last committed it."""
