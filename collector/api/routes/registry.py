"""The grid registry over HTTP: ``GET /registry`` exports it, ``PUT /registry`` imports a document.

Same document and rules as ``gridsight collector registry`` (:mod:`collector.registry`): a bad
document answers 422 listing every problem as ``section[index].field: why`` and changes nothing.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Request

from collector.api.deps import Connection
from collector.auth import require_roles
from collector.auth.roles import Principal
from collector.registry import FORMAT, RegistryError, export_registry, import_registry, parse_document

router = APIRouter(prefix="/registry", tags=["registry"])

MAX_DOCUMENT_BYTES = 8 * 1024 * 1024   # ~60,000 meters; larger grids import with the CLI

_DOCUMENT_BODY = {"requestBody": {"required": True, "content": {"application/json": {"schema": {
    "type": "object", "description": f"registry document, format {FORMAT} (see the README (The collector))"}}}}}


@router.get("", summary="The grid topology (regions, feeders, sites with coordinates, gateways, meters)")
async def get_registry(conn: Connection,
                       principal: Annotated[Principal, require_roles("admin", "technician", "analyst")]) -> dict:
    return (await export_registry(conn)).as_dict()


@router.put("", summary="Import a registry document: validated, then upserted in one transaction (idempotent)",
            openapi_extra=_DOCUMENT_BODY)
async def put_registry(request: Request, conn: Connection,
                       principal: Annotated[Principal, require_roles("admin", "technician")]) -> dict:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_DOCUMENT_BYTES:
        raise HTTPException(status_code=413, detail=f"registry document above {MAX_DOCUMENT_BYTES} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > MAX_DOCUMENT_BYTES:
            raise HTTPException(status_code=413, detail=f"registry document above {MAX_DOCUMENT_BYTES} bytes")
    try:
        doc = parse_document(bytes(body))
        result = await import_registry(conn, doc)
    except RegistryError as exc:
        raise HTTPException(status_code=422, detail=[{"loc": ["body", *e.split(":", 1)[:1]], "msg": e,
                                                      "type": "value_error"} for e in exc.errors]) from None
    return {"counts": result.as_dict()}
