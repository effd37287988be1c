"""Build hook only (metadata lives in pyproject.toml): the wheel carries the files in deploy/
(systemd unit, Mosquitto config, example agent config) as package data under gridsight/_deploy/,
so an installed gridsight finds them without a checkout. deploy/ stays the one copy in the tree."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

DEPLOY_FILES = ("systemd/gridsight-agent.service", "systemd/gridsight-collector.service", "systemd/agent.example.toml",
                "mosquitto/gridsight.conf")


class BuildPyWithDeployFiles(build_py):
    def run(self) -> None:
        super().run()
        here = Path(__file__).resolve().parent
        for name in DEPLOY_FILES:
            target = Path(self.build_lib) / "gridsight" / "_deploy" / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(here / "deploy" / name, target)


setup(cmdclass={"build_py": BuildPyWithDeployFiles})
