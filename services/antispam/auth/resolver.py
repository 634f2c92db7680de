"""Sender authentication's DNS client is the stages' shared one (``mailmoat_mail.dnscache``)."""

from mailmoat_mail.dnscache import AnswerCache, DnsAnswer, Resolver
from mailmoat_mail.dnscache import CachedResolver as AuthResolver

__all__ = ["AnswerCache", "AuthResolver", "DnsAnswer", "Resolver"]
