"""The collector's built-in dashboard page: a map, a heatmap and a forecast chart as inline SVG.

It shows what the Tableau workbooks show, from the same ``tableau`` views, for people without
Tableau. Everything is drawn here, standard library and numpy only, and nothing is fetched:

- **map**: land, lakes and borders from the packaged basemap (:mod:`collector.api.basemap`),
  each region as the padded outline of its sites, and each site coloured by its strongest score
  *against the model's threshold* (flagged, borderline, normal: the same classes whatever the
  other sites score) and sized by its number of flagged intervals on a fixed logarithmic scale.
  Sites closer than a dot's width are drawn as one cluster with their count. Policymakers get
  :func:`aggregate_map_svg` instead: one bubble per region, never a household.
- **heatmap**: kWh per meter-hour by weekday and hour, coloured between the 2nd and 98th
  percentile (one outlier cannot wash out the rest), with its numeric scale.
- **forecast**: kWh per hour with "nice" ticks, the interval clipped at 0 kWh.

Every chart has a ``viewBox`` and scales to its column, so the page works from 360 px wide.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from html import escape
from typing import Sequence

import numpy as np

__all__ = ["SitePoint", "RegionAggregate", "HeatCell", "ForecastPoint", "Severity", "severity", "map_svg",
           "aggregate_map_svg", "heatmap_svg", "forecast_svg", "render_page", "not_found_page",
           "BORDERLINE_MARGIN", "flag_radius", "map_section", "aggregate_section", "nice_ticks"]

WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
BORDERLINE_MARGIN = 0.02   # a score this close above the threshold is "borderline"
SEVERITY_COLOURS = {"flagged": "#c81e2d", "borderline": "#f0a020", "normal": "#2a9a5a", "unscored": "#9aa0a6"}
_REGION_COLOURS = ("#4e79a7", "#b07aa1", "#59a14f", "#9c755f", "#76b7b2", "#edc948", "#ff9da7", "#bab0ac")
_WATER, _LAND, _LAKE = "#cfe2ef", "#f4f1e8", "#cfe2ef"
_FONT = "font-family=\"'Liberation Sans', Arial, sans-serif\""


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
class RegionAggregate:
    """One region's totals for the policymakers' map: no site, no score of a single household."""

    region: str
    area_type: str
    latitude: float        # centroid of the region's sites
    longitude: float
    meters: int
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


Severity = str   # "flagged" | "borderline" | "normal" | "unscored"


def severity(min_score: float | None, flags: int, threshold: float | None) -> Severity:
    """A site's class against the model's threshold (sklearn convention: flagged when score < threshold)."""
    if flags > 0 or (min_score is not None and threshold is not None and min_score < threshold):
        return "flagged"
    if min_score is None:
        return "unscored"
    if threshold is not None and min_score < threshold + BORDERLINE_MARGIN:
        return "borderline"
    return "normal"


def flag_radius(flags: int) -> float:
    """Dot radius in map units: a fixed log scale, so 5 and 1,000 flags look different on every page."""
    return 4.0 + 4.0 * math.log10(1 + max(flags, 0))


def _nice_step(raw: float) -> float:
    if raw <= 0 or not math.isfinite(raw):
        return 1.0
    exp = 10 ** math.floor(math.log10(raw))
    return next(m * exp for m in (1, 2, 2.5, 5, 10) if m * exp >= raw * (1 - 1e-9))


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values covering [lo, hi] (about ``count`` of them)."""
    if hi <= lo:
        hi = lo + 1.0
    step = _nice_step((hi - lo) / count)
    first = math.floor(lo / step + 1e-9) * step
    ticks = []
    v = first
    while v < hi + step * 0.999:
        ticks.append(round(v, 10))
        v += step
    return ticks


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.0f}" if v == int(v) else f"{v:.1f}"
    return f"{v:.2f}".rstrip("0").rstrip(".") if abs(v) >= 0.01 else f"{v:.3g}"


# ---------------------------------------------------------------- map

