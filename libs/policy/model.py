"""The policy document: its sections, and the checks and derivations that span sections."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, PrivateAttr, ValidationError, field_validator, model_validator

from mailmoat_platform.stages import StageSpec
from mailmoat_policy import registry
from mailmoat_policy.antimalware import Antimalware
from mailmoat_policy.antispam import Antispam
from mailmoat_policy.base import StrictModel
from mailmoat_policy.connection_filter import ConnectionFilter
from mailmoat_policy.connectors import Connectors
from mailmoat_policy.limits import Delivery, Dns, Limits, Trace
from mailmoat_policy.networks import client_address
from mailmoat_policy.organization import AcceptedDomain, Organization, RouteConfig
from mailmoat_policy.outbound import Outbound
from mailmoat_policy.pipeline import Pipeline
from mailmoat_policy.quarantine import Quarantine
from mailmoat_policy.rules import MailFlowRule
from mailmoat_policy.signing import Arc, Dkim, Srs


class Policy(StrictModel):
    """The whole policy. Each section validates itself; what spans sections (names one section gives
    that another uses, values one section derives for another) is checked and derived here.

    A filter stage of the registry whose section is not a field below (its model lives in the stage's
    package) is a top-level key too: validated by that model when the policy is, and read as
    ``policy.<section>`` (the model's defaults when the policy leaves it out). A filter stage's section
    model may define ``check_policy(self, policy)`` for checks across the policy (``ValueError`` refuses
    it); it is called once the whole policy has validated.
    """

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
    _stage_sections: dict[str, BaseModel] = PrivateAttr(default_factory=dict)

    @model_validator(mode="wrap")
    @classmethod
    def _with_stage_sections(cls, data: Any, handler: Any) -> Policy:
        """Take out the sections of registry stages that are not fields, validate the rest, then those;
        then the stages' checks across the policy (``registry.check_sections``)."""
        if not isinstance(data, dict):
            return handler(data)
        stages = registry.section_stages(cls.model_fields)
        given = {key: value for key, value in data.items() if key in stages}
        failed: ValidationError | None = None
        try:
            policy = handler({key: value for key, value in data.items() if key not in given})
        except ValidationError as exc:
            failed = exc
        types, errors = registry.section_types({key: stages[key] for key in given})
        sections, section_errors = registry.validated(given, types)
        errors += section_errors
        if failed is not None:
            if not errors:
                raise failed
            errors = [*registry.errors_under(failed), *errors]
        registry.raise_errors(cls.__name__, errors)
        policy._stage_sections = sections
        registry.raise_errors(cls.__name__, registry.check_sections(policy, cls.model_fields, sections))
        return policy

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name.startswith("_"):
                raise
            return self.stage_section(name)

    def stage_section(self, section: str) -> BaseModel:
        """The validated policy section of a filter stage by its key (``policy_section`` in the registry):
        a field of this model, or the section of a stage whose model lives in its own package (its
        defaults when the policy does not have it). AttributeError for a key no filter stage has."""
        if section in type(self).model_fields:
            return getattr(self, section)
        sections = self._stage_sections
        if section not in sections:
            spec: StageSpec | None = registry.section_stages(type(self).model_fields).get(section)
            if spec is None:
                raise AttributeError(f"{type(self).__name__!r} object has no attribute {section!r}")
            sections[section] = registry.default_section(spec)
        return sections[section]

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
        """Rule names are unique; a connector a rule routes to exists."""
        seen: dict[str, int] = {}
        for index, rule in enumerate(self.rules):
            if rule.name in seen:
                raise ValueError(f"rules.{index}.name: {rule.name!r} is already the name of rules.{seen[rule.name]}")
            seen[rule.name] = index
            target = rule.actions.route_to_connector
            if target is not None and self.connectors.outbound_named(target) is None:
                raise ValueError(f"rules.{index}.actions.route_to_connector: no outbound connector named {target!r}")
        return self

    @model_validator(mode="after")
    def _partner_allow_list(self) -> Policy:
        """Partner connectors with ``allow_list`` add their IPs to the connection filter's allow list."""
        self.connection_filter.allow_also(ip for c in self.connectors.inbound if c.allow_list for ip in c.sender_ips)
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
