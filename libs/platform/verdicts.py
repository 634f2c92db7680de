"""Typed verdicts: each filter stage's verdict detail as a pydantic model, and what it calls for.

On the bus a verdict's detail stays a dict (``Verdict.detail``), so an envelope an older stage wrote
still reads. ``detail_of`` reads it as the model the stage registry names (``verdict_model``); the
models keep keys they do not know, and a value of the wrong type is dropped (logged) rather than
failing the message. A stage without a model reads as the base ``VerdictDetail``.

A model's ``disposition`` says what its verdict calls for (None: nothing); routing asks the filter
stages in ``stages.by_precedence()`` order and the first ``Disposition`` decides (decision 004). The
other hooks let code under ``libs/`` ask about a verdict without knowing the stage: whether it
withholds a DSN, judges the sender forged, allow-lists the message, or names detections.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from mailmoat_platform import stages
from mailmoat_platform.models import Envelope, Verdict

if TYPE_CHECKING:
    from mailmoat_policy import Policy

log = logging.getLogger(__name__)

D = TypeVar("D", bound="VerdictDetail")


@dataclass(frozen=True)
class Disposition:
    """The action for a message and the verdict that caused it."""

    action: str
    """A registered verdict action: ``deliver``, ``junk``, ``prepend_subject``, ``redirect``,
    ``quarantine``, ``delete``, ``reject``, ``strip``."""
    cause: str = "none"
    """``none`` (no verdict called for an action), ``released``, ``malware``, ``connection``, an
    antispam key of ``SPAM_ORDER``, or ``error`` (the antispam stage failed); the quarantine reason."""
    stage: str | None = None
    result: str | None = None
    """The deciding verdict's result (an antivirus result such as ``blocked-type``, a spam category)."""
    reason: str = ""
    """A line for the trace and the NDR."""
    status: str | None = None
    """RFC 3463 status a ``reject`` reports."""
    strip: tuple[str, ...] = ()
    """MIME part paths a ``strip`` removes (empty: the attachments the verdict names, else all)."""

    def describe(self) -> str:
        what = f"{self.cause}" + (f" ({self.result})" if self.result and self.result != self.cause else "")
        return f"{self.action}: {what}" + (f": {self.reason}" if self.reason else "")


class VerdictDetail(BaseModel):
    """Base of every stage's verdict detail. The error fields are those of ``stagefault.error_detail``
    (a stage that failed on the message)."""

    model_config = ConfigDict(extra="allow")

    error: str | None = None
    error_type: str | None = None
    error_message: str | None = None

    def disposition(self, verdict: Verdict, envelope: Envelope, policy: Policy) -> Disposition | None:
        """What routing does about this verdict; None when it calls for nothing."""
        return None

    def rule_verdicts(self, verdict: Verdict) -> frozenset[str]:
        """Names the ``verdict`` mail-flow rule condition matches on (``RULE_VERDICTS``)."""
        return frozenset()

    def allow_listed(self, verdict: Verdict) -> bool:
        """The message skips spam filtering (SCL -1)."""
        return False

    def withholds_dsn(self, verdict: Verdict) -> bool:
        """No DSN about this message (its sender is likely forged: spam, malware)."""
        return False

    def forged_sender(self) -> bool:
        """The stage judged the envelope sender forged (no report of any kind goes to it)."""
        return False

    def detections(self) -> list[str]:
        """Names of what the stage detected (malware signatures), for notices."""
        return []

    def as_detail(self) -> dict[str, Any]:
        """The wire form (``Verdict.detail``): the fields set, and the extra keys."""
        return self.model_dump(mode="json", exclude_unset=True)

    @classmethod
    def wire(cls, **fields: Any) -> dict[str, Any]:
        """The detail a stage writes: declared fields only (an undeclared name is an error, so the model
        and what the stage writes cannot drift apart), validated, in wire form."""
        unknown = sorted(set(fields) - set(cls.model_fields))
        if unknown:
            raise TypeError(f"{cls.__name__} declares no field {', '.join(unknown)}")
        return cls(**fields).as_detail()


@cache
def model_for(stage: str) -> type[VerdictDetail]:
    """The detail model the registry names for ``stage`` (``VerdictDetail`` when none)."""
    try:
        spec = stages.get(stage)
    except KeyError:
        return VerdictDetail
    model = spec.verdict_class()
    if model is None:
        return VerdictDetail
    if not (isinstance(model, type) and issubclass(model, VerdictDetail)):
        raise TypeError(f"{spec.verdict_model} is not a VerdictDetail")
    return model


def read(model: type[D], detail: dict[str, Any], stage: str = "") -> D:
    """``detail`` as ``model``; a key whose value does not fit is left out (logged), never an error."""
    data = detail
    for _ in range(len(data) + 1):
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            data = dict(data)
            bad = {str(e["loc"][0]) for e in exc.errors() if e["loc"]} & set(data)
            if not bad:
                raise
            log.warning("verdict detail of %s: ignoring %s (%s)", stage or model.__name__, ", ".join(sorted(bad)),
                        exc.errors()[0]["msg"])
            for key in bad:
                data.pop(key)
    return model.model_validate({})


def detail_of(verdict: Verdict) -> VerdictDetail:
    """The verdict's detail as its stage's model (registry ``verdict_model``)."""
    return read(model_for(verdict.stage), verdict.detail, verdict.stage)


def detail_in(envelope: Envelope, stage: str, model: type[D]) -> D | None:
    """The envelope's verdict of ``stage`` read as ``model``; None when it has none."""
    verdict = envelope.verdicts.get(stage)
    return None if verdict is None else read(model, verdict.detail, stage)


def details(envelope: Envelope) -> list[tuple[Verdict, VerdictDetail]]:
    """Every verdict of the envelope with its typed detail."""
    return [(verdict, detail_of(verdict)) for verdict in envelope.verdicts.values()]


def allow_listed(envelope: Envelope) -> bool:
    """Some stage allow-listed the message (SCL -1)."""
    return any(detail.allow_listed(verdict) for verdict, detail in details(envelope))


def decide(envelope: Envelope, policy: Policy) -> Disposition | None:
    """The first Disposition the filter verdicts call for, in the registry's precedence; None when none does."""
    for spec in stages.by_precedence():
        verdict = envelope.verdicts.get(spec.name)
        if verdict is None:
            continue
        found = detail_of(verdict).disposition(verdict, envelope, policy)
        if found is not None:
            return found
    return None


__all__ = ["Disposition", "VerdictDetail", "allow_listed", "decide", "detail_in", "detail_of", "details",
           "model_for", "read"]
