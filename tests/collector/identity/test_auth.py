"""Logins, tokens, API keys and stored secrets behave as a security reviewer expects."""

from __future__ import annotations

from sqlalchemy import text

from collector.auth import AuthError, TokenIssuer, hash_password, verify_password
from collector.auth.roles import Principal

PASSWORD = "correct horse battery"   # every fixture account's password (see conftest)


def test_login_issues_a_bearer_token_carrying_the_role(api):
    r = api.client.post("/auth/token", data={"username": "analyst", "password": PASSWORD})
    assert r.status_code == 200
    body = r.json()
    assert body["token_type"] == "bearer" and body["role"] == "analyst" and body["expires_in"] == 900
    me = api.client.get("/auth/me", headers={"Authorization": f"Bearer {body['access_token']}"}).json()
    assert me == {"subject": "analyst", "role": "analyst", "customer_id": None, "via": "token"}


def test_wrong_password_and_unknown_user_get_the_same_refusal(api):
    wrong = api.client.post("/auth/token", data={"username": "analyst", "password": "not the password"})
    unknown = api.client.post("/auth/token", data={"username": "mallory", "password": PASSWORD})
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json()


def test_tokens_expire(api):
    headers = api.login("admin", PASSWORD)
    assert api.client.get("/auth/users", headers=headers).status_code == 200
    api.clock.advance(901)
    r = api.client.get("/auth/users", headers=headers)
    assert r.status_code == 401 and "expired" in r.json()["detail"]


def test_a_token_signed_with_another_secret_is_refused(api):
    other = TokenIssuer("another-secret-another-secret-another-secret", now=api.clock)
    forged = other.issue(Principal(subject="admin", role="admin"))
    assert api.client.get("/auth/users", headers={"Authorization": f"Bearer {forged}"}).status_code == 401


def test_deleting_an_account_stops_its_token_at_once(api):
    assert api.client.delete("/auth/users/analyst", headers=api.headers["admin"]).status_code == 204
    assert api.client.get("/auth/me", headers=api.headers["analyst"]).status_code == 401


def test_passwords_are_stored_only_as_scrypt_hashes(api):
    with api.ctx.store.engine.connect() as conn:
        stored = conn.execute(text("SELECT password_hash FROM users WHERE username = 'admin'")).scalar()
    assert PASSWORD not in stored and stored.startswith("scrypt$")
    assert verify_password(PASSWORD, stored) and not verify_password(PASSWORD + "x", stored)


def test_the_same_password_hashes_differently_each_time():
    assert hash_password("same password") != hash_password("same password")


def test_a_malformed_stored_hash_never_verifies():
    assert not verify_password("x", "md5$abc") and not verify_password("x", "scrypt$nope")


