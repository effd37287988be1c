"""The QA report: one self-contained HTML page a person would rather look at than read.

It shows the gate verdict first, then per-kind scores (precision per kind exact or "n/a"), a
timeline of every injected delivery fault and labelled event on one time axis, tables per
region and per gateway, the confusion by kind, the detection-delay distribution, and a few
meters' load with the injected events shaded and the model's flags marked; for a voltage kind
(voltage sag, phase loss) the meter's voltage and each phase's are drawn as well. Charts are
inline SVG (:mod:`firmware_sim.svg_plots`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from html import escape
from typing import Sequence

import numpy as np

from firmware_sim.anomalies import ALL_KINDS, CONSUMPTION_KINDS, AnomalyEvent
from firmware_sim.qa_score import QaScore
from firmware_sim.svg_plots import PALETTE, histogram, multi_series, stacked_bars, time_series, timeline

__all__ = ["MeterPanel", "VoltageTrace", "FaultSpan", "render_report", "pick_meters", "fault_spans", "report_context",
           "VOLTAGE_KINDS", "breakdown"]

KIND_COLOURS = {k: PALETTE[i % len(PALETTE)] for i, k in enumerate(ALL_KINDS)}
VOLTAGE_KINDS = frozenset({"voltage_sag", "phase_loss"})
_FAULT_COLOURS = {"broker_outage": "#b42318", "partition": "#e15759", "power_cycle": "#7f3c8d",
                  "collector_restart": "#11a579", "clock_jump": "#3969ac", "model_rollout": "#f2b701"}
_PHASE_COLOURS = (("voltage_v", "single / L1 as sent", "#4e79a7"), ("voltage_l1_v", "L1", "#e15759"),
                  ("voltage_l2_v", "L2", "#59a14f"), ("voltage_l3_v", "L3", "#b07aa1"))


@dataclass(frozen=True)
class VoltageTrace:
    """Mean voltage per interval of one meter: ``volts`` maps voltage_v, voltage_l1_v.. to arrays."""

    ts: np.ndarray
    volts: dict[str, np.ndarray]


@dataclass(frozen=True)
class FaultSpan:
    """One injected delivery fault: [start, end) on the simulated clock (start == end: an instant)."""

    action: str
    start: float
    end: float
    gateways: tuple[str, ...] | None = None    # None: every gateway
    detail: str = ""


def report_context(store, score: QaScore, labels: Sequence[AnomalyEvent], manifest_path=None,
                   limit: int = 6) -> dict:
    """Everything :func:`render_report` needs beyond the score, read from the store and the manifest:
    meter panels (with voltage traces for voltage kinds), faults, and meter -> region / gateway."""
    from firmware_sim.fleet_model import read_manifest

    panels = []
    for meter_id, note in pick_meters(score, labels, limit):
        ts, kwh, flagged = store.meter_intervals(meter_id, score.span_start, score.span_end)
        events = tuple(e for e in labels if e.meter_id == meter_id)
        voltage = None
        if any(e.kind in VOLTAGE_KINDS for e in events):
            vts, volts = store.meter_voltages(meter_id, score.span_start, score.span_end)
            voltage = VoltageTrace(vts, volts)
        panels.append(MeterPanel(meter_id, ts, kwh, flagged, events, note, voltage))
    out: dict = {"panels": panels}
    if manifest_path:
        fleet, _, _, body = read_manifest(manifest_path)
        out["faults"] = fault_spans(body)
        out["regions"] = {m.meter_id: g.region for g in fleet.gateway_specs() for m in g.meters}
        out["gateways"] = {m.meter_id: g.gateway_id for g in fleet.gateway_specs() for m in g.meters}
    return out


def fault_spans(manifest: dict) -> list[FaultSpan]:
    """The delivery faults a fleet run wrote into its manifest (``fault_events``)."""
    out = []
    for e in manifest.get("fault_events") or []:
        detail = f"{e['jump_s']:+g} s" if e.get("jump_s") else ""
        out.append(FaultSpan(e["action"], float(e["start"]), float(e["end"]),
                             tuple(e["gateways"]) if e.get("gateways") is not None else None, detail))
    return out


@dataclass(frozen=True)
class MeterPanel:
    meter_id: str
    interval_start: np.ndarray
    kwh: np.ndarray
    anomalous: np.ndarray
    events: tuple[AnomalyEvent, ...]
    note: str = ""
    voltage: VoltageTrace | None = None   # for meters with a voltage kind


def breakdown(score: QaScore, labels: Sequence[AnomalyEvent], group_of: dict[str, str]) -> list[dict]:
    """Per group (a meter's region or gateway): events, detected, recall, detections, false alarms, precision."""
    groups: dict[str, dict] = {}

    def row(meter: str) -> dict:
        g = group_of.get(meter, "unknown")
        return groups.setdefault(g, {"group": g, "meters": set(), "events": 0, "detected": 0, "detections": 0,
                                     "false_alarms": 0})
    missed = {(e.meter_id, e.start, e.kind) for e in score.missed_events}
    for e in labels:
        if e.kind in CONSUMPTION_KINDS and e.end > score.span_start and e.start < score.span_end:
            r = row(e.meter_id)
            r["events"] += 1
            r["detected"] += (e.meter_id, e.start, e.kind) not in missed
    for d in score.detections:
        r = row(d.meter_id)
        r["detections"] += 1
        r["false_alarms"] += d.kind is None
    for meter, g in group_of.items():
        row(meter)["meters"].add(meter)
    out = []
    for g in sorted(groups):
        r = groups[g]
        r["meters"] = len(r["meters"])
        r["recall"] = r["detected"] / r["events"] if r["events"] else None
        r["precision"] = (r["detections"] - r["false_alarms"]) / r["detections"] if r["detections"] else None
        out.append(r)
    return out


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


def _timeline(score: QaScore, labels: Sequence[AnomalyEvent], faults: Sequence[FaultSpan]) -> str:
    rows = []
    for action in sorted({f.action for f in faults}):
        items = [(f.start, f.end, f"{action} {f.detail} {_iso(f.start)} → {_iso(f.end)} on "
                  f"{'every gateway' if f.gateways is None else ', '.join(f.gateways)}") for f in faults
                 if f.action == action]
        rows.append((f"{action.replace('_', ' ')} ({len(items)})", items, _FAULT_COLOURS.get(action, "#555")))
    shown = [e for e in labels if e.end > score.span_start and e.start < score.span_end]
    for kind in [k for k in ALL_KINDS if any(e.kind == k for e in shown)]:
        items = [(e.start, e.end, f"{kind} on {e.meter_id} {_iso(e.start)} → {_iso(e.end)}")
                 for e in shown if e.kind == kind]
        prefix = "event" if kind in CONSUMPTION_KINDS else "data fault"
        rows.append((f"{prefix}: {kind} ({len(items)})", items, KIND_COLOURS[kind]))
    if not rows:
        return "<p>No delivery fault injected and no labelled event in the scored span.</p>"
    t0 = min([score.span_start] + [f.start for f in faults])
    t1 = max([score.span_end] + [f.end for f in faults])
    note = "" if faults else ("<p class=sub>No delivery faults listed: the run manifest has no "
                              "<code>fault_events</code> (give <code>--manifest</code> of a fleet run).</p>")
    return timeline(rows, t0, t1, title="Delivery faults (top) and labelled events, simulated UTC time") + note


def _breakdown_table(rows: list[dict], name: str) -> str:
    body = "".join(f"<tr><td>{escape(r['group'])}</td><td>{r['meters']}</td><td>{r['events']}</td>"
                   f"<td>{r['detected']}</td><td>{_pct(r['recall'])}</td><td>{r['detections']}</td>"
                   f"<td>{r['false_alarms']}</td><td>{_pct(r['precision'])}</td></tr>" for r in rows)
    return (f"<table class=breakdown data-by='{name}'><tr><th>{name}</th><th>meters</th><th>events</th>"
            f"<th>detected</th><th>recall</th><th>detections</th><th>false alarms</th><th>precision</th></tr>"
            f"{body}</table>")


def _voltage_panel(p: MeterPanel) -> str:
    v = p.voltage
    if v is None:
        return ""
    series = [(label, v.volts.get(name, np.zeros(0)), colour) for name, label, colour in _PHASE_COLOURS
              if name in v.volts]
    spans = [(e.start, e.end, KIND_COLOURS[e.kind], f"{e.kind} {_iso(e.start)} → {_iso(e.end)}") for e in p.events
             if e.kind in VOLTAGE_KINDS]
    return multi_series(v.ts, series, spans=spans, y_label="volts (mean per 15 min)", y_floor=0.0,
                        title=f"{p.meter_id} · voltage per phase · shaded: "
                              f"{', '.join(sorted({e.kind for e in p.events if e.kind in VOLTAGE_KINDS}))}")


def render_report(score: QaScore, labels: Sequence[AnomalyEvent], panels: Sequence[MeterPanel] = (), *,
                  missed_bars: Sequence[str] = (), title: str = "gridsight QA report", command: str = "",
                  faults: Sequence[FaultSpan] = (), regions: dict[str, str] | None = None,
                  gateways: dict[str, str] | None = None) -> str:
    """The whole report. ``regions``/``gateways`` map meter ids to their region/gateway (from the manifest)."""
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
    data_faults = [e for e in labels if e.kind not in CONSUMPTION_KINDS and e.end > score.span_start
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
            + _voltage_panel(p) + "</figure>")
    fault_counts = {}
    for e in data_faults:
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
<h2>Fault timeline</h2>{_timeline(score, labels, faults)}
<h2>By region</h2>{_breakdown_table(breakdown(score, labels, regions), "region") if regions else
                     "<p>No run manifest given: regions unknown.</p>"}
<h2>By gateway</h2>{_breakdown_table(breakdown(score, labels, gateways), "gateway") if gateways else
                      "<p>No run manifest given: gateways unknown.</p>"}
<h2>Confusion by kind</h2>{confusion}
<h2>Detection delay</h2>{delays}
<h2>Completeness</h2>{completeness_html}
<h2>Meters</h2>{''.join(panel_html) or '<p>No meters to show.</p>'}
<p class=sub>Per-kind precision is exact, or n/a when the run raised any false alarm: a false alarm belongs to
no kind, so it cannot be charged to one. Overall precision counts every false alarm.
{('Produced by <code>' + escape(command) + '</code>.') if command else ''}</p>
</body></html>
"""
