"""Customers: personal data (admins only), the caller's own record and export (consumers), GDPR erasure."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Response
from pydantic import BaseModel, Field

from collector.auth.dependencies import IdentityContext, identity, require_roles
from collector.auth.roles import ADMIN, ANALYST, CONSUMER, Principal
from collector.pii import CustomerNotFound, CustomerVault, MeterTaken

router = APIRouter(prefix="/customers", tags=["customers"])

CUSTOMER_ID_PATTERN = r"^c-[0-9a-f]{16}$"
METER_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
_TEXT = r"^[^\x00]+$"   # PostgreSQL text cannot hold NUL; everything else is a person's own business


class CustomerIn(BaseModel):
    name: str = Field(min_length=1, max_length=200, pattern=_TEXT)
    address: str = Field(min_length=1, max_length=500, pattern=_TEXT)
    contact: str = Field(min_length=1, max_length=200, pattern=_TEXT)
    meters: list[Annotated[str, Field(pattern=METER_ID_PATTERN)]] = Field(default_factory=list, max_length=100)


class CustomerOut(BaseModel):
    customer_id: str
    name: str | None = Field(description="null unless the caller may see personal fields")
    address: str | None
    contact: str | None
    meters: list[str]


class MeterLink(BaseModel):
    meter_id: str = Field(pattern=METER_ID_PATTERN)


def vault_of(ctx: Annotated[IdentityContext, Depends(identity)]) -> CustomerVault:
    if ctx.vault is None:
        raise HTTPException(status_code=503, detail="personal data is unavailable: GRIDSIGHT_MASTER_KEY is not set")
    return ctx.vault


Vault = Annotated[CustomerVault, Depends(vault_of)]
CustomerId = Annotated[str, Path(pattern=CUSTOMER_ID_PATTERN)]


def _full(vault: CustomerVault, customer_id: str) -> CustomerOut:
    try:
        c = vault.get(customer_id)
    except CustomerNotFound:
        raise HTTPException(status_code=404, detail=f"customer_id {customer_id} not found") from None
    return CustomerOut(customer_id=c.customer_id, name=c.name, address=c.address, contact=c.contact,
                       meters=list(c.meters))


@router.post("", response_model=CustomerOut, status_code=201, dependencies=[require_roles(ADMIN)],
             summary="Create a customer; personal fields are encrypted under a new data key")
def create_customer(body: CustomerIn, vault: Vault) -> CustomerOut:
    try:
        c = vault.create(body.name, body.address, body.contact, tuple(dict.fromkeys(body.meters)))
    except MeterTaken as exc:
        raise HTTPException(status_code=409, detail=f"meters: {exc}") from None
    return CustomerOut(customer_id=c.customer_id, name=c.name, address=c.address, contact=c.contact,
                       meters=list(c.meters))


@router.get("", response_model=list[CustomerOut], summary="List customers (personal fields for admins only)")
def list_customers(principal: Annotated[Principal, require_roles(ADMIN, ANALYST)], vault: Vault,
                   limit: Annotated[int, Query(ge=1, le=500)] = 100,
                   offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0) -> list[CustomerOut]:
    rows = vault.list_ids(limit, offset)
    if principal.role == ADMIN:
        return [_full(vault, cid) for cid, _ in rows]
    return [CustomerOut(customer_id=cid, name=None, address=None, contact=None, meters=list(m)) for cid, m in rows]


@router.get("/me", response_model=CustomerOut, summary="The caller's own customer record")
def my_record(principal: Annotated[Principal, require_roles(CONSUMER, consumer_scope="self")],
              vault: Vault) -> CustomerOut:
    return _full(vault, principal.customer_id or "")


@router.get("/me/export", summary="Everything gridsight holds about the caller (data portability)")
def my_export(principal: Annotated[Principal, require_roles(CONSUMER, consumer_scope="self")],
              vault: Vault) -> dict[str, Any]:
    try:
        return vault.export(principal.customer_id or "")
    except CustomerNotFound:
        raise HTTPException(status_code=404, detail="customer not found") from None


@router.get("/{customer_id}", response_model=CustomerOut, dependencies=[require_roles(ADMIN)],
            summary="One customer with personal fields")
def get_customer(customer_id: CustomerId, vault: Vault) -> CustomerOut:
    return _full(vault, customer_id)


@router.get("/{customer_id}/export", dependencies=[require_roles(ADMIN)],
            summary="Export a customer's data on their request")
def export_customer(customer_id: CustomerId, vault: Vault) -> dict[str, Any]:
    try:
        return vault.export(customer_id)
    except CustomerNotFound:
        raise HTTPException(status_code=404, detail=f"customer_id {customer_id} not found") from None


@router.post("/{customer_id}/meters", status_code=204, dependencies=[require_roles(ADMIN)],
             summary="Bind a meter to a customer")
def link_meter(customer_id: CustomerId, body: MeterLink, vault: Vault) -> Response:
    try:
        vault.link_meter(customer_id, body.meter_id)
    except CustomerNotFound:
        raise HTTPException(status_code=404, detail=f"customer_id {customer_id} not found") from None
    except MeterTaken as exc:
        raise HTTPException(status_code=409, detail=f"meter_id: {exc}") from None
    return Response(status_code=204)


@router.delete("/{customer_id}", status_code=204, dependencies=[require_roles(ADMIN)],
               summary="Erase a customer (GDPR): destroy the data key, unlink meters, keep aggregates")
def erase_customer(customer_id: CustomerId, vault: Vault,
                   ctx: Annotated[IdentityContext, Depends(identity)]) -> Response:
    try:
        vault.erase(customer_id)
    except CustomerNotFound:
        raise HTTPException(status_code=404, detail=f"customer_id {customer_id} not found") from None
    ctx.store.forget_checks()      # the customer's consumer logins are gone: stop their tokens now
    return Response(status_code=204)
