"""Quarantine digests, pure: the links' signing, expiry and tampering; the digest message and its template."""

from __future__ import annotations

import base64
import zlib
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy

import pytest

from mailmoat_console.digest import BUILT_IN_TEMPLATE, DigestItem, accepted, build_digest, head_of, subject_of
from mailmoat_console.notifylinks import Link, LinkExpired, LinkInvalid, LinkSigner
from mailmoat_policy import parse_policy

KEY = b"k" * 32
NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self, at: float = 1_800_000_000.0):
        self.at = at

    def __call__(self) -> float:
        return self.at


def test_a_link_verifies_to_what_was_signed() -> None:
    signer = LinkSigner([KEY], Clock())
    token = signer.sign("Q1", "Alice@Example.com", "release", days=7)
    assert signer.verify(token) == Link("Q1", "alice@example.com", "release", 1_800_000_000 + 7 * 86400)
    assert all(c.isalnum() or c in "-_." for c in token)


def test_a_link_expires_after_its_days() -> None:
    clock = Clock()
    signer = LinkSigner([KEY], clock)
    token = signer.sign("Q1", "a@example.com", "view", days=1)
    clock.at += 86400 - 1
    assert signer.verify(token).qid == "Q1"
    clock.at += 1
    with pytest.raises(LinkExpired):
        signer.verify(token)


def _payload(token: str) -> bytes:
    body = token.split(".")[0]
    return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))


def _with_payload(token: str, payload: bytes) -> str:
    body = base64.urlsafe_b64encode(payload).rstrip(b"=").decode()
    return body + "." + token.split(".", 1)[1]


