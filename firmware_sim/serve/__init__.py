"""Simulated meters over real protocols, so the agent's real readers are exercised.

One module per protocol: :mod:`.modbus` (Modbus TCP, Eastron SDM630 register map, pymodbus
server), :mod:`.dsmr` (DSMR 5 P1 telegrams with CRC16 on a pseudo-terminal), :mod:`.mqtt_meter`
(a local MQTT meter publishing JSON readings) and :mod:`.csv_feed` (a growing CSV file).
Each can emit malformed frames on purpose. ``gridsight sim serve PROTOCOL`` runs them.
"""

from __future__ import annotations

from firmware_sim.meter import SimulatedMeter

__all__ = ["latest_values", "meter_values"]


def latest_values(meter: SimulatedMeter, now: float) -> dict[str, float] | None:
    """What the meter shows at clock time ``now``: its latest reading on the grid, or None."""
    ts, reg, power, volt, cur, pf = meter.series(now - meter.step_s, now)
    if ts.size == 0:
        return None
    return {"ts": float(ts[-1]), "energy_kwh": float(reg[-1]), "power_w": float(power[-1]),
            "voltage_v": float(volt[-1]), "current_a": float(cur[-1]), "power_factor": float(pf[-1])}


def meter_values(meter: SimulatedMeter, now: float) -> dict | None:
    """:func:`latest_values` plus what the meter's display shows beyond them: export, tariff
    registers, per-phase ``phases`` [(V, A, W)] (three-phase meters) and ``gas_m3``."""
    import numpy as np

    v = latest_values(meter, now)
    if v is None:
        return None
    ts = np.array([v["ts"]])
    extra = meter.channel_values(ts, np.array([v["energy_kwh"]]), np.array([v["power_w"]]),
                                 np.array([v["voltage_v"]]), np.array([v["current_a"]]),
                                 np.array([v["power_factor"]]))
    for key, arr in extra.items():
        v[key] = float(arr[0])
    if meter.profile.params.phases == 3:
        v["phases"] = [(v[f"voltage_l{k}_v"], v[f"current_l{k}_a"], v[f"power_l{k}_w"]) for k in (1, 2, 3)]
        v["phases_vi"] = [(a, b) for a, b, _ in v["phases"]]
    if meter.profile.has_gas:
        gas = meter.gas_values(now - 300.0, now)
        if gas is not None:
            v["gas_ts"], v["gas_m3"] = float(gas[0][-1]), float(gas[1][-1])
    return v
