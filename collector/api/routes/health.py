"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> dict:
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness: the database answers and, with ingest in-process, the broker is connected",
            responses={503: {"description": "not ready; `checks` says which part failed"}})
async def readyz(request: Request) -> JSONResponse:
    checks: dict[str, str] = {}
    try:
        async with request.app.state.pool.acquire(timeout=5) as conn:
            rev = await conn.fetchval("SELECT version_num FROM alembic_version LIMIT 1", timeout=5)
        checks["database"] = "ok" if rev else "not migrated"
    except Exception as exc:  # any failure means not ready; say why
        checks["database"] = f"unavailable: {type(exc).__name__}"
    worker = request.app.state.worker
    if worker is not None:
        metrics = request.app.state.metrics
        checks["mqtt"] = "ok" if metrics.value("gridsight_collector_mqtt_connected") == 1 else "disconnected"
        checks["ingest"] = "ok" if worker.last_error is None else worker.last_error[:200]
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)


@router.get("/metrics", summary="Prometheus metrics of this replica", response_class=PlainTextResponse)
async def metrics(request: Request) -> PlainTextResponse:
    return PlainTextResponse(request.app.state.metrics.render(), media_type="text/plain; version=0.0.4")
