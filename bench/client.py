"""A latency-probe SMTP client (aiosmtplib): N messages over S concurrent sessions, each stamped.

Every message carries ``X-Bench-Id`` and ``X-Bench-Sent: <ns>``; the client writes
``<id> <sent ns> <accepted ns>`` per accepted message to --out (accepted = the server's reply to
the end of DATA). With --rate the messages are offered at that rate (open loop), otherwise as fast
as the sessions allow (closed loop). Sessions stay connected and send message after message.

    python bench/client.py --port 2525 --count 1000 --sessions 20 --rcpt user@latency.bench.test --out sent.txt
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import email.utils
import json
import random
import sys
import time
import uuid

import aiosmtplib

LINE = b"The quick brown fox jumps over the lazy dog, and the bench counts every byte of it.\r\n"


def build_message(ident: str, sender: str, rcpt: str, size: int, sent_ns: int) -> bytes:
    """A CRLF message of about ``size`` bytes with the bench headers."""
    head = (
        f"From: <{sender}>\r\nTo: <{rcpt}>\r\nSubject: bench {ident}\r\n"
        f"Message-ID: <{ident}@bench.test>\r\nX-Bench-Id: {ident}\r\nX-Bench-Sent: {sent_ns}\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
    ).encode()
    lines = max(1, (size - len(head)) // len(LINE))
    return head + LINE * lines


KINDS = ("text", "html", "attachment", "dkim")
WORDS = ("meeting agenda quarterly report invoice shipment schedule update review budget project team "
         "customer partner delivery order account summary notes draft proposal contract").split()


def _words(rng: random.Random, count: int) -> str:
    out, line = [], []
    for _ in range(count):
        line.append(rng.choice(WORDS))
        if len(line) == 12:
            out.append(" ".join(line))
            line = []
    out.append(" ".join(line))
    return "\r\n".join(out)


def _head(ident: str, sender: str, rcpt: str, sent_ns: int, subject: str, content_type: str) -> str:
    return (f"From: Bench Sender <{sender}>\r\nTo: <{rcpt}>\r\nSubject: {subject}\r\n"
            f"Date: {email.utils.formatdate(localtime=False)}\r\n"
            f"Message-ID: <{ident}@sender.bench.test>\r\nX-Bench-Id: {ident}\r\nX-Bench-Sent: {sent_ns}\r\n"
            f"MIME-Version: 1.0\r\nContent-Type: {content_type}\r\n")


class Mix:
    """The --mix messages: text (about 3 KB), an HTML newsletter with 25 URLs (multipart/alternative,
    about 20 KB), a text with a 100 KB PDF attachment (base64), a DKIM-signed text (rsa-sha256, 2048 bits)."""

    def __init__(self, seed: int = 1):
        import dkim  # noqa: F401  (dkimpy: a dependency of mailmoat)
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.key = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                     serialization.NoEncryption())
        rng = random.Random(seed)
        self.text = _words(rng, 450)
        links = "".join(f'<p><a href="https://news{i % 5}.example.org/article/{rng.randrange(10**6)}?utm_source=bench">'
                        f"{_words(rng, 8)}</a><br>{_words(rng, 40)}</p>\r\n" for i in range(25))
        self.html = f"<html><body><h1>Weekly news</h1>\r\n{links}</body></html>"
        pdf = b"%PDF-1.4\n" + rng.randbytes(100 * 1024)
        self.pdf = base64.encodebytes(pdf).replace(b"\n", b"\r\n").decode()

    def build(self, index: int, ident: str, sender: str, rcpt: str, sent_ns: int) -> bytes:
        kind = KINDS[index % len(KINDS)]
        if kind == "text":
            return (_head(ident, sender, rcpt, sent_ns, "Notes from the meeting", "text/plain; charset=us-ascii")
                    + "\r\n" + self.text + "\r\n").encode()
        if kind == "html":
            boundary = f"=_alt_{ident}"
            return (_head(ident, sender, rcpt, sent_ns, "Weekly news", f'multipart/alternative; boundary="{boundary}"')
                    + "List-Unsubscribe: <https://news0.example.org/unsubscribe>\r\n\r\n"
                    + f"--{boundary}\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n{self.text[:2000]}\r\n"
                    + f"--{boundary}\r\nContent-Type: text/html; charset=us-ascii\r\n\r\n{self.html}\r\n"
                    + f"--{boundary}--\r\n").encode()
        if kind == "attachment":
            boundary = f"=_mixed_{ident}"
            return (_head(ident, sender, rcpt, sent_ns, "The report", f'multipart/mixed; boundary="{boundary}"')
                    + f"\r\n--{boundary}\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n{self.text[:1500]}\r\n"
                    + f"--{boundary}\r\nContent-Type: application/pdf; name=report.pdf\r\n"
                    + "Content-Disposition: attachment; filename=report.pdf\r\n"
                    + "Content-Transfer-Encoding: base64\r\n\r\n"
                    + self.pdf + f"--{boundary}--\r\n").encode()
        import dkim

        message = (_head(ident, sender, rcpt, sent_ns, "Signed notes", "text/plain; charset=us-ascii")
                   + "\r\n" + self.text + "\r\n").encode()
        domain = sender.rsplit("@", 1)[-1].encode()
        return dkim.sign(message, b"bench", domain, self.key,
                         include_headers=[b"from", b"to", b"subject", b"date", b"message-id"]) + message


class Run:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.prefix = uuid.uuid4().hex[:8]
        self.next_index = 0
        self.records: list[tuple[str, int, int]] = []
        self.failures: dict[str, int] = {}
        self.start = 0.0
        self.mix = Mix() if args.mix else None

    def take(self) -> int | None:
        if self.next_index >= self.args.count:
            return None
        index = self.next_index
        self.next_index += 1
        return index

    async def session(self) -> None:
        args = self.args
        client: aiosmtplib.SMTP | None = None
        attempts = 0
        try:
            while (index := self.take()) is not None:
                if args.rate:
                    due = self.start + index / args.rate
                    delay = due - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                ident = f"{self.prefix}-{index}"
                for _attempt in range(3):
                    attempts += 1
                    try:
                        if client is None or not client.is_connected:
                            client = aiosmtplib.SMTP(hostname=args.host, port=args.port, timeout=args.timeout,
                                                     start_tls=False, use_tls=False)
                            await client.connect()
                        sent = time.time_ns()
                        data = (self.mix.build(index, ident, args.sender, args.rcpt, sent) if self.mix
                                else build_message(ident, args.sender, args.rcpt, args.size, sent))
                        await client.sendmail(args.sender, [args.rcpt], data)
                        self.records.append((ident, sent, time.time_ns()))
                        break
                    except (TimeoutError, aiosmtplib.SMTPException, OSError) as exc:
                        key = type(exc).__name__ + ": " + str(exc)[:80]
                        self.failures[key] = self.failures.get(key, 0) + 1
                        if client is not None:
                            client.close()
                        client = None
                        await asyncio.sleep(0.2)
        finally:
            if client is not None and client.is_connected:
                try:
                    await asyncio.wait_for(client.quit(), 5)
                except Exception:
                    client.close()

    async def run(self) -> dict[str, object]:
        self.start = time.monotonic()
        await asyncio.gather(*(self.session() for _ in range(self.args.sessions)))
        wall = time.monotonic() - self.start
        return {"accepted": len(self.records), "wall_s": wall, "failures": self.failures}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--size", type=int, default=10240)
    parser.add_argument("--rate", type=float, default=0.0, help="messages/s offered (0: as fast as possible)")
    parser.add_argument("--sender", default="bench@sender.bench.test")
    parser.add_argument("--rcpt", required=True)
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--out", required=True)
    parser.add_argument("--mix", action="store_true", help="the realistic mix of KINDS instead of --size text")
    args = parser.parse_args()
    run = Run(args)
    try:
        import uvloop

        summary = uvloop.run(run.run())
    except ImportError:
        summary = asyncio.run(run.run())
    with open(args.out, "w") as fh:
        fh.writelines(f"{i} {s} {a}\n" for i, s, a in run.records)
    print(json.dumps(summary), flush=True)
    return 0 if summary["accepted"] == args.count else 1


if __name__ == "__main__":
    sys.exit(main())
