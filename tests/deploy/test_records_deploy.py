"""The records database in the deploy files: the recorder on Kubernetes (its queue, its user, what it may
reach), the migration Job and the daily partition CronJob, and PostgreSQL, the migration and the recorder
in docker-compose."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import yaml

from mailmoat_platform.settings import DEFAULT_METRICS_PORTS
from mailmoat_records.trace import TRACE_QUEUE
from tests.deploy.kustomize import containers, render
from tests.deploy.netpol import Pod
from tests.deploy.test_compose import mailmoat_services, services
from tests.deploy.test_netpol import INTERNET, KUBE_DNS, NS, RABBITMQ, can, pod, world

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
POSTGRES = Pod(NS, {"cnpg.io/cluster": "mailmoat-postgres", "cnpg.io/instanceRole": "primary"}, {"postgresql": 5432})
DB_SECRET = {"name": "mailmoat-postgres-app", "key": "uri"}


def production() -> list[dict]:
    return render(K8S / "overlays" / "production", [K8S / "components" / "filters"])


def named(resources: list[dict], kind: str, name: str) -> dict:
    (found,) = [r for r in resources if r["kind"] == kind and r["metadata"]["name"] == name]
    return found


def env(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def test_recorder_consumes_the_trace_queue_with_the_database_secret() -> None:
    resources = production()
    recorder = named(resources, "Deployment", "mailmoat-recorder")
    (container,) = containers(recorder)
    assert container["args"] == ["run", "recorder"]
    variables = env(container)
    assert variables["MAILMOAT_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == DB_SECRET
    assert variables["MAILMOAT_RECORDS"]["value"] == "postgresql"
    scaled = named(resources, "ScaledObject", "mailmoat-recorder")["spec"]
    assert scaled["triggers"][0]["metadata"]["queueName"] == TRACE_QUEUE
    assert scaled["minReplicaCount"] >= 2  # production: a recorder survives a node drain
    permission = named(resources, "Permission", "mailmoat-recorder")["spec"]["permissions"]
    assert permission["read"] == r"^(mailmoat\.trace|mailmoat\.dlx)$"


def test_migration_job_and_daily_partition_job() -> None:
    resources = production()
    job = named(resources, "Job", "mailmoat-db-upgrade")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["db", "upgrade"]
    assert env(container)["MAILMOAT_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == DB_SECRET
    assert job["spec"]["ttlSecondsAfterFinished"] > 0  # gone after a while: the next apply runs it again
    cron = named(resources, "CronJob", "mailmoat-db-maintain")
    assert len(cron["spec"]["schedule"].split()) == 5 and cron["spec"]["schedule"].split()[2:] == ["*", "*", "*"]
    (container,) = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    assert container["args"][:2] == ["db", "maintain"] and "--retention-days" in container["args"]
    assert env(container)["MAILMOAT_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == DB_SECRET


def test_only_the_recorder_the_console_and_the_database_jobs_reach_postgresql() -> None:
    assert "recorder" in world()[1]
    recorder = pod("recorder")
    assert can(recorder, POSTGRES, 5432)
    assert can(recorder, RABBITMQ, 5671) and can(recorder, KUBE_DNS, 53, "UDP")
    assert not can(recorder, INTERNET, 5432) and not can(recorder, INTERNET, 25)
    for component in ("db-upgrade", "db-maintain"):
        job = Pod(NS, {"app.kubernetes.io/name": "mailmoat-db", "app.kubernetes.io/component": component,
                       "app.kubernetes.io/part-of": "mailmoat"})
        assert can(job, POSTGRES, 5432) and can(job, KUBE_DNS, 53, "UDP"), component
        assert not can(job, RABBITMQ, 5671) and not can(job, INTERNET, 443), component
    for name in ("ingress", "egress"):
        assert not can(pod(name), POSTGRES, 5432), name
    # the console reads the trace and the quarantine and keeps its accounts there (console.yaml)
    console = pod("console")
    assert can(console, POSTGRES, 5432) and can(console, RABBITMQ, 5671)
    assert not can(console, INTERNET, 5432) and not can(console, INTERNET, 443) and not can(console, INTERNET, 25)


def test_compose_runs_postgresql_the_migration_and_the_recorder() -> None:
    everything = services()
    postgres = everything["postgres"]
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    assert any(v.split(":")[0] in compose["volumes"] for v in postgres["volumes"])
    assert postgres["healthcheck"]["test"][1] == "pg_isready"
    upgrade = everything["db-upgrade"]
    assert upgrade["command"] == ["db", "upgrade"] and upgrade["restart"] == "no"
    assert upgrade["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    for name, service in mailmoat_services().items():  # no service starts before the schema is there
        assert service["depends_on"]["db-upgrade"] == {"condition": "service_completed_successfully"}, name
        url = urlsplit(service["environment"]["MAILMOAT_DATABASE_URL"])
        assert url.hostname == "postgres" and url.username == postgres["environment"]["POSTGRES_USER"], name
        assert url.password == postgres["environment"]["POSTGRES_PASSWORD"], name
        assert url.path == "/" + postgres["environment"]["POSTGRES_DB"], name
        assert service["environment"]["MAILMOAT_RECORDS"] == "redis", name  # the default until it is flipped
    recorder = everything["recorder"]
    assert recorder["command"] == ["run", "recorder"]
    assert recorder["depends_on"]["postgres"] == {"condition": "service_healthy"}
    assert f"127.0.0.1:{DEFAULT_METRICS_PORTS['recorder']}/healthz" in " ".join(recorder["healthcheck"]["test"])
