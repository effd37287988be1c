"""Item 9: a control character (NUL included) in any text parameter is a 422 naming the parameter,
never a 500 from the database driver."""

from __future__ import annotations

import urllib.parse

import pytest

from security_support import create_account, start_collector


@pytest.fixture(scope="module")
def api_process(tmp_path_factory, postgres_server):
    import uuid

    import psycopg

    from security_support import provision_fleet

    name = f"ctl_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres_server.dsn("postgres"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    root = tmp_path_factory.mktemp("ctl")
    fleet = provision_fleet(root / "fleet")
    collector = start_collector(fleet, 1, postgres_server.dsn(name), root / "collector", ingest=False)
    create_account(collector.database_url, "root", "admin")
    collector.headers["admin"] = collector.login("root")
    yield collector
    collector.stop()
    with psycopg.connect(postgres_server.dsn("postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_a_nul_byte_in_a_query_parameter_is_a_422_naming_it(api_process):
    status, body, _ = api_process.api("GET", "/ingestion/dead-letters?reason=x%00",
                                      headers=api_process.headers["admin"])
    assert status == 422, body
    assert body["detail"][0]["loc"] == ["query", "reason"]


@pytest.mark.parametrize("char", ["\x00", "\x01", "\x1b", "\x7f"])
def test_every_text_query_parameter_refuses_control_characters(api_process, char):
    status, spec, _ = api_process.api("GET", "/openapi.json")
    failures = []
    for path, ops in spec["paths"].items():
        op = ops.get("get")
        if op is None or "{" in path:
            continue
        for param in op.get("parameters", []):
            if param["in"] != "query" or param.get("schema", {}).get("type") not in ("string", None):
                continue
            query = urllib.parse.urlencode({param["name"]: f"x{char}"})
            status, body, _ = api_process.api("GET", f"{path}?{query}", headers=api_process.headers["admin"])
            if status != 422:
                failures.append(f"{path}?{param['name']} -> {status}")
    assert failures == []


def test_a_control_character_in_a_path_parameter_is_a_422(api_process):
    status, body, _ = api_process.api("GET", "/gateways/gw%00a", headers=api_process.headers["admin"])
    assert status == 422, body
