"""A synthetic outdoor temperature series with random access in time.

Heating and cooling load follow temperature, so every region gets a weather series:
an annual cycle, a daily cycle peaking mid-afternoon, and multi-day weather systems made
of a few seeded sinusoids. Being a closed-form function of time, the temperature at any
instant is the same whoever asks and in whatever order.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from firmware_sim.randomness import key_for, uniform

__all__ = ["Weather"]

_DAY = 86400.0
_YEAR = 365.2425 * _DAY
# periods of the synthetic weather systems, days
_SYSTEM_PERIODS = (2.7, 4.3, 6.9, 11.3, 17.9)


@dataclass(frozen=True)
class Weather:
    """Temperature (deg C) for one region; ``utc_offset_h`` places the daily peak in local time."""

    seed: int
    region: str = "default"
    mean_c: float = 12.5
    annual_amplitude_c: float = 12.0
    diurnal_amplitude_c: float = 5.0
    systems_amplitude_c: float = 3.0
    utc_offset_h: float = -5.0

    @cached_property
    def _phases(self) -> np.ndarray:
        key = key_for(self.seed, self.region, "weather")
        return uniform(key, np.arange(len(_SYSTEM_PERIODS))) * 2 * np.pi

    def temperature(self, ts: np.ndarray | float) -> np.ndarray:
        """Temperature at Unix times ``ts``."""
        t = np.asarray(ts, dtype=float)
        # coldest around 20 January, warmest around 21 July (northern hemisphere)
        year_phase = 2 * np.pi * ((t - 1_705_708_800.0) / _YEAR)
        annual = -self.annual_amplitude_c * np.cos(year_phase)
        local_h = ((t / 3600.0) + self.utc_offset_h) % 24.0
        diurnal = -self.diurnal_amplitude_c * np.cos(2 * np.pi * (local_h - 3.0) / 24.0)
        systems = np.zeros_like(t)
        amp = self.systems_amplitude_c / np.sqrt(len(_SYSTEM_PERIODS) / 2)
        for period, phase in zip(_SYSTEM_PERIODS, self._phases):
            systems += amp * np.sin(2 * np.pi * t / (period * _DAY) + phase)
        return self.mean_c + annual + diurnal + systems

    def daily_mean(self, day_start_ts: np.ndarray) -> np.ndarray:
        """Mean temperature of the days starting at ``day_start_ts`` (diurnal cycle averages out)."""
        t = np.asarray(day_start_ts, dtype=float) + _DAY / 2
        # sample 4 times a day: cheap and close to the true mean
        samples = [self.temperature(t + o) for o in (-9 * 3600, -3 * 3600, 3 * 3600, 9 * 3600)]
        return np.mean(samples, axis=0)
