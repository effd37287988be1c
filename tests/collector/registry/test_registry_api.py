"""`/registry` over HTTP: who may read and write it, and what a bad document answers."""

from __future__ import annotations

import json

import pytest

from registry_support import document, fetch, table_counts


@pytest.mark.parametrize("role", ["admin", "technician"])
def test_admins_and_technicians_import_a_document_and_get_the_counts(api, db, role):
    r = api.client.put("/registry", content=json.dumps(document()), headers=api.headers[role])

    assert r.status_code == 200, r.text
    assert r.json()["counts"]["sites"] == {"inserted": 2, "updated": 0, "unchanged": 0}
    assert fetch(db, "SELECT id, lat, lon, area_type FROM sites ORDER BY id") == [
        ("site-a", 52.37, 4.89, "urban"), ("site-b", 51.5, 5.9, "rural")]


@pytest.mark.parametrize("role", ["analyst", "policymaker", "consumer"])
def test_other_roles_may_not_change_the_registry(api, db, role):
    r = api.client.put("/registry", content=json.dumps(document()), headers=api.headers[role])
    assert r.status_code == 403
    assert table_counts(db) == (0, 0, 0, 0, 0)


def test_an_anonymous_caller_is_refused(api):
    assert api.client.get("/registry").status_code == 401
    assert api.client.put("/registry", content=json.dumps(document())).status_code == 401


@pytest.mark.parametrize("role, status", [("admin", 200), ("technician", 200), ("analyst", 200),
                                          ("policymaker", 403), ("consumer", 403)])
def test_reading_the_registry_is_for_admins_technicians_and_analysts(api, role, status):
    api.client.put("/registry", content=json.dumps(document()), headers=api.headers["admin"])
    r = api.client.get("/registry", headers=api.headers[role])
    assert r.status_code == status
    if status == 200:
        assert [s["id"] for s in r.json()["sites"]] == ["site-a", "site-b"]


def test_a_bad_document_answers_422_naming_every_field_and_changes_nothing(api, db):
    doc = document()
    doc["sites"][0]["latitude"] = -91
    doc["meters"][0]["gateway"] = "gw-unknown"
    r = api.client.put("/registry", content=json.dumps(doc), headers=api.headers["admin"])

    assert r.status_code == 422
    messages = [d["msg"] for d in r.json()["detail"]]
    assert "sites[0].latitude: must be between -90 and 90" in messages
    assert table_counts(db) == (0, 0, 0, 0, 0)


def test_a_body_that_is_not_json_answers_422(api):
    r = api.client.put("/registry", content=b"\xff\xfe not json", headers=api.headers["admin"])
    assert r.status_code == 422
    assert "not valid JSON" in r.json()["detail"][0]["msg"]


def test_an_oversized_document_is_refused_before_it_is_read(api, db):
    huge = b'{"regions": [' + b'{"id": "r"},' * 800_000 + b'{"id": "r"}]}'
    r = api.client.put("/registry", content=huge, headers=api.headers["admin"])
    assert r.status_code == 413
    assert table_counts(db) == (0, 0, 0, 0, 0)
