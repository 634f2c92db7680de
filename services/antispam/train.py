"""``mailmoat train spam|ham <files or mbox>``: teach the classifier from saved mail;
``mailmoat train calibrate --spam PATH... --ham PATH...``: tune it on labelled mail.

Each path is a message file (``.eml``), an mbox (several messages separated by ``From `` lines), or
a directory of message files (a Maildir's ``cur``/``new`` included). A message learned before as the
same class is not counted twice; learned as the other class, it is moved. Calibrating cross-validates
on the mail given (``calibrate.py``): when that says so, it counts the messages the classifier misjudges
a second time (recorded apart, in ``<prefix>:reinforced``, so a later run replaces them), and it stores
the spam cutoff beside the counts. It does not learn the mail given: train it first.
"""

from __future__ import annotations

import argparse
import asyncio
import mailbox
from collections.abc import Iterator
from pathlib import Path

from mailmoat_antispam.bayes import BayesStore, tokens
from mailmoat_antispam.calibrate import (
    FOLDS,
    HAM_RATE,
    Calibration,
    CalibrationStore,
    Labelled,
    body_key,
    calibrate,
    misjudged,
)
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


def labelled(spam: list[Path], ham: list[Path]) -> list[tuple[bytes, Labelled]]:
    """The messages under ``spam`` and ``ham`` with their tokens and body digests (each message once)."""
    out: dict[bytes, Labelled] = {}
    for is_spam, paths in ((True, spam), (False, ham)):
        for path in paths:
            for data in read_messages(path):
                out[data] = Labelled(tokens(parse(data)), is_spam, body_key(data))
    return list(out.items())


async def calibrate_paths(redis, prefix: str, spam: list[Path], ham: list[Path], ham_rate: float = HAM_RATE,
                          folds: int = FOLDS, reinforce: bool | None = None) -> tuple[Calibration, int]:
    """Calibrate on the mail under ``spam`` and ``ham``: when the reinforced classifier does better out of
    fold (or ``reinforce`` says so), count the messages it misjudges a second time (and take back an
    earlier second count of the others), then store the cutoff. (calibration, messages counted twice now);
    ``ValueError``: too little mail."""
    items = labelled(spam, ham)
    messages = [m for _, m in items]
    calibration = calibrate(messages, ham_rate, folds, reinforce)
    again = set(misjudged(messages, folds)) if calibration.reinforced else set()
    store = BayesStore(redis, prefix)
    for i, (data, message) in enumerate(items):
        label = ("spam" if message.spam else "ham") if i in again else None
        await store.learn(data, list(message.tokens), label, record="reinforced")
    await CalibrationStore(redis, prefix).save(calibration)
    return calibration, len(again)


def add_parser(sub) -> None:
    train = sub.add_parser("train", help="teach the antispam classifier: mailmoat train spam|ham FILE..., "
                                         "mailmoat train calibrate --spam PATH --ham PATH")
    train.add_argument("label", choices=["spam", "ham", "calibrate"])
    train.add_argument("paths", nargs="*", type=Path, help="message files, mbox files or directories")
    train.add_argument("--spam", action="append", type=Path, default=[], help="calibrate: spam (repeatable)")
    train.add_argument("--ham", action="append", type=Path, default=[], help="calibrate: ham (repeatable)")
    train.add_argument("--ham-rate", type=float, default=HAM_RATE,
                       help="calibrate: percent of the ham the classifier may flag (default 0.3)")
    train.add_argument("--clear", action="store_true", help="calibrate: remove the stored cutoff")


def run(args: argparse.Namespace) -> int:
    from mailmoat_platform import redisclient
    from mailmoat_platform.settings import Settings
    from mailmoat_policy import PolicyError, load_policy

    settings = Settings.from_env()
    try:
        prefix = load_policy(settings.policy_path).antispam.bayes.key_prefix
    except PolicyError:
        prefix = "mailmoat:bayes"
    if args.label == "calibrate":
        return _run_calibrate(args, settings.redis_url, prefix)
    if not args.paths:
        print(f"mailmoat train {args.label}: which files? (message files, mbox files or directories)")
        return 2
    missing = [str(p) for p in args.paths if not p.exists()]
    if missing:
        print(f"mailmoat train: no such file: {', '.join(missing)}")
        return 2

    async def go() -> tuple[int, int, tuple[int, int]]:
        client = redisclient.from_url(settings.redis_url, socket_connect_timeout=5)
        try:
            learned, known = await learn_paths(client, prefix, args.label, list(args.paths))
            return learned, known, await BayesStore(client, prefix).counts()
        finally:
            await client.aclose()

    learned, known, (nspam, nham) = asyncio.run(go())
    print(f"learned {learned} as {args.label} ({known} already known); the classifier now knows "
          f"{nspam} spam and {nham} ham")
    return 0


def _run_calibrate(args: argparse.Namespace, redis_url: str, prefix: str) -> int:
    from mailmoat_platform import redisclient

    missing = [str(p) for p in args.spam + args.ham if not p.exists()]
    if missing:
        print(f"mailmoat train calibrate: no such file: {', '.join(missing)}")
        return 2
    if not args.clear and not (args.spam and args.ham):
        print("mailmoat train calibrate: give --spam PATH and --ham PATH (or --clear)")
        return 2

    async def go() -> tuple[Calibration, int] | bool:
        client = redisclient.from_url(redis_url, socket_connect_timeout=5)
        try:
            if args.clear:
                return await CalibrationStore(client, prefix).clear()
            return await calibrate_paths(client, prefix, args.spam, args.ham, args.ham_rate)
        finally:
            await client.aclose()

    try:
        result = asyncio.run(go())
    except ValueError as exc:
        print(f"mailmoat train calibrate: {exc}")
        return 2
    if isinstance(result, bool):
        print("calibration removed: the classifier's cutoff is the policy's" if result else "no calibration stored")
        return 0
    calibration, again = result
    print(f"spam cutoff {calibration.cutoff:.4f} stored: out of fold on {calibration.nspam} spam and "
          f"{calibration.nham} ham ({calibration.folds} folds by body) it catches {calibration.spam_caught:.2f} % "
          f"of the spam and flags {calibration.ham_flagged:.2f} % of the ham (asked: at most "
          f"{calibration.ham_rate:g} %); " + (f"{again} misjudged messages counted a second time"
                                              if calibration.reinforced else "no message counted twice"))
    return 0
