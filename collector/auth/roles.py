"""Who is asking: the five roles and the authenticated principal a route receives."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ROLES", "ADMIN", "TECHNICIAN", "ANALYST", "POLICYMAKER", "CONSUMER", "Principal"]

ADMIN = "admin"              # everything, including personal data and accounts
TECHNICIAN = "technician"    # enrolls and manages gateways; never sees consumption data
ANALYST = "analyst"          # the utility's analysts: all data except personal fields
POLICYMAKER = "policymaker"  # aggregates by region and feeder only, never a single meter
CONSUMER = "consumer"        # their own meters only
ROLES: tuple[str, ...] = (ADMIN, TECHNICIAN, ANALYST, POLICYMAKER, CONSUMER)


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller. ``customer_id`` is set for consumers (whose meters they may see)."""

    subject: str                  # username, or "key:<key_id>" for an API key
    role: str
    customer_id: str | None = None
    via: str = "token"            # "token" (JWT) or "api_key"
    # the account the credential belongs to and that account's generation when it was issued
    # (None for an API key made with the accounts CLI, which belongs to no account)
    account: str | None = None
    generation: int | None = None
