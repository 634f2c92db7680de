"""The policy: one YAML file, validated at load, hot-reloaded; a bad edit keeps the last good policy.

One module per section (``organization``, ``outbound``, ``signing``, ``limits``, ``connection_filter``,
``antimalware``, ``antispam``, ``quarantine``, ``pipeline``, ``connectors``, ``rules``), the document
that holds them and checks across them (``model``), and loading and hot reload (``loading``). Every
public name is importable from ``mailmoat_policy`` itself.
"""

from __future__ import annotations

from mailmoat_policy.antimalware import COMMON_ATTACHMENT_TYPES, Antimalware, ArchiveLimits
from mailmoat_policy.antispam import (
    AdvancedSpamFilter,
    Antispam,
    AsfMode,
    Bayes,
    Impersonation,
    ProtectedUser,
    SpamAction,
    SpamActions,
    SpamCategory,
    SpamEngines,
    SpamRule,
    UriblZone,
)
from mailmoat_policy.base import StrictModel, header_name, one_line, regexes, rule_values
from mailmoat_policy.connection_filter import ConnectionFilter, DnsblZone, Greylisting, ProxyProtocol, RateLimits
from mailmoat_policy.connectors import Connectors, InboundConnector, OutboundConnector
from mailmoat_policy.domains import domain_matches, domain_patterns
from mailmoat_policy.limits import MAX_LINE_OCTETS, Delivery, Dns, Limits, Trace
from mailmoat_policy.loading import PolicyError, PolicyHolder, load_policy, parse_policy
from mailmoat_policy.model import Policy
from mailmoat_policy.networks import IpSet, client_address, parse_networks, parse_range
from mailmoat_policy.organization import AcceptedDomain, Organization, RouteConfig
from mailmoat_policy.outbound import (
    Dane,
    MtaStsHandling,
    Outbound,
    OutboundIdentity,
    OutboundRoute,
    TlsRpt,
    resolver_address,
    stronger_tls,
)
from mailmoat_policy.pipeline import Pipeline
from mailmoat_policy.quarantine import Quarantine, QuarantineRetention
from mailmoat_policy.rule_actions import Disclaimer, NotifySender, RejectAction, RuleActions
from mailmoat_policy.rule_conditions import RULE_VERDICTS, HeaderPatterns, HeaderWords, RuleConditions
from mailmoat_policy.rules import MailFlowRule
from mailmoat_policy.signing import Arc, Dkim, DkimDomain, DkimKey, Srs

__all__ = [
    "COMMON_ATTACHMENT_TYPES",
    "MAX_LINE_OCTETS",
    "RULE_VERDICTS",
    "AcceptedDomain",
    "AdvancedSpamFilter",
    "Antimalware",
    "Antispam",
    "Arc",
    "ArchiveLimits",
    "AsfMode",
    "Bayes",
    "ConnectionFilter",
    "Connectors",
    "Dane",
    "Delivery",
    "Disclaimer",
    "Dkim",
    "DkimDomain",
    "DkimKey",
    "Dns",
    "DnsblZone",
    "Greylisting",
    "HeaderPatterns",
    "HeaderWords",
    "Impersonation",
    "InboundConnector",
    "IpSet",
    "Limits",
    "MailFlowRule",
    "MtaStsHandling",
    "NotifySender",
    "Organization",
    "Outbound",
    "OutboundConnector",
    "OutboundIdentity",
    "OutboundRoute",
    "Pipeline",
    "Policy",
    "PolicyError",
    "PolicyHolder",
    "ProtectedUser",
    "ProxyProtocol",
    "Quarantine",
    "QuarantineRetention",
    "RateLimits",
    "RejectAction",
    "RouteConfig",
    "RuleActions",
    "RuleConditions",
    "SpamAction",
    "SpamActions",
    "SpamCategory",
    "SpamEngines",
    "SpamRule",
    "Srs",
    "StrictModel",
    "TlsRpt",
    "Trace",
    "UriblZone",
    "client_address",
    "domain_matches",
    "domain_patterns",
    "header_name",
    "load_policy",
    "one_line",
    "parse_networks",
    "parse_policy",
    "parse_range",
    "regexes",
    "resolver_address",
    "rule_values",
    "stronger_tls",
]
