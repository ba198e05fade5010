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
SECRET_PATHS = (
    "A3C_AUTH_KEY_FILE",
    "A3C_CURVE_KEY_FILE",
    "A3C_CURVE_SERVER_KEY_FILE",
    "A3C_CURVE_CLIENTS_DIR",
)
"""Settings that name a file (or, the clients, a directory) in a mounted Secret: they exist
only in the pod, so the config loader is not run on them here; _check_secret_paths is."""
CURVE_BY_ROLE = {
    "learner": ("A3C_CURVE_KEY_FILE", "A3C_CURVE_CLIENTS_DIR"),
    "worker": ("A3C_CURVE_KEY_FILE", "A3C_CURVE_SERVER_KEY_FILE"),
    "evaluator": ("A3C_CURVE_KEY_FILE", "A3C_CURVE_SERVER_KEY_FILE"),
}
"""The CurveZMQ settings each role needs (every connection to the learner is encrypted and
only admitted clients get in)."""


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
        if k[4:].lower() in Config.model_fields and k not in SECRET_PATHS
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
    needed = ("A3C_AUTH_KEY_FILE", *CURVE_BY_ROLE.get(component(pod) or "", ()))
    for setting in needed:
        problems += _check_secret_path(r, pod, c, env, setting)
    return problems


def _secret_keys_under(volume: Doc, relative: str) -> list[str] | None:
    """The Secret keys a mounted Secret volume shows at `relative` (a file: one key; a
    directory: every key projected below it); None when the Secret decides (no items)."""
    items = volume["secret"].get("items")
    if items is None:
        return None
    return [
        item["key"]
        for item in items
        if item["path"] == relative or item["path"].startswith(relative.rstrip("/") + "/")
    ]


def _check_secret_path(
    r: Resources, pod: Pod, c: Doc, env: dict[str, str], setting: str
) -> list[str]:
    """`setting` must name a path in a mounted Secret, and the Secret (where it is rendered)
    must hold what the path shows."""
    where = f"{pod.name}: container {c['name']}"
    path = env.get(setting)
    mount = _mount_for(c, path) if path else None
    volume: Doc = next(
        (v for v in pod.spec.get("volumes", []) if mount and v["name"] == mount["name"]), {}
    )
    if not path or mount is None or "secret" not in volume:
        what = "a directory" if setting.endswith("_DIR") else "a file"
        why = "messages are signed" if setting == "A3C_AUTH_KEY_FILE" else "CurveZMQ is on"
        return [f"{where}: {setting} must name {what} in a mounted Secret ({why})"]
    relative = str(PurePosixPath(path).relative_to(mount["mountPath"]))
    keys = _secret_keys_under(volume, relative)
    if keys is None:
        keys = [relative]
    secret = r.get("Secret", volume["secret"]["secretName"])
    if not keys:
        return [
            f"{where}: {setting} {path} is not among the items of Secret volume {volume['name']}"
        ]
    if secret is None:
        return []  # created out of band (prod)
    held = {**secret.get("data", {}), **secret.get("stringData", {})}
    return [
        f"{where}: Secret {secret['metadata']['name']} has no key {key} ({setting})"
        for key in keys
        if key not in held
    ]


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


# --- Network policies ------------------------------------------------------------------------


def _matches(selector: Doc | None, labels: dict[str, str]) -> bool:
    """A label selector (matchLabels and matchExpressions); {} selects every pod."""
    if selector is None:
        return False
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = (
            expression["key"],
            expression["operator"],
            expression.get("values", []),
        )
        present = key in labels
        if (
            (operator == "In" and labels.get(key) not in values)
            or (operator == "NotIn" and present and labels[key] in values)
            or (operator == "Exists" and not present)
            or (operator == "DoesNotExist" and present)
        ):
            return False
    return True


def _port_allowed(ports: list[Doc] | None, destination: Pod, port: int) -> bool:
    """Whether a rule's ports admit TCP `port` of `destination` (names resolve on it)."""
    if not ports:
        return True
    named = pod_ports(destination)
    for entry in ports:
        if entry.get("protocol", "TCP") != "TCP":
            continue
        wanted = entry.get("port")
        if wanted is None or wanted == port or named.get(str(wanted)) == port:
            return True
    return False


