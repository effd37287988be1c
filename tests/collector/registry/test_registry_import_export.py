"""Importing and exporting the grid registry against a real, migrated PostgreSQL."""

from __future__ import annotations

import pytest

from collector.registry import RegistryError, export_registry, import_registry, parse_document
from registry_support import document, fetch, on_db, table_counts


def _import(url: str, doc: dict):
    return on_db(url, lambda c: import_registry(c, parse_document(doc)))


def test_import_places_sites_with_coordinates_area_type_feeder_and_region(db):
    result = _import(db, document())

    assert result.counts["sites"] == {"inserted": 2, "updated": 0, "unchanged": 0}
    assert result.counts["meters"]["inserted"] == 3
    assert fetch(db, "SELECT id, name, region_id, feeder_id, lat, lon, area_type, timezone FROM sites ORDER BY id") == [
        ("site-a", "Substation A", "north", "n-f1", 52.37, 4.89, "urban", "Europe/Amsterdam"),
        ("site-b", "site-b", "south", "s-f1", 51.5, 5.9, "rural", "UTC")]
    assert fetch(db, "SELECT id, region_id, capacity_kw FROM feeders ORDER BY id") == [
        ("n-f1", "north", 800.0), ("s-f1", "south", None)]
    # a meter without a site is placed at its gateway's site
    assert fetch(db, "SELECT id, gateway_id, site_id, name FROM meters ORDER BY id") == [
        ("m-a1", "gw-a", "site-a", None), ("m-a2", "gw-a", "site-a", "commercial"), ("m-b1", "gw-b", "site-b", None)]
    assert fetch(db, "SELECT id, site_id, auto_registered FROM gateways ORDER BY id") == [
        ("gw-a", "site-a", False), ("gw-b", "site-b", False)]


def test_importing_the_same_document_again_changes_nothing(db):
    _import(db, document())
    before = fetch(db, "SELECT id, created_at FROM sites ORDER BY id")

    again = _import(db, document())

    assert all(c["inserted"] == 0 and c["updated"] == 0 for c in again.counts.values()), again.counts
    assert again.counts["meters"]["unchanged"] == 3
    assert fetch(db, "SELECT id, created_at FROM sites ORDER BY id") == before


def test_a_corrected_entry_is_updated_in_place_and_counted(db):
    _import(db, document())
    doc = document()
    doc["sites"][1]["latitude"] = 51.25
    doc["sites"][1]["area_type"] = "urban"

    result = _import(db, doc)

    assert result.counts["sites"] == {"inserted": 0, "updated": 1, "unchanged": 1}
    assert fetch(db, "SELECT lat, area_type FROM sites WHERE id = 'site-b'") == [(51.25, "urban")]


@pytest.mark.parametrize("change, expected", [
    (lambda d: d["sites"][1].update(latitude=95), "sites[1].latitude: must be between -90 and 90"),
    (lambda d: d["sites"][0].update(longitude="4.9"), "sites[0].longitude: must be a number"),
    (lambda d: d["sites"][0].update(area_type="suburban"), "sites[0].area_type: must be one of urban, rural"),
    (lambda d: d["sites"][0].update(timezone="Mars/Olympus"), "sites[0].timezone: must be an IANA time zone"),
    (lambda d: d["sites"][0].pop("latitude"), "sites[0].latitude: required"),
    (lambda d: d["sites"][0].update(address="12 Main St"), "sites[0].address: unknown field"),
    (lambda d: d["meters"][2].update(id="bad id!"), "meters[2].id: must be an id"),
    (lambda d: d["meters"].append({"id": "m-a1", "gateway": "gw-b"}), "meters[3].id: 'm-a1' appears twice"),
    (lambda d: d["feeders"][0].update(capacity_kw=-5), "feeders[0].capacity_kw: must be at least 0"),
    (lambda d: d.update(customers=[]), "customers: unknown section"),
])
def test_an_invalid_field_is_named_and_the_document_is_refused(change, expected):
    doc = document()
    change(doc)
    with pytest.raises(RegistryError) as err:
        parse_document(doc)
    assert any(e.startswith(expected) for e in err.value.errors), err.value.errors


def test_text_that_is_not_json_is_refused_with_a_clear_error():
    with pytest.raises(RegistryError, match="document: not valid JSON"):
        parse_document(b"{regions: [")


@pytest.mark.parametrize("change, expected", [
    (lambda d: d["meters"].append({"id": "m-x", "gateway": "gw-nowhere"}),
     "meters[3].gateway: no gateway 'gw-nowhere' in the document or the database"),
    (lambda d: d["sites"][0].update(feeder="f-missing"),
     "sites[0].feeder: no feeder 'f-missing' in the document or the database"),
    (lambda d: d["sites"][0].update(region="south"),
     "sites[0].region: 'south', but feeder 'n-f1' is in region 'north'"),
    (lambda d: d["feeders"][1].update(region="east"), "feeders[1].region: no region 'east'"),
])
def test_a_dangling_reference_is_named_and_nothing_is_written(db, change, expected):
    doc = document()
    change(doc)
    with pytest.raises(RegistryError) as err:
        _import(db, doc)
    assert any(e.startswith(expected) for e in err.value.errors), err.value.errors
    assert table_counts(db) == (0, 0, 0, 0, 0)


def test_a_failed_import_leaves_an_earlier_registry_untouched(db):
    _import(db, document())
    before = fetch(db, "SELECT id, lat, lon, area_type FROM sites ORDER BY id")
    doc = document()
    doc["sites"][0]["latitude"] = 10.0                     # valid change ...
    doc["meters"].append({"id": "m-z", "gateway": "gw-z"})  # ... in a document with a bad reference
    with pytest.raises(RegistryError):
        _import(db, doc)
    assert fetch(db, "SELECT id, lat, lon, area_type FROM sites ORDER BY id") == before
    assert table_counts(db) == (2, 2, 2, 2, 3)


def test_references_may_point_at_rows_already_in_the_database(db):
    _import(db, document())
    # ingest auto-registered a gateway the operator now places at an existing site
    on_db(db, lambda c: c.execute("INSERT INTO gateways (id, auto_registered) VALUES ('gw-new', true)"))
    later = {"gateways": [{"id": "gw-new", "site": "site-a"}],
             "meters": [{"id": "m-new", "gateway": "gw-new"}, {"id": "m-old-gw", "gateway": "gw-b"}]}

    result = _import(db, later)

    assert result.counts["gateways"] == {"inserted": 0, "updated": 1, "unchanged": 0}
    assert fetch(db, "SELECT site_id, auto_registered FROM gateways WHERE id = 'gw-new'") == [("site-a", False)]
    assert fetch(db, "SELECT id, site_id FROM meters WHERE id IN ('m-new', 'm-old-gw') ORDER BY id") == [
        ("m-new", "site-a"), ("m-old-gw", "site-b")]


def test_export_gives_back_a_document_that_reimports_unchanged(db):
    _import(db, document())

    exported = on_db(db, export_registry).as_dict()

    assert exported["format"] == "gridsight-registry/1"
    assert {s["id"]: (s["latitude"], s["longitude"], s["area_type"]) for s in exported["sites"]} == {
        "site-a": (52.37, 4.89, "urban"), "site-b": (51.5, 5.9, "rural")}
    assert [m["site"] for m in exported["meters"]] == ["site-a", "site-a", "site-b"]
    again = _import(db, exported)
    assert all(c["inserted"] == 0 and c["updated"] == 0 for c in again.counts.values()), again.counts