class _Projection:
    """Equirectangular around the view's middle latitude, fitted into width x height."""

    def __init__(self, lons: Sequence[float], lats: Sequence[float], width: float, height: float,
                 pad: float = 0.18, min_span: float = 0.6) -> None:
        lat_mid = (min(lats) + max(lats)) / 2
        self.kx = math.cos(math.radians(lat_mid))
        span_x = max((max(lons) - min(lons)) * self.kx, min_span * self.kx)
        span_y = max(max(lats) - min(lats), min_span)
        span_x, span_y = span_x * (1 + 2 * pad), span_y * (1 + 2 * pad)
        # widen the shorter side so the map fills the frame at one scale
        if span_x / span_y < width / height:
            span_x = span_y * width / height
        else:
            span_y = span_x * height / width
        cx = (min(lons) + max(lons)) / 2 * self.kx
        cy = (min(lats) + max(lats)) / 2
        self.x0, self.y1 = cx - span_x / 2, cy + span_y / 2
        self.scale = width / span_x
        self.width, self.height = width, height
        self.lon0, self.lon1 = self.x0 / self.kx, (self.x0 + span_x) / self.kx
        self.lat0, self.lat1 = self.y1 - span_y, self.y1

    def xy(self, lon: float, lat: float) -> tuple[float, float]:
        return (lon * self.kx - self.x0) * self.scale, (self.y1 - lat) * self.scale

    def path(self, pts: np.ndarray, closed: bool) -> str:
        """An SVG path of lon/lat points, clamped to a margin around the frame (what lies beyond is hidden)."""
        x = (pts[:, 0] * self.kx - self.x0) * self.scale
        y = (self.y1 - pts[:, 1]) * self.scale
        m = max(self.width, self.height)
        x, y = np.clip(x, -m, self.width + m), np.clip(y, -m, self.height + m)
        xy = np.round(np.column_stack([x, y]), 1)
        keep = np.ones(len(xy), dtype=bool)
        keep[1:] = np.any(np.diff(xy, axis=0) != 0, axis=1)
        xy = xy[keep]
        if len(xy) < 2:
            return ""
        body = " ".join(f"{a:g},{b:g}" for a, b in xy)
        return f"M{body}{'Z' if closed else ''}"


def _basemap(proj: _Projection) -> list[str]:
    from collector.api.basemap import features_in

    layers = features_in(proj.lon0, proj.lat0, proj.lon1, proj.lat1)
    parts = [f'<rect width="{proj.width}" height="{proj.height}" fill="{_WATER}"/>']
    land = " ".join(p for p in (proj.path(r, True) for r in layers["land"]) if p)
    lakes = " ".join(p for p in (proj.path(r, True) for r in layers["lakes"]) if p)
    borders = " ".join(p for p in (proj.path(r, False) for r in layers["borders"]) if p)
    states = " ".join(p for p in (proj.path(r, False) for r in layers["states"]) if p)
    parts.append(f'<g class="basemap"><path d="{land}" fill="{_LAND}" stroke="#a9b8c4" stroke-width="0.8"/>'
                 f'<path d="{lakes}" fill="{_LAKE}" stroke="#a9b8c4" stroke-width="0.5"/>'
                 f'<path d="{states}" fill="none" stroke="#b9b0a0" stroke-width="0.9" stroke-dasharray="4 3"/>'
                 f'<path d="{borders}" fill="none" stroke="#8d8577" stroke-width="1.3"/></g>')
    return parts


