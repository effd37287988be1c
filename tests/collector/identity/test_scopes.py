"""The narrowings of require_roles: consumers only for their own meters, policymakers only for
aggregates. Tested on a small router declared here, as a collector route would declare it."""

from __future__ import annotations

from typing import Annotated

import pytest
from fastapi import APIRouter, Path, Query

from collector.auth import ADMIN, ANALYST, CONSUMER, POLICYMAKER, Principal, require_roles


@pytest.fixture
def probe(api):
    router = APIRouter(prefix="/probe")

    @router.get("/meters/{meter_id}", dependencies=[require_roles(ADMIN, ANALYST, CONSUMER, consumer_scope="meter")])
    def one_meter(meter_id: Annotated[str, Path()]) -> dict:
        return {"meter_id": meter_id}

    @router.get("/consumption")
    def consumption(principal: Annotated[Principal, require_roles(ADMIN, ANALYST, POLICYMAKER, CONSUMER,
                                                                  consumer_scope="meter",
                                                                  policymaker_scope="aggregate")],
                    meter_id: Annotated[str | None, Query()] = None,
                    region_id: Annotated[str | None, Query()] = None) -> dict:
        return {"meter_id": meter_id, "region_id": region_id, "role": principal.role}

    api.app.include_router(router)
    return api


def test_a_consumer_reads_their_own_meter(probe):
    r = probe.client.get(f"/probe/meters/{probe.own_meter}", headers=probe.headers["consumer"])
    assert r.status_code == 200


def test_a_consumer_cannot_read_another_customers_meter(probe):
    r = probe.client.get(f"/probe/meters/{probe.other_meter}", headers=probe.headers["consumer"])
    assert r.status_code == 403 and "not one of your meters" in r.json()["detail"]
    r = probe.client.get("/probe/consumption", params={"meter_id": probe.other_meter},
                         headers=probe.headers["consumer"])
    assert r.status_code == 403


def test_a_consumer_cannot_ask_for_a_region(probe):
    r = probe.client.get("/probe/consumption", params={"region_id": "north"}, headers=probe.headers["consumer"])
    assert r.status_code == 403 and "own meters" in r.json()["detail"]


def test_a_policymaker_gets_regions_but_never_a_meter(probe):
    ok = probe.client.get("/probe/consumption", params={"region_id": "north"}, headers=probe.headers["policymaker"])
    assert ok.status_code == 200 and ok.json()["role"] == "policymaker"
    r = probe.client.get("/probe/consumption", params={"meter_id": probe.own_meter},
                         headers=probe.headers["policymaker"])
    assert r.status_code == 403 and "aggregates only" in r.json()["detail"]
    assert probe.client.get(f"/probe/meters/{probe.own_meter}", headers=probe.headers["policymaker"]).status_code == 403


def test_analysts_read_any_meter(probe):
    r = probe.client.get(f"/probe/meters/{probe.other_meter}", headers=probe.headers["analyst"])
    assert r.status_code == 200


@pytest.mark.parametrize("kwargs", [{}, {"consumer_scope": "everything"}])
def test_admitting_consumers_without_a_narrowing_is_a_programming_error(kwargs):
    with pytest.raises(ValueError):
        require_roles(ADMIN, CONSUMER, **kwargs)


def test_unknown_roles_are_a_programming_error():
    with pytest.raises(ValueError):
        require_roles("superuser")


def test_a_route_that_ignores_meter_id_fails_closed_for_consumers(api):
    router = APIRouter()

    @router.get("/probe/all-meters", dependencies=[require_roles(ADMIN, CONSUMER, consumer_scope="meter")])
    def all_meters() -> list[str]:
        return [api.own_meter, api.other_meter]     # a list that does not narrow to the asked meter

    api.app.include_router(router)
    r = api.client.get("/probe/all-meters", params={"meter_id": api.own_meter}, headers=api.headers["consumer"])
    assert r.status_code == 403 and "not limited to one meter" in r.json()["detail"]
    assert api.client.get("/probe/all-meters", headers=api.headers["admin"]).status_code == 200
