"""Carbon accounting: grid carbon intensity per hour and the kg CO2 of consumption.

    from collector.carbon import NationalGridESOProvider, emissions_by, co2_avoided
    hourly = NationalGridESOProvider().hourly_intensity(start, end)      # hour_start, intensity_g_per_kwh
    per_region = emissions_by(consumption, hourly.set_index("hour_start")["intensity_g_per_kwh"], ["region"])
    # each region at its own stored intensity, else the system's (as every report does):
    per_region = emissions_by(consumption, intensities_frame, ["region"])   # area, hour_start, intensity_g_per_kwh
"""

from collector.carbon.accounting import (
    SYSTEM_AREA,
    AvoidedEmissions,
    CarbonError,
    co2_avoided,
    co2_kg,
    emissions_by,
    hourly_intensity_for,
    intensity_by_region,
)
from collector.carbon.intensity import (
    CarbonIntensityError,
    CarbonIntensityProvider,
    CsvCarbonIntensity,
    NationalGridESOProvider,
)

__all__ = ["AvoidedEmissions", "CarbonError", "co2_avoided", "co2_kg", "emissions_by", "hourly_intensity_for",
           "intensity_by_region", "SYSTEM_AREA",
           "CarbonIntensityError", "CarbonIntensityProvider", "CsvCarbonIntensity", "NationalGridESOProvider"]
