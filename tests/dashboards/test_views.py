"""The ``tableau`` schema on a simulated fleet: every view answers, its columns match the
catalog the workbooks are built from, and the reader role sees these views and nothing else."""

from __future__ import annotations

import psycopg
import pytest

from dashboards.catalog import READER_ROLE, SCHEMA, VIEWS

PERSONAL = ("name_enc", "address_enc", "contact_enc", "wrapped_key", "customer_id", "email", "password")


def _rows(url: str, sql: str, *params):
    with psycopg.connect(url, options="-c TimeZone=UTC") as conn:
        return conn.execute(sql, params).fetchall()


def test_every_catalog_view_exists_with_exactly_the_catalog_columns_in_order(fleet_url):
    for view in VIEWS:
        cols = _rows(fleet_url, "SELECT column_name FROM information_schema.columns "
                                "WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position",
                     SCHEMA, view.name)
        assert [c for (c,) in cols] == [c.name for c in view.columns], view.name


def test_anomaly_map_places_every_scored_interval_at_its_site_with_the_injected_kind(fleet_url, fleet_info):
    total, flagged, located = _rows(fleet_url, """
        SELECT count(*), count(*) FILTER (WHERE is_anomaly),
               count(*) FILTER (WHERE latitude IS NOT NULL AND longitude IS NOT NULL)
        FROM tableau.anomaly_map""")[0]
    assert total == fleet_info["summaries"]
    assert flagged == fleet_info["flags"] > 0
    assert located == total
    kinds = {k for (k,) in _rows(fleet_url, "SELECT DISTINCT anomaly_kind FROM tableau.anomaly_map WHERE is_anomaly")}
    injected = {e.kind for e in fleet_info["fleet"].labels() if e.is_consumption}
    assert kinds and kinds <= injected
    site_of = {s[0]: (s[4], s[5]) for s in fleet_info["sites"]}
    for site_id, lat, lon in _rows(fleet_url, "SELECT DISTINCT site_id, latitude, longitude FROM tableau.anomaly_map"):
        assert (lat, lon) == pytest.approx(site_of[site_id])


def test_consumption_pattern_covers_every_hour_and_weekday_and_adds_up_to_the_rollup(fleet_url):
    cells = _rows(fleet_url, "SELECT count(DISTINCT (day_of_week, hour_of_day)), min(day_of_week), "
                             "max(day_of_week), sum(total_kwh) FROM tableau.consumption_pattern")[0]
    assert cells[:3] == (7 * 24, 1, 7)
    (rollup,) = _rows(fleet_url, "SELECT sum(kwh) FROM readings_hourly")[0]
    assert cells[3] == pytest.approx(rollup)
    monday = _rows(fleet_url, "SELECT DISTINCT weekday FROM tableau.consumption_pattern WHERE day_of_week = 1")
    assert monday == [("Monday",)]


def test_urban_and_rural_regions_are_compared_day_by_day(fleet_url, fleet_info):
    rows = _rows(fleet_url, "SELECT area_type, count(DISTINCT region), sum(total_kwh), sum(meters) "
                            "FROM tableau.regional_comparison GROUP BY 1 ORDER BY 1")
    assert [r[0] for r in rows] == ["rural", "urban"]
    (summed,) = _rows(fleet_url, "SELECT sum(kwh) FROM interval_summaries")[0]
    assert sum(r[2] for r in rows) == pytest.approx(summed)
    per_meter = _rows(fleet_url, "SELECT bool_and(abs(kwh_per_meter * meters - total_kwh) < 1e-6) "
                                 "FROM tableau.regional_comparison")
    assert per_meter == [(True,)]


def test_policy_sandbox_inputs_give_each_region_a_24_hour_profile_with_peak_above_average(fleet_url, fleet_info):
    rows = _rows(fleet_url, "SELECT region, count(*), bool_and(peak_kwh >= avg_kwh) "
                            "FROM tableau.policy_sandbox_inputs GROUP BY region ORDER BY region")
    assert [r[0] for r in rows] == fleet_info["regions"]
    assert all(r[1] == 24 and r[2] for r in rows)


