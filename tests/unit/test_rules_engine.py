"""Rule evaluation: order, stop, exceptions, test mode, active windows, each action's effect, and how
the outcome changes what the verdict actions see."""

from __future__ import annotations

import ast
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mailmoat_platform import verdicts
from mailmoat_platform.models import Envelope, Verdict
from mailmoat_policy import PolicyError, RuleActions, parse_policy
from mailmoat_routing.actions import disposition
from mailmoat_routing.rules import ACTIONS, CONDITIONS, Registry, RegistryError, apply_outcome, engine, evaluate
from mailmoat_routing.rules.engine import spam_verdict
from tests.support.attachments import message, mz_executable

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
DATA = b"From: a@sender.org\r\nTo: alice@example.com\r\nSubject: Invoice 42\r\n\r\nPlease pay.\r\n"
CONNECTORS = """
connectors:
  outbound:
    - {name: partner-tls, rule_only: true, smart_hosts: ["mx.partner.test"], tls: verify}
"""


def run(rules: str, data: bytes = DATA, now: datetime = NOW, **envelope: object):
    policy = parse_policy(CONNECTORS + "rules:\n" + rules)
    env = Envelope(**{"mail_from": "a@sender.org", "rcpt_to": ["alice@example.com"], **envelope})
    return env, policy, evaluate(env, data, policy, now)


def test_the_registries_cover_the_policy_model_and_refuse_duplicates() -> None:
    assert list(ACTIONS) == list(RuleActions.model_fields)
    assert "header_matches" in CONDITIONS
    registry: Registry = Registry("condition")
    registry.register("x")(lambda f, s: True)
    with pytest.raises(RegistryError, match="registered twice"):
        registry.register("x")(lambda f, s: False)
    with pytest.raises(RegistryError, match="not implemented"):
        registry.require(["x", "y"])


def test_no_rules_changes_nothing() -> None:
    _, _, outcome = run("  []\n")
    assert outcome.hits == [] and outcome.data is DATA and outcome.final is None and not outcome.data_changed


def test_rules_run_in_priority_order_and_see_earlier_changes() -> None:
    _, _, outcome = run("""
  - name: second
    priority: 20
    conditions: {header_contains: {header: X-Step, words: [one]}}
    actions: {set_header: {X-Step: two}}
  - name: first
    priority: 10
    actions: {set_header: {X-Step: one}}
  - name: third-same-priority-listed-later
    priority: 20
    conditions: {header_contains: {header: X-Step, words: [two]}}
    actions: {prepend_subject: "[ok] "}
""")
    assert [h.rule for h in outcome.hits] == ["first", "second", "third-same-priority-listed-later"]
    assert outcome.data == b"X-Step: two\r\n" + DATA.replace(b"Subject: Invoice", b"Subject: [ok] Invoice")


def test_all_conditions_must_match_and_any_exception_excludes() -> None:
    rules = """
  - name: r
    conditions: {sender_domain: [sender.org], subject_contains: [invoice]}
    exceptions: {recipient_address: [boss@example.com], header_contains: {header: X-Skip, words: ["yes"]}}
    actions: {prepend_subject: "[ext] "}
"""
    assert [h.rule for h in run(rules)[2].hits] == ["r"]
    assert run(rules, mail_from="a@other.org")[2].hits == []  # one condition fails
    assert run(rules, rcpt_to=["alice@example.com", "boss@example.com"])[2].hits == []  # exception 1
    assert run(rules, data=b"X-Skip: yes\r\n" + DATA)[2].hits == []  # exception 2


def test_stop_processing_and_final_actions_end_evaluation() -> None:
    rules = """
  - name: a
    stop_processing: {stop}
    actions: {{set_header: {{X-A: "1"}}}}
  - name: b
    actions: {{set_header: {{X-B: "1"}}}}
"""
    assert [h.rule for h in run(rules.format(stop="true"))[2].hits] == ["a"]
    assert [h.rule for h in run(rules.format(stop="false"))[2].hits] == ["a", "b"]
    _, _, outcome = run("""
  - name: block
    actions: {delete: true}
  - name: never
    actions: {set_header: {X-B: "1"}}
""")
    assert [h.rule for h in outcome.hits] == ["block"] and outcome.final == "delete" and outcome.rule == "block"


def test_test_mode_traces_but_changes_nothing_and_does_not_stop() -> None:
    _, _, outcome = run("""
  - name: trial
    mode: test
    stop_processing: true
    actions: {reject: {text: "refused"}, set_header: {X-T: "1"}, redirect_to: [audit@example.com], set_scl: 9,
              route_to_connector: partner-tls, require_tls: true, bypass_spam_filtering: true,
              append_disclaimer: {text: d}}
  - name: after
    mode: test
    actions: {delete: true}
""")
    assert [(h.rule, h.mode) for h in outcome.hits] == [("trial", "test"), ("after", "test")]
    assert outcome.hits[0].actions[0] == "reject" and "would take" in outcome.hits[0].describe()
    assert outcome.data is DATA and outcome.rcpt_to == ["alice@example.com"]
    assert (outcome.final, outcome.scl, outcome.connector, outcome.require_tls) == (None, None, None, False)


