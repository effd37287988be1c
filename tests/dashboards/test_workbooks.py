"""The shipped Tableau files: valid against Tableau's official schema, readable by Tableau's
own document API, bound to columns that exist in a live database, and re-pointable at a
deployment with `gridsight dashboards render`."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
import tableaudocumentapi as tda
from lxml import etree

from dashboards.catalog import SCHEMA, VIEWS
from dashboards.files import DATASOURCES_DIR, WORKBOOKS_DIR, generated_files, shipped_files
from dashboards.workbooks import PARAMETERS_DATASOURCE, WORKBOOKS
from dashboards.xsd import TableauFileError, validate_file

REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "gridsight", "dashboards"]


def test_the_five_workbooks_and_a_data_source_per_view_are_shipped():
    assert {p.stem for p in WORKBOOKS_DIR.glob("*.twb")} == {
        "anomaly_map", "consumption_patterns", "forecast_vs_actual", "carbon", "policy_sandbox"}
    assert {p.stem for p in DATASOURCES_DIR.glob("*.tds")} == {v.name for v in VIEWS}


@pytest.mark.parametrize("path", shipped_files(), ids=lambda p: p.name)
def test_shipped_file_is_valid_against_tableaus_workbook_schema(path):
    validate_file(path)


def test_shipped_files_are_exactly_what_the_catalog_generates():
    generated = generated_files()
    for rel, data in generated.items():
        assert (REPO / "dashboards" / rel).read_bytes() == data, f"{rel} is stale: run gridsight dashboards generate"


def test_schema_validation_rejects_an_unknown_element_and_names_the_line(tmp_path):
    bad = tmp_path / "bad.twb"
    text = (WORKBOOKS_DIR / "carbon.twb").read_text().replace("<worksheets>", "<worksheets-typo>", 1)
    bad.write_text(text.replace("</worksheets>", "</worksheets-typo>", 1))
    with pytest.raises(TableauFileError) as err:
        validate_file(bad)
    assert "worksheets-typo" in str(err.value) and "bad.twb:" in err.value.problems[0]


def test_schema_validation_rejects_a_bad_attribute_value_in_a_data_source(tmp_path):
    bad = tmp_path / "bad.tds"
    bad.write_text((DATASOURCES_DIR / "anomaly_map.tds").read_text().replace('role="measure"', 'role="metric"', 1))
    with pytest.raises(TableauFileError, match="metric"):
        validate_file(bad)


def test_truncated_file_is_reported_as_not_well_formed(tmp_path):
    bad = tmp_path / "cut.twb"
    bad.write_bytes((WORKBOOKS_DIR / "carbon.twb").read_bytes()[:500])
    with pytest.raises(TableauFileError, match="not well-formed"):
        validate_file(bad)


@pytest.mark.parametrize("wb", WORKBOOKS, ids=lambda w: w.file_stem)
def test_document_api_opens_workbook_with_its_worksheets_and_postgres_sources(wb):
    doc = tda.Workbook(str(WORKBOOKS_DIR / f"{wb.file_stem}.twb"))
    assert doc.worksheets == [ws.name for ws in wb.worksheets]
    live = [ds for ds in doc.datasources if ds.name != PARAMETERS_DATASOURCE]
    assert live and all(c.dbclass == "postgres" and c.username == "tableau_reader"
                        for ds in live for c in ds.connections)


def _view_columns(url: str) -> dict[str, set[str]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = %s",
                            (SCHEMA,)).fetchall()
    out: dict[str, set[str]] = {}
    for table, col in rows:
        out.setdefault(table, set()).add(col)
    return out


def test_every_field_a_worksheet_uses_is_a_column_of_its_view_in_a_live_database(fleet_url):
    live = _view_columns(fleet_url)
    checked = 0
    for path in sorted(WORKBOOKS_DIR.glob("*.twb")):
        doc = tda.Workbook(str(path))
        parameters = {name for ds in doc.datasources if ds.name == PARAMETERS_DATASOURCE for name in ds.fields}
        for ds in doc.datasources:
            if ds.name == PARAMETERS_DATASOURCE:
                continue
            relation = etree.parse(str(path)).find(f".//datasource[@name='{ds.name}']/connection/relation")
            schema, view = re.fullmatch(r"\[(\w+)\]\.\[(\w+)\]", relation.get("table")).groups()
            assert schema == SCHEMA and view in live, f"{path.name}: {relation.get('table')} is not a live view"
            calcs = {name: f.calculation for name, f in ds.fields.items() if f.calculation}
            for name, field in ds.fields.items():
                if not field.worksheets:
                    continue
                if name in calcs:
                    formula = calcs[name]
                    for param in re.findall(rf"\[{PARAMETERS_DATASOURCE}\]\.\[(\w+)\]", formula):
                        assert f"[{param}]" in parameters, f"{path.name}: {name} uses unknown parameter {param}"
                    formula = re.sub(rf"\[{PARAMETERS_DATASOURCE}\]\.\[\w+\]", "", formula)
                    refs = set(re.findall(r"\[(\w+)\]", formula)) - {n.strip("[]") for n in calcs}
                    missing = refs - live[view]
                    assert not missing, f"{path.name}: calculation {name} uses {missing} not in {view}"
                else:
                    assert name.strip("[]") in live[view], f"{path.name}: {name} is not a column of {view}"
                checked += 1
    assert checked > 40


def test_render_points_every_connection_at_the_deployment_and_keeps_files_valid(tmp_path):
    out = tmp_path / "deploy"
    done = subprocess.run([*CLI, "render", "--server", "pg.utility.example", "--db", "grid_prod", "--port", "6543",
                           "--out", str(out)], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    files = sorted(out.iterdir())
    assert [f.name for f in files] == sorted(p.name for p in shipped_files())
    for f in files:
        validate_file(f)
        if f.suffix == ".twb":
            conns = [c for ds in tda.Workbook(str(f)).datasources for c in ds.connections]
        else:
            conns = tda.Datasource.from_file(str(f)).connections
        assert conns and all((c.server, c.dbname, c.port) == ("pg.utility.example", "grid_prod", "6543")
                             for c in conns)
    # the shipped originals are untouched
    assert "pg.utility.example" not in (WORKBOOKS_DIR / "carbon.twb").read_text()


def test_render_refuses_a_bad_port_in_one_line(tmp_path):
    done = subprocess.run([*CLI, "render", "--server", "x", "--db", "y", "--port", "70000", "--out", str(tmp_path)],
                          capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 2
    assert done.stderr.strip() == "gridsight dashboards: error: --port 70000 is not a TCP port"
    assert not list(tmp_path.iterdir())


def test_validate_command_names_the_broken_file_in_one_line(tmp_path):
    bad = tmp_path / "broken.twb"
    bad.write_text((WORKBOOKS_DIR / "carbon.twb").read_text().replace(' version="18.1"', "", 1))
    done = subprocess.run([*CLI, "validate", str(WORKBOOKS_DIR / "carbon.twb"), str(bad)], capture_output=True,
                          text=True, cwd=REPO)
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"gridsight dashboards: error: {bad}:") and "version" in last


def test_table_calculations_run_along_a_column_of_their_view(fleet_url):
    live = _view_columns(fleet_url)
    orders = 0
    for path in sorted(WORKBOOKS_DIR.glob("*.twb")):
        root = etree.parse(str(path)).getroot()
        views = {ds.get("name"): re.search(r"\[(\w+)\]$", ds.find("connection/relation").get("table")).group(1)
                 for ds in root.iter("datasource") if ds.find("connection/relation") is not None}
        for order in root.iter("order"):
            ds, inst = re.fullmatch(r"\[([^\]]+)\]\.\[\w+:(\w+):\w+\]", order.get("field")).groups()
            assert inst in live[views[ds]], f"{path.name}: table calculation along {inst}, not a column"
            orders += 1
    assert orders >= 2


def test_every_policy_slider_position_is_accepted_by_the_collectors_policy_model():
    from collector.policy import day_profile_after

    sandbox = next(w for w in WORKBOOKS if w.file_stem == "policy_sandbox")
    defaults = {p.name: p.default for p in sandbox.parameters}
    hours, load, meters = list(range(24)), [10.0 + h for h in range(24)], [50] * 24
    for p in sandbox.parameters:
        steps = round((p.high - p.low) / p.step)
        for value in (p.low + i * p.step for i in range(steps + 1)):
            after = day_profile_after(hours, load, meters, **{**defaults, p.name: value})
            assert len(after) == 24 and all(v >= 0 for v in after), (p.name, value)


def test_render_writes_nothing_when_one_source_is_broken(tmp_path):
    from dashboards.files import render
    from dashboards.tableau_xml import Connection

    broken = tmp_path / "broken.twb"
    broken.write_text((WORKBOOKS_DIR / "carbon.twb").read_text().replace("<worksheets>", "<worksheets x='1'>", 1))
    out = tmp_path / "out"
    with pytest.raises(TableauFileError, match="broken.twb"):
        render(Connection("db.example"), out, [WORKBOOKS_DIR / "anomaly_map.twb", broken])
    assert not out.exists()