def _hull(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Convex hull (monotone chain) of screen points."""
    pts = sorted(set(points))
    if len(pts) <= 2:
        return pts

    def cross(o, a, b):
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower, upper = [], []
    for p in pts:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    for p in reversed(pts):
        while len(upper) >= 2 and cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    return lower[:-1] + upper[:-1]


def _scale_bar(proj: _Projection) -> str:
    km_per_px = 111.32 / proj.scale   # one degree of latitude is 111.32 km
    km = _nice_step(km_per_px * proj.width / 5)
    px = km / km_per_px
    x, y = 12, proj.height - 14
    return (f'<g class="scale-bar"><rect x="{x - 4}" y="{y - 16}" width="{px + 50:.0f}" height="24" fill="#fff" '
            f'fill-opacity="0.75" rx="3"/><path d="M{x},{y - 4} v4 h{px:.1f} v-4" fill="none" stroke="#333" '
            f'stroke-width="1.5"/><text x="{x + px + 6:.1f}" y="{y + 1}" font-size="12" fill="#333">'
            f'{_fmt(km)} km</text></g>')


def _label(x: float, y: float, text: str, cls: str, size: int = 13) -> str:
    # a white halo keeps the label readable over dots and borders
    return (f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" font-weight="700" fill="#3d3629" '
            f'stroke="#fff" stroke-width="3.5" paint-order="stroke" stroke-linejoin="round" text-anchor="middle" '
            f'class="{cls}">{escape(text)}</text>')


def map_svg(sites: Sequence[SitePoint], threshold: float | None, width: int = 640, height: int = 480) -> str:
    """Sites over the basemap inside their regions' outlines, coloured by severity, sized by flags, clustered."""
    if not sites:
        return _empty(width, height, "No scored intervals in this period")
    proj = _Projection([s.longitude for s in sites], [s.latitude for s in sites], width, height)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" id="anomaly-map" viewBox="0 0 {width} {height}" '
             f'preserveAspectRatio="xMidYMid meet" role="img" aria-label="Anomaly map" {_FONT}>',
             '<defs><clipPath id="map-frame"><rect width="100%" height="100%"/></clipPath></defs>',
             '<g clip-path="url(#map-frame)">']
    parts += _basemap(proj)
    regions: dict[str, list[SitePoint]] = {}
    for s in sites:
        regions.setdefault(s.region, []).append(s)
    labels = []
    for i, (name, members) in enumerate(sorted(regions.items())):
        colour = _REGION_COLOURS[i % len(_REGION_COLOURS)]
        hull = _hull([proj.xy(m.longitude, m.latitude) for m in members])
        d = "M" + " L".join(f"{x:.1f},{y:.1f}" for x, y in hull) + ("Z" if len(hull) > 2 else "")
        if len(hull) == 1:
            d += f" L{hull[0][0] + 0.1:.1f},{hull[0][1]:.1f}"
        # a thick round stroke pads the outline by 22 px around the outermost sites
        parts.append(f'<g class="region" data-region="{escape(name)}" opacity="0.22"><path d="{d}" fill="{colour}" '
                     f'stroke="{colour}" stroke-width="44" stroke-linejoin="round" stroke-linecap="round"/></g>'
                     f'<path d="{d}" fill="none" stroke="{colour}" stroke-width="1.2" stroke-opacity="0.6" '
                     f'stroke-linejoin="round"/>')
        top = min(hull, key=lambda p: p[1])
        lx = min(max(sum(p[0] for p in hull) / len(hull), 80.0), width - 80.0)
        ly = min(max(top[1] - 30, 18.0), height - 8.0)
        labels.append(_label(lx, ly, f"{name} ({members[0].area_type})", "region-label"))
    parts += _clusters(sites, proj, threshold)
    parts += labels
    parts.append(_scale_bar(proj))
    parts.append("</g></svg>")
    return "".join(parts)


_RANK = {"flagged": 3, "borderline": 2, "normal": 1, "unscored": 0}


def _clusters(sites: Sequence[SitePoint], proj: _Projection, threshold: float | None) -> list[str]:
    """Greedy clustering in screen space: a site joins a cluster whose centre is within both dots' radii."""
    clusters: list[dict] = []
    for s in sorted(sites, key=lambda s: (-s.flags, s.site_id)):
        x, y = proj.xy(s.longitude, s.latitude)
        r = flag_radius(s.flags)
        for c in clusters:
            if math.hypot(c["x"] - x, c["y"] - y) < c["r"] + r - 2:
                c["members"].append(s)
                break
        else:
            clusters.append({"x": x, "y": y, "r": r, "members": [s]})
    out = []
    for c in sorted(clusters, key=lambda c: sum(m.flags for m in c["members"])):
        members = c["members"]
        flags = sum(m.flags for m in members)
        sev = max((severity(m.min_score, m.flags, threshold) for m in members), key=_RANK.__getitem__)
        colour = SEVERITY_COLOURS[sev]
        r = flag_radius(flags) if len(members) == 1 else max(flag_radius(flags), 8.0)
        if len(members) == 1:
            s = members[0]
            score = "n/a" if s.min_score is None else f"{s.min_score:.3f}"
            out.append(f'<circle class="site" data-site="{escape(s.site_id)}" data-flags="{s.flags}" '
                       f'data-severity="{sev}" cx="{c["x"]:.1f}" cy="{c["y"]:.1f}" r="{r:.1f}" fill="{colour}" '
                       f'stroke="#222" stroke-width="0.9"><title>{escape(s.site_id)} ({escape(s.region)}): {sev}, '
                       f'{s.flags} flagged of {s.intervals} intervals, strongest score {score}</title></circle>')
        else:
            ids = " ".join(escape(m.site_id) for m in members)
            out.append(f'<g class="cluster" data-sites="{ids}" data-flags="{flags}" data-severity="{sev}">'
                       f'<circle cx="{c["x"]:.1f}" cy="{c["y"]:.1f}" r="{r + 3:.1f}" fill="{colour}" '
                       f'stroke="#fff" stroke-width="2.5"/><circle cx="{c["x"]:.1f}" cy="{c["y"]:.1f}" '
                       f'r="{r + 3:.1f}" fill="none" stroke="#222" stroke-width="0.9"/>'
                       f'<text x="{c["x"]:.1f}" y="{c["y"] + 4:.1f}" font-size="11" font-weight="700" fill="#fff" '
                       f'text-anchor="middle">{len(members)}</text><title>{len(members)} sites, {flags} flagged '
                       f'intervals, worst {sev}: {ids}</title></g>')
    return out


