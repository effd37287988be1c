"""The ``tableau`` schema's views as Tableau sees them: names, columns, types and roles.

This is the one list the workbooks, the Hyper extract and the web page are built from. The
views themselves are created by the Alembic migrations ``0004_tableau``, ``0006_meter_channels`` and ``0012_anomaly_daily``; a test compares this
catalog with the live database, so a column renamed on one side fails on the other.
Column names are the stable contract with analysts' workbooks: add columns, never rename.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SCHEMA", "READER_ROLE", "Column", "View", "VIEWS", "view"]

SCHEMA = "tableau"
READER_ROLE = "tableau_reader"


@dataclass(frozen=True, slots=True)
class Column:
    """One view column. ``datatype`` is Tableau's (string, integer, real, boolean, date, datetime);
    ``role`` is dimension or measure; ``semantic_role`` places latitude/longitude on a map."""

    name: str
    datatype: str
    role: str
    caption: str
    semantic_role: str | None = None

    @property
    def tableau_type(self) -> str:
        """Tableau's ``type``: measures are quantitative, dates ordinal, other dimensions nominal."""
        if self.role == "measure":
            return "quantitative"
        return "ordinal" if self.datatype in ("date", "datetime", "integer") else "nominal"


@dataclass(frozen=True, slots=True)
class View:
    name: str
    caption: str
    description: str
    columns: tuple[Column, ...]

    @property
    def qualified(self) -> str:
        return f"{SCHEMA}.{self.name}"

    def column(self, name: str) -> Column:
        for col in self.columns:
            if col.name == name:
                return col
        raise KeyError(f"{self.qualified} has no column {name!r}")


def _dim(name: str, datatype: str, caption: str, semantic_role: str | None = None) -> Column:
    return Column(name, datatype, "dimension", caption, semantic_role)


def _measure(name: str, datatype: str, caption: str, semantic_role: str | None = None) -> Column:
    return Column(name, datatype, "measure", caption, semantic_role)


_LAT = "[Geographical].[Latitude]"
_LON = "[Geographical].[Longitude]"

