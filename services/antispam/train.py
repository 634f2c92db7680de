"""``mailmoat train spam|ham <files or mbox>``: teach the classifier from saved mail.

Each path is a message file (``.eml``), an mbox (several messages separated by ``From `` lines), or
a directory of message files (a Maildir's ``cur``/``new`` included). A message learned before as the
same class is not counted twice; learned as the other class, it is moved.
"""

from __future__ import annotations

import argparse
import asyncio
import mailbox
from collections.abc import Iterator
from pathlib import Path

from mailmoat_antispam.bayes import BayesStore, tokens
from mailmoat_antispam.content import parse


def read_messages(path: Path) -> Iterator[bytes]:
    """Messages in a file, an mbox or a directory (recursively), as bytes with CRLF line ends."""
    if path.is_dir():
        for child in sorted(path.rglob("*")):
            if child.is_file() and not child.name.startswith("."):
                yield from read_messages(child)
        return
    data = path.read_bytes()
    if data.startswith(b"From ") and b"\nFrom " in data:
        for message in mailbox.mbox(str(path), create=False):
            yield to_crlf(message.as_bytes())
        return
    if data.startswith(b"From "):
        data = data.split(b"\n", 1)[1] if b"\n" in data else b""
    yield to_crlf(data)


def to_crlf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


async def learn_paths(redis, prefix: str, label: str, paths: list[Path]) -> tuple[int, int]:
    """Learn every message under ``paths``: (learned, already known)."""
    store = BayesStore(redis, prefix)
    learned = known = 0
    for path in paths:
        for data in read_messages(path):
            if await store.learn(data, tokens(parse(data)), label):
                learned += 1
            else:
                known += 1
    return learned, known


def add_parser(sub) -> None:
    train = sub.add_parser("train", help="teach the antispam classifier: mailmoat train spam|ham FILE...")
    train.add_argument("label", choices=["spam", "ham"])
    train.add_argument("paths", nargs="+", type=Path, help="message files, mbox files or directories")


def run(args: argparse.Namespace) -> int:
    import redis.asyncio as aioredis

    from mailmoat_platform.settings import Settings
    from mailmoat_policy import PolicyError, load_policy

    settings = Settings.from_env()
    try:
        prefix = load_policy(settings.policy_path).antispam.bayes.key_prefix
    except PolicyError:
        prefix = "mailmoat:bayes"
    missing = [str(p) for p in args.paths if not p.exists()]
    if missing:
        print(f"mailmoat train: no such file: {', '.join(missing)}")
        return 2

    async def go() -> tuple[int, int, tuple[int, int]]:
        client = aioredis.from_url(settings.redis_url, socket_connect_timeout=5)
        try:
            learned, known = await learn_paths(client, prefix, args.label, list(args.paths))
            return learned, known, await BayesStore(client, prefix).counts()
        finally:
            await client.aclose()

    learned, known, (nspam, nham) = asyncio.run(go())
    print(f"learned {learned} as {args.label} ({known} already known); the classifier now knows "
          f"{nspam} spam and {nham} ham")
    return 0
