"""The one configuration loader: precedence, typed coercion, and errors that name the key."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from gridsight.settings import ConfigError, load_settings, settings_as_dict


@dataclass
class Broker:
    url: str = "mqtt://broker.example:8883"
    keepalive_s: int = 30
    tls: bool = False


@dataclass
class Example:
    gateway_id: str = "gw-0"
    interval_s: int = 900
    budget_mb: float = 64.0
    data_dir: Path = Path("/var/lib/gridsight")
    tags: list[str] = field(default_factory=list)
    database_url: str | None = field(default=None, metadata={"env": "DATABASE_URL"})
    broker: Broker = field(default_factory=Broker)

    def __post_init__(self) -> None:
        if self.interval_s <= 0:
            raise ConfigError("interval_s", "must be positive")


def test_defaults_apply_without_file_or_environment():
    s = load_settings(Example, env={})
    assert s.interval_s == 900 and s.broker.keepalive_s == 30 and s.database_url is None


def test_file_then_environment_then_overrides(tmp_path):
    cfg = tmp_path / "agent.toml"
    cfg.write_text('gateway_id = "gw-file"\ninterval_s = 60\n[broker]\nurl = "mqtt://b:1"\ntls = true\n')
    env = {"GRIDSIGHT_INTERVAL_S": "300", "GRIDSIGHT_BROKER__KEEPALIVE_S": "10",
           "GRIDSIGHT_TAGS": "a, b", "DATABASE_URL": "postgresql://x/y"}
    s = load_settings(Example, cfg, env=env, overrides={"gateway_id": "gw-cli", "budget_mb": None})
    assert s.gateway_id == "gw-cli"          # override beats file
    assert s.interval_s == 300               # env beats file
    assert s.broker.url == "mqtt://b:1" and s.broker.tls is True and s.broker.keepalive_s == 10
    assert s.tags == ["a", "b"] and s.database_url == "postgresql://x/y"
    assert s.budget_mb == 64.0               # None override leaves the default


@pytest.mark.parametrize("toml, key", [
    ('interval_s = "fast"', "interval_s"),
    ('intervl_s = 60', "intervl_s"),
    ('[broker]\nkeepalive_s = 1.5', "broker.keepalive_s"),
    ('[broker]\ntls = "yes"', "broker.tls"),
    ('[broker]\nport = 1', "broker.port"),
    ('broker = 5', "broker"),
    ('interval_s = -5', "interval_s"),
    ('tags = "x"', "tags"),
])
def test_bad_values_in_file_name_the_key(tmp_path, toml, key):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(toml + "\n")
    with pytest.raises(ConfigError) as err:
        load_settings(Example, cfg, env={})
    assert err.value.key == key
    assert str(err.value).startswith(f"config {key}:")


def test_bad_environment_value_names_the_key():
    with pytest.raises(ConfigError) as err:
        load_settings(Example, env={"GRIDSIGHT_BROKER__KEEPALIVE_S": "soon"})
    assert err.value.key == "broker.keepalive_s"


def test_missing_and_malformed_files_are_reported(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(Example, tmp_path / "absent.toml", env={})
    broken = tmp_path / "broken.toml"
    broken.write_text("gateway_id = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(Example, broken, env={})


def test_settings_export_as_plain_dict():
    d = settings_as_dict(load_settings(Example, env={}))
    assert d["data_dir"] == "/var/lib/gridsight" and d["broker"]["url"].startswith("mqtt://")
