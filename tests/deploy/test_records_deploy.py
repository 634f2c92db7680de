"""The records database in the deploy files: the recorder on Kubernetes (its queue, its user, what it may
reach), the migration Job and the daily partition CronJob, the services with MAILMOAT_RECORDS=postgresql,
PostgreSQL itself (CloudNativePG in production, one StatefulSet in dev) and who reaches it; PostgreSQL, the
migration and the recorder in docker-compose; Redis's maxmemory and eviction policy everywhere."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml

from mailmoat_platform.settings import DEFAULT_METRICS_PORTS
from mailmoat_records.trace import TRACE_QUEUE
from tests.deploy.crds import validate_custom
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


def dev() -> list[dict]:
    return render(K8S / "overlays" / "dev", [K8S / "components" / "filters"])


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


def selects(selector: dict, labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def test_every_service_keeps_its_records_in_postgresql_and_only_its_users_open_it() -> None:
    """The trace through the bus from every stage; the database URL only where the database is used:
    routing (the quarantine), the recorder, the console, antispam (the senders blocked from the console), the
    jobs and the probe."""
    for resources in (production(), dev()):
        deployments = [r for r in resources if r["kind"] == "Deployment"
                       and r["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/name") == "mailmoat"]
        assert len(deployments) >= 8  # ingress, routing, egress, recorder and the filter stages
        for deployment in deployments:
            name = deployment["metadata"]["name"]
            (container,) = [c for c in containers(deployment) if c.get("args", [])[:1] == ["run"]]
            variables = env(container)
            assert variables["MAILMOAT_RECORDS"]["value"] == "postgresql", name
            if name in ("mailmoat-routing", "mailmoat-recorder", "mailmoat-console", "mailmoat-antispam"):
                assert variables["MAILMOAT_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == DB_SECRET, name
            else:
                assert "MAILMOAT_DATABASE_URL" not in variables, name
        probe = named(resources, "CronJob", "mailmoat-probe")
        (container,) = probe["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
        variables = env(container)
        assert variables["MAILMOAT_RECORDS"]["value"] == "postgresql"
        assert variables["MAILMOAT_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == DB_SECRET
        assert "MAILMOAT_REDIS_URL" not in variables  # the probe reads the trace in PostgreSQL only


def test_the_users_of_the_database_and_only_they_reach_postgresql() -> None:
    assert "recorder" in world()[1]
    for name in ("recorder", "routing", "console", "antispam"):  # antispam: the senders blocked from the console
        assert can(pod(name), POSTGRES, 5432), name
    recorder = pod("recorder")
    assert can(recorder, RABBITMQ, 5671) and can(recorder, KUBE_DNS, 53, "UDP")
    assert not can(recorder, INTERNET, 5432) and not can(recorder, INTERNET, 25)
    for component in ("db-upgrade", "db-maintain"):
        job = Pod(NS, {"app.kubernetes.io/name": "mailmoat-db", "app.kubernetes.io/component": component,
                       "app.kubernetes.io/part-of": "mailmoat"})
        assert can(job, POSTGRES, 5432) and can(job, KUBE_DNS, 53, "UDP"), component
        assert not can(job, RABBITMQ, 5671) and not can(job, INTERNET, 443), component
    probe = Pod(NS, {"app.kubernetes.io/name": "mailmoat-probe", "app.kubernetes.io/part-of": "mailmoat"})
    assert can(probe, POSTGRES, 5432)
    # the console reads the trace and the quarantine and keeps its accounts there (console.yaml)
    console = pod("console")
    assert can(console, RABBITMQ, 5671)
    assert not can(console, INTERNET, 5432) and not can(console, INTERNET, 443) and not can(console, INTERNET, 25)
    others = [n for n, p in world()[1].items() if p.labels.get("app.kubernetes.io/name") == "mailmoat"
              and n not in ("recorder", "routing", "console", "antispam")]
    assert {"ingress", "egress", "antivirus"} <= set(others)
    for name in others:
        assert not can(pod(name), POSTGRES, 5432), name
    assert not can(Pod(NS, {"app": "debug"}), POSTGRES, 5432)
    antispam = pod("antispam")
    assert not can(antispam, INTERNET, 5432)
    assert can(POSTGRES, POSTGRES, 5432)  # replication between the instances
    assert can(Pod("cnpg-system", {"app.kubernetes.io/name": "cloudnative-pg"}), POSTGRES, 8000)
    assert can(Pod("monitoring", {"app.kubernetes.io/name": "prometheus"}), POSTGRES, 9187)


def test_production_runs_a_cloudnativepg_cluster_of_three_with_backups() -> None:
    resources = production()
    cluster = named(resources, "Cluster", "mailmoat-postgres")
    validate_custom(cluster)  # the operator's own schema (tests/data/crds), strict
    spec = cluster["spec"]
    assert spec["instances"] == 3 and spec["enablePDB"] is True  # the operator's PodDisruptionBudgets
    assert spec["affinity"]["podAntiAffinityType"] == "required"
    assert spec["bootstrap"]["initdb"]["database"] == "mailmoat"
    assert DB_SECRET["name"] == cluster["metadata"]["name"] + "-app"  # the Secret the operator makes
    assert "secret" not in spec["bootstrap"]["initdb"]  # ... with a password of its own
    assert spec["storage"]["size"] and spec["monitoring"]["disableDefaultQueries"] is False
    assert spec["postgresql"]["synchronous"]["number"] == 1
    (plugin,) = spec["plugins"]
    assert plugin["name"] == "barman-cloud.cloudnative-pg.io" and plugin["isWALArchiver"] is True
    store = named(resources, "ObjectStore", plugin["parameters"]["barmanObjectName"])
    validate_custom(store)
    assert store["spec"]["configuration"]["destinationPath"].startswith("s3://")
    credentials = store["spec"]["configuration"]["s3Credentials"]
    assert {credentials[k]["name"] for k in ("accessKeyId", "secretAccessKey")} == {"mailmoat-postgres-backup-s3"}
    assert store["spec"]["retentionPolicy"] == "30d"
    backup = named(resources, "ScheduledBackup", "mailmoat-postgres-nightly")
    validate_custom(backup)
    assert backup["spec"]["cluster"]["name"] == "mailmoat-postgres" and backup["spec"]["method"] == "plugin"
    assert backup["spec"]["pluginConfiguration"]["name"] == plugin["name"]
    assert len(backup["spec"]["schedule"].split()) == 6  # the operator's schedules have seconds
    monitor = named(resources, "PodMonitor", "mailmoat-postgres")
    assert monitor["spec"]["selector"]["matchLabels"] == {"cnpg.io/cluster": "mailmoat-postgres"}
    assert not [r for r in resources if r["kind"] == "StatefulSet" and r["metadata"]["name"] == "mailmoat-postgres"]
    readme = (REPO / "deploy" / "README.md").read_text()
    assert "mailmoat-postgres-backup-s3" in readme and "barman-cloud" in readme


def test_a_mistake_in_the_cluster_is_refused() -> None:
    cluster = named(production(), "Cluster", "mailmoat-postgres")
    cluster["spec"]["instance"] = 3
    with pytest.raises(jsonschema.ValidationError, match="instance"):
        validate_custom(cluster)


def test_dev_runs_one_postgresql_under_the_same_names() -> None:
    resources = dev()
    assert not [r for r in resources if r["kind"] == "Cluster"]
    statefulset = named(resources, "StatefulSet", "mailmoat-postgres")
    assert statefulset["spec"]["replicas"] == 1
    labels = statefulset["spec"]["template"]["metadata"]["labels"]
    assert selects({"matchLabels": {"cnpg.io/cluster": "mailmoat-postgres", "cnpg.io/instanceRole": "primary"}},
                   labels)  # what the NetworkPolicies name
    secret = named(resources, "Secret", DB_SECRET["name"])["stringData"]
    url = urlsplit(secret[DB_SECRET["key"]])
    service = named(resources, "Service", url.hostname.split(".")[0])
    assert selects({"matchLabels": service["spec"]["selector"]}, labels)
    assert url.port == service["spec"]["ports"][0]["port"] == 5432
    (container,) = containers(statefulset)
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e}
    assert {name: secret[ref["key"]] for name, ref in refs.items()} == {
        "POSTGRES_USER": url.username, "POSTGRES_PASSWORD": url.password, "POSTGRES_DB": url.path[1:]}
    assert {ref["name"] for ref in refs.values()} == {DB_SECRET["name"]}
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    data = next(m for m in container["volumeMounts"] if m["name"] == claim["metadata"]["name"])
    assert env(container)["PGDATA"]["value"].startswith(data["mountPath"] + "/")


# Redis holds only expiring state (and the bounded sets of deploy/README.md), under a maxmemory; it never
# evicts, so a delivery dedupe record or lock is never dropped while it is needed (decision 010).
REDIS_EVICTION = "noeviction"


def test_redis_has_a_maxmemory_and_never_evicts_in_compose() -> None:
    command = services()["redis"]["command"]
    assert command[command.index("--maxmemory-policy") + 1] == REDIS_EVICTION
    assert command[command.index("--maxmemory") + 1].endswith(("mb", "gb"))


@pytest.mark.parametrize("overlay", ["dev", "production"])
def test_redis_has_a_maxmemory_and_never_evicts_on_kubernetes(overlay: str) -> None:
    resources = render(K8S / "overlays" / overlay)
    redis = named(resources, "StatefulSet", "mailmoat-redis")
    (container,) = [c for c in containers(redis) if c["name"] == "redis"]
    assert env(container)["REDIS_MAXMEMORY"]["value"].endswith(("mb", "gb"))
    if "args" in container:  # one node
        args = container["args"]
        assert args[args.index("--maxmemory") + 1] == "$(REDIS_MAXMEMORY)"
        assert args[args.index("--maxmemory-policy") + 1] == REDIS_EVICTION
    else:  # Sentinel: the start script's arguments
        script = named(resources, "ConfigMap", "mailmoat-redis-sentinel")["data"]["start-redis.sh"]
        assert f'--maxmemory "$REDIS_MAXMEMORY" --maxmemory-policy {REDIS_EVICTION} ' in script


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
        assert service["environment"]["MAILMOAT_RECORDS"] == "postgresql", name  # the default
    recorder = everything["recorder"]
    assert recorder["command"] == ["run", "recorder"]
    assert recorder["depends_on"]["postgres"] == {"condition": "service_healthy"}
    assert f"127.0.0.1:{DEFAULT_METRICS_PORTS['recorder']}/healthz" in " ".join(recorder["healthcheck"]["test"])
