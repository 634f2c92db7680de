"""SRS addresses (pure): the postsrsd/libsrs2 format, round trips, forged, damaged and expired ones."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from mailmoat_mail.srs import SrsError, forward, is_srs, read_secrets, reverse, timestamp

SECRET = b"tops3cr3t"
DOMAIN = "srs.example.com"
NOW = 1_796_472_000.0  # 2026-12-05
DAY = 86400


def test_srs0_has_postsrsds_format() -> None:
    address = forward("Alice.Smith@Partner.Example", DOMAIN, SECRET, NOW)
    local, _, domain = address.rpartition("@")
    tag, digest, stamp, host, user = local.split("=", 4)
    assert (tag, host, user, domain) == ("SRS0", "Partner.Example", "Alice.Smith", DOMAIN)
    day = int(NOW // DAY) % 1024
    assert stamp == "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"[day >> 5] + "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"[day & 31]
    assert stamp == timestamp(NOW)
    # libsrs2: HMAC-SHA1 over the lower-cased timestamp, host and user; the first 4 base64 characters
    mac = hmac.new(SECRET, (stamp + "partner.example" + "alice.smith").lower().encode(), hashlib.sha1)
    assert digest == base64.b64encode(mac.digest()).decode()[:4]


def test_round_trip_and_hash_without_case() -> None:
    address = forward("alice@partner.example", DOMAIN, SECRET, NOW)
    assert reverse(address, DOMAIN, [SECRET], 21, NOW + 3 * DAY).address == "alice@partner.example"
    assert reverse(address.lower(), DOMAIN, [SECRET], 21, NOW).address == "alice@partner.example"
    assert reverse(address.replace(DOMAIN, DOMAIN.upper()), DOMAIN, [SECRET], 21, NOW).kind == "SRS0"


def test_rotation_old_secret_still_verifies() -> None:
    address = forward("alice@partner.example", DOMAIN, b"old", NOW)
    assert reverse(address, DOMAIN, read_secrets("new\nold\n"), 21, NOW).address == "alice@partner.example"
    with pytest.raises(SrsError, match="hash"):
        reverse(address, DOMAIN, [b"new"], 21, NOW)


@pytest.mark.parametrize("tamper", [
    lambda a: a.replace("partner.example", "attacker.example"),
    lambda a: a.replace("=alice@", "=mallory@"),
    lambda a: "SRS0=AAAA=" + a.split("=", 2)[2],
])
def test_forged_addresses_are_refused(tamper) -> None:  # type: ignore[no-untyped-def]
    address = forward("alice@partner.example", DOMAIN, SECRET, NOW)
    with pytest.raises(SrsError) as caught:
        reverse(tamper(address), DOMAIN, [SECRET], 21, NOW)
    assert not caught.value.expired


@pytest.mark.parametrize("address", [
    "SRS0=abcd@" + DOMAIN, "SRS0==AA=x=y@" + DOMAIN, "SRS1=abcd=x@" + DOMAIN, "SRS2=a=b=c=d@" + DOMAIN,
    "alice@" + DOMAIN, "SRS0=abcd=AA=host=user@other.example",
])
def test_damaged_addresses_are_refused(address: str) -> None:
    with pytest.raises(SrsError):
        reverse(address, DOMAIN, [SECRET], 21, NOW)


def test_expired_after_max_age_also_across_the_1024_day_wrap() -> None:
    address = forward("alice@partner.example", DOMAIN, SECRET, NOW)
    assert reverse(address, DOMAIN, [SECRET], 21, NOW + 21 * DAY).address == "alice@partner.example"
    with pytest.raises(SrsError) as caught:
        reverse(address, DOMAIN, [SECRET], 21, NOW + 22 * DAY)
    assert caught.value.expired
    near_wrap = (1024 * 20 - 2) * DAY  # two days before the timestamp wraps to AA
    address = forward("alice@partner.example", DOMAIN, SECRET, near_wrap)
    assert reverse(address, DOMAIN, [SECRET], 21, near_wrap + 5 * DAY).address == "alice@partner.example"


def test_srs1_for_a_forwarders_srs0_and_back() -> None:
    theirs = forward("alice@partner.example", "fwd.example", b"their secret", NOW)
    ours = forward(theirs, DOMAIN, SECRET, NOW)
    assert ours.startswith("SRS1=") and "=fwd.example==" in ours and ours.endswith("@" + DOMAIN)
    back = reverse(ours, DOMAIN, [SECRET], 21, NOW)
    assert (back.address, back.kind) == (theirs, "SRS1")
    # an SRS1 of a third party's keeps the first forwarder and is re-hashed with our secret
    again = forward(ours.replace(DOMAIN, "third.example"), DOMAIN, SECRET, NOW)
    assert reverse(again, DOMAIN, [SECRET], 21, NOW).address == theirs
    assert forward(ours, DOMAIN, SECRET, NOW) == ours  # already ours: unchanged


def test_is_srs() -> None:
    assert is_srs("SRS0=x") and is_srs("srs1=y") and not is_srs("srs") and not is_srs("alice")
