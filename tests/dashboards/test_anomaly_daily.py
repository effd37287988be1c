"""``tableau.anomaly_daily`` (migration 0012), what the anomaly map's worksheets read: the same
figures as ``tableau.anomaly_map`` per meter, day and kind, current the moment data is ingested
(before any refresh), after the hourly refresh, after a registry move, and while a writer is
still in flight when the refresh runs. Real PostgreSQL and the collector's own ingest writer."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

DAY = 86_400

# tableau.anomaly_map grouped as anomaly_daily groups it: the figures the rollup must reproduce
FROM_MAP = """
    SELECT meter_id, (interval_start AT TIME ZONE 'UTC')::date, anomaly_kind, count(*), min(score), sum(kwh),
           site_id, region, bool_or(is_anomaly), count(*) FILTER (WHERE is_anomaly)
    FROM tableau.anomaly_map GROUP BY meter_id, 2, anomaly_kind, site_id, region"""
FROM_DAILY = """
    SELECT meter_id, day, anomaly_kind, intervals, min_score, kwh, site_id, region, is_anomaly, flagged_intervals
    FROM tableau.anomaly_daily"""

# the "Sites by score" worksheet as Tableau sends it, before 0012 (anomaly_map) and now (anomaly_daily)
SITES_BEFORE = """
    SELECT site_id, feeder, AVG(latitude), AVG(longitude), MIN(score), SUM(CASE WHEN is_anomaly THEN 1 ELSE 0 END)
    FROM tableau.anomaly_map WHERE interval_start >= %(since)s GROUP BY 1, 2"""
SITES_NOW = """
    SELECT site_id, feeder, AVG(latitude), AVG(longitude), MIN(min_score), SUM(flagged_intervals)
    FROM tableau.anomaly_daily WHERE day >= (%(since)s AT TIME ZONE 'UTC')::date GROUP BY 1, 2"""


def _rows(conn, sql: str, floats: tuple[int, ...] = (4, 5), **params) -> list[tuple]:
    return sorted(conn.execute(sql, params).fetchall(),
                  key=lambda r: tuple(str(x) for i, x in enumerate(r) if i not in floats))


def _assert_same(conn) -> int:
    expected, got = _rows(conn, FROM_MAP), _rows(conn, FROM_DAILY)
    assert [r[:4] + r[6:] for r in got] == [r[:4] + r[6:] for r in expected]
    assert [r[4:6] for r in got] == [pytest.approx(r[4:6]) for r in expected]
    return len(got)


@pytest.fixture
def fleet(small_fleet):
    url, info = small_fleet
    with psycopg.connect(url, autocommit=True, options="-c TimeZone=UTC") as conn:
        yield conn, info


def _ingest(url: str, messages) -> None:
    from collector.db.writer import BatchWriter

    async def run() -> None:
        writer = BatchWriter(url, archive=False, unknown_gateways="register")
        try:
            await writer.write(messages)
        finally:
            await writer.close()

    asyncio.run(run())


def _summary(gw: str, seq: int, meter: str, t: float, kwh: float, score: float, anomalous: bool):
    from collector.db.writer import Received
    from gridsight.wire import IntervalSummary, MeterSummary, encode, topic_for

    return Received(topic_for(gw, "summary"), encode(IntervalSummary(
        gw, seq, "v-new", t + 900, t, 900, (MeterSummary(meter, kwh, 15, 40.0, 60.0, score, anomalous),))), t + 901)


def _flag(gw: str, seq: int, meter: str, t: float, kind: str, received: float):
    from collector.db.writer import Received
    from gridsight.wire import AnomalyFlag, encode, topic_for

    return Received(topic_for(gw, "flag"), encode(AnomalyFlag(
        gw, seq, "v-new", t + 900, meter, t, 900, -0.3, 0.0, 0.02, reason=f"kwh 0.02 vs profile ({kind})")), received)


def test_the_map_worksheet_draws_the_same_sites_from_the_rollup_as_from_every_interval(fleet_url, fleet_info):
    import datetime as dt

    since = dt.datetime.fromtimestamp(fleet_info["end"] - 3 * DAY, dt.timezone.utc)
    with psycopg.connect(fleet_url, options="-c TimeZone=UTC") as conn:
        before = _rows(conn, SITES_BEFORE, floats=(2, 3, 4), since=since)
        now = _rows(conn, SITES_NOW, floats=(2, 3, 4), since=since)
    assert len(now) == len(fleet_info["sites"]) and sum(r[5] for r in now) > 0
    assert [r[:2] + r[5:] for r in now] == [r[:2] + r[5:] for r in before]
    assert [r[2:5] for r in now] == [pytest.approx(r[2:5]) for r in before]


def test_daily_rollup_has_the_anomaly_maps_figures_before_and_after_the_refresh(fleet):
    conn, info = fleet
    # straight after ingest every stored day is a change, computed from the facts when read
    assert _assert_same(conn) > 0
    assert conn.execute("SELECT count(*) FROM anomaly_daily").fetchone() == (0,)
    conn.execute("SELECT gridsight_refresh_tableau_rollups()")
    assert conn.execute("SELECT gridsight_refresh_anomaly_daily()").fetchone() == (0,)                                # the maintenance call already did them all
    assert conn.execute("SELECT count(*) FROM anomaly_daily_changes").fetchone() == (0,)
    assert conn.execute("SELECT count(*) FROM anomaly_daily").fetchone()[0] > 0
    assert _assert_same(conn) > 0
    flagged = conn.execute("SELECT sum(flagged_intervals) FROM tableau.anomaly_daily").fetchone()[0]
    assert flagged == info["flags"] > 0


def test_newly_ingested_data_shows_at_once_without_a_refresh(fleet, database_url):
    conn, info = fleet
    conn.execute("SELECT gridsight_refresh_tableau_rollups()")
    meter, gw, _ = _first_meter(conn)
    before = dict(conn.execute("SELECT anomaly_kind, sum(intervals) FROM tableau.anomaly_daily GROUP BY 1").fetchall())
    new_day = info["start"] + 4 * DAY   # a day the fleet never sent
    flagged_t = conn.execute("SELECT extract(epoch FROM interval_start) FROM anomaly_flags WHERE meter_id = %s "
                             "ORDER BY interval_start LIMIT 1", (meter,)).fetchone()
    messages = [_summary(gw, 90_001, meter, new_day, 0.5, 0.07, False),
                _summary(gw, 90_002, meter, new_day + 900, 0.01, -0.3, True),
                _flag(gw, 90_003, meter, new_day + 900, "theft", new_day + 1900),
                _flag(gw, 90_004, meter, new_day + 1800, "spike", new_day + 2800)]   # its summary never came
    if flagged_t:                                     # an old interval re-flagged with another kind
        messages.append(_flag(gw, 90_005, meter, float(flagged_t[0]), "relabelled", new_day + 3000))
    _ingest(database_url, messages)

    assert _assert_same(conn) > 0
    after = dict(conn.execute("SELECT anomaly_kind, sum(intervals) FROM tableau.anomaly_daily GROUP BY 1").fetchall())
    assert after["none"] == before["none"] + 1
    assert after["theft"] == before.get("theft", 0) + 1
    assert after["spike"] == before.get("spike", 0) + 1
    if flagged_t:
        assert after["relabelled"] == before.get("relabelled", 0) + 1
    # the hourly refresh folds the changed days into the rollup; the figures stay the same
    conn.execute("SELECT gridsight_refresh_tableau_rollups()")
    assert conn.execute("SELECT count(*) FROM anomaly_daily_changes").fetchone() == (0,)
    assert conn.execute("SELECT count(*) FROM anomaly_daily WHERE anomaly_kind = 'spike' AND day = %s::date",
                        (_iso_day(new_day),)).fetchone() == (1,)
    assert _assert_same(conn) > 0


def test_a_day_not_yet_over_stays_computed_from_the_facts_with_one_change_row(fleet, database_url):
    conn, info = fleet
    meter, gw, _ = _first_meter(conn)
    for seq in (91_001, 91_002, 91_003):
        _ingest(database_url, [_summary(gw, seq, meter, info["start"] + 3 * DAY + (seq - 91_000) * 900, 0.3, 0.06, False)])
    # "today" is the fleet's last day: it keeps one change row, so it is still read from the facts
    conn.execute("SELECT gridsight_refresh_anomaly_daily(%s::date)", (_iso_day(info["start"] + 3 * DAY),))
    assert conn.execute("SELECT day::text, count(*) FROM anomaly_daily_changes GROUP BY 1").fetchall() == [
        (_iso_day(info["start"] + 3 * DAY), 1)]
    assert _assert_same(conn) > 0


def test_a_meter_moved_to_another_site_and_region_is_shown_there_at_once(fleet):
    conn, info = fleet
    conn.execute("SELECT gridsight_refresh_tableau_rollups()")
    meter, _, site = _first_meter(conn)
    other_site, other_region = conn.execute(
        "SELECT s.id, s.region_id FROM sites s WHERE s.region_id <> (SELECT region_id FROM sites WHERE id = %s) "
        "ORDER BY s.id LIMIT 1", (site,)).fetchone()
    conn.execute("UPDATE meters SET site_id = %s WHERE id = %s", (other_site, meter))
    regions = conn.execute("SELECT DISTINCT site_id, region FROM tableau.anomaly_daily WHERE meter_id = %s",
                           (meter,)).fetchall()
    assert regions == [(other_site, other_region)]
    assert _assert_same(conn) > 0


def test_deleted_summaries_leave_the_rollup(fleet, database_url):
    conn, info = fleet
    conn.execute("SELECT gridsight_refresh_tableau_rollups()")
    meter, _, _ = _first_meter(conn)
    conn.execute("DELETE FROM interval_summaries WHERE meter_id = %s AND interval_start < %s::timestamptz + interval '1 day'",
                 (meter, _iso_day(info["start"])))
    assert _assert_same(conn) > 0
    conn.execute("SELECT gridsight_refresh_tableau_rollups()")
    assert _assert_same(conn) > 0
    # retention-like: the first day's facts all gone but its last hour; the refresh, run from a
    # session far east of UTC (where that hour is already the next day), keeps that UTC day
    for table in ("interval_summaries", "anomaly_flags"):
        conn.execute(f"DELETE FROM {table} WHERE interval_start < %s::timestamptz + interval '23 hours'",
                     (_iso_day(info["start"]),))
    conn.execute("SELECT gridsight_refresh_tableau_rollups()")
    with psycopg.connect(database_url, autocommit=True, options="-c TimeZone=Asia/Tokyo") as tokyo:
        tokyo.execute("SELECT gridsight_refresh_tableau_rollups()")
    assert conn.execute("SELECT count(*) FROM anomaly_daily WHERE day = %s::date",
                        (_iso_day(info["start"]),)).fetchone()[0] > 0
    assert _assert_same(conn) > 0


def test_refresh_does_not_wait_for_a_writer_in_flight_and_loses_nothing_it_wrote(fleet, database_url):
    conn, info = fleet
    conn.execute("SELECT gridsight_refresh_tableau_rollups()")
    meter, gw, _ = _first_meter(conn)
    with psycopg.connect(database_url, options="-c TimeZone=UTC") as writer:
        writer.execute("INSERT INTO interval_summaries (meter_id, interval_start, interval_s, kwh, readings, score, "
                       "anomalous, model_version, gateway_id, seq, received_at) "
                       "VALUES (%s, %s::timestamptz + interval '6 hours', 900, 7.5, 15, -0.5, true, 'v', %s, 1, now())",
                       (meter, _iso_day(info["start"]), gw))
        # the writer has not committed: the refresh neither sees its row nor waits for it
        with psycopg.connect(database_url, autocommit=True, options="-c statement_timeout=20000") as maint:
            assert maint.execute("SELECT gridsight_refresh_anomaly_daily()").fetchone() == (0,)
        writer.commit()
    # its change row committed with it, so the day is read from the facts and includes the row
    assert conn.execute("SELECT count(*) FROM anomaly_daily_changes WHERE day = %s::date",
                        (_iso_day(info["start"]),)).fetchone() == (1,)
    assert _assert_same(conn) > 0
    conn.execute("SELECT gridsight_refresh_anomaly_daily()")
    assert conn.execute("SELECT intervals, kwh FROM anomaly_daily WHERE meter_id = %s AND day = %s::date "
                        "AND anomaly_kind = 'unexplained'", (meter, _iso_day(info["start"]))).fetchone() == (1, 7.5)
    assert _assert_same(conn) > 0


def _first_meter(conn) -> tuple[str, str, str]:
    return conn.execute("SELECT id, gateway_id, site_id FROM meters ORDER BY id LIMIT 1").fetchone()


def _iso_day(t: float) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(t, dt.timezone.utc).date().isoformat()
