"""The policy document: its sections, and the checks and derivations that span sections."""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from mailmoat_policy.antimalware import Antimalware
from mailmoat_policy.antispam import Antispam
from mailmoat_policy.base import StrictModel
from mailmoat_policy.connection_filter import ConnectionFilter
from mailmoat_policy.connectors import Connectors
from mailmoat_policy.limits import Delivery, Dns, Limits, Trace
from mailmoat_policy.networks import IpSet, client_address
from mailmoat_policy.organization import AcceptedDomain, Organization, RouteConfig
from mailmoat_policy.outbound import Outbound
from mailmoat_policy.pipeline import Pipeline
from mailmoat_policy.quarantine import Quarantine
from mailmoat_policy.rules import MailFlowRule, check_rules
from mailmoat_policy.signing import Arc, Dkim, Srs


class Policy(StrictModel):
    organization: Organization = Field(default_factory=Organization)
    accepted_domains: list[AcceptedDomain] = Field(default_factory=list)
    directory: list[str] = Field(default_factory=list)
    routes: dict[str, RouteConfig] = Field(default_factory=dict)
    outbound: Outbound = Field(default_factory=Outbound)
    limits: Limits = Field(default_factory=Limits)
    delivery: Delivery = Field(default_factory=Delivery)
    dns: Dns = Field(default_factory=Dns)
    trace: Trace = Field(default_factory=Trace)
    pipeline: Pipeline = Field(default_factory=Pipeline)
    connection_filter: ConnectionFilter = Field(default_factory=ConnectionFilter)
    antimalware: Antimalware = Field(default_factory=Antimalware)
    antispam: Antispam = Field(default_factory=Antispam)
    quarantine: Quarantine = Field(default_factory=Quarantine)
    connectors: Connectors = Field(default_factory=Connectors)
    rules: list[MailFlowRule] = Field(default_factory=list)
    dkim: Dkim = Field(default_factory=Dkim)
    arc: Arc = Field(default_factory=Arc)
    srs: Srs = Field(default_factory=Srs)

    @model_validator(mode="after")
    def _identities_named(self) -> Policy:
        """Every ``outbound.per_route`` key names a route, an outbound connector, or ``mx``."""
        known = {"mx", *(f"route:{n}" for n in self.routes), *(f"connector:{c.name}" for c in self.connectors.outbound)}
        for key in self.outbound.per_route:
            if key not in known:
                raise ValueError(f"outbound.per_route.{key}: no such route (route:NAME, connector:NAME or mx)")
        return self

    @model_validator(mode="after")
    def _dkim_ours(self) -> Policy:
        """DKIM signs only for the organisation's domains."""
        for index, entry in enumerate(self.dkim.domains):
            if self.accepted_domain(entry.domain) is None:
                raise ValueError(f"dkim.domains.{index}.domain: {entry.domain!r} is not an accepted domain")
        return self

    @field_validator("directory")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        for address in value:
            if "@" not in address:
                raise ValueError(f"directory entry {address!r} is not an address")
        return [a.strip().lower() for a in value]

    @model_validator(mode="after")
    def _routes_exist(self) -> Policy:
        for index, domain in enumerate(self.accepted_domains):
            if domain.route is not None and domain.route not in self.routes:
                raise ValueError(
                    f"accepted_domains.{index}.route: no route named {domain.route!r} under routes"
                )
        return self

    @model_validator(mode="after")
    def _rules_consistent(self) -> Policy:
        check_rules(self.rules, self.connectors)
        return self

    @model_validator(mode="after")
    def _partner_allow_list(self) -> Policy:
        """Partner connectors with ``allow_list`` add their IPs to the connection filter's allow list."""
        partner = [ip for c in self.connectors.inbound if c.allow_list for ip in c.sender_ips]
        if partner:
            self.connection_filter._allow = IpSet.of([*self.connection_filter.ip_allow, *partner])
        return self

    def accepted_domain(self, domain: str) -> AcceptedDomain | None:
        """The accepted-domain entry for ``domain`` (exact match, case-insensitive)."""
        domain = domain.lower().rstrip(".")
        for entry in self.accepted_domains:
            if entry.domain == domain:
                return entry
        return None

    def in_directory(self, address: str) -> bool:
        return address.lower() in self._directory_set()

    def _directory_set(self) -> frozenset[str]:
        cached = self.__dict__.get("_dirset")
        if cached is None:
            cached = frozenset(self.directory)
            self.__dict__["_dirset"] = cached
        return cached

    def is_internal(self, ip: str) -> bool:
        """Whether ``ip`` is one of the organisation's own servers."""
        address = client_address(ip)
        return address is not None and any(address in net for net in self.organization.internal_networks)
