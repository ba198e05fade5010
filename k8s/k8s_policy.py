"""The project's own rules for rendered manifests: what a schema cannot see.

Each check takes every rendered resource and returns problems as "Kind/name: what is wrong".
Generic rules (limits, probes, non-root, pinned images, labels, references that resolve) hold
for every pod; the A3C rules check the wiring between the services: the settings the services'
own config accepts, the learner address and ports, the metrics port the probes and Prometheus
use, the checkpoint volume, the shared key mount.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any
from unittest import mock

import yaml

Doc = dict[str, Any]
A3C_NAME = "a3c-breakout"
NAME, PART_OF, COMPONENT = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/part-of",
    "app.kubernetes.io/component",
)
WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob")
ANY_ADDRESS = ("0.0.0.0", "::", "")
HEALTH_PATHS = ("/healthz", "/readyz", "/health")
MIN_LEARNER_GRACE_S = 60


@dataclass(frozen=True)
class MonitoringSources:
    """The shared monitoring files; Kubernetes' copies of them must not drift."""

    dashboard: str
    alerts: str
    prometheus_config: str


@dataclass
class Pod:
    """A workload's pod template, with what the checks need to find in it."""

    owner: Doc
    spec: Doc
    labels: dict[str, str]
    annotations: dict[str, str]

    @property
    def name(self) -> str:
        return f"{self.owner['kind']}/{self.owner['metadata']['name']}"

    @property
    def component(self) -> str | None:
        return self.labels.get(COMPONENT) if self.labels.get(NAME) == A3C_NAME else None


class Resources:
    def __init__(self, docs: list[Doc]) -> None:
        self.docs = docs
        self.pods = [pod for doc in docs if (pod := _pod_of(doc))]

    def of_kind(self, kind: str) -> list[Doc]:
        return [doc for doc in self.docs if doc.get("kind") == kind]

    def get(self, kind: str, name: str) -> Doc | None:
        return next((d for d in self.of_kind(kind) if d["metadata"]["name"] == name), None)


def _pod_of(doc: Doc) -> Pod | None:
    if doc.get("kind") not in WORKLOADS:
        return None
    spec = doc.get("spec", {})
    if doc["kind"] == "CronJob":
        spec = spec.get("jobTemplate", {}).get("spec", {})
    template = spec.get("template", {})
    meta = template.get("metadata", {})
    return Pod(doc, template.get("spec", {}), meta.get("labels", {}), meta.get("annotations", {}))


def _containers(pod: Pod, init: bool = True) -> Iterator[Doc]:
    yield from pod.spec.get("containers", [])
    if init:
        yield from pod.spec.get("initContainers", [])


