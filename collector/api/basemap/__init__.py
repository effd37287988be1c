"""The dashboard page's offline basemap: land, lakes, country and US state borders.

The geometry ships with the package (``world.json.gz``, made by ``scripts/make_basemap.py``;
provenance and licence in ``NOTICE.md``), so the page draws a real map with no tile server and
no network. :func:`features_in` returns the lines that cross a longitude/latitude box.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import numpy as np

__all__ = ["Basemap", "load_basemap", "features_in"]

LAYERS = ("land", "lakes", "borders", "states")


@dataclass(frozen=True)
class Basemap:
    """Per layer, each line as an (n, 2) lon/lat array with its bounding box."""

    layers: dict[str, list[tuple[np.ndarray, tuple[float, float, float, float]]]]


@lru_cache(maxsize=1)
def load_basemap() -> Basemap:
    raw = json.loads(gzip.decompress(resources.files(__name__).joinpath("world.json.gz").read_bytes()))
    layers = {}
    for name in LAYERS:
        items = []
        for flat in raw[name]:
            pts = np.asarray(flat, dtype=float).reshape(-1, 2)
            items.append((pts, (pts[:, 0].min(), pts[:, 1].min(), pts[:, 0].max(), pts[:, 1].max())))
        layers[name] = items
    return Basemap(layers)


def features_in(lon0: float, lat0: float, lon1: float, lat1: float) -> dict[str, list[np.ndarray]]:
    """Lines of every layer whose bounding box meets the box [lon0, lon1] x [lat0, lat1]."""
    out: dict[str, list[np.ndarray]] = {}
    for name, items in load_basemap().layers.items():
        out[name] = [pts for pts, (a, b, c, d) in items if a <= lon1 and c >= lon0 and b <= lat1 and d >= lat0]
    return out
