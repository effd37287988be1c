"""The collector's built-in dashboard page, served by the real API and looked at in headless
Chromium: the anomaly map draws every site of the period from its coordinates (no tile
server), the heatmap has a cell per weekday and hour, and the forecast chart shows the
forecast, its interval and the actuals. Only roles allowed to see aggregates get it."""

from __future__ import annotations

import contextlib
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


def test_dashboard_in_headless_chromium_draws_every_site_each_hour_and_the_forecast(api, fleet_url, tmp_path):
    url, keys = api
    with HeadlessChromium(width=1240, height=900) as browser:
        assert browser.open(f"{url}/dashboard?days=3", headers={"X-API-Key": keys["analyst"]}) == 200
        drawn = set(browser.evaluate("[...document.querySelectorAll('#anomaly-map circle.site')]"
                                     ".map(c => c.dataset.site)"))
        flagged = browser.evaluate("document.querySelectorAll('#anomaly-map circle.site:not([data-flags=\"0\"])')"
                                   ".length")
        cells = browser.evaluate("document.querySelectorAll('#consumption-heatmap rect.cell').length")
        parts = browser.evaluate("['forecast-line', 'actual-line', 'prediction-interval']"
                                 ".map(id => !!document.getElementById(id))")
        external = browser.evaluate("performance.getEntriesByType('resource').map(r => r.name)")
        shot = browser.screenshot(tmp_path / "dashboard.png")
    assert drawn == _sites_in_period(fleet_url, 3) and flagged > 0
    assert cells == 7 * 24
    assert parts == [True, True, True]
    assert external == []  # no tile server, no scripts, no fonts fetched: everything is inline
    image = Image.open(shot).convert("RGB")
    assert image.width == 1240
    reds = sum(1 for r, g, b in image.getdata() if r > 180 and g < 80 and b < 80)
    assert reds > 50  # anomalous sites are drawn red on the map


def test_region_filter_shows_only_that_regions_sites(api, fleet_url, fleet_info):
    url, keys = api
    region = fleet_info["regions"][0]
    page = httpx.get(f"{url}/dashboard", params={"region": region, "days": 8}, headers={"X-API-Key": keys["analyst"]})
    assert page.status_code == 200
    for site in _sites_in_period(fleet_url, 8):
        assert (f'data-site="{site}"' in page.text) == (site in _sites_in_period(fleet_url, 8, region))


def test_page_needs_a_role_that_may_see_aggregates(api):
    url, keys = api
    assert httpx.get(f"{url}/dashboard").status_code == 401
    assert httpx.get(f"{url}/dashboard", headers={"X-API-Key": keys["technician"]}).status_code == 403
    assert httpx.get(f"{url}/dashboard", headers={"X-API-Key": keys["policymaker"]}).status_code == 200


def test_bad_parameters_are_refused_naming_the_parameter(api):
    url, keys = api
    for params, name in (({"region": "no spaces!"}, "region"), ({"days": 0}, "days")):
        answer = httpx.get(f"{url}/dashboard", params=params, headers={"X-API-Key": keys["analyst"]})
        assert answer.status_code == 422
        assert answer.json()["detail"][0]["loc"] == ["query", name]


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