def _peer_allowed(peers: list[Doc] | None, other: Pod | None) -> bool:
    """Whether a rule's from/to admits `other`: a pod of this namespace, or (None) a pod of
    any other namespace with any labels, which only a peer open to every namespace (or an
    ipBlock, which may be any address) admits."""
    if not peers:
        return True
    for peer in peers:
        if other is None:
            if "ipBlock" in peer or (
                peer.get("namespaceSelector") == {} and not peer.get("podSelector")
            ):
                return True
        elif (
            "namespaceSelector" not in peer
            and "ipBlock" not in peer
            and _matches(peer.get("podSelector"), other.labels)
        ):
            return True
    return False


def _direction_allowed(
    r: Resources, pod: Pod, direction: str, other: Pod | None, destination: Pod, port: int
) -> bool:
    """Ingress to (or egress from) `pod`: open while no policy isolates it in that direction,
    then only what some rule of a policy that selects it admits."""
    rules_key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    isolating = [
        policy["spec"]
        for policy in r.of_kind("NetworkPolicy")
        if _matches(policy["spec"].get("podSelector"), pod.labels)
        and direction in policy["spec"].get("policyTypes", ["Ingress"])
    ]
    if not isolating:
        return True
    return any(
        _peer_allowed(rule.get(peers_key), other)
        and _port_allowed(rule.get("ports"), destination, port)
        for spec in isolating
        for rule in spec.get(rules_key, [])
    )


def connection_allowed(r: Resources, source: Pod | None, destination: Pod, port: int) -> bool:
    """Whether the rendered NetworkPolicies let `source` open a TCP connection to `port` of
    `destination`: both ends must allow it. `source` None is a pod of another namespace,
    whose egress these policies do not govern."""
    if source is not None and not _direction_allowed(
        r, source, "Egress", destination, destination, port
    ):
        return False
    return _direction_allowed(r, destination, "Ingress", source, destination, port)


NETWORK_RULES = (
    # (source, destination, port name on the destination, whether it must be open)
    ("worker", "learner", "gradients", True),
    ("evaluator", "learner", "weights", True),
    ("prometheus", "learner", "metrics", True),
    ("prometheus", "worker", "metrics", True),
    ("prometheus", "evaluator", "metrics", True),
    ("grafana", "prometheus", "http", True),
    ("worker", "learner", "weights", False),
    ("evaluator", "learner", "gradients", False),
    ("worker", "learner", "metrics", False),
    ("worker", "evaluator", "metrics", False),
    ("evaluator", "worker", "metrics", False),
    ("grafana", "learner", "gradients", False),
    ("grafana", "learner", "metrics", False),
    ("prometheus", "learner", "gradients", False),
    ("worker", "prometheus", "http", False),
    ("stranger", "learner", "gradients", False),
    ("stranger", "learner", "weights", False),
    ("stranger", "learner", "metrics", False),
    ("stranger", "prometheus", "http", False),
)
"""Who must reach whom, and who must not. A `stranger` is a pod of another namespace (another
tenant of the cluster): only the destination's ingress rules can keep it out."""


def _role(pod: Pod) -> str | None:
    return component(pod) or pod.labels.get(NAME)


def check_network(r: Resources) -> list[str]:
    """With NetworkPolicies rendered: a default deny for every pod in both directions, and
    exactly the connections of NETWORK_RULES open (a kustomization without policies is not
    checked: the network is then open by Kubernetes' default)."""
    policies = r.of_kind("NetworkPolicy")
    if not policies:
        return []
    problems = []
    if not any(
        p["spec"].get("podSelector") == {}
        and set(p["spec"].get("policyTypes", [])) >= {"Ingress", "Egress"}
        and not p["spec"].get("ingress")
        and not p["spec"].get("egress")
        for p in policies
    ):
        problems.append(
            "NetworkPolicy: no default deny (podSelector {}, Ingress and Egress, no rules)"
        )
    roles: dict[str, Pod | None] = {role: pod for pod in r.pods if (role := _role(pod))}
    roles["stranger"] = None
    for source, destination, port_name, must_be_open in NETWORK_RULES:
        target = roles.get(destination)
        if source not in roles or target is None:
            continue
        port = pod_ports(target).get(port_name)
        if port is None:
            problems.append(f"{target.name}: no port named {port_name} for NetworkPolicy checks")
            continue
        is_open = connection_allowed(r, roles[source], target, port)
        if is_open != must_be_open:
            state = "blocked" if must_be_open else "open"
            problems.append(
                f"NetworkPolicy: {source} -> {destination}:{port_name} ({port}) is {state}"
            )
    return problems


def check(r: Resources, sources: MonitoringSources) -> list[str]:
    return check_a3c(r) + check_monitoring(r, sources) + check_network(r)
