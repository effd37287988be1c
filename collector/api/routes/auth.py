"""Login (OAuth2 password flow), the caller's own identity, accounts and service API keys."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Response
from fastapi.security import OAuth2PasswordRequestForm
from pydantic import BaseModel, Field

from collector.auth.dependencies import IdentityContext, identity, require_roles
from collector.auth.roles import ADMIN, ROLES, Principal
from collector.auth.store import IdentityError, LoginThrottled
from collector.auth.tokens import AuthError

router = APIRouter(prefix="/auth", tags=["auth"])

USERNAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$"
_USERNAME_RE = re.compile(USERNAME_PATTERN)
RoleName = Literal["admin", "technician", "analyst", "policymaker", "consumer"]


class AccessToken(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int
    role: RoleName


class Me(BaseModel):
    subject: str
    role: RoleName
    customer_id: str | None
    via: str


class UserIn(BaseModel):
    username: str = Field(pattern=USERNAME_PATTERN)
    password: str = Field(min_length=10, max_length=256)
    role: RoleName
    customer_id: str | None = Field(default=None, pattern=r"^c-[0-9a-f]{16}$")


class UserOut(BaseModel):
    username: str
    role: RoleName
    customer_id: str | None
    disabled: bool


class ApiKeyIn(BaseModel):
    name: str = Field(min_length=1, max_length=100, pattern=r"^[^\x00-\x1f]+$")
    role: Literal["admin", "technician", "analyst", "policymaker"]


class ApiKeyOut(BaseModel):
    key_id: str
    name: str
    role: RoleName
    revoked: bool


class NewApiKey(ApiKeyOut):
    api_key: str = Field(description="shown only in this response; store it in the service's secret store")


def unprocessable(exc: IdentityError) -> HTTPException:
    return HTTPException(status_code=422, detail=[{"loc": ["body", exc.field], "msg": exc.reason,
                                                   "type": "value_error"}])


@router.post("/token", response_model=AccessToken, summary="Log in: exchange username and password for a token")
def login(form: Annotated[OAuth2PasswordRequestForm, Depends()],
          ctx: Annotated[IdentityContext, Depends(identity)]) -> AccessToken:
    if not _USERNAME_RE.match(form.username) or len(form.password) > 256:
        raise HTTPException(status_code=401, detail="wrong username or password",
                            headers={"WWW-Authenticate": "Bearer"})
    try:
        principal = ctx.store.authenticate(form.username, form.password)
    except LoginThrottled as exc:
        raise HTTPException(status_code=429, detail=str(exc),
                            headers={"Retry-After": str(max(1, round(exc.retry_after_s)))}) from None
    except AuthError as exc:
        raise HTTPException(status_code=401, detail=str(exc), headers={"WWW-Authenticate": "Bearer"}) from None
    return AccessToken(access_token=ctx.issuer.issue(principal), expires_in=ctx.issuer.ttl_s, role=principal.role)


@router.get("/me", response_model=Me, summary="Who am I")
def me(principal: Annotated[Principal, require_roles(*ROLES, consumer_scope="self")]) -> Me:
    return Me(subject=principal.subject, role=principal.role, customer_id=principal.customer_id, via=principal.via)


@router.post("/users", response_model=UserOut, status_code=201, dependencies=[require_roles(ADMIN)],
             summary="Create an account")
def create_user(body: UserIn, ctx: Annotated[IdentityContext, Depends(identity)]) -> UserOut:
    try:
        user = ctx.store.create_user(body.username, body.password, body.role, body.customer_id)
    except IdentityError as exc:
        raise unprocessable(exc) from None
    return UserOut(username=user.username, role=user.role, customer_id=user.customer_id, disabled=user.disabled)


@router.get("/users", response_model=list[UserOut], dependencies=[require_roles(ADMIN)], summary="List accounts")
def list_users(ctx: Annotated[IdentityContext, Depends(identity)]) -> list[UserOut]:
    return [UserOut(username=u.username, role=u.role, customer_id=u.customer_id, disabled=u.disabled)
            for u in ctx.store.list_users()]


@router.delete("/users/{username}", status_code=204, dependencies=[require_roles(ADMIN)],
               summary="Delete an account; its tokens stop working at once")
def delete_user(username: Annotated[str, Path(pattern=USERNAME_PATTERN)],
                ctx: Annotated[IdentityContext, Depends(identity)]) -> Response:
    if not ctx.store.delete_user(username):
        raise HTTPException(status_code=404, detail=f"username {username} not found")
    return Response(status_code=204)


@router.post("/api-keys", response_model=NewApiKey, status_code=201,
             summary="Create an API key for a service (Tableau, TabPy); it ends when the creator's account "
                     "is deleted, disabled or changes role")
def create_api_key(body: ApiKeyIn, ctx: Annotated[IdentityContext, Depends(identity)],
                   principal: Annotated[Principal, require_roles(ADMIN)]) -> NewApiKey:
    try:
        key, full = ctx.store.create_api_key(body.name, body.role, created_by=principal)
    except IdentityError as exc:
        raise unprocessable(exc) from None
    return NewApiKey(key_id=key.key_id, name=key.name, role=key.role, revoked=key.revoked, api_key=full)


@router.get("/api-keys", response_model=list[ApiKeyOut], dependencies=[require_roles(ADMIN)],
            summary="List API keys (never their secrets)")
def list_api_keys(ctx: Annotated[IdentityContext, Depends(identity)]) -> list[ApiKeyOut]:
    return [ApiKeyOut(key_id=k.key_id, name=k.name, role=k.role, revoked=k.revoked) for k in ctx.store.list_api_keys()]


@router.delete("/api-keys/{key_id}", status_code=204, dependencies=[require_roles(ADMIN)],
               summary="Revoke an API key")
def revoke_api_key(key_id: Annotated[str, Path(pattern=r"^[0-9a-f]{12}$")],
                   ctx: Annotated[IdentityContext, Depends(identity)]) -> Response:
    if not ctx.store.revoke_api_key(key_id):
        raise HTTPException(status_code=404, detail=f"key_id {key_id} not found or already revoked")
    return Response(status_code=204)
