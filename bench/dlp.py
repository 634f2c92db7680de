"""DLP benchmark: detection accuracy on a generated set of true numbers and look-alikes, and the stage's
detection rate on a message mix.

1. accuracy: sentences each holding one true number (payment cards of every issuer, IBANs of every
   country of the length table, US SSNs; with and without separators and supporting keywords) or one
   look-alike (Luhn failing, wrong issuer prefix or length, SSNs in never-issued ranges or well known,
   IBANs with bad check digits or length, order numbers, phone numbers, dates, tracking numbers),
   generated from a fixed seed. Per type, at each minimum confidence: precision = true found / all
   found, recall = true found / true present (a found value must be the sentence's number).
2. rate: ``mailmoat_dlp.scan.scan`` (MIME walk, text extraction, detection, tally; what the stage runs
   in its worker thread per message) over a mix of messages: plain text, HTML with numbers, a PDF, a
   DOCX, an XLSX of 200 rows, a zip of text files. Reported: msgs/s and MB/s per kind and for the mix,
   one message at a time in one process (the stage's thread holds the GIL while it works).

    .venv/bin/python bench/dlp.py                  # both
    .venv/bin/python bench/dlp.py --only accuracy --samples 5000
"""

from __future__ import annotations

import argparse
import random
import string
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from mailmoat_dlp import cards, iban  # noqa: E402
from mailmoat_dlp.checksums import luhn_digit, mod97  # noqa: E402
from mailmoat_dlp.confidence import LEVELS, at_least  # noqa: E402
from mailmoat_dlp.detect import find_all  # noqa: E402
from mailmoat_dlp.policy import Dlp  # noqa: E402
from mailmoat_dlp.scan import scan  # noqa: E402
from mailmoat_dlp.ssn import WELL_KNOWN  # noqa: E402
from mailmoat_policy import ArchiveLimits  # noqa: E402
from tests.support.attachments import message, zip_of  # noqa: E402
from tests.unit.test_dlp_extract import docx_with_text, pdf_with_text, xlsx_with_rows  # noqa: E402

TYPES = ("credit_card", "iban", "us_ssn")
FILLER = ("Thanks for the call earlier.", "See the attached summary.", "Let me know if anything is missing.",
          "Regards,", "As discussed,", "Following up on this:")
KEYWORDS = {"credit_card": ("credit card", "card number", "Visa", "cvv 123, exp 04/28"),
            "iban": ("IBAN", "bank account", "wire transfer to", "SWIFT/BIC"),
            "us_ssn": ("SSN", "social security number", "SSN#")}


@dataclass(frozen=True)
class Sample:
    text: str
    type: str | None
    """The type of the number it holds; None for a look-alike."""
    value: str | None
    kind: str
    """What it is, for the per-kind table of misses and false alarms."""


# --- generators ----------------------------------------------------------------------------------


def digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(string.digits) for _ in range(n))


def card(rng: random.Random) -> str:
    _name, low, high, lengths = rng.choice(cards.ISSUERS)
    prefix = str(rng.randint(low, high))
    body = prefix + digits(rng, rng.choice(sorted(lengths)) - len(prefix) - 1)
    return body + luhn_digit(body)


def grouped(number: str, separator: str) -> str:
    if not separator:
        return number
    groups = [number[i:i + 4] for i in range(0, len(number), 4)]
    if len(groups[-1]) < 3:
        groups[-2:] = [groups[-2] + groups[-1]]
    return separator.join(groups)


def iban_value(rng: random.Random) -> str:
    country = rng.choice(sorted(iban.LENGTHS))
    bban = "".join(rng.choice(string.digits + string.ascii_uppercase if rng.random() < 0.3 else string.digits)
                   for _ in range(iban.LENGTHS[country] - 4))
    return f"{country}{98 - mod97(country + '00' + bban):02d}{bban}"


def printed(value: str) -> str:
    return " ".join(value[i:i + 4] for i in range(0, len(value), 4))


def ssn_value(rng: random.Random) -> str:
    while True:
        area = rng.randint(1, 899)
        value = f"{area:03d}{rng.randint(1, 99):02d}{rng.randint(1, 9999):04d}"
        if area != 666 and value not in WELL_KNOWN and len(set(value)) > 1:
            return value


def sentence(rng: random.Random, number: str, keyword: str | None) -> str:
    lead = rng.choice(FILLER)
    if keyword:
        return f"{lead} {keyword}: {number}. {rng.choice(FILLER)}"
    return f"{lead} The reference is {number}. {rng.choice(FILLER)}"


