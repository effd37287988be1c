"""Simulated meters over real protocols, so the agent's real readers are exercised.

One module per protocol: :mod:`.modbus` (Modbus TCP, Eastron SDM630 register map, pymodbus
server), :mod:`.dsmr` (DSMR 5 P1 telegrams with CRC16 on a pseudo-terminal), :mod:`.mqtt_meter`
(a local MQTT meter publishing JSON readings) and :mod:`.csv_feed` (a growing CSV file).
Each can emit malformed frames on purpose. ``gridsight sim serve PROTOCOL`` runs them.
"""

from __future__ import annotations

from firmware_sim.meter import SimulatedMeter

__all__ = ["latest_values"]


def latest_values(meter: SimulatedMeter, now: float) -> dict[str, float] | None:
    """What the meter shows at clock time ``now``: its latest reading on the grid, or None."""
    ts, reg, power, volt, cur, pf = meter.series(now - meter.step_s, now)
    if ts.size == 0:
        return None
    return {"ts": float(ts[-1]), "energy_kwh": float(reg[-1]), "power_w": float(power[-1]),
            "voltage_v": float(volt[-1]), "current_a": float(cur[-1]), "power_factor": float(pf[-1])}
