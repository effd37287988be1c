"""Carbon accounting: grid carbon intensity per hour and the kg CO2 of consumption.

    from collector.carbon import NationalGridESOProvider, emissions_by, co2_avoided
    hourly = NationalGridESOProvider().hourly_intensity(start, end)      # hour_start, intensity_g_per_kwh
    per_region = emissions_by(consumption, hourly.set_index("hour_start")["intensity_g_per_kwh"], ["region"])
"""

from collector.carbon.accounting import AvoidedEmissions, CarbonError, co2_avoided, emissions_by, hourly_intensity_for
from collector.carbon.intensity import (
    CarbonIntensityError,
    CarbonIntensityProvider,
    CsvCarbonIntensity,
    NationalGridESOProvider,
)

__all__ = ["AvoidedEmissions", "CarbonError", "co2_avoided", "emissions_by", "hourly_intensity_for",
           "CarbonIntensityError", "CarbonIntensityProvider", "CsvCarbonIntensity", "NationalGridESOProvider"]
