"""The mail-flow rule model: the ``notify_sender`` action and the conditions stages add (registry)."""

from __future__ import annotations

import pytest

from mailmoat_policy import PolicyError, parse_policy


def _rule(actions: str) -> str:
    return f"rules:\n  - name: r\n    actions: {actions}\n"


def test_notify_sender_is_an_action_that_combines_with_others() -> None:
    policy = parse_policy(_rule("{notify_sender: {text: Card numbers may not leave the company}, reject: {}}"))
    actions = policy.rules[0].actions
    assert actions.notify_sender is not None
    assert actions.notify_sender.text == "Card numbers may not leave the company"
    assert actions.names() == ["reject", "notify_sender"]


def test_notify_sender_alone_is_enough() -> None:
    policy = parse_policy(_rule("{notify_sender: {text: noted}}"))
    assert policy.rules[0].actions.names() == ["notify_sender"]


@pytest.mark.parametrize(
    ("actions", "expected"),
    [
        ("{notify_sender: {}}", "rules.0.actions.notify_sender.text: Field required"),
        ("{notify_sender: {text: '  '}}", "the text is empty"),
        ('{notify_sender: {text: "two\\nlines"}}', "one line of at most 400 characters"),
        (f"{{notify_sender: {{text: {'x' * 401}}}}}", "one line of at most 400 characters"),
        ("{notify_sender: {text: t, to: someone}}", "rules.0.actions.notify_sender.to"),
        ("{notify_sender: noted}", "rules.0.actions.notify_sender"),
    ],
)
def test_bad_notify_sender(actions: str, expected: str) -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy(_rule(actions))
    assert expected in str(info.value)


def test_notify_sender_text_of_400_characters_is_accepted() -> None:
    policy = parse_policy(_rule(f"{{notify_sender: {{text: {'x' * 400}}}}}"))
    assert len(policy.rules[0].actions.notify_sender.text) == 400
