"""Event-level QA score: did the pipeline find the injected anomalies, and keep every reading?

Pure functions over labels, flags and reading sets, so the scoring rules are tested without
a database (:mod:`firmware_sim.qa_store` loads the collector's tables).

Rules, chosen to match how an operator experiences alarms:

- Flags of one meter closer than ``merge_gap_s`` merge into one **detection**
  (:func:`gridsight.anomaly_events.merge_flags`, the rule ``/anomalies/events`` uses too).
- A labelled consumption event is **detected** when a flagged interval overlaps
  ``[start, end + tolerance_s]`` (the model sees an interval only after it closed, and
  features look back). Its **delay** is the end of the first such interval minus the start.
- A detection overlapping any consumption label of its meter is a true positive; otherwise a
  **false alarm** (reported separately when it falls inside a data-fault span: those should
  not alarm either).
- Per kind: recall over that kind's events. Precision is defined overall only: a false alarm
  has no kind, so a per-kind precision is "n/a" (``None``) unless the run had no false alarm at
  all, when it is exact (true detections of that kind over detections of that kind).
- Completeness: distinct (meter, ts) stored / produced; duplicates: stored rows beyond one
  per (meter, ts).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Mapping, Sequence

import numpy as np

from firmware_sim.anomalies import CONSUMPTION_KINDS, AnomalyEvent
from gridsight.anomaly_events import MERGE_GAP_S, FlaggedInterval, merge_flags

__all__ = ["print_score", "FlaggedInterval", "Detection", "KindScore", "Completeness", "QaScore", "Bars",
           "merge_flags", "score_detection", "completeness", "missed_bars"]

MONTH_S = 30 * 86400.0


@dataclass(frozen=True)
class Detection:
    meter_id: str
    start: float
    end: float
    flags: int
    kind: str | None          # matched consumption kind, None for a false alarm
    in_data_fault: bool = False


@dataclass
class KindScore:
    kind: str
    events: int = 0
    detected: int = 0
    true_detections: int = 0
    precision: float | None = None
    recall: float | None = None
    f1: float | None = None
    delays_s: list[float] = field(default_factory=list)

    @property
    def delay_median_s(self) -> float | None:
        return float(np.median(self.delays_s)) if self.delays_s else None

    @property
    def delay_p90_s(self) -> float | None:
        return float(np.percentile(self.delays_s, 90)) if self.delays_s else None


@dataclass
class Completeness:
    produced: int
    stored: int              # distinct produced readings found in storage
    stored_rows: int         # all stored rows in the window (duplicates included)
    duplicates: int
    missing_by_meter: dict[str, int] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        return self.stored / self.produced if self.produced else None


@dataclass
class QaScore:
    span_start: float
    span_end: float
    meters: int
    kinds: dict[str, KindScore]
    overall: KindScore
    detections: list[Detection]
    false_alarms: int
    false_alarms_in_data_faults: int
    false_alarms_per_meter_month: float | None
    missed_events: list[AnomalyEvent]
    completeness: Completeness | None = None

    def as_dict(self) -> dict:
        def kind(k: KindScore) -> dict:
            d = {key: v for key, v in asdict(k).items() if key != "delays_s"}
            d.update(delay_median_s=k.delay_median_s, delay_p90_s=k.delay_p90_s)
            return d
        out = {"span_start": self.span_start, "span_end": self.span_end, "meters": self.meters,
               "overall": kind(self.overall), "kinds": {k: kind(v) for k, v in self.kinds.items()},
               "detections": len(self.detections), "false_alarms": self.false_alarms,
               "false_alarms_in_data_faults": self.false_alarms_in_data_faults,
               "false_alarms_per_meter_month": self.false_alarms_per_meter_month,
               "missed_events": [[e.meter_id, e.start, e.end, e.kind] for e in self.missed_events]}
        if self.completeness is not None:
            c = self.completeness
            out["completeness"] = {"produced": c.produced, "stored": c.stored, "stored_rows": c.stored_rows,
                                   "ratio": c.ratio, "duplicates": c.duplicates,
                                   "missing_by_meter": dict(sorted(c.missing_by_meter.items())[:50])}
        return out


def _f1(p: float | None, r: float | None) -> float | None:
    if p is None or r is None:
        return None
    return 0.0 if p + r == 0 else 2 * p * r / (p + r)


def score_detection(labels: Sequence[AnomalyEvent], flags: Sequence[FlaggedInterval], *, meters: int,
                    span_start: float, span_end: float, tolerance_s: float = 3600.0,
                    merge_gap_s: float = MERGE_GAP_S) -> QaScore:
    """Score flags against labels over ``[span_start, span_end]`` for ``meters`` meters."""
    labels = [e for e in labels if e.end > span_start and e.start < span_end]
    consumption = [e for e in labels if e.kind in CONSUMPTION_KINDS]
    faults = [e for e in labels if e.kind not in CONSUMPTION_KINDS]
    flags = [f for f in flags if span_start - tolerance_s <= f.start <= span_end + tolerance_s]
    by_meter_flags: dict[str, list[FlaggedInterval]] = {}
    for f in flags:
        by_meter_flags.setdefault(f.meter_id, []).append(f)
    for items in by_meter_flags.values():
        items.sort(key=lambda f: f.start)

    kinds = {k: KindScore(k) for k in CONSUMPTION_KINDS if any(e.kind == k for e in consumption)}
    overall = KindScore("overall")
    missed = []
    for e in consumption:
        ks = kinds[e.kind]
        ks.events += 1
        overall.events += 1
        hits = [f for f in by_meter_flags.get(e.meter_id, ()) if f.start < e.end + tolerance_s and f.end > e.start]
        if hits:
            delay = max(0.0, hits[0].end - e.start)
            ks.detected += 1
            overall.detected += 1
            ks.delays_s.append(delay)
            overall.delays_s.append(delay)
        else:
            missed.append(e)

    detections = []
    for run in merge_flags(flags, merge_gap_s):
        meter, start, end, n = run.meter_id, run.start, run.end, run.flags
        match = next((e for e in consumption if e.meter_id == meter
                      and start < e.end + tolerance_s and end > e.start), None)
        in_fault = match is None and any(e.meter_id == meter and start < e.end + tolerance_s and end > e.start
                                         for e in faults)
        detections.append(Detection(meter, start, end, n, match.kind if match else None, in_fault))
    false_alarms = sum(1 for d in detections if d.kind is None)
    for d in detections:
        if d.kind is not None:
            kinds[d.kind].true_detections += 1
            overall.true_detections += 1
    for ks in list(kinds.values()) + [overall]:
        ks.recall = ks.detected / ks.events if ks.events else None
        if ks is overall:
            denom = ks.true_detections + false_alarms
            ks.precision = ks.true_detections / denom if denom else None
        else:   # a false alarm has no kind: a kind's precision is exact only when there is none
            ks.precision = 1.0 if ks.true_detections and not false_alarms else None
        ks.f1 = _f1(ks.precision, ks.recall)
    months = meters * max(span_end - span_start, 1.0) / MONTH_S
    return QaScore(span_start, span_end, meters, kinds, overall, detections, false_alarms,
                   sum(1 for d in detections if d.in_data_fault),
                   false_alarms / months if meters else None, missed)


def completeness(produced: Mapping[str, np.ndarray], stored: Mapping[str, np.ndarray]) -> Completeness:
    """Compare produced reading times per meter with stored ones (stored may repeat)."""
    total = found = rows = dups = 0
    missing: dict[str, int] = {}
    for meter, ts in produced.items():
        want = np.unique(np.asarray(ts, dtype=float))
        have = np.asarray(stored.get(meter, ()), dtype=float)
        total += want.size
        hit = int(np.isin(want, have).sum())
        found += hit
        if hit < want.size:
            missing[meter] = int(want.size - hit)
    for meter, ts in stored.items():
        have = np.asarray(ts, dtype=float)
        rows += have.size
        dups += int(have.size - np.unique(have).size)
    return Completeness(total, found, rows, dups, missing)


@dataclass(frozen=True)
class Bars:
    """The release gate: each bar that is set must be met."""

    min_recall: float | None = 0.9
    min_precision: float | None = 0.8
    min_completeness: float | None = 1.0
    max_duplicates: int | None = 0
    max_false_alarms_per_meter_month: float | None = None


def missed_bars(score: QaScore, bars: Bars) -> list[str]:
    """One line per missed bar (empty when the run passes)."""
    out = []
    o = score.overall
    if bars.min_recall is not None and (o.recall if o.recall is not None else 1.0) < bars.min_recall:
        out.append(f"recall {o.recall:.3f} is below {bars.min_recall}")
    if bars.min_precision is not None:
        p = o.precision if o.precision is not None else (1.0 if not score.false_alarms else 0.0)
        if p < bars.min_precision:
            out.append(f"precision {p:.3f} is below {bars.min_precision}")
    c = score.completeness
    if c is not None and bars.min_completeness is not None and c.ratio is not None and c.ratio < bars.min_completeness:
        out.append(f"completeness {c.ratio:.6f} ({c.produced - c.stored} readings missing) is below {bars.min_completeness}")
    if c is not None and bars.max_duplicates is not None and c.duplicates > bars.max_duplicates:
        out.append(f"{c.duplicates} duplicate readings stored (at most {bars.max_duplicates} allowed)")
    fa = score.false_alarms_per_meter_month
    if bars.max_false_alarms_per_meter_month is not None and fa is not None and fa > bars.max_false_alarms_per_meter_month:
        out.append(f"{fa:.3f} false alarms per meter per month exceed {bars.max_false_alarms_per_meter_month}")
    return out


def print_score(score: QaScore, missed: list[str]) -> None:
    """The score as the CLI prints it: a table per kind, then the totals and PASS or FAIL."""
    o = score.overall
    pct = lambda v: "  n/a " if v is None else f"{100 * v:5.1f}%"
    hrs = lambda v: "   -  " if v is None else f"{v / 3600:5.1f}h"
    print(f"{'kind':<18}{'events':>7}{'found':>7}{'recall':>9}{'precis':>9}{'F1':>9}{'delay':>9}")
    for k, ks in sorted(score.kinds.items()):
        print(f"{k:<18}{ks.events:>7}{ks.detected:>7}{pct(ks.recall):>9}{pct(ks.precision):>9}{pct(ks.f1):>9}"
              f"{hrs(ks.delay_median_s):>9}")
    print(f"{'overall':<18}{o.events:>7}{o.detected:>7}{pct(o.recall):>9}{pct(o.precision):>9}{pct(o.f1):>9}"
          f"{hrs(o.delay_median_s):>9}")
    fa = score.false_alarms_per_meter_month
    print(f"detections {len(score.detections)}, false alarms {score.false_alarms} "
          f"({score.false_alarms_in_data_faults} during data faults), "
          f"{'-' if fa is None else f'{fa:.3f}'} per meter per month")
    c = score.completeness
    if c is not None:
        print(f"completeness {c.stored}/{c.produced} = {pct(c.ratio).strip()}, stored rows {c.stored_rows}, "
              f"duplicates {c.duplicates}")
    print("PASS" if not missed else "FAIL: " + "; ".join(missed))