def true_samples(rng: random.Random, n: int) -> list[Sample]:
    out = []
    for i in range(n):
        kind = TYPES[i % 3]
        keyword = rng.choice(KEYWORDS[kind]) if rng.random() < 0.5 else None
        if kind == "credit_card":
            value = card(rng)
            text = grouped(value, rng.choice(["", " ", "-"]))
            label = "card" + (" + keyword" if keyword else "")
        elif kind == "iban":
            value = iban_value(rng)
            text = printed(value) if rng.random() < 0.5 else value
            label = "IBAN" + (" + keyword" if keyword else "")
        else:
            value = ssn_value(rng)
            form = rng.choice(["-", " ", ""])
            text = f"{value[:3]}{form}{value[3:5]}{form}{value[5:]}"
            label = ("SSN formatted" if form else "SSN 9 digits") + (" + keyword" if keyword else "")
        out.append(Sample(sentence(rng, text, keyword), kind, value, label))
    return out


def _luhn_failing(rng: random.Random) -> tuple[str, str]:
    value = card(rng)
    position = rng.randrange(len(value))
    wrong = rng.choice([d for d in string.digits if d != value[position]])
    return grouped(value[:position] + wrong + value[position + 1:], " "), "card, one digit changed"


def _wrong_issuer(rng: random.Random) -> tuple[str, str]:
    while True:
        body = rng.choice("1789") + digits(rng, 14)
        number = body + luhn_digit(body)
        if cards.issuer(number) is None:
            return grouped(number, rng.choice(["", " "])), "Luhn-valid, no issuer"


def _wrong_length(rng: random.Random) -> tuple[str, str]:
    body = "4" + digits(rng, 13)  # a Visa prefix with 15 digits: no Visa length
    return body + luhn_digit(body), "Luhn-valid Visa prefix, 15 digits"


def _bad_ssn(rng: random.Random) -> tuple[str, str]:
    value = ssn_value(rng)
    bad = rng.choice([
        "000" + value[3:], "666" + value[3:], str(rng.randint(900, 999)) + value[3:],
        value[:3] + "00" + value[5:], value[:5] + "0000", rng.choice(sorted(WELL_KNOWN)),
    ])
    return f"SSN {bad[:3]}-{bad[3:5]}-{bad[5:]}", "SSN never issued or well known"


def _bad_iban(rng: random.Random) -> tuple[str, str]:
    value = iban_value(rng)
    if rng.random() < 0.5:
        position = rng.choice([i for i, c in enumerate(value) if c.isdigit() and i >= 2])
        wrong = rng.choice([d for d in string.digits if d != value[position]])
        return "IBAN " + printed(value[:position] + wrong + value[position + 1:]), "IBAN, one digit changed"
    return "IBAN " + value[:-1], "IBAN one character short"


def _order(rng: random.Random) -> tuple[str, str]:
    return f"Order #{digits(rng, rng.choice([9, 12, 13, 14, 15, 16, 18, 19]))}", "order number"


def _phone(rng: random.Random) -> tuple[str, str]:
    return rng.choice([
        f"call {digits(rng, 3)}-{digits(rng, 3)}-{digits(rng, 4)}",
        f"call +1 ({digits(rng, 3)}) {digits(rng, 3)}-{digits(rng, 4)}",
        f"call +44 20 {digits(rng, 4)} {digits(rng, 4)}",
        f"call {digits(rng, 3)} {digits(rng, 3)} {digits(rng, 3)}",
    ]), "phone number"


def _date_amount(rng: random.Random) -> tuple[str, str]:
    day = f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    amount = f"{rng.randint(1, 99999)}.{digits(rng, 2)}"
    return f"on {day} we paid {amount} EUR, invoice {digits(rng, 4)}-{digits(rng, 4)}", "dates, amounts, invoice"


def _tracking(rng: random.Random) -> tuple[str, str]:
    return f"tracking 1Z{''.join(rng.choice(string.ascii_uppercase + string.digits) for _ in range(16))}", "tracking"


LOOK_ALIKES: tuple[Callable[[random.Random], tuple[str, str]], ...] = (
    _luhn_failing, _wrong_issuer, _wrong_length, _bad_ssn, _bad_iban, _order, _phone, _date_amount, _tracking)


def look_alikes(rng: random.Random, n: int) -> list[Sample]:
    out = []
    for i in range(n):
        text, kind = LOOK_ALIKES[i % len(LOOK_ALIKES)](rng)
        out.append(Sample(f"{rng.choice(FILLER)} {text}. {rng.choice(FILLER)}", None, None, kind))
    return out


# --- accuracy ------------------------------------------------------------------------------------


