"""`edge secret set|list|remove|init-key`: the sealed NetSuite and HQ credentials (edge.secrets).

``set NAME`` reads the value from a prompt that does not echo it, or from stdin when stdin is
not a terminal (``printf %s "$TOKEN" | edge secret set hq.token``; one trailing newline is
dropped, inner newlines kept, so a PEM key fits). The value is never an argument: it would
show in ``ps`` and the shell history. ``list`` shows names only and needs no key; ``remove``
needs no key either. ``init-key PATH`` writes a new random key (mode 0600), never over an
existing file. ``--key-file PATH`` names the key; without it edge.secrets.load_key looks at the
systemd credential and ``$EDGE_SECRETS_KEY_FILE``. ``--json`` on each.

Exit codes as in edge.cli: 0 done; 1 the sealed file or a secret is not as expected (another
key, tampered, not found); 2 bad usage or configuration (no key, a key file others can read,
an invalid name, an empty value).

Runs on its own too, as ``python -m edge.secrets_cli [--config PATH] ...``.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edge.api_client import EXIT_OK, EXIT_PROBLEM, EXIT_USAGE
from edge.secrets import (
    SecretLookupError,
    SecretsError,
    SecretsKeyError,
    generate_key_file,
    open_store,
)
from edge.settings import Settings, SettingsError, load_settings


def add_parser(sub: Any) -> None:
    secret = sub.add_parser(
        "secret", help="sealed credentials (NetSuite, HQ): set, list, remove, init-key"
    )
    secret.add_argument(
        "--key-file",
        metavar="PATH",
        help="the key (default: the systemd credential edge-secrets-key, then "
        "$EDGE_SECRETS_KEY_FILE)",
    )
    secret_sub = secret.add_subparsers(dest="secret_command", required=True)
    put = secret_sub.add_parser("set", help="seal a value (asked without echo, or read from stdin)")
    put.add_argument("name", help="e.g. netsuite.consumer_secret")
    put.add_argument("--json", action="store_true")
    listing = secret_sub.add_parser("list", help="the names sealed (never the values)")
    listing.add_argument("--json", action="store_true")
    remove = secret_sub.add_parser("remove", help="forget a sealed value")
    remove.add_argument("name")
    remove.add_argument("--json", action="store_true")
    init = secret_sub.add_parser(
        "init-key", help="write a new random key (0600), outside the state directory"
    )
    init.add_argument("path", help="e.g. /etc/credstore/edge-secrets-key")
    init.add_argument("--json", action="store_true")


def _read_value(name: str) -> str:
    if sys.stdin.isatty():
        return getpass.getpass(f"value of {name} (not shown): ")
    value = sys.stdin.read()
    if value.endswith("\r\n"):
        return value[:-2]
    return value.removesuffix("\n")


def run_secret_command(settings: Settings, args: argparse.Namespace) -> int:
    store = open_store(settings.state_dir, key_file=args.key_file)
    command = args.secret_command
    try:
        if command == "list":
            names = store.names()
            if args.json:
                print(json.dumps({"ok": True, "path": str(store.path), "names": names}))
            elif not names:
                print(f"no secrets sealed in {store.path}: add one with 'edge secret set NAME'")
            else:
                for name in names:
                    print(name)
            return EXIT_OK
        if command == "set":
            store.set(args.name, _read_value(args.name))
            result = {"ok": True, "name": args.name, "path": str(store.path)}
            text = f"{args.name} sealed in {store.path} ({store.key.source})"
        elif command == "remove":
            if not store.remove(args.name):
                raise SecretLookupError(
                    "SECRET_NOT_FOUND", f"secret {args.name!r} is not sealed in {store.path}"
                )
            result = {"ok": True, "name": args.name, "path": str(store.path)}
            text = f"{args.name} removed from {store.path}"
        else:
            key = generate_key_file(Path(args.path), state_dir=settings.state_dir)
            result = {"ok": True, "path": args.path, "key_id": key.key_id}
            text = f"new key {key.key_id} written to {args.path} (mode 0600); keep a copy offline"
    except SecretsError as exc:
        if args.json:
            print(json.dumps({"ok": False, "error": {"code": exc.code, "message": exc.message}}))
        else:
            print(f"edge: secrets: {exc}", file=sys.stderr)
        usage = isinstance(exc, SecretsKeyError) or exc.code in (
            "SECRET_NAME_INVALID",
            "SECRET_EMPTY",
            "SECRET_TOO_LARGE",
        )
        return EXIT_USAGE if usage else EXIT_PROBLEM
    print(json.dumps(result) if args.json else text)
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m edge.secrets_cli``: the same commands without the rest of ``edge``."""
    parser = argparse.ArgumentParser(prog="edge", description="store-edge sealed secrets")
    parser.add_argument("--config", metavar="PATH")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        settings = load_settings(args.config)
    except SettingsError as exc:
        print(f"edge: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return run_secret_command(settings, args)


if __name__ == "__main__":
    sys.exit(main())
