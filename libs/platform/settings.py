"""Process configuration from the environment (one prefix, MAILMOAT_); the policy lives in YAML."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from mailmoat_platform import stages


def default_metrics_ports() -> dict[str, int]:
    """Each registry stage's port of /metrics, /healthz and /readyz."""
    return {spec.name: spec.metrics_port for spec in stages.stages()}


DEFAULT_METRICS_PORTS = default_metrics_ports()
"""The registry's metrics ports as they were at import (``MAILMOAT_<NAME>_METRICS_PORT`` overrides)."""
REPO_ROOT = Path(__file__).resolve().parents[2]


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


def _records(value: str) -> str:
    if value not in ("redis", "postgresql"):
        raise ValueError(f"MAILMOAT_RECORDS={value!r}: must be redis or postgresql")
    return value


TOPOLOGIES = ("stages", "colocated")


def _topology(value: str) -> str:
    if value not in TOPOLOGIES:
        raise ValueError(f"MAILMOAT_TOPOLOGY={value!r}: must be stages or colocated")
    return value


def metrics_ports_from_env() -> dict[str, int]:
    """The metrics port of every registry stage: ``MAILMOAT_<NAME>_METRICS_PORT`` or the registry's."""
    ports = {}
    for spec in stages.stages():
        value = os.environ.get(f"MAILMOAT_{spec.name.upper()}_METRICS_PORT")
        ports[spec.name] = int(value) if value else spec.metrics_port
    return ports


@dataclass
class Settings:
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    redis_url: str = "redis://127.0.0.1:6379/0"
    database_url: str = "postgresql://postgres@127.0.0.1:5432/mailmoat"
    """The records database (PostgreSQL): the message trace and the quarantine."""
    records: str = "postgresql"
    """Where the trace and the quarantine are kept: ``postgresql`` (the recorder writes the trace, the
    quarantine is a table; docs/decisions/010) or ``redis`` (everything in Redis memory: a small
    installation without PostgreSQL, or one that has not moved its records yet)."""
    policy_path: str = str(REPO_ROOT / "config" / "policy.example.yaml")
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 2525
    ingress_workers: int = 2
    topology: str = "stages"
    """What ``run all`` starts between ingress and egress: ``stages`` (a process per stage, each on its own
    queue: the shape Kubernetes scales) or ``colocated`` (one ``pipeline`` process running every filter stage
    and routing, handing messages over in memory: a small single-machine installation; decision 012)."""
    tls_cert: str | None = None
    tls_key: str | None = None
    publish_timeout: float = 10.0
    quarantine_gauge_interval: float = 30.0
    """Seconds between routing's reads of the quarantine's size (``mailmoat_quarantine_messages``)."""
    log_format: str = "json"
    log_level: str = "INFO"
    metrics_ports: dict[str, int] = field(default_factory=default_metrics_ports)
    metrics_host: str = "127.0.0.1"
    """Address /metrics, /healthz and /readyz listen on: loopback unless set (the image sets 0.0.0.0,
    so that Prometheus and the kubelet reach them)."""

    @classmethod
    def from_env(cls) -> Settings:
        ports = metrics_ports_from_env()
        return cls(
            amqp_url=_env("MAILMOAT_AMQP_URL", cls.amqp_url),
            redis_url=_env("MAILMOAT_REDIS_URL", cls.redis_url),
            database_url=_env("MAILMOAT_DATABASE_URL", cls.database_url),
            records=_records(_env("MAILMOAT_RECORDS", cls.records)),
            policy_path=_env("MAILMOAT_POLICY", cls.policy_path),
            smtp_host=_env("MAILMOAT_SMTP_HOST", cls.smtp_host),
            smtp_port=int(_env("MAILMOAT_SMTP_PORT", str(cls.smtp_port))),
            ingress_workers=int(_env("MAILMOAT_INGRESS_WORKERS", str(cls.ingress_workers))),
            topology=_topology(_env("MAILMOAT_TOPOLOGY", cls.topology)),
            tls_cert=os.environ.get("MAILMOAT_TLS_CERT") or None,
            tls_key=os.environ.get("MAILMOAT_TLS_KEY") or None,
            publish_timeout=float(_env("MAILMOAT_PUBLISH_TIMEOUT", str(cls.publish_timeout))),
            quarantine_gauge_interval=float(_env("MAILMOAT_QUARANTINE_GAUGE_INTERVAL",
                                                 str(cls.quarantine_gauge_interval))),
            log_format=_env("MAILMOAT_LOG_FORMAT", cls.log_format),
            log_level=_env("MAILMOAT_LOG_LEVEL", cls.log_level),
            metrics_ports=ports,
            metrics_host=_env("MAILMOAT_METRICS_HOST", cls.metrics_host),
        )

    def metrics_port(self, service: str, worker: int = 0) -> int:
        """HTTP port of a service's /metrics, /healthz and /readyz (0: let the OS choose)."""
        base = self.metrics_ports.get(service, 0)
        return base + worker if base else 0
