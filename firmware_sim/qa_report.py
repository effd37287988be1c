"""The QA report: one self-contained HTML page a person would rather look at than read.

It shows the gate verdict first, then per-kind scores, the confusion by kind, the
detection-delay distribution, and a few meters' load with the injected events shaded and
the model's flags marked. Charts are inline SVG (:mod:`firmware_sim.svg_plots`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from html import escape
from typing import Sequence

import numpy as np

from firmware_sim.anomalies import ALL_KINDS, CONSUMPTION_KINDS, AnomalyEvent
from firmware_sim.qa_score import QaScore
from firmware_sim.svg_plots import PALETTE, histogram, stacked_bars, time_series

__all__ = ["MeterPanel", "render_report", "pick_meters"]

KIND_COLOURS = {k: PALETTE[i % len(PALETTE)] for i, k in enumerate(ALL_KINDS)}


@dataclass(frozen=True)
class MeterPanel:
    meter_id: str
    interval_start: np.ndarray
    kwh: np.ndarray
    anomalous: np.ndarray
    events: tuple[AnomalyEvent, ...]
    note: str = ""


def pick_meters(score: QaScore, labels: Sequence[AnomalyEvent], limit: int = 6) -> list[tuple[str, str]]:
    """Meters worth a look, with why: missed events first, then detected ones of varied kinds, then false alarms."""
    chosen: dict[str, str] = {}
    for e in score.missed_events:
        if len(chosen) < limit // 2 and e.meter_id not in chosen:
            chosen[e.meter_id] = f"missed {e.kind}"
    missed_ids = {(e.meter_id, e.start) for e in score.missed_events}
    seen_kinds = set()
    for e in sorted(labels, key=lambda e: (e.kind, e.meter_id)):
        if e.kind in CONSUMPTION_KINDS and (e.meter_id, e.start) not in missed_ids and e.kind not in seen_kinds \
                and len(chosen) < limit - 1 and e.meter_id not in chosen:
            chosen[e.meter_id] = f"detected {e.kind}"
            seen_kinds.add(e.kind)
    for d in score.detections:
        if d.kind is None and d.meter_id not in chosen and len(chosen) < limit:
            chosen[d.meter_id] = "false alarm" + (" during a data fault" if d.in_data_fault else "")
    return list(chosen.items())


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}%"


def _hours(v: float | None) -> str:
    return "–" if v is None else f"{v / 3600:.1f} h"


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def render_report(score: QaScore, labels: Sequence[AnomalyEvent], panels: Sequence[MeterPanel], *,
                  missed_bars: Sequence[str] = (), title: str = "gridsight QA report", command: str = "") -> str:
    o = score.overall
    verdict = ("<p class=pass>PASS: every bar met</p>" if not missed_bars else
               "<p class=fail>FAIL: " + "; ".join(escape(m) for m in missed_bars) + "</p>")
    c = score.completeness
    tiles = [("recall", _pct(o.recall)), ("precision", _pct(o.precision)), ("F1", _pct(o.f1)),
             ("median delay", _hours(o.delay_median_s)),
             ("false alarms / meter / month", "–" if score.false_alarms_per_meter_month is None
              else f"{score.false_alarms_per_meter_month:.2f}"),
             ("completeness", "–" if c is None else _pct(c.ratio)),
             ("duplicates", "–" if c is None else str(c.duplicates))]
    tile_html = "".join(f"<div class=tile><div class=v>{v}</div><div class=k>{escape(k)}</div></div>" for k, v in tiles)
    rows = []
    for k, ks in sorted(score.kinds.items()):
        rows.append(f"<tr><td><span class=sw style='background:{KIND_COLOURS[k]}'></span>{escape(k)}</td>"
                    f"<td>{ks.events}</td><td>{ks.detected}</td><td>{_pct(ks.recall)}</td><td>{_pct(ks.precision)}</td>"
                    f"<td>{_pct(ks.f1)}</td><td>{_hours(ks.delay_median_s)}</td><td>{_hours(ks.delay_p90_s)}</td></tr>")
    rows.append(f"<tr class=total><td>all consumption anomalies</td><td>{o.events}</td><td>{o.detected}</td>"
                f"<td>{_pct(o.recall)}</td><td>{_pct(o.precision)}</td><td>{_pct(o.f1)}</td>"
                f"<td>{_hours(o.delay_median_s)}</td><td>{_hours(o.delay_p90_s)}</td></tr>")
    kinds = sorted(score.kinds)
    faults = [e for e in labels if e.kind not in CONSUMPTION_KINDS and e.end > score.span_start
              and e.start < score.span_end]
    confusion = stacked_bars(
        kinds + ["no event"],
        [("detected", [score.kinds[k].detected for k in kinds] + [0], "#59a14f"),
         ("missed", [score.kinds[k].events - score.kinds[k].detected for k in kinds] + [0], "#e15759"),
         ("false alarm", [0] * len(kinds) + [score.false_alarms - score.false_alarms_in_data_faults], "#f28e2b"),
         ("false alarm in a data fault", [0] * len(kinds) + [score.false_alarms_in_data_faults], "#edc948")],
        title="Confusion by kind: labelled events detected or missed, and alarms with no event")
    delays = histogram([d / 3600 for d in o.delays_s], x_label="hours from event start to first flagged interval end",
                       title="Detection delay")
    panel_html = []
    for p in panels:
        spans = [(e.start, e.end, KIND_COLOURS[e.kind], f"{e.kind} {_iso(e.start)} → {_iso(e.end)}") for e in p.events]
        legend = ", ".join(sorted({e.kind for e in p.events})) or "no injected events"
        panel_html.append(
            "<figure>" + time_series(p.interval_start, p.kwh, spans=spans, markers=p.anomalous,
                                     y_label="kWh per interval",
                                     title=f"{p.meter_id} · {p.note} · shaded: {legend} · red dots: flagged")
            + "</figure>")
    fault_counts = {}
    for e in faults:
        fault_counts[e.kind] = fault_counts.get(e.kind, 0) + 1
    fault_line = ", ".join(f"{k}: {n}" for k, n in sorted(fault_counts.items())) or "none"
    completeness_html = "<p>No run manifest given, so completeness was not measured.</p>" if c is None else (
        f"<p>{c.stored:,} of {c.produced:,} readings the meters handed over are stored "
        f"({_pct(c.ratio)}); {c.stored_rows:,} rows in total, {c.duplicates:,} duplicates. "
        + (f"Most missing: {escape(', '.join(f'{m} ({n})' for m, n in sorted(c.missing_by_meter.items(), key=lambda kv: -kv[1])[:5]))}."
           if c.missing_by_meter else "Nothing missing.") + "</p>")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>
<style>
body{{font-family:system-ui,sans-serif;margin:24px auto;max-width:900px;color:#222}}
h1{{font-size:22px;margin-bottom:4px}} h2{{font-size:16px;margin-top:28px}}
.sub{{color:#666;margin-top:0}} .pass{{color:#1a7f37;font-weight:600}} .fail{{color:#b42318;font-weight:600}}
.tiles{{display:flex;flex-wrap:wrap;gap:10px}} .tile{{border:1px solid #ddd;border-radius:6px;padding:8px 12px;min-width:95px}}
.tile .v{{font-size:20px;font-weight:600}} .tile .k{{color:#666;font-size:12px}}
table{{border-collapse:collapse;width:100%;font-size:13px}} td,th{{border-bottom:1px solid #eee;padding:4px 6px;text-align:right}}
td:first-child,th:first-child{{text-align:left}} tr.total td{{font-weight:600;border-top:2px solid #ccc}}
.sw{{display:inline-block;width:10px;height:10px;margin-right:6px;border-radius:2px}}
figure{{margin:10px 0}} code{{background:#f5f5f5;padding:1px 4px}}
</style></head><body>
<h1>{escape(title)}</h1>
<p class=sub>{_iso(score.span_start)} → {_iso(score.span_end)} · {score.meters} meters ·
{len(score.detections)} detections · data faults injected: {escape(fault_line)}</p>
{verdict}
<div class=tiles>{tile_html}</div>
<h2>Scores by anomaly kind</h2>
<table><tr><th>kind</th><th>events</th><th>detected</th><th>recall</th><th>precision</th><th>F1</th>
<th>median delay</th><th>p90 delay</th></tr>{''.join(rows)}</table>
<h2>Confusion by kind</h2>{confusion}
<h2>Detection delay</h2>{delays}
<h2>Completeness</h2>{completeness_html}
<h2>Meters</h2>{''.join(panel_html) or '<p>No meters to show.</p>'}
<p class=sub>Per-kind precision is n/a when the run raised any false alarm: a false alarm belongs to no kind.
{('Produced by <code>' + escape(command) + '</code>.') if command else ''}</p>
</body></html>
"""
