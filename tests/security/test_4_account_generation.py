"""Item 4: tokens and API keys carry their account's generation. Deleting, disabling or re-creating
an account, or changing its role or customer, ends every token and API key it holds (within the
identity cache TTL, ``IdentityStore.check_ttl_s``, 5 s)."""

from __future__ import annotations

import pytest

from security_support import create_account, sql, start_collector, wait_until


@pytest.fixture
def api_process(shipped_broker, database_url, tmp_path):
    fleet, _, port = shipped_broker
    from collector.pii import MasterKey

    collector = start_collector(fleet, port, database_url, tmp_path / "collector", ingest=False,
                                master_key=MasterKey.generate())
    create_account(database_url, "root", "admin")
    yield collector
    collector.stop()


def _key(collector, headers) -> dict[str, str]:
    status, body, _ = collector.api("POST", "/auth/api-keys", headers=headers, body={"name": "tableau", "role": "admin"})
    assert status == 201, body
    return {"X-API-Key": body["api_key"]}


def test_a_deleted_and_recreated_admins_old_token_and_key_stop_working(api_process):
    api = api_process
    root = api.login("root")
    create_account(api.database_url, "boss", "admin")
    old_token = api.login("boss")
    old_key = _key(api, old_token)
    assert api.api("GET", "/auth/me", headers=old_token)[1]["role"] == "admin"

    assert api.api("DELETE", "/auth/users/boss", headers=root)[0] == 204
    status, body, _ = api.api("POST", "/auth/users", headers=root,
                              body={"username": "boss", "password": "correct horse battery staple",
                                    "role": "policymaker"})
    assert status == 201, body

    assert api.api("GET", "/auth/me", headers=old_token)[0] == 401, "the old admin token still works"
    assert api.api("POST", "/auth/api-keys", headers=old_token, body={"name": "x", "role": "admin"})[0] == 401
    assert api.api("GET", "/auth/me", headers=old_key)[0] == 401, "the old admin's API key still works"
    new = api.login("boss")
    assert api.api("GET", "/auth/me", headers=new)[1]["role"] == "policymaker"


@pytest.mark.parametrize("change", [
    "UPDATE users SET role = 'policymaker' WHERE username = 'boss'",
    "UPDATE users SET disabled = true WHERE username = 'boss'",
])
@pytest.mark.slow
def test_a_role_change_or_disable_made_anywhere_ends_tokens_and_keys_within_the_cache_ttl(api_process, change):
    api = api_process
    create_account(api.database_url, "boss", "admin")
    token = api.login("boss")
    key = _key(api, token)
    sql(api.database_url, change)        # e.g. by another replica or an operator's SQL
    wait_until(lambda: api.api("GET", "/auth/me", headers=token)[0] == 401, 60, "the token to be refused")
    wait_until(lambda: api.api("GET", "/auth/me", headers=key)[0] == 401, 60, "the API key to be refused")


@pytest.mark.slow
def test_a_consumer_moved_to_another_customer_loses_the_old_token(api_process):
    api = api_process
    root = api.login("root")
    ids = []
    for name in ("Ada Lovelace", "Charles Babbage"):
        status, body, _ = api.api("POST", "/customers", headers=root,
                                  body={"name": name, "address": "London", "contact": "x@example.org", "meters": []})
        assert status == 201, body
        ids.append(body["customer_id"])
    create_account(api.database_url, "ada", "consumer", ids[0])
    token = api.login("ada")
    assert api.api("GET", "/auth/me", headers=token)[1]["customer_id"] == ids[0]
    sql(api.database_url, "UPDATE users SET customer_id = %s WHERE username = 'ada'", ids[1])
    wait_until(lambda: api.api("GET", "/auth/me", headers=token)[0] == 401, 60, "the token to be refused")