def aggregate_map_svg(regions: Sequence[RegionAggregate], width: int = 640, height: int = 480) -> str:
    """Policymakers' map: one bubble per region at its sites' centroid, sized by flags, coloured by the
    share of flagged intervals. No site, score or position of a single household."""
    if not regions:
        return _empty(width, height, "No region with enough meters in this period")
    proj = _Projection([r.longitude for r in regions], [r.latitude for r in regions], width, height, pad=0.3,
                       min_span=1.0)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" id="anomaly-map" viewBox="0 0 {width} {height}" '
             f'preserveAspectRatio="xMidYMid meet" role="img" aria-label="Anomalies per region" {_FONT}>',
             '<defs><clipPath id="map-frame"><rect width="100%" height="100%"/></clipPath></defs>',
             '<g clip-path="url(#map-frame)">']
    parts += _basemap(proj)
    for r in sorted(regions, key=lambda r: -r.flags):
        x, y = proj.xy(r.longitude, r.latitude)
        share = r.flags / r.intervals if r.intervals else 0.0
        colour = _share_colour(share)
        rad = 6 + 2 * flag_radius(r.flags)
        parts.append(f'<circle class="region-aggregate" data-region="{escape(r.region)}" data-flags="{r.flags}" '
                     f'cx="{x:.1f}" cy="{y:.1f}" r="{rad:.1f}" fill="{colour}" fill-opacity="0.85" stroke="#222">'
                     f'<title>{escape(r.region)}: {r.meters} meters, {r.flags} flagged of {r.intervals:,} intervals '
                     f'({100 * share:.2f}%)</title></circle>')
        parts.append(_label(x, y - rad - 6, f"{r.region}: {r.flags} flags, {r.meters} meters", "region-label", 12))
    parts.append(_scale_bar(proj))
    parts.append("</g></svg>")
    return "".join(parts)


_SHARE_STOPS = ((0.0, (42, 154, 90)), (0.005, (240, 160, 32)), (0.02, (200, 30, 45)))


def _share_colour(share: float) -> str:
    """Green at no flags, amber at 0.5% of intervals flagged, red from 2%: a fixed scale."""
    if share >= _SHARE_STOPS[-1][0]:
        return "#%02x%02x%02x" % _SHARE_STOPS[-1][1]
    for (t0, c0), (t1, c1) in zip(_SHARE_STOPS, _SHARE_STOPS[1:]):
        if share <= t1:
            f = (share - t0) / (t1 - t0)
            return "#%02x%02x%02x" % tuple(round(a + (b - a) * f) for a, b in zip(c0, c1))
    return "#%02x%02x%02x" % _SHARE_STOPS[0][1]


