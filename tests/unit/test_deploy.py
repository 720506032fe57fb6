"""deploy/ is checked, not just shipped: every file parses; every configuration key it sets is one
syncer knows; every environment variable it passes is one syncer reads; every metric (and label)
its alerts and dashboard query is one the process exports; the systemd unit passes
`systemd-analyze verify` and a security review where systemd-analyze exists, and its keys are
checked by a parser everywhere; the container image, compose file and Kubernetes manifests have
the shape docs/operations.md promises; the Debezium connector names real columns."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY
from prometheus_client.metrics import MetricWrapperBase

import syncer.feed.metrics  # the daemon's registry holds the feed's metrics too
import syncer.metrics
from syncer.config import settings_from_mapping
from tests.integration.test_migrations import CONTRACT_EVENTS_COLUMNS

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
UNIT = DEPLOY / "systemd" / "syncer.service"

# Metric names a query may use that the process does not register itself:
NOT_EXPORTED_BY_SYNCER = {
    # synthesized by Prometheus for every scrape target (1 when the scrape succeeded)
    "up": {"job", "instance"},
}
TARGET_LABELS = {"job", "instance", "pod", "namespace"}  # added by Prometheus' scrape config
PROMQL_WORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "inf",
    "nan",
}


# ------------------------------------------------------------------------------ helpers


def deploy_files(*suffixes: str) -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.is_file() and p.suffix in suffixes)


def yaml_documents(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def k8s_objects() -> dict[str, dict[str, Any]]:
    """kind → object, for every manifest of deploy/kubernetes (one object of each kind)."""
    objects: dict[str, dict[str, Any]] = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml_documents(path):
            assert doc["kind"] not in objects, f"two {doc['kind']} objects"
            objects[doc["kind"]] = doc
    return objects


def exported_metrics() -> dict[str, set[str]]:
    """Every sample name the process exports (histogram _bucket/_sum/_count, counter _total)
    → its label names; read from prometheus_client's default registry, as `syncer run` fills
    it (syncer.metrics and syncer.feed.metrics)."""
    labels = {
        m._name: set(m._labelnames)
        for module in (syncer.metrics, syncer.feed.metrics)
        for m in vars(module).values()
        if isinstance(m, MetricWrapperBase)
    }
    names: dict[str, set[str]] = {}
    for family in REGISTRY.collect():
        own = labels.get(family.name, set()).union(*(s.labels for s in family.samples))
        suffixes = {
            "counter": ("_total",),
            "histogram": ("_bucket", "_sum", "_count"),
            "summary": ("", "_sum", "_count"),
            "info": ("_info",),
        }.get(family.type, ("",))
        for suffix in suffixes:
            names[family.name + suffix] = own | ({"le"} if suffix == "_bucket" else set())
    return names


def promql_names(expr: str) -> tuple[set[str], set[str]]:
    """(metric names, label names) that a PromQL expression uses."""
    expr = re.sub(r"\$\{?\w+\}?", "", expr)  # Grafana variables ($__rate_interval)
    expr = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)
    label_names: set[str] = set()
    for matchers in re.findall(r"\{([^}]*)\}", expr):
        label_names |= set(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", matchers))
    expr = re.sub(r"\{[^}]*\}", " ", expr)
    expr = re.sub(r"\[[^\]]*\]", " ", expr)
    for clause in re.findall(
        r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", expr
    ):
        label_names |= {n.strip() for n in clause.split(",") if n.strip()}
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    metrics = {
        m.group(1)
        for m in re.finditer(r"(?<![\w.])([A-Za-z_:][\w:]*)(?![\w:])(?!\s*\()", expr)
        if m.group(1) not in PROMQL_WORDS
    }
    return metrics, label_names


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load((DEPLOY / "prometheus" / "syncer-alerts.yml").read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DEPLOY / "grafana" / "syncer-dashboard.json").read_text())
    return data


def dashboard_targets(kind: str) -> Iterator[dict[str, Any]]:
    """The targets of the dashboard's panels whose datasource is of this type."""
    for panel in dashboard()["panels"]:
        for target in panel.get("targets", []):
            if (target.get("datasource") or panel["datasource"])["type"] == kind:
                yield target


