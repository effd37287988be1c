"""Small inline SVG charts for the QA report: no plotting dependency, no external files.

Each function returns one ``<svg>`` element as a string, sized in CSS pixels, with text in
the page's font. Enough for a time series with shaded spans and markers, stacked bars and
a histogram; nothing more.
"""

from __future__ import annotations

from datetime import datetime, timezone
from html import escape
from typing import Sequence

import numpy as np

__all__ = ["time_series", "multi_series", "timeline", "stacked_bars", "histogram", "PALETTE"]

PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
           "#9c755f", "#bab0ac", "#8cd17d", "#d37295", "#499894", "#86bcb6")
_FONT = 'font-family="system-ui, sans-serif" font-size="11"'


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    mag = 10 ** np.floor(np.log10(raw))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), default=raw)
    first = np.ceil(lo / step) * step
    return [float(v) for v in np.arange(first, hi + step * 1e-9, step)]


def _fmt(v: float) -> str:
    return f"{v:.0f}" if abs(v) >= 100 or v == int(v) else f"{v:.2g}" if abs(v) < 1 else f"{v:.1f}"


def time_series(ts: np.ndarray, values: np.ndarray, *, spans: Sequence[tuple[float, float, str, str]] = (),
                markers: np.ndarray | None = None, width: int = 860, height: int = 220, y_label: str = "",
                title: str = "") -> str:
    """A line over time with shaded ``spans`` (start, end, colour, label) and red ``markers`` (bool per point)."""
    left, right, top, bottom = 56, 12, 24, 34
    w, h = width - left - right, height - top - bottom
    ts = np.asarray(ts, dtype=float)
    values = np.asarray(values, dtype=float)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" {_FONT} role="img">',
             f'<text x="{left}" y="14" font-weight="600">{escape(title)}</text>']
    if ts.size == 0:
        parts.append(f'<text x="{left}" y="{top + h / 2}">no data stored for this meter</text></svg>')
        return "".join(parts)
    t0, t1 = float(ts.min()), float(ts.max())
    for s, e, _, _ in spans:
        t0, t1 = min(t0, s), max(t1, e)
    t1 = t1 if t1 > t0 else t0 + 1
    vmax = float(np.nanmax(values)) if np.isfinite(values).any() else 1.0
    vmin = min(0.0, float(np.nanmin(values)))
    vmax = vmax if vmax > vmin else vmin + 1
    x = lambda t: left + (t - t0) / (t1 - t0) * w
    y = lambda v: top + h - (v - vmin) / (vmax - vmin) * h
    for s, e, colour, label in spans:
        parts.append(f'<rect x="{x(s):.1f}" y="{top}" width="{max(1.5, x(e) - x(s)):.1f}" height="{h}" '
                     f'fill="{colour}" fill-opacity="0.22"><title>{escape(label)}</title></rect>')
    for v in _ticks(vmin, vmax):
        parts.append(f'<line x1="{left}" x2="{left + w}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#ddd"/>'
                     f'<text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{_fmt(v)}</text>')
    parts += _day_axis(t0, t1, x, top, h, left, left + w)
    gaps = np.flatnonzero(np.diff(ts) > 3 * np.median(np.diff(ts))) + 1 if ts.size > 2 else []
    for seg_t, seg_v in zip(np.split(ts, gaps), np.split(values, gaps)):
        pts = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in zip(seg_t, seg_v))
        parts.append(f'<polyline points="{pts}" fill="none" stroke="#4e79a7" stroke-width="1"/>')
    if markers is not None:
        m = np.asarray(markers, dtype=bool)
        for t, v in zip(ts[m], values[m]):
            parts.append(f'<circle cx="{x(t):.1f}" cy="{y(v):.1f}" r="2.6" fill="#e15759"/>')
    parts.append(f'<text x="12" y="{top + h / 2}" transform="rotate(-90 12 {top + h / 2})" '
                 f'text-anchor="middle">{escape(y_label)}</text></svg>')
    return "".join(parts)


def _anchor(x: float, lo: float, hi: float, half_width: float = 18.0) -> str:
    """A text anchor that keeps a label of about 2 x ``half_width`` px inside [lo, hi]."""
    return "start" if x - half_width < lo else "end" if x + half_width > hi else "middle"


def _day_axis(t0: float, t1: float, x, top: float, h: float, lo: float, hi: float) -> list[str]:
    """Grid lines and MM-DD labels at UTC midnights; labels at the edges are anchored inwards."""
    day = 86400.0
    step = day * max(1, int(np.ceil((t1 - t0) / day / 8)))
    out = []
    for t in np.arange(np.ceil(t0 / day) * day, t1 + 1, step):
        label = datetime.fromtimestamp(t, timezone.utc).strftime("%m-%d")
        out.append(f'<line x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{top}" y2="{top + h}" stroke="#eee"/>'
                   f'<text x="{x(t):.1f}" y="{top + h + 14}" text-anchor="{_anchor(x(t), lo, hi)}">{label}</text>')
    return out


