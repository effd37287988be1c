"""The shipped Tableau workbooks, described as data and written as ``.twb`` XML.

Each :class:`Workbook` names the views it reads, its worksheets (what goes on rows, columns,
colour and filters), parameters (the policy sandbox's sliders), calculated fields and one
dashboard that lays the worksheets out. :func:`workbook_element` turns that into XML that
validates against Tableau's schema; ``gridsight dashboards generate`` rewrites the files in
``dashboards/workbooks`` and ``dashboards/datasources`` from here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lxml import etree

from . import catalog
from .catalog import View
from .tabpy_endpoints import tableau_script
from .tableau_xml import (DEFAULT_CONNECTION, SOURCE_BUILD, TABLEAU_VERSION, USER_NS, Connection,
                          datasource_element, datasource_name, instance_name, stable_uuid)

__all__ = ["Shelf", "Parameter", "Calculation", "Worksheet", "Workbook", "WORKBOOKS", "workbook_element",
           "PARAMETERS_DATASOURCE"]

PARAMETERS_DATASOURCE = "Parameters"


@dataclass(frozen=True, slots=True)
class Shelf:
    """A field placed on a shelf: ``column`` of the worksheet's view (or a calculation's name),
    aggregated/truncated by ``derivation`` and used as nominal/ordinal/quantitative ``kind``."""

    column: str
    derivation: str = "None"
    kind: str = "nk"

    @property
    def instance(self) -> str:
        return instance_name(self.column, self.derivation, self.kind)

    @property
    def instance_type(self) -> str:
        return {"nk": "nominal", "ok": "ordinal", "qk": "quantitative"}[self.kind]


@dataclass(frozen=True, slots=True)
class Parameter:
    """A Tableau parameter shown as a slider: a real number in [low, high] stepping by ``step``."""

    name: str
    caption: str
    default: float
    low: float
    high: float
    step: float


@dataclass(frozen=True, slots=True)
class Calculation:
    """A calculated field of one view's data source; ``formula`` is Tableau's calculation language."""

    name: str
    caption: str
    formula: str
    datatype: str = "real"
    role: str = "measure"
    compute_using: str | None = None  # a table calculation (SCRIPT_*) runs along this column, once per partition


@dataclass(frozen=True, slots=True)
class Worksheet:
    name: str
    view: str
    mark: str
    rows: tuple[Shelf, ...] = ()
    cols: tuple[Shelf, ...] = ()
    color: Shelf | None = None
    size: Shelf | None = None
    detail: tuple[Shelf, ...] = ()
    filters: tuple[Shelf, ...] = ()
    title: str = ""

    def shelves(self) -> list[Shelf]:
        """Every field the worksheet uses, once each, in a stable order."""
        seen: dict[str, Shelf] = {}
        for s in (*self.rows, *self.cols, *((self.color,) if self.color else ()),
                  *((self.size,) if self.size else ()), *self.detail, *self.filters):
            seen.setdefault(s.instance, s)
        return list(seen.values())


@dataclass(frozen=True, slots=True)
class Workbook:
    file_stem: str
    title: str
    description: str
    worksheets: tuple[Worksheet, ...]
    parameters: tuple[Parameter, ...] = ()
    calculations: dict[str, tuple[Calculation, ...]] = field(default_factory=dict)

    def views(self) -> list[View]:
        names: list[str] = []
        for ws in self.worksheets:
            if ws.view not in names:
                names.append(ws.view)
        return [catalog.view(n) for n in names]


# ---------------------------------------------------------------------------- the workbooks

_POLICY_PARAMETERS = (
    Parameter("tou_shift_pct", "Time-of-use: share of peak load shifted (%)", 10, 0, 50, 5),
    Parameter("dr_cap_pct", "Demand response: cap peaks at % of the daily peak", 100, 50, 100, 5),
    Parameter("efficiency_pct", "Efficiency programme: load cut (%)", 5, 0, 30, 1),
    Parameter("ev_adoption_pct", "EV adoption: share of meters with an EV (%)", 10, 0, 60, 5),
)
_P = "[" + PARAMETERS_DATASOURCE + "]"
# The sliders go to collector.policy through TabPy, along hour_of_day (each hour once per call).
# The script raises the endpoint's own error, so Tableau shows TabPy's message, not a 404.
_POLICY_FORMULA = (
    f"SCRIPT_REAL(\"{tableau_script('policy_sandbox', 7)}\", ATTR([hour_of_day]), SUM([avg_kwh]), SUM([meters]), "
    f"{_P}.[tou_shift_pct], {_P}.[dr_cap_pct], {_P}.[efficiency_pct], {_P}.[ev_adoption_pct])"
)
_EFFICIENCY_FORMULA = f"SUM([avg_kwh]) * (1 - {_P}.[efficiency_pct] / 100)"
_CO2_AFTER_FORMULA = "[load_after_policy_kwh] * AVG([intensity_g_per_kwh]) / 1000"

WORKBOOKS: tuple[Workbook, ...] = (
    Workbook(
        "anomaly_map", "Anomaly map",
        "Sites on a map, coloured by their lowest anomaly score (lower is more anomalous); filter by "
        "time, region and kind of anomaly.",
        (Worksheet("Sites by score", "anomaly_daily", "Circle",
                   rows=(Shelf("latitude", "Avg", "qk"),), cols=(Shelf("longitude", "Avg", "qk"),),
                   color=Shelf("min_score", "Min", "qk"), size=Shelf("flagged_intervals", "Sum", "qk"),
                   detail=(Shelf("site_id"), Shelf("feeder")),
                   filters=(Shelf("day", "None", "qk"), Shelf("region"), Shelf("anomaly_kind"))),
         Worksheet("Flags by kind", "anomaly_daily", "Bar",
                   rows=(Shelf("anomaly_kind"),), cols=(Shelf("flagged_intervals", "Sum", "qk"),),
                   color=Shelf("region"),
                   filters=(Shelf("is_anomaly"), Shelf("day", "None", "qk"), Shelf("region"))))),
    Workbook(
        "consumption_patterns", "Consumption patterns",
        "When energy is used: an hour-of-day by weekday heatmap per region, urban against rural "
        "profiles, and daily energy per region.",
        (Worksheet("Hourly heatmap", "consumption_pattern", "Square",
                   rows=(Shelf("day_of_week", "None", "ok"),), cols=(Shelf("hour_of_day", "None", "ok"),),
                   color=Shelf("avg_kwh_per_meter_hour", "Avg", "qk"),
                   filters=(Shelf("region"), Shelf("area_type"))),
         Worksheet("Urban vs rural", "consumption_pattern", "Line",
                   rows=(Shelf("avg_kwh_per_meter_hour", "Avg", "qk"),), cols=(Shelf("hour_of_day", "None", "ok"),),
                   color=Shelf("area_type"), filters=(Shelf("region"),)),
         Worksheet("Regional comparison", "regional_comparison", "Bar",
                   rows=(Shelf("region"),), cols=(Shelf("kwh_per_meter", "Avg", "qk"),),
                   color=Shelf("area_type"), filters=(Shelf("day", "None", "qk"),)))),
    Workbook(
        "forecast_vs_actual", "Forecast vs actual",
        "Prophet's forecast with its prediction interval against the measured energy, per system, "
        "region or feeder.",
        (Worksheet("Forecast and actual", "forecast_vs_actual", "Line",
                   rows=(Shelf("actual_kwh", "Sum", "qk"), Shelf("forecast_kwh", "Sum", "qk")),
                   cols=(Shelf("period_start", "Hour-Trunc", "qk"),),
                   filters=(Shelf("scope"), Shelf("scope_id"), Shelf("model_version"))),
         Worksheet("Prediction interval", "forecast_vs_actual", "Area",
                   rows=(Shelf("lower_kwh", "Sum", "qk"), Shelf("upper_kwh", "Sum", "qk")),
                   cols=(Shelf("period_start", "Hour-Trunc", "qk"),),
                   filters=(Shelf("scope"), Shelf("scope_id"))))),
    Workbook(
        "carbon", "Carbon dashboard",
        "Emissions per region from hourly energy and the grid's carbon intensity of each hour.",
        (Worksheet("CO2 by region", "carbon_by_region", "Bar",
                   rows=(Shelf("region"),), cols=(Shelf("co2_kg", "Sum", "qk"),),
                   filters=(Shelf("hour_start", "None", "qk"),)),
         Worksheet("Carbon intensity", "carbon_by_region", "Line",
                   rows=(Shelf("intensity_g_per_kwh", "Avg", "qk"),), cols=(Shelf("hour_start", "Hour-Trunc", "qk"),),
                   filters=(Shelf("region"),)),
         Worksheet("Energy and CO2", "carbon_by_region", "Circle",
                   rows=(Shelf("co2_kg", "Sum", "qk"),), cols=(Shelf("kwh", "Sum", "qk"),),
                   color=Shelf("region")))),
    Workbook(
        "policy_sandbox", "Policy sandbox",
        "Sliders for time-of-use shifting, demand response, efficiency and EV adoption; load and CO2 "
        "before and after, computed by the collector's policy model through TabPy.",
        (Worksheet("Load before and after", "policy_sandbox_inputs", "Line",
                   rows=(Shelf("avg_kwh", "Sum", "qk"), Shelf("load_after_policy_kwh", "User", "qk")),
                   cols=(Shelf("hour_of_day", "None", "ok"),), filters=(Shelf("region"), Shelf("area_type"))),
         Worksheet("Efficiency only", "policy_sandbox_inputs", "Bar",
                   rows=(Shelf("efficiency_only_kwh", "User", "qk"),), cols=(Shelf("region"),)),
         Worksheet("CO2 after policy", "policy_sandbox_inputs", "Bar",
                   rows=(Shelf("region"),), cols=(Shelf("co2_after_policy_kg", "User", "qk"),),
                   detail=(Shelf("hour_of_day", "None", "ok"),))),
        parameters=_POLICY_PARAMETERS,
        calculations={"policy_sandbox_inputs": (
            Calculation("load_after_policy_kwh", "Load after policy (kWh per hour)", _POLICY_FORMULA,
                        compute_using="hour_of_day"),
            Calculation("efficiency_only_kwh", "Load after efficiency only (kWh per hour)", _EFFICIENCY_FORMULA),
            Calculation("co2_after_policy_kg", "CO2 after policy (kg per hour)", _CO2_AFTER_FORMULA,
                        compute_using="hour_of_day"),
        )}),
)


# ---------------------------------------------------------------------------- XML


def workbook_element(wb: Workbook, conn: Connection = DEFAULT_CONNECTION) -> etree._Element:
    """The ``<workbook>`` root for ``wb``, its data sources connected through ``conn``."""
    root = etree.Element("workbook", {"original-version": TABLEAU_VERSION, "source-build": SOURCE_BUILD,
                                      "source-platform": "linux", "version": TABLEAU_VERSION},
                         nsmap={"user": USER_NS})
    etree.SubElement(root, "preferences")
    sources = etree.SubElement(root, "datasources")
    if wb.parameters:
        sources.append(_parameters_datasource(wb.parameters))
    for v in wb.views():
        ds = datasource_element(v, conn)
        for calc in wb.calculations.get(v.name, ()):
            _insert_calculation(ds, calc)
        sources.append(ds)
    if any(c.semantic_role for v in wb.views() for c in v.columns):
        # latitude/longitude draw on Tableau's own background map
        etree.SubElement(etree.SubElement(root, "mapsources"), "mapsource", {"name": "Tableau"})
    sheets = etree.SubElement(root, "worksheets")
    for ws in wb.worksheets:
        sheets.append(_worksheet(wb, ws))
    dashboards = etree.SubElement(root, "dashboards")
    dashboards.append(_dashboard(wb))
    windows = etree.SubElement(root, "windows", {"source-height": "30"})
    for ws in wb.worksheets:
        win = etree.SubElement(windows, "window", {"class": "worksheet", "hidden": "true", "name": ws.name})
        cards = etree.SubElement(win, "cards")
        for edge in ("left", "top", "right", "bottom"):
            etree.SubElement(cards, "edge", {"name": edge})
        etree.SubElement(win, "simple-id", {"uuid": stable_uuid(f"{wb.file_stem}/window/{ws.name}")})
    win = etree.SubElement(windows, "window", {"class": "dashboard", "maximized": "true", "name": wb.title})
    etree.SubElement(win, "viewpoints")
    etree.SubElement(win, "active", {"id": "-1"})
    etree.SubElement(win, "simple-id", {"uuid": stable_uuid(f"{wb.file_stem}/window/dashboard")})
    explain = etree.SubElement(root, "explain-data", {"enabled-for-viewer": "true",
                                                      "extreme-values-enabled-for-all": "true"})
    etree.SubElement(explain, "explanation-types")
    return root


def _parameters_datasource(params: tuple[Parameter, ...]) -> etree._Element:
    ds = etree.Element("datasource", {"hasconnection": "false", "inline": "true",
                                      "name": PARAMETERS_DATASOURCE, "version": TABLEAU_VERSION})
    etree.SubElement(ds, "aliases", {"enabled": "yes"})
    for p in params:
        col = etree.SubElement(ds, "column", {
            "caption": p.caption, "datatype": "real", "name": f"[{p.name}]", "param-domain-type": "range",
            "role": "measure", "type": "quantitative", "value": _num(p.default)})
        etree.SubElement(col, "calculation", {"class": "tableau", "formula": _num(p.default)})
        etree.SubElement(col, "range", {"granularity": _num(p.step), "max": _num(p.high), "min": _num(p.low)})
    return ds


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def _insert_calculation(ds: etree._Element, calc: Calculation) -> None:
    col = etree.Element("column", {"caption": calc.caption, "datatype": calc.datatype,
                                   "name": f"[{calc.name}]", "role": calc.role,
                                   "type": "quantitative" if calc.role == "measure" else "nominal"})
    etree.SubElement(col, "calculation", {"class": "tableau", "formula": calc.formula})
    ds.find("layout").addprevious(col)


def _column_for(wb: Workbook, view: View, name: str) -> etree._Element:
    for calc in wb.calculations.get(view.name, ()):
        if calc.name == name:
            col = etree.Element("column", {"caption": calc.caption, "datatype": calc.datatype,
                                           "name": f"[{name}]", "role": calc.role, "type": "quantitative"})
            etree.SubElement(col, "calculation", {"class": "tableau", "formula": calc.formula})
            return col
    c = view.column(name)
    attrs = {"caption": c.caption, "datatype": c.datatype, "name": f"[{c.name}]", "role": c.role}
    if c.semantic_role:
        attrs["semantic-role"] = c.semantic_role
    attrs["type"] = c.tableau_type
    return etree.Element("column", attrs)


def _worksheet(wb: Workbook, ws: Worksheet) -> etree._Element:
    v = catalog.view(ws.view)
    ds_name = datasource_name(v)
    ref = lambda s: f"[{ds_name}].{s.instance}"  # noqa: E731 - reads better inline
    sheet = etree.Element("worksheet", {"name": ws.name})
    layout = etree.SubElement(sheet, "layout-options")
    title = etree.SubElement(etree.SubElement(layout, "title"), "formatted-text")
    etree.SubElement(title, "run").text = ws.title or ws.name
    table = etree.SubElement(sheet, "table")
    view_el = etree.SubElement(table, "view")
    dss = etree.SubElement(view_el, "datasources")
    if wb.parameters:
        etree.SubElement(dss, "datasource", {"name": PARAMETERS_DATASOURCE})
    etree.SubElement(dss, "datasource", {"caption": v.caption, "name": ds_name})
    if wb.parameters:
        deps = etree.SubElement(view_el, "datasource-dependencies", {"datasource": PARAMETERS_DATASOURCE})
        for p in wb.parameters:
            col = etree.SubElement(deps, "column", {
                "caption": p.caption, "datatype": "real", "name": f"[{p.name}]", "param-domain-type": "range",
                "role": "measure", "type": "quantitative", "value": _num(p.default)})
            etree.SubElement(col, "calculation", {"class": "tableau", "formula": _num(p.default)})
            etree.SubElement(col, "range", {"granularity": _num(p.step), "max": _num(p.high), "min": _num(p.low)})
    deps = etree.SubElement(view_el, "datasource-dependencies", {"datasource": ds_name})
    shelves = ws.shelves()
    used_columns: list[str] = []
    for s in shelves:
        if s.column not in used_columns:
            used_columns.append(s.column)
    calcs = wb.calculations.get(v.name, ())
    pending = list(used_columns)
    while pending:  # a calculation brings in the columns and calculations its formula names
        wanted = pending.pop()
        calc = next((c for c in calcs if c.name == wanted), None)
        if calc is None:
            continue
        for dep in _formula_columns(calc.formula, v, calcs):
            if dep not in used_columns:
                used_columns.append(dep)
                pending.append(dep)
    for name in sorted(used_columns):
        deps.append(_column_for(wb, v, name))
    along = {c.name: c.compute_using for c in calcs if c.compute_using}
    for s in sorted(shelves, key=lambda s: s.instance):
        inst = etree.SubElement(deps, "column-instance", {"column": f"[{s.column}]", "derivation": s.derivation,
                                                          "name": s.instance, "pivot": "key", "type": s.instance_type})
        if s.column in along:
            tc = etree.SubElement(inst, "table-calc", {"ordering-type": "Field"})
            etree.SubElement(tc, "order", {"field": f"[{ds_name}].{instance_name(along[s.column], 'None', 'ok')}"})
    for f in ws.filters:
        col = v.column(f.column)
        if col.datatype in ("date", "datetime") or f.kind == "qk":
            etree.SubElement(view_el, "filter", {"class": "quantitative", "column": ref(f),
                                                 "included-values": "in-range"})
        else:
            flt = etree.SubElement(view_el, "filter", {"class": "categorical", "column": ref(f)})
            etree.SubElement(flt, "groupfilter", {"function": "level-members", "level": f.instance,
                                                  f"{{{USER_NS}}}ui-enumeration": "all",
                                                  f"{{{USER_NS}}}ui-marker": "enumerate"})
    if ws.filters:
        slices = etree.SubElement(view_el, "slices")
        for f in ws.filters:
            etree.SubElement(slices, "column").text = ref(f)
    etree.SubElement(view_el, "aggregation", {"value": "true"})
    etree.SubElement(table, "style")
    panes = etree.SubElement(table, "panes")
    pane = etree.SubElement(panes, "pane", {"selection-relaxation-option": "selection-relaxation-allow"})
    etree.SubElement(etree.SubElement(pane, "view"), "breakdown", {"value": "auto"})
    etree.SubElement(pane, "mark", {"class": ws.mark})
    if ws.color or ws.size or ws.detail:
        enc = etree.SubElement(pane, "encodings")
        if ws.color:
            etree.SubElement(enc, "color", {"column": ref(ws.color)})
        if ws.size:
            etree.SubElement(enc, "size", {"column": ref(ws.size)})
        for d in ws.detail:
            etree.SubElement(enc, "lod", {"column": ref(d)})
    etree.SubElement(table, "rows").text = _shelf_text([ref(s) for s in ws.rows])
    etree.SubElement(table, "cols").text = _shelf_text([ref(s) for s in ws.cols])
    etree.SubElement(sheet, "simple-id", {"uuid": stable_uuid(f"{wb.file_stem}/worksheet/{ws.name}")})
    return sheet


def _shelf_text(refs: list[str]) -> str:
    if len(refs) <= 1:
        return refs[0] if refs else ""
    return "(" + " + ".join(refs) + ")"


def _formula_columns(formula: str, v: View, calcs: tuple[Calculation, ...] = ()) -> list[str]:
    """Columns of ``v`` and other calculations that a formula refers to as ``[name]``."""
    names = [c.name for c in v.columns] + [c.name for c in calcs]
    return [n for n in names if f"[{n}]" in formula]


def _dashboard(wb: Workbook) -> etree._Element:
    dash = etree.Element("dashboard", {"name": wb.title})
    etree.SubElement(dash, "style")
    etree.SubElement(dash, "size", {"maxheight": "800", "maxwidth": "1200", "minheight": "800",
                                    "minwidth": "1200"})
    zones = etree.SubElement(dash, "zones")
    outer = etree.SubElement(zones, "zone", {"h": "100000", "id": "1", "type-v2": "layout-basic",
                                             "w": "100000", "x": "0", "y": "0"})
    n = len(wb.worksheets)
    width = 100000 // n
    for i, ws in enumerate(wb.worksheets):
        etree.SubElement(outer, "zone", {"h": "100000", "id": str(i + 2), "name": ws.name,
                                         "w": str(width), "x": str(i * width), "y": "0"})
    if wb.parameters:
        for j, p in enumerate(wb.parameters):
            etree.SubElement(outer, "zone", {"h": "6000", "id": str(n + 2 + j), "mode": "slider",
                                             "param": f"[{PARAMETERS_DATASOURCE}].[{p.name}]",
                                             "type-v2": "paramctrl", "w": "25000", "x": str(j * 25000),
                                             "y": "94000"})
    etree.SubElement(dash, "simple-id", {"uuid": stable_uuid(f"{wb.file_stem}/dashboard")})
    return dash