def check_promql(expr: str, where: str) -> None:
    known = exported_metrics() | NOT_EXPORTED_BY_SYNCER
    metrics, labels = promql_names(expr)
    assert metrics, f"{where}: no metric in {expr!r}"
    unknown = metrics - known.keys()
    assert not unknown, f"{where}: {sorted(unknown)} not exported by syncer"
    usable = set().union(*(known[m] for m in metrics)) | TARGET_LABELS
    assert labels <= usable, f"{where}: labels {sorted(labels - usable)} on none of {metrics}"


def env_names_syncer_reads() -> set[str]:
    """Environment variables named in syncer's source: what a deploy file may set."""
    names: set[str] = set()
    for path in (ROOT / "syncer").rglob("*.py"):
        names |= set(
            re.findall(r"[\"'](HUAWEICLOUD_SDK_[A-Z_]+|SYNCER_[A-Z_]+)[\"']", path.read_text())
        )
    return names


def env_file(path: Path) -> dict[str, str]:
    """KEY=value lines of a systemd EnvironmentFile / compose env_file."""
    pairs = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, sep, value = line.partition("=")
            assert sep and re.fullmatch(r"[A-Z_][A-Z0-9_]*", key), f"{path.name}: {line!r}"
            pairs[key] = value
    return pairs


def check_config(data: dict[str, Any], where: str) -> None:
    """Parsed as syncer parses it: an unknown key is a warning there, a failure here."""
    settings = settings_from_mapping(data, {}, where)
    assert settings.warnings == (), settings.warnings


# ------------------------------------------------------------------------------ tests


def test_every_yaml_and_json_file_parses() -> None:
    yamls, jsons = deploy_files(".yml", ".yaml"), deploy_files(".json")
    assert len(yamls) >= 9 and len(jsons) >= 2
    for path in yamls:
        assert yaml_documents(path), path
    for path in jsons:
        assert json.loads(path.read_text()), path


def test_promql_parsing_finds_metrics_and_labels() -> None:
    """The checker itself: functions, keywords, matchers, ranges and durations are no metrics."""
    metrics, labels = promql_names(
        'histogram_quantile(0.95, sum by (le, region) (rate(a_bucket{job="x", region=~"cn-.*"}'
        "[5m]))) > on (region) group_left b_total or absent(up == 1) unless c offset 1h"
    )
    assert metrics == {"a_bucket", "b_total", "up", "c"}
    assert labels == {"le", "region", "job"}
    with pytest.raises(AssertionError, match="not exported"):
        check_promql("rate(syncer_no_such_metric_total[5m])", "test")
    with pytest.raises(AssertionError, match="labels"):
        check_promql("sum by (regoin) (syncer_ims_requests_total)", "test")


def test_every_config_key_deploy_sets_is_one_syncer_knows() -> None:
    tomls = [ROOT / "config.example.toml", *deploy_files(".toml")]
    for path in tomls:
        check_config(tomllib.loads(path.read_text()), str(path.relative_to(ROOT)))
    configmap = k8s_objects()["ConfigMap"]
    check_config(tomllib.loads(configmap["data"]["syncer.toml"]), "kubernetes/configmap.yaml")
    # the compose file mounts a configuration that is one of those checked above
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    mounted = {
        (DEPLOY / volume.split(":")[0]).resolve()
        for service in compose["services"].values()
        for volume in service.get("volumes", [])
        if volume.split(":")[1] == "/etc/syncer/syncer.toml"
    }
    assert mounted == {(DEPLOY / "syncer.toml").resolve()}


def test_unknown_config_keys_fail_this_check() -> None:
    with pytest.raises(AssertionError, match=r"unknown key sync\.full_intervall"):
        check_config(
            {
                "database": {"dsn": "postgresql://u@h/d"},
                "sync": {"regions": ["r"], "full_intervall": "1h"},
            },
            "test",
        )


