"""docs/meters.md's sample configs are valid: every TOML block parses, names registered reader
types, and its shipped maps and local settings load."""

from __future__ import annotations

import re
import tomllib

import pytest

from edge_agent.config import LocalSettings
from edge_agent.readers.dsmr import normalise_version
from edge_agent.readers.modbus import SHIPPED_MAPS, load_register_map
from edge_agent.readers.registry import reader_types


def _blocks(repo_root) -> list[dict]:
    text = (repo_root / "docs" / "meters.md").read_text()
    return [tomllib.loads(b) for b in re.findall(r"```toml\n(.*?)```", text, re.DOTALL)]


def test_every_sample_config_in_meters_md_parses_and_names_a_registered_reader(repo_root):
    blocks = _blocks(repo_root)
    types = {t["type"] for b in blocks for t in b.get("readers", [])}
    assert types == {"dsmr_p1", "sml", "iec62056_21", "mbus", "dlms_push", "modbus_tcp", "modbus_rtu", "replay", "sim"}
    assert types <= set(reader_types())
    for block in blocks:
        for table in block.get("readers", []):
            if "map" in table:
                assert load_register_map(table["map"]).fields
            if table["type"] == "dsmr_p1":
                normalise_version(table.get("version", 5))
        if "local" in block:
            local = LocalSettings(**block["local"])
            assert local.metrics_port and local.ha_mqtt_url


@pytest.mark.parametrize("name", SHIPPED_MAPS)
def test_every_shipped_register_map_is_listed_in_meters_md(repo_root, name):
    assert f"| `{name}` |" in (repo_root / "docs" / "meters.md").read_text()
