"""Gateway enrollment: a technician asks for a one-time, expiring token; the gateway redeems it once."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel, Field

from collector.auth.dependencies import IdentityContext, identity, require_roles
from collector.auth.roles import ADMIN, TECHNICIAN, Principal
from collector.auth.store import EnrollmentRefused

router = APIRouter(prefix="/enrollment", tags=["enrollment"])

GATEWAY_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"   # the wire contract's id rule


class TokenRequest(BaseModel):
    gateway_id: str = Field(pattern=GATEWAY_ID_PATTERN)
    ttl_s: int = Field(default=86_400, ge=60, le=7 * 86_400, description="seconds until the token expires")


class IssuedToken(BaseModel):
    token_id: str
    token: str = Field(description="shown once; valid for one enrollment of this gateway")
    gateway_id: str
    expires_at: float


class EnrollRequest(BaseModel):
    token: str = Field(min_length=8, max_length=100, pattern=r"^gse_[A-Za-z0-9_-]+$")
    gateway_id: str = Field(pattern=GATEWAY_ID_PATTERN)
    credential: Literal["certificate", "password"] = "certificate"
    fingerprint: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$",
                                    description="SHA-256 of the gateway's client certificate (DER), hex")


class Enrolled(BaseModel):
    gateway_id: str
    enrolled_at: float


class GatewayCredential(BaseModel):
    gateway_id: str
    credential: str
    fingerprint: str | None
    enrolled_at: float


@router.post("/tokens", response_model=IssuedToken, status_code=201, summary="Issue a one-time enrollment token")
def issue_token(body: TokenRequest, principal: Annotated[Principal, require_roles(ADMIN, TECHNICIAN)],
                ctx: Annotated[IdentityContext, Depends(identity)]) -> IssuedToken:
    issued = ctx.store.issue_enrollment_token(body.gateway_id, body.ttl_s, principal.subject)
    return IssuedToken(token_id=issued.token_id, token=issued.token, gateway_id=issued.gateway_id,
                       expires_at=issued.expires_at)


@router.post("/enroll", response_model=Enrolled, status_code=201,
             summary="Enroll a gateway with its one-time token (no other credentials)")
def enroll(body: EnrollRequest, ctx: Annotated[IdentityContext, Depends(identity)]) -> Enrolled:
    try:
        at = ctx.store.redeem_enrollment_token(body.token, body.gateway_id, body.credential, body.fingerprint)
    except EnrollmentRefused as exc:
        raise HTTPException(status_code=403, detail=f"enrollment refused: {exc}") from None
    return Enrolled(gateway_id=body.gateway_id, enrolled_at=at)


@router.get("/gateways", response_model=list[GatewayCredential], dependencies=[require_roles(ADMIN, TECHNICIAN)],
            summary="Enrolled gateways and their credential fingerprints")
def enrolled_gateways(ctx: Annotated[IdentityContext, Depends(identity)]) -> list[GatewayCredential]:
    return [GatewayCredential(**g) for g in ctx.store.enrolled_gateways()]
