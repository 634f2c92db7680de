"""Typed verdicts (mailmoat_platform.verdicts): the registry's models, tolerant reading, the wire form,
the precedence routing decides by, and the verdict actions checked against the policy."""

from __future__ import annotations

import pytest

from mailmoat_antispam.verdict import AntispamVerdict
from mailmoat_antivirus.verdict import AntivirusVerdict
from mailmoat_connection_filter.verdict import ConnectionVerdict
from mailmoat_platform import stages
from mailmoat_platform.models import Envelope, Verdict
from mailmoat_platform.verdicts import VerdictDetail, decide, detail_of, model_for
from mailmoat_policy import parse_policy
from mailmoat_routing.actions import DELIVERING, VERDICT_ACTIONS, policy_actions


def test_registry_names_a_model_for_every_existing_filter_stage() -> None:
    assert model_for("connection_filter") is ConnectionVerdict
    assert model_for("antivirus") is AntivirusVerdict
    assert model_for("antispam") is AntispamVerdict
    assert model_for("routing") is VerdictDetail and model_for("no-such-stage") is VerdictDetail
    for spec in stages.filters():
        assert spec.verdict_model is not None and issubclass(model_for(spec.name), VerdictDetail)


def test_precedence_of_the_existing_stages_is_kept() -> None:
    ranks = {spec.name: spec.precedence for spec in stages.by_precedence()}
    assert ranks["antivirus"] < ranks["connection_filter"] < ranks["antispam"]


def test_detail_reads_typed_and_keeps_unknown_keys() -> None:
    verdict = Verdict(stage="antispam", result="spam", detail={
        "scl": 6, "bcl": 2, "category": "spam", "dmarc": {"result": "fail", "policy": "quarantine", "domain": "s.test"},
        "impersonation": {"kind": "user", "claimed": "Boss", "sender": "b@x.test"}, "from_a_newer_stage": [1]})
    detail = detail_of(verdict)
    assert isinstance(detail, AntispamVerdict)
    assert (detail.scl, detail.bcl, detail.dmarc and detail.dmarc.domain) == (6, 2, "s.test")
    assert detail.impersonation is not None and detail.impersonation.kind == "user"
    assert detail.as_detail() == verdict.detail  # the wire form round-trips, unknown keys included


def test_a_value_of_the_wrong_type_is_left_out_not_an_error() -> None:
    verdict = Verdict(stage="antispam", result="spam", detail={"scl": "high", "bcl": 3, "dmarc": "fail"})
    detail = detail_of(verdict)
    assert isinstance(detail, AntispamVerdict)
    assert (detail.scl, detail.bcl, detail.dmarc) == (None, 3, None)


def test_wire_refuses_an_undeclared_field() -> None:
    assert ConnectionVerdict.wire(client_ip="192.0.2.1", scl=-1) == {"client_ip": "192.0.2.1", "scl": -1}
    with pytest.raises(TypeError, match="declares no field sc1"):
        ConnectionVerdict.wire(client_ip="192.0.2.1", sc1=-1)


def test_hooks_for_libs() -> None:
    spam = Verdict(stage="antispam", result="clean", detail={"scl": 5, "forged": True})
    assert detail_of(spam).withholds_dsn(spam) and detail_of(spam).forged_sender()
    malware = Verdict(stage="antivirus", result="malware", detail={"names": ["Eicar"]})
    assert detail_of(malware).withholds_dsn(malware) and detail_of(malware).detections() == ["Eicar"]
    allow = Verdict(stage="connection_filter", result="allow", detail={"scl": -1})
    assert detail_of(allow).allow_listed(allow) and detail_of(allow).rule_verdicts(allow) == {"ip_allow"}


def test_first_stage_by_precedence_decides() -> None:
    envelope = Envelope(mail_from="s@sender.test", rcpt_to=["a@example.com"])
    policy = parse_policy("{}")
    assert decide(envelope, policy) is None
    envelope.add_verdict(Verdict(stage="antispam", result="hcphish", detail={"scl": 9, "category": "hcphish"}))
    envelope.add_verdict(Verdict(stage="connection_filter", result="reject", detail={"reason": "ip_block"}))
    found = decide(envelope, policy)
    assert found is not None and (found.cause, found.action, found.stage) == ("connection", "reject",
                                                                              "connection_filter")
    envelope.add_verdict(Verdict(stage="antivirus", result="blocked-type", detail={"action": "quarantine"}))
    found = decide(envelope, policy)
    assert found is not None and (found.cause, found.result) == ("malware", "blocked-type")


def test_verdict_actions_are_the_policy_actions() -> None:
    assert set(VERDICT_ACTIONS) == set(policy_actions()) == {
        "deliver", "junk", "prepend_subject", "redirect", "quarantine", "delete", "reject", "strip"}
    assert DELIVERING == {"deliver", "junk", "prepend_subject", "redirect", "strip"}
