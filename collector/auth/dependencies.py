"""FastAPI dependencies that authenticate a request and enforce its route's policy.

Every route declares who may call it with :func:`require_roles`. The policy travels as OAuth2
scopes, so it appears in the OpenAPI document of each operation; the test suite reads that
document and fails for any route that states no policy and is not listed in
:data:`PUBLIC_ROUTES`. A scope is a role, optionally narrowed:

* ``consumer:own-meter``: the request must name one of the caller's own meters as ``meter_id``
  (path or query);
* ``consumer:self``: the route reads only the caller's own customer record;
* ``policymaker:aggregate``: admitted only while the request names no single meter.

Consumers are only admitted with one of the two narrowings.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Depends, HTTPException, Request, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.security import APIKeyHeader, OAuth2PasswordBearer, SecurityScopes

from collector.auth.roles import CONSUMER, POLICYMAKER, ROLES, Principal
from collector.auth.store import IdentityStore, NotRemembered
from collector.auth.tokens import AuthError, TokenIssuer

__all__ = ["IdentityContext", "authenticate", "identity", "require_roles", "roles_of_scopes", "PUBLIC_ROUTES", "oauth2_scheme",
           "api_key_scheme", "OWN_METER", "SELF", "AGGREGATE"]

OWN_METER = "consumer:own-meter"
SELF = "consumer:self"
AGGREGATE = "policymaker:aggregate"

# (method, path) of the operations anyone may call; everything else must state its roles.
PUBLIC_ROUTES: frozenset[tuple[str, str]] = frozenset({
    ("POST", "/auth/token"),            # the login itself
    ("POST", "/enrollment/enroll"),     # authenticated by its one-time enrollment token
    ("GET", "/healthz"),                # liveness probe: says nothing about data
    ("GET", "/readyz"),                 # readiness probe
    ("GET", "/metrics"),                # Prometheus counters, no personal or meter data
})

oauth2_scheme = OAuth2PasswordBearer(
    tokenUrl="/auth/token", auto_error=False,
    scopes={"admin": "everything", "technician": "gateways and enrollment, no consumption data",
            "analyst": "all data except personal fields", "policymaker": "aggregates by region and feeder",
            "policymaker:aggregate": "policymakers, while the request names no single meter",
            "consumer:own-meter": "consumers, for one of their own meters (meter_id)",
            "consumer:self": "consumers, for their own customer record"})
api_key_scheme = APIKeyHeader(name="X-API-Key", auto_error=False,
                              description="API key for services (gsk_...), e.g. Tableau or TabPy")


@dataclass
class IdentityContext:
    """What the auth dependencies need, kept on ``app.state.identity`` by ``install_identity``."""

    store: IdentityStore
    issuer: TokenIssuer
    vault: object | None = None        # collector.pii.CustomerVault, when a master key is configured


def identity(request: Request) -> IdentityContext:
    ctx = getattr(request.app.state, "identity", None)
    if ctx is None:
        raise RuntimeError("identity is not installed on this app: call collector.auth.install_identity(app, ...)")
    return ctx


def _unauthorized(reason: str) -> HTTPException:
    return HTTPException(status_code=401, detail=reason, headers={"WWW-Authenticate": "Bearer"})


def _declares_meter_id(request: Request) -> bool:
    """Whether the matched route itself takes ``meter_id`` (path or query), so it serves that meter only.

    A consumer's ``meter_id`` proves nothing on a route that ignores it (a list of all meters,
    say): such a route fails closed instead of leaking.
    """
    route = request.scope.get("route")
    stack = [getattr(route, "dependant", None)]
    while stack:
        dependant = stack.pop()
        if dependant is None:
            continue
        if any(p.alias == "meter_id" for p in (*dependant.path_params, *dependant.query_params)):
            return True
        stack.extend(dependant.dependencies)
    return False


def roles_of_scopes(scopes: list[str]) -> set[str]:
    """The roles a list of policy scopes admits (``consumer:own-meter`` admits ``consumer``)."""
    return {s.split(":", 1)[0] for s in scopes if s.split(":", 1)[0] in ROLES}


async def _principal(request: Request, security_scopes: SecurityScopes, token: str | None = Depends(oauth2_scheme),
                     api_key: str | None = Depends(api_key_scheme)) -> Principal:
    # Most checks are answered from the store's memory: run those on the event loop. Only a
    # check that must reach the database goes to the thread pool, so a busy API does not hand
    # every request to a thread (and wait for the GIL to come back after each hand-off).
    ctx = identity(request)
    try:
        with ctx.store.from_memory():
            return _authorize(request, security_scopes, token, api_key)
    except NotRemembered:
        return await run_in_threadpool(_authorize, request, security_scopes, token, api_key)


def authenticate(ctx: IdentityContext, token: str | None, api_key: str | None) -> Principal:
    """Who an API key or a bearer token belongs to, checked against the account's current
    generation (AuthError when neither is given or the credential is not valid now)."""
    if api_key:
        return ctx.store.authenticate_api_key(api_key)
    if token:
        principal = ctx.issuer.verify(token)
        ctx.store.check_current(principal)
        return principal
    raise AuthError("authentication required: Bearer token or X-API-Key")


def _authorize(request: Request, security_scopes: SecurityScopes, token: str | None, api_key: str | None) -> Principal:
    ctx = identity(request)
    try:
        principal = authenticate(ctx, token, api_key)
    except AuthError as exc:
        raise _unauthorized(str(exc)) from None
    scopes = security_scopes.scopes
    if principal.role not in roles_of_scopes(scopes):
        raise HTTPException(status_code=403, detail=f"role {principal.role} may not use this route")
    meter_id = request.path_params.get("meter_id") or request.query_params.get("meter_id")
    if principal.role == CONSUMER and OWN_METER in scopes:
        if not _declares_meter_id(request):
            raise HTTPException(status_code=403, detail="this route is not limited to one meter, so consumers "
                                                        "may not use it")
        if not meter_id:
            raise HTTPException(status_code=403, detail="consumers must ask for one of their own meters (meter_id)")
        if meter_id not in ctx.store.meters_of(principal.customer_id or ""):
            raise HTTPException(status_code=403, detail=f"meter_id {meter_id[:64]} is not one of your meters")
    if principal.role == POLICYMAKER and AGGREGATE in scopes and meter_id:
        raise HTTPException(status_code=403, detail="policymakers see aggregates only: ask by region or feeder, "
                                                    "not meter_id")
    return principal


def require_roles(*roles: str, consumer_scope: str | None = None, policymaker_scope: str | None = None):
    """A dependency admitting only ``roles``: a route parameter's default or an item of ``dependencies=[...]``.

    ``consumer_scope`` must be given when consumers are admitted: ``"meter"`` checks the
    request's ``meter_id`` against the caller's meters, ``"self"`` promises the route reads
    only ``principal.customer_id``. ``policymaker_scope="aggregate"`` admits policymakers to a
    route that serves both single meters and regions, only for requests without ``meter_id``.
    """
    unknown = [r for r in roles if r not in ROLES]
    if unknown or not roles:
        raise ValueError(f"unknown roles {unknown}; choose from {', '.join(ROLES)}")
    if CONSUMER in roles and consumer_scope not in ("meter", "self"):
        raise ValueError("admitting consumers needs consumer_scope='meter' or 'self'")
    if policymaker_scope not in (None, "aggregate"):
        raise ValueError("policymaker_scope is None or 'aggregate'")
    scopes = []
    for role in roles:
        if role == CONSUMER:
            scopes.append(OWN_METER if consumer_scope == "meter" else SELF)
        elif role == POLICYMAKER and policymaker_scope == "aggregate":
            scopes.append(AGGREGATE)
        else:
            scopes.append(role)
    return Security(_principal, scopes=scopes)