def test_a_changed_link_does_not_verify() -> None:
    signer = LinkSigner([KEY], Clock())
    token = signer.sign("Q1", "a@example.com", "view", days=7)
    payload = _payload(token)
    for changed in (payload.replace(b'"view"', b'"release"'), payload.replace(b"a@example", b"b@example"),
                    payload.replace(b'"Q1"', b'"Q2"'), payload.replace(b'"e":1', b'"e":2')):
        assert changed != payload
        with pytest.raises(LinkInvalid):
            signer.verify(_with_payload(token, changed))
    for broken in (token[:-1], token + "A", token.replace(".", ""), "", "x" * 3000, token[: len(token) // 2]):
        with pytest.raises(LinkInvalid):
            signer.verify(broken)
    flipped = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    with pytest.raises(LinkInvalid):
        signer.verify(flipped)


def test_another_key_or_purpose_does_not_verify() -> None:
    token = LinkSigner([b"other" * 8], Clock()).sign("Q1", "a@example.com", "release", days=7)
    with pytest.raises(LinkInvalid):
        LinkSigner([KEY], Clock()).verify(token)
    from itsdangerous import URLSafeSerializer

    foreign = URLSafeSerializer(KEY, salt="something else").dumps({"q": "Q1", "r": "a@example.com", "a": "release",
                                                                   "e": 2_000_000_000})
    with pytest.raises(LinkInvalid):
        LinkSigner([KEY], Clock()).verify(str(foreign))


def test_a_rotated_key_still_verifies_old_links_and_signs_with_the_new() -> None:
    old = LinkSigner([KEY], Clock()).sign("Q1", "a@example.com", "view", days=7)
    both = LinkSigner([KEY, b"n" * 32], Clock())
    assert both.verify(old).qid == "Q1"
    with pytest.raises(LinkInvalid):
        LinkSigner([KEY], Clock()).verify(both.sign("Q1", "a@example.com", "view", days=7))


def test_an_unknown_action_is_neither_signed_nor_accepted() -> None:
    signer = LinkSigner([KEY], Clock())
    with pytest.raises(ValueError):
        signer.sign("Q1", "a@example.com", "delete", days=7)  # type: ignore[arg-type]
    from itsdangerous import URLSafeSerializer

    from mailmoat_console.notifylinks import SALT

    forged = URLSafeSerializer([KEY], salt=SALT).dumps({"q": "Q1", "r": "a@example.com", "a": "delete",
                                                         "e": 2_000_000_000})
    with pytest.raises(LinkInvalid):
        signer.verify(str(forged))


POLICY = """
organization: {hostname: gw.example.test, name: Example Ltd}
accepted_domains: [{domain: example.com, route: r}]
routes: {r: {hosts: ["127.0.0.1:25"]}}
quarantine:
  notifications: {enabled: true, link_days: 3%s}
"""


def item(qid: str, subject: str = "hello", release_by: str = "user", reason: str = "spam") -> DigestItem:
    return DigestItem(qid, subject, "s@outside.test", "Sender <s@outside.test>", reason, NOW - timedelta(hours=1),
                      NOW + timedelta(days=30), release_by)


def test_the_digest_lists_each_message_with_its_links() -> None:
    policy = parse_policy(POLICY % "", "test")
    signer = LinkSigner([KEY], lambda: NOW.timestamp())
    digest = build_digest(policy, "alice@example.com", [item("Q1", "cheap pills"), item("Q2", release_by="admin",
                                                                                        reason="malware")],
                          0, signer, "https://console.example.com/", "D1", NOW)
    envelope = digest.envelope
    assert envelope.mail_from == "" and envelope.rcpt_to == ["alice@example.com"] and envelope.kind == "dsn"
    assert envelope.itinerary == ["routing", "egress"] and envelope.id == "D1"
    message = message_from_bytes(digest.data, policy=policy_default())
    assert message["From"] == "Quarantine <postmaster@example.com>"
    assert message["Subject"] == "Quarantine summary: 2 message(s) held for alice@example.com"
    assert message["Auto-Submitted"] == "auto-generated" and message["Message-ID"] == "<D1@gw.example.test>"
    text = message.get_content()
    assert "cheap pills" in text and "held in quarantine by Example Ltd" in text and "work for 3 days" in text
    links = [w for w in text.split() if w.startswith("https://console.example.com/notify/")]
    assert len(links) == 4
    actions = [signer.verify(link.rsplit("/", 1)[1]) for link in links]
    assert [(a.qid, a.action) for a in actions] == [("Q1", "view"), ("Q1", "release"), ("Q2", "view"),
                                                    ("Q2", "request")]
    assert {a.recipient for a in actions} == {"alice@example.com"}
    assert all(a.expires == int(NOW.timestamp()) + 3 * 86400 for a in actions)
    assert "Only an administrator may release it" in text
    assert [e.message_id for e in digest.events] == ["D1", "Q1", "Q2"]


def test_hostile_subjects_stay_on_one_line() -> None:
    policy = parse_policy(POLICY % "", "test")
    digest = build_digest(policy, "alice@example.com", [item("Q1", "a\r\nBcc: x@evil.test\x00")], 0,
                          LinkSigner([KEY]), "http://c/", "D1", NOW)
    head = digest.data.split(b"\r\n\r\n")[0]
    assert b"Bcc" not in head and b"\x00" not in digest.data
    assert "1. a Bcc: x@evil.test" in message_from_bytes(digest.data, policy=policy_default()).get_content()


def test_the_policys_template_is_sandboxed_and_falls_back_when_it_fails() -> None:
    own = parse_policy(POLICY % ', template: "{{ count }} for {{ recipient }}: {% for m in messages %}{{ m.subject }} '
                       '{% endfor %}", subject: "Held: {count}"', "test")
    digest = build_digest(own, "alice@example.com", [item("Q1", "one")], 0, LinkSigner([KEY]), "http://c/", "D1", NOW)
    message = message_from_bytes(digest.data, policy=policy_default())
    assert message["Subject"] == "Held: 1" and message.get_content().startswith("1 for alice@example.com: one")
    hostile = parse_policy(POLICY % ', template: "{{ recipient.__class__.__mro__ }}"', "test")
    digest = build_digest(hostile, "alice@example.com", [item("Q1", "one")], 0, LinkSigner([KEY]), "http://c/", "D1",
                          NOW)
    text = message_from_bytes(digest.data, policy=policy_default()).get_content()
    assert "object" not in text and "held in quarantine" in text  # the built-in template instead


def test_template_and_template_file_exclude_each_other() -> None:
    from mailmoat_policy import PolicyError

    with pytest.raises(PolicyError):
        parse_policy(POLICY % ', template: "x", template_file: /tmp/x', "test")
    with pytest.raises(PolicyError):
        parse_policy(POLICY % ", every_hours: 169", "test")


def test_subject_and_head_of_a_held_message() -> None:
    data = b"From: a@b\r\nSubject: =?utf-8?q?caf=C3=A9?= menu\r\n\r\nbody\r\n" + b"x" * 200_000
    packed = zlib.compress(data)
    assert subject_of(head_of(packed[:400], "zlib")) == "café menu"
    assert subject_of(b"no header at all") == "" and head_of(b"garbage", "zlib") == b""
    assert head_of(packed, "zstd") == b""


def test_only_accepted_domains_get_digests() -> None:
    policy = parse_policy(POLICY % "", "test")
    assert accepted(policy, "alice@example.com") and accepted(policy, "alice@EXAMPLE.com")
    assert not accepted(policy, "alice@sub.example.com") and not accepted(policy, "alice@outside.test")
    assert not accepted(policy, "no-domain")


def test_the_built_in_template_names_every_variable_the_docs_list() -> None:
    for name in ("count", "recipient", "organization", "link_days", "console_url", "view_url", "action_url"):
        assert name in BUILT_IN_TEMPLATE


def policy_default():
    return policy.default
