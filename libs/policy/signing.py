"""``dkim``, ``arc`` and ``srs``: signing, sealing and sender rewriting of mail the gateway passes on."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from mailmoat_policy.base import StrictModel

_SELECTOR = re.compile(r"^(?!-)[A-Za-z0-9_-]{1,63}(?<!-)(?:\.(?!-)[A-Za-z0-9_-]{1,63}(?<!-))*$")


class DkimKey(StrictModel):
    """One signing key of a domain: ``<selector>._domainkey.<domain>`` publishes its public half."""

    selector: str
    key_file: str
    """PEM private key (``mailmoat dkim keygen`` writes one; a k8s Secret can mount it)."""
    algorithm: Literal["rsa", "ed25519"] = "rsa"
    """``rsa`` (rsa-sha256, RFC 6376) or ``ed25519`` (ed25519-sha256, RFC 8463)."""

    @field_validator("selector")
    @classmethod
    def _selector(cls, value: str) -> str:
        if not _SELECTOR.match(value):
            raise ValueError(f"{value!r} is not a DKIM selector (DNS labels)")
        return value.lower()


class DkimDomain(StrictModel):
    domain: str
    """An accepted domain: mail whose From is at this domain is signed with every key listed."""
    keys: list[DkimKey] = Field(min_length=1)

    @field_validator("domain")
    @classmethod
    def _lower(cls, value: str) -> str:
        return value.strip().lower().rstrip(".")

    @model_validator(mode="after")
    def _distinct(self) -> DkimDomain:
        selectors = [k.selector for k in self.keys]
        if len(set(selectors)) != len(selectors):
            raise ValueError(f"{self.domain}: a selector is listed twice")
        return self


class Dkim(StrictModel):
    """DKIM signing of the organisation's outbound mail (docs/policy.md, ``dkim``)."""

    domains: list[DkimDomain] = Field(default_factory=list)

    def keys_for(self, domain: str) -> list[DkimKey]:
        domain = domain.lower().rstrip(".")
        return next((d.keys for d in self.domains if d.domain == domain), [])


class Arc(StrictModel):
    """ARC sealing (RFC 8617) of inbound mail the gateway changed or forwards (docs/policy.md, ``arc``)."""

    domain: str | None = None
    selector: str | None = None
    key_file: str | None = None
    """PEM RSA private key (dkimpy seals with rsa-sha256 only)."""

    @model_validator(mode="after")
    def _complete(self) -> Arc:
        given = [v is not None for v in (self.domain, self.selector, self.key_file)]
        if any(given) and not all(given):
            raise ValueError("arc needs domain, selector and key_file together")
        if self.domain is not None:
            self.domain = self.domain.strip().lower().rstrip(".")
        if self.selector is not None and not _SELECTOR.match(self.selector):
            raise ValueError(f"{self.selector!r} is not a DKIM selector (DNS labels)")
        return self

    @property
    def enabled(self) -> bool:
        return self.key_file is not None


class Srs(StrictModel):
    """Sender Rewriting Scheme for outside senders' mail forwarded to outside recipients (``srs``)."""

    domain: str | None = None
    """The domain of the rewritten senders (``SRS0=...@domain``); its bounces come back to the gateway."""
    secret_file: str | None = None
    """Secrets, one per line: the first signs, every one verifies (rotation)."""
    max_age_days: int = Field(21, ge=1, le=1000)
    """Days an SRS address is accepted back (postsrsd: 21)."""

    @model_validator(mode="after")
    def _complete(self) -> Srs:
        if (self.domain is None) != (self.secret_file is None):
            raise ValueError("srs needs domain and secret_file together")
        if self.domain is not None:
            self.domain = self.domain.strip().lower().rstrip(".")
        return self

    @property
    def enabled(self) -> bool:
        return self.domain is not None
