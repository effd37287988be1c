"""Detector quality against ground truth: precision, recall and ROC-AUC per meter-interval, recall per event.

Labels are a CSV ``meter_id,start,end,kind`` (ISO-8601 UTC or Unix seconds), as the fleet
simulator writes them. A meter-interval is positive when it overlaps a consumption event.
Data faults (duplicates, out-of-order delivery, clock jumps, gaps) are not anomalies: an
interval they touch counts as negative, so flagging them costs precision.
"""

from __future__ import annotations

import csv
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from model_export.offline import ScoredInterval
from model_export.readings import ReadingsError, parse_ts

__all__ = ["LabelledEvent", "EvaluationReport", "read_labels", "evaluate", "DATA_FAULT_KINDS"]

DATA_FAULT_KINDS = frozenset({"duplicate", "out_of_order", "clock_jump", "gap"})


@dataclass(frozen=True, slots=True)
class LabelledEvent:
    meter_id: str
    start: float
    end: float
    kind: str


@dataclass
class EvaluationReport:
    intervals: int
    positives: int
    flagged: int
    precision: float
    recall: float
    roc_auc: float | None
    events: int
    events_detected: int
    event_recall: float
    false_alarms_per_meter_month: float
    recall_by_kind: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def read_labels(path: str | Path) -> list[LabelledEvent]:
    """Parse a labels CSV; :class:`ReadingsError` names a bad line."""
    p = Path(path)
    try:
        fh = p.open(newline="", encoding="utf-8")
    except OSError as exc:
        raise ReadingsError(str(p), 0, f"cannot read labels ({exc.strerror})") from None
    out = []
    with fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or not {"meter_id", "start", "end", "kind"} <= set(reader.fieldnames):
            raise ReadingsError(str(p), 1, "labels need the columns meter_id,start,end,kind")
        for row in reader:
            try:
                start, end = parse_ts(row["start"]), parse_ts(row["end"])
            except (ValueError, TypeError) as exc:
                raise ReadingsError(str(p), reader.line_num, f"bad start/end ({exc})") from None
            if end < start:
                raise ReadingsError(str(p), reader.line_num, "end is before start")
            out.append(LabelledEvent(row["meter_id"].strip(), start, end, row["kind"].strip()))
    return out


def _roc_auc(scores: np.ndarray, positive: np.ndarray) -> float | None:
    """ROC-AUC of ``-scores`` (lower score = more anomalous), ties counted half (Mann-Whitney U)."""
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if not n_pos or not n_neg:
        return None
    order = np.argsort(-scores, kind="mergesort")
    ranks = np.empty(scores.size)
    sorted_scores = -scores[order]
    # average ranks over ties
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(avg, counts)
    u = ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def evaluate(scored: Sequence[ScoredInterval], events: Sequence[LabelledEvent],
             skip_warmup_s: float = 86_400) -> EvaluationReport:
    """Score a run of the detector against labelled events (each meter's first day is warm-up, left out)."""
    by_meter: dict[str, list[LabelledEvent]] = {}
    for e in events:
        if e.kind not in DATA_FAULT_KINDS:
            by_meter.setdefault(e.meter_id, []).append(e)
    first_seen: dict[str, float] = {}
    for s in scored:
        first_seen[s.meter_id] = min(first_seen.get(s.meter_id, s.interval_start), s.interval_start)
    rows = [s for s in scored if s.interval_start - first_seen[s.meter_id] >= skip_warmup_s]
    positive = np.zeros(len(rows), dtype=bool)
    hit_events: set[LabelledEvent] = set()
    seen_events: set[LabelledEvent] = set()
    for i, s in enumerate(rows):
        for e in by_meter.get(s.meter_id, ()):
            if s.interval_start < e.end and s.interval_start + s.interval_s > e.start:
                positive[i] = True
                seen_events.add(e)
                if s.anomalous:
                    hit_events.add(e)
    flags = np.array([s.anomalous for s in rows], dtype=bool)
    scores = np.array([s.score for s in rows], dtype=np.float64)
    tp = int(np.sum(flags & positive))
    precision = tp / int(flags.sum()) if flags.any() else 0.0
    recall = tp / int(positive.sum()) if positive.any() else 0.0
    kinds = sorted({e.kind for e in seen_events})
    recall_by_kind = {k: sum(1 for e in hit_events if e.kind == k) / sum(1 for e in seen_events if e.kind == k)
                      for k in kinds}
    meter_months = sum(s.interval_s for s in rows) / (30 * 86_400) if rows else 0.0
    false_alarms = int(np.sum(flags & ~positive))
    return EvaluationReport(
        intervals=len(rows), positives=int(positive.sum()), flagged=int(flags.sum()),
        precision=round(precision, 4), recall=round(recall, 4),
        roc_auc=None if (auc := _roc_auc(scores, positive)) is None else round(auc, 4),
        events=len(seen_events), events_detected=len(hit_events),
        event_recall=round(len(hit_events) / len(seen_events), 4) if seen_events else 0.0,
        false_alarms_per_meter_month=round(false_alarms / meter_months, 2) if meter_months else 0.0,
        recall_by_kind={k: round(v, 3) for k, v in recall_by_kind.items()})
