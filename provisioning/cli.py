"""`gridsight provision`: the technician's commands (offline) and the gateway's doctor."""

from __future__ import annotations

import argparse
import os
import sys
import tomllib
from pathlib import Path
from typing import Any, Sequence

from gridsight.cli import CLIError, run_cli, explain_defaults

__all__ = ["main"]


def _fleet_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--fleet", type=Path, default=Path(os.environ.get("GRIDSIGHT_FLEET_DIR", "fleet")),
                   help="fleet workspace folder (default: $GRIDSIGHT_FLEET_DIR or ./fleet)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gridsight provision",
                                     description="Create gateway identities, broker accounts and flashable bundles; "
                                                 "check a gateway with 'doctor'.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    ca = sub.add_parser("ca", help="the fleet certificate authority")
    ca_sub = ca.add_subparsers(dest="ca_command", required=True, metavar="CA_COMMAND")
    p = ca_sub.add_parser("init", help="create the fleet CA (once per fleet)")
    _fleet_arg(p)
    p.add_argument("--name", default="gridsight fleet CA", help="the CA certificate's common name")
    p.add_argument("--days", type=int, default=3650, help="days the CA certificate is valid")
    p = ca_sub.add_parser("server-cert", help="issue the broker's TLS certificate")
    _fleet_arg(p)
    p.add_argument("--host", action="append", required=True, help="broker host name or IP (repeatable)")

    p = sub.add_parser("collector-account", help="create a broker account a collector replica reads with "
                                                 "(one per replica: the broker binds client ids to accounts)")
    _fleet_arg(p)
    p.add_argument("--username", default="collector", help="account name (default: collector)")
    p.add_argument("--replica", help="replica name or number: the account becomes USERNAME-REPLICA "
                                     "(e.g. --replica 1 gives collector-1)")

    p = sub.add_parser("gateway", help="create a gateway identity: key pair, certificate, broker account, ACL")
    _fleet_arg(p)
    p.add_argument("gateway_id")
    p.add_argument("--broker", required=True, help="broker URL the gateway uses, e.g. mqtts://broker.example:8883")

    p = sub.add_parser("revoke", help="remove a gateway's broker account and ACL entry")
    _fleet_arg(p)
    p.add_argument("gateway_id")

    p = sub.add_parser("bind-meter", help="bind a meter (serial, reader options, site, location) to a gateway")
    _fleet_arg(p)
    p.add_argument("gateway_id")
    p.add_argument("--meter-id", required=True, help="meter serial number, as it appears on the wire")
    p.add_argument("--type", required=True, help="reader type: modbus_tcp, modbus_rtu, dsmr_p1, replay, sim")
    p.add_argument("--register-map", help="Modbus register map (sdm630, sdm120) for modbus types")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="reader option (repeatable), e.g. host=10.0.0.5, unit=3, port=/dev/ttyUSB0")
    p.add_argument("--site", help="site id the meter is at (the registry's site)")
    p.add_argument("--lat", type=float, help="the site's latitude, degrees north")
    p.add_argument("--lon", type=float, help="the site's longitude, degrees east")

    p = sub.add_parser("bundle", help="write the flashable bundle folder and tarball for a gateway")
    _fleet_arg(p)
    p.add_argument("gateway_id")
    p.add_argument("--out", type=Path, required=True, help="bundle folder to create (tarball beside it)")
    p.add_argument("--model", type=Path, help="ONNX model (its .sig must sit beside it)")
    p.add_argument("--model-public-key", type=Path, help="Ed25519 public key PEM that signs models")
    p.add_argument("--unit", type=Path, help="systemd unit (default: the one shipped with the agent)")
    p.add_argument("--install-dir", default="/etc/gridsight", help="where the bundle lands on the gateway")
    p.add_argument("--data-dir", default="/var/lib/gridsight", help="the agent's data folder on the gateway")
    p.add_argument("--enroll-token-file", type=Path, help="one-time enrollment token to include")
    p.add_argument("--wheelhouse", type=Path, help="a 'provision wheelhouse' folder to carry (offline install)")

    p = sub.add_parser("wheelhouse", help="download the agent's wheels for a gateway platform (offline install "
                                          "from the bundle)")
    p.add_argument("--wheel", type=Path, required=True, help="the gridsight wheel (python -m build / pip wheel .)")
    p.add_argument("--out", type=Path, required=True, help="new folder, e.g. BUNDLE/wheelhouse")
    p.add_argument("--platform", default="manylinux2014_aarch64",
                   help="pip platform tag of the gateway (default: %(default)s, a 64-bit Raspberry Pi OS)")
    p.add_argument("--python-version", default=f"{sys.version_info[0]}.{sys.version_info[1]}",
                   help="the gateway's Python (default: this one, %(default)s)")
    p.add_argument("--extra", default="edge", help="which extra to install (default: %(default)s)")
    p.add_argument("--glibc", default="2.36", help="the gateway's glibc, for manylinux_2_N wheels "
                                                   "(default: %(default)s, Debian 12 / Raspberry Pi OS bookworm)")

    p = sub.add_parser("doctor", help="on the gateway: check config, clock, broker, meters, model, outbox, disk")
    p.add_argument("--config", type=Path, default=Path("/etc/gridsight/agent.toml"), help="the agent's TOML file")
    p.add_argument("--broker-timeout", type=float, default=10.0, help="seconds to wait for the broker")

    p = sub.add_parser("reseal", help="on the gateway: record a legitimate on-site edit (e.g. a new meter IP in "
                                      "agent.toml) in the bundle's MANIFEST.json, so doctor passes again")
    p.add_argument("--config", type=Path, default=Path("/etc/gridsight/agent.toml"),
                   help="the agent config inside the bundle (default: %(default)s)")
    p.add_argument("--reason", required=True, help="what was changed and why (kept in the manifest)")

    p = sub.add_parser("broker-files", help="install the broker's files (passwd, acl, server certificate and key, "
                                            "fleet CA) where the shipped gridsight.conf expects them, readable by "
                                            "the broker's user")
    _fleet_arg(p)
    p.add_argument("--dest", type=Path, default=Path("/etc/mosquitto/gridsight"),
                   help="folder named in gridsight.conf (default: %(default)s)")
    p.add_argument("--owner", default="mosquitto",
                   help="user the broker drops to; the files become owner-readable only for it, never world-readable "
                        "(default: %(default)s; '-' keeps the current user)")

    p = sub.add_parser("deploy-files", help="copy the shipped systemd unit, Mosquitto config and example agent "
                                            "config out of the installed package")
    p.add_argument("--out", type=Path, required=True, help="folder to write them to")

    p = sub.add_parser("enroll-token", help="ask the collector for a one-time enrollment token for a gateway "
                                            "(credentials from GRIDSIGHT_API_KEY or GRIDSIGHT_API_TOKEN)")
    p.add_argument("gateway_id")
    p.add_argument("--api", required=True, help="collector API base URL")
    p.add_argument("--ttl", type=int, default=86_400, help="seconds until the token expires (60..604800)")
    p.add_argument("--out", type=Path, help="write the token to this file (0600) instead of stdout")

    p = sub.add_parser("enroll", help="on the gateway: redeem the one-time token with the collector")
    p.add_argument("--api", required=True, help="collector API base URL")
    p.add_argument("--config", type=Path, default=Path("/etc/gridsight/agent.toml"),
                   help="the agent's TOML file to complete")
    p.add_argument("--token-file", type=Path, help="default: enroll.token beside the config")
    return explain_defaults(parser)


