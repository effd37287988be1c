"""The scripts under docs/examples/ are what the docs show, byte for byte: the page and the test
that runs the script cannot drift apart."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"


@pytest.mark.parametrize("page, script", [("collector.md", "production.sh"), ("agent.md", "debian-armv7l.sh")])
def test_the_page_shows_the_script_the_tests_run(page, script):
    text = (DOCS / page).read_text()
    blocks = re.findall(r"```sh\n(.*?)```", text, flags=re.S)
    assert (DOCS / "examples" / script).read_text() in blocks, f"{page} must show docs/examples/{script} verbatim"