def test_active_window() -> None:
    rules = """
  - name: holiday
    active_from: 2026-12-20T00:00:00Z
    active_until: 2027-01-02T00:00:00
    actions: {prepend_subject: "[away] "}
"""
    assert run(rules, now=NOW)[2].hits == []
    assert [h.rule for h in run(rules, now=datetime(2026, 12, 24, tzinfo=UTC))[2].hits] == ["holiday"]
    assert run(rules, now=datetime(2027, 1, 2, tzinfo=UTC))[2].hits == []  # the end is exclusive


def test_reject_with_default_and_custom_codes() -> None:
    _, _, outcome = run("  - {name: r, actions: {reject: {}}}\n")
    assert (outcome.final, outcome.code) == ("reject", "5.7.1")
    assert outcome.text == "Delivery not authorized, message refused"
    _, _, outcome = run("  - {name: r, actions: {reject: {code: 5.7.942, text: Executables are not accepted}}}\n")
    assert (outcome.code, outcome.text) == ("5.7.942", "Executables are not accepted")


def test_quarantine_and_delete() -> None:
    assert run("  - {name: q, actions: {quarantine: true}}\n")[2].final == "quarantine"
    assert run("  - {name: d, actions: {delete: true}}\n")[2].final == "delete"


def test_changes_before_a_final_action_are_kept() -> None:
    _, _, outcome = run("  - {name: q, actions: {quarantine: true, set_header: {X-Held: rule}}}\n")
    assert outcome.final == "quarantine" and outcome.data == b"X-Held: rule\r\n" + DATA
    assert outcome.hits[0].detail["set_header"] == {"headers": ["X-Held"]}


def test_redirect_and_add_recipients() -> None:
    env, _, outcome = run("""
  - name: bcc
    actions: {add_recipients: [audit@example.com, alice@example.com]}
  - name: redirect
    conditions: {recipient_address: [audit@example.com]}
    actions: {redirect_to: [review@example.com]}
""")
    assert outcome.rcpt_to == ["review@example.com"]
    assert outcome.hits[0].detail["add_recipients"] == {"added": ["audit@example.com"]}
    assert outcome.hits[1].detail["redirect_to"]["original_recipients"] == ["alice@example.com", "audit@example.com"]
    assert apply_outcome(env, outcome).rcpt_to == ["review@example.com"]
    assert outcome.data is DATA


def test_header_subject_and_disclaimer_actions() -> None:
    data = b"X-Internal: secret\r\n" + DATA
    _, _, outcome = run("""
  - name: edit
    actions: {remove_header: [X-Internal], set_header: {X-Class: external}, prepend_subject: "[EXT] ",
              append_disclaimer: {text: "Sent from outside."}}
""", data=data)
    assert outcome.data == (b"X-Class: external\r\n" + DATA.replace(b"Subject: Invoice", b"Subject: [EXT] Invoice")
                            + b"\r\nSent from outside.\r\n")
    assert outcome.data_changed


def test_connector_tls_scl_and_bypass_are_reported() -> None:
    _, _, outcome = run("""
  - name: partner
    actions: {route_to_connector: partner-tls, require_tls: true, set_scl: 6}
  - name: trusted
    conditions: {scl_at_least: 6}
    actions: {bypass_spam_filtering: true}
""")
    assert (outcome.connector, outcome.require_tls) == ("partner-tls", True)
    assert (outcome.set_scl, outcome.bypass_spam) == (6, True)
    assert outcome.scl == -1 and outcome.scl_rule == "trusted"


def test_rule_scl_decides_the_verdict_action() -> None:
    spam = Verdict(stage="antispam", result="hcspam", detail={"scl": 8, "category": "hcspam", "categories": ["hcspam"]})
    phish = Verdict(stage="antispam", result="hcphish", detail={"scl": 9, "category": "hcphish"})
    env, policy, outcome = run("  - {name: trust, actions: {bypass_spam_filtering: true}}\n",
                               verdicts={"antispam": spam})
    assert disposition(env, policy).action == "quarantine"
    assert disposition(apply_outcome(env, outcome), policy).action == "deliver"
    env, policy, outcome = run("  - {name: trust, actions: {bypass_spam_filtering: true}}\n",
                               verdicts={"antispam": phish})
    assert disposition(apply_outcome(env, outcome), policy).action == "quarantine"  # never for hcphish
    env, policy, outcome = run("  - {name: mark, actions: {set_scl: 5}}\n")
    after = apply_outcome(env, outcome)
    assert after.verdicts["antispam"].result == "spam" and after.verdicts["antispam"].detail["scl_rule"] == "mark"
    assert disposition(after, policy).action == "junk"
    assert spam_verdict(spam, 2, "r").result == "clean"
    assert spam_verdict(spam, 7, "r").detail["categories"] == ["hcspam"]