def accuracy(samples: list[Sample]) -> None:
    policy = Dlp()
    found = [(s, find_all(s.text, policy)) for s in samples]
    print(f"accuracy: {sum(s.type is not None for s in samples)} true numbers, "
          f"{sum(s.type is None for s in samples)} look-alikes")
    print("| type | min confidence | true found | missed | false alarms | precision | recall |")
    print("|---|---|---|---|---|---|---|")
    for name in TYPES:
        for floor in LEVELS:
            tp = fn = fp = 0
            for sample, matches in found:
                hits = [m for m in matches if m.type == name and at_least(m.confidence, floor)]
                if sample.type == name:
                    right = any(m.value == sample.value for m in hits)
                    tp += right
                    fn += not right
                    fp += sum(m.value != sample.value for m in hits)
                else:
                    fp += len(hits)
            precision = tp / (tp + fp) if tp + fp else 1.0
            recall = tp / (tp + fn) if tp + fn else 1.0
            print(f"| {name} | {floor} | {tp} | {fn} | {fp} | {precision:.4f} | {recall:.4f} |")
    print()
    print("| sample kind | samples | found at low | found at medium |")
    print("|---|---|---|---|")
    kinds: dict[str, list[int]] = {}
    for sample, matches in found:
        row = kinds.setdefault(sample.kind, [0, 0, 0])
        row[0] += 1
        row[1] += bool(matches)
        row[2] += any(at_least(m.confidence, "medium") for m in matches)
    for kind, (count, low, medium) in kinds.items():
        print(f"| {kind} | {count} | {low} | {medium} |")
    print()


# --- rate ----------------------------------------------------------------------------------------


def message_mix(rng: random.Random) -> dict[str, bytes]:
    words = "the quarterly figures are attached and the team will review them on monday ".split()

    def prose(n: int) -> str:
        return " ".join(rng.choice(words) for _ in range(n))

    plain = (b"From: a@example.org\r\nTo: b@example.com\r\nSubject: notes\r\n\r\n"
             + "\r\n".join(prose(12) for _ in range(60)).encode() + b"\r\n")
    html = ("<html><body>" + "".join(f"<p>{prose(20)}</p>" for _ in range(80))
            + f"<p>Card number {grouped(card(rng), ' ')}</p><p>IBAN {printed(iban_value(rng))}</p></body></html>")
    html_message = (b"From: a@example.org\r\nTo: b@example.com\r\nSubject: payment\r\nMIME-Version: 1.0\r\n"
                    b"Content-Type: text/html; charset=utf-8\r\n\r\n" + html.encode() + b"\r\n")
    pdf = message([("statement.pdf", "application/pdf",
                    pdf_with_text([prose(10) for _ in range(40)] + [f"Visa {grouped(card(rng), ' ')}"]), "base64")])
    docx = message([("letter.docx", "application/octet-stream",
                     docx_with_text([[prose(15)] for _ in range(100)] + [[f"SSN {ssn_value(rng)[:3]}-45-6780"]]),
                     "base64")])
    xlsx = message([("staff.xlsx", "application/octet-stream",
                     xlsx_with_rows([["name", "account", "amount"]]
                                    + [[f"person {i}", iban_value(rng), rng.randint(1, 9999)] for i in range(200)]),
                     "base64")])
    archive = message([("texts.zip", "application/zip",
                        zip_of([(f"note{i}.txt", (prose(200) + f" card {card(rng)}").encode()) for i in range(5)]),
                        "base64")])
    return {"plain 5 KB": plain, "html with numbers": html_message, "pdf": pdf, "docx": docx, "xlsx 200 rows": xlsx,
            "zip of 5 texts": archive}


def rate(rounds: int, rng: random.Random) -> None:
    mix = message_mix(rng)
    policy, limits = Dlp(), ArchiveLimits()
    print("| message | size | msgs/s | MB/s | found |")
    print("|---|---|---|---|---|")
    total_time = total_bytes = total_messages = 0.0
    for name, data in mix.items():
        verdict = scan(data, policy, limits)
        started = time.perf_counter()
        for _ in range(rounds):
            scan(data, policy, limits)
        elapsed = time.perf_counter() - started
        total_time += elapsed
        total_bytes += len(data) * rounds
        total_messages += rounds
        print(f"| {name} | {len(data) / 1024:.1f} KiB | {rounds / elapsed:.1f} "
              f"| {len(data) * rounds / elapsed / 1e6:.2f} | {verdict.summary()} |")
    print(f"| **mix (equal parts)** | {total_bytes / total_messages / 1024:.1f} KiB avg | "
          f"**{total_messages / total_time:.1f}** | {total_bytes / total_time / 1e6:.2f} | |")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=["accuracy", "rate"])
    parser.add_argument("--samples", type=int, default=30_000, help="true numbers and as many look-alikes")
    parser.add_argument("--rounds", type=int, default=200, help="scans of each message of the mix")
    parser.add_argument("--seed", type=int, default=15)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    if args.only in (None, "accuracy"):
        accuracy(true_samples(rng, args.samples) + look_alikes(rng, args.samples))
    if args.only in (None, "rate"):
        rate(args.rounds, rng)


if __name__ == "__main__":
    main()
