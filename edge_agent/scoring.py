"""The scoring stage: closed intervals in, per-meter summaries and anomaly drafts out.

Features come from :class:`edge_agent.features.FeatureBuilder` using the feature names and
order stored in the model file, so the gateway can never compute a different vector than the
one the model was trained on. Without a model the stage still learns each meter's history
(with the default features), so a model delivered later scores from day one.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_agent.features import DEFAULT_FEATURES, FeatureBuilder
from edge_agent.scorer import Scorer
from edge_agent.site_calendar import SiteCalendar
from edge_agent.window import ClosedInterval
from gridsight.wire import MeterSummary

__all__ = ["IntervalScoring", "ScoredInterval", "FlagDraft"]


@dataclass(frozen=True, slots=True)
class FlagDraft:
    """An anomalous meter-interval, everything but the envelope (seq, sent_at)."""

    meter_id: str
    interval_start: float
    interval_s: int
    score: float
    threshold: float
    kwh: float
    features: dict[str, float]
    reason: str | None


@dataclass(frozen=True, slots=True)
class ScoredInterval:
    interval_start: float
    interval_s: int
    model_version: str | None
    meters: tuple[MeterSummary, ...]
    flags: tuple[FlagDraft, ...]


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


class IntervalScoring:
    """Features and scores for each closed interval; the model can be swapped at runtime."""

    def __init__(self, scorer: Scorer | None, interval_s: int, calendar: SiteCalendar | None = None) -> None:
        if scorer is not None and scorer.interval_s != interval_s:
            raise ValueError(
                f"the model {scorer.name} {scorer.version} scores {scorer.interval_s} s "
                f"intervals, the agent builds {interval_s} s intervals"
            )
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self._scorer = scorer
        self.calendar = calendar or SiteCalendar()
        self._builder = FeatureBuilder(scorer.feature_names if scorer else DEFAULT_FEATURES, interval_s, self.calendar)

    @property
    def scorer(self) -> Scorer | None:
        return self._scorer

    @property
    def model_version(self) -> str | None:
        return self._scorer.version if self._scorer else None

    def use_model(self, scorer: Scorer) -> None:
        """Switch to another model between intervals; per-meter history carries over."""
        if scorer.interval_s != self.interval_s:
            raise ValueError(f"model interval {scorer.interval_s} s does not match the agent's {self.interval_s} s")
        with self._lock:
            builder = FeatureBuilder(scorer.feature_names, self.interval_s, self.calendar)
            state = self._builder.state()
            state["feature_names"] = list(scorer.feature_names)
            builder.load_state(state)
            self._scorer, self._builder = scorer, builder

    def score(self, closed: ClosedInterval) -> ScoredInterval:
        with self._lock:
            scorer, builder = self._scorer, self._builder
            rows = (
                np.stack([builder.features(s) for s in closed.stats])
                if closed.stats
                else np.empty((0, len(builder.feature_names)), dtype=np.float32)
            )
            if scorer is not None and len(rows):
                scores, anomalous = scorer.score(np.nan_to_num(rows, nan=0.0, posinf=10.0, neginf=-10.0))
            else:
                scores, anomalous = None, None
        meters = []
        flags = []
        for i, s in enumerate(closed.stats):
            score = float(scores[i]) if scores is not None else None
            is_anomalous = bool(anomalous[i]) if anomalous is not None else None
            meters.append(
                MeterSummary(
                    s.meter_id,
                    float(s.kwh),
                    int(s.readings),
                    _finite(s.power_w_mean),
                    _finite(s.power_w_max),
                    score,
                    is_anomalous,
                    _finite(s.export_kwh),
                )
            )
            if is_anomalous:
                named = {n: float(v) for n, v in zip(builder.feature_names, rows[i].tolist()) if math.isfinite(v)}
                assert scorer is not None and score is not None  # is_anomalous comes from the scorer
                flags.append(
                    FlagDraft(
                        s.meter_id,
                        closed.interval_start,
                        closed.interval_s,
                        score,
                        float(scorer.threshold),
                        float(s.kwh),
                        named,
                        (scorer.explain(rows[i]) or "")[:200] or None,
                    )
                )
        return ScoredInterval(
            closed.interval_start, closed.interval_s, scorer.version if scorer else None, tuple(meters), tuple(flags)
        )

    def state(self) -> dict[str, Any]:
        with self._lock:
            return self._builder.state()

    def load_state(self, state: dict[str, Any]) -> None:
        if not state:
            return
        with self._lock:
            state = dict(state)
            state["feature_names"] = list(self._builder.feature_names)
            self._builder.load_state(state)
