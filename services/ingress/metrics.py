"""Prometheus metrics of the SMTP ingress."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

SMTP_REPLIES = Counter("mailmoat_smtp_replies_total", "SMTP replies sent, by reply code.", ["code"])
SMTP_SESSIONS = Gauge("mailmoat_smtp_sessions", "Open SMTP sessions in this process.")
INGRESS_MESSAGES = Counter(
    "mailmoat_ingress_messages_total",
    "Messages at the end of DATA, by result (accepted, rejected, deferred).",
    ["result"],
)
ACCEPT_SECONDS = Histogram(
    "mailmoat_ingress_accept_seconds",
    "Time from the end of DATA to the reply (checks, publish with broker confirm).",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
RATE_LIMITED = Counter(
    "mailmoat_ingress_rate_limited_total",
    "Connections, messages or recipients refused over a per-client rate limit.",
    ["limit"],
)
LIMIT_ERRORS = Counter(
    "mailmoat_ingress_limit_errors_total",
    "Rate limit or greylisting checks skipped because Redis failed or was slow (the client went through).",
    ["check"],
)
GREYLIST = Counter(
    "mailmoat_ingress_greylist_total",
    "Greylisting decisions at RCPT TO (deferred, passed, known).",
    ["result"],
)
PROXY_HEADERS = Counter(
    "mailmoat_ingress_proxy_total",
    "PROXY protocol headers: accepted from trusted peers, dropped (missing or malformed), refused (untrusted).",
    ["result"],
)
