"""Per-meter consumption profiles: what a healthy meter measures at any instant.

Each meter's load is built in two layers so that any instant can be computed on its own
(same seed, same reading, however the meter is polled):

1. **Daily energy** in closed form for every local day: the class's base consumption times a
   weekday factor (public holidays count as Sundays), a seasonal factor, a temperature term
   (heating below 15.5 C, cooling above 21 C, on the region's synthetic weather) and
   day-to-day occupancy noise. Because it needs no simulation, the cumulative register at
   the start of any day is a plain sum over days since :data:`REGISTER_ORIGIN`.
2. **Intraday shape** on the reading grid: the class's hourly template for weekdays or
   weekends (calibrated against public hourly PJM and household data, see
   ``bench/profile_calibration.py``), hourly temperature, appliance bursts, rooftop PV or an
   EV charging session, and per-step noise; then scaled so the day adds up to layer 1.

Voltage, current and power factor follow from the power drawn: ``P = phases * V * I * PF``.
The import register only goes forward.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np

from firmware_sim.local_calendar import LocalCalendar
from firmware_sim.randomness import key_for, normal, uniform
from firmware_sim.weather import Weather

__all__ = ["MeterClass", "ClassParams", "CLASS_PARAMS", "LoadProfile", "DaySeries", "REGISTER_ORIGIN_DAY"]

# 2010-01-01: registers count energy from here (plus a seeded starting value).
REGISTER_ORIGIN_DAY = 14610
_WH = 3_600_000.0  # joules per kWh


class MeterClass(str, Enum):
    RESIDENTIAL = "residential"
    COMMERCIAL = "commercial"
    INDUSTRIAL = "industrial"
    RESIDENTIAL_PV = "residential_pv"
    RESIDENTIAL_EV = "residential_ev"


def _norm(values: list[float]) -> tuple[float, ...]:
    a = np.asarray(values, dtype=float)
    return tuple((a / a.mean()).round(4))


# Hourly templates, mean 1. Residential follows the UCI household series (France,
# 2006-2010); commercial and industrial are office/retail and two-shift plant shapes whose
# blend with residential matches the PJM East system shape.
_RES_WEEKDAY = _norm([0.55, 0.45, 0.42, 0.40, 0.41, 0.42, 0.85, 1.66, 1.53, 1.32, 1.18, 1.12,
                      1.07, 0.98, 0.88, 0.81, 0.78, 0.86, 1.10, 1.55, 1.78, 1.79, 1.33, 0.78])
_RES_WEEKEND = _norm([0.72, 0.58, 0.48, 0.43, 0.40, 0.42, 0.47, 0.78, 0.94, 1.01, 1.11, 1.19,
                      1.18, 1.20, 1.23, 1.11, 1.07, 1.20, 1.45, 1.66, 1.66, 1.57, 1.23, 0.92])
_COM_WEEKDAY = _norm([0.76, 0.74, 0.73, 0.73, 0.75, 0.80, 0.92, 1.08, 1.24, 1.32, 1.36, 1.38,
                      1.38, 1.38, 1.37, 1.35, 1.32, 1.22, 1.08, 0.98, 0.90, 0.84, 0.80, 0.78])
_COM_WEEKEND = _norm([0.76, 0.75, 0.74, 0.74, 0.74, 0.76, 0.79, 0.85, 0.94, 1.03, 1.10, 1.14,
                      1.16, 1.16, 1.14, 1.10, 1.05, 0.99, 0.93, 0.87, 0.82, 0.79, 0.77, 0.76])
_IND_WEEKDAY = _norm([0.92, 0.91, 0.90, 0.90, 0.91, 0.95, 1.03, 1.07, 1.08, 1.08, 1.08, 1.07,
                      1.06, 1.07, 1.08, 1.08, 1.07, 1.06, 1.05, 1.03, 1.01, 0.98, 0.95, 0.93])
_IND_WEEKEND = _norm([0.85, 0.85, 0.84, 0.84, 0.84, 0.86, 0.92, 0.98, 1.02, 1.05, 1.06, 1.07,
                      1.07, 1.07, 1.06, 1.05, 1.04, 1.03, 1.02, 1.00, 0.98, 0.95, 0.90, 0.87])


@dataclass(frozen=True)
class ClassParams:
    """What distinguishes one class of customer: size, shape, sensitivity, electrics."""

    base_kwh_per_day: float           # median daily consumption at mild temperature
    size_spread: float                # lognormal sigma of meter size around the median
    weekday: tuple[float, ...]        # 24 hourly values, mean 1
    weekend: tuple[float, ...]
    dow_factor: tuple[float, ...]     # Monday..Sunday multipliers of daily energy
    heating_per_degc: float           # fraction of daily energy per degree below 15.5 C
    cooling_per_degc: float           # fraction per degree above 21 C
    season_amplitude: float           # non-thermal seasonality (lighting), peaks mid-January
    day_noise: float                  # lognormal sigma of daily occupancy noise
    step_noise: float                 # lognormal sigma of per-reading noise
    burst_probability: float          # chance of an appliance burst per 10 minutes (scaled by shape)
    burst_w: tuple[float, float]      # burst power range
    phases: int
    nominal_v: float
    pf_range: tuple[float, float]     # power factor at light and at full load


CLASS_PARAMS: dict[MeterClass, ClassParams] = {
    MeterClass.RESIDENTIAL: ClassParams(
        10.0, 0.35, _RES_WEEKDAY, _RES_WEEKEND, (0.95, 0.97, 0.98, 0.95, 0.98, 1.09, 1.08),
        0.020, 0.080, 0.04, 0.18, 0.25, 0.10, (800.0, 2500.0), 1, 230.0, (0.88, 0.98)),
    MeterClass.RESIDENTIAL_PV: ClassParams(
        10.0, 0.35, _RES_WEEKDAY, _RES_WEEKEND, (0.95, 0.97, 0.98, 0.95, 0.98, 1.09, 1.08),
        0.020, 0.080, 0.04, 0.18, 0.25, 0.10, (800.0, 2500.0), 1, 230.0, (0.88, 0.98)),
    MeterClass.RESIDENTIAL_EV: ClassParams(
        10.0, 0.35, _RES_WEEKDAY, _RES_WEEKEND, (0.95, 0.97, 0.98, 0.95, 0.98, 1.09, 1.08),
        0.020, 0.080, 0.04, 0.18, 0.25, 0.10, (800.0, 2500.0), 1, 230.0, (0.88, 0.98)),
    MeterClass.COMMERCIAL: ClassParams(
        250.0, 0.5, _COM_WEEKDAY, _COM_WEEKEND, (1.10, 1.10, 1.10, 1.10, 1.08, 0.80, 0.72),
        0.006, 0.070, 0.02, 0.06, 0.08, 0.0, (0.0, 0.0), 3, 230.0, (0.86, 0.95)),
    MeterClass.INDUSTRIAL: ClassParams(
        2400.0, 0.6, _IND_WEEKDAY, _IND_WEEKEND, (1.08, 1.09, 1.09, 1.09, 1.07, 0.85, 0.73),
        0.004, 0.020, 0.02, 0.05, 0.05, 0.0, (0.0, 0.0), 3, 230.0, (0.82, 0.92)),
}

_HEAT_BASE_C = 15.5
_COOL_BASE_C = 21.0
_EV_CHARGER_W = 7200.0
_PV_SELF_USE = 0.3
_BLOCK_DAYS = 128


@dataclass(frozen=True)
class DaySeries:
    """One local day of one meter on the reading grid: ts in (start, end], step energy in kWh."""

    day: int
    ts: np.ndarray            # Unix seconds of each reading (end of its step)
    power_w: np.ndarray       # instantaneous power (negative while a PV home exports)
    step_kwh: np.ndarray      # import energy during the step ending at ts
    voltage_v: np.ndarray
    current_a: np.ndarray
    power_factor: np.ndarray
    register_start: float     # import register at the start of the day, kWh
    export_step_kwh: np.ndarray | None = None  # energy exported during each step (PV homes)


class LoadProfile:
    """The healthy consumption of one meter, computable at any instant without history."""

    def __init__(self, meter_id: str, meter_class: MeterClass, seed: int, calendar: LocalCalendar,
                 weather: Weather, step_s: int = 60) -> None:
        if step_s <= 0 or 900 % step_s:
            raise ValueError(f"step_s must divide 900 seconds, got {step_s}")
        self.meter_id = meter_id
        self.meter_class = MeterClass(meter_class)
        self.params = CLASS_PARAMS[self.meter_class]
        self.calendar = calendar
        self.weather = weather
        self.step_s = step_s
        self.key = key_for(seed, meter_id, "load")
        u = uniform(self.key, np.arange(8))
        z = normal(self.key, np.arange(8) + 100)
        p = self.params
        self.size = float(np.exp(p.size_spread * z[0]))
        self.base_kwh = p.base_kwh_per_day * self.size
        # a third of homes heat electrically; most have some cooling
        electric_heat = u[0] < (0.33 if p.phases == 1 else 1.0)
        self.heating = p.heating_per_degc * (1.0 if electric_heat else 0.2) * (0.6 + 0.8 * u[1])
        self.cooling = p.cooling_per_degc * (0.4 + 1.2 * u[2])
        self.register_offset = float(50.0 + 5000.0 * u[3] * self.size)
        self.pv_kwp = float(3.0 + 5.0 * u[4]) if self.meter_class is MeterClass.RESIDENTIAL_PV else 0.0
        self.ev_probability = float(0.3 + 0.4 * u[5]) if self.meter_class is MeterClass.RESIDENTIAL_EV else 0.0
        self.typical_w = self.base_kwh * 1000.0 / 24.0
        # households keep their own hours: their template is shifted by up to 1.5 h either way
        self.schedule_shift_h = float(3.0 * (u[6] - 0.5)) if p.phases == 1 else 0.0
        self._register_cache: dict[int, float] = {}
        self._block_totals = np.zeros(0)
        # homes that do not heat electrically heat with gas: their meter relays a gas meter (DSMR 0-1:24.2.1)
        self.has_gas = p.phases == 1 and not electric_heat
        # dual-tariff registers: tariff 1 (low) on weekends and public holidays, tariff 2 on working days
        self.dual_tariff = p.phases == 1
        self._running: dict[str, tuple[np.ndarray, dict[int, float]]] = {}

    # ---------------------------------------------------------------- layer 1: daily energy

    def _load_kwh(self, days: np.ndarray) -> np.ndarray:
        p = self.params
        days = np.asarray(days, dtype=np.int64)
        dow = self.calendar.weekdays(days)
        dow = np.where(self.calendar.holidays(days), 6, dow)
        factor = np.asarray(p.dow_factor)[dow]
        doy = self.calendar.day_of_year(days)
        season = 1.0 + p.season_amplitude * np.cos(2 * np.pi * (doy - 15.0) / 365.2425)
        starts = days * 86400.0 - self.calendar.standard_offset_h() * 3600.0
        temp = self.weather.daily_mean(starts)
        thermal = 1.0 + self.heating * np.maximum(0.0, _HEAT_BASE_C - temp) \
            + self.cooling * np.maximum(0.0, temp - _COOL_BASE_C)
        noise = np.exp(p.day_noise * normal(self.key ^ 0xD1, days) - p.day_noise ** 2 / 2)
        return self.base_kwh * factor * season * thermal * noise

    def _pv_kwh(self, days: np.ndarray) -> np.ndarray:
        doy = self.calendar.day_of_year(days)
        sun_hours = 3.6 + 1.8 * np.cos(2 * np.pi * (doy - 172.0) / 365.2425)
        return self.pv_kwp * sun_hours * self._cloudiness(days)

    def _cloudiness(self, days: np.ndarray) -> np.ndarray:
        return 0.25 + 0.75 * uniform(self.key ^ 0xC1, np.asarray(days, dtype=np.int64))

    def _ev_sessions(self, days: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(charging?, start local hour, quarter hours) of each day's evening EV session."""
        days = np.asarray(days, dtype=np.int64)
        charging = uniform(self.key ^ 0xE1, days) < self.ev_probability
        quarters = 3 + np.floor(uniform(self.key ^ 0xE2, days) * 6).astype(int)
        start_h = 18.0 + np.floor(uniform(self.key ^ 0xE3, days) * 18) / 4.0
        start_h = np.minimum(start_h, 24.0 - quarters / 4.0)
        return charging, start_h, quarters

    def daily_kwh(self, days: np.ndarray, load_kwh: np.ndarray | None = None) -> np.ndarray:
        """Import energy of each local day, kWh (closed form; the intraday series sums to it)."""
        days = np.asarray(days, dtype=np.int64)
        kwh = self._load_kwh(days) if load_kwh is None else load_kwh
        if self.pv_kwp:
            kwh = np.maximum(kwh - np.minimum(_PV_SELF_USE * self._pv_kwh(days), 0.6 * kwh), 0.05 * kwh)
        if self.ev_probability:
            charging, _, quarters = self._ev_sessions(days)
            kwh = kwh + np.where(charging, _EV_CHARGER_W / 1000.0 * quarters / 4.0, 0.0)
        return kwh

    def daily_export_kwh(self, days: np.ndarray) -> np.ndarray:
        """Energy a PV home exports each local day, kWh (what its own use does not take; closed form)."""
        days = np.asarray(days, dtype=np.int64)
        if not self.pv_kwp:
            return np.zeros(days.shape)
        pv = self._pv_kwh(days)
        return np.maximum(pv - np.minimum(_PV_SELF_USE * pv, 0.6 * self._load_kwh(days)), 0.0)

    def daily_low_tariff_kwh(self, days: np.ndarray) -> np.ndarray:
        """Import on tariff 1 (weekends and public holidays) each local day, kWh."""
        days = np.asarray(days, dtype=np.int64)
        low = (self.calendar.weekdays(days) >= 5) | self.calendar.holidays(days).astype(bool)
        return np.where(low, self.daily_kwh(days), 0.0)

    def daily_gas_m3(self, days: np.ndarray) -> np.ndarray:
        """Gas a gas-heated home burns each local day, m3: hot water and cooking plus heating degree days."""
        days = np.asarray(days, dtype=np.int64)
        if not self.has_gas:
            return np.zeros(days.shape)
        starts = days * 86400.0 - self.calendar.standard_offset_h() * 3600.0
        temp = self.weather.daily_mean(starts)
        return self.size * (0.6 + 0.35 * np.maximum(0.0, _HEAT_BASE_C - temp))

    def running_total(self, name: str, day: int) -> float:
        """A register fed by ``daily_<name>`` at the start of local day ``day`` (block sums, like the import register)."""
        daily = {"export": self.daily_export_kwh, "low_tariff": self.daily_low_tariff_kwh, "gas": self.daily_gas_m3}[name]
        blocks, cache = self._running.setdefault(name, (np.zeros(0), {}))
        if day in cache:
            return cache[day]
        if day < REGISTER_ORIGIN_DAY:
            total = -float(daily(np.arange(day, REGISTER_ORIGIN_DAY)).sum())
        else:
            block = (day - REGISTER_ORIGIN_DAY) // _BLOCK_DAYS
            if blocks.size < block + 1:
                n = block + 1 + 8
                days = np.arange(REGISTER_ORIGIN_DAY, REGISTER_ORIGIN_DAY + n * _BLOCK_DAYS)
                blocks = np.concatenate([[0.0], np.cumsum(daily(days).reshape(n, _BLOCK_DAYS).sum(axis=1))])
                self._running[name] = (blocks, cache)
            first = REGISTER_ORIGIN_DAY + block * _BLOCK_DAYS
            total = float(blocks[block]) + float(daily(np.arange(first, day)).sum())
        offset = {"export": 0.0, "low_tariff": 0.4 * self.register_offset, "gas": 0.2 * self.register_offset}[name]
        value = max(0.0, offset + total)
        if len(cache) > 64:
            cache.clear()
        cache[day] = value
        return value

    def register_at_day_start(self, day: int) -> float:
        """The healthy import register at the start of local day ``day``, kWh.

        Days are summed in fixed blocks (block totals, then their running sum), so the value
        is bit-for-bit the same whichever days were asked for before.
        """
        cached = self._register_cache.get(day)
        if cached is not None:
            return cached
        if day < REGISTER_ORIGIN_DAY:
            total = -float(self.daily_kwh(np.arange(day, REGISTER_ORIGIN_DAY)).sum())
        else:
            block = (day - REGISTER_ORIGIN_DAY) // _BLOCK_DAYS
            if self._block_totals.size < block + 1:
                n = block + 1 + 8
                days = np.arange(REGISTER_ORIGIN_DAY, REGISTER_ORIGIN_DAY + n * _BLOCK_DAYS)
                sums = self.daily_kwh(days).reshape(n, _BLOCK_DAYS).sum(axis=1)
                self._block_totals = np.concatenate([[0.0], np.cumsum(sums)])
            first = REGISTER_ORIGIN_DAY + block * _BLOCK_DAYS
            total = float(self._block_totals[block]) + float(self.daily_kwh(np.arange(first, day)).sum())
        value = max(0.0, self.register_offset + total)
        if len(self._register_cache) > 64:
            self._register_cache.clear()
        self._register_cache[day] = value
        return value

    # ---------------------------------------------------------------- layer 2: intraday

    def day(self, day: int) -> DaySeries:
        """The healthy series of local day ``day`` on this profile's reading grid."""
        p = self.params
        start, end = self.calendar.day_bounds(day)
        ts = np.arange(start + self.step_s, end + 0.5, self.step_s)
        hours = self.calendar.local_hours(ts - self.step_s / 2)
        weekend = self.calendar.weekdays([day])[0] >= 5 or bool(self.calendar.holidays([day])[0])
        template = np.asarray(p.weekend if weekend else p.weekday)
        shape = np.interp(hours - self.schedule_shift_h, np.arange(24) + 0.5, template, period=24.0)
        temp = self.weather.temperature(ts)
        shape = shape * (1.0 + 0.5 * self.heating * np.maximum(0.0, _HEAT_BASE_C - temp)
                         + 1.5 * self.cooling * np.maximum(0.0, temp - _COOL_BASE_C))
        its = ts.astype(np.int64)
        shape = shape * np.exp(p.step_noise * normal(self.key ^ 0x51, its) - p.step_noise ** 2 / 2)
        load_arr = self._load_kwh(np.array([day]))
        load_kwh = float(load_arr[0])
        load_w = shape * (load_kwh * _WH / (shape.sum() * self.step_s))
        if p.burst_probability:
            block = its // 600
            chance = p.burst_probability * shape / shape.mean()
            burst = uniform(self.key ^ 0xB1, block) < chance
            lo, hi = p.burst_w
            load_w = load_w + np.where(burst, lo + (hi - lo) * uniform(self.key ^ 0xB2, block), 0.0)
        net_w = load_w
        sun = None
        if self.pv_kwp:
            sun = np.clip(np.cos(np.pi * (hours - 13.0) / 14.0), 0.0, None) ** 2
            pv_w = self.pv_kwp * 1000.0 * sun * float(self._cloudiness(np.array([day]))[0])
            net_w = load_w - pv_w
        if self.ev_probability:
            charging, start_h, quarters = self._ev_sessions(np.array([day]))
            if charging[0]:
                on = (hours >= start_h[0]) & (hours < start_h[0] + quarters[0] / 4.0)
                net_w = net_w + np.where(on, _EV_CHARGER_W, 0.0)
        import_w = np.maximum(net_w, 0.0)
        target = float(self.daily_kwh(np.array([day]), load_arr)[0])
        raw = import_w.sum() * self.step_s / _WH
        scale = target / raw if raw > 0 else 0.0
        export_w = np.maximum(-net_w, 0.0)
        export_kwh = float(self.daily_export_kwh(np.array([day]))[0])
        raw_export = export_w.sum() * self.step_s / _WH
        # exported power scaled like imported power, so the export register meets its closed form
        escale = export_kwh / raw_export if raw_export > 0 else 0.0
        power = np.where(net_w > 0, net_w * scale, net_w * escale)
        step_kwh = np.maximum(power, 0.0) * self.step_s / _WH
        export_step = np.maximum(-power, 0.0) * self.step_s / _WH if self.pv_kwp else None
        if export_step is not None and raw_export <= 0 and export_kwh > 0 and sun is not None and sun.sum() > 0:
            export_step = export_kwh * sun / sun.sum()  # a dull day: the little export spread over the daylight
        voltage, current, pf = self.electrics(ts, power)
        return DaySeries(day, ts, power, step_kwh, voltage, current, pf, self.register_at_day_start(day),
                         export_step)

    def electrics(self, ts: np.ndarray, power_w: np.ndarray, voltage_scale: np.ndarray | float = 1.0
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Voltage, current and power factor consistent with ``power_w`` (P = phases*V*I*PF)."""
        p = self.params
        its = np.asarray(ts).astype(np.int64)
        load = np.abs(power_w) / max(self.typical_w * 3.0, 1.0)
        voltage = p.nominal_v * (1.0 + 0.012 * np.sin(2 * np.pi * its / 86400.0 * 2)
                                 + 0.003 * normal(self.key ^ 0x71, its) - 0.015 * np.minimum(load, 1.5))
        voltage = voltage * voltage_scale
        light, full = p.pf_range
        pf = full - (full - light) * np.exp(-3.0 * load)
        with np.errstate(divide="ignore", invalid="ignore"):
            current = np.where(voltage > 1.0, np.abs(power_w) / (p.phases * voltage * pf), 0.0)
        return voltage, current, pf