def _map_legend(threshold: float | None) -> str:
    t = "unknown" if threshold is None else f"{threshold:.3f}"
    sev = "".join(f'<span class="swatch" style="background:{SEVERITY_COLOURS[k]}"></span>{label}'
                  for k, label in (("flagged", "flagged: an interval scored below the threshold"),
                                   ("borderline", f"borderline: strongest score within {BORDERLINE_MARGIN} above it"),
                                   ("normal", "normal"), ("unscored", "no score")))
    sizes = "".join(f'<svg width="{2 * flag_radius(n) + 4:.0f}" height="{2 * flag_radius(n) + 4:.0f}" '
                    f'class="size-key"><circle cx="{flag_radius(n) + 2:.1f}" cy="{flag_radius(n) + 2:.1f}" '
                    f'r="{flag_radius(n):.1f}" fill="#ccc" stroke="#222" stroke-width="0.9"/></svg>{label} '
                    for n, label in ((0, "0"), (10, "10"), (100, "100"), (1000, "1,000")))
    return (f'<div class="legend" id="map-legend"><div>Colour: the site\'s strongest (lowest) anomaly score against '
            f'the model threshold <b>{t}</b> (lower = more anomalous).</div><div>{sev}</div>'
            f'<div class="sizes">Size: flagged 15-minute intervals in the period {sizes}</div>'
            f'<div>A dot with a number is a cluster of that many nearby sites. Shaded outlines: regions. '
            f'Basemap: GSHHG coastlines and borders (offline).</div></div>')


def _aggregate_legend(min_meters: int, withheld: int) -> str:
    stops = "".join(f'<span class="swatch" style="background:{_share_colour(s)}"></span>{label}'
                    for s, label in ((0.0, "0%"), (0.005, "0.5%"), (0.02, "≥2% of intervals flagged")))
    note = f" {withheld} region(s) with fewer than {min_meters} meters are withheld." if withheld else ""
    return (f'<div class="legend" id="map-legend"><div>One bubble per region at the middle of its sites; size: '
            f'flagged 15-minute intervals, colour: their share. {stops}</div><div>Aggregates only: regions '
            f'need at least {min_meters} meters to be shown.{note}</div></div>')


# ---------------------------------------------------------------- heatmap

_HEAT_LIGHT, _HEAT_DARK = (239, 246, 255), (23, 64, 139)


def _heat_colour(value: float, lo: float, hi: float) -> str:
    t = 0.0 if hi <= lo else min(1.0, max(0.0, (value - lo) / (hi - lo)))
    return "#%02x%02x%02x" % tuple(round(a + (b - a) * t) for a, b in zip(_HEAT_LIGHT, _HEAT_DARK))


def heatmap_svg(cells: Sequence[HeatCell], width: int = 640, height: int = 300) -> str:
    """Average kWh per meter-hour: hour of day across, weekday down, with a numeric colour scale.

    Colours run between the 2nd and 98th percentile of the cells, so one outlier cannot wash out
    the rest; cells beyond are drawn at the end colour and the scale says so."""
    if not cells:
        return _empty(width, height, "No consumption in this period")
    left, top, right, bottom = 40, 22, 12, 62
    cw = (width - left - right) / 24
    ch = (height - top - bottom) / 7
    values = np.array([c.kwh_per_meter_hour for c in cells], dtype=float)
    lo, hi = (float(v) for v in np.percentile(values, [2, 98]))
    if hi <= lo:
        lo, hi = float(values.min()), float(values.max()) if values.max() > values.min() else float(values.min()) + 1
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" id="consumption-heatmap" viewBox="0 0 {width} {height}" '
             f'role="img" aria-label="Consumption heatmap" {_FONT}>']
    for h in range(0, 24, 3):
        parts.append(f'<text x="{left + h * cw + 1:.1f}" y="{top - 7}" font-size="11" fill="#555">{h:02d}h</text>')
    for d, name in enumerate(WEEKDAYS):
        parts.append(f'<text x="4" y="{top + d * ch + ch * 0.65:.1f}" font-size="11" fill="#555">{name}</text>')
    for c in cells:
        x = left + c.hour_of_day * cw
        y = top + (c.day_of_week - 1) * ch
        parts.append(f'<rect class="cell" data-dow="{c.day_of_week}" data-hour="{c.hour_of_day}" '
                     f'data-kwh="{c.kwh_per_meter_hour:.4f}" x="{x:.1f}" y="{y:.1f}" width="{cw - 1:.1f}" '
                     f'height="{ch - 1:.1f}" fill="{_heat_colour(c.kwh_per_meter_hour, lo, hi)}"><title>'
                     f'{WEEKDAYS[c.day_of_week - 1]} {c.hour_of_day:02d}:00 UTC: {c.kwh_per_meter_hour:.3f} '
                     f'kWh per meter-hour</title></rect>')
    # the colour scale: a gradient bar with round ticks in kWh per meter-hour
    bx, by, bw = left, height - bottom + 16, width - left - right
    parts.append(f'<defs><linearGradient id="heat-scale"><stop offset="0" stop-color="{_heat_colour(lo, lo, hi)}"/>'
                 f'<stop offset="1" stop-color="{_heat_colour(hi, lo, hi)}"/></linearGradient></defs>'
                 f'<rect id="heatmap-scale" x="{bx}" y="{by}" width="{bw}" height="10" fill="url(#heat-scale)" '
                 f'stroke="#bbb" stroke-width="0.5"/>')
    for v in nice_ticks(lo, hi, 5):
        if lo - 1e-12 <= v <= hi + 1e-12:
            tx = bx + (v - lo) / (hi - lo) * bw
            parts.append(f'<line x1="{tx:.1f}" x2="{tx:.1f}" y1="{by + 10}" y2="{by + 14}" stroke="#555"/>'
                         f'<text class="scale-tick" x="{tx:.1f}" y="{by + 26}" font-size="11" fill="#444" '
                         f'text-anchor="middle">{_fmt(v)}</text>')
    clipped = int(((values < lo) | (values > hi)).sum())
    note = f" ({clipped} cells beyond shown at the ends)" if clipped else ""
    parts.append(f'<text x="{bx + bw}" y="{by - 4}" font-size="10" fill="#666" text-anchor="end">'
                 f'kWh per meter-hour, 2nd–98th percentile{note}</text></svg>')
    return "".join(parts)


