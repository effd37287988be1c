"""Every secret and provider key is a field of a typed settings object, given as NAME or as
NAME_FILE (a mounted secret), validated at start-up; no other module reads them from the
environment."""

from __future__ import annotations

import ast
import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from collector.settings import CollectorSecrets, load_collector_settings, load_secrets
from edge_agent.enrollment import ApiCredentials, api_headers
from gridsight.settings import ConfigError

REPO = Path(__file__).resolve().parents[2]
SECRET_VARIABLES = {f.metadata["env"]: f.name for f in dataclasses.fields(CollectorSecrets)}
LONG = "a-jwt-secret-long-enough-for-hs256-0123456789"


def test_the_collector_secrets_are_the_jwt_secret_master_key_weather_key_and_new_password():
    assert set(SECRET_VARIABLES) == {"GRIDSIGHT_JWT_SECRET", "GRIDSIGHT_MASTER_KEY", "OPENWEATHERMAP_API_KEY",
                                     "GRIDSIGHT_NEW_PASSWORD"}


@pytest.mark.parametrize("variable", sorted(SECRET_VARIABLES))
def test_each_secret_comes_from_its_variable_or_from_the_file_its_FILE_variable_names(variable, tmp_path):
    name = SECRET_VARIABLES[variable]
    assert getattr(load_secrets({variable: f" {LONG}\n"}), name) == LONG
    secret_file = tmp_path / "secret"
    secret_file.write_text(LONG + "-from-file\n")
    both = {variable: LONG, f"{variable}_FILE": str(secret_file)}
    assert getattr(load_secrets(both), name) == LONG + "-from-file"
    # the collector's settings hold the same value
    assert getattr(load_collector_settings(env=both).secrets, name) == LONG + "-from-file"


def test_an_unreadable_secret_file_is_named_in_the_error(tmp_path):
    with pytest.raises(ConfigError, match="GRIDSIGHT_MASTER_KEY_FILE: cannot read"):
        load_secrets({"GRIDSIGHT_MASTER_KEY_FILE": str(tmp_path / "missing")})


def test_a_short_jwt_secret_is_refused():
    with pytest.raises(ConfigError, match="GRIDSIGHT_JWT_SECRET: must be at least 32 bytes"):
        load_secrets({"GRIDSIGHT_JWT_SECRET": "short"})


def test_secrets_never_show_in_the_settings_repr():
    settings = load_collector_settings(env={"GRIDSIGHT_JWT_SECRET": LONG, "OPENWEATHERMAP_API_KEY": "owm-key"})
    assert LONG not in repr(settings) and "owm-key" not in repr(settings)


def test_a_collector_command_with_a_short_jwt_secret_stops_with_one_line(tmp_path):
    env = {**os.environ, "GRIDSIGHT_JWT_SECRET": "short", "GRIDSIGHT_DATA_DIR": str(tmp_path)}
    res = subprocess.run([sys.executable, "-m", "gridsight", "collector", "status"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2
    assert res.stderr.strip() == "gridsight collector: error: config GRIDSIGHT_JWT_SECRET: must be at least 32 bytes"


def test_the_technician_api_credentials_come_from_a_variable_or_a_file(tmp_path):
    key_file = tmp_path / "key"
    key_file.write_text("gs_key_from_file\n")
    assert api_headers({"GRIDSIGHT_API_KEY_FILE": str(key_file)}) == {"X-API-Key": "gs_key_from_file"}
    assert api_headers({"GRIDSIGHT_API_TOKEN": "tok"}) == {"Authorization": "Bearer tok"}
    assert "gs_key_from_file" not in repr(ApiCredentials(api_key="gs_key_from_file"))


SECRETISH = re.compile(r"SECRET|PASSWORD|MASTER_KEY|API_KEY|API_TOKEN")
# The loaders, and the MQTT client factory (its password from a file or the environment).
ALLOWED = {"gridsight/settings.py", "collector/settings.py", "gridsight/mqtt.py"}


def _environment_reads(path: Path) -> list[tuple[int, str]]:
    """String constants used as keys of os.environ / os.getenv / an ``env`` mapping."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        key = None
        if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
            key = node.slice.value
            target = node.value
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.func, ast.Attribute) and node.func.attr in ("get", "getenv", "pop"):
            key = node.args[0].value
            target = node.func.value
        else:
            continue
        text = ast.unparse(target)
        if isinstance(key, str) and (text in ("os", "env", "environ") or text.endswith("environ")):
            found.append((node.lineno, key))
    return found


def test_no_module_outside_the_settings_reads_a_secret_from_the_environment():
    offenders = []
    for root in ("gridsight", "edge_agent", "collector", "provisioning", "model_export", "firmware_sim", "dashboards"):
        for path in sorted((REPO / root).rglob("*.py")):
            rel = path.relative_to(REPO).as_posix()
            if rel in ALLOWED:
                continue
            offenders += [f"{rel}:{line}: {key}" for line, key in _environment_reads(path) if SECRETISH.search(key)]
    assert offenders == []
