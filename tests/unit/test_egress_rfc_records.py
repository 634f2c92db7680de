"""The records of the RFCs' own examples (TLS-RPT, RFC 8460 3.1; TLSA, RFC 6698 2.3) and the hostile shapes
of the same records, through egress's parsers (``parse_record``, ``parse_tlsa``, ``usable``)."""

from __future__ import annotations

import pytest

from mailmoat_egress.dane import DaneCheck, Tlsa, check_chain, parse_tlsa, usable
from mailmoat_egress.tlsreport import RecordError, parse_record

# --- TLS-RPT: RFC 8460 3.1 ----------------------------------------------------------------------------


def test_rfc8460_examples() -> None:
    rua = parse_record(["v=TLSRPTv1;rua=mailto:reports@example.com"])
    assert rua is not None and rua.mailto == ("reports@example.com",) and rua.https == ()
    rua = parse_record(["v=TLSRPTv1; rua=https://reporting.example.com/v1/tlsrpt"])
    assert rua is not None and rua.mailto == () and rua.https == ("https://reporting.example.com/v1/tlsrpt",)


@pytest.mark.parametrize("records", [
    ["v=TLSRPTv1"],                                          # does not begin with "v=TLSRPTv1;"
    ["v=TLSRPTv10; rua=mailto:a@example.com"],
    ["V=TLSRPTv1; rua=mailto:a@example.com"],
    [" v=TLSRPTv1; rua=mailto:a@example.com"],
    ["rua=mailto:a@example.com; v=TLSRPTv1"],
])
def test_tlsrpt_records_not_beginning_with_the_version_are_discarded(records: list[str]) -> None:
    assert parse_record(records) is None
    assert parse_record([*records, "v=TLSRPTv1; rua=mailto:a@example.com"]) is not None


@pytest.mark.parametrize("record", [
    "v=TLSRPTv1;",
    "v=TLSRPTv1; RUA=mailto:a@example.com",                  # names are case-sensitive: no rua
    "v=TLSRPTv1; rua=",
    "v=TLSRPTv1; rua=mailto:a@example.com; x=",
    "v=TLSRPTv1; rua=mailto:a@example.com; x=\u00fc",
    "v=TLSRPTv1; rua=mailto:a@example.com,ftp://r.example",
])
def test_tlsrpt_records_refused(record: str) -> None:
    with pytest.raises(RecordError):
        parse_record([record])


def test_tlsrpt_rua_list_with_white_space_and_first_rua() -> None:
    rua = parse_record(["v=TLSRPTv1; rua=mailto:a@example.com , mailto:b@example.net; rua=mailto:c@example.org"])
    assert rua is not None and rua.mailto == ("a@example.com", "b@example.net")


# --- TLSA: RFC 6698 2.3 (presentation form; dnspython gives it without the parentheses) ---------------

RFC6698_EE_PKIX = "0 0 1 d2abde240d7cd3ee6b4b28c54df034b9 7983a1d16e8a410e4561cb106618e971"
RFC6698_TA_PKIX = ("1 1 2 92003ba34942dc74152e2f2c408d29ec a5a520e7f2e06bb944f4dca346baf63c "
                   "1b177615d466f6c4b71c216a50292bd5 8c9ebdd2f74e38fe51ffd48c43326cbc")


def test_rfc6698_examples_parse_and_pkix_usages_are_unusable_for_smtp() -> None:
    first = parse_tlsa(RFC6698_EE_PKIX)
    assert (first.usage, first.selector, first.mtype, len(first.data)) == (0, 0, 1, 32)
    assert first.data.hex().startswith("d2abde24") and first.text() == RFC6698_EE_PKIX.replace(" 7983", "7983")
    second = parse_tlsa(RFC6698_TA_PKIX)
    assert (second.usage, second.selector, second.mtype, len(second.data)) == (1, 1, 2, 64)
    assert usable([first, second]) == (), "RFC 7672 3.1.3: PKIX-TA and PKIX-EE are unusable for SMTP"
    # the same data under DANE-EE and DANE-TA is usable
    assert usable([parse_tlsa("3" + RFC6698_EE_PKIX[1:]), parse_tlsa("2" + RFC6698_TA_PKIX[1:])]) != ()


@pytest.mark.parametrize("text", [
    "3 1 1 " + "ab" * 31,          # SHA-256 data of 31 octets
    "3 1 1 " + "ab" * 33,
    "3 1 2 " + "ab" * 32,          # SHA-512 data of 32 octets
    "2 0 1 " + "ab" * 64,
])
def test_tlsa_digest_of_the_wrong_size_is_malformed_hence_unusable(text: str) -> None:
    """A malformed record is unusable; a host with only those gets TLS without authentication (``required``,
    RFC 7672 2.2), not a DANE check that no certificate can ever pass."""
    record = parse_tlsa(text)
    assert not record.usable and usable([record]) == ()
    assert DaneCheck(usable([record])).tls_mode == "required"
    assert check_chain([record], [b"junk"], ["mx.example"]) == "no usable TLSA record"


@pytest.mark.parametrize("text", [
    "+3 1 1 " + "ab" * 32,
    "3 1_0 1 " + "ab" * 32,
    "\u0663 1 1 " + "ab" * 32,     # ARABIC-INDIC DIGIT THREE
    "3 1 256 " + "ab" * 32,
    "3 1 1 zz",
    "3 1 1",
])
def test_tlsa_presentation_form_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_tlsa(text)


def test_tlsa_exact_match_data_of_any_size() -> None:
    assert Tlsa(3, 1, 0, b"\x30" * 91).usable
    assert not Tlsa(3, 1, 0, b"").usable