# ---------------------------------------------------------------- forecast

def forecast_svg(points: Sequence[ForecastPoint], width: int = 1000, height: int = 300,
                 scope_label: str = "") -> str:
    """Forecast line inside its prediction band (clipped at 0 kWh), the measured energy on top."""
    if not points:
        return _empty(width, height, "No forecast stored for this scope yet")
    left, right, top, bottom = 70, 14, 14, 30
    t0 = points[0].period_start.timestamp()
    t1 = max(points[-1].period_start.timestamp(), t0 + 1)
    vals = [max(v, 0.0) for p in points for v in (p.forecast_kwh, p.lower_kwh, p.upper_kwh, p.actual_kwh)
            if v is not None]
    ticks = nice_ticks(0.0, max(vals) if vals else 1.0, 5)
    lo, hi = 0.0, ticks[-1]

    def x(p: ForecastPoint) -> float:
        return left + (p.period_start.timestamp() - t0) / (t1 - t0) * (width - left - right)

    def y(v: float) -> float:
        return top + (1 - (max(v, 0.0) - lo) / (hi - lo)) * (height - top - bottom)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" id="forecast-chart" viewBox="0 0 {width} {height}" '
             f'role="img" aria-label="Forecast vs actual{", " + escape(scope_label) if scope_label else ""}" {_FONT}>']
    for v in ticks:
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#e6e6e6"/>'
                     f'<text class="y-tick" x="{left - 6}" y="{y(v) + 4:.1f}" font-size="12" fill="#555" '
                     f'text-anchor="end">{_fmt(v)}</text>')
    mid = top + (height - top - bottom) / 2
    parts.append(f'<text x="14" y="{mid:.1f}" font-size="12" fill="#555" text-anchor="middle" '
                 f'transform="rotate(-90 14 {mid:.1f})" id="forecast-y-unit">kWh per hour</text>')
    days = sorted({p.period_start.date() for p in points})
    every = max(1, math.ceil(len(days) / 10))
    for d in days[::every]:
        first = next(p for p in points if p.period_start.date() == d)
        if x(first) < width - right - 60:
            parts.append(f'<line x1="{x(first):.1f}" x2="{x(first):.1f}" y1="{top}" y2="{height - bottom}" '
                         f'stroke="#f0f0f0"/><text x="{x(first) + 3:.1f}" y="{height - 10}" font-size="12" '
                         f'fill="#555">{d:%a %d %b}</text>')
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
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" class="empty" {_FONT}>'
            f'<rect width="{width}" height="{height}" fill="#fafafa" stroke="#ddd"/>'
            f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle" font-size="16" fill="#777">'
            f'{escape(message)}</text></svg>')


