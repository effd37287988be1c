"""The simulated fleet's grid topology as a collector registry document (``gridsight-registry/1``).

The simulator already decides where every gateway and meter is (region, feeder, coordinates,
urban or rural); the collector only learns ids from traffic. Importing this document
(``gridsight collector registry import``) puts the fleet on the Tableau maps and into the
regional and urban/rural views. Each gateway sits on its own site and each meter is its own
premises (site) at its own coordinates; a meter's display name is its load class.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from firmware_sim.fleet_model import REGIONS, Fleet

__all__ = ["registry_document", "write_registry"]

FORMAT = "gridsight-registry/1"   # collector.registry.FORMAT; the simulator must not import the collector


def registry_document(fleet: Fleet) -> dict[str, Any]:
    """Regions, feeders, sites, gateways and meters of ``fleet``, for ``collector.registry``."""
    kind = {r.name: r.kind for r in REGIONS}
    regions: dict[str, dict] = {}
    feeders: dict[str, dict] = {}
    sites, gateways, meters = [], [], []
    for g in fleet.gateway_specs():
        regions.setdefault(g.region, {"id": g.region, "name": g.region.replace("-", " ").title()})
        feeders.setdefault(g.feeder_id, {"id": g.feeder_id, "region": g.region, "name": g.feeder_id})
        site = f"site-{g.gateway_id}"
        sites.append({"id": site, "name": f"gateway {g.gateway_id}", "feeder": g.feeder_id,
                      "latitude": g.lat, "longitude": g.lon, "area_type": g.region_kind,
                      "timezone": fleet.calendar.tz})
        gateways.append({"id": g.gateway_id, "site": site})
        for m in g.meters:
            meter_site = f"site-{m.meter_id}"
            sites.append({"id": meter_site, "name": f"premises {m.meter_id}", "feeder": m.feeder_id,
                          "latitude": m.lat, "longitude": m.lon, "area_type": kind[m.region],
                          "timezone": fleet.calendar.tz})
            meters.append({"id": m.meter_id, "gateway": g.gateway_id, "site": meter_site,
                           "name": m.meter_class.value})
            if fleet.profile(m).has_gas:   # the gas meter this home's meter relays sits in the same home
                meters.append({"id": f"{m.meter_id}-gas", "gateway": g.gateway_id, "site": meter_site,
                               "name": "gas"})
    return {"format": FORMAT, "regions": sorted(regions.values(), key=lambda r: r["id"]),
            "feeders": sorted(feeders.values(), key=lambda f: f["id"]), "sites": sites, "gateways": gateways,
            "meters": meters}


def write_registry(fleet: Fleet, path: str | Path) -> int:
    """Write the fleet's registry document to ``path``; returns the number of meters in it."""
    doc = registry_document(fleet)
    Path(path).write_text(json.dumps(doc, indent=1) + "\n")
    return len(doc["meters"])


def cmd_registry(ns) -> int:
    """``gridsight sim registry``: write the registry document of a fleet layout (seed, size, zone)."""
    import sys

    from gridsight.cli import CLIError

    try:
        fleet = Fleet(ns.seed, ns.gateways, ns.meters_per_gateway, anomaly_rate=0.0, fault_rate=0.0, tz=ns.tz)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    try:
        meters = write_registry(fleet, ns.out)
    except OSError as exc:
        raise CLIError(f"{ns.out}: cannot write ({exc.strerror})") from None
    print(f"gridsight sim: wrote {fleet.gateways} gateways, {meters} meters to {ns.out}; load it with "
          f"'gridsight collector registry import {ns.out}'", file=sys.stderr)
    return 0


def add_parser(sub) -> None:
    """Add ``registry`` to the ``gridsight sim`` subcommands."""
    p = sub.add_parser("registry", help="write the fleet's grid topology as a collector registry document",
                       description="Regions, feeders, sites (coordinates, urban/rural), gateways and meters of the "
                                   "fleet with this seed and size, for 'gridsight collector registry import'.")
    p.add_argument("--seed", type=int, default=1, help="fleet seed (same as the run's)")
    p.add_argument("--gateways", type=int, default=2, help="gateways in the fleet")
    p.add_argument("--meters-per-gateway", type=int, default=4, help="meters behind each gateway")
    p.add_argument("--tz", default="America/New_York", help="sites' time zone")
    p.add_argument("--out", required=True, help="JSON file to write")
    p.set_defaults(func=cmd_registry)
