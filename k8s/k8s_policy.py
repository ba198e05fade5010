"""Kubernetes rules for every rendered resource, beyond what a schema can see.

Each check takes all the resources of one kustomization and returns problems as
"Kind/name: what is wrong": conventional labels, one namespace, requests within limits, no
hostPath volumes, and references that resolve (ConfigMaps, claims, Services to pods, an
autoscaler to its target). The generic pod checks (probes, requests and limits, pinned
images, non-root and no privileges: the `restricted` Pod Security level) are checkov's
(checkov_policy.py); the A3C-specific wiring is in a3c_policy.py.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

Doc = dict[str, Any]
NAME, PART_OF, COMPONENT = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/part-of",
    "app.kubernetes.io/component",
)
WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob")


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


def containers(pod: Pod, init: bool = True) -> Iterator[Doc]:
    yield from pod.spec.get("containers", [])
    if init:
        yield from pod.spec.get("initContainers", [])


def selects(selector: dict[str, str] | None, labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in (selector or {}).items())


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
        if selector and not selects(selector, pod.labels):
            problems.append(f"{pod.name}: selector {selector} does not match the pod labels")
        if NAME not in pod.labels or COMPONENT not in pod.labels:
            problems.append(f"{pod.name}: pod template needs {NAME} and {COMPONENT} labels")
    return problems


CLUSTER_SCOPED = (
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "PriorityClass",
    "StorageClass",
    "PersistentVolume",
    "CustomResourceDefinition",
)


def check_namespace(r: Resources) -> list[str]:
    """Everything in the one namespace the overlay creates; a resource without one would land
    in whatever namespace kubectl's context happens to point at."""
    created = [d["metadata"]["name"] for d in r.of_kind("Namespace")]
    problems = [] if len(created) == 1 else [f"expected one Namespace, found {created}"]
    for doc in r.docs:
        namespace = doc["metadata"].get("namespace")
        if doc["kind"] not in CLUSTER_SCOPED and (namespace is None or namespace not in created):
            problems.append(
                f"{doc['kind']}/{doc['metadata']['name']}: namespace {namespace} "
                f"is not the overlay's namespace {created}"
            )
    return problems


_UNITS = {
    "m": 1e-3,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
}


def quantity(value: str | int | float) -> float:
    match = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", str(value))
    if not match or match.group(2) not in ("", *_UNITS):
        raise ValueError(f"bad quantity {value!r}")
    return float(match.group(1)) * _UNITS.get(match.group(2), 1)


def check_resources(r: Resources) -> list[str]:
    """A request above its limit (that requests and limits are set is checkov's check)."""
    problems = []
    for pod in r.pods:
        for c in containers(pod):
            res = c.get("resources", {})
            for x in ("cpu", "memory"):
                req, lim = res.get("requests", {}).get(x), res.get("limits", {}).get(x)
                if req is not None and lim is not None and quantity(req) > quantity(lim):
                    problems.append(
                        f"{pod.name}: container {c['name']}: {x} request {req} "
                        f"exceeds its limit {lim}"
                    )
    return problems


def check_host_paths(r: Resources) -> list[str]:
    """No hostPath volumes (checkov checks only the docker socket among them)."""
    return [
        f"{pod.name}: hostPath volumes are not allowed"
        for pod in r.pods
        if any("hostPath" in v for v in pod.spec.get("volumes", []))
    ]


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
        configmaps = [
            v["configMap"]["name"] for v in pod.spec.get("volumes", []) if "configMap" in v
        ]
        for c in containers(pod):
            configmaps += [
                e["configMapRef"]["name"]
                for e in c.get("envFrom", [])
                if "configMapRef" in e and not e["configMapRef"].get("optional")
            ]
        problems += [
            f"{pod.name}: ConfigMap {name} is not defined"
            for name in configmaps
            if not r.get("ConfigMap", name)
        ]
        for volume in pod.spec.get("volumes", []):
            claim = volume.get("persistentVolumeClaim", {}).get("claimName")
            if claim and not r.get("PersistentVolumeClaim", claim):
                problems.append(f"{pod.name}: PersistentVolumeClaim {claim} is not defined")
        volumes = {v["name"] for v in pod.spec.get("volumes", [])}
        for c in containers(pod):
            for mount in c.get("volumeMounts", []):
                if (
                    mount["name"] not in volumes
                    and (pod.name, mount["name"]) not in claim_templates
                ):
                    problems.append(f"{pod.name}: volumeMount {mount['name']} has no volume")
        account = pod.spec.get("serviceAccountName")
        if account and account != "default" and not r.get("ServiceAccount", account):
            problems.append(f"{pod.name}: ServiceAccount {account} is not defined")
    for binding in r.of_kind("RoleBinding"):
        namespace = binding["metadata"].get("namespace")
        for subject in binding.get("subjects", []):
            if subject.get("kind") == "ServiceAccount" and subject.get("namespace") != namespace:
                problems.append(
                    f"RoleBinding/{binding['metadata']['name']}: subject "
                    f"{subject['name']} is in namespace {subject.get('namespace')}, "
                    f"not {namespace}"
                )
    return problems


def pod_ports(pod: Pod) -> dict[str, int]:
    return {
        p["name"]: p["containerPort"]
        for c in containers(pod, init=False)
        for p in c.get("ports", [])
        if "name" in p
    }


def check_services(r: Resources) -> list[str]:
    """A Service must select some pod, and its named target ports must exist on those pods."""
    problems = []
    for svc in r.of_kind("Service"):
        selector = svc.get("spec", {}).get("selector")
        if not selector:
            continue
        pods = [pod for pod in r.pods if selects(selector, pod.labels)]
        name = f"Service/{svc['metadata']['name']}"
        if not pods:
            problems.append(f"{name}: selector {selector} matches no pod")
        for port in svc["spec"].get("ports", []):
            target = port.get("targetPort", port["port"])
            for pod in pods:
                if isinstance(target, str) and target not in pod_ports(pod):
                    problems.append(f"{name}: targetPort {target} is not a port of {pod.name}")
    for hpa in r.of_kind("HorizontalPodAutoscaler"):
        ref = hpa["spec"]["scaleTargetRef"]
        target = r.get(ref["kind"], ref["name"])
        name = f"HorizontalPodAutoscaler/{hpa['metadata']['name']}"
        if target is None:
            problems.append(f"{name}: scale target {ref['kind']}/{ref['name']} is not defined")
        elif "replicas" in target["spec"]:
            problems.append(
                f"{name}: {ref['kind']}/{ref['name']} sets spec.replicas, which "
                "resets the autoscaler's count on every apply; remove it"
            )
    return problems


CHECKS: tuple[Callable[[Resources], list[str]], ...] = (
    check_labels,
    check_namespace,
    check_resources,
    check_host_paths,
    check_references,
    check_services,
)


def check(r: Resources) -> list[str]:
    return [problem for check in CHECKS for problem in check(r)]
