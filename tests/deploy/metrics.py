"""Which metric names exist: those the mailmoat packages register with prometheus_client, those of
RabbitMQ's Prometheus plugin that the alerts and the dashboard use, and Prometheus's own ``up``;
and which metric names a PromQL expression reads."""

from __future__ import annotations

import importlib
import pkgutil
import re
import runpy
from pathlib import Path

from prometheus_client import REGISTRY

REPO = Path(__file__).resolve().parents[2]
_SETUP = runpy.run_path(str(REPO / "setup.py"), run_name="setup")
PACKAGES = _SETUP["packages"](_SETUP["package_dirs"]())

# RabbitMQ's Prometheus plugin, per-object endpoint (deps/rabbitmq_prometheus, metrics.md).
RABBITMQ_METRICS = frozenset({
    "rabbitmq_queue_messages",
    "rabbitmq_queue_messages_ready",
    "rabbitmq_queue_messages_unacked",
    "rabbitmq_queue_consumers",
})
# redis_exporter beside each Redis node.
REDIS_EXPORTER_METRICS = frozenset({"redis_up", "redis_memory_used_bytes", "redis_memory_max_bytes",
                                    "redis_connected_clients"})
# kube-state-metrics (the synthetic probe's CronJob).
KUBE_STATE_METRICS = frozenset({"kube_cronjob_info", "kube_cronjob_status_last_successful_time"})
# Series Prometheus adds to every scrape.
PROMETHEUS_METRICS = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped"})

SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "gauge": ("",),
    "info": ("_info",),
}

FUNCTIONS = frozenset({
    "abs", "absent", "absent_over_time", "avg_over_time", "ceil", "changes", "clamp", "clamp_max", "clamp_min",
    "count_over_time", "day_of_month", "day_of_week", "day_of_year", "days_in_month", "delta", "deriv", "exp",
    "floor", "histogram_quantile", "holt_winters", "hour", "idelta", "increase", "irate", "label_join",
    "label_replace", "last_over_time", "ln", "log10", "log2", "max_over_time", "min_over_time", "minute", "month",
    "predict_linear", "present_over_time", "quantile_over_time", "rate", "resets", "round", "scalar", "sgn",
    "sort", "sort_desc", "sqrt", "stddev_over_time", "stdvar_over_time", "sum_over_time", "time", "timestamp",
    "vector", "year",
    # aggregation operators
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk", "quantile",
})
KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left",
                      "group_right", "inf", "nan", "atan2"})


def exported_metric_names() -> set[str]:
    """Every sample name the mailmoat packages (setup.py's list) can expose on /metrics, with all
    their modules imported."""
    for name in PACKAGES:
        package = importlib.import_module(name)
        for sub in pkgutil.walk_packages(package.__path__, f"{name}."):
            importlib.import_module(sub.name)
    names: set[str] = set()
    for family in REGISTRY.collect():
        names |= {family.name + suffix for suffix in SUFFIXES.get(family.type, ("",))}
    return names


def known_metric_names() -> set[str]:
    return (exported_metric_names() | RABBITMQ_METRICS | REDIS_EXPORTER_METRICS | KUBE_STATE_METRICS
            | PROMETHEUS_METRICS)


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (Grafana's ``$__variables`` allowed)."""
    text = re.sub(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`', '""', expr)
    text = re.sub(r"\$\{?\w+\}?", "5m", text)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.])[a-zA-Z_:][a-zA-Z0-9_:]*", text):
        token = match.group()
        called = text[match.end():].lstrip().startswith("(")
        if token in KEYWORDS:
            continue
        if called:
            if token not in FUNCTIONS:
                raise ValueError(f"unknown PromQL function {token!r} in {expr!r}")
            continue
        names.add(token)
    return names