def _option_value(raw: str) -> Any:
    """Reader option values are TOML values (numbers, booleans); anything else is a string."""
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


_SINGLE_METER_TYPES = ("modbus_tcp", "modbus_rtu", "dsmr_p1")


def _reader_table(args) -> dict[str, Any]:
    table: dict[str, Any] = {"type": args.type}
    if args.type in _SINGLE_METER_TYPES:
        table["meter_id"] = args.meter_id
    if args.register_map:
        if not args.type.startswith("modbus"):
            raise CLIError("--register-map applies to modbus_tcp and modbus_rtu meters")
        table["map"] = args.register_map
    for item in args.option:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise CLIError(f"--option {item!r}: expected KEY=VALUE")
        if key.strip() == "type":
            raise CLIError("--option type=...: use --type")
        table[key.strip()] = _option_value(value.strip())
    return table


def _write_secret(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text + "\n")


def _run(args) -> int:
    from provisioning.ca import FleetCA
    from provisioning.fleet import Fleet, MeterBinding

    if args.command == "doctor":
        from edge_agent.doctor import run_doctor
        checks = run_doctor(args.config, broker_timeout_s=args.broker_timeout)
        for check in checks:
            print(check.line())
        failed = sum(not c.ok for c in checks)
        print(f"{len(checks) - failed} ok, {failed} failed", file=sys.stderr)
        return 1 if failed else 0
    if args.command == "wheelhouse":
        from provisioning.wheelhouse import build_wheelhouse
        out = build_wheelhouse(args.wheel, args.out, args.platform, args.python_version, args.extra,
                               progress=lambda m: print(m, file=sys.stderr), glibc=args.glibc)
        print(f"wheelhouse for {args.platform} written to {out}; on the gateway: python3 {out.name}/install.py")
        return 0
    if args.command == "reseal":
        from edge_agent.doctor import reseal_bundle
        changed = reseal_bundle(args.config, args.reason)
        print(f"resealed {', '.join(changed)} in {args.config.parent / 'MANIFEST.json'}" if changed
              else "nothing changed since the last seal")
        return 0
    if args.command == "deploy-files":
        from gridsight.shipped import SHIPPED, shipped_file
        args.out.mkdir(parents=True, exist_ok=True)
        for name in SHIPPED:
            (args.out / name).write_bytes(shipped_file(name).read_bytes())
        print(f"wrote {', '.join(SHIPPED)} to {args.out}")
        return 0
    if args.command == "enroll-token":
        from edge_agent.enrollment import api_headers, request_enrollment_token
        issued = request_enrollment_token(args.api, args.gateway_id, args.ttl, api_headers())
        if args.out:
            _write_secret(args.out, issued["token"])
            print(f"enrollment token for {args.gateway_id} written to {args.out}", file=sys.stderr)
        else:
            print(issued["token"])
        return 0
    if args.command == "enroll":
        from edge_agent.config import AgentSettings
        from edge_agent.enrollment import enroll_gateway
        from gridsight.settings import load_settings
        settings = load_settings(AgentSettings, args.config)
        token_file = args.token_file or args.config.parent / "enroll.token"
        if not token_file.is_file():
            raise CLIError(f"no enrollment token at {token_file}")
        result = enroll_gateway(args.api, token_file.read_text(), settings.gateway_id,
                                Path(settings.mqtt.cert_file) if settings.mqtt.cert_file else None)
        token_file.unlink()
        print(f"enrolled {result['gateway_id']}")
        return 0

    fleet = Fleet(args.fleet)
    if args.command == "ca":
        if args.ca_command == "init":
            ca = FleetCA.init(fleet.ca_dir, args.name, args.days)
            print(f"fleet CA created: {fleet.ca_dir / 'ca.crt'} (keep {fleet.ca_dir / 'ca.key'} offline)")
        else:
            cert, _ = fleet.ca().issue_server(args.host, fleet.broker_dir)
            print(f"broker certificate for {', '.join(args.host)}: {cert}")
        return 0
    if args.command == "broker-files":
        from provisioning.broker import install_broker_files
        installed = install_broker_files(fleet, args.dest, None if args.owner == "-" else args.owner)
        print(f"installed {', '.join(p.name for p in installed)} in {args.dest}"
              + (f" for user {args.owner}" if args.owner != "-" else "")
              + "; reload the broker (systemctl reload mosquitto) to apply")
        return 0
    if args.command == "collector-account":
        fleet.add_collector(args.username, args.replica)
        account = f"{args.username}-{args.replica}" if args.replica else args.username
        print(f"broker account {account}: password in {fleet.broker_dir / (account + '.password')}, "
              f"certificate in {fleet.broker_dir / account}; set MQTT_USERNAME={account} for this replica "
              f"(its MQTT client id is the account name)")
        return 0
    if args.command == "gateway":
        identity = fleet.create_gateway(args.gateway_id, args.broker)
        print(f"gateway {identity.gateway_id} created in {fleet.gateway_dir(identity.gateway_id)}; "
              f"broker files updated: {fleet.passwd_file}, {fleet.acl_file}")
        return 0
    if args.command == "revoke":
        fleet.revoke_gateway(args.gateway_id)
        print(f"gateway {args.gateway_id} revoked; reload the broker to apply {fleet.passwd_file} and {fleet.acl_file}")
        return 0
    if args.command == "bind-meter":
        if (args.lat is None) != (args.lon is None):
            raise CLIError("--lat and --lon go together")
        if args.lat is not None and not (-90 <= args.lat <= 90 and -180 <= args.lon <= 180):
            raise CLIError("--lat must be -90..90 and --lon -180..180")
        identity = fleet.bind_meter(args.gateway_id, MeterBinding(args.meter_id, _reader_table(args), args.site,
                                                                  args.lat, args.lon))
        print(f"meter {args.meter_id} bound to {args.gateway_id} ({len(identity.meters)} meter(s))")
        return 0
    if args.command == "bundle":
        from provisioning.bundle import write_bundle
        token = args.enroll_token_file.read_text().strip() if args.enroll_token_file else None
        folder, tarball = write_bundle(fleet, args.gateway_id, args.out, model=args.model,
                                       model_public_key=args.model_public_key, unit=args.unit,
                                       install_dir=args.install_dir, data_dir=args.data_dir, enroll_token=token,
                                       wheelhouse=args.wheelhouse)
        print(f"bundle written: {folder} and {tarball}; copy it to {args.install_dir} on the gateway, "
              f"then run 'gridsight provision doctor --config {args.install_dir}/agent.toml'")
        return 0
    raise CLIError(f"unknown command {args.command}")


def main(argv: Sequence[str] | None = None) -> int:
    from provisioning.ca import ProvisionError

    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))

    def body() -> int:
        try:
            return _run(args)
        except ProvisionError as exc:
            raise CLIError(str(exc)) from None

    return run_cli(body, "gridsight provision")
