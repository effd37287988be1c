"""The collector's built-in dashboard page, served by the real API and looked at in headless
Chromium: the anomaly map draws every site of the period from its coordinates (no tile
server), the heatmap has a cell per weekday and hour, and the forecast chart shows the
forecast, its interval and the actuals. Only roles allowed to see aggregates get it."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import threading

import httpx
import psycopg
import pytest
from PIL import Image

from dashboards.browser import HeadlessChromium
from gridsight.local_services import free_port, wait_for_port

JWT_SECRET = "dashboard-page-tests-" + "x" * 40


@contextlib.contextmanager
def _serve(database_url: str):
    import uvicorn

    from collector.api.app import create_app
    from collector.auth import install_identity
    from collector.settings import CollectorSettings

    app = create_app(CollectorSettings(database_url=database_url), database_url=database_url, pool_size=2)
    ctx = install_identity(app, database_url, env={"GRIDSIGHT_JWT_SECRET": JWT_SECRET})
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for_port(port, 30)
    try:
        yield f"http://127.0.0.1:{port}", ctx
    finally:
        server.should_exit = True
        thread.join(15)


@pytest.fixture(scope="module")
def api(fleet_db):
    with _serve(fleet_db[0]) as (url, ctx):
        keys = {role: ctx.store.create_api_key(f"page-test-{role}", role)[1]
                for role in ("analyst", "policymaker", "technician")}
        yield url, keys


def _sites_in_period(url: str, days: int, region: str | None = None) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("""
            SELECT DISTINCT site_id FROM tableau.anomaly_map
            WHERE interval_start >= (SELECT max(bucket) + interval '1 hour' FROM readings_hourly)
                                    - make_interval(days => %s)
              AND (%s::text IS NULL OR region = %s)""", (days, region, region)).fetchall()
    return {r[0] for r in rows}


# GRIDSIGHT_SCREENSHOTS=docs/img refreshes the screenshots the docs show
SHOTS = os.environ.get("GRIDSIGHT_SCREENSHOTS")

_DRAWN_SITES = ("[...document.querySelectorAll('#anomaly-map circle.site')].map(c => c.dataset.site).concat("
                "[...document.querySelectorAll('#anomaly-map g.cluster')].flatMap(g => g.dataset.sites.split(' ')))")


def _keep(shot, name: str) -> None:
    if SHOTS:
        shutil.copy(shot, os.path.join(SHOTS, name))


def _flags_and_threshold(url: str, days: int) -> tuple[dict[str, int], float]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("""
            SELECT site_id, count(*) FILTER (WHERE is_anomaly) FROM tableau.anomaly_map
            WHERE interval_start >= (SELECT max(bucket) + interval '1 hour' FROM readings_hourly)
                                    - make_interval(days => %s)
            GROUP BY site_id""", (days,)).fetchall()
        threshold = conn.execute("SELECT max(threshold) FROM anomaly_flags").fetchone()[0]
    return dict(rows), threshold


@pytest.mark.slow
def test_dashboard_in_headless_chromium_draws_every_site_over_a_basemap_each_hour_and_the_forecast(
        api, fleet_url, tmp_path):
    url, keys = api
    with HeadlessChromium(width=1240, height=900) as browser:
        assert browser.open(f"{url}/dashboard?days=3", headers={"X-API-Key": keys["analyst"]}) == 200
        drawn = browser.evaluate(_DRAWN_SITES)
        land = browser.evaluate("document.querySelector('#anomaly-map .basemap path').getAttribute('d').length")
        regions = browser.evaluate("[...document.querySelectorAll('#anomaly-map g.region')].map(g => g.dataset.region)")
        cells = browser.evaluate("document.querySelectorAll('#consumption-heatmap rect.cell').length")
        parts = browser.evaluate("['forecast-line', 'actual-line', 'prediction-interval', 'heatmap-scale']"
                                 ".map(id => !!document.getElementById(id))")
        external = browser.evaluate("performance.getEntriesByType('resource').map(r => r.name)")
        shot = browser.screenshot(tmp_path / "dashboard.png")
    _keep(shot, "dashboard.png")
    assert sorted(drawn) == sorted(_sites_in_period(fleet_url, 3))     # each site once, alone or in a cluster
    assert land > 1000                                                  # coastlines, not an empty frame
    assert len(regions) >= 2
    assert cells == 7 * 24
    assert parts == [True, True, True, True]
    assert external == []  # no tile server, no scripts, no fonts fetched: everything is inline
    image = Image.open(shot).convert("RGB")
    assert image.width == 1240
    reds = sum(1 for r, g, b in image.getdata() if r > 180 and g < 80 and b < 80)
    assert reds > 50  # flagged sites are drawn red on the map


def test_site_colour_is_its_score_against_the_model_threshold_and_size_grows_with_its_flags(api, fleet_url):
    url, keys = api
    page = httpx.get(f"{url}/dashboard", params={"days": 8}, headers={"X-API-Key": keys["analyst"]}).text
    flags, threshold = _flags_and_threshold(fleet_url, 8)
    assert f"model threshold <b>{threshold:.3f}</b>" in page
    import re
    dots = re.findall(r'<circle class="site" data-site="([^"]+)" data-flags="(\d+)" data-severity="(\w+)" '
                      r'cx="[^"]+" cy="[^"]+" r="([^"]+)"', page)
    assert dots, "no single-site dot drawn"
    for site, n, severity, _ in dots:
        assert int(n) == flags[site]
        # every site with a flag had an interval beyond the threshold: never "borderline" by comparison
        assert severity == ("flagged" if flags[site] else "normal"), (site, n, severity)
    by_flags = sorted((int(n), float(r)) for _, n, _, r in dots)
    assert [r for _, r in by_flags] == sorted(r for _, r in by_flags)      # more flags, never a smaller dot
    assert by_flags[0][0] < by_flags[-1][0] and by_flags[0][1] < by_flags[-1][1]


def test_page_fits_a_360_px_phone_without_sideways_scrolling(api, tmp_path):
    url, keys = api
    with HeadlessChromium(width=360, height=780) as browser:
        assert browser.open(f"{url}/dashboard?days=3", headers={"X-API-Key": keys["analyst"]}) == 200
        scroll = browser.evaluate("document.documentElement.scrollWidth")
        widths = browser.evaluate("[...document.querySelectorAll('section')].map(s => s.getBoundingClientRect().right)"
                                  ".concat([document.getElementById('anomaly-map').getBoundingClientRect().right])")
        shot = browser.screenshot(tmp_path / "phone.png")
    _keep(shot, "dashboard-360px.png")
    assert scroll <= 360
    assert all(0 < right <= 360 for right in widths)


def test_heatmap_scale_is_numeric_and_one_outlier_does_not_set_the_shading():
    from collector.api.page_render import HeatCell, heatmap_svg

    cells = [HeatCell(d, h, 1.0 + 0.02 * h) for d in range(1, 8) for h in range(24)]
    cells[0] = HeatCell(1, 0, 500.0)       # a meter reading gone wild
    svg = heatmap_svg(cells)
    import re
    fills = dict(re.findall(r'data-dow="7" data-hour="(\d+)"[^>]*fill="(#[0-9a-f]{6})"', svg))
    assert len(set(fills.values())) > 12          # the ordinary hours still span the scale
    ticks = [float(t) for t in re.findall(r'class="scale-tick"[^>]*>([0-9.]+)<', svg)]
    assert len(ticks) >= 3 and max(ticks) < 3     # the scale's numbers are the ordinary range, in kWh


def test_forecast_axis_has_units_round_ticks_and_no_negative_energy():
    from datetime import datetime, timedelta, timezone

    from collector.api.page_render import ForecastPoint, forecast_svg

    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    points = [ForecastPoint(t0 + timedelta(hours=i), 300 + 100 * (i % 24 > 12), -33.0, 430.0, 280.0) for i in range(72)]
    svg = forecast_svg(points, scope_label="all regions")
    import re
    ticks = [float(t.replace(",", "")) for t in re.findall(r'class="y-tick"[^>]*>([0-9,.]+)<', svg)]
    assert ticks[0] == 0 and all(t % 100 == 0 for t in ticks) and ticks[-1] >= 430
    assert "kWh per hour" in svg
    assert "-" not in "".join(re.findall(r'class="y-tick"[^>]*>([^<]+)<', svg))


def test_an_unknown_region_gets_a_404_page_that_lists_the_regions(api, fleet_info):
    url, keys = api
    page = httpx.get(f"{url}/dashboard", params={"region": "nope"}, headers={"X-API-Key": keys["analyst"]})
    assert page.status_code == 404 and page.headers["content-type"].startswith("text/html")
    assert "No region named nope" in page.text and "collector forecast" not in page.text
    assert all(f'?region={r}"' in page.text for r in fleet_info["regions"])


def test_region_filter_shows_only_that_regions_sites(api, fleet_url, fleet_info):
    url, keys = api
    region = fleet_info["regions"][0]
    page = httpx.get(f"{url}/dashboard", params={"region": region, "days": 8}, headers={"X-API-Key": keys["analyst"]})
    assert page.status_code == 200
    for site in _sites_in_period(fleet_url, 8):
        drawn = f'data-site="{site}"' in page.text or re.search(rf'data-sites="[^"]*\b{site}\b', page.text)
        assert bool(drawn) == (site in _sites_in_period(fleet_url, 8, region))


def test_page_needs_a_role_that_may_see_aggregates_and_policymakers_get_regions_not_sites(api, tmp_path):
    url, keys = api
    assert httpx.get(f"{url}/dashboard").status_code == 401
    assert httpx.get(f"{url}/dashboard", headers={"X-API-Key": keys["technician"]}).status_code == 403
    with HeadlessChromium(width=1240, height=900) as browser:
        assert browser.open(f"{url}/dashboard?days=3", headers={"X-API-Key": keys["policymaker"]}) == 200
        sites = browser.evaluate("document.querySelectorAll('[data-site], [data-sites]').length")
        regions = browser.evaluate("document.querySelectorAll('#anomaly-map circle.region-aggregate').length")
        shot = browser.screenshot(tmp_path / "policymaker.png")
    _keep(shot, "dashboard-policymaker.png")
    assert sites == 0 and regions >= 2


@pytest.mark.slow
def test_one_region_view_in_headless_chromium(api, fleet_info, tmp_path):
    url, keys = api
    region = "metro-north" if "metro-north" in fleet_info["regions"] else fleet_info["regions"][0]
    with HeadlessChromium(width=1240, height=900) as browser:
        assert browser.open(f"{url}/dashboard?region={region}&days=4", headers={"X-API-Key": keys["analyst"]}) == 200
        outlines = browser.evaluate("[...document.querySelectorAll('#anomaly-map g.region')].map(g => g.dataset.region)")
        shot = browser.screenshot(tmp_path / "region.png")
    _keep(shot, "dashboard-region.png")
    assert outlines == [region]


def test_bad_parameters_are_refused_naming_the_parameter(api):
    url, keys = api
    for params, name in (({"region": "no spaces!"}, "region"), ({"days": 0}, "days")):
        answer = httpx.get(f"{url}/dashboard", params=params, headers={"X-API-Key": keys["analyst"]})
        assert answer.status_code == 422
        assert answer.json()["detail"][0]["loc"] == ["query", name]


@pytest.mark.slow
def test_screenshot_command_writes_a_png_of_the_dashboard_and_names_a_refusal(api, tmp_path):
    import os
    import subprocess
    import sys

    url, keys = api
    cli = [sys.executable, "-m", "gridsight", "dashboards", "screenshot", "--url", f"{url}/dashboard"]
    out = tmp_path / "page.png"
    done = subprocess.run([*cli, "--out", str(out)], capture_output=True, text=True,
                          env={**os.environ, "GRIDSIGHT_API_KEY": keys["analyst"]})
    assert done.returncode == 0, done.stderr
    assert Image.open(out).width == 1240
    env = {k: v for k, v in os.environ.items() if k != "GRIDSIGHT_API_KEY"}
    refused = subprocess.run([*cli, "--out", str(tmp_path / "no.png")], capture_output=True, text=True, env=env)
    assert refused.returncode == 2
    assert "HTTP 401" in refused.stderr and "GRIDSIGHT_API_KEY" in refused.stderr
    assert not (tmp_path / "no.png").exists()
