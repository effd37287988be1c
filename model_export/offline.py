"""Offline scoring for analysts: a readings file through exactly the gateway's features and scorer."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np

from edge_agent.features import batch_features
from edge_agent.scorer import Scorer
from model_export.readings import ReadingTable, interval_series, read_readings

__all__ = ["ScoredInterval", "score_readings"]


@dataclass(frozen=True, slots=True)
class ScoredInterval:
    """One meter-interval with the score and flag the gateway would have produced."""

    meter_id: str
    interval_start: float
    interval_s: int
    kwh: float
    readings: int
    score: float
    anomalous: bool
    reason: str | None
    features: tuple[float, ...] = ()

    @property
    def interval_start_iso(self) -> str:
        return datetime.fromtimestamp(self.interval_start, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def score_readings(scorer: Scorer, readings: str | Path | ReadingTable,
                   progress: Callable[[str], None] | None = None) -> list[ScoredInterval]:
    """Score every meter-interval of ``readings`` on the model's interval and site calendar, in time order.

    Every row carries its feature values and the reason its strongest feature gives (for flagged
    and unflagged rows alike, so an analyst can see why a row ranks where it does)."""
    table = readings if isinstance(readings, ReadingTable) else read_readings(readings)
    stats, quality = interval_series(table, scorer.interval_s)
    if progress:
        progress(f"{quality.summary()}")
    from model_export.pipeline import site_calendar

    calendar = site_calendar(scorer.time_zone, scorer.holiday_country, [s.interval_start for s in stats])
    X, ordered = batch_features(stats, scorer.feature_names, scorer.interval_s, calendar)
    scores, flags = scorer.score(X) if len(ordered) else (np.empty(0), np.empty(0, dtype=bool))
    out = []
    for i, s in enumerate(ordered):
        out.append(ScoredInterval(s.meter_id, s.interval_start, s.interval_s, s.kwh, s.readings,
                                  float(scores[i]), bool(flags[i]), scorer.explain(X[i]),
                                  tuple(float(v) for v in X[i])))
    return out
