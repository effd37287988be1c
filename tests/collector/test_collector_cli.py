"""`gridsight collector ...` as a user runs it: real processes, one-line errors, exit codes."""

from __future__ import annotations

import pytest
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

from gridsight.local_services import free_port

from collector_kit import Publisher, message, raw_chunk, scalar, summary, wait_until


def run(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gridsight", "collector", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout)


def test_help_lists_every_command():
    out = run("--help")
    assert out.returncode == 0
    for command in ("serve", "ingest", "migrate", "rebuild", "status", "maintain"):
        assert command in out.stdout


def test_bad_settings_fail_with_one_line_naming_the_key(tmp_path):
    out = run("status", env={"GRIDSIGHT_COLLECTOR_UNKNOWN_GATEWAYS": "maybe", "GRIDSIGHT_DATA_DIR": str(tmp_path)})
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0
    assert "unknown_gateways" in out.stderr

    bad_url = run("status", env={"DATABASE_URL": "mysql://x/y"})
    assert bad_url.returncode == 2 and "database_url" in bad_url.stderr


def test_serve_refuses_several_api_workers_alongside_ingest(tmp_path):
    out = run("serve", "--workers", "2", env={"GRIDSIGHT_DATA_DIR": str(tmp_path)})
    assert out.returncode == 2 and "--no-ingest" in out.stderr


def test_status_without_any_database_says_what_to_do(tmp_path):
    out = run("status", env={"GRIDSIGHT_DATA_DIR": str(tmp_path)})
    assert out.returncode == 2
    assert "DATABASE_URL" in out.stderr and "Traceback" not in out.stderr


def test_rebuild_from_s3_without_a_bucket_names_the_variable(database_url):
    out = run("rebuild", "--from-s3", "--since", "2026-01-01", env={"DATABASE_URL": database_url})
    assert out.returncode == 2 and "S3_BUCKET" in out.stderr
    bad_date = run("rebuild", "--since", "yesterday", env={"DATABASE_URL": database_url})
    assert bad_date.returncode == 2 and "--since" in bad_date.stderr


@pytest.mark.slow
def test_serve_ingests_answers_the_api_and_rebuild_restores_a_fresh_database(tmp_path, mosquitto, database_url,
                                                                            postgres_server):
    port = free_port()
    env = {**os.environ, "DATABASE_URL": database_url, "MQTT_URL": mosquitto.url,
           "GRIDSIGHT_DATA_DIR": str(tmp_path / "c"), "GRIDSIGHT_COLLECTOR_REPLICA_ID": "cli",
           "GRIDSIGHT_COLLECTOR_ARCHIVE_INTERVAL_S": "0.2", "GRIDSIGHT_COLLECTOR_UNKNOWN_GATEWAYS": "register"}
    migrated = run("migrate", env=env)
    assert migrated.returncode == 0 and "revision" in migrated.stdout

    proc = subprocess.Popen([sys.executable, "-m", "gridsight", "collector", "serve", "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=open(tmp_path / "serve.log", "wb"))
    try:
        def ready() -> bool:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-2000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                    return json.load(r)["ready"]
            except OSError:
                return False
        wait_until(ready, what="serve ready")
        pub = Publisher(mosquitto.port)
        pub.send_all([message(raw_chunk("gw-c", s)) for s in range(1, 11)] + [message(summary("gw-c", 11))])
        pub.close()
        wait_until(lambda: scalar(database_url, "SELECT count(*) FROM archive_objects") > 0
                   and scalar(database_url, "SELECT count(*) FROM archive_outbox") == 0, what="archived")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            metrics = r.read().decode()
        assert 'gridsight_collector_messages_stored_total{kind="raw"} 10' in metrics
        from collector.auth.store import IdentityStore, engine_for
        key = IdentityStore(engine_for(database_url)).create_api_key("cli-test", "analyst")[1]
        meters = urllib.request.Request(f"http://127.0.0.1:{port}/meters?gateway_id=gw-c", headers={"X-API-Key": key})
        with urllib.request.urlopen(meters, timeout=5) as r:
            assert json.load(r)["total"] == 4
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0

    status = run("status", "--json", env=env)
    assert status.returncode == 0
    assert json.loads(status.stdout)["counts"]["readings"] == 400

    fresh_name = f"rebuilt_cli_{int(time.time() * 1000) % 10**9}"
    import psycopg
    with psycopg.connect(postgres_server.dsn("postgres"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{fresh_name}"')
    try:
        fresh_env = {**env, "DATABASE_URL": postgres_server.dsn(fresh_name)}
        today = time.strftime("%Y-%m-%d", time.gmtime())
        for _ in range(2):
            out = run("rebuild", "--since", today, "--from-dir", str(tmp_path / "c" / "archive"), "--quiet",
                      env=fresh_env)
            assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout.strip().splitlines()[-1])["duplicates"] == 11
        assert scalar(postgres_server.dsn(fresh_name), "SELECT count(*) FROM readings") == 400
        assert scalar(postgres_server.dsn(fresh_name), "SELECT count(*) FROM interval_summaries") == 4
    finally:
        with psycopg.connect(postgres_server.dsn("postgres"), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{fresh_name}" WITH (FORCE)')


def _established_per_process(pids: list[int], port: int) -> dict[int, int]:
    """Accepted connections on ``port`` held by each process (Linux /proc)."""
    local = f":{port:04X}"
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as fh:
            for line in fh.readlines()[1:]:
                fields = line.split()
                if fields[1].endswith(local) and fields[3] == "01":      # ESTABLISHED, server side
                    inodes.add(fields[9])
    held = {}
    for pid in pids:
        count = 0
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in inodes:
                count += 1
        held[pid] = count
    return held


@pytest.mark.slow
def test_api_workers_share_the_port_and_the_connections(tmp_path, database_url):
    import socket

    port = free_port()
    env = {**os.environ, "DATABASE_URL": database_url, "GRIDSIGHT_DATA_DIR": str(tmp_path / "c")}
    proc = subprocess.Popen([sys.executable, "-m", "gridsight", "collector", "serve", "--no-ingest", "--workers", "2",
                             "--port", str(port)], env=env, stdout=subprocess.DEVNULL,
                            stderr=open(tmp_path / "serve.log", "wb"))
    clients = []
    try:
        def healthy() -> bool:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-2000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
                    return True
            except OSError:
                return False
        wait_until(healthy, what="serve ready")
        children = [int(p) for p in subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True,
                                                   text=True).stdout.split()]
        # 40 keep-alive clients connecting at once, as dashboards and the query benchmark do
        for _ in range(40):
            sock = socket.create_connection(("127.0.0.1", port))
            sock.sendall(f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
            clients.append(sock)
        for sock in clients:
            assert sock.recv(1024).startswith(b"HTTP/1.1 200")
        held = _established_per_process(children, port)
        workers = [n for n in held.values() if n > 0]

        assert sum(held.values()) == 40
        assert len(workers) == 2 and min(workers) >= 8, held
    finally:
        for sock in clients:
            sock.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
