"""Readers register through the `gridsight.readers` entry points: one line in pyproject per
reader, found through installed metadata (another distribution can add readers) and, in a
source checkout, through the checkout's own pyproject."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from edge_agent.readers import registry
from gridsight.settings import ConfigError

REPO = Path(__file__).resolve().parents[2]


def declared() -> dict[str, str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return project["entry-points"][registry.ENTRY_POINT_GROUP]


@pytest.fixture
def fresh_registry():
    registry.reader_types.cache_clear()
    yield registry
    registry.reader_types.cache_clear()


@pytest.mark.parametrize("type_name", sorted(declared()))
def test_every_declared_reader_type_builds_a_meter_reader_class(type_name):
    cls = registry.reader_class(type_name)
    assert isinstance(cls, type)
    assert all(callable(getattr(cls, method, None)) for method in ("from_config", "read", "close"))


def test_the_gateway_code_never_names_the_simulator():
    offenders = [str(p.relative_to(REPO)) for p in (REPO / "edge_agent").rglob("*.py")
                 if "firmware_sim" in p.read_text(encoding="utf-8")]
    assert offenders == []


def _plugin_distribution(site: Path, lines: str) -> None:
    dist = site / "meter_plugin-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: meter-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[gridsight.readers]\n{lines}\n")


def test_a_reader_installed_by_another_distribution_is_found_through_its_metadata(tmp_path, monkeypatch,
                                                                                   fresh_registry):
    (tmp_path / "meter_plugin.py").write_text(
        "class EchoReader:\n"
        "    name = 'echo'\n"
        "    @classmethod\n"
        "    def from_config(cls, options):\n"
        "        reader = cls(); reader.options = dict(options); return reader\n"
        "    def read(self, now):\n        return []\n"
        "    def close(self):\n        pass\n")
    _plugin_distribution(tmp_path, "echo = meter_plugin:EchoReader")
    monkeypatch.syspath_prepend(str(tmp_path))
    reader = fresh_registry.build_reader({"type": "echo", "port": "/dev/null"})
    assert type(reader).__name__ == "EchoReader" and reader.options == {"port": "/dev/null"}
    assert set(declared()) <= set(fresh_registry.reader_types())


def test_a_reader_whose_libraries_are_missing_names_the_extra_to_install(tmp_path, monkeypatch, fresh_registry):
    _plugin_distribution(tmp_path, "fancy = no_such_meter_library.reader:FancyReader [fancy]")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError) as err:
        fresh_registry.build_reader({"type": "fancy"}, "readers[2]")
    assert str(err.value) == ("config readers[2].type: reader type 'fancy' is not available: "
                              "No module named 'no_such_meter_library' (install gridsight[fancy])")


def test_an_unknown_reader_type_lists_the_registered_ones():
    with pytest.raises(ConfigError, match=r"readers\[0\]\.type: unknown reader type 'modbus'; one of .*modbus_tcp"):
        registry.build_reader({"type": "modbus"})


def test_a_reader_declared_in_the_checkout_is_found_when_the_installed_metadata_predates_it(tmp_path):
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project]\nname = "gridsight"\n[project.entry-points."gridsight.readers"]\n'
                         'sml = "edge_agent.readers.sml:SmlReader"\n'
                         'mbus = "edge_agent.readers.mbus:MbusReader [mbus]"\n')
    assert registry._checkout_entries(pyproject) == {
        "sml": registry.ReaderEntry("edge_agent.readers.sml:SmlReader", ()),
        "mbus": registry.ReaderEntry("edge_agent.readers.mbus:MbusReader", ("mbus",))}
