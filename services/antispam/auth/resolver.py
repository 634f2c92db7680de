"""Sender authentication's DNS client is the stages' shared one (``mailmoat_common.dnscache``)."""

from mailmoat_common.dnscache import AnswerCache, DnsAnswer, Resolver
from mailmoat_common.dnscache import CachedResolver as AuthResolver

__all__ = ["AnswerCache", "AuthResolver", "DnsAnswer", "Resolver"]
