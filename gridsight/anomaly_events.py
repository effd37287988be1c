"""Anomaly events: flagged intervals of one meter merged into the alarms an operator sees.

One rule, used by the collector's ``/anomalies/events`` and by the simulator's QA score, so the
API's event counts and the QA report's detections are the same numbers: flags of one meter
whose gap (next start minus current end) is at most ``merge_gap_s`` belong to one event.
Standard library only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, cast

__all__ = ["MERGE_GAP_S", "FlaggedInterval", "FlagRun", "merge_flags"]

MERGE_GAP_S = 1800.0  # two quarter-hour intervals: a single unflagged interval does not split an event


@dataclass(frozen=True, slots=True)
class FlaggedInterval:
    """One flagged interval [start, end) of a meter (Unix seconds); score and reason when known."""

    meter_id: str
    start: float
    end: float
    score: float | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class FlagRun:
    """Flags of one meter merged into one event: first start, last end, how many, the strongest."""

    meter_id: str
    start: float
    end: float
    flags: int
    min_score: float | None = None  # the strongest flag (lower = more anomalous)
    reason: str | None = None  # that flag's explanation


def merge_flags(flags: Iterable[FlaggedInterval], merge_gap_s: float = MERGE_GAP_S) -> list[FlagRun]:
    """Runs of flagged intervals per meter, ordered by meter then start."""
    by_meter: dict[str, list[FlaggedInterval]] = {}
    for f in flags:
        by_meter.setdefault(f.meter_id, []).append(f)
    out: list[FlagRun] = []
    for meter, items in sorted(by_meter.items()):
        items.sort(key=lambda f: f.start)
        run = [items[0]]
        end = items[0].end
        for f in items[1:]:
            if f.start - end <= merge_gap_s:
                run.append(f)
                end = max(end, f.end)
            else:
                out.append(_run(meter, run, end))
                run, end = [f], f.end
        out.append(_run(meter, run, end))
    return out


def _run(meter: str, run: list[FlaggedInterval], end: float) -> FlagRun:
    scored = [f for f in run if f.score is not None]
    strongest = min(scored, key=lambda f: cast(float, f.score)) if scored else None
    return FlagRun(
        meter,
        run[0].start,
        end,
        len(run),
        strongest.score if strongest else None,
        strongest.reason if strongest else None,
    )
