"""Account rescue from a shell on a machine that reaches the records database (the console's first admin
password is printed once; when it is lost, or every admin is locked out):

    python -m mailmoat_console.admin reset-password NAME   a new generated password, printed once
    python -m mailmoat_console.admin create-admin NAME     a new admin account, its password printed once
    python -m mailmoat_console.admin digest                one round of quarantine digests now

``MAILMOAT_DATABASE_URL`` names the database. Audited as actor ``cli``; a reset ends the account's sessions
and enables it again.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from mailmoat_records import db

from .accounts import AccountError, Accounts
from .audit import AuditLog
from .passwords import generate_password
from .rights import Role


async def reset_password(url: str, name: str) -> str | None:
    """A new password for ``name`` (None: no such account)."""
    async with db.open_pool(url, max_size=1, name="console-admin") as pool:
        accounts = Accounts(pool)
        found = next((a for a in await accounts.list() if a.name.lower() == name.strip().lower()), None)
        if found is None:
            return None
        password = generate_password()
        await accounts.set_password(found.id, password)
        if found.disabled:
            await accounts.update(found.id, disabled=False)
        await AuditLog(pool).write("account.reset-password", actor="cli", client_ip=None, target=found.name)
        return password


async def create_admin(url: str, name: str) -> str:
    async with db.open_pool(url, max_size=1, name="console-admin") as pool:
        password = generate_password()
        account = await Accounts(pool).create(name, Role.admin, password)
        await AuditLog(pool).write("account.create", actor="cli", client_ip=None, target=account.name,
                                   detail={"role": "admin", "password": "generated"})
        return password


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mailmoat_console.admin", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("reset-password", help="a new generated password for an account").add_argument("name")
    sub.add_parser("create-admin", help="a new admin account with a generated password").add_argument("name")
    sub.add_parser("digest", help="send the quarantine digests that are due (one round)")
    args = parser.parse_args(argv)
    if args.command == "digest":
        return digest_round()
    url = db.database_url()
    try:
        if args.command == "reset-password":
            password = asyncio.run(reset_password(url, args.name))
            if password is None:
                print(f"no account named {args.name!r}", file=sys.stderr)
                return 1
        else:
            password = asyncio.run(create_admin(url, args.name))
    except AccountError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    print(f"password of {args.name!r} (shown once): {password}")
    return 0


def digest_round() -> int:
    """One round of quarantine digests with the environment's settings (``MAILMOAT_POLICY``, ``..._DATABASE_URL``,
    ``..._AMQP_URL``, ``MAILMOAT_CONSOLE_URL`` for the links)."""
    from mailmoat_platform.settings import Settings

    from .config import ConsoleConfig
    from .digest import one_round

    done = asyncio.run(one_round(Settings.from_env(), ConsoleConfig.from_env().url))
    if done.skipped:
        print("another digest round is running; nothing sent")
    else:
        print(f"quarantine digests: {done.sent} sent, {done.failed} failed")
    return 1 if done.failed else 0


if __name__ == "__main__":
    sys.exit(main())
