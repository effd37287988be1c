"""API routers are declared in one place: `ROUTERS` in collector/api/app.py lists every route
module once, and nothing else includes a router."""

from __future__ import annotations

from pathlib import Path

from collector.api.app import ROUTERS

REPO = Path(__file__).resolve().parents[2]


def test_every_route_module_is_listed_once_in_ROUTERS():
    modules = {f"collector.api.routes.{p.stem}" for p in (REPO / "collector/api/routes").glob("*.py")
               if p.stem != "__init__"}
    assert len(ROUTERS) == len(set(ROUTERS))
    assert set(ROUTERS) == modules


def test_only_the_app_factory_includes_routers():
    including = sorted(str(p.relative_to(REPO)) for p in (REPO / "collector").rglob("*.py")
                       if "include_router(" in p.read_text(encoding="utf-8"))
    assert including == ["collector/api/app.py"]
