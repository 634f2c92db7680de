"""Rule conditions on the author: ``from_address``/``from_domain`` see the From a mail client shows
(the one author parser), and ``impersonation`` reads the antispam verdict."""

from __future__ import annotations

import pytest

from mailmoat_platform.models import Envelope, Verdict
from mailmoat_policy import RuleConditions, parse_policy
from mailmoat_routing.rules import CONDITIONS
from mailmoat_routing.rules.message import Facts

POLICY = parse_policy("accepted_domains: [{domain: example.com}]\n")


def _facts(from_value: bytes, verdict: Verdict | None = None) -> Facts:
    env = Envelope(mail_from="bounce@esp.test", rcpt_to=["alice@example.com"])
    if verdict is not None:
        env.add_verdict(verdict)
    data = b"From: " + from_value + b"\r\nTo: alice@example.com\r\nSubject: s\r\n\r\nbody\r\n"
    return Facts(env, data, POLICY, list(env.rcpt_to), None)


def check(name: str, value: object, facts: Facts) -> bool:
    return CONDITIONS[name](facts, RuleConditions.model_validate({name: value}))


@pytest.mark.parametrize(("from_value", "expected"), [
    (b"CEO <ceo@bank.test>", True),
    (b'"x@evil.test" <CEO@Bank.Test>', True),
    (b'"ceo@bank.test" <x@evil.test>', False),  # a display name is not the author
    (b"x@evil.test)<ceo@bank.test>", True),  # does not parse: a client could show ceo@bank.test
    (b"<x@evil.test>, <ceo@bank.test>", True),
    (b"<x@evil.test>", False),
])
def test_from_address(from_value: bytes, expected: bool) -> None:
    assert check("from_address", ["ceo@bank.test"], _facts(from_value)) is expected
    assert check("from_domain", ["*.test"], _facts(from_value))
    assert check("from_domain", ["bank.test"], _facts(from_value)) is expected


def test_the_envelope_sender_is_not_the_author() -> None:
    assert not check("from_domain", ["esp.test"], _facts(b"<ceo@bank.test>"))
    assert check("sender_domain", ["esp.test"], _facts(b"<ceo@bank.test>"))


def test_impersonation() -> None:
    found = Verdict(stage="antispam", result="phish",
                    detail={"scl": 8, "impersonation": {"kind": "user", "claimed": "Jane", "sender": "j@x.test"}})
    assert check("impersonation", ["user"], _facts(b"<j@x.test>", found))
    assert not check("impersonation", ["domain", "address"], _facts(b"<j@x.test>", found))
    clean = Verdict(stage="antispam", result="clean", detail={"scl": 0})
    assert not check("impersonation", ["user"], _facts(b"<j@x.test>", clean))
    assert not check("impersonation", ["user"], _facts(b"<j@x.test>"))
    with pytest.raises(ValueError):
        RuleConditions.model_validate({"impersonation": ["someone"]})
    with pytest.raises(ValueError):
        RuleConditions.model_validate({"impersonation": []})
