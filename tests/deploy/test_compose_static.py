"""Checks of the container files that need no running stack: hadolint, the compose-spec schema,
promtool on the Prometheus configuration and alert rules, and Grafana's provisioning.

Grafana cannot run on a machine with no registry, so its provisioning is checked here (the
datasource the dashboard names exists and points at the compose Prometheus, the dashboard is
mounted where the provider looks, every metric a panel queries is one the services export);
test_compose.py then runs every panel's PromQL against the real Prometheus. Run by
`make test-compose`, which installs the tools; skipped elsewhere.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from common.transport import create_keys
from tests.conftest import k8s_validate

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
MONITORING = ROOT / "k8s/base/monitoring"
DASHBOARD = MONITORING / "grafana/a3c-dashboard.json"
ALERTS = MONITORING / "prometheus/alerts.yml"
COMPOSE_FILES = (
    "docker-compose.yml",
    "docker-compose.offline.yml",
    "docker-compose.ci.yml",
    "docker-compose.auth.yml",
    "docker-compose.curve.yml",
)

pytestmark = pytest.mark.skipif(
    os.environ.get("RUN_COMPOSE_TESTS") != "1",
    reason="needs hadolint, check-jsonschema, promtool and docker: run by `make test-compose`",
)


def run(*command: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(c) for c in command], cwd=ROOT, capture_output=True, text=True, timeout=120, env=env
    )


def tool(name: str) -> str:
    path = BIN / name if (BIN / name).exists() else shutil.which(name)
    assert path, f"{name} is not installed (deploy/scripts/test-compose.sh installs it)"
    return str(path)


@functools.cache
def curve_keys() -> Path:
    """A directory of CURVE certificates as `a3c keys` writes it, for docker-compose.curve.yml."""
    directory = Path(tempfile.mkdtemp(prefix="a3c-curve-"))
    create_keys(directory)
    return directory


def compose_config(*files: str) -> dict[str, Any]:
    """The resolved model of these compose files, as `docker compose config` sees it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "A3C_"))}
    env["AUTH_KEY_FILE"] = str(ROOT / "pyproject.toml")  # any existing file will do
    env["CURVE_KEYS_DIR"] = str(curve_keys())
    args = [a for f in files for a in ("-f", f)]
    done = run(
        "docker", "compose", "--env-file", os.devnull, *args, "config", "--format", "json", env=env
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_dockerfile_passes_hadolint() -> None:
    done = run(tool("hadolint"), "Dockerfile")
    assert done.returncode == 0, done.stdout + done.stderr


def test_compose_files_pass_the_compose_spec_schema(tmp_path: Path) -> None:
    checker = tool("check-jsonschema")
    done = run(checker, "--builtin-schema", "vendor.compose-spec", *COMPOSE_FILES)
    assert done.returncode == 0, done.stdout + done.stderr
    # The check bites: a misspelt key fails it.
    broken = tmp_path / "broken.yml"
    broken.write_text("services:\n  learner:\n    image: x\n    comand: [learner]\n")
    assert run(checker, "--builtin-schema", "vendor.compose-spec", broken).returncode != 0


def test_user_compose_file_runs_one_image_per_role_beside_prometheus_and_grafana() -> None:
    config = compose_config("docker-compose.yml")
    services = config["services"]
    assert set(services) == {"learner", "worker", "evaluator", "prometheus", "grafana"}
    assert services["prometheus"]["image"].startswith("prom/prometheus:")
    assert services["grafana"]["image"].startswith("grafana/grafana:")
    for role in ("learner", "worker", "evaluator"):
        assert services[role]["image"] == services["learner"]["image"]  # one image
        assert services[role]["command"] == [role]
        assert services[role]["environment"]["A3C_LOG_FORMAT"] == "json"
    assert "ports" not in services["worker"], "scaled workers must not take host ports"
    assert services["worker"]["environment"]["A3C_LEARNER"] == "learner:5555"
    assert "A3C_WORKER_ID" not in services["worker"]["environment"]  # hostname-pid per replica
    assert services["learner"]["restart"] == "unless-stopped"
    assert any(
        v["type"] == "volume" and v["target"] == "/data/checkpoints"
        for v in services["learner"]["volumes"]
    )
    for name, service in services.items():
        for port in service.get("ports", []):
            assert port["host_ip"] == "127.0.0.1", f"{name} publishes {port} beyond localhost"


def test_offline_override_replaces_only_what_cannot_be_pulled() -> None:
    config = compose_config(*COMPOSE_FILES)
    services = config["services"]
    assert "grafana" not in services  # behind a profile that is never enabled
    prometheus = services["prometheus"]
    assert prometheus["image"] == services["learner"]["image"]
    user = compose_config("docker-compose.yml")["services"]["prometheus"]
    mounts = {v["target"]: v["source"] for v in user["volumes"] if v["type"] == "bind"}
    ci_mounts = {v["target"]: v["source"] for v in prometheus["volumes"] if v["type"] == "bind"}
    assert mounts.items() <= ci_mounts.items()  # the same configuration and rules
    for role in ("learner", "worker", "evaluator"):
        assert "a3c_auth_key" in [s["source"] for s in services[role]["secrets"]]
        assert services[role]["environment"]["A3C_AUTH_KEY_FILE"] == "/run/secrets/a3c_auth_key"


def test_prometheus_config_and_alert_rules_pass_promtool() -> None:
    promtool = tool("promtool")
    for command in (
        ("check", "config", "--syntax-only", "deploy/prometheus/prometheus.yml"),
        ("check", "rules", ALERTS),
        ("test", "rules", "deploy/prometheus/alerts_test.yml"),
    ):
        done = run(promtool, *command)
        assert done.returncode == 0, f"promtool {command}:\n{done.stdout}{done.stderr}"


def test_alert_rules_cover_a_dead_learner_no_updates_rejections_and_silent_workers() -> None:
    rules = {
        r["alert"]: r
        for g in yaml.safe_load(ALERTS.read_text())["groups"]
        for r in g["rules"]
        if "alert" in r
    }
    assert 'up{job="learner"}' in rules["A3CLearnerDown"]["expr"]
    assert "a3c_learner_updates_total" in rules["A3CNoUpdates"]["expr"]
    assert "a3c_learner_gradients_rejected_total" in rules["A3CGradientsRejected"]["expr"]
    assert "a3c_worker_env_frames_total" in rules["A3CWorkerSilent"]["expr"]


def test_grafana_provisioning_matches_the_dashboard_and_compose() -> None:
    services = compose_config("docker-compose.yml")["services"]
    mounts = {
        v["target"]: Path(v["source"])
        for v in services["grafana"]["volumes"]
        if v["type"] == "bind"
    }
    for target, source in mounts.items():
        assert source.is_file(), f"grafana mounts missing {source} at {target}"

    datasource_files = [s for t, s in mounts.items() if "/provisioning/datasources/" in t]
    provider_files = [s for t, s in mounts.items() if "/provisioning/dashboards/" in t]
    assert datasource_files and provider_files
    datasources = [
        d for f in datasource_files for d in yaml.safe_load(f.read_text())["datasources"]
    ]
    prometheus = [d for d in datasources if d["type"] == "prometheus"]
    assert len(prometheus) == 1
    url = prometheus[0]["url"]
    assert url == "http://prometheus:9090", f"{url} is not the compose service prometheus:9090"

    providers = [p for f in provider_files for p in yaml.safe_load(f.read_text())["providers"]]
    paths = {PurePosixPath(p["options"]["path"]) for p in providers}
    dashboards = [t for t, s in mounts.items() if s.resolve() == DASHBOARD.resolve()]
    assert len(dashboards) == 1, "the shared dashboard file is not mounted"
    assert PurePosixPath(dashboards[0]).parent in paths, "no provider looks where it is mounted"
    home = services["grafana"]["environment"].get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
    assert home in (None, dashboards[0])
    env = services["grafana"]["environment"]
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"


def test_dashboard_panels_are_sound() -> None:
    """k8s/validate.py's checks of the dashboard (ids, grid, queries, topics, metric names),
    and the one datasource every panel names is the one Grafana is provisioned with."""
    validate = k8s_validate()
    text = DASHBOARD.read_text()
    assert validate.dashboard_problems(text) == []
    policy = sys.modules["a3c_policy"]
    assert policy.unknown_metric_problems(validate.dashboard_queries(text)) == []
    uids = {
        d["uid"]
        for f in (MONITORING / "grafana/provisioning").glob("datasource*.y*ml")
        for d in yaml.safe_load(f.read_text())["datasources"]
    }
    assert validate.DATASOURCE_UID in uids
