"""Gateways enroll with a one-time token that expires; a second use is refused."""

from __future__ import annotations


def _token(api, gateway_id="gw-7", ttl_s=3600, role="technician"):
    r = api.client.post("/enrollment/tokens", headers=api.headers[role], json={"gateway_id": gateway_id, "ttl_s": ttl_s})
    assert r.status_code == 201, r.text
    return r.json()["token"]


def _enroll(api, token, gateway_id="gw-7"):
    return api.client.post("/enrollment/enroll", json={"token": token, "gateway_id": gateway_id,
                                                       "credential": "certificate", "fingerprint": "ab" * 32})


def test_a_gateway_enrolls_once_with_its_token(api):
    token = _token(api)
    r = _enroll(api, token)
    assert r.status_code == 201 and r.json()["gateway_id"] == "gw-7"
    listed = api.client.get("/enrollment/gateways", headers=api.headers["technician"]).json()
    assert [(g["gateway_id"], g["fingerprint"]) for g in listed] == [("gw-7", "ab" * 32)]


def test_a_second_use_of_a_token_is_refused(api):
    token = _token(api)
    assert _enroll(api, token).status_code == 201
    again = _enroll(api, token)
    assert again.status_code == 403 and "already used" in again.json()["detail"]


def test_an_expired_token_is_refused(api):
    token = _token(api, ttl_s=60)
    api.clock.advance(61)
    r = _enroll(api, token)
    assert r.status_code == 403 and "expired" in r.json()["detail"]


def test_a_token_works_only_for_the_gateway_it_was_issued_for(api):
    token = _token(api, gateway_id="gw-7")
    r = _enroll(api, token, gateway_id="gw-8")
    assert r.status_code == 403 and "another gateway" in r.json()["detail"]
    assert _enroll(api, token, gateway_id="gw-7").status_code == 201


def test_an_unknown_token_is_refused(api):
    r = _enroll(api, "gse_" + "x" * 32)
    assert r.status_code == 403 and "unknown" in r.json()["detail"]


def test_tokens_are_stored_only_as_digests(api):
    from sqlalchemy import text
    token = _token(api)
    with api.ctx.store.engine.connect() as conn:
        rows = conn.execute(text("SELECT * FROM enrollment_tokens")).all()
    assert all(token not in str(tuple(r)) for r in rows)


def test_a_token_lifetime_is_bounded(api):
    r = api.client.post("/enrollment/tokens", headers=api.headers["admin"],
                        json={"gateway_id": "gw-7", "ttl_s": 365 * 86400})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][-1] == "ttl_s"


def test_an_enrolled_gateway_is_registered_for_a_collector_that_refuses_unknown_gateways(fresh_collector_api):
    from sqlalchemy import text
    api = fresh_collector_api
    assert _enroll(api, _token(api, gateway_id="gw-new"), gateway_id="gw-new").status_code == 201
    with api.ctx.store.engine.connect() as conn:
        row = conn.execute(text("SELECT status, auto_registered FROM gateways WHERE id = 'gw-new'")).one()
    assert row.status == "active" and row.auto_registered is False