def test_reader_role_reads_the_views_and_nothing_else(reader_url):
    url = reader_url
    for view in VIEWS:
        _rows(url, f"SELECT * FROM {view.qualified} LIMIT 1")
    for table in ("meters", "interval_summaries", "customers", "dead_letters"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            _rows(url, f"SELECT 1 FROM public.{table} LIMIT 1")
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        _rows(url, "CREATE TABLE tableau.scratch (x int)")


def test_no_view_exposes_a_personal_field(fleet_url):
    cols = _rows(fleet_url, "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = %s",
                 SCHEMA)
    assert cols
    assert not [c for c in cols if any(p in c[1] for p in PERSONAL)]
    grants = _rows(fleet_url, "SELECT DISTINCT table_schema FROM information_schema.role_table_grants "
                              "WHERE grantee = %s", READER_ROLE)
    assert grants == [(SCHEMA,)]


def test_forecast_vs_actual_shows_each_forecast_step_beside_the_measured_energy(fleet_url, fleet_info):
    rows = _rows(fleet_url, """
        SELECT scope, scope_id, count(*), count(actual_kwh), bool_and(lower_kwh <= forecast_kwh AND
               forecast_kwh <= upper_kwh) FROM tableau.forecast_vs_actual GROUP BY 1, 2 ORDER BY 1, 2""")
    assert {(r[0], r[1]): r[2] for r in rows} == fleet_info["forecasts"]
    for scope, scope_id, steps, measured, ordered in rows:
        assert measured == 48 and ordered, (scope, scope_id)   # two measured days, the third is the future
    system = _rows(fleet_url, """
        SELECT f.actual_kwh, (SELECT sum(kwh) FROM readings_hourly h WHERE h.bucket = f.period_start)
        FROM tableau.forecast_vs_actual f WHERE scope = 'system' AND actual_kwh IS NOT NULL""")
    assert all(a == pytest.approx(b) for a, b in system)


def test_carbon_uses_a_regions_own_intensity_else_the_system_figure(fleet_url, fleet_info):
    rows = _rows(fleet_url, """
        SELECT c.region, c.co2_kg, c.kwh, c.intensity_g_per_kwh, ci.intensity_g_per_kwh
        FROM tableau.carbon_by_region c
        JOIN carbon_intensity ci ON ci.area = 'system' AND ci.hour_start = c.hour_start""")
    assert {r[0] for r in rows} == set(fleet_info["regions"])
    for region, co2, kwh, used, system in rows:
        expected = system - 100.0 if region == fleet_info["carbon_region"] else system
        assert used == pytest.approx(expected)
        assert co2 == pytest.approx(kwh * expected / 1000.0)


def test_migration_downgrades_cleanly_and_upgrades_again(database_url):
    from collector.db import migrate
    from collector.db import alembic_config
    from alembic import command

    migrate(database_url)
    command.downgrade(alembic_config(database_url), "0003_identity")
    assert _rows(database_url, "SELECT count(*) FROM information_schema.schemata WHERE schema_name = %s", SCHEMA) == [(0,)]
    assert _rows(database_url, "SELECT count(*) FROM information_schema.columns "
                               "WHERE table_name = 'sites' AND column_name = 'area_type'") == [(0,)]
    migrate(database_url)
    views = _rows(database_url, "SELECT count(*) FROM information_schema.views WHERE table_schema = %s", SCHEMA)
    assert views == [(len(VIEWS) + 3,)]  # the catalog's views and the three helpers


def test_a_view_added_later_to_the_schema_is_readable_by_the_reader(fleet_url, reader_url):
    with psycopg.connect(fleet_url, autocommit=True) as conn:
        conn.execute("CREATE VIEW tableau.later_view AS SELECT count(*) AS meters FROM meters")
    try:
        assert _rows(reader_url, "SELECT meters FROM tableau.later_view")[0][0] > 0
    finally:
        with psycopg.connect(fleet_url, autocommit=True) as conn:
            conn.execute("DROP VIEW tableau.later_view")


def test_anomaly_map_keeps_a_flag_without_summary_and_one_row_per_reflagged_interval(database_url):
    import asyncio

    from collector.db import migrate
    from collector.db.writer import BatchWriter, Received
    from gridsight.wire import AnomalyFlag, IntervalSummary, MeterSummary, encode, topic_for

    migrate(database_url)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("INSERT INTO regions (id, name) VALUES ('r1', 'R1')")
        conn.execute("INSERT INTO sites (id, name, region_id, lat, lon, area_type) VALUES ('s1', 's1', 'r1', 40, -75, 'rural')")
        conn.execute("INSERT INTO gateways (id, site_id) VALUES ('gw1', 's1')")
        conn.execute("INSERT INTO meters (id, gateway_id, site_id) VALUES ('m1', 'gw1', 's1')")
    t0, t1 = 1_767_225_600.0, 1_767_226_500.0

    def flag(seq: int, t: float, kind: str, received: float) -> Received:
        return Received(topic_for("gw1", "flag"), encode(AnomalyFlag("gw1", seq, "v1", t + 900, "m1", t, 900, -0.2, 0.0,
                                                                     0.01, reason=f"kwh 0.01 vs profile ({kind})")),
                        received)

    messages = [Received(topic_for("gw1", "summary"), encode(IntervalSummary(
                    "gw1", 1, "v1", t0 + 900, t0, 900, (MeterSummary("m1", 0.01, 15, 40.0, 60.0, -0.2, True),))),
                    t0 + 901),
                flag(2, t0, "drop", t0 + 902), flag(3, t0, "theft", t0 + 990),   # re-flagged after a restart
                flag(4, t1, "spike", t1 + 901)]                                   # its summary never arrived

    async def ingest() -> None:
        writer = BatchWriter(database_url, archive=False, unknown_gateways="register")
        await writer.write(messages)
        await writer.close()

    asyncio.run(ingest())
    rows = _rows(database_url, "SELECT extract(epoch FROM interval_start), is_anomaly, anomaly_kind, site_id, area_type "
                               "FROM tableau.anomaly_map ORDER BY interval_start")
    assert [(float(r[0]), *r[1:]) for r in rows] == [(t0, True, "theft", "s1", "rural"), (t1, True, "spike", "s1", "rural")]
