"""DLP detection (pure): payment cards, IBANs, US SSNs and custom types, their confidence, counts and
redacted evidence; property tests that valid generated numbers are found and mutated ones are not."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailmoat_dlp import cards, iban, ssn
from mailmoat_dlp.checksums import luhn_digit, luhn_valid, mod97, mod97_valid
from mailmoat_dlp.detect import Tally, find_all
from mailmoat_dlp.keywords import KeywordIndex
from mailmoat_dlp.policy import CustomType, Dlp

DEFAULT = Dlp()


def found(text: str, policy: Dlp = DEFAULT) -> list[tuple[str, str, str | None]]:
    return [(m.type, m.confidence, m.label) for m in find_all(text, policy)]


# --- generators ------------------------------------------------------------------------------------


@st.composite
def card_numbers(draw: st.DrawFn) -> str:
    _name, low, high, lengths = draw(st.sampled_from(cards.ISSUERS))
    prefix = str(draw(st.integers(low, high)))
    length = draw(st.sampled_from(sorted(lengths)))
    body = prefix + "".join(draw(st.lists(st.sampled_from("0123456789"), min_size=length - len(prefix) - 1,
                                          max_size=length - len(prefix) - 1)))
    return body + luhn_digit(body)


def spaced(digits: str, separator: str) -> str:
    if not separator:
        return digits
    groups = [digits[i:i + 4] for i in range(0, len(digits), 4)]
    if len(groups[-1]) < 3:  # 4-4-4-4-3 and the like: fold a short tail into the group before
        groups[-2:] = [groups[-2] + groups[-1]]
    return separator.join(groups)


@st.composite
def ibans(draw: st.DrawFn) -> str:
    country = draw(st.sampled_from(sorted(iban.LENGTHS)))
    bban = "".join(draw(st.lists(st.sampled_from("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"),
                                 min_size=iban.LENGTHS[country] - 4, max_size=iban.LENGTHS[country] - 4)))
    check = 98 - mod97(country + "00" + bban)
    return f"{country}{check:02d}{bban}"


@st.composite
def ssns(draw: st.DrawFn) -> str:
    area = draw(st.integers(1, 899).filter(lambda a: a != 666))
    value = f"{area:03d}{draw(st.integers(1, 99)):02d}{draw(st.integers(1, 9999)):04d}"
    return value


def mutate(value: str, position: int, replacement: str) -> str:
    return value[:position] + replacement + value[position + 1:]


# --- checksums -----------------------------------------------------------------------------------


def test_luhn_and_mod97_on_published_examples() -> None:
    assert luhn_valid("4111111111111111") and luhn_valid("378282246310005") and not luhn_valid("4111111111111112")
    assert luhn_digit("411111111111111") == "1"
    assert mod97_valid("GB82WEST12345698765432") and mod97_valid("DE89370400440532013000")
    assert not mod97_valid("GB82WEST12345698765433") and not luhn_valid("") and not mod97_valid("GB8")


# --- payment cards -------------------------------------------------------------------------------


@pytest.mark.parametrize(("number", "brand"), [
    ("4111 1111 1111 1111", "visa"),
    ("4222222222222", "visa"),
    ("5555-5555-5555-4444", "mastercard"),
    ("2223 0031 2200 3222", "mastercard"),
    ("3782 822463 10005", "amex"),
    ("6011 1111 1111 1117", "discover"),
    ("3530 1113 3330 0000", "jcb"),
    ("3056 930902 5904", "diners"),
    ("6200 0000 0000 0005", "unionpay"),
])
def test_a_valid_card_alone_is_medium_and_with_a_keyword_high(number: str, brand: str) -> None:
    assert found(f"Please use {number} today.") == [("credit_card", "medium", brand)]
    assert found(f"My credit card is {number}, exp 12/29.") == [("credit_card", "high", brand)]
    far = f"Credit card below.{'.' * 400} {number}"
    assert found(far) == [("credit_card", "medium", brand)]  # the keyword is outside the 300-character window


@pytest.mark.parametrize("text", [
    "card 4111 1111 1111 1112",            # Luhn fails
    "card 1234 5678 9012 3452",            # Luhn holds, no issuer starts with 1
    "card 4111 1111-1111 1111",            # mixed separators
    "card 41 1111 1111 1111 11",           # not card grouping
    "order 41111111111111110000 shipped",  # part of a longer number
    "call +41 1111 1111 1111 1",           # an international phone number
    "version 4.111111111111111",           # a decimal
    "amex 3782 8224 6310 005 1",           # amex length with a digit more
])
def test_look_alikes_of_cards_are_not_found(text: str) -> None:
    assert found(text) == []


@settings(max_examples=300, deadline=None)
@given(number=card_numbers(), separator=st.sampled_from(["", " ", "-"]))
def test_every_generated_valid_card_is_found(number: str, separator: str) -> None:
    text = f"Payment: {spaced(number, separator)}."
    (match,) = find_all(text, DEFAULT)
    assert match.type == "credit_card" and match.value == number and match.label == cards.valid(number)


@settings(max_examples=300, deadline=None)
@given(number=card_numbers(), data=st.data())
def test_a_card_with_one_digit_changed_is_not_found(number: str, data: st.DataObject) -> None:
    position = data.draw(st.integers(0, len(number) - 1))
    digit = data.draw(st.sampled_from([d for d in "0123456789" if d != number[position]]))
    assert found(f"credit card {mutate(number, position, digit)}", Dlp(types=["credit_card"])) == []


# --- IBAN ----------------------------------------------------------------------------------------


def test_ibans_in_print_and_electronic_form() -> None:
    assert found("Pay to DE89 3704 0044 0532 0130 00 please") == [("iban", "medium", "DE")]
    assert found("IBAN: GB82WEST12345698765432") == [("iban", "high", "GB")]
    assert found("IBAN: GB82 WEST 1234 5698 7654 32") == [("iban", "high", "GB")]
    assert found("iban GB82WEST12345698765433") == []  # check digits wrong
    assert found("iban GB82WEST1234569876543") == []  # one character short
    assert found("iban GB82WEST123456987654321") == []  # one more
    assert found("iban XX82WEST12345698765432") == []  # no such country


def test_an_ibans_digits_are_not_also_a_card() -> None:
    # the BBAN of this IBAN holds a 16-digit run that passes Luhn and looks like a Visa number
    bban = "4111111111111111" + "00"
    check = 98 - mod97("DE00" + bban)
    assert [m.type for m in find_all(f"DE{check:02d}{bban}", DEFAULT)] == ["iban"]


@settings(max_examples=300, deadline=None)
@given(value=ibans(), printed=st.booleans())
def test_every_generated_valid_iban_is_found(value: str, printed: bool) -> None:
    text = " ".join(value[i:i + 4] for i in range(0, len(value), 4)) if printed else value
    matches = [m for m in find_all(f"Account {text} thanks", DEFAULT) if m.type == "iban"]
    assert [m.value for m in matches] == [value]


@settings(max_examples=300, deadline=None)
@given(value=ibans(), data=st.data())
def test_an_iban_with_one_digit_changed_is_not_found(value: str, data: st.DataObject) -> None:
    # mod 97-10 catches every change of one digit (letters count as two digits each, so a letter
    # swapped for a digit shifts the number and is caught only by chance: 96 times in 97)
    position = data.draw(st.sampled_from([i for i, c in enumerate(value) if c.isdigit()]))
    replacement = data.draw(st.sampled_from([c for c in "0123456789" if c != value[position]]))
    assert found(f"IBAN {mutate(value, position, replacement)}", Dlp(types=["iban"])) == []


# --- US SSN --------------------------------------------------------------------------------------


def test_ssn_confidence_by_form_and_keyword() -> None:
    assert found("SSN: 536-90-4399") == [("us_ssn", "high", None)]
    assert found("social security number 536904399") == [("us_ssn", "medium", None)]
    assert found("reference 536-90-4399") == [("us_ssn", "low", None)]
    assert found("order 536904399 shipped") == []  # nine digits, no keyword


@pytest.mark.parametrize("number", [
    "000-12-3456", "666-12-3456", "900-12-3456", "999-12-3456", "536-00-4399", "536-90-0000",
    "078-05-1120", "219-09-9999", "123-45-6789", "111-11-1111",
])
def test_ssns_never_issued_or_well_known_are_not_found(number: str) -> None:
    assert found(f"SSN {number}") == []


@settings(max_examples=300, deadline=None)
@given(value=ssns().filter(ssn.valid), separator=st.sampled_from(["-", " "]))
def test_every_generated_ssn_with_a_keyword_is_found_high(value: str, separator: str) -> None:
    text = f"SSN {value[:3]}{separator}{value[3:5]}{separator}{value[5:]}"
    assert [(m.type, m.value, m.confidence) for m in find_all(text, DEFAULT)] == [("us_ssn", value, "high")]


@settings(max_examples=200, deadline=None)
@given(area=st.sampled_from(["000", "666", *[str(a) for a in range(900, 1000)]]), rest=ssns())
def test_ssns_in_an_invalid_area_are_never_found(area: str, rest: str) -> None:
    assert found(f"SSN {area}-{rest[3:5]}-{rest[5:]}") == []


# --- custom types --------------------------------------------------------------------------------


def test_custom_type_confidence_from_checksum_and_keywords() -> None:
    employee = CustomType(name="employee_id", pattern=r"\bEMP-\d{6}\b", keywords=["employee", "staff id"])
    policy = Dlp(types=[], custom_types=[employee])
    assert found("ref EMP-123456", policy) == [("employee_id", "low", None)]
    assert found("Staff  ID: EMP-123456", policy) == [("employee_id", "high", None)]
    account = CustomType(name="loyalty", pattern=r"\b\d{12}\b", checksum="luhn")
    policy = Dlp(types=[], custom_types=[account])
    assert found("card 123456789015", policy) == [("loyalty", "medium", None)]
    assert found("card 123456789016", policy) == []


def test_min_confidence_drops_weaker_matches() -> None:
    policy = Dlp(min_confidence="medium")
    assert found("reference 536-90-4399 and 4111111111111111", policy) == [("credit_card", "medium", "visa")]


def test_custom_type_names_and_patterns_are_checked() -> None:
    with pytest.raises(ValueError, match="built-in"):
        CustomType(name="iban", pattern="x")
    with pytest.raises(ValueError, match="empty string"):
        CustomType(name="x", pattern="a*")
    with pytest.raises(ValueError, match="bad regex"):
        CustomType(name="x", pattern="(")
    with pytest.raises(ValueError, match="share the name"):
        Dlp(custom_types=[CustomType(name="x", pattern="a"), CustomType(name="x", pattern="b")])


# --- keywords, tally and evidence ----------------------------------------------------------------


def test_keyword_window_either_side() -> None:
    text = "x " * 25 + "card number" + " " * 20 + "[match]" + " " * 30 + "cvv"
    index = KeywordIndex(text, cards.KEYWORDS)
    start = text.index("[match]")
    assert index.near(start, start + 7, 20) and not index.near(start, start + 7, 19)
    assert not KeywordIndex("x" * 10 + "cvv", cards.KEYWORDS)  # a keyword is a whole word
    index = KeywordIndex(text.replace("card number", "x" * 11), cards.KEYWORDS)
    assert index.near(start, start + 7, 30) and not index.near(start, start + 7, 29)


def test_tally_counts_distinct_values_at_their_highest_confidence_and_redacts() -> None:
    tally = Tally(evidence_digits=4)
    tally.add(find_all("4111 1111 1111 1111 and 5555555555554444", DEFAULT), "1.1")
    tally.add(find_all("credit card 4111-1111-1111-1111", DEFAULT), "1.2 report.pdf")
    (finding,) = tally.findings(["credit_card", "iban"])
    assert (finding.count, finding.confidence, finding.counts) == (2, "high", {"medium": 1, "high": 1})
    assert [(e.part, e.last4, e.label) for e in finding.evidence] == [
        ("1.2 report.pdf", "1111", "visa"), ("1.1", "4444", "mastercard")]
    dumped = finding.model_dump_json()
    assert "4111111111111111" not in dumped and "5555555555554444" not in dumped and "411111" not in dumped
    assert finding.count_at_least("high") == 1 and finding.count_at_least("low") == 2


def test_no_digits_in_evidence_when_evidence_digits_is_zero() -> None:
    tally = Tally(evidence_digits=0)
    tally.add(find_all("4111 1111 1111 1111", DEFAULT), "1")
    (finding,) = tally.findings(["credit_card"])
    assert finding.evidence[0].last4 is None
