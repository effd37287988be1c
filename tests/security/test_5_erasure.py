"""Item 5: erasure is crypto-shredding. After ``DELETE /customers/{id}`` an attacker holding a copy of
the whole PostgreSQL data directory (heap, dead tuples and WAL), the archive, the collector's data
folder and the master key cannot decrypt the erased customer's personal data."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from collector.pii import MasterKey
from gridsight.local_services import EmbeddedPostgres
from security_support import create_account, sql, start_collector

_WRAPPED = 12 + 32 + 16          # AES-GCM nonce + 256-bit data key + tag


@pytest.fixture
def own_postgres():
    """A PostgreSQL of this test alone, durable as in production, so its data directory can be copied."""
    root = Path(tempfile.mkdtemp(prefix="gridsight-test-shred-"))
    server = EmbeddedPostgres(root / "data").start()
    yield server
    server.close()
    shutil.rmtree(root, ignore_errors=True)


def _files(folder: Path):
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.is_symlink():
            yield path


def _candidate_keys(copies: list[Path], whole: list[Path], customer_id: str, master: AESGCM) -> list[bytes]:
    """Every data key an attacker can unwrap with the master key: any 60-byte window near the
    customer id in any file (heap pages, WAL records), and any window of any small file in ``whole``."""
    aad, needle = b"dek:" + customer_id.encode(), customer_id.encode()
    found = set()
    for folder in copies:
        for path in _files(folder):
            data = path.read_bytes()
            spans = []
            if folder in whole and len(data) <= 1024 * 1024:
                spans.append((0, len(data)))
            at = data.find(needle)
            while at != -1:
                spans.append((max(0, at - 4096), at + 4096))
                at = data.find(needle, at + 1)
            for lo, hi in spans:
                for i in range(lo, min(hi, len(data)) - _WRAPPED + 1):
                    window = data[i:i + _WRAPPED]
                    try:
                        found.add(master.decrypt(window[:12], window[12:], aad))
                    except InvalidTag:
                        pass
    return sorted(found)


@pytest.mark.slow
def test_an_erased_customer_cannot_be_decrypted_from_a_full_copy_of_database_wal_archive_and_master_key(
        shipped_broker, own_postgres, tmp_path):
    fleet, _, port = shipped_broker
    database_url = own_postgres.dsn("postgres")
    master_b64 = MasterKey.generate()
    data_dir = tmp_path / "collector"
    collector = start_collector(fleet, port, database_url, data_dir, master_key=master_b64, ingest=False)
    try:
        create_account(database_url, "root", "admin")
        root = collector.login("root")
        status, body, _ = collector.api("POST", "/customers", headers=root,
                                        body={"name": "Ada Lovelace", "address": "12 Analytical Way, London",
                                              "contact": "+44 20 7946 0000", "meters": ["m-ada"]})
        assert status == 201, body
        cid = body["customer_id"]
        # what an older backup holds: the sealed name
        [(name_enc,)] = sql(database_url, "SELECT name_enc FROM customers WHERE customer_id = %s", cid)
        assert collector.api("DELETE", f"/customers/{cid}", headers=root)[0] == 204
        assert collector.api("GET", f"/customers/{cid}", headers=root)[0] == 404
        sql(database_url, "CHECKPOINT")              # what pg_basebackup would copy now is on disk
    finally:
        collector.stop()

    stolen = tmp_path / "stolen"
    shutil.copytree(own_postgres.data_dir, stolen / "pgdata", symlinks=True,
                    ignore=shutil.ignore_patterns(".s.PGSQL.*"))          # sockets cannot be copied
    shutil.copytree(data_dir, stolen / "collector", symlinks=True)       # archive, key store, logs
    assert any((stolen / "pgdata" / "pg_wal").iterdir())
    master = AESGCM(__import__("base64").b64decode(master_b64))
    keys = _candidate_keys([stolen / "pgdata", stolen / "collector"], [stolen / "collector"], cid, master)
    sealed = bytes(name_enc)
    recovered = []
    for key in keys:
        try:
            recovered.append(AESGCM(key).decrypt(sealed[:12], sealed[12:], f"{cid}:name".encode()).decode())
        except InvalidTag:
            pass
    assert keys == [] and recovered == [], f"decrypted after erasure: {recovered}"
