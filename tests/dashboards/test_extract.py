"""`gridsight dashboards extract` writes the views into a Hyper file that Hyper's own SQL reads
back with the same counts and sums as PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from tableauhyperapi import Connection, HyperProcess, Telemetry

from dashboards.catalog import VIEWS
from dashboards.extract import HYPER_SCHEMA

REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "gridsight", "dashboards", "extract"]


def _pg_figures(url: str, view) -> tuple:
    measures = [c.name for c in view.columns if c.datatype in ("real", "integer")]
    sql = "SELECT count(*), " + ", ".join(f"sum({m})::float8" for m in measures) + f" FROM {view.qualified}"
    with psycopg.connect(url) as conn:
        return measures, conn.execute(sql).fetchone()


@pytest.fixture(scope="module")
def extract_file(fleet_db, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hyper") / "gridsight.hyper"
    done = subprocess.run([*CLI, "--out", str(out), "--database-url", fleet_db[0]], capture_output=True, text=True,
                          cwd=out.parent)
    assert done.returncode == 0, done.stderr
    assert "anomaly_map" in done.stderr  # progress is reported per view
    return out


def test_extract_holds_every_view_with_the_same_row_counts_and_sums_as_postgresql(extract_file, fleet_url):
    with HyperProcess(Telemetry.DO_NOT_SEND_USAGE_DATA_TO_TABLEAU, parameters={"log_config": ""}) as hyper, \
            Connection(hyper.endpoint, extract_file) as conn:
        tables = {t.name.unescaped for t in conn.catalog.get_table_names(HYPER_SCHEMA)}
        assert tables == {v.name for v in VIEWS}
        for view in VIEWS:
            measures, expected = _pg_figures(fleet_url, view)
            sql = ("SELECT count(*), " + ", ".join(f'CAST(sum("{m}") AS DOUBLE PRECISION)' for m in measures)
                   + f' FROM "{HYPER_SCHEMA}"."{view.name}"')
            got = conn.execute_list_query(sql)[0]
            assert got[0] == expected[0], view.name
            # the fixture has summaries, not raw readings: the views of raw readings are empty
            assert expected[0] > 0 or view.name in ("phase_voltage", "meter_channels"), view.name
            if expected[0]:
                assert got[1:] == pytest.approx(list(expected[1:]), rel=1e-9, nan_ok=True), view.name


def test_extract_keeps_times_flags_and_nulls_as_postgresql_has_them(extract_file, fleet_url):
    with psycopg.connect(fleet_url) as pg:
        flagged, first = pg.execute("SELECT count(*) FILTER (WHERE is_anomaly), "
                                    "to_char(min(interval_start) AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') "
                                    "FROM tableau.anomaly_map").fetchone()
        future = pg.execute("SELECT count(*) FROM tableau.forecast_vs_actual WHERE actual_kwh IS NULL").fetchone()[0]
    with HyperProcess(Telemetry.DO_NOT_SEND_USAGE_DATA_TO_TABLEAU, parameters={"log_config": ""}) as hyper, \
            Connection(hyper.endpoint, extract_file) as conn:
        got = conn.execute_list_query(f'SELECT count(*) FILTER (WHERE "is_anomaly"), '
                                      f'CAST(min("interval_start") AS TEXT) FROM "{HYPER_SCHEMA}"."anomaly_map"')[0]
        nulls = conn.execute_scalar_query(f'SELECT count(*) FROM "{HYPER_SCHEMA}"."forecast_vs_actual" '
                                          f'WHERE "actual_kwh" IS NULL')
    assert got == [flagged, first]
    assert nulls == future > 0


def test_extract_writes_no_hyper_log_file(extract_file):
    assert not list(extract_file.parent.glob("*.log"))
    assert [p.name for p in extract_file.parent.iterdir()] == ["gridsight.hyper"]


def test_extract_refuses_an_unreachable_database_in_one_line_and_leaves_no_file(tmp_path):
    from gridsight.local_services import free_port

    out = tmp_path / "x.hyper"
    done = subprocess.run([*CLI, "--out", str(out), "--database-url",
                           f"postgresql://postgres@127.0.0.1:{free_port()}/nope"], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.startswith("gridsight dashboards: error: cannot connect to PostgreSQL")
    assert len(done.stderr.strip().splitlines()) == 1
    assert not out.exists() and not list(tmp_path.iterdir())


def test_extract_names_an_unknown_view(tmp_path, fleet_url):
    done = subprocess.run([*CLI, "--out", str(tmp_path / "x.hyper"), "--database-url", fleet_url,
                           "--views", "anomaly_map,bogus"], capture_output=True, text=True)
    assert done.returncode == 2 and "bogus" in done.stderr


def test_extract_without_any_database_says_how_to_name_one(tmp_path):
    import os

    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    done = subprocess.run([*CLI, "--out", str(tmp_path / "x.hyper")], capture_output=True, text=True, env=env,
                          cwd=tmp_path)
    assert done.returncode == 2
    assert "--database-url" in done.stderr and "DATABASE_URL" in done.stderr


def test_extract_in_many_parts_holds_every_row_once(fleet_url, tmp_path):
    from dashboards.catalog import view
    from dashboards.extract import write_extract

    out = tmp_path / "parts.hyper"
    [result] = write_extract(fleet_url, out, [view("anomaly_map")], rows_per_part=997)
    measures, expected = _pg_figures(fleet_url, view("anomaly_map"))
    assert result.rows == expected[0] > 997 * 3
    with HyperProcess(Telemetry.DO_NOT_SEND_USAGE_DATA_TO_TABLEAU, parameters={"log_config": ""}) as hyper, \
            Connection(hyper.endpoint, out) as conn:
        got = conn.execute_list_query(f'SELECT count(*), count(DISTINCT "meter_id" || CAST("interval_start" AS TEXT)), '
                                      f'CAST(sum("kwh") AS DOUBLE PRECISION) FROM "{HYPER_SCHEMA}"."anomaly_map"')[0]
    assert got[0] == got[1] == expected[0]
    assert got[2] == pytest.approx(expected[1 + measures.index("kwh")])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["parts.hyper"]  # no parts left behind


def test_workbooks_rendered_onto_the_extract_find_every_field_they_use_in_it(extract_file, tmp_path):
    import re

    import tableaudocumentapi as tda
    from lxml import etree

    from dashboards.workbooks import PARAMETERS_DATASOURCE
    from dashboards.xsd import validate_file

    out = tmp_path / "offline"
    done = subprocess.run([*CLI[:-1], "render", "--hyper", str(extract_file), "--out", str(out)], capture_output=True,
                          text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    with HyperProcess(Telemetry.DO_NOT_SEND_USAGE_DATA_TO_TABLEAU, parameters={"log_config": ""}) as hyper, \
            Connection(hyper.endpoint, extract_file) as conn:
        columns = {t.name.unescaped: {c.name.unescaped for c in conn.catalog.get_table_definition(t).columns}
                   for t in conn.catalog.get_table_names(HYPER_SCHEMA)}
    checked = 0
    for path in sorted(out.glob("*.twb")):
        validate_file(path)
        root = etree.parse(str(path)).getroot()
        for ds in tda.Workbook(str(path)).datasources:
            if ds.name == PARAMETERS_DATASOURCE:
                continue
            assert [(c.dbclass, c.dbname) for c in ds.connections] == [("hyper", str(extract_file))]
            table = root.find(f".//datasource[@name='{ds.name}']/connection/relation").get("table")
            schema, name = re.fullmatch(r"\[(\w+)\]\.\[(\w+)\]", table).groups()
            assert schema == HYPER_SCHEMA and name in columns
            for field_name, field in ds.fields.items():
                if field.worksheets and not field.calculation:
                    assert field_name.strip("[]") in columns[name], (path.name, field_name)
                    checked += 1
    assert checked > 30


def test_an_empty_view_is_extracted_as_an_empty_table_not_an_error(fleet_url, tmp_path):
    from dashboards.catalog import view
    from dashboards.extract import write_extract

    with psycopg.connect(fleet_url) as conn:
        assert conn.execute("SELECT count(*) FROM tableau.phase_voltage").fetchone()[0] == 0  # no raw readings
    done = write_extract(fleet_url, tmp_path / "empty.hyper", [view("phase_voltage")])
    assert [(d.view, d.rows) for d in done] == [("phase_voltage", 0)]
