"""The collector's built-in dashboard page: three charts as inline SVG, standard library only.

It shows what the Tableau workbooks show, from the same ``tableau`` views, for people without
Tableau and for the README's screenshots. The map is drawn from the sites' own coordinates
(an equirectangular projection around the fleet) so it needs no tile server and works offline.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from html import escape
from typing import Sequence

__all__ = ["SitePoint", "HeatCell", "ForecastPoint", "map_svg", "heatmap_svg", "forecast_svg", "render_page"]

WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


@dataclass(frozen=True, slots=True)
class SitePoint:
    site_id: str
    latitude: float
    longitude: float
    region: str
    area_type: str
    min_score: float | None
    flags: int
    intervals: int


@dataclass(frozen=True, slots=True)
class HeatCell:
    day_of_week: int   # 1 = Monday
    hour_of_day: int
    kwh_per_meter_hour: float


@dataclass(frozen=True, slots=True)
class ForecastPoint:
    period_start: datetime
    forecast_kwh: float
    lower_kwh: float | None
    upper_kwh: float | None
    actual_kwh: float | None


def _score_colour(score: float | None, lo: float, hi: float) -> str:
    """Red for the most anomalous (lowest) score, through amber, to green for the most normal."""
    if score is None:
        return "#9aa0a6"
    t = 0.5 if hi <= lo else min(1.0, max(0.0, (score - lo) / (hi - lo)))
    stops = ((0.0, (200, 30, 45)), (0.5, (240, 170, 40)), (1.0, (40, 150, 90)))
    for (t0, c0), (t1, c1) in zip(stops, stops[1:]):
        if t <= t1:
            f = (t - t0) / (t1 - t0)
            return "#%02x%02x%02x" % tuple(round(a + (b - a) * f) for a, b in zip(c0, c1))
    return "#289a5a"


def _heat_colour(value: float, lo: float, hi: float) -> str:
    t = 0.0 if hi <= lo else (value - lo) / (hi - lo)
    light, dark = (239, 246, 255), (23, 64, 139)
    return "#%02x%02x%02x" % tuple(round(a + (b - a) * t) for a, b in zip(light, dark))


def map_svg(sites: Sequence[SitePoint], width: int = 560, height: int = 420) -> str:
    """Sites at their coordinates, coloured by their lowest score; flagged sites drawn larger."""
    pad = 48
    if not sites:
        return _empty(width, height, "No scored intervals in this period")
    lats = [s.latitude for s in sites]
    lons = [s.longitude for s in sites]
    lat0 = (min(lats) + max(lats)) / 2
    kx = math.cos(math.radians(lat0))
    span_x = max((max(lons) - min(lons)) * kx, 1e-3)
    span_y = max(max(lats) - min(lats), 1e-3)
    scale = min((width - 2 * pad) / span_x, (height - 2 * pad) / span_y)
    ox = (width - span_x * scale) / 2
    oy = (height - span_y * scale) / 2

    def xy(lat: float, lon: float) -> tuple[float, float]:
        return ox + (lon - min(lons)) * kx * scale, height - (oy + (lat - min(lats)) * scale)

    scores = [s.min_score for s in sites if s.min_score is not None]
    lo, hi = (min(scores), max(scores)) if scores else (0.0, 1.0)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" id="anomaly-map" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="Anomaly map">',
             f'<rect width="{width}" height="{height}" fill="#f4f1ea"/>']
    step = _nice_step(max(max(lats) - min(lats), (max(lons) - min(lons))) / 4)
    for i in range(-1, 7):  # a graticule so distances read as distances
        lat = math.floor(min(lats) / step) * step + i * step
        lon = math.floor(min(lons) / step) * step + i * step
        x, _ = xy(lat0, lon)
        _, y = xy(lat, min(lons))
        if 0 <= x <= width - 40:
            parts.append(f'<line x1="{x:.1f}" y1="0" x2="{x:.1f}" y2="{height}" stroke="#ddd6c8"/>'
                         f'<text x="{x + 3:.1f}" y="{height - 4}" font-size="10" fill="#8b8272">{lon:.2f}°</text>')
        if 14 <= y <= height - 16:
            parts.append(f'<line x1="0" y1="{y:.1f}" x2="{width}" y2="{y:.1f}" stroke="#ddd6c8"/>'
                         f'<text x="3" y="{y - 3:.1f}" font-size="10" fill="#8b8272">{lat:.2f}°</text>')
    regions: dict[str, list[SitePoint]] = {}
    for s in sites:
        regions.setdefault(s.region, []).append(s)
    for name, members in sorted(regions.items()):
        x, y = xy(sum(m.latitude for m in members) / len(members), sum(m.longitude for m in members) / len(members))
        x = min(max(x, 70.0), width - 70.0)  # keep the label inside the frame
        parts.append(f'<text x="{x:.1f}" y="{y - 16:.1f}" font-size="13" font-weight="600" fill="#5f5646" '
                     f'text-anchor="middle" class="region-label">{escape(name)} ({escape(members[0].area_type)})</text>')
    for s in sorted(sites, key=lambda s: (s.flags > 0, -(s.min_score or 0))):
        x, y = xy(s.latitude, s.longitude)
        r = 8 if s.flags else 5
        parts.append(f'<circle class="site" data-site="{escape(s.site_id)}" data-flags="{s.flags}" cx="{x:.1f}" '
                     f'cy="{y:.1f}" r="{r}" fill="{_score_colour(s.min_score, lo, hi)}" stroke="#333" '
                     f'stroke-width="0.8"><title>{escape(s.site_id)}: lowest score '
                     f'{"n/a" if s.min_score is None else f"{s.min_score:.3f}"}, {s.flags} flagged of '
                     f'{s.intervals} intervals</title></circle>')
    parts.append("</svg>")
    return "".join(parts)


def _nice_step(raw: float) -> float:
    if raw <= 0:
        return 0.1
    exp = 10 ** math.floor(math.log10(raw))
    return next(m * exp for m in (1, 2, 5, 10) if m * exp >= raw)


def heatmap_svg(cells: Sequence[HeatCell], width: int = 560, height: int = 250) -> str:
    """Average kWh per meter-hour: hour of day across, weekday down."""
    if not cells:
        return _empty(width, height, "No consumption in this period")
    left, top = 40, 22
    cw = (width - left - 10) / 24
    ch = (height - top - 10) / 7
    values = [c.kwh_per_meter_hour for c in cells]
    lo, hi = min(values), max(values)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" id="consumption-heatmap" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="Consumption heatmap">']
    for h in range(0, 24, 3):
        parts.append(f'<text x="{left + h * cw + 2:.1f}" y="{top - 6}" font-size="10" fill="#555">{h:02d}h</text>')
    for d, name in enumerate(WEEKDAYS):
        parts.append(f'<text x="4" y="{top + d * ch + ch * 0.65:.1f}" font-size="11" fill="#555">{name}</text>')
    for c in cells:
        x = left + c.hour_of_day * cw
        y = top + (c.day_of_week - 1) * ch
        parts.append(f'<rect class="cell" data-dow="{c.day_of_week}" data-hour="{c.hour_of_day}" x="{x:.1f}" '
                     f'y="{y:.1f}" width="{cw - 1:.1f}" height="{ch - 1:.1f}" '
                     f'fill="{_heat_colour(c.kwh_per_meter_hour, lo, hi)}"><title>{WEEKDAYS[c.day_of_week - 1]} '
                     f'{c.hour_of_day:02d}:00 {c.kwh_per_meter_hour:.3f} kWh per meter-hour</title></rect>')
    parts.append("</svg>")
    return "".join(parts)


def forecast_svg(points: Sequence[ForecastPoint], width: int = 1140, height: int = 280) -> str:
    """Forecast line inside its prediction band, with the measured energy on top."""
    if not points:
        return _empty(width, height, "No forecast stored yet: run 'gridsight collector forecast'")
    left, right, top, bottom = 56, 12, 12, 28
    t0 = points[0].period_start.timestamp()
    t1 = max(points[-1].period_start.timestamp(), t0 + 1)
    vals = [v for p in points for v in (p.forecast_kwh, p.lower_kwh, p.upper_kwh, p.actual_kwh) if v is not None]
    lo, hi = min(0.0, min(vals)), max(vals) * 1.05 or 1.0

    def x(p: ForecastPoint) -> float:
        return left + (p.period_start.timestamp() - t0) / (t1 - t0) * (width - left - right)

    def y(v: float) -> float:
        return top + (1 - (v - lo) / (hi - lo)) * (height - top - bottom)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" id="forecast-chart" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="Forecast vs actual">']
    for i in range(5):
        v = lo + (hi - lo) * i / 4
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#eee"/>'
                     f'<text x="{left - 6}" y="{y(v) + 4:.1f}" font-size="10" fill="#666" text-anchor="end">'
                     f'{v:,.0f}</text>')
    days = sorted({p.period_start.date() for p in points})
    for d in days:
        first = next(p for p in points if p.period_start.date() == d)
        parts.append(f'<text x="{x(first):.1f}" y="{height - 8}" font-size="10" fill="#666">{d:%a %d %b}</text>')
    band = [p for p in points if p.lower_kwh is not None and p.upper_kwh is not None]
    if band:
        path = " ".join(f"{x(p):.1f},{y(p.upper_kwh):.1f}" for p in band)
        path += " " + " ".join(f"{x(p):.1f},{y(p.lower_kwh):.1f}" for p in reversed(band))
        parts.append(f'<polygon id="prediction-interval" points="{path}" fill="#9ecae1" fill-opacity="0.45"/>')
    parts.append(f'<polyline id="forecast-line" fill="none" stroke="#2171b5" stroke-width="2" stroke-dasharray="6 3" '
                 f'points="{" ".join(f"{x(p):.1f},{y(p.forecast_kwh):.1f}" for p in points)}"/>')
    actual = [p for p in points if p.actual_kwh is not None]
    if actual:
        parts.append(f'<polyline id="actual-line" fill="none" stroke="#d94801" stroke-width="2" '
                     f'points="{" ".join(f"{x(p):.1f},{y(p.actual_kwh):.1f}" for p in actual)}"/>')
    parts.append("</svg>")
    return "".join(parts)


def _empty(width: int, height: int, message: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" class="empty">'
            f'<rect width="{width}" height="{height}" fill="#fafafa" stroke="#ddd"/>'
            f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle" font-size="14" fill="#777">'
            f'{escape(message)}</text></svg>')


_CSS = """
body { font-family: 'Liberation Sans', Arial, sans-serif; margin: 0; background: #fff; color: #222; }
header { background: #17408b; color: #fff; padding: 10px 20px; }
header h1 { font-size: 20px; margin: 0; } header p { margin: 2px 0 0; font-size: 12px; opacity: .85; }
main { display: grid; grid-template-columns: 580px 580px; gap: 12px 16px; padding: 14px 20px; }
section { border: 1px solid #e3e3e3; border-radius: 6px; padding: 8px 10px; }
section.wide { grid-column: 1 / span 2; }
h2 { font-size: 14px; margin: 0 0 6px; } .legend { font-size: 11px; color: #555; margin-top: 4px; }
.swatch { display: inline-block; width: 10px; height: 10px; margin: 0 3px 0 10px; vertical-align: middle; }
"""


def render_page(title: str, subtitle: str, sites: Sequence[SitePoint], cells: Sequence[HeatCell],
                forecast: Sequence[ForecastPoint], forecast_scope: str, heatmap_days: int) -> str:
    """The whole page; every number on it comes from the ``tableau`` views."""
    flagged = sum(1 for s in sites if s.flags)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><link rel="icon" href="data:,"><title>{escape(title)}</title><style>{_CSS}</style></head>
<body><header><h1>{escape(title)}</h1><p>{escape(subtitle)}</p></header>
<main>
<section id="map-panel"><h2>Anomaly map — {len(sites)} sites, {flagged} with flagged intervals</h2>
{map_svg(sites)}
<div class="legend">Colour: lowest anomaly score of the site (lower = more anomalous)
<span class="swatch" style="background:#c81e2d"></span>anomalous<span class="swatch" style="background:#f0aa28"></span>
borderline<span class="swatch" style="background:#28965a"></span>normal; larger dots have flags</div></section>
<section id="heatmap-panel"><h2>Consumption pattern — kWh per meter-hour by weekday and hour (UTC),
last {heatmap_days} days</h2>
{heatmap_svg(cells)}
<div class="legend">Darker is more energy. Same data as the Tableau “Consumption patterns” workbook.</div></section>
<section id="forecast-panel" class="wide"><h2>Forecast vs actual — {escape(forecast_scope)}</h2>
{forecast_svg(forecast)}
<div class="legend"><span class="swatch" style="background:#d94801"></span>actual
<span class="swatch" style="background:#2171b5"></span>forecast
<span class="swatch" style="background:#9ecae1"></span>prediction interval</div></section>
</main></body></html>"""
