"""deploy/grafana/mailmoat.json: well formed, its queries valid PromQL over metrics that exist."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.metrics import known_metric_names, metric_names

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "deploy" / "grafana" / "mailmoat.json"


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def panels() -> list[dict[str, Any]]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def exprs() -> list[str]:
    return [t["expr"] for p in panels() for t in p["targets"]]


def test_dashboard_shape() -> None:
    doc = dashboard()
    assert doc["uid"] == "mailmoat" and doc["title"]
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"]: v for v in doc["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    for panel in panels():
        assert panel["targets"], panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]


def test_panels_do_not_overlap() -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in dashboard()["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells.get((x, y))}"
                cells[x, y] = panel["title"]


def test_queries_read_metrics_the_services_export() -> None:
    known = known_metric_names()
    used: set[str] = set()
    for expr in exprs():
        names = metric_names(expr)
        assert names, expr
        assert names <= known, f"unknown metrics {sorted(names - known)} in {expr}"
        used |= names
    for required in ("mailmoat_messages_total", "mailmoat_processing_seconds_bucket", "rabbitmq_queue_messages_ready",
                     "mailmoat_smtp_replies_total", "mailmoat_deliveries_total"):
        assert required in used, required


def test_queries_are_valid_promql(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian package prometheus)")
    rules = [{"record": f"dashboard:query{i}", "expr": re.sub(r"\$__\w+", "5m", e)} for i, e in enumerate(exprs())]
    path = tmp_path / "queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    path.write_text(yaml.safe_dump({"groups": [{"name": "d", "rules": [{"record": "r", "expr": "sum(rate(x[5m]"}]}]}))
    assert subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, timeout=120).returncode != 0


@pytest.mark.parametrize("metric, by", [("mailmoat_queue_wait_seconds", "stage"),
                                        ("mailmoat_accept_to_delivery_seconds", "destination")])
def test_latency_panels_show_p50_and_p99(metric: str, by: str) -> None:
    """Queue wait per stage and accept-to-delivery latency each have a panel with their p50 and p99."""
    quantiles = set()
    for expr in exprs():
        match = re.fullmatch(rf"histogram_quantile\((0\.\d+), sum by \({by}, le\) \(rate\({metric}_bucket\[\S+\]\)\)\)",
                             expr)
        if match:
            quantiles.add(match.group(1))
    assert {"0.5", "0.99"} <= quantiles, (metric, quantiles)


def test_quarantine_size_panels() -> None:
    """Messages and bytes held in the quarantine, by reason, as one quarantine (max over replicas)."""
    for metric in ("mailmoat_quarantine_messages", "mailmoat_quarantine_bytes"):
        assert f"max by (reason) ({metric})" in exprs(), metric