def test_a_rule_scl_is_written_through_the_antispam_verdict_model() -> None:
    dmarc = {"result": "fail", "policy": "quarantine", "domain": "sender.org"}
    current = Verdict(stage="antispam", result="phish",
                      detail={"scl": 6, "category": "phish", "categories": ["phish", "spam", "unknown"], "bcl": 3,
                              "dmarc": dmarc, "sfv": "SPM", "kept": "as is", "score": "not a number"})
    after = spam_verdict(current, 2, "lower")
    assert after.result == "phish"
    assert after.detail == {"scl": 2, "category": "phish", "categories": ["phish"], "bcl": 3, "dmarc": {**dmarc},
                            "sfv": "SPM", "kept": "as is", "scl_rule": "lower"}  # a value that does not fit is left out
    typed = verdicts.detail_of(after)
    assert isinstance(typed, verdicts.model_for("antispam")) and typed.hits(after) == ["phish", "dmarc_quarantine"]
    fresh = spam_verdict(None, -1, "trust")
    assert fresh.result == "allowed"
    assert fresh.detail == {"scl": -1, "categories": [], "category": None, "scl_rule": "trust"}


def test_the_engine_reads_the_antispam_model_through_the_registry() -> None:
    tree = ast.parse(Path(engine.__file__).read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    services = ("mailmoat_antispam", "mailmoat_routing.actions")
    assert not {name for name in imported if name and name.startswith(services)}


def test_a_rule_rejects_by_true_attachment_type() -> None:
    data = message([("report.pdf", "application/pdf", mz_executable(), "base64")])
    _, _, outcome = run("""
  - name: no-executables
    conditions: {attachment_type: [exe, dll]}
    actions: {reject: {code: 5.7.901, text: Executable attachments are not accepted}}
""", data=data)
    assert (outcome.final, outcome.rule, outcome.code) == ("reject", "no-executables", "5.7.901")


@pytest.mark.parametrize(("rules", "error"), [
    ("  - {name: r, conditions: {header_matches: {header: X-A, patterns: ['(']}}, actions: {delete: true}}\n",
     "rules.0.conditions.header_matches: Value error, bad regex '('"),
    ("  - {name: r, actions: {delete: true}}\n  - {name: r, actions: {delete: true}}\n",
     "rules.1.name: 'r' is already the name of rules.0"),
    ("  - {name: r, actions: {reject: {code: 5.7.2}}}\n", "rules.0.actions.reject.code"),
    ("  - {name: r, actions: {reject: {code: 5.7.1000}}}\n", "must be 5.7.1 or from 5.7.900 to 5.7.999"),
    ("  - {name: r, actions: {}}\n", "a rule needs at least one action"),
    ("  - {name: r, actions: {reject: {}, quarantine: true}}\n", "can end a message in one way only"),
    ("  - {name: r, actions: {route_to_connector: nowhere}}\n",
     "rules.0.actions.route_to_connector: no outbound connector named 'nowhere'"),
    ("  - {name: r, actions: {set_header: {Received: x}}}\n", "rules.0.actions.set_header"),
    ("  - {name: r, actions: {redirect_to: [not-an-address]}}\n", "'not-an-address' is not an address"),
    ("  - {name: r, conditions: {verdict: [evil]}, actions: {delete: true}}\n", "unknown verdict 'evil'"),
    ("  - {name: r, conditions: {sender_ip: [300.1.1.1]}, actions: {delete: true}}\n", "rules.0.conditions.sender_ip"),
    ("  - {name: r, conditions: {sender_address: []}, actions: {delete: true}}\n", "at least one value"),
    ("  - {name: r, active_from: 2027-01-01T00:00:00Z, active_until: 2026-01-01T00:00:00Z, actions: {delete: true}}\n",
     "active_until must be later than active_from"),
    ("  - {name: r, mode: maybe, actions: {delete: true}}\n", "rules.0.mode"),
])
def test_policy_errors_name_the_path(rules: str, error: str) -> None:
    with pytest.raises(PolicyError) as caught:
        parse_policy(CONNECTORS + "rules:\n" + rules)
    assert error in str(caught.value)


def test_the_documented_rules_example_is_valid() -> None:
    import re
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "policy.md").read_text(encoding="utf-8")
    connectors = re.search(r"## connectors\n.*?```yaml\n(.*?)```", doc, re.DOTALL)
    rules = re.search(r"## rules\n.*?```yaml\n(.*?)```", doc, re.DOTALL)
    assert connectors and rules
    policy = parse_policy(connectors.group(1) + rules.group(1), "docs/policy.md")
    assert [r.name for r in policy.rules][:2] == ["no-executables", "legal-hold-partner"]
    data = message([("setup.txt", "text/plain", mz_executable(), "base64")])
    outcome = evaluate(Envelope(mail_from="x@outside.test", rcpt_to=["a@example.com"]), data, policy, NOW)
    assert (outcome.final, outcome.code) == ("reject", "5.7.901")
