"""A compose project driven from Python: compose commands, PromQL against its Prometheus, and
each service's own /metrics read from inside its container.

Shared by the compose tests (tests/deploy) and `make chaos` (bench/chaos.py), which bring up
the same stack and must not each have their own way to talk to it.
"""

from __future__ import annotations

import json
import os
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from common.samples import Samples

ROOT = Path(__file__).resolve().parents[1]

# Variables of the compose files that a stack's driver sets itself; the caller's values must
# not leak in.
COMPOSE_VARS = (
    "IMAGE",
    "BIND_ADDRESS",
    "LEARNER_PORT",
    "LEARNER_PUB_PORT",
    "PROMETHEUS_PORT",
    "GRAFANA_PORT",
    "EVALUATOR_PORT",
    "WORKERS",
    "AUTH_KEY_FILE",
    "CURVE_KEYS_DIR",
    "COMPOSE_FILE",
    "COMPOSE_PROFILES",
    "COMPOSE_PROJECT_NAME",
)


class ComposeError(RuntimeError):
    """A docker compose command failed (its output is in the message)."""


class Stack:
    """One compose project: compose commands, PromQL, and each service's own /metrics."""

    def __init__(
        self,
        project: str,
        files: tuple[str, ...],
        env_file: Path,
        prometheus_port: int,
        evaluator_port: int,
    ) -> None:
        self.project = project
        self.files = files
        """Compose files, relative to the repository root, in override order."""
        self.env_file = env_file
        self.prometheus = f"http://127.0.0.1:{prometheus_port}"
        self.page = f"http://127.0.0.1:{evaluator_port}"
        """The evaluator's page (and metrics) on its host port, EVALUATOR_PORT."""
        self.env = {k: v for k, v in os.environ.items() if k not in COMPOSE_VARS}
        self.curve_keys: Path | None = None
        """The CURVE certificates the stack runs with (a3c keys' layout)."""
        self.learner_pub_port = 0
        """The learner's weight broadcast on the host."""

    def compose(self, *args: str, timeout: float = 300, check: bool = True) -> str:
        files = [arg for name in self.files for arg in ("-f", str(ROOT / name))]
        command = [
            "docker",
            "compose",
            "-p",
            self.project,
            "--env-file",
            str(self.env_file),
            *files,
            *args,
        ]
        done = subprocess.run(
            command, cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if check and done.returncode != 0:
            raise ComposeError(f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}")
        return done.stdout

    # --- Prometheus -------------------------------------------------------------------------
    def api(self, path: str, **params: str) -> Any:
        url = f"{self.prometheus}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        return self.api("query", query=expr)["result"]

    def by_instance(self, expr: str) -> dict[str, float]:
        return {r["metric"].get("instance", ""): float(r["value"][1]) for r in self.query(expr)}

    def scalar(self, expr: str) -> float | None:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None

    # --- Containers ----------------------------------------------------------------------
    def containers(self, service: str) -> list[dict[str, Any]]:
        """Running containers of a service: name, id, hostname, IP, start time, restarts."""
        ids = self.compose("ps", "-q", service).split()
        if not ids:
            return []
        out = subprocess.run(
            ["docker", "inspect", *ids], capture_output=True, text=True, check=True
        ).stdout
        return [
            {
                "name": c["Name"].lstrip("/"),
                "id": c["Id"],
                "hostname": c["Config"]["Hostname"],
                "ip": next(
                    iter(n["IPAddress"] for n in c["NetworkSettings"]["Networks"].values()),
                    None,
                ),  # None while cut off from its network
                "started": c["State"]["StartedAt"],
                "restarts": c["RestartCount"],
            }
            for c in json.loads(out)
            if c["State"]["Running"]
        ]

    def metrics(self, service: str) -> Samples:
        """A service's own /metrics, read from inside its container."""
        text = self.compose(
            "exec",
            "-T",
            service,
            "python",
            "-c",
            "import urllib.request; print(urllib.request.urlopen("
            "'http://127.0.0.1:9100/metrics', timeout=5).read().decode())",
            timeout=60,
        )
        return Samples.parse(text)