# ---------------------------------------------------------------- page

_CSS = """
* { box-sizing: border-box; }
body { font-family: 'Liberation Sans', Arial, sans-serif; margin: 0; background: #fff; color: #222; min-width: 320px; }
header { background: #17408b; color: #fff; padding: 10px 16px; }
header h1 { font-size: 20px; margin: 0; } header p { margin: 2px 0 0; font-size: 12px; opacity: .9; }
main { display: grid; grid-template-columns: repeat(auto-fit, minmax(min(100%, 440px), 1fr));
       gap: 12px 16px; padding: 12px 16px; max-width: 1500px; }
section { border: 1px solid #e3e3e3; border-radius: 6px; padding: 8px 10px; min-width: 0; }
section.wide { grid-column: 1 / -1; }
section svg { width: 100%; height: auto; display: block; }
.chart-scroll { overflow-x: auto; }   /* on a phone a chart keeps readable text and scrolls in its panel */
.chart-scroll svg { min-width: 560px; }
section svg.size-key { width: auto; display: inline-block; vertical-align: middle; margin: 0 2px 0 8px; }
h2 { font-size: 15px; margin: 0 0 6px; } .legend { font-size: 12px; color: #444; margin-top: 6px; line-height: 1.6; }
.swatch { display: inline-block; width: 11px; height: 11px; margin: 0 4px 0 10px; vertical-align: middle;
          border-radius: 50%; border: 1px solid #333; }
.legend div:first-child .swatch, .legend > div > .swatch:first-child { margin-left: 0; }
@media (max-width: 480px) { header h1 { font-size: 17px; } main { padding: 8px; } }
"""


def render_page(title: str, subtitle: str, map_html: str, cells: Sequence[HeatCell],
                forecast: Sequence[ForecastPoint], forecast_title: str, heatmap_days: int,
                map_title: str, heatmap_note: str = "") -> str:
    """The whole page; every number on it comes from the ``tableau`` views."""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,"><title>{escape(title)}</title><style>{_CSS}</style></head>
<body><header><h1>{escape(title)}</h1><p>{escape(subtitle)}</p></header>
<main>
<section id="map-panel"><h2>{escape(map_title)}</h2>
{map_html}</section>
<section id="heatmap-panel"><h2>Consumption pattern: kWh per meter-hour by weekday and hour (UTC),
last {heatmap_days} days</h2>
<div class="chart-scroll">{heatmap_svg(cells) if not heatmap_note else _empty(640, 300, heatmap_note)}</div>
<div class="legend">Darker is more energy. Same data as the Tableau “Consumption patterns” workbook.</div></section>
<section id="forecast-panel" class="wide"><h2>{escape(forecast_title)}</h2>
<div class="chart-scroll">{forecast_svg(forecast, scope_label=forecast_title)}</div>
<div class="legend"><span class="swatch" style="background:#d94801"></span>actual
<span class="swatch" style="background:#2171b5"></span>forecast
<span class="swatch" style="background:#9ecae1"></span>prediction interval (clipped at 0 kWh)</div></section>
</main></body></html>"""


def map_section(sites: Sequence[SitePoint], threshold: float | None) -> str:
    return map_svg(sites, threshold) + _map_legend(threshold)


def aggregate_section(regions: Sequence[RegionAggregate], min_meters: int, withheld: int) -> str:
    return aggregate_map_svg(regions) + _aggregate_legend(min_meters, withheld)


def not_found_page(title: str, message: str, known: Sequence[str]) -> str:
    """The 404 page for an unknown region: says so and links the regions that exist."""
    links = "".join(f'<li><a href="?region={escape(r)}">{escape(r)}</a></li>' for r in known)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,"><title>{escape(title)}</title><style>{_CSS}</style></head>
<body><header><h1>{escape(title)}</h1><p>404 · not found</p></header>
<main><section class="wide" id="not-found"><h2>{escape(message)}</h2>
<p>Regions: </p><ul>{links or '<li>none registered yet</li>'}</ul><p><a href="?">All regions</a></p></section></main>
</body></html>"""
