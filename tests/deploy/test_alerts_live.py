"""The alerts against what the services really export: the gateway runs as processes (ingress,
routing, egress) against the real RabbitMQ and Redis, mail goes through it (greylisted, refused,
delivered, bounced, deferred; a bad policy refused; at the end the broker cut away from ingress, so
one message cannot be queued), and its /metrics are scraped.

- every series the hand-written promtool tests (deploy/prometheus/rules_test.yml) feed to a mailmoat
  metric carries a label set the live run exported (``le="21600"`` where the exposition says
  ``le="21600.0"`` fails here);
- the scraped series themselves, the run's traffic repeated every minute, go through promtool: the
  alerts that fire are exactly the ones that traffic should fire (greylisting's 451 4.7.1 is not a
  broker error), and shaped as old deferred mail they fire MailmoatDeferredMailOld.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import yaml

from mailmoat_platform.stages import filter_names
from tests.deploy.exposition import Labels, Series, format_series, own_labels, parse_series, scraped
from tests.deploy.metrics import exported_metric_names, metric_names
from tests.e2e.test_mail_flow import message, send
from tests.support.gateway import Gateway
from tests.support.infra import RABBITMQ_PORT, REDIS_TEST_URL, amqp_url_for, create_vhost, delete_vhost
from tests.support.sink import SmtpSink
from tests.support.tcpproxy import TcpProxy

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS = REPO / "deploy" / "prometheus"
SERVICES = ("ingress", "routing", "egress", "recorder")
REDIS_URL = REDIS_TEST_URL.rsplit("/", 1)[0] + "/13"
"""A database of its own: other tests flush theirs while this run's greylisting waits on its triples."""

POLICY = """
organization:
  hostname: gw.mailmoat.test
accepted_domains:
  - domain: example.com
    route: onprem
  - domain: strict.example.com
    dbeb: true
    route: onprem
directory: [alice@strict.example.com]
routes:
  onprem:
    hosts: ["127.0.0.1:{sink_port}"]
    tls: none
connection_filter:
  greylisting: {{enabled: true, delay: 1}}
delivery:
  retry_delays: [1, 2]
  expire_after: 600
pipeline:
  route_at_ingress: false
rules:
  - name: hold
    conditions:
      subject_contains: [test 6]
    actions:
      quarantine: true
"""

UNSEEN: dict[tuple[str, str, str], str] = {
    ("mailmoat_messages_total", "outcome", "error"): "only on a stage's unexpected error",
    ("mailmoat_messages_total", "outcome", "retry"): "only while a dependency fails",
    ("mailmoat_deliveries_total", "result", "expired"): "only after delivery.expire_after",
    ("mailmoat_quarantine_messages", "reason", "spam"): "the filter stages are not run: only a rule holds",
    ("mailmoat_quarantine_messages", "reason", "malware"): "the filter stages are not run: only a rule holds",
    ("mailmoat_quarantine_bytes", "reason", "spam"): "the filter stages are not run: only a rule holds",
    ("mailmoat_quarantine_bytes", "reason", "malware"): "the filter stages are not run: only a rule holds",
}
"""Label values the live run does not produce, with the reason; any other label set in the
hand-written tests must be one the run exported."""

STAGES_NOT_RUN = frozenset(filter_names())
"""Filter stages the live run does not start: they count through the same Runtime code as routing, so
their ``service`` label is compared as routing's."""

NOT_SCRAPED = {
    "mailmoat_dependency_up": "the filter stages' dependencies (clamd, DNS) are not run here",
    "mailmoat_clamd_signature_age_seconds": "the antivirus stage is not run here",
    "mailmoat_stage_errors_total": "only on a filter stage's unexpected error (filter stages are not run here)",
}
"""Metrics of the services the live run does not scrape: their label names are checked against the
registry instead."""