def _selects(selector: dict[str, str] | None, labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


# --- Every resource and every pod -------------------------------------------------------


def check_labels(r: Resources) -> list[str]:
    problems = []
    for doc in r.docs:
        labels = doc.get("metadata", {}).get("labels", {})
        missing = [key for key in (NAME, PART_OF) if key not in labels]
        if missing:
            problems.append(f"{doc['kind']}/{doc['metadata']['name']}: missing labels {missing}")
    for pod in r.pods:
        selector = pod.owner["spec"].get("selector", {}).get("matchLabels")
        if selector and not _selects(selector, pod.labels):
            problems.append(f"{pod.name}: selector {selector} does not match the pod labels")
        if NAME not in pod.labels or COMPONENT not in pod.labels:
            problems.append(f"{pod.name}: pod template needs {NAME} and {COMPONENT} labels")
    return problems


CLUSTER_SCOPED = ("Namespace", "ClusterRole", "ClusterRoleBinding", "PriorityClass",
                  "StorageClass", "PersistentVolume", "CustomResourceDefinition")


def check_namespace(r: Resources) -> list[str]:
    """Everything in the one namespace the overlay creates; a resource without one would land
    in whatever namespace kubectl's context happens to point at."""
    created = [d["metadata"]["name"] for d in r.of_kind("Namespace")]
    problems = [] if len(created) == 1 else [f"expected one Namespace, found {created}"]
    for doc in r.docs:
        namespace = doc["metadata"].get("namespace")
        if doc["kind"] not in CLUSTER_SCOPED and (namespace is None or namespace not in created):
            problems.append(f"{doc['kind']}/{doc['metadata']['name']}: namespace {namespace} "
                            f"is not the overlay's namespace {created}")
    return problems


def check_images(r: Resources) -> list[str]:
    problems = []
    for pod in r.pods:
        for c in _containers(pod):
            image = c.get("image", "")
            last = image.rsplit("/", 1)[-1]
            if "@sha256:" in image:
                continue
            if ":" not in last or last.endswith(":latest"):
                problems.append(f"{pod.name}: container {c['name']}: image {image!r} must be "
                                "pinned to a tag other than latest (or a digest)")
    return problems


_UNITS = {"m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
          "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def quantity(value: str | int | float) -> float:
    match = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", str(value))
    if not match or match.group(2) not in ("", *_UNITS):
        raise ValueError(f"bad quantity {value!r}")
    return float(match.group(1)) * _UNITS.get(match.group(2), 1)


def check_resources(r: Resources) -> list[str]:
    problems = []
    for pod in r.pods:
        for c in _containers(pod):
            res = c.get("resources", {})
            for kind in ("requests", "limits"):
                missing = [x for x in ("cpu", "memory") if x not in res.get(kind, {})]
                if missing:
                    problems.append(f"{pod.name}: container {c['name']}: no {kind} for {missing}")
            for x in ("cpu", "memory"):
                req, lim = res.get("requests", {}).get(x), res.get("limits", {}).get(x)
                if req is not None and lim is not None and quantity(req) > quantity(lim):
                    problems.append(f"{pod.name}: container {c['name']}: {x} request {req} "
                                    f"exceeds its limit {lim}")
    return problems


def check_probes(r: Resources) -> list[str]:
    problems = []
    for pod in r.pods:
        if pod.owner["kind"] in ("Job", "CronJob"):
            continue
        for c in _containers(pod, init=False):
            missing = [p for p in ("livenessProbe", "readinessProbe") if p not in c]
            if missing:
                problems.append(f"{pod.name}: container {c['name']}: no {' or '.join(missing)}")
    return problems


def check_security(r: Resources) -> list[str]:
    problems = []
    for pod in r.pods:
        pod_sc = pod.spec.get("securityContext", {})
        for flag in ("hostNetwork", "hostPID", "hostIPC"):
            if pod.spec.get(flag):
                problems.append(f"{pod.name}: {flag} must not be set")
        if any("hostPath" in v for v in pod.spec.get("volumes", [])):
            problems.append(f"{pod.name}: hostPath volumes are not allowed")
        for c in _containers(pod):
            sc = c.get("securityContext", {})

            def effective(key: str) -> Any:
                return sc.get(key, pod_sc.get(key))

            where = f"{pod.name}: container {c['name']}"
            if effective("runAsNonRoot") is not True or effective("runAsUser") == 0:
                problems.append(f"{where}: must run as non-root (runAsNonRoot: true)")
            if sc.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{where}: needs allowPrivilegeEscalation: false")
            if sc.get("privileged"):
                problems.append(f"{where}: must not be privileged")
            if sc.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{where}: needs readOnlyRootFilesystem: true")
            caps = sc.get("capabilities", {})
            if "ALL" not in caps.get("drop", []) or caps.get("add"):
                problems.append(f"{where}: must drop ALL capabilities and add none")
            seccomp = (effective("seccompProfile") or {}).get("type")
            if seccomp not in ("RuntimeDefault", "Localhost"):
                problems.append(f"{where}: needs seccompProfile RuntimeDefault")
    return problems


def check_references(r: Resources) -> list[str]:
    """ConfigMaps, volume claims and service accounts a pod uses must be in the output.
    Secrets may come from outside (the prod key is created by hand or a secret manager)."""
    problems = []
    claim_templates = {
        (pod.name, t["metadata"]["name"])
        for pod in r.pods
        for t in pod.owner["spec"].get("volumeClaimTemplates", [])
    }
    for pod in r.pods:
        configmaps = [v["configMap"]["name"] for v in pod.spec.get("volumes", []) if "configMap" in v]
        for c in _containers(pod):
            configmaps += [e["configMapRef"]["name"] for e in c.get("envFrom", [])
                           if "configMapRef" in e and not e["configMapRef"].get("optional")]
        problems += [f"{pod.name}: ConfigMap {name} is not defined"
                     for name in configmaps if not r.get("ConfigMap", name)]
        for volume in pod.spec.get("volumes", []):
            claim = volume.get("persistentVolumeClaim", {}).get("claimName")
            if claim and not r.get("PersistentVolumeClaim", claim):
                problems.append(f"{pod.name}: PersistentVolumeClaim {claim} is not defined")
        volumes = {v["name"] for v in pod.spec.get("volumes", [])}
        for c in _containers(pod):
            for mount in c.get("volumeMounts", []):
                if mount["name"] not in volumes and (pod.name, mount["name"]) not in claim_templates:
                    problems.append(f"{pod.name}: volumeMount {mount['name']} has no volume")
        account = pod.spec.get("serviceAccountName")
        if account and account != "default" and not r.get("ServiceAccount", account):
            problems.append(f"{pod.name}: ServiceAccount {account} is not defined")
    for binding in r.of_kind("RoleBinding"):
        namespace = binding["metadata"].get("namespace")
        for subject in binding.get("subjects", []):
            if subject.get("kind") == "ServiceAccount" and subject.get("namespace") != namespace:
                problems.append(f"RoleBinding/{binding['metadata']['name']}: subject "
                                f"{subject['name']} is in namespace {subject.get('namespace')}, "
                                f"not {namespace}")
    return problems


def _pod_ports(pod: Pod) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for c in _containers(pod, init=False)
            for p in c.get("ports", []) if "name" in p}


def check_services(r: Resources) -> list[str]:
    """A Service must select some pod, and its named target ports must exist on those pods."""
    problems = []
    for svc in r.of_kind("Service"):
        selector = svc.get("spec", {}).get("selector")
        if not selector:
            continue
        pods = [pod for pod in r.pods if _selects(selector, pod.labels)]
        name = f"Service/{svc['metadata']['name']}"
        if not pods:
            problems.append(f"{name}: selector {selector} matches no pod")
        for port in svc["spec"].get("ports", []):
            target = port.get("targetPort", port["port"])
            for pod in pods:
                if isinstance(target, str) and target not in _pod_ports(pod):
                    problems.append(f"{name}: targetPort {target} is not a port of {pod.name}")
    for hpa in r.of_kind("HorizontalPodAutoscaler"):
        ref = hpa["spec"]["scaleTargetRef"]
        target = r.get(ref["kind"], ref["name"])
        name = f"HorizontalPodAutoscaler/{hpa['metadata']['name']}"
        if target is None:
            problems.append(f"{name}: scale target {ref['kind']}/{ref['name']} is not defined")
        elif "replicas" in target["spec"]:
            problems.append(f"{name}: {ref['kind']}/{ref['name']} sets spec.replicas, which "
                            "resets the autoscaler's count on every apply; remove it")
    return problems


# --- The A3C services -------------------------------------------------------------------


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
    problems = [f"{where}: {k} is not a setting of the services (a typo?)"
                for k in settings if k[4:].lower() not in Config.model_fields]
    if "A3C_AUTH_KEY" in settings:
        problems.append(f"{where}: A3C_AUTH_KEY in plain text; mount a Secret and set "
                        "A3C_AUTH_KEY_FILE")
    settings = {k: v for k, v in settings.items()
                if k[4:].lower() in Config.model_fields and k != "A3C_AUTH_KEY_FILE"}
    with mock.patch.dict(os.environ, settings, clear=True):
        try:
            load_config()
        except ConfigError as error:
            problems.append(f"{where}: {error}".replace("\n", " "))
    return problems


def _mount_for(container: Doc, path: str) -> Doc | None:
    """The volumeMount that holds `path` (the deepest one)."""
    mounts = [m for m in container.get("volumeMounts", [])
              if PurePosixPath(path).is_relative_to(m["mountPath"])]
    return max(mounts, key=lambda m: len(m["mountPath"]), default=None)


def _check_a3c_container(r: Resources, pod: Pod, c: Doc, env: dict[str, str]) -> list[str]:
    where = f"{pod.name}: container {c['name']}"
    problems = config_problems(where, env)
    if pod.spec.get("enableServiceLinks") is not False:
        problems.append(f"{pod.name}: needs enableServiceLinks: false, or Kubernetes injects "
                        "<SERVICE>_PORT variables that can collide with A3C_* settings")
    ports = _pod_ports(pod)
    metrics_port = int(env.get("A3C_METRICS_PORT", 9100))
    if ports.get("metrics") != metrics_port:
        problems.append(f"{where}: needs a container port named metrics = A3C_METRICS_PORT "
                        f"({metrics_port})")
    if env.get("A3C_METRICS_HOST", "127.0.0.1") not in ANY_ADDRESS:
        problems.append(f"{where}: A3C_METRICS_HOST must be 0.0.0.0, or probes and Prometheus "
                        "cannot reach the metrics port")
    for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
        probe = c.get(kind)
        if probe is None:
            continue
        http = probe.get("httpGet", {})
        if http.get("path") not in HEALTH_PATHS or http.get("port") not in ("metrics", metrics_port):
            problems.append(f"{where}: {kind} must GET /healthz on the metrics port")
    annotations = pod.annotations
    if (annotations.get("prometheus.io/scrape") != "true"
            or annotations.get("prometheus.io/port") != str(metrics_port)):
        problems.append(f"{pod.name}: needs prometheus.io/scrape: 'true' and prometheus.io/port: "
                        f"'{metrics_port}' annotations so Prometheus finds it")
    key_file = env.get("A3C_AUTH_KEY_FILE")
    mount = _mount_for(c, key_file) if key_file else None
    volume = next((v for v in pod.spec.get("volumes", []) if mount and v["name"] == mount["name"]), {})
    if not key_file or "secret" not in volume:
        problems.append(f"{where}: A3C_AUTH_KEY_FILE must name a file in a mounted Secret "
                        "(messages are signed with the shared key)")
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
    if not single or kind not in ("StatefulSet", "Deployment") or (
        kind == "Deployment" and spec.get("strategy", {}).get("type") != "Recreate"
    ):
        problems.append(f"{where}: only one learner may ever run: a StatefulSet of 1, or a "
                        "Deployment of 1 with strategy Recreate")
    if env.get("A3C_HOST", "127.0.0.1") not in ANY_ADDRESS:
        problems.append(f"{where}: A3C_HOST must be 0.0.0.0 so workers can connect")
    checkpoint_dir = env.get("A3C_CHECKPOINT_DIR")
    mount = _mount_for(c, checkpoint_dir) if checkpoint_dir else None
    templates = {t["metadata"]["name"] for t in spec.get("volumeClaimTemplates", [])}
    claims = {v["name"] for v in learner.spec.get("volumes", []) if "persistentVolumeClaim" in v}
    if not mount or mount["name"] not in templates | claims:
        problems.append(f"{where}: A3C_CHECKPOINT_DIR ({checkpoint_dir}) must be on a "
                        "PersistentVolumeClaim, or checkpoints die with the pod")
    grace = learner.spec.get("terminationGracePeriodSeconds", 30)
    if grace < MIN_LEARNER_GRACE_S:
        problems.append(f"{where}: terminationGracePeriodSeconds {grace} < "
                        f"{MIN_LEARNER_GRACE_S}: too short for the final checkpoint")
    if not any(_selects(p["spec"].get("selector", {}).get("matchLabels"), learner.labels)
               for p in r.of_kind("PodDisruptionBudget")):
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
    if not _selects(svc["spec"].get("selector"), learner.labels):
        return [f"{where}: Service {host} does not select the learner"]
    learner_port = int(_env(r, learner.spec["containers"][0]).get("A3C_PORT", 5555))
    problems = []
    for offset, role in ((0, "gradients"), (1, "weights")):
        entry = next((p for p in svc["spec"]["ports"] if p["port"] == int(port) + offset), None)
        target = entry.get("targetPort", entry["port"]) if entry else None
        if isinstance(target, str):
            target = _pod_ports(learner).get(target)
        if target != learner_port + offset:
            problems.append(f"{where}: Service port {int(port) + offset} must lead to the "
                            f"learner's {role} port {learner_port + offset}")
    return problems


def check_a3c(r: Resources) -> list[str]:
    pods = [pod for pod in r.pods if pod.component]
    learners = [pod for pod in pods if pod.component == "learner"]
    problems = [] if len(learners) == 1 else [f"{len(learners)} learner workloads; need one"]
    for pod in pods:
        container = pod.spec["containers"][0]
        env = _env(r, container)
        problems += _check_a3c_container(r, pod, container, env)
        if pod.component == "learner":
            problems += _check_learner(r, pod, container, env)
        elif len(learners) == 1:
            problems += _check_learner_address(r, learners[0], pod, env)
    return problems


# --- Monitoring ---------------------------------------------------------------------------


def check_monitoring(r: Resources, sources: MonitoringSources) -> list[str]:
    """Kubernetes' copies of the shared monitoring files must be the files, byte for byte."""
    problems = []
    copies = {"a3c-dashboard.json": sources.dashboard, "alerts.yml": sources.alerts,
              "prometheus.yml": sources.prometheus_config}
    for cm in r.of_kind("ConfigMap"):
        for key, text in copies.items():
            if key in cm.get("data", {}) and cm["data"][key] != text:
                problems.append(f"ConfigMap/{cm['metadata']['name']}: {key} differs from the "
                                "file in k8s/base/monitoring; generate it with configMapGenerator")
    grafana = any(pod.labels.get(NAME) == "grafana" for pod in r.pods)
    if grafana and not any("a3c-dashboard.json" in cm.get("data", {}) for cm in r.of_kind("ConfigMap")):
        problems.append("Grafana is deployed without the a3c-dashboard.json ConfigMap")
    groups = yaml.safe_load(sources.alerts)["groups"]
    for rule in r.of_kind("PrometheusRule"):
        if rule.get("spec", {}).get("groups") != groups:
            problems.append(f"PrometheusRule/{rule['metadata']['name']}: differs from alerts.yml; "
                            "run `python k8s/validate.py --sync-rules`")
    for monitor in r.of_kind("ServiceMonitor"):
        name = f"ServiceMonitor/{monitor['metadata']['name']}"
        selector = monitor.get("spec", {}).get("selector", {}).get("matchLabels")
        services = [s for s in r.of_kind("Service")
                    if _selects(selector, s["metadata"].get("labels", {}))]
        if not services:
            problems.append(f"{name}: selector {selector} matches no Service")
        for endpoint in monitor.get("spec", {}).get("endpoints", []):
            for svc in services:
                if endpoint.get("port") not in {p.get("name") for p in svc["spec"]["ports"]}:
                    problems.append(f"{name}: Service/{svc['metadata']['name']} has no port "
                                    f"named {endpoint.get('port')}")
    return problems


_SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"),
             "summary": ("", "_sum", "_count", "_created")}


