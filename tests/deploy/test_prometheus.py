"""deploy/prometheus: promtool's checks and unit tests of the alerts, and that the alerts read metrics
that exist."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.deploy.metrics import known_metric_names, metric_names

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS = REPO / "deploy" / "prometheus"


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool is not installed (Debian package prometheus)")
    return path


def run_promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *args], capture_output=True, text=True, timeout=120, cwd=PROMETHEUS)


def alerts() -> list[dict[str, object]]:
    rules = yaml.safe_load((PROMETHEUS / "rules.yml").read_text())
    return [rule for group in rules["groups"] for rule in group["rules"]]


def test_promtool_check_rules() -> None:
    result = run_promtool("check", "rules", "rules.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_check_config() -> None:
    result = run_promtool("check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_test_rules() -> None:
    result = run_promtool("test", "rules", "rules_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_test_rules_can_fail(tmp_path: Path) -> None:
    """The unit tests notice a changed threshold."""
    (tmp_path / "rules.yml").write_text((PROMETHEUS / "rules.yml").read_text().replace("> 200", "> 400"))
    (tmp_path / "rules_test.yml").write_text((PROMETHEUS / "rules_test.yml").read_text())
    result = subprocess.run([promtool(), "test", "rules", "rules_test.yml"], capture_output=True, text=True,
                            timeout=120, cwd=tmp_path)
    assert result.returncode != 0
    assert "MailmoatRetryBacklogHigh" in result.stdout + result.stderr


def test_every_alert_is_tested_firing() -> None:
    tests = yaml.safe_load((PROMETHEUS / "rules_test.yml").read_text())
    fired = {case["alertname"] for test in tests["tests"] for case in test.get("alert_rule_test", [])
             if case.get("exp_alerts")}
    quiet = {case["alertname"] for test in tests["tests"] for case in test.get("alert_rule_test", [])
             if not case.get("exp_alerts")}
    names = {rule["alert"] for rule in alerts()}
    assert names - fired == set(), "alerts never tested firing"
    assert names - quiet == set(), "alerts never tested staying quiet"


def test_alerts_are_documented_and_graded() -> None:
    for rule in alerts():
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]  # type: ignore[index]
        assert {"summary", "description"} <= set(rule["annotations"]), rule["alert"]  # type: ignore[arg-type]


def test_every_alert_links_its_runbook() -> None:
    """``runbook_url`` names docs/runbooks/<alert>.md, which exists and says what to look at and do."""
    for rule in alerts():
        name = str(rule["alert"])
        assert rule["annotations"]["runbook_url"] == f"docs/runbooks/{name}.md", name  # type: ignore[index]
        text = (REPO / "docs" / "runbooks" / f"{name}.md").read_text()
        assert text.startswith(f"# {name}\n"), name
        for heading in ("## What it means", "## What to look at", "## What to do"):
            assert heading in text, (name, heading)


def test_alerts_read_metrics_that_exist() -> None:
    known = known_metric_names()
    for rule in alerts():
        names = metric_names(str(rule["expr"]))
        assert names, rule["alert"]
        assert names <= known, f"{rule['alert']}: unknown metrics {sorted(names - known)}"


def test_the_required_alerts_exist() -> None:
    exprs = {str(rule["alert"]): str(rule["expr"]) for rule in alerts()}
    assert 'queue="mailmoat.dead"' in exprs["MailmoatDeadLetterQueueNotEmpty"]
    assert "rabbitmq_queue_messages_ready" in exprs["MailmoatStageBacklogGrowing"]
    assert "mailmoat_deliveries_total" in exprs["MailmoatDeliveryFailureRatioHigh"]
    assert 'result="deferred"' in exprs["MailmoatIngressBrokerErrors"]  # not code="451": greylisting answers 451
    assert 'result="accepted"' in exprs["MailmoatNoMailReceived"]


def test_service_down_matches_compose_and_operator_job_names() -> None:
    """Compose names its jobs mailmoat-<service>; a PodMonitor's job is <namespace>/<podmonitor>."""
    (rule,) = [r for r in alerts() if r["alert"] == "MailmoatServiceDown"]
    pattern = re.search(r'job=~"([^"]+)"', str(rule["expr"])).group(1)  # type: ignore[union-attr]
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    jobs = [job["job_name"] for job in config["scrape_configs"]]
    for job in [*jobs, "mailmoat/mailmoat-routing", "node-exporter", "kube-state-metrics"]:
        assert bool(re.fullmatch(pattern, job)) == ("mailmoat" in job), job


def test_metric_name_extraction() -> None:
    assert metric_names('sum by (queue) (rate(a_total{x="y(z)"}[5m] offset 1h)) / on (q) group_left b') == {"a_total",
                                                                                                            "b"}
    assert metric_names("histogram_quantile(0.9, sum by (le) (rate(h_bucket[$__rate_interval])))") == {"h_bucket"}
    with pytest.raises(ValueError, match="unknown PromQL function"):
        metric_names("made_up(x)")
    assert "mailmoat_not_a_metric_total" not in known_metric_names()