VIEWS: tuple[View, ...] = (
    View("anomaly_map", "Anomaly map",
         "One row per meter and scored interval, placed at its site, with the score and any flag.",
         (_dim("meter_id", "string", "Meter"),
          _dim("site_id", "string", "Site"),
          _measure("latitude", "real", "Latitude", _LAT),
          _measure("longitude", "real", "Longitude", _LON),
          _dim("region", "string", "Region"),
          _dim("feeder", "string", "Feeder"),
          _dim("area_type", "string", "Urban / rural"),
          _dim("interval_start", "datetime", "Interval start (UTC)"),
          _measure("kwh", "real", "Energy (kWh)"),
          _measure("score", "real", "Anomaly score"),
          _dim("is_anomaly", "boolean", "Flagged"),
          _dim("anomaly_kind", "string", "Anomaly kind"),
          _dim("model_version", "string", "Model version"))),
    View("anomaly_daily", "Anomaly map by day",
         "The anomaly map per meter, UTC day and anomaly kind: scored and flagged intervals, lowest score, "
         "energy. What the map's worksheets read: a month is one row per meter and kind per day.",
         (_dim("meter_id", "string", "Meter"),
          _dim("site_id", "string", "Site"),
          _measure("latitude", "real", "Latitude", _LAT),
          _measure("longitude", "real", "Longitude", _LON),
          _dim("region", "string", "Region"),
          _dim("feeder", "string", "Feeder"),
          _dim("area_type", "string", "Urban / rural"),
          _dim("day", "date", "Day (UTC)"),
          _dim("anomaly_kind", "string", "Anomaly kind"),
          _dim("is_anomaly", "boolean", "Flagged"),
          _measure("intervals", "integer", "Scored intervals"),
          _measure("flagged_intervals", "integer", "Flagged intervals"),
          _measure("min_score", "real", "Lowest anomaly score"),
          _measure("kwh", "real", "Energy (kWh)"))),
    View("consumption_pattern", "Consumption pattern",
         "Average energy per meter by hour of day and day of week, per region and urban/rural.",
         (_dim("region", "string", "Region"),
          _dim("area_type", "string", "Urban / rural"),
          _dim("day_of_week", "integer", "Day of week (1 = Monday)"),
          _dim("weekday", "string", "Weekday"),
          _dim("hour_of_day", "integer", "Hour of day (UTC)"),
          _measure("meters", "integer", "Meters"),
          _measure("intervals", "integer", "Intervals"),
          _measure("total_kwh", "real", "Energy (kWh)"),
          _measure("avg_kwh_per_meter_hour", "real", "Average kWh per meter-hour"))),
    View("regional_comparison", "Regional comparison",
         "Daily energy, meters and flags per region and urban/rural, for side-by-side comparison.",
         (_dim("day", "date", "Day (UTC)"),
          _dim("region", "string", "Region"),
          _dim("area_type", "string", "Urban / rural"),
          _measure("meters", "integer", "Meters"),
          _measure("total_kwh", "real", "Energy (kWh)"),
          _measure("kwh_per_meter", "real", "kWh per meter"),
          _measure("anomalies", "integer", "Anomaly flags"))),
    View("forecast_vs_actual", "Forecast vs actual",
         "Each forecast point with its prediction interval beside the measured energy of the same hour.",
         (_dim("scope", "string", "Scope"),
          _dim("scope_id", "string", "Scope id"),
          _dim("period_start", "datetime", "Period start (UTC)"),
          _measure("forecast_kwh", "real", "Forecast (kWh)"),
          _measure("lower_kwh", "real", "Lower bound (kWh)"),
          _measure("upper_kwh", "real", "Upper bound (kWh)"),
          _measure("actual_kwh", "real", "Actual (kWh)"),
          _dim("model_version", "string", "Forecast model"),
          _dim("issued_at", "datetime", "Issued at (UTC)"))),
    View("carbon_by_region", "Carbon by region",
         "Hourly energy per region times the grid's carbon intensity of that hour.",
         (_dim("region", "string", "Region"),
          _dim("hour_start", "datetime", "Hour (UTC)"),
          _measure("kwh", "real", "Energy (kWh)"),
          _measure("intensity_g_per_kwh", "real", "Carbon intensity (gCO2/kWh)"),
          _measure("co2_kg", "real", "CO2 (kg)"))),
    View("policy_sandbox_inputs", "Policy sandbox inputs",
         "Average load per region and hour of day with its carbon intensity: what the policy sliders act on.",
         (_dim("region", "string", "Region"),
          _dim("area_type", "string", "Urban / rural"),
          _dim("hour_of_day", "integer", "Hour of the region's local day"),
          _measure("meters", "integer", "Meters"),
          _measure("avg_kwh", "real", "Average load (kWh per hour)"),
          _measure("peak_kwh", "real", "Peak load (kWh per hour)"),
          _measure("intensity_g_per_kwh", "real", "Carbon intensity (gCO2/kWh)"),
          _dim("timezone", "string", "Region time zone"))),
    View("energy_balance", "Energy balance",
         "Imported, exported and net energy per meter interval: PV homes export, net below 0 produces.",
         (_dim("meter_id", "string", "Meter"),
          _dim("region", "string", "Region"),
          _dim("feeder", "string", "Feeder"),
          _dim("area_type", "string", "Urban / rural"),
          _dim("interval_start", "datetime", "Interval start (UTC)"),
          _measure("import_kwh", "real", "Imported (kWh)"),
          _measure("export_kwh", "real", "Exported (kWh)"),
          _measure("net_kwh", "real", "Net (kWh)"),
          _dim("has_export_register", "boolean", "Has an export register"))),
    View("phase_voltage", "Phase voltage",
         "Per-phase voltage, current and power of three-phase meters; a phase near 0 V is a lost phase.",
         (_dim("meter_id", "string", "Meter"),
          _dim("region", "string", "Region"),
          _dim("feeder", "string", "Feeder"),
          _dim("ts", "datetime", "Time (UTC)"),
          _measure("voltage_l1_v", "real", "Voltage L1 (V)"),
          _measure("voltage_l2_v", "real", "Voltage L2 (V)"),
          _measure("voltage_l3_v", "real", "Voltage L3 (V)"),
          _measure("current_l1_a", "real", "Current L1 (A)"),
          _measure("current_l2_a", "real", "Current L2 (A)"),
          _measure("current_l3_a", "real", "Current L3 (A)"),
          _measure("power_l1_w", "real", "Power L1 (W)"),
          _measure("power_l2_w", "real", "Power L2 (W)"),
          _measure("power_l3_w", "real", "Power L3 (W)"),
          _measure("lowest_phase_v", "real", "Lowest phase (V)"),
          _dim("tariff", "integer", "Tariff"))),
    View("meter_channels", "Gas, water and heat",
         "Gas and water (m3) and heat (kWh) sub-meter readings relayed by smart meters, each its own meter.",
         (_dim("meter_id", "string", "Meter"),
          _dim("region", "string", "Region"),
          _dim("feeder", "string", "Feeder"),
          _dim("channel", "string", "Channel"),
          _dim("ts", "datetime", "Time (UTC)"),
          _measure("volume_m3", "real", "Volume (m3)"),
          _measure("energy_kwh", "real", "Heat (kWh)"))),
)


def view(name: str) -> View:
    for v in VIEWS:
        if v.name == name:
            return v
    raise KeyError(f"no view {SCHEMA}.{name}")