def known_metric_names() -> set[str]:
    """Every series name the services expose, from the registries in common/metrics.py."""
    from common import metrics

    names = set()
    for factory in (metrics.learner_metrics, metrics.worker_metrics, metrics.evaluator_metrics):
        for family in factory().registry.collect():
            names |= {family.name + s for s in _SUFFIXES.get(family.type, ("",))}
    return names


def unknown_metric_problems(queries: dict[str, str]) -> list[str]:
    """A query naming a metric the services do not expose shows nothing and alerts never."""
    try:
        known = known_metric_names()
    except ImportError as error:
        return [f"cannot import common.metrics to check metric names ({error})"]
    problems = []
    for where, expr in queries.items():
        for name in sorted(set(re.findall(r"\ba3c_[a-zA-Z0-9_]+", expr)) - known):
            problems.append(f"{where}: no service exposes a metric named {name}")
    return problems


CHECKS: tuple[Callable[[Resources], list[str]], ...] = (
    check_labels, check_namespace, check_images, check_resources, check_probes, check_security,
    check_references, check_services, check_a3c,
)


def check(docs: list[Doc], sources: MonitoringSources) -> list[str]:
    r = Resources(docs)
    problems = [p for c in CHECKS for p in c(r)] + check_monitoring(r, sources)
    return list(dict.fromkeys(problems))  # one line per problem, in order
