"""A simulated fleet run registers its grid, so its meters have places for the Tableau views."""

from __future__ import annotations

import pytest
from firmware_sim.fleet_model import Fleet
from firmware_sim.fleet_run import FleetRun
from firmware_sim.scenario import load_scenario
from registry_support import fetch

pytestmark = pytest.mark.slow  # make test-fast leaves it out

SCENARIO = """
[run]
start = "2026-01-12T00:00:00Z"
hours = 1
warmup_hours = 2
speed = 9000

[fleet]
seed = 5
gateways = 2
meters_per_gateway = 2
anomaly_rate = 0.0
fault_rate = 0.0
mode = "inprocess"

[model]
train_days = 2
train_meters = 4
"""


def test_every_meter_of_a_fleet_run_is_placed_at_its_site_with_region_and_area_type(tmp_path, database_url):
    path = tmp_path / "scenario.toml"
    path.write_text(SCENARIO)
    FleetRun(load_scenario(path), tmp_path / "run", database_url=database_url, progress=lambda m: None).run()

    fleet = Fleet(seed=5, gateways=2, meters_per_gateway=2, anomaly_rate=0.0, fault_rate=0.0)
    expected = sorted((m.meter_id, m.lat, m.lon, m.region, m.feeder_id) for m in fleet.meter_specs())
    places = fetch(database_url, "SELECT meter_id, latitude, longitude, region, feeder, area_type "
                                 "FROM tableau.meter_places ORDER BY meter_id")
    # a gas-heated home's meter relays its gas meter as '<meter>-gas': placed where its home is
    by_id = {p[0]: p for p in places}
    assert sorted(p[:5] for p in places if not p[0].endswith("-gas")) == expected
    for meter_id, place in by_id.items():
        if meter_id.endswith("-gas"):
            assert place[1:5] == by_id[meter_id.removesuffix("-gas")][1:5]
    assert all(p[5] in ("urban", "rural") for p in places)
    assert (tmp_path / "run" / "registry.json").exists()
