"""The generic Kubernetes checks, from checkov (a well-kept IaC linter, in its own venv under
build/k8s-tools: `make k8s-validate` installs it) instead of hand-written rules: probes,
requests and limits, pinned image tags, no privilege, no host namespaces, non-root, a
read-only root filesystem, no capabilities, the runtime's seccomp profile.

What checkov does not check stays in k8s_policy.py (labels, one namespace, requests within
limits, hostPath volumes, references that resolve, Services that select pods) and in
a3c_policy.py (the project's own wiring).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import yaml

CHECKS = {
    "CKV_K8S_8": "liveness probe",
    "CKV_K8S_9": "readiness probe",
    "CKV_K8S_10": "CPU request",
    "CKV_K8S_11": "CPU limit",
    "CKV_K8S_12": "memory request",
    "CKV_K8S_13": "memory limit",
    "CKV_K8S_14": "image tag pinned, not latest",
    "CKV_K8S_16": "not privileged",
    "CKV_K8S_17": "no host PID namespace",
    "CKV_K8S_18": "no host IPC namespace",
    "CKV_K8S_19": "no host network",
    "CKV_K8S_20": "no privilege escalation",
    "CKV_K8S_22": "read-only root filesystem",
    "CKV_K8S_23": "not root",
    "CKV_K8S_25": "no added capabilities",
    "CKV_K8S_28": "no NET_RAW capability",
    "CKV_K8S_31": "seccomp profile RuntimeDefault",
    "CKV_K8S_37": "all capabilities dropped",
}
"""The checkov checks this project enforces (its ids, and what each asks for)."""

TOOLS = Path(__file__).resolve().parent.parent / "build" / "k8s-tools"


def find_checkov() -> str | None:
    """checkov from PATH, else the venv `make k8s-validate` installs."""
    installed = TOOLS / "checkov" / "bin" / "checkov"
    return shutil.which("checkov") or (str(installed) if installed.exists() else None)


def _failures(report: Any) -> list[dict[str, Any]]:
    """Failed checks from checkov's JSON, which is one report or a list of them (one per
    framework); a run that found nothing to check has no `results`."""
    reports = report if isinstance(report, list) else [report]
    return [failed for one in reports for failed in one.get("results", {}).get("failed_checks", [])]


def problem_line(failed: dict[str, Any]) -> str:
    """ "Kind/name: CKV_K8S_n what it asks for" from checkov's `Kind.namespace.name`."""
    kind, _, rest = str(failed["resource"]).partition(".")
    name = rest.rsplit(".", 1)[-1]
    check = failed["check_id"]
    return f"{kind}/{name}: {check} {CHECKS.get(check, failed.get('check_name', ''))}"


def check(docs: list[dict[str, Any]], checkov: str) -> list[str]:
    """Problems checkov finds in rendered resources, one line each."""
    with tempfile.TemporaryDirectory() as tmp:
        manifest = Path(tmp) / "rendered.yaml"
        manifest.write_text(yaml.safe_dump_all(docs, sort_keys=False))
        done = subprocess.run(
            [checkov, "--file", str(manifest), "--framework", "kubernetes",
             "--check", ",".join(CHECKS), "--output", "json", "--quiet", "--compact",
             "--soft-fail", "--skip-download"],
            capture_output=True, text=True, timeout=300,
            env={**os.environ, "LOG_LEVEL": "WARNING"},
        )  # fmt: skip
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError:
        return [f"checkov failed (exit {done.returncode}): {done.stderr.strip()[-500:]}"]
    return sorted({problem_line(failed) for failed in _failures(report)})
