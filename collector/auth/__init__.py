"""Identity and access for the collector's API.

Routes declare who may call them with ``require_roles(...)``; ``install_identity(app, url)``
wires token checking, API keys, the encrypted customer vault and request limits onto an app.
"""

from collector.auth.dependencies import PUBLIC_ROUTES, IdentityContext, identity, require_roles, roles_of_scopes
from collector.auth.install import IdentitySetupError, install_identity, token_secret, token_secret_from_env
from collector.auth.passwords import hash_password, verify_password
from collector.auth.roles import ADMIN, ANALYST, CONSUMER, POLICYMAKER, ROLES, TECHNICIAN, Principal
from collector.auth.store import IdentityError, IdentityStore
from collector.auth.tokens import AuthError, TokenIssuer

__all__ = ["PUBLIC_ROUTES", "IdentityContext", "identity", "require_roles", "roles_of_scopes", "install_identity",
           "token_secret", "token_secret_from_env", "IdentitySetupError", "hash_password", "verify_password", "ADMIN", "ANALYST",
           "CONSUMER", "POLICYMAKER", "ROLES", "TECHNICIAN", "Principal", "IdentityError", "IdentityStore",
           "AuthError", "TokenIssuer"]
