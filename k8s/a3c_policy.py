"""The A3C deployment's own rules: the wiring between the services that no schema can see.

The settings each container starts with must pass the services' own config loader; the learner
address must lead to the learner's ports; probes and Prometheus must use the metrics port the
services serve; checkpoints must be on a persistent volume; the shared key must be a mounted
Secret; and Kubernetes' copies of the monitoring files must be the files themselves.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import PurePosixPath
from unittest import mock

import yaml
from k8s_policy import COMPONENT, NAME, Doc, Pod, Resources, pod_ports, selects

A3C_NAME = "a3c-breakout"
ANY_ADDRESS = ("0.0.0.0", "::", "")
HEALTH_PATHS = ("/healthz", "/readyz", "/health")
MIN_LEARNER_GRACE_S = 60


@dataclass(frozen=True)
class MonitoringSources:
    """The shared monitoring files; Kubernetes' copies of them must not drift."""

    dashboard: str
    alerts: str
    prometheus_config: str


def component(pod: Pod) -> str | None:
    """learner, worker or evaluator for an A3C pod; None for any other pod."""
    return pod.labels.get(COMPONENT) if pod.labels.get(NAME) == A3C_NAME else None


def _env(r: Resources, container: Doc) -> dict[str, str]:
    """The literal environment a container starts with (ConfigMaps first, then env)."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        configmap = r.get("ConfigMap", source.get("configMapRef", {}).get("name", ""))
        if configmap:
            prefix = source.get("prefix", "")
            env.update({prefix + k: str(v) for k, v in configmap.get("data", {}).items()})
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = str(item["value"])
    return env


def config_problems(where: str, env: dict[str, str]) -> list[str]:
    """Run the services' own config loader on the container's A3C_* settings: a typo in a
    name, a bad value or a missing relation fails here instead of in a crash-looping pod."""
    try:
        from common.config import Config, ConfigError, load_config
    except ImportError as error:
        return [f"{where}: cannot import common.config to check A3C_* settings ({error})"]
    settings = {k: v for k, v in env.items() if k.startswith("A3C_")}
    problems = [
        f"{where}: {k} is not a setting of the services (a typo?)"
        for k in settings
        if k[4:].lower() not in Config.model_fields
    ]
    if "A3C_AUTH_KEY" in settings:
        problems.append(
            f"{where}: A3C_AUTH_KEY in plain text; mount a Secret and set A3C_AUTH_KEY_FILE"
        )
    settings = {
        k: v
        for k, v in settings.items()
        if k[4:].lower() in Config.model_fields and k != "A3C_AUTH_KEY_FILE"
    }
    with mock.patch.dict(os.environ, settings, clear=True):
        try:
            load_config()
        except ConfigError as error:
            problems.append(f"{where}: " + " ".join(str(error).split()))
    return problems


def _mount_for(container: Doc, path: str) -> Doc | None:
    """The volumeMount that holds `path` (the deepest one)."""
    mounts = [
        m
        for m in container.get("volumeMounts", [])
        if PurePosixPath(path).is_relative_to(m["mountPath"])
    ]
    return max(mounts, key=lambda m: len(m["mountPath"]), default=None)


def _check_a3c_container(r: Resources, pod: Pod, c: Doc, env: dict[str, str]) -> list[str]:
    where = f"{pod.name}: container {c['name']}"
    problems = config_problems(where, env)
    if pod.spec.get("enableServiceLinks") is not False:
        problems.append(
            f"{pod.name}: needs enableServiceLinks: false, or Kubernetes injects "
            "<SERVICE>_PORT variables that can collide with A3C_* settings"
        )
    ports = pod_ports(pod)
    metrics_port = int(env.get("A3C_METRICS_PORT", 9100))
    if ports.get("metrics") != metrics_port:
        problems.append(
            f"{where}: needs a container port named metrics = A3C_METRICS_PORT ({metrics_port})"
        )
    if env.get("A3C_METRICS_HOST", "127.0.0.1") not in ANY_ADDRESS:
        problems.append(
            f"{where}: A3C_METRICS_HOST must be 0.0.0.0, or probes and Prometheus "
            "cannot reach the metrics port"
        )
    for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
        probe = c.get(kind)
        if probe is None:
            continue
        http = probe.get("httpGet", {})
        if http.get("path") not in HEALTH_PATHS or http.get("port") not in (
            "metrics",
            metrics_port,
        ):
            problems.append(f"{where}: {kind} must GET /healthz on the metrics port")
    annotations = pod.annotations
    if annotations.get("prometheus.io/scrape") != "true" or annotations.get(
        "prometheus.io/port"
    ) != str(metrics_port):
        problems.append(
            f"{pod.name}: needs prometheus.io/scrape: 'true' and prometheus.io/port: "
            f"'{metrics_port}' annotations so Prometheus finds it"
        )
    key_file = env.get("A3C_AUTH_KEY_FILE")
    mount = _mount_for(c, key_file) if key_file else None
    volume: Doc = next(
        (v for v in pod.spec.get("volumes", []) if mount and v["name"] == mount["name"]), {}
    )
    if not key_file or "secret" not in volume:
        problems.append(
            f"{where}: A3C_AUTH_KEY_FILE must name a file in a mounted Secret "
            "(messages are signed with the shared key)"
        )
    elif secret := r.get("Secret", volume["secret"]["secretName"]):
        key = PurePosixPath(key_file).name
        if key not in {**secret.get("data", {}), **secret.get("stringData", {})}:
            problems.append(f"{where}: Secret {secret['metadata']['name']} has no key {key}")
    return problems


def _check_learner(r: Resources, learner: Pod, c: Doc, env: dict[str, str]) -> list[str]:
    where = learner.name
    problems = []
    kind, spec = learner.owner["kind"], learner.owner["spec"]
    single = spec.get("replicas", 1) == 1
    if (
        not single
        or kind not in ("StatefulSet", "Deployment")
        or (kind == "Deployment" and spec.get("strategy", {}).get("type") != "Recreate")
    ):
        problems.append(
            f"{where}: only one learner may ever run: a StatefulSet of 1, or a "
            "Deployment of 1 with strategy Recreate"
        )
    if env.get("A3C_HOST", "127.0.0.1") not in ANY_ADDRESS:
        problems.append(f"{where}: A3C_HOST must be 0.0.0.0 so workers can connect")
    checkpoint_dir = env.get("A3C_CHECKPOINT_DIR")
    mount = _mount_for(c, checkpoint_dir) if checkpoint_dir else None
    templates = {t["metadata"]["name"] for t in spec.get("volumeClaimTemplates", [])}
    claims = {v["name"] for v in learner.spec.get("volumes", []) if "persistentVolumeClaim" in v}
    if not mount or mount["name"] not in templates | claims:
        problems.append(
            f"{where}: A3C_CHECKPOINT_DIR ({checkpoint_dir}) must be on a "
            "PersistentVolumeClaim, or checkpoints die with the pod"
        )
    grace = learner.spec.get("terminationGracePeriodSeconds", 30)
    if grace < MIN_LEARNER_GRACE_S:
        problems.append(
            f"{where}: terminationGracePeriodSeconds {grace} < "
            f"{MIN_LEARNER_GRACE_S}: too short for the final checkpoint"
        )
    if not any(
        selects(p["spec"].get("selector", {}).get("matchLabels"), learner.labels)
        for p in r.of_kind("PodDisruptionBudget")
    ):
        problems.append(f"{where}: no PodDisruptionBudget protects the learner")
    return problems


def _check_learner_address(r: Resources, learner: Pod, pod: Pod, env: dict[str, str]) -> list[str]:
    """A3C_LEARNER must name a Service that reaches the learner's ROUTER port, and the port
    after it (the weights PUB socket the evaluator subscribes to)."""
    address = env.get("A3C_LEARNER", "")
    host, _, port = address.rpartition(":")
    svc = r.get("Service", host.split(".")[0]) if port.isdigit() else None
    where = f"{pod.name}: A3C_LEARNER={address}"
    if svc is None:
        return [f"{where} does not name a Service of this deployment"]
    if not selects(svc["spec"].get("selector"), learner.labels):
        return [f"{where}: Service {host} does not select the learner"]
    learner_port = int(_env(r, learner.spec["containers"][0]).get("A3C_PORT", 5555))
    problems = []
    for offset, role in ((0, "gradients"), (1, "weights")):
        entry = next((p for p in svc["spec"]["ports"] if p["port"] == int(port) + offset), None)
        target = entry.get("targetPort", entry["port"]) if entry else None
        if isinstance(target, str):
            target = pod_ports(learner).get(target)
        if target != learner_port + offset:
            problems.append(
                f"{where}: Service port {int(port) + offset} must lead to the "
                f"learner's {role} port {learner_port + offset}"
            )
    return problems


def check_a3c(r: Resources) -> list[str]:
    pods = [pod for pod in r.pods if component(pod)]
    learners = [pod for pod in pods if component(pod) == "learner"]
    problems = [] if len(learners) == 1 else [f"{len(learners)} learner workloads; need one"]
    for pod in pods:
        container = pod.spec["containers"][0]
        env = _env(r, container)
        problems += _check_a3c_container(r, pod, container, env)
        if component(pod) == "learner":
            problems += _check_learner(r, pod, container, env)
        elif len(learners) == 1:
            problems += _check_learner_address(r, learners[0], pod, env)
    return problems


# --- Monitoring ---------------------------------------------------------------------------


def check_monitoring(r: Resources, sources: MonitoringSources) -> list[str]:
    """Kubernetes' copies of the shared monitoring files must be the files, byte for byte."""
    problems = []
    copies = {
        "a3c-dashboard.json": sources.dashboard,
        "alerts.yml": sources.alerts,
        "prometheus.yml": sources.prometheus_config,
    }
    for cm in r.of_kind("ConfigMap"):
        for key, text in copies.items():
            if key in cm.get("data", {}) and cm["data"][key] != text:
                problems.append(
                    f"ConfigMap/{cm['metadata']['name']}: {key} differs from the "
                    "file in k8s/base/monitoring; generate it with configMapGenerator"
                )
    grafana = any(pod.labels.get(NAME) == "grafana" for pod in r.pods)
    if grafana and not any(
        "a3c-dashboard.json" in cm.get("data", {}) for cm in r.of_kind("ConfigMap")
    ):
        problems.append("Grafana is deployed without the a3c-dashboard.json ConfigMap")
    groups = yaml.safe_load(sources.alerts)["groups"]
    for rule in r.of_kind("PrometheusRule"):
        if rule.get("spec", {}).get("groups") != groups:
            problems.append(
                f"PrometheusRule/{rule['metadata']['name']}: differs from alerts.yml; "
                "run `python k8s/validate.py --sync-rules`"
            )
    for monitor in r.of_kind("ServiceMonitor"):
        name = f"ServiceMonitor/{monitor['metadata']['name']}"
        selector = monitor.get("spec", {}).get("selector", {}).get("matchLabels")
        services = [
            s for s in r.of_kind("Service") if selects(selector, s["metadata"].get("labels", {}))
        ]
        if not services:
            problems.append(f"{name}: selector {selector} matches no Service")
        for endpoint in monitor.get("spec", {}).get("endpoints", []):
            for svc in services:
                if endpoint.get("port") not in {p.get("name") for p in svc["spec"]["ports"]}:
                    problems.append(
                        f"{name}: Service/{svc['metadata']['name']} has no port "
                        f"named {endpoint.get('port')}"
                    )
    return problems


def unknown_metric_problems(queries: dict[str, str]) -> list[str]:
    """A query naming a metric the services do not expose shows nothing and alerts never."""
    try:
        from common.samples import exposed_names, metric_names

        known = exposed_names()
    except ImportError as error:
        return [f"cannot import common.metrics to check metric names ({error})"]
    problems = []
    for where, expr in queries.items():
        for name in sorted(metric_names(expr) - known):
            problems.append(f"{where}: no service exposes a metric named {name}")
    return problems


def check(r: Resources, sources: MonitoringSources) -> list[str]:
    return check_a3c(r) + check_monitoring(r, sources)
