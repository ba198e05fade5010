"""The Kubernetes manifests, checked offline (no cluster can run here).

Every kustomization renders and passes strict Kubernetes 1.32 schema validation and the
project's policies; deliberately broken manifests are caught; and the facts a deployment relies
on hold in what `kubectl apply -k` would send: 8 workers in the base, checkpoints on a
persistent volume, the dashboard and alert rules identical to the files compose uses.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import k8s_validate

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).parent / "fixtures" / "k8s"


validate = k8s_validate()
policy = sys.modules["a3c_policy"]
k8s_policy = sys.modules["k8s_policy"]
KUSTOMIZATIONS = validate.default_targets()


def _get(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {path.name: validate.render(path) for path in KUSTOMIZATIONS}


def test_there_is_a_dev_and_a_prod_overlay() -> None:
    names = {path.name for path in KUSTOMIZATIONS}
    assert {"base", "dev", "prod"} <= names


@pytest.mark.parametrize("path", KUSTOMIZATIONS, ids=lambda p: p.name)
def test_kustomization_passes_strict_schemas_and_policies(path: Path) -> None:
    docs, problems = validate.validate_kustomization(path)
    assert problems == []
    assert len(docs) > 15


def test_monitoring_sources_pass() -> None:
    """Dashboard and rules are well-formed and name only metrics the services expose; with
    promtool (installed by `make k8s-validate`) the rules and every panel's PromQL parse."""
    assert validate.source_problems(validate.find_promtool()) == []


def test_schema_errors_are_caught() -> None:
    docs, problems = validate.validate_kustomization(FIXTURES / "schema-errors")
    schema = [p for p in problems if ": schema: " in p]
    assert len(docs) == 4
    assert any("Deployment/misspelled" in p and "'replica' was unexpected" in p for p in schema)
    assert any("Service/wrong-type" in p and "is not of type 'integer'" in p for p in schema)
    assert any("Pod/missing-required" in p and "'name' is a required property" in p for p in schema)
    assert any("Deployment/removed-api" in p and "Couldn't find schema" in p for p in schema)


def test_unsafe_overlay_is_caught() -> None:
    _, problems = validate.validate_kustomization(FIXTURES / "unsafe-overlay")
    report = "\n".join(problems)
    expected = [
        "A3C_CHECKPOINT_INTERVL is not a setting of the services",
        "max_staleness: Input should be greater than or equal to 0",
        "Deployment/a3c-worker: A3C_LEARNER=learner:5555 does not name a Service",
        "StatefulSet/a3c-learner: A3C_CHECKPOINT_DIR (/tmp/checkpoints) must be on a "
        "PersistentVolumeClaim",
        "StatefulSet/a3c-learner: terminationGracePeriodSeconds 10 < 60",
        "StatefulSet/a3c-learner: no PodDisruptionBudget protects the learner",
    ]
    missing = [line for line in expected if line not in report]
    assert missing == [], report


def test_checkov_catches_the_generic_pod_mistakes() -> None:
    if validate.CHECKOV is None:
        pytest.skip("checkov is not installed (make k8s-validate installs it)")
    _, problems = validate.validate_kustomization(FIXTURES / "unsafe-overlay")
    report = "\n".join(problems)
    expected = [
        "StatefulSet/a3c-learner: CKV_K8S_14 image tag pinned, not latest",
        "Deployment/a3c-worker: CKV_K8S_11 CPU limit",
        "Deployment/a3c-worker: CKV_K8S_13 memory limit",
        "StatefulSet/a3c-learner: CKV_K8S_8 liveness probe",
        "StatefulSet/a3c-learner: CKV_K8S_23 not root",
        "Deployment/a3c-worker: CKV_K8S_22 read-only root filesystem",
    ]
    missing = [line for line in expected if line not in report]
    assert missing == [], report


def test_command_line_fails_on_a_broken_manifest() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "k8s" / "validate.py"), str(FIXTURES / "schema-errors")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert "FAIL" in result.stdout and "'replica' was unexpected" in result.stdout


