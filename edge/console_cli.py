"""`edge console user add|passwd|remove|list`: the web console's technician accounts.

They live in ``<state_dir>/console-accounts.json`` (mode 0600, scrypt hashes); the running hub
sees a change at the next login, without a restart. The password is asked twice on a terminal,
or read from the first line of stdin with ``--password-stdin`` (for provisioning scripts); it
is never an argument (it would show in ``ps`` and the shell history). Exit codes as in edge.cli.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from typing import Any

from edge.api_client import EXIT_OK, EXIT_PROBLEM, EXIT_USAGE
from edge.console.auth import Accounts, AuthError
from edge.settings import Settings


def add_parser(sub: Any) -> None:
    console = sub.add_parser("console", help="the web console's technician accounts")
    console_sub = console.add_subparsers(dest="console_command", required=True)
    user = console_sub.add_parser("user", help="technician accounts")
    user_sub = user.add_subparsers(dest="user_command", required=True)
    add = user_sub.add_parser("add", help="create an account")
    add.add_argument("name")
    add.add_argument("--role", choices=["technician", "admin"], default="technician")
    add.add_argument("--password-stdin", action="store_true")
    passwd = user_sub.add_parser("passwd", help="set an account's password")
    passwd.add_argument("name")
    passwd.add_argument("--password-stdin", action="store_true")
    remove = user_sub.add_parser("remove", help="delete an account")
    remove.add_argument("name")
    listing = user_sub.add_parser("list", help="the accounts and their roles")
    listing.add_argument("--json", action="store_true")


def _password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise AuthError("the two passwords differ")
    return first


def run_console_command(settings: Settings, args: argparse.Namespace) -> int:
    path = settings.console_accounts_path
    command = args.user_command
    try:
        accounts = Accounts.load(path)
        if command == "list":
            rows = [{"name": n, "role": accounts.role(n)} for n in accounts.names()]
            if args.json:
                print(json.dumps({"path": str(path), "accounts": rows}))
            elif not rows:
                print(f"no accounts in {path}: add one with 'edge console user add NAME'")
            else:
                for row in rows:
                    print(f"{row['name']}  {row['role']}")
            return EXIT_OK
        if command == "add":
            path.parent.mkdir(parents=True, exist_ok=True)
            accounts.add(args.name, _password(args), role=args.role)
            print(f"account {args.name} ({args.role}) added to {path}")
        elif command == "passwd":
            accounts.set_password(args.name, _password(args))
            print(f"password of {args.name} changed (its open sessions end at the hub's restart)")
        else:
            accounts.remove(args.name)
            print(f"account {args.name} removed")
    except ValueError as exc:  # a weak password or an invalid name
        print(f"edge: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except AuthError as exc:
        print(f"edge: {exc}", file=sys.stderr)
        return EXIT_PROBLEM
    return EXIT_OK
