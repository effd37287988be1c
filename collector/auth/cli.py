"""`gridsight accounts`: API accounts and service keys, from the operator's shell.

The first admin has to come from somewhere other than the API: this is it. Passwords are read
from a file, the environment (``GRIDSIGHT_NEW_PASSWORD``) or the terminal, never from argv
where ``ps`` would show them. The database is ``--database-url``, ``DATABASE_URL``, or the
embedded PostgreSQL of the collector's data directory (started for the command when
``gridsight collector serve`` is not running). Like ``serve``, every command first brings the
schema up to date, so ``create-user`` works on a fresh database.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path
from typing import Sequence

from gridsight.cli import CLIError, run_cli, explain_defaults

__all__ = ["main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gridsight accounts", description="Manage API accounts and service keys.")
    parser.add_argument("--database-url",
                        help="PostgreSQL URL (default: $DATABASE_URL, else the embedded PostgreSQL in the collector's "
                             "data dir, started for this command if 'collector serve' is not running); "
                             "the schema is migrated first, as 'collector serve' does")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("create-user", help="create an account (password from --password-file, "
                                           "$GRIDSIGHT_NEW_PASSWORD or the terminal)")
    p.add_argument("username")
    p.add_argument("--role", required=True, choices=["admin", "technician", "analyst", "policymaker", "consumer"],
                   help="what the account may see and do (docs/security.md)")
    p.add_argument("--customer-id", help="for consumers: the customer whose meters they may see")
    p.add_argument("--password-file", type=Path,
                   help="read the password from this file (else asked on the terminal)")
    sub.add_parser("list-users", help="list accounts")
    p = sub.add_parser("delete-user", help="delete an account; its tokens stop working at once")
    p.add_argument("username")
    p = sub.add_parser("create-api-key", help="create a key for a service such as Tableau or TabPy; printed once")
    p.add_argument("name")
    p.add_argument("--role", required=True, choices=["admin", "technician", "analyst", "policymaker"],
                   help="the role the key acts with")
    sub.add_parser("list-api-keys", help="list API keys (never their secrets)")
    p = sub.add_parser("revoke-api-key", help="revoke an API key")
    p.add_argument("key_id")
    p = sub.add_parser("rotate-master-key", help="re-wrap every customer's data key under a new master key "
                                                 "(current key from GRIDSIGHT_MASTER_KEY[_FILE])")
    p.add_argument("--new-key-file", type=Path, required=True, help="file with base64 of 32 random bytes")
    return explain_defaults(parser)


def _password(args, keys) -> str:
    if args.password_file:
        return args.password_file.read_text().strip()
    if keys.new_password:
        return keys.new_password
    if not sys.stdin.isatty():
        raise CLIError("no password: use --password-file or GRIDSIGHT_NEW_PASSWORD")
    first = getpass.getpass(f"password for {args.username}: ")
    if first != getpass.getpass("again: "):
        raise CLIError("the passwords differ")
    return first


def _run(args) -> int:
    from collector.auth.store import IdentityError, IdentityStore, engine_for
    from collector.services import open_services
    from collector.settings import load_collector_settings

    settings = load_collector_settings(overrides={"database_url": args.database_url})
    with open_services(settings, mqtt=False, migrate=True) as services:
        store = IdentityStore(engine_for(services.database_url))
        return _command(args, store, IdentityError, settings.secrets, settings.key_store_path)


def _command(args, store, IdentityError, keys, key_store_dir) -> int:
    try:
        if args.command == "create-user":
            user = store.create_user(args.username, _password(args, keys), args.role, args.customer_id)
            print(f"created {user.role} {user.username}")
        elif args.command == "list-users":
            for u in store.list_users():
                print(f"{u.username}\t{u.role}\t{u.customer_id or '-'}\t{'disabled' if u.disabled else 'active'}")
        elif args.command == "delete-user":
            if not store.delete_user(args.username):
                raise CLIError(f"no account {args.username!r}")
            print(f"deleted {args.username}")
        elif args.command == "create-api-key":
            key, secret = store.create_api_key(args.name, args.role)
            print(secret)
            print(f"key {key.key_id} ({key.role}) for {key.name}: store it now, it is not shown again",
                  file=sys.stderr)
        elif args.command == "list-api-keys":
            for k in store.list_api_keys():
                print(f"{k.key_id}\t{k.name}\t{k.role}\t{'revoked' if k.revoked else 'active'}")
        elif args.command == "rotate-master-key":
            from collector.pii import CustomerVault, MasterKey, MasterKeyError
            try:
                from collector.keystore import FileKeyStore
                vault = CustomerVault(store.engine, MasterKey.from_secrets(keys), FileKeyStore(key_store_dir))
                new_key = MasterKey.from_env({"GRIDSIGHT_MASTER_KEY_FILE": str(args.new_key_file)})
                count = vault.rotate_master_key(new_key)
            except MasterKeyError as exc:
                raise CLIError(str(exc)) from None
            print(f"re-wrapped {count} customer data keys; now point GRIDSIGHT_MASTER_KEY_FILE at {args.new_key_file} "
                  "on every collector replica")
        elif args.command == "revoke-api-key":
            if not store.revoke_api_key(args.key_id):
                raise CLIError(f"no active key {args.key_id!r}")
            print(f"revoked {args.key_id}")
    except IdentityError as exc:
        raise CLIError(str(exc)) from None
    finally:
        store.engine.dispose()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))

    def body() -> int:
        from sqlalchemy.exc import OperationalError, ProgrammingError
        try:
            return _run(args)
        except OperationalError as exc:
            raise CLIError(f"database unreachable: {str(exc.orig).strip().splitlines()[0]}") from None
        except ProgrammingError as exc:
            raise CLIError(f"database error: {str(exc.orig).strip().splitlines()[0]}; "
                           "run 'gridsight collector migrate' with the same DATABASE_URL") from None

    return run_cli(body, "gridsight accounts")
