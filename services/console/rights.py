"""Roles and rights, decided here and only here (pure; the routes ask ``allowed``).

- ``admin``: everything.
- ``helpdesk``: the whole message trace and quarantine; releases what ``quarantine.release_by`` leaves to
  non-admins, deletes held messages.
- ``user``: the messages addressed to the mailboxes that are theirs (``Principal.addresses``), in the trace and
  the quarantine; releases those ``quarantine.release_by`` leaves to non-admins, to their own addresses only.
  An end user's view of a message shows only their own recipients; a message that is not theirs does
  not exist for them (404, never 403).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    admin = "admin"
    helpdesk = "helpdesk"
    user = "user"


class Right(StrEnum):
    trace_read = "trace.read"
    """Search the trace and read a message's timeline (an end user: their own messages)."""
    trace_all = "trace.all"
    """Every message of the trace, whoever it was for."""
    audit_read = "audit.read"
    accounts_manage = "accounts.manage"
    quarantine_read = "quarantine.read"
    """List and preview held messages (an end user: those addressed to their own mailboxes)."""
    quarantine_release = "quarantine.release"
    """Release held messages that ``quarantine.release_by`` leaves to non-admins (an end user: to their own
    addresses), and mark them not junk."""
    quarantine_release_any = "quarantine.release-any"
    """Release whatever the reason (malware, high-confidence phish): administrators."""
    quarantine_delete = "quarantine.delete"
    queues_read = "queues.read"
    """See deferred mail (egress's delay queues) per destination."""
    queues_manage = "queues.manage"
    """Retry now, bounce or delete deferred mail: administrators."""
    policy_read = "policy.read"
    """Read the policy in force, check a draft, see mail-flow rule hits."""
    senders_read = "senders.read"
    """See the senders blocked from the console."""
    senders_block = "senders.block"
    """Block a sender or domain (from a held message or the list) and remove entries: administrators."""


RIGHTS: dict[Role, frozenset[Right]] = {
    Role.admin: frozenset(Right),
    Role.helpdesk: frozenset({Right.trace_read, Right.trace_all, Right.quarantine_read, Right.quarantine_release,
                              Right.quarantine_delete, Right.queues_read, Right.policy_read, Right.senders_read}),
    Role.user: frozenset({Right.trace_read, Right.quarantine_read, Right.quarantine_release}),
}


def normalize_address(address: str) -> str:
    """An address as accounts and the trace compare it: trimmed, no angle brackets, lower case."""
    return address.strip().strip("<>").strip().lower()


@dataclass(frozen=True)
class Principal:
    """Who is asking: a signed-in account."""

    account_id: int
    name: str
    role: Role
    addresses: frozenset[str] = frozenset()

    def can(self, right: Right) -> bool:
        return allowed(self.role, right)

    @property
    def sees_everything(self) -> bool:
        return self.can(Right.trace_all)

    def owns(self, address: str) -> bool:
        return normalize_address(address) in self.addresses

    def own_recipients(self, recipients: Iterable[str]) -> list[str]:
        """The recipients this principal may see: all of them, or an end user's own."""
        recipients = list(recipients)
        return recipients if self.sees_everything else [r for r in recipients if self.owns(r)]

    def may_see_message(self, recipients: Iterable[str]) -> bool:
        """Whether a message with these envelope recipients is visible (an end user: one of theirs)."""
        return self.sees_everything or any(self.owns(r) for r in recipients)


def release_role_of(who: Principal) -> str:
    """The role a release runs with in ``mailmoat_records.quarantine.release``: ``admin`` releases anything,
    ``user`` only what ``quarantine.release_by`` leaves to non-admins."""
    return "admin" if who.can(Right.quarantine_release_any) else "user"


def releasable_recipients(who: Principal, recipients: Iterable[str], asked: Iterable[str] = ()) -> list[str]:
    """The recipients ``who`` may release to: the ones asked for (all when none), an end user's own only.
    Asked-for recipients the principal may not release to are left out (the caller reports them)."""
    mine = who.own_recipients(recipients)
    wanted = {normalize_address(a) for a in asked if normalize_address(a)}
    return [r for r in mine if not wanted or normalize_address(r) in wanted]


def allowed(role: Role | str, right: Right) -> bool:
    try:
        return right in RIGHTS[Role(role)]
    except ValueError:
        return False


def addresses_of(values: Iterable[str]) -> frozenset[str]:
    return frozenset(a for a in map(normalize_address, values) if a)
