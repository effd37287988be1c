"""The field flow against a real collector API: the technician fetches a one-time token, the
bundle carries it, the gateway redeems it once with its certificate fingerprint."""

from __future__ import annotations

import os
import subprocess
import sys

from provisioning.ca import cert_fingerprint
from provisioning.cli import main as provision

from identity_support import serve


def _gridsight(args, env=None):
    return subprocess.run([sys.executable, "-m", "gridsight", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})})


def test_enrollment_from_token_to_registered_gateway(identity_db, tmp_path):
    fleet = str(tmp_path / "fleet")
    unit = tmp_path / "unit.service"
    unit.write_text("[Service]\n")
    for argv in (["ca", "init", "--fleet", fleet],
                 ["gateway", "gw-5", "--fleet", fleet, "--broker", "mqtts://broker.example:8883"]):
        assert provision(argv) == 0
    with serve(identity_db) as (port, ctx):
        _, technician_key = ctx.store.create_api_key("field-laptop", "technician")
        api = f"http://127.0.0.1:{port}"
        issued = _gridsight(["provision", "enroll-token", "gw-5", "--api", api, "--ttl", "3600",
                             "--out", str(tmp_path / "gw-5.token")], {"GRIDSIGHT_API_KEY": technician_key})
        assert issued.returncode == 0, issued.stderr
        bundle = tmp_path / "bundle"
        assert provision(["bundle", "gw-5", "--fleet", fleet, "--out", str(bundle), "--install-dir", str(bundle),
                          "--unit", str(unit), "--enroll-token-file", str(tmp_path / "gw-5.token")]) == 0
        token = (bundle / "enroll.token").read_text().strip()

        first = _gridsight(["provision", "enroll", "--api", api, "--config", str(bundle / "agent.toml")])
        assert first.returncode == 0 and "enrolled gw-5" in first.stdout, first.stderr
        assert not (bundle / "enroll.token").exists()
        [registered] = ctx.store.enrolled_gateways()
        assert registered["gateway_id"] == "gw-5"
        assert registered["fingerprint"] == cert_fingerprint((bundle / "client.crt").read_bytes())

        (bundle / "enroll.token").write_text(token)      # a copied token is worth nothing the second time
        again = _gridsight(["provision", "enroll", "--api", api, "--config", str(bundle / "agent.toml")])
        assert again.returncode == 2 and "already used" in again.stderr
        assert again.stderr.strip().count("\n") == 0


def test_enroll_token_needs_api_credentials_from_the_environment(identity_db):
    env = {k: v for k, v in os.environ.items() if k not in ("GRIDSIGHT_API_KEY", "GRIDSIGHT_API_TOKEN")}
    result = subprocess.run([sys.executable, "-m", "gridsight", "provision", "enroll-token", "gw-1", "--api",
                             "http://127.0.0.1:9"], capture_output=True, text=True, env=env)
    assert result.returncode == 2 and "GRIDSIGHT_API_KEY" in result.stderr


def test_a_consumer_or_analyst_key_cannot_issue_enrollment_tokens(identity_db, tmp_path):
    with serve(identity_db) as (port, ctx):
        _, analyst_key = ctx.store.create_api_key("tableau", "analyst")
        result = _gridsight(["provision", "enroll-token", "gw-1", "--api", f"http://127.0.0.1:{port}"],
                            {"GRIDSIGHT_API_KEY": analyst_key})
        assert result.returncode == 2 and "403" in result.stderr