def _wait(condition, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            raise AssertionError(f"not seen within {timeout}s: {what}")
        time.sleep(0.05)


def _value(samples: dict[Series, float], name: str, **labels: str) -> float:
    return sum(v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= ls)


@pytest.fixture(scope="module")
def live() -> Iterator[dict[str, dict[Series, float]]]:
    """Each service's scraped samples after the run's traffic."""
    vhost = create_vhost()
    store = redis.Redis.from_url(REDIS_URL)
    store.flushdb()
    tmp = Path(__import__("tempfile").mkdtemp(prefix="mailmoat-alerts-"))
    # Ingress reaches the broker through a proxy the run cuts at the end (a real queueing failure).
    with SmtpSink(pipelining=True) as sink, TcpProxy(RABBITMQ_PORT) as broker:
        gateway = Gateway(tmp / "ingress", amqp_url_for(vhost, port=broker.port), REDIS_URL,
                          policy_text=POLICY.format(sink_port=sink.port),
                          extra_env={"MAILMOAT_PUBLISH_TIMEOUT": "1"})
        stages = Gateway(tmp / "stages", amqp_url_for(vhost), REDIS_URL, gateway.policy)
        owner = {"ingress": gateway, "routing": stages, "egress": stages, "recorder": stages}
        try:
            gateway.start(("ingress",), recorder=False)
            stages.start(("routing", "egress"))  # and the recorder, which writes the trace to PostgreSQL
            sink.reply_to("gone@example.com", "550 5.1.1 No such user")
            sink.reply_to("later@example.com", "451 4.2.0 Try again later")
            sends = [("s@example.org", ["alice@example.com"]), ("bounce@example.com", ["gone@example.com"]),
                     ("s@example.org", ["later@example.com"])]
            greylisted = time.monotonic()
            for n, (sender, rcpts) in enumerate(sends):  # first attempts: greylisted
                assert send(gateway.smtp_port, sender, rcpts, message(n))[0] == 451
            assert send(gateway.smtp_port, "s@example.org", ["bob@strict.example.com"], message(9))[0] == 550
            gateway.write_policy("accepted_domains: not a list\n")  # refused while greylisting waits

            def reloads(result: str) -> bool:
                return all(_value(scraped(owner[s].metrics(s)), "mailmoat_policy_reloads_total", result=result)
                           for s in SERVICES)

            _wait(lambda: reloads("refused"), 10, "the bad policy refused by every service")
            gateway.write_policy(POLICY.format(sink_port=sink.port))
            time.sleep(max(0.0, greylisted + 2.05 - time.monotonic()))  # the delay counts whole seconds
            for n, (sender, rcpts) in enumerate(sends):
                code, reply = send(gateway.smtp_port, sender, rcpts, message(n))
                assert code == 250, reply
            too_long = message(5, b"X-Long: " + b"x" * 1000 + b"\r\n")  # refused at the end of DATA
            assert send(gateway.smtp_port, "s@example.org", ["alice@example.com"], too_long)[0] == 554

            def egress() -> dict[Series, float]:
                return scraped(stages.metrics("egress"))

            _wait(lambda: _value(egress(), "mailmoat_deliveries_total", result="delivered") >= 2
                  and _value(egress(), "mailmoat_deliveries_total", result="failed") >= 1
                  and _value(egress(), "mailmoat_deferred_age_seconds_count") >= 1,
                  20, "delivered, failed (and its DSN delivered) and deferred at egress")
            held = send(gateway.smtp_port, "s@example.org", ["alice@example.com"], message(6))  # the rule holds it
            assert held[0] == 250, held
            _wait(lambda: _value(scraped(stages.metrics("routing")), "mailmoat_quarantine_messages",
                                 reason="rule") == 1, 10, "the held message counted in the quarantine's size")
            _wait(lambda: reloads("ok"), 10, "the good policy loaded again by every service")
            broker.cut()
            code, reply = send(gateway.smtp_port, "s@example.org", ["alice@example.com"], message(7))
            assert code == 451 and reply.startswith("4.3.0"), reply
            yield {service: scraped(owner[service].metrics(service)) for service in SERVICES}
        finally:
            gateway.stop()
            stages.stop()
            delete_vhost(vhost)
            store.flushdb()
            store.close()
            shutil.rmtree(tmp, ignore_errors=True)


def _label_sets(live: dict[str, dict[Series, float]]) -> dict[str, set[Labels]]:
    sets: dict[str, set[Labels]] = {}
    for samples in live.values():
        for name, labels in samples:
            sets.setdefault(name, set()).add(labels)
    return sets


def _registered_label_names() -> dict[str, set[frozenset[str]]]:
    from prometheus_client import REGISTRY

    exported_metric_names()  # imports every module, so every metric is registered
    names: dict[str, set[frozenset[str]]] = {}
    for family in REGISTRY.collect():
        for collector_name in (family.name, *(family.name + s for s in ("_total", "_bucket", "_count", "_sum"))):
            names.setdefault(collector_name, set())
    for collector in list(REGISTRY._collector_to_names):
        label_names = frozenset(getattr(collector, "_labelnames", ()))
        for name in REGISTRY._collector_to_names[collector]:
            names.setdefault(name, set()).add(label_names | ({"le"} if name.endswith("_bucket") else set()))
    return names


def test_hand_written_rule_tests_use_exported_label_sets(live: dict[str, dict[Series, float]]) -> None:
    real = _label_sets(live)
    registered = _registered_label_names()
    exported = exported_metric_names()
    tests = yaml.safe_load((PROMETHEUS / "rules_test.yml").read_text())
    checked = 0
    for test in tests["tests"]:
        for item in test.get("input_series", []):
            name, labels = parse_series(item["series"])
            if name not in exported:
                continue
            labels = frozenset((k, "routing" if k == "service" and v in STAGES_NOT_RUN else v)
                               for k, v in own_labels(labels))
            checked += 1
            if name in NOT_SCRAPED:
                assert frozenset(k for k, _ in labels) in registered[name], (test["name"], item["series"])
                continue
            assert name in real, f"{test['name']}: {name} was not exported by the live run"
            if labels in real[name]:
                continue
            unseen = [(k, v) for k, v in labels if (name, k, v) in UNSEEN]
            shapes = {frozenset(k for k, _ in ls) for ls in real[name]}
            assert unseen and frozenset(k for k, _ in labels) in shapes, (
                f"{test['name']}: {item['series']} is not a series the services export; "
                f"they export {sorted(format_series(name, ls) for ls in real[name])[:6]}")
    assert checked > 20


def _input_series(live: dict[str, dict[Series, float]], names: set[str],
                  shape=lambda name, labels, value: f"{value:g}+{value:g}x60") -> list[dict[str, str]]:  # type: ignore[no-untyped-def]
    """The scraped samples of ``names`` as promtool input, with the labels Prometheus would attach;
    counters (and histogram parts) grow by their scraped value every minute, gauges stay."""
    series = []
    for service, samples in live.items():
        target = {"job": f"mailmoat/mailmoat-{service}", "instance": f"10.0.0.{SERVICES.index(service) + 2}:9100"}
        for (name, labels), value in sorted(samples.items(), key=lambda item: format_series(*item[0])):
            if name not in names:
                continue
            counter = name.endswith(("_total", "_bucket", "_count", "_sum"))
            values = shape(name, labels, value) if counter else f"{value:g}x60"
            series.append({"series": format_series(name, [*labels, *target.items()]), "values": values})
        series.append({"series": format_series("up", target.items()), "values": "1x60"})
    return series


def _run_promtool(tmp_path: Path, rules: str, series: list[dict[str, str]], firing: set[str],
                  only: str = "") -> subprocess.CompletedProcess[str]:
    """promtool on ``series``: after 45 minutes exactly the alerts ``firing`` fire (of those named
    ``only``, a regular expression, when given)."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian package prometheus)")
    (tmp_path / "rules.yml").write_text(rules)
    test = {
        "rule_files": ["rules.yml"],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": series,
            "promql_expr_test": [{
                "expr": f'group by (alertname) (ALERTS{{alertstate="firing", alertname=~"{only or ".+"}"}})',
                "eval_time": "45m",
                "exp_samples": [{"labels": f'{{alertname="{name}"}}', "value": 1} for name in sorted(firing)],
            }],
        }],
    }
    (tmp_path / "live_test.yml").write_text(yaml.safe_dump(test, sort_keys=False))
    return subprocess.run([promtool, "test", "rules", "live_test.yml"], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path)


def _rule_metrics() -> set[str]:
    rules = yaml.safe_load((PROMETHEUS / "rules.yml").read_text())
    return {name for group in rules["groups"] for rule in group["rules"] for name in metric_names(rule["expr"])}


LIVE_FIRING = {"MailmoatDeliveryFailureRatioHigh", "MailmoatPolicyRefused", "MailmoatQueueMetricsAbsent",
               "MailmoatIngressBrokerErrors"}
"""What the live run's traffic, repeated every minute, must fire: one recipient in four bounced, a
policy refused, a message ingress could not queue (the broker cut), and (RabbitMQ's Prometheus
endpoint is not scraped here) the guard on missing queue series. Greylisting's 451 replies, the
deferral and the refused recipient and message fire nothing."""


def test_live_traffic_fires_what_it_should_and_nothing_else(live: dict[str, dict[Series, float]],
                                                            tmp_path: Path) -> None:
    result = _run_promtool(tmp_path, (PROMETHEUS / "rules.yml").read_text(),
                           _input_series(live, _rule_metrics()), LIVE_FIRING)
    assert result.returncode == 0, result.stdout + result.stderr


def _as_old_deferrals(deferred: float):  # type: ignore[no-untyped-def]
    """A series shape: the run's deferrals (``deferred`` copies) every minute, as if each copy had been
    received 10 hours before (in the buckets from 36000 s up only)."""

    def shape(name: str, labels: Labels, value: float) -> str:
        if name == "mailmoat_deferred_age_seconds_bucket":
            return f"0+{deferred:g}x60" if float(dict(labels)["le"]) >= 36000 else "0x60"
        return f"0+{deferred:g}x60" if name == "mailmoat_deferred_age_seconds_count" else f"{value:g}+{value:g}x60"

    return shape


def test_real_deferral_series_shaped_as_old_mail_fire(live: dict[str, dict[Series, float]], tmp_path: Path) -> None:
    deferred = _value(live["egress"], "mailmoat_deferred_age_seconds_count")
    assert deferred >= 1
    old = _as_old_deferrals(deferred)
    names = {n for n in _rule_metrics() if n.startswith("mailmoat_deferred_age_seconds")}
    result = _run_promtool(tmp_path, (PROMETHEUS / "rules.yml").read_text(),
                           _input_series(live, names, old), {"MailmoatDeferredMailOld"},
                           "MailmoatDeferredMailOld")
    assert result.returncode == 0, result.stdout + result.stderr
    unreal = (PROMETHEUS / "rules.yml").read_text().replace('le="21600.0"', 'le="21600"')
    result = _run_promtool(tmp_path, unreal, _input_series(live, names, old), {"MailmoatDeferredMailOld"},
                           "MailmoatDeferredMailOld")
    assert result.returncode != 0, "an unreal le label should keep the alert from firing"


def test_real_quarantine_series_grown_large_fire(live: dict[str, dict[Series, float]], tmp_path: Path) -> None:
    """The quarantine gauges the run exported (one message held by a rule), as two routing replicas
    report them: quiet as they are, and MailmoatQuarantineLarge once they grow past the bounds."""
    names = {"mailmoat_quarantine_messages", "mailmoat_quarantine_bytes"}
    held = {key: value for key, value in live["routing"].items() if key[0] in names}
    assert {key[0] for key in held} == names

    def replicas(scale: float) -> list[dict[str, str]]:
        return [{"series": format_series(name, [*labels, ("instance", f"10.0.0.{n}:9102")]),
                 "values": f"{value * scale:g}x60"} for (name, labels), value in sorted(held.items()) for n in (3, 4)]

    rules = (PROMETHEUS / "rules.yml").read_text()
    quiet = _run_promtool(tmp_path, rules, replicas(1), set(), "MailmoatQuarantineLarge")
    assert quiet.returncode == 0, quiet.stdout + quiet.stderr
    large = _run_promtool(tmp_path, rules, replicas(60000), {"MailmoatQuarantineLarge"}, "MailmoatQuarantineLarge")
    assert large.returncode == 0, large.stdout + large.stderr
