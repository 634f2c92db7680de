"""Series of a Prometheus text exposition as Prometheus stores them, and the series a promtool test
writes (``name{label="value", ...}``), so that the two can be compared label by label."""

from __future__ import annotations

import re
from collections.abc import Iterable

from prometheus_client.parser import text_string_to_metric_families

Labels = frozenset[tuple[str, str]]
Series = tuple[str, Labels]

TARGET_LABELS = frozenset({"job", "instance", "namespace", "pod", "container", "endpoint"})
"""Labels Prometheus (or the Prometheus Operator) attaches to every series of a target."""

_SERIES = re.compile(r"\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(?:\{(.*)\})?\s*")
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:\\.|[^"\\])*)"\s*(?:,|$)')


def scraped(text: str) -> dict[Series, float]:
    """Every sample of an exposition, keyed by name and label set (``_created`` samples left out:
    Prometheus does not store them as series)."""
    samples: dict[Series, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def parse_series(text: str) -> Series:
    """``name{a="b", c="d"}`` as written in a promtool test's ``input_series``."""
    match = _SERIES.fullmatch(text)
    if match is None:
        raise ValueError(f"not a series: {text!r}")
    name, body = match.group(1), (match.group(2) or "").strip()
    labels: list[tuple[str, str]] = []
    position = 0
    while position < len(body):
        label = _LABEL.match(body, position)
        if label is None:
            raise ValueError(f"bad labels in {text!r}")
        labels.append((label.group(1), label.group(2).replace('\\"', '"').replace("\\\\", "\\")))
        position = label.end()
    return name, frozenset(labels)


def own_labels(labels: Labels) -> Labels:
    """The labels the exporting process wrote (target labels removed)."""
    return frozenset((k, v) for k, v in labels if k not in TARGET_LABELS)


def format_series(name: str, labels: Iterable[tuple[str, str]]) -> str:
    body = ", ".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels))
    return f"{name}{{{body}}}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