def test_base_runs_eight_workers_dev_two_prod_autoscaled(rendered: dict) -> None:
    assert _get(rendered["base"], "Deployment", "a3c-worker")["spec"]["replicas"] == 8
    assert _get(rendered["dev"], "Deployment", "a3c-worker")["spec"]["replicas"] == 2
    prod_worker = _get(rendered["prod"], "Deployment", "a3c-worker")
    assert "replicas" not in prod_worker["spec"]  # the HPA owns the count
    hpa = _get(rendered["prod"], "HorizontalPodAutoscaler", "a3c-worker")["spec"]
    assert hpa["scaleTargetRef"]["name"] == "a3c-worker" and hpa["minReplicas"] == 8


@pytest.mark.parametrize("name", [p.name for p in KUSTOMIZATIONS])
def test_learner_checkpoints_live_on_a_persistent_volume(rendered: dict, name: str) -> None:
    learner = _get(rendered[name], "StatefulSet", "a3c-learner")
    assert learner["spec"]["replicas"] == 1
    container = learner["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    mount = next(
        m for m in container["volumeMounts"] if m["mountPath"] == env["A3C_CHECKPOINT_DIR"]
    )
    claims = {t["metadata"]["name"]: t for t in learner["spec"]["volumeClaimTemplates"]}
    assert mount["name"] in claims
    assert claims[mount["name"]]["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert learner["spec"]["persistentVolumeClaimRetentionPolicy"] == {
        "whenDeleted": "Retain",
        "whenScaled": "Retain",
    }
    assert learner["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= 60


@pytest.mark.parametrize("name", [p.name for p in KUSTOMIZATIONS])
def test_monitoring_configmaps_are_the_shared_files(rendered: dict, name: str) -> None:
    """Generated by configMapGenerator from the files compose mounts: byte-identical."""
    data = {k: v for d in rendered[name] if d["kind"] == "ConfigMap" for k, v in d["data"].items()}
    assert data["a3c-dashboard.json"] == validate.DASHBOARD.read_text()
    assert data["alerts.yml"] == validate.ALERTS.read_text()
    json.loads(data["a3c-dashboard.json"])


def test_prometheus_rule_is_the_alerts_file() -> None:
    docs = validate.render(ROOT / "k8s" / "overlays" / "prod-operator")
    rule = _get(docs, "PrometheusRule", "a3c")
    assert rule["spec"]["groups"] == yaml.safe_load(validate.ALERTS.read_text())["groups"]


def test_drift_between_copies_and_files_is_caught(rendered: dict) -> None:
    docs = rendered["prod-operator"]
    sources = validate.monitoring_sources()
    assert policy.check_monitoring(k8s_policy.Resources(docs), sources) == []
    edited = policy.MonitoringSources(
        dashboard=sources.dashboard.replace("A3C Breakout", "A3C Pong"),
        alerts=sources.alerts.replace("for: 2m", "for: 3m"),
        prometheus_config=sources.prometheus_config,
    )
    problems = policy.check_monitoring(k8s_policy.Resources(docs), edited)
    assert any("a3c-dashboard.json differs" in p for p in problems)
    assert any("alerts.yml differs" in p for p in problems)
    assert any("PrometheusRule/a3c: differs from alerts.yml" in p for p in problems)


def test_dashboard_mistakes_are_caught() -> None:
    dashboard = json.loads(validate.DASHBOARD.read_text())
    panel = next(p for p in dashboard["panels"] if p["type"] == "timeseries")
    panel["datasource"] = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
    assert validate.dashboard_problems(json.dumps(dashboard))
    panel["datasource"] = {"type": "prometheus", "uid": "other"}
    assert any("datasource uid" in p for p in validate.dashboard_problems(json.dumps(dashboard)))
    unknown = policy.unknown_metric_problems({"panel": "rate(a3c_learner_update_total[1m])"})
    assert unknown == ["panel: no service exposes a metric named a3c_learner_update_total"]


@pytest.mark.skipif(validate.find_promtool() is None, reason="promtool not installed yet")
def test_promtool_catches_bad_promql(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dashboard = json.loads(validate.DASHBOARD.read_text())
    target = next(p for p in dashboard["panels"] if p["type"] == "timeseries")["targets"][0]
    target["expr"] = "sum(rate(a3c_learner_updates_total[1m])"
    broken = tmp_path / "dashboard.json"
    broken.write_text(json.dumps(dashboard))
    monkeypatch.setattr(validate, "DASHBOARD", broken)
    problems = validate.promtool_problems(validate.find_promtool())
    assert len(problems) == 1 and "dashboard-queries.yml" in problems[0]


def _pod(docs: list[dict[str, Any]], role: str) -> Any:
    resources = k8s_policy.Resources(docs)
    return next(pod for pod in resources.pods if policy._role(pod) == role)


@pytest.mark.parametrize("name", ["base", "prod-operator"])
def test_network_is_closed_but_for_the_services_own_connections(rendered: dict, name: str) -> None:
    docs = rendered[name]
    resources = k8s_policy.Resources(docs)
    learner, worker = _pod(docs, "learner"), _pod(docs, "worker")
    evaluator, prometheus = _pod(docs, "evaluator"), _pod(docs, "prometheus")
    assert policy.check_network(resources) == []
    assert policy.connection_allowed(resources, worker, learner, 5555)
    assert policy.connection_allowed(resources, evaluator, learner, 5556)
    assert policy.connection_allowed(resources, prometheus, worker, 9100)
    assert not policy.connection_allowed(resources, worker, learner, 5556)
    assert not policy.connection_allowed(resources, worker, evaluator, 9100)
    assert not policy.connection_allowed(resources, None, learner, 5555)


def test_operator_prometheus_namespace_is_admitted_to_metrics_only(rendered: dict) -> None:
    operator = _get(rendered["prod-operator"], "NetworkPolicy", "a3c-metrics-operator")
    (rule,) = operator["spec"]["ingress"]
    assert [p["port"] for p in rule["ports"]] == ["metrics"]
    assert rule["from"][0]["namespaceSelector"]["matchLabels"]
    assert not any(
        d["kind"] == "NetworkPolicy" and d["metadata"]["name"] == "a3c-metrics-operator"
        for d in rendered["prod"]
    )


def test_network_policy_mistakes_are_caught(rendered: dict) -> None:
    docs = [d for d in rendered["base"] if d["metadata"]["name"] != "default-deny"]
    problems = policy.check_network(k8s_policy.Resources(docs))
    assert any("no default deny" in p for p in problems)
    opened = json.loads(json.dumps(rendered["base"]))
    del _get(opened, "NetworkPolicy", "a3c-learner")["spec"]["ingress"][0]["from"]
    problems = policy.check_network(k8s_policy.Resources(opened))
    assert problems == ["NetworkPolicy: stranger -> learner:gradients (5555) is open"]
    closed = json.loads(json.dumps(rendered["base"]))
    _get(closed, "NetworkPolicy", "a3c-metrics")["spec"]["ingress"] = []
    problems = policy.check_network(k8s_policy.Resources(closed))
    assert "NetworkPolicy: prometheus -> worker:metrics (9100) is blocked" in problems


def test_curve_certificates_must_come_from_the_mounted_secret(rendered: dict) -> None:
    docs = json.loads(json.dumps(rendered["dev"]))
    assert policy.check_a3c(k8s_policy.Resources(docs)) == []
    worker = _get(docs, "Deployment", "a3c-worker")["spec"]["template"]["spec"]
    env = worker["containers"][0]["env"]
    worker["containers"][0]["env"] = [e for e in env if e["name"] != "A3C_CURVE_SERVER_KEY_FILE"]
    learner = _get(docs, "StatefulSet", "a3c-learner")["spec"]["template"]["spec"]
    curve = next(v for v in learner["volumes"] if v["name"] == "curve")
    curve["secret"]["items"] = [
        i for i in curve["secret"]["items"] if i["key"] != "client-worker.key"
    ]
    secret = next(
        d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"].startswith("a3c-curve")
    )
    del secret["data"]["evaluator.key_secret"]
    problems = policy.check_a3c(k8s_policy.Resources(docs))
    assert any(
        "A3C_CURVE_SERVER_KEY_FILE must name a file in a mounted Secret" in p for p in problems
    )
    assert any("has no key evaluator.key_secret" in p for p in problems)
    assert len(problems) == 2, problems  # clients/ keeps the evaluator's key: still a directory
