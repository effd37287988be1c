"""`gridsight accounts`: the first admin and service keys from the shell; secrets never in argv."""

from __future__ import annotations

import os
import subprocess
import sys
import pytest

from fastapi.testclient import TestClient

from identity_support import StepClock, build_app


def _accounts(database_url, *args, env=None):
    return subprocess.run([sys.executable, "-m", "gridsight", "accounts", "--database-url", database_url, *args],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          env={**os.environ, **(env or {})})


def test_the_first_admin_created_from_the_shell_on_a_fresh_database_can_log_in(database_url, tmp_path):
    secret = tmp_path / "pw"
    secret.write_text("a long admin password\n")
    created = _accounts(database_url, "create-user", "root-admin", "--role", "admin", "--password-file", str(secret))
    assert created.returncode == 0, created.stderr
    app, ctx = build_app(database_url, StepClock())
    with TestClient(app) as client:
        r = client.post("/auth/token", data={"username": "root-admin", "password": "a long admin password"})
        assert r.status_code == 200 and r.json()["role"] == "admin"
    ctx.store.engine.dispose()


def test_a_service_key_is_printed_once_and_works_until_revoked(database_url):
    made = _accounts(database_url, "create-api-key", "tableau", "--role", "analyst")
    assert made.returncode == 0
    key = made.stdout.strip()
    listed = _accounts(database_url, "list-api-keys")
    assert key not in listed.stdout and "tableau\tanalyst\tactive" in listed.stdout
    clock = StepClock()
    app, ctx = build_app(database_url, clock)
    with TestClient(app) as client:
        assert client.get("/auth/me", headers={"X-API-Key": key}).json()["role"] == "analyst"
        key_id = key.split("_")[1]
        assert _accounts(database_url, "revoke-api-key", key_id).returncode == 0
        clock.advance(ctx.store.check_ttl_s)      # the API process re-checks keys at this interval
        assert client.get("/auth/me", headers={"X-API-Key": key}).status_code == 401
    ctx.store.engine.dispose()


def test_without_a_password_source_it_refuses_in_one_line(database_url):
    env = {k: v for k, v in os.environ.items() if k != "GRIDSIGHT_NEW_PASSWORD"}
    result = subprocess.run([sys.executable, "-m", "gridsight", "accounts", "--database-url", database_url,
                             "create-user", "x-admin", "--role", "admin"], capture_output=True, text=True,
                            stdin=subprocess.DEVNULL, env=env)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "--password-file" in result.stderr


def test_a_short_password_is_refused_naming_the_field(database_url):
    result = _accounts(database_url, "create-user", "bob", "--role", "analyst", env={"GRIDSIGHT_NEW_PASSWORD": "short"})
    assert result.returncode == 2 and "password" in result.stderr


def test_an_unreachable_database_is_one_line(tmp_path):
    from gridsight.local_services import free_port
    result = _accounts(f"postgresql://postgres@127.0.0.1:{free_port()}/x", "list-users")
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "unreachable" in result.stderr


@pytest.mark.slow
def test_without_a_database_url_the_embedded_database_is_started_and_migrated_as_the_help_says(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "GRIDSIGHT_DATA_DIR")}
    env.update(GRIDSIGHT_COLLECTOR_DATA_DIR=str(tmp_path / "collector"), GRIDSIGHT_NEW_PASSWORD="a long admin password")
    created = subprocess.run([sys.executable, "-m", "gridsight", "accounts", "create-user", "first-admin", "--role",
                              "admin"], capture_output=True, text=True, stdin=subprocess.DEVNULL, env=env, timeout=240)
    assert created.returncode == 0, created.stderr
    listed = subprocess.run([sys.executable, "-m", "gridsight", "accounts", "list-users"], capture_output=True,
                            text=True, stdin=subprocess.DEVNULL, env=env, timeout=240)
    assert listed.returncode == 0 and listed.stdout.startswith("first-admin\tadmin"), listed.stderr