def multi_series(ts: np.ndarray, series: Sequence[tuple[str, np.ndarray, str]], *,
                 spans: Sequence[tuple[float, float, str, str]] = (), width: int = 860, height: int = 220,
                 y_label: str = "", title: str = "", y_floor: float | None = None) -> str:
    """Several lines over one time axis (name, values, colour), NaN gaps left open, with a legend."""
    left, right, top, bottom = 56, 12, 40, 34
    w, h = width - left - right, height - top - bottom
    ts = np.asarray(ts, dtype=float)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" {_FONT} role="img">',
             f'<text x="{left}" y="14" font-weight="600">{escape(title)}</text>']
    present = [(n, np.asarray(v, dtype=float), c) for n, v, c in series if np.isfinite(np.asarray(v, float)).any()]
    if ts.size == 0 or not present:
        parts.append(f'<text x="{left}" y="{top + h / 2}">no readings stored for this meter</text></svg>')
        return "".join(parts)
    t0, t1 = float(ts.min()), float(ts.max())
    for s0, e0, _, _ in spans:
        t0, t1 = min(t0, s0), max(t1, e0)
    t1 = t1 if t1 > t0 else t0 + 1
    allv = np.concatenate([v[np.isfinite(v)] for _, v, _ in present])
    vmin = float(allv.min()) if y_floor is None else min(y_floor, float(allv.min()))
    vmax = float(allv.max())
    vmax = vmax if vmax > vmin else vmin + 1
    x = lambda t: left + (t - t0) / (t1 - t0) * w
    y = lambda v: top + h - (v - vmin) / (vmax - vmin) * h
    for s0, e0, colour, label in spans:
        parts.append(f'<rect x="{x(s0):.1f}" y="{top}" width="{max(1.5, x(e0) - x(s0)):.1f}" height="{h}" '
                     f'fill="{colour}" fill-opacity="0.22"><title>{escape(label)}</title></rect>')
    for v in _ticks(vmin, vmax):
        parts.append(f'<line x1="{left}" x2="{left + w}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#ddd"/>'
                     f'<text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{_fmt(v)}</text>')
    parts += _day_axis(t0, t1, x, top, h, left, left + w)
    lx = left
    for name, values, colour in present:
        parts.append(f'<rect x="{lx}" y="22" width="14" height="3" fill="{colour}"/>'
                     f'<text x="{lx + 18}" y="27">{escape(name)}</text>')
        lx += 30 + 7 * len(name)
        ok = np.isfinite(values)
        breaks = np.flatnonzero(np.diff(ok.astype(int)) != 0) + 1
        for seg_t, seg_v in zip(np.split(ts, breaks), np.split(values, breaks)):
            if seg_v.size and np.isfinite(seg_v[0]):
                pts = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in zip(seg_t, seg_v))
                parts.append(f'<polyline class="trace" data-name="{escape(name)}" points="{pts}" fill="none" '
                             f'stroke="{colour}" stroke-width="1.2"/>')
    parts.append(f'<text x="12" y="{top + h / 2}" transform="rotate(-90 12 {top + h / 2})" '
                 f'text-anchor="middle">{escape(y_label)}</text></svg>')
    return "".join(parts)


def timeline(rows: Sequence[tuple[str, Sequence[tuple[float, float, str]], str]], t0: float, t1: float, *,
             width: int = 860, row_height: int = 20, title: str = "") -> str:
    """One time axis, one row per (name, [(start, end, tooltip)], colour): spans as bars, instants as ticks."""
    left, right, top, bottom = 190, 14, 24, 30
    w = width - left - right
    height = top + bottom + row_height * max(len(rows), 1)
    t1 = t1 if t1 > t0 else t0 + 1
    x = lambda t: left + (min(max(t, t0), t1) - t0) / (t1 - t0) * w
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" {_FONT} role="img" '
             f'class="timeline">', f'<text x="{left}" y="14" font-weight="600">{escape(title)}</text>']
    h = row_height * len(rows)
    parts += _day_axis(t0, t1, x, top, h, left, left + w)
    for i, (name, items, colour) in enumerate(rows):
        yy = top + i * row_height
        parts.append(f'<line x1="{left}" x2="{left + w}" y1="{yy + row_height - 0.5}" y2="{yy + row_height - 0.5}" '
                     f'stroke="#f0f0f0"/><text x="{left - 8}" y="{yy + row_height * 0.7:.1f}" text-anchor="end">'
                     f'{escape(name)}</text>')
        for s0, e0, label in items:
            if e0 > s0:
                parts.append(f'<rect class="span" x="{x(s0):.1f}" y="{yy + 3}" width="{max(2.0, x(e0) - x(s0)):.1f}" '
                             f'height="{row_height - 6}" fill="{colour}" fill-opacity="0.6"><title>{escape(label)}'
                             f'</title></rect>')
            else:
                parts.append(f'<path class="instant" d="M{x(s0):.1f},{yy + 2} l5,{row_height / 2 - 2:.1f} '
                             f'l-5,{row_height / 2 - 2:.1f} l-5,-{row_height / 2 - 2:.1f}Z" fill="{colour}">'
                             f'<title>{escape(label)}</title></path>')
    parts.append("</svg>")
    return "".join(parts)