def test_short_passwords_are_refused_naming_the_field(api):
    r = api.client.post("/auth/users", headers=api.headers["admin"],
                        json={"username": "bob", "password": "short", "role": "analyst"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][-1] == "password"


def test_consumer_accounts_must_belong_to_a_customer(api):
    r = api.client.post("/auth/users", headers=api.headers["admin"],
                        json={"username": "eve", "password": PASSWORD, "role": "consumer"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][-1] == "customer_id"


def test_api_key_authenticates_a_service_until_revoked(api):
    r = api.client.post("/auth/api-keys", headers=api.headers["admin"], json={"name": "tableau", "role": "analyst"})
    assert r.status_code == 201
    key = r.json()
    service = {"X-API-Key": key["api_key"]}
    assert api.client.get("/auth/me", headers=service).json()["role"] == "analyst"
    assert api.client.get("/auth/users", headers=service).status_code == 403
    listed = api.client.get("/auth/api-keys", headers=api.headers["admin"]).json()
    assert all("api_key" not in k for k in listed)
    assert api.client.delete(f"/auth/api-keys/{key['key_id']}", headers=api.headers["admin"]).status_code == 204
    r = api.client.get("/auth/me", headers=service)
    assert r.status_code == 401 and "revoked" in r.json()["detail"]


def test_api_keys_are_stored_only_as_digests(api):
    key = api.client.post("/auth/api-keys", headers=api.headers["admin"],
                          json={"name": "tabpy", "role": "analyst"}).json()["api_key"]
    with api.ctx.store.engine.connect() as conn:
        rows = conn.execute(text("SELECT * FROM api_keys")).all()
    assert rows and all(key.split("_", 2)[2] not in str(tuple(row)) for row in rows)


def test_api_keys_cannot_be_made_for_consumers(api):
    r = api.client.post("/auth/api-keys", headers=api.headers["admin"], json={"name": "x", "role": "consumer"})
    assert r.status_code == 422


def test_token_issuer_refuses_a_short_secret():
    try:
        TokenIssuer("short")
    except ValueError as exc:
        assert "32 bytes" in str(exc)
    else:
        raise AssertionError("a short secret was accepted")


def test_garbage_token_raises_auth_error():
    issuer = TokenIssuer("x" * 40)
    try:
        issuer.verify("not.a.jwt")
    except AuthError as exc:
        assert str(exc) == "invalid token"
    else:
        raise AssertionError("garbage accepted")


def test_repeated_wrong_passwords_slow_the_account_down_then_it_recovers(api):
    for _ in range(5):
        assert api.client.post("/auth/token", data={"username": "analyst", "password": "wrong guess"}).status_code == 401
    throttled = api.client.post("/auth/token", data={"username": "analyst", "password": PASSWORD})
    assert throttled.status_code == 429 and int(throttled.headers["retry-after"]) >= 1
    api.clock.advance(3)
    assert api.client.post("/auth/token", data={"username": "analyst", "password": PASSWORD}).status_code == 200
    # a success resets the count: the next single typo is not throttled
    assert api.client.post("/auth/token", data={"username": "analyst", "password": "typo"}).status_code == 401
    assert api.client.post("/auth/token", data={"username": "analyst", "password": PASSWORD}).status_code == 200


def test_the_lock_doubles_but_is_capped(api):
    for _ in range(30):
        api.client.post("/auth/token", data={"username": "analyst", "password": "wrong guess"})
        api.clock.advance(1000)
    api.client.post("/auth/token", data={"username": "analyst", "password": "wrong guess"})
    r = api.client.post("/auth/token", data={"username": "analyst", "password": PASSWORD})
    assert r.status_code == 429 and int(r.headers["retry-after"]) <= 900


def test_installing_identity_twice_swaps_the_context_without_duplicating_routes(identity_db):
    from fastapi import FastAPI

    from collector.api.routes import auth as auth_routes
    from collector.auth import install_identity

    app = FastAPI()
    app.include_router(auth_routes.router)
    first = install_identity(app, identity_db, env={"GRIDSIGHT_JWT_SECRET": "a" * 40})
    routes, middleware = len(app.router.routes), len(app.user_middleware)
    second = install_identity(app, identity_db, env={"GRIDSIGHT_JWT_SECRET": "b" * 40})
    assert app.state.identity is second and second is not first
    assert (len(app.router.routes), len(app.user_middleware)) == (routes, middleware)
    assert "/auth/token" in app.openapi()["paths"]
    second.store.engine.dispose()


def test_another_replica_stops_accepting_a_revoked_key_within_its_check_interval(api):
    from collector.auth import IdentityStore

    replica_b = IdentityStore(api.ctx.store.engine, now=api.clock, check_ttl_s=5.0)
    key, secret = api.ctx.store.create_api_key("tabpy", "analyst")
    assert replica_b.authenticate_api_key(secret).role == "analyst"
    api.ctx.store.revoke_api_key(key.key_id)                      # revoked through replica A
    with_cache = replica_b.authenticate_api_key(secret)           # B still trusts its recent check
    api.clock.advance(5.1)
    try:
        replica_b.authenticate_api_key(secret)
    except AuthError as exc:
        assert "revoked" in str(exc)
    else:
        raise AssertionError("replica B accepted a revoked key after its check interval")
    assert with_cache.role == "analyst"
