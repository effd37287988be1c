"""The simulator's fleet registry imports cleanly and puts the fleet's anomalies on the Tableau map."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

from collector.registry import import_registry, parse_document
from firmware_sim.fleet_model import Fleet
from firmware_sim.registry import registry_document
from registry_support import fetch, on_db

START = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def _flag(gateway_id: str, seq: int, meter_id: str, interval_start: float):
    from collector.db.writer import Received
    from gridsight.wire import AnomalyFlag, encode, topic_for

    flag = AnomalyFlag(gateway_id, seq, "if-test-1", interval_start + 900, meter_id, interval_start, 900, -0.12, 0.0,
                       0.05, reason="kwh 0.05 vs profile 1.20 (drop)")
    return Received(topic_for(gateway_id, "flag"), encode(flag), interval_start + 901)


def test_flagged_meters_of_a_registered_fleet_appear_on_the_anomaly_map_with_coordinates(db):
    fleet = Fleet(seed=3, gateways=6, meters_per_gateway=3, anomaly_rate=0.0, fault_rate=0.0)
    doc = parse_document(registry_document(fleet))
    result = on_db(db, lambda c: import_registry(c, doc))
    gas = sum(fleet.profile(m).has_gas for m in fleet.meter_specs())   # gas-heated homes relay a gas meter
    assert result.counts["meters"]["inserted"] == 18 + gas
    specs = {m.meter_id: m for m in fleet.meter_specs()}
    kinds = {g.gateway_id: g.region_kind for g in fleet.gateway_specs()}
    flagged = [(g.gateway_id, g.meters[0].meter_id) for g in fleet.gateway_specs()][:4]

    from collector.db.writer import BatchWriter

    async def ingest() -> None:
        writer = BatchWriter(db, archive=False, unknown_gateways="register")
        try:
            await writer.write([_flag(gw, i + 1, meter, START + 900 * i) for i, (gw, meter) in enumerate(flagged)])
        finally:
            await writer.close()

    asyncio.run(ingest())

    rows = fetch(db, "SELECT meter_id, latitude, longitude, region, feeder, area_type, anomaly_kind "
                     "FROM tableau.anomaly_map WHERE is_anomaly ORDER BY meter_id")
    assert [r[0] for r in rows] == sorted(m for _, m in flagged)
    for meter_id, lat, lon, region, feeder, area_type, kind in rows:
        spec = specs[meter_id]
        assert (lat, lon, region, feeder) == (spec.lat, spec.lon, spec.region, spec.feeder_id)
        assert area_type == kinds[spec.gateway_id]
        assert kind == "drop"


def test_the_sim_registry_command_writes_a_document_the_collector_accepts(tmp_path):
    out = tmp_path / "fleet.json"
    done = subprocess.run([sys.executable, "-m", "gridsight", "sim", "registry", "--seed", "4", "--gateways", "5",
                           "--meters-per-gateway", "2", "--out", str(out)], capture_output=True, text=True,
                          timeout=120, env=os.environ.copy())
    assert done.returncode == 0, done.stderr
    doc = parse_document(out.read_text())
    electricity = [m for m in doc.meters if m.name != "gas"]
    assert len(doc.gateways) == 5 and len(electricity) == 10
    assert {m.id.removesuffix("-gas") for m in doc.meters} == {m.id for m in electricity}
    assert {s.area_type for s in doc.sites} <= {"urban", "rural"}
    assert all(s.feeder for s in doc.sites)
    # the same seed and size give the same layout as the fleet run itself
    assert json.loads(out.read_text()) == registry_document(Fleet(seed=4, gateways=5, meters_per_gateway=2,
                                                                  anomaly_rate=0.0, fault_rate=0.0))
