"""Offline validation of the Kubernetes manifests, for CI and for anyone editing `k8s/`.

No cluster runs here, so correctness comes from three layers, each run on what
`kubectl kustomize` renders (exactly what `kubectl apply -k` would send):
1. strict schema validation against Kubernetes 1.32 (PyPI's kubernetes-validate: wrong
   types, missing required fields, misspelled fields, unknown kinds or API versions);
2. policies: the generic pod checks from checkov (limits, probes, non-root, pinned images:
   checkov_policy.py), what checkov does not check (labels, references: k8s_policy.py),
   and the wiring between the services (a3c_policy.py: ports, the learner address, the
   checkpoint volume, A3C_* settings that the services' own config accepts);
3. the monitoring sources shared with compose: alert rules and the PromQL of every dashboard
   panel through promtool, metric names against common/metrics.py, and the copies Kubernetes
   makes of them (ConfigMaps, PrometheusRule) against the files.

Usage: python k8s/validate.py [--promtool PATH] [--checkov PATH] [KUSTOMIZATION_DIR ...]
       (default: k8s/base and every k8s/overlays/*; exit 1 listing every problem)
       python k8s/validate.py --sync-rules   rewrites the PrometheusRule from alerts.yml
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import a3c_policy  # sibling files: k8s/ is not a package
import checkov_policy
import k8s_policy

K8S = Path(__file__).resolve().parent
ROOT = K8S.parent
KUBERNETES_VERSION = "1.32.0"
MONITORING = K8S / "base" / "monitoring"
ALERTS = MONITORING / "prometheus" / "alerts.yml"
PROMETHEUS_CONFIG = MONITORING / "prometheus" / "prometheus.yml"
DASHBOARD = MONITORING / "grafana" / "a3c-dashboard.json"
PROMETHEUS_RULE = K8S / "components" / "prometheus-operator" / "prometheusrule.yaml"
DATASOURCE_UID = "prometheus"
DASHBOARD_TOPICS = (
    "score",
    "frames/s",
    "updates/s",
    "staleness",
    "rejected",
    "workers",
    "loss",
    "entropy",
    "apply",
)
"""What the dashboard must have a panel about (words of the panel titles)."""
# Custom resources have no schema in kubernetes-validate; a3c_policy checks these instead.
CUSTOM_KINDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
}


def render(directory: Path) -> list[dict[str, Any]]:
    """The resources `kubectl apply -k DIRECTORY` would send; raises ValueError if it fails."""
    result = subprocess.run(
        ["kubectl", "kustomize", str(directory)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise ValueError(f"kubectl kustomize failed: {result.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def name_of(doc: dict[str, Any]) -> str:
    return f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"


def schema_problems(docs: list[dict[str, Any]]) -> list[str]:
    """Strict validation of every resource against the Kubernetes schemas."""
    import kubernetes_validate
    from kubernetes_validate.utils import SchemaNotFoundError, ValidationError

    problems = []
    for doc in docs:
        if (doc.get("apiVersion"), doc.get("kind")) in CUSTOM_KINDS:
            continue
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except ValidationError as error:
            where = ".".join(str(part) for part in error.path) or "(top level)"
            problems.append(f"{name_of(doc)}: schema: {where}: {error.message}")
        except SchemaNotFoundError as error:
            problems.append(f"{name_of(doc)}: schema: {error.message}")
    return problems


def validate_kustomization(
    directory: Path, checkov: str | None = None
) -> tuple[list[dict[str, Any]], list[str]]:
    """Render, then schemas and policies; checkov's checks run where `checkov` (default:
    checkov_policy.find_checkov()) is found."""
    """Render one kustomization and return (resources, problems)."""
    try:
        docs = render(directory)
    except ValueError as error:
        return [], [str(error)]
    return docs, schema_problems(docs) + policy_problems(docs, checkov or CHECKOV)


CHECKOV = checkov_policy.find_checkov()


def policy_problems(docs: list[dict[str, Any]], checkov: str | None = None) -> list[str]:
    resources = k8s_policy.Resources(docs)
    problems = k8s_policy.check(resources) + a3c_policy.check(resources, monitoring_sources())
    if checkov is not None:
        problems += checkov_policy.check(docs, checkov)
    return list(dict.fromkeys(problems))  # one line per problem, in order


def monitoring_sources() -> a3c_policy.MonitoringSources:
    return a3c_policy.MonitoringSources(
        dashboard=DASHBOARD.read_text(),
        alerts=ALERTS.read_text(),
        prometheus_config=PROMETHEUS_CONFIG.read_text(),
    )


# --- The shared monitoring files ----------------------------------------------------------


def dashboard_problems(text: str) -> list[str]:
    """Provisioning needs a fixed datasource uid, unique panel ids, a place on the grid and a
    query in each target (text panels, which query nothing, only the place); a reader needs a
    panel on each of DASHBOARD_TOPICS. (The metric names are checked with the alert rules':
    source_problems.)"""
    where = "grafana/a3c-dashboard.json"
    try:
        dashboard = json.loads(text)
    except json.JSONDecodeError as error:
        return [f"{where}: not JSON: {error}"]
    if "${DS_" in text:
        return [f"{where}: uses an import-time ${{DS_...}} input; provisioning cannot fill it"]
    problems = []
    ids = [panel.get("id") for panel in dashboard.get("panels", [])]
    if len(ids) != len(set(ids)) or None in ids:
        problems.append(f"{where}: panel ids must be present and unique")
    for panel in dashboard.get("panels", []):
        if panel.get("type") == "row":
            continue
        title = panel.get("title", panel.get("id"))
        if panel.get("type") == "text":  # queries nothing: the evaluator's games are HTML
            if not panel.get("gridPos"):
                problems.append(f"{where}: panel {title!r} has no gridPos")
            continue
        if not panel.get("gridPos"):
            problems.append(f"{where}: panel {title!r} has no gridPos")
        targets = panel.get("targets") or []
        sources = [panel.get("datasource")] + [t.get("datasource") for t in targets]
        for source in sources:
            if not isinstance(source, dict) or source.get("uid") != DATASOURCE_UID:
                problems.append(
                    f"{where}: panel {title!r}: datasource uid must be "
                    f"{DATASOURCE_UID!r}, not {source!r}"
                )
        if not targets or not all(t.get("expr") for t in targets):
            problems.append(f"{where}: panel {title!r} has a target without a query")
    titles = " ".join(
        str(p.get("title", "")).lower()
        for p in dashboard.get("panels", [])
        if p.get("type") != "row"
    )
    problems += [
        f"{where}: no panel about {topic}" for topic in DASHBOARD_TOPICS if topic not in titles
    ]
    return problems


def dashboard_queries(text: str) -> dict[str, str]:
    """{'panel title / refId': PromQL} for every query of the dashboard."""
    queries = {}
    for panel in json.loads(text).get("panels", []):
        for target in panel.get("targets", []):
            queries[f"{panel.get('title')} / {target.get('refId')}"] = target.get("expr", "")
    return queries


def alert_queries(text: str) -> dict[str, str]:
    return {
        rule.get("alert") or rule.get("record"): rule["expr"]
        for group in yaml.safe_load(text)["groups"]
        for rule in group["rules"]
    }


def find_promtool() -> str | None:
    """promtool from PATH, else the one `make k8s-validate` unpacks into build/k8s-tools."""
    unpacked = ROOT / "build" / "k8s-tools" / "promtool"
    return shutil.which("promtool") or (str(unpacked) if unpacked.exists() else None)


def promtool_problems(promtool: str) -> list[str]:
    """promtool checks the rules, the scrape config and, disguised as recording rules, the
    PromQL of every dashboard panel (promtool has no command to check a bare expression)."""
    problems = []

    def run(*args: str) -> None:
        result = subprocess.run([promtool, *args], capture_output=True, text=True, check=False)
        if result.returncode != 0:
            problems.append(
                f"promtool {args[0]} {args[1]}: {(result.stderr or result.stdout).strip()}"
            )

    run("check", "rules", str(ALERTS))
    with tempfile.TemporaryDirectory() as tmp:
        # Debian's promtool is built without Kubernetes discovery: check everything else (the
        # relabelling regexes above all) with the discovery block swapped for a static target.
        config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
        for job in config["scrape_configs"]:
            if job.pop("kubernetes_sd_configs", None) is not None:
                job["static_configs"] = [{"targets": ["pod.invalid:9100"]}]
        path = Path(tmp) / "prometheus.yml"
        path.write_text(yaml.safe_dump(config))
        run("check", "config", "--syntax-only", str(path))
        rules = [
            {"record": f"dashboard:query_{i}", "expr": expr}
            for i, expr in enumerate(dashboard_queries(DASHBOARD.read_text()).values())
        ]
        path = Path(tmp) / "dashboard-queries.yml"
        path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
        run("check", "rules", str(path))
    return problems


def source_problems(promtool: str | None) -> list[str]:
    """Checks of the shared monitoring files themselves (once, not per overlay)."""
    dashboard = DASHBOARD.read_text()
    problems = dashboard_problems(dashboard)
    queries = {**alert_queries(ALERTS.read_text())}
    if not problems:
        queries.update(dashboard_queries(dashboard))
    problems += a3c_policy.unknown_metric_problems(queries)
    if promtool:
        problems += promtool_problems(promtool)
    return problems


# --- PrometheusRule kept in step with alerts.yml ----------------------------------------


class _BlockStrings(yaml.SafeDumper):
    """Multi-line strings (PromQL, descriptions) as readable `|` blocks."""


_BlockStrings.add_representer(
    str,
    lambda dumper, value: dumper.represent_scalar(
        "tag:yaml.org,2002:str", value, style="|" if "\n" in value else None
    ),
)


def sync_prometheus_rule() -> None:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    rule = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "a3c",
            "labels": {
                "app.kubernetes.io/name": "a3c-breakout",
                "app.kubernetes.io/component": "metrics",
            },
        },
        "spec": {"groups": groups},
    }
    header = (
        "# Generated from k8s/base/monitoring/prometheus/alerts.yml by\n"
        "# `python k8s/validate.py --sync-rules`; validation fails if the two differ.\n"
    )
    body = yaml.dump(rule, Dumper=_BlockStrings, sort_keys=False, width=100)
    PROMETHEUS_RULE.write_text(header + body)


# --- Command line -------------------------------------------------------------------------


def default_targets() -> list[Path]:
    overlays = sorted(
        p for p in (K8S / "overlays").iterdir() if (p / "kustomization.yaml").exists()
    )
    return [K8S / "base", *overlays]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("targets", nargs="*", type=Path, help="kustomization directories")
    parser.add_argument(
        "--promtool",
        default=find_promtool(),
        help="promtool binary (default: PATH, then build/k8s-tools; checks skipped if none)",
    )
    parser.add_argument(
        "--checkov",
        default=CHECKOV,
        help="checkov binary (default: PATH, then build/k8s-tools/checkov; skipped if none)",
    )
    parser.add_argument(
        "--sync-rules",
        action="store_true",
        help="rewrite the PrometheusRule from alerts.yml and exit",
    )
    args = parser.parse_args(argv)
    if args.sync_rules:
        sync_prometheus_rule()
        print(f"wrote {PROMETHEUS_RULE.relative_to(ROOT)}")
        return 0

    failed = False
    for target in args.targets or default_targets():
        start = time.monotonic()
        docs, problems = validate_kustomization(target, args.checkov)
        label = (
            target.resolve().relative_to(ROOT) if target.resolve().is_relative_to(ROOT) else target
        )
        if problems:
            failed = True
            print(f"FAIL {label}: {len(problems)} problem(s)")
            for problem in problems:
                print(f"  - {problem}")
        else:
            linted = "checkov and project policies" if args.checkov else "policies (no checkov)"
            print(
                f"ok   {label}: {len(docs)} resources pass Kubernetes {KUBERNETES_VERSION} "
                f"strict schemas, {linted} ({time.monotonic() - start:.1f} s)"
            )
    if not args.targets:
        problems = source_problems(args.promtool)
        tools = "promtool" if args.promtool else "no promtool: rules and PromQL unchecked"
        if problems:
            failed = True
            print(f"FAIL monitoring sources: {len(problems)} problem(s)")
            for problem in problems:
                print(f"  - {problem}")
        else:
            print(f"ok   monitoring sources: dashboard, alert rules, metric names ({tools})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