def test_every_environment_variable_deploy_sets_is_one_syncer_reads() -> None:
    known = env_names_syncer_reads()
    assert {"HUAWEICLOUD_SDK_AK", "SYNCER_DATABASE_DSN", "SYNCER_FEED_TOKEN"} <= known
    secrets = {"HUAWEICLOUD_SDK_AK", "HUAWEICLOUD_SDK_SK", "HUAWEICLOUD_SDK_PROJECT_ID"}
    secrets |= {"SYNCER_DATABASE_DSN", "SYNCER_FEED_TOKEN"}
    for path in (DEPLOY / "systemd" / "syncer.env.example", DEPLOY / "compose.env.example"):
        names = set(env_file(path))
        assert names == secrets, path.name
        assert all("REPLACE_WITH" in v for v in env_file(path).values()), "placeholders only"
    objects = k8s_objects()
    assert set(objects["Secret"]["stringData"]) == secrets
    assert all("REPLACE_WITH" in v for v in objects["Secret"]["stringData"].values())
    for kind in ("Deployment", "Job"):
        (container,) = objects[kind]["spec"]["template"]["spec"]["containers"]
        assert {e["name"] for e in container.get("env", [])} <= known
        assert container["envFrom"] == [{"secretRef": {"name": "syncer-credentials"}}]
    assert set(env_file(DEPLOY / "postgres.env.example")) <= {
        "POSTGRES_USER",
        "POSTGRES_DB",
        "POSTGRES_PASSWORD",
    }
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert set(re.findall(r"\b(SYNCER_[A-Z_]+)=", dockerfile)) <= known


def test_alerts_cover_the_failures_and_query_exported_metrics() -> None:
    rules = alert_rules()
    assert {r["alert"] for r in rules} == {
        "SyncerPartitionStale",
        "SyncerPartitionNeverSwept",
        "SyncerPartitionFailing",
        "SyncerImsThrottled",
        "SyncerCredentialRejected",
        "SyncerFeedConsumerLag",
        "SyncerDatabaseDown",
        "SyncerNoReplicaReady",
    }
    for rule in rules:
        check_promql(rule["expr"], rule["alert"])
        assert re.fullmatch(r"\d+[smh]", rule["for"]), rule["alert"]
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
    lag = next(r for r in rules if r["alert"] == "SyncerFeedConsumerLag")
    assert promql_names(lag["expr"]) == ({"syncer_feed_consumer_lag_events"}, {"consumer"})


def test_dashboard_queries_exported_metrics() -> None:
    d = dashboard()
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    variables = {v["name"] for v in d["templating"]["list"]}
    exprs = list(dashboard_targets("prometheus"))
    assert len(exprs) >= 15
    for target in exprs:
        check_promql(target["expr"], f"dashboard {target['expr']!r}")
    for panel in d["panels"]:
        uid = (panel.get("datasource") or {}).get("uid", "${datasource}")
        assert uid.strip("${}") in variables, panel["title"]
    # the SQL panels run as ims_reader in tests/integration/reporting/test_cookbook.py
    assert len(list(dashboard_targets("grafana-postgresql-datasource"))) >= 3


