"""Personal fields are encrypted at rest; erasure makes them unrecoverable and keeps aggregates;
consumers see and export only their own data; analysts never see personal fields."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from collector.keystore import KeyMissing
from collector.pii import CustomerVault, MasterKey, MasterKeyError


def _raw_customer_bytes(api) -> bytes:
    with api.ctx.store.engine.connect() as conn:
        rows = conn.execute(text("SELECT * FROM customers")).all()
    return b"".join(bytes(v) if isinstance(v, (bytes, memoryview)) else str(v).encode() for r in rows for v in r)


def test_personal_fields_are_not_in_the_database_in_clear(api):
    raw = _raw_customer_bytes(api)
    for secret in (b"Ada Lovelace", b"Analytical Way", b"ada@example.org", b"Babbage"):
        assert secret not in raw


def test_admin_reads_decrypted_personal_fields(api):
    r = api.client.get(f"/customers/{api.customer_id}", headers=api.headers["admin"])
    assert r.status_code == 200
    assert r.json() == {"customer_id": api.customer_id, "name": "Ada Lovelace", "address": "12 Analytical Way, London",
                        "contact": "ada@example.org", "meters": [api.own_meter]}


def test_analysts_list_customers_without_personal_fields(api):
    rows = api.client.get("/customers", headers=api.headers["analyst"]).json()
    assert len(rows) == 2
    assert all(r["name"] is None and r["address"] is None and r["contact"] is None for r in rows)
    assert sorted(m for r in rows for m in r["meters"]) == sorted([api.own_meter, api.other_meter])


def test_a_consumer_sees_only_their_own_record(api):
    r = api.client.get("/customers/me", headers=api.headers["consumer"])
    assert r.status_code == 200 and r.json()["name"] == "Ada Lovelace"
    assert api.client.get(f"/customers/{api.customer_id}", headers=api.headers["consumer"]).status_code == 403
    assert api.client.get("/customers", headers=api.headers["consumer"]).status_code == 403


def test_a_consumer_exports_their_own_data(api):
    with api.ctx.store.engine.begin() as conn:   # the collector's daily rollup, as migration 0001 shapes it
        conn.execute(text("CREATE TABLE readings_daily (meter_id text, bucket timestamptz, kwh float8)"))
        conn.execute(text("INSERT INTO readings_daily VALUES (:own, '2026-11-01', 7.5), (:other, '2026-11-01', 9)"),
                     {"own": api.own_meter, "other": api.other_meter})
    r = api.client.get("/customers/me/export", headers=api.headers["consumer"])
    assert r.status_code == 200
    body = r.json()
    assert body["personal"] == {"name": "Ada Lovelace", "address": "12 Analytical Way, London",
                                "contact": "ada@example.org"}
    assert body["consumption"] == {api.own_meter: [{"day": "2026-11-01", "kwh": 7.5}]}


def test_erasure_destroys_the_key_unlinks_meters_and_keeps_aggregates(api):
    with api.ctx.store.engine.begin() as conn:
        conn.execute(text("CREATE TABLE readings_daily (meter_id text, bucket timestamptz, kwh float8)"))
        conn.execute(text("INSERT INTO readings_daily VALUES (:own, '2026-11-01', 7.5)"), {"own": api.own_meter})
    before_key = api.ctx.vault.key_store.get(api.customer_id)
    assert api.client.delete(f"/customers/{api.customer_id}", headers=api.headers["admin"]).status_code == 204

    with api.ctx.store.engine.connect() as conn:
        row = conn.execute(text("SELECT wrapped_key, name_enc, erased_at FROM customers WHERE customer_id = :c"),
                           {"c": api.customer_id}).one()
        links = conn.execute(text("SELECT count(*) FROM customer_meters WHERE meter_id = :m"),
                             {"m": api.own_meter}).scalar()
        kwh = conn.execute(text("SELECT sum(kwh) FROM readings_daily")).scalar()
    assert row.wrapped_key is None and row.name_enc is None and row.erased_at is not None
    assert links == 0 and kwh == 7.5
    assert api.client.get(f"/customers/{api.customer_id}", headers=api.headers["admin"]).status_code == 404
    assert api.client.get("/customers/me", headers=api.headers["consumer"]).status_code == 401
    # the wrapped data key is gone from the key store and was never in the table
    with pytest.raises(KeyMissing):
        api.ctx.vault.key_store.get(api.customer_id)
    assert before_key not in _raw_customer_bytes(api)


def test_a_wrong_master_key_cannot_open_personal_data(api):
    other = CustomerVault(api.ctx.store.engine, MasterKey.from_env({"GRIDSIGHT_MASTER_KEY": MasterKey.generate()}),
                          api.ctx.vault.key_store)
    with pytest.raises(MasterKeyError):
        other.get(api.customer_id)


def test_ciphertext_moved_to_another_customer_does_not_decrypt(api):
    other_id = api.client.get("/customers", headers=api.headers["admin"]).json()
    other_id = next(c["customer_id"] for c in other_id if c["customer_id"] != api.customer_id)
    with api.ctx.store.engine.begin() as conn:
        conn.execute(text("UPDATE customers SET name_enc = (SELECT name_enc FROM customers WHERE customer_id = :a) "
                          "WHERE customer_id = :b"), {"a": api.customer_id, "b": other_id})
    with pytest.raises(Exception):
        api.ctx.vault.get(other_id)


def test_a_meter_cannot_belong_to_two_customers(api):
    r = api.client.post("/customers", headers=api.headers["admin"],
                        json={"name": "X", "address": "Y", "contact": "Z", "meters": [api.own_meter]})
    assert r.status_code == 409


@pytest.mark.parametrize("env,needle", [
    ({}, "GRIDSIGHT_MASTER_KEY"),
    ({"GRIDSIGHT_MASTER_KEY": "bm90IDMyIGJ5dGVz"}, "32 bytes"),
    ({"GRIDSIGHT_MASTER_KEY": "***"}, "base64"),
    ({"GRIDSIGHT_MASTER_KEY_FILE": "/nonexistent/key"}, "GRIDSIGHT_MASTER_KEY_FILE"),
])
def test_a_missing_or_malformed_master_key_is_named(env, needle):
    with pytest.raises(MasterKeyError, match=needle):
        MasterKey.from_env(env)


def test_master_key_from_a_file(tmp_path):
    path = tmp_path / "master.key"
    path.write_text(MasterKey.generate() + "\n")
    key = MasterKey.from_env({"GRIDSIGHT_MASTER_KEY_FILE": str(path)})
    assert key.unwrap(key.wrap(b"k" * 32, "c-1"), "c-1") == b"k" * 32


def test_rotating_the_master_key_keeps_every_customer_readable_only_under_the_new_key(fresh_collector_api, tmp_path):
    api = fresh_collector_api      # a database migrated as the accounts CLI expects it
    import os
    import subprocess
    import sys

    new_key_file = tmp_path / "new.key"
    new_key_file.write_text(MasterKey.generate())
    old_key = api.ctx.vault.master_key
    env = {**os.environ, "GRIDSIGHT_MASTER_KEY_FILE": str(tmp_path / "old.key"),
           "GRIDSIGHT_COLLECTOR_KEY_STORE_DIR": str(api.ctx.vault.key_store.folder)}
    (tmp_path / "old.key").write_text(_key_b64(api))
    result = subprocess.run([sys.executable, "-m", "gridsight", "accounts", "--database-url", _url(api),
                             "rotate-master-key", "--new-key-file", str(new_key_file)],
                            capture_output=True, text=True, env=env)
    assert result.returncode == 0 and "re-wrapped 2" in result.stdout, result.stderr
    rotated = CustomerVault(api.ctx.store.engine, MasterKey.from_env({"GRIDSIGHT_MASTER_KEY_FILE": str(new_key_file)}),
                            api.ctx.vault.key_store)
    assert rotated.get(api.customer_id).name == "Ada Lovelace"
    with pytest.raises(MasterKeyError):
        CustomerVault(api.ctx.store.engine, old_key, api.ctx.vault.key_store).get(api.customer_id)


def _url(api) -> str:
    return api.ctx.store.engine.url.render_as_string(hide_password=False).replace("+psycopg", "")


def _key_b64(api) -> str:
    return api.master_key_b64


def test_rotation_rewraps_the_key_store_so_only_the_new_master_key_opens_it(api):
    old_key, new_key = api.ctx.vault.master_key, MasterKey.from_env({"GRIDSIGHT_MASTER_KEY": MasterKey.generate()})
    before = api.ctx.vault.key_store.get(api.customer_id)
    assert api.ctx.vault.rotate_master_key(new_key) == 2
    assert api.ctx.vault.key_store.get(api.customer_id) != before
    assert CustomerVault(api.ctx.store.engine, new_key, api.ctx.vault.key_store).get(api.customer_id).name == \
        "Ada Lovelace"
    with pytest.raises(MasterKeyError):
        CustomerVault(api.ctx.store.engine, old_key, api.ctx.vault.key_store).get(api.customer_id)


def test_data_keys_an_older_version_kept_in_the_database_move_to_the_key_store(api):
    wrapped = api.ctx.vault.key_store.get(api.customer_id)
    with api.ctx.store.engine.begin() as conn:       # as written before the key store existed
        conn.execute(text("UPDATE customers SET wrapped_key = :w WHERE customer_id = :c"),
                     {"w": wrapped, "c": api.customer_id})
    api.ctx.vault.key_store.destroy(api.customer_id)
    assert api.ctx.vault.get(api.customer_id).name == "Ada Lovelace"
    assert api.ctx.vault.adopt_database_keys() == 1
    with api.ctx.store.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM customers WHERE wrapped_key IS NOT NULL")).scalar() == 0
    assert api.ctx.vault.get(api.customer_id).name == "Ada Lovelace"
