"""One error tree: every exception class of the project derives from GridsightError, carries an
exit code, and a CLI prints it as one line.

Each error a person can act on must reach `run_cli` as a GridsightError so it becomes one line
with a meaningful exit code, never a traceback."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

from gridsight.cli import run_cli
from gridsight.errors import FetchError, GridsightError

PACKAGES = ("gridsight", "edge_agent", "collector", "provisioning", "model_export", "firmware_sim", "dashboards")


def project_exception_classes() -> dict[str, type]:
    """Every exception class defined in the project's modules, by qualified name."""
    found: dict[str, type] = {}
    for package_name in PACKAGES:
        package = importlib.import_module(package_name)
        for info in pkgutil.walk_packages(package.__path__, prefix=f"{package_name}."):
            if info.name.rsplit(".", 1)[-1] == "__main__" or ".migrations" in info.name:
                continue
            module = importlib.import_module(info.name)
            for name, obj in vars(module).items():
                if inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == info.name:
                    found[f"{info.name}.{name}"] = obj
    return found


CLASSES = project_exception_classes()


def test_the_project_defines_its_errors_where_this_test_finds_them():
    assert len(CLASSES) >= 40, sorted(CLASSES)


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_every_exception_class_derives_from_gridsight_error_with_an_exit_code(name):
    cls = CLASSES[name]
    assert issubclass(cls, GridsightError), f"{name} must derive from gridsight.errors.GridsightError"
    assert cls.exit_code in (1, 2), f"{name}.exit_code = {cls.exit_code!r}"


def test_fetch_error_is_defined_once():
    assert [name for name, cls in CLASSES.items() if cls.__name__ == "FetchError"] == ["gridsight.errors.FetchError"]


def test_any_project_error_reaching_run_cli_is_one_line_with_its_exit_code(capsys):
    from collector.weather.providers import WeatherError
    from model_export.verify import VerificationError

    def fail(exc):
        def body():
            raise exc
        return body

    assert run_cli(fail(VerificationError("model.onnx: scores differ")), "gridsight model") == 1
    assert run_cli(fail(FetchError("https://example.test/m.onnx: unreachable")), "gridsight agent") == 1
    assert run_cli(fail(WeatherError("no provider key")), "gridsight collector") == 1
    err = capsys.readouterr().err.splitlines()
    assert err == ["gridsight model: error: model.onnx: scores differ",
                   "gridsight agent: error: https://example.test/m.onnx: unreachable",
                   "gridsight collector: error: no provider key"]