def parse_unit(text: str) -> dict[str, list[tuple[str, str]]]:
    """section → [(key, value)] in order (systemd allows a key more than once)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), [])
            continue
        assert current is not None, f"a key outside any section: {line!r}"
        key, sep, value = line.partition("=")
        assert sep, f"not a key=value line: {line!r}"
        current.append((key.strip(), value.strip()))
    return sections


def test_systemd_unit_is_hardened_and_verifies(tmp_path: Path) -> None:
    text = UNIT.read_text()
    unit = parse_unit(text)
    assert set(unit) == {"Unit", "Service", "Install"}
    service = dict(unit["Service"])  # the last value of a repeated key
    expected = {
        "User": "syncer",
        "Group": "syncer",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "CapabilityBoundingSet": "",
        "AmbientCapabilities": "",
        "Restart": "on-failure",
        "EnvironmentFile": "/etc/syncer/syncer.env",
        "ExecStartPre": "/usr/bin/syncer --config /etc/syncer/syncer.toml migrate",
        "ExecStart": "/usr/bin/syncer --config /etc/syncer/syncer.toml run",
        "KillSignal": "SIGTERM",
        "TimeoutStopSec": "40",
    }
    assert {k: service.get(k) for k in expected} == expected
    assert re.fullmatch(r"\d+s", service["RestartSec"])
    assert dict(unit["Install"])["WantedBy"] == "multi-user.target"
    assert "-m 0600" in text and "syncer.env.example" in text
    assert set(env_file(DEPLOY / "systemd" / "syncer.env.example"))  # the file it points to

    tool = shutil.which("systemd-analyze")
    if tool is None:  # the parser's checks above are what this machine can assert
        return
    # syncer is not installed at /usr/bin here: verify a copy that runs a stub instead
    stub = tmp_path / "syncer"
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    copy = tmp_path / "syncer.service"
    if Path("/usr/bin/syncer").exists():
        copy.write_text(text)
    else:
        copy.write_text(text.replace("/usr/bin/syncer", str(stub)))
    verify = subprocess.run(
        [tool, "verify", "--man=no", str(copy)], capture_output=True, text=True, timeout=60
    )
    assert verify.returncode == 0 and not (verify.stdout + verify.stderr).strip(), (
        verify.stdout + verify.stderr
    )
    # systemd's own review of the hardening: exposure at most 2.0 ("OK")
    review = subprocess.run(
        [tool, "security", "--offline=yes", "--threshold=20", str(copy)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert review.returncode == 0, review.stdout[-400:] + review.stderr


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (DEPLOY / "Dockerfile").read_text()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    out = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), " ".join(rest.split())))
    return out


def test_container_image_is_multi_stage_and_non_root() -> None:
    steps = dockerfile_instructions()
    stages = [i for i, (word, _) in enumerate(steps) if word == "FROM"]
    assert len(stages) == 2
    builder, runtime = steps[stages[0] : stages[1]], steps[stages[1] :]
    assert builder[0] == ("FROM", "python:3.11-slim AS builder")
    assert any(w == "RUN" and "pip wheel" in a for w, a in builder)
    assert runtime[0] == ("FROM", "python:3.11-slim")
    # the runtime stage gets the wheels and nothing else: no COPY of the source
    assert [a for w, a in runtime if w in ("COPY", "ADD")] == []
    (install,) = [a for w, a in runtime if w == "RUN" and "pip install" in a]
    assert "from=builder" in install and "--no-index" in install
    (user,) = [a for w, a in runtime if w == "USER"]
    assert user.split(":")[0] not in ("root", "0")
    (healthcheck,) = [a for w, a in runtime if w == "HEALTHCHECK"]
    assert "/healthz" in healthcheck
    assert ("EXPOSE", "8080") in runtime
    assert runtime[-1] == ("CMD", '["syncer", "run"]')
    env = " ".join(a for w, a in runtime if w == "ENV")
    assert "SYNCER_FEED_LISTEN=0.0.0.0:8080" in env
    # what the builder copies exists, and the build context filter lets it through
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    for w, a in builder:
        if w == "COPY":
            for source in a.split()[:-1]:
                assert (ROOT / source).exists(), source
                assert f"!{source}" in ignore or f"!{source}/" in ignore, source


def test_compose_runs_postgres_a_migration_and_two_replicas() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    assert services["postgres"]["image"] == "postgres:15"
    assert "healthcheck" in services["postgres"]
    migrate = services["migrate"]
    assert migrate["command"] == ["syncer", "migrate"]
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    replicas = {n: s for n, s in services.items() if s.get("command") == ["syncer", "run"]}
    assert len(replicas) == 2
    for service in (migrate, *replicas.values()):
        assert service["env_file"] == "compose.env"
        assert (DEPLOY / "compose.env.example").exists()
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"]
        assert service["user"].split(":")[0] not in ("root", "0")
    for service in replicas.values():
        assert service["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert service["stop_grace_period"] == "40s"
    assert services["postgres"]["env_file"] == "postgres.env"


def test_kubernetes_manifests() -> None:
    objects = k8s_objects()
    assert {"Namespace", "ConfigMap", "Secret", "Job", "Deployment", "Service"} <= set(objects)
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files

    deployment = objects["Deployment"]
    spec = deployment["spec"]
    pod = spec["template"]["spec"]
    assert spec["replicas"] == 2
    assert pod["terminationGracePeriodSeconds"] == 40
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    assert container["args"] == ["syncer", "run"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 8080}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    for c in (container, objects["Job"]["spec"]["template"]["spec"]["containers"][0]):
        assert c["securityContext"] == {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        }
        env = {e["name"]: e["value"] for e in c["env"]}
        mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
        assert env["SYNCER_CONFIG"] == f"{mounts['config']}/syncer.toml"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["config"]["configMap"]["name"] == objects["ConfigMap"]["metadata"]["name"]
    assert "syncer.toml" in objects["ConfigMap"]["data"]

    job = objects["Job"]["spec"]["template"]["spec"]
    assert job["containers"][0]["args"] == ["syncer", "migrate"]
    assert job["restartPolicy"] == "Never"
    assert job["securityContext"]["runAsNonRoot"] is True

    service = objects["Service"]["spec"]
    assert service["selector"].items() <= spec["template"]["metadata"]["labels"].items()
    assert service["selector"] == spec["selector"]["matchLabels"]
    assert service["ports"] == [{"name": "http", "port": 8080, "targetPort": "http"}]
    assert tomllib.loads(objects["ConfigMap"]["data"]["syncer.toml"])["feed"]["listen"] == (
        "0.0.0.0:8080"
    )


def test_debezium_connector_routes_image_events_through_the_outbox_router() -> None:
    connector = json.loads((DEPLOY / "debezium" / "syncer-outbox-connector.json").read_text())
    config = connector["config"]
    assert config["connector.class"] == "io.debezium.connector.postgresql.PostgresConnector"
    assert config["plugin.name"] == "pgoutput"
    assert config["table.include.list"] == "ims.image_events"
    assert config["transforms"] == "outbox"
    assert config["transforms.outbox.type"] == "io.debezium.transforms.outbox.EventRouter"
    columns = set(CONTRACT_EVENTS_COLUMNS)
    named = {
        config[f"transforms.outbox.{key}"]
        for key in (
            "table.field.event.id",
            "table.field.event.key",
            "table.field.event.payload",
            "route.by.field",
        )
    }
    for entry in config["transforms.outbox.table.fields.additional.placement"].split(","):
        column, placement, *_ = entry.split(":")
        assert placement in ("header", "envelope", "partition"), entry
        named.add(column)
    assert named <= columns, named - columns
    assert CONTRACT_EVENTS_COLUMNS["changes"] == "jsonb"  # expanded as JSON into the payload
    # The router reads an event timestamp only from an integer (epoch) column; occurred_at is a
    # timestamptz, so it travels in the envelope instead.
    assert "transforms.outbox.table.field.event.timestamp" not in config
    # one topic for every kind: the per-image order lives in one partition (key image_id)
    assert "${routedByValue}" not in config["transforms.outbox.route.topic.replacement"]
    assert "ORDER BY seq" in config["snapshot.select.statement.overrides.ims.image_events"]


def test_docs_name_only_deploy_files_that_exist_and_every_alert() -> None:
    operations = (ROOT / "docs" / "operations.md").read_text()
    readme = (DEPLOY / "README.md").read_text()
    named = set(re.findall(r"deploy/[\w./-]+\w", operations))
    named |= {f"deploy/{p}" for p in re.findall(r"\]\(([\w./-]+)\)", readme)}
    assert len(named) >= 10
    for path in named:
        assert (ROOT / path).exists() or (DEPLOY / path.removeprefix("deploy/")).exists(), path
    for rule in alert_rules():
        assert f"`{rule['alert']}`" in operations, rule["alert"]
    listed = {p.relative_to(DEPLOY).as_posix() for p in DEPLOY.rglob("*") if p.is_file()}
    for path in listed - {"README.md"}:
        top = path.split("/")[0]
        assert path in readme or f"`{top}/`" in readme or f"({top})" in readme, path
