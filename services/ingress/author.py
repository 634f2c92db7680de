"""Author discipline at the end of DATA (RFC 5322 3.6, RFC 7489 6.6.1). Pure.

A message from outside the organisation must name exactly one author: one ``From:`` field holding
one mailbox that parses (``mailmoat_mail.author``). Otherwise it is refused with EOP's answer
``550 5.7.512`` — or, with ``antispam.author_check: evaluate``, accepted so that the antispam stage
judges every author domain and applies the strictest DMARC outcome. Refused either way: a message with no
author address at all (there is nothing to judge), and one with a From field that programs read differently
(``Author.ambiguous``: its name folded before the colon, or the header's first line beginning with white
space), since there is no telling which author, if any, a mail client shows.

The check belongs to anti-spoofing: it applies when the policy lists the ``antispam`` stage.
"""

from __future__ import annotations

from mailmoat_mail.author import read_author
from mailmoat_policy import Policy

NOT_COMPLIANT = "550 5.7.512 Message must be RFC 5322 section 3.6.2 compliant"


def check_author(data: bytes, policy: Policy, client_ip: str) -> str | None:
    """The refusal for a message whose author is not exactly one parseable mailbox, or None."""
    if "antispam" not in policy.pipeline.filters or policy.is_internal(client_ip):
        return None
    author = read_author(data)
    problem = author.problem
    if problem is None:
        return None
    if policy.antispam.author_check == "evaluate" and author.domains and not author.ambiguous:
        return None
    return f"{NOT_COMPLIANT} ({problem.split(':', 1)[0]})"


__all__ = ["NOT_COMPLIANT", "check_author"]