def stacked_bars(categories: Sequence[str], series: Sequence[tuple[str, Sequence[float], str]], *,
                 width: int = 860, height: int = 240, title: str = "") -> str:
    """Vertical bars per category, stacked by ``series`` (name, values, colour), with a legend."""
    left, right, top, bottom = 44, 12, 40, 60
    w, h = width - left - right, height - top - bottom
    totals = np.sum([np.asarray(v, dtype=float) for _, v, _ in series], axis=0) if series else np.zeros(len(categories))
    vmax = max(float(np.max(totals)) if len(categories) else 1.0, 1.0)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" {_FONT} role="img">',
             f'<text x="{left}" y="14" font-weight="600">{escape(title)}</text>']
    lx = left
    for name, _, colour in series:
        parts.append(f'<rect x="{lx}" y="22" width="10" height="10" fill="{colour}"/>'
                     f'<text x="{lx + 14}" y="31">{escape(name)}</text>')
        lx += 24 + 7 * len(name)
    for v in _ticks(0, vmax):
        yy = top + h - v / vmax * h
        parts.append(f'<line x1="{left}" x2="{left + w}" y1="{yy:.1f}" y2="{yy:.1f}" stroke="#ddd"/>'
                     f'<text x="{left - 6}" y="{yy + 4:.1f}" text-anchor="end">{_fmt(v)}</text>')
    slot = w / max(len(categories), 1)
    for i, cat in enumerate(categories):
        base = 0.0
        cx = left + i * slot + slot * 0.15
        for name, values, colour in series:
            v = float(values[i])
            if v > 0:
                y0 = top + h - (base + v) / vmax * h
                parts.append(f'<rect x="{cx:.1f}" y="{y0:.1f}" width="{slot * 0.7:.1f}" height="{v / vmax * h:.1f}" '
                             f'fill="{colour}"><title>{escape(cat)}: {escape(name)} {_fmt(v)}</title></rect>')
            base += v
        tx = left + (i + 0.5) * slot
        parts.append(f'<text x="{tx:.1f}" y="{top + h + 12}" text-anchor="end" '
                     f'transform="rotate(-30 {tx:.1f} {top + h + 12})">{escape(cat)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def histogram(values: Sequence[float], *, bins: int = 12, width: int = 420, height: int = 220,
              x_label: str = "", title: str = "") -> str:
    """Counts of ``values`` in equal bins."""
    left, right, top, bottom = 40, 12, 24, 38
    w, h = width - left - right, height - top - bottom
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" {_FONT} role="img">',
             f'<text x="{left}" y="14" font-weight="600">{escape(title)}</text>']
    vals = np.asarray(values, dtype=float)
    if vals.size == 0:
        parts.append(f'<text x="{left}" y="{top + h / 2}">nothing detected</text></svg>')
        return "".join(parts)
    hi = float(vals.max()) if vals.max() > 0 else 1.0
    counts, edges = np.histogram(vals, bins=bins, range=(0.0, hi))
    cmax = max(int(counts.max()), 1)
    bw = w / bins
    for i, c in enumerate(counts):
        bh = c / cmax * h
        parts.append(f'<rect x="{left + i * bw + 1:.1f}" y="{top + h - bh:.1f}" width="{bw - 2:.1f}" height="{bh:.1f}" '
                     f'fill="#76b7b2"><title>{_fmt(edges[i])}–{_fmt(edges[i + 1])}: {c}</title></rect>')
    for v in _ticks(0, cmax, 4):
        yy = top + h - v / cmax * h
        parts.append(f'<text x="{left - 6}" y="{yy + 4:.1f}" text-anchor="end">{_fmt(v)}</text>')
    for v in _ticks(0, hi, 5):
        xx = left + v / hi * w
        parts.append(f'<text x="{xx:.1f}" y="{top + h + 14}" text-anchor="{_anchor(xx, left, left + w, 10)}">'
                     f'{_fmt(v)}</text>')
    parts.append(f'<text x="{left + w / 2}" y="{height - 4}" text-anchor="middle">{escape(x_label)}</text></svg>')
    return "".join(parts)
