"""`docker compose up --scale worker=8` for real, proven through PromQL and the learner's metrics.

Brings up docker-compose.yml with the offline override (Prometheus from the host's binary, no
Grafana), the CI one (short intervals, no restarts) and the auth one (signed messages, the key a
compose secret) as a project of its own, and tears down exactly that project. The tests share
one stack and run in file order: first what a fresh stack must show, then a killed worker, then
a learner restart. Run by `make test-compose` (deploy/scripts/test-compose.sh installs the
engine and builds the image first); skipped elsewhere.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from common.metrics import parse_samples

ROOT = Path(__file__).resolve().parents[2]
STATE_DIR = ROOT / "build" / "compose"
DASHBOARD = ROOT / "k8s/base/monitoring/grafana/a3c-dashboard.json"
ALERTS = ROOT / "k8s/base/monitoring/prometheus/alerts.yml"
COMPOSE_FILES = (
    "docker-compose.yml",
    "docker-compose.offline.yml",
    "docker-compose.ci.yml",
    "docker-compose.auth.yml",
)
WORKERS = 8
IMAGE = os.environ.get("TEST_COMPOSE_IMAGE", "a3c-breakout:ci")  # built by test-compose.sh
# Variables of the compose files that the test sets itself; the caller's values must not leak in.
COMPOSE_VARS = (
    "IMAGE",
    "BIND_ADDRESS",
    "LEARNER_PORT",
    "LEARNER_PUB_PORT",
    "PROMETHEUS_PORT",
    "GRAFANA_PORT",
    "WORKERS",
    "AUTH_KEY_FILE",
    "COMPOSE_FILE",
    "COMPOSE_PROFILES",
    "COMPOSE_PROJECT_NAME",
)

pytestmark = pytest.mark.skipif(
    os.environ.get("RUN_COMPOSE_TESTS") != "1",
    reason="needs a Docker engine and the image: run by `make test-compose`",
)

T = TypeVar("T")


class ComposeError(RuntimeError):
    """A docker compose command failed (its output is in the message)."""


def wait_for(what: str, probe: Callable[[], T], timeout: float, interval: float = 1.0) -> T:
    """Poll until probe() returns something truthy; fail naming `what` and the last answer."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = probe()
        except (OSError, ValueError, KeyError, ComposeError, subprocess.SubprocessError) as error:
            last = error
        else:
            if last:
                return last
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}"
            )
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def say(line: str) -> None:
    print(f"\n[compose] {line}", flush=True)


class Stack:
    """One compose project: compose commands, PromQL, and each service's own /metrics."""

    def __init__(self, project: str, env_file: Path, prometheus_port: int) -> None:
        self.project = project
        self.env_file = env_file
        self.prometheus = f"http://127.0.0.1:{prometheus_port}"
        self.env = {k: v for k, v in os.environ.items() if k not in COMPOSE_VARS}

    def compose(self, *args: str, timeout: float = 300, check: bool = True) -> str:
        files = [arg for name in COMPOSE_FILES for arg in ("-f", str(ROOT / name))]
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
                "ip": next(iter(c["NetworkSettings"]["Networks"].values()))["IPAddress"],
                "started": c["State"]["StartedAt"],
                "restarts": c["RestartCount"],
            }
            for c in json.loads(out)
            if c["State"]["Running"]
        ]

    def metrics(self, service: str) -> dict[str, float]:
        """A service's own /metrics, read from inside its container: {sample{labels}: value}."""
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
        return parse_samples(text)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("compose")
    key = tmp / "auth_key"
    key.write_text(os.urandom(24).hex() + "\n")
    key.chmod(0o444)  # bind-mounted as is: the image's user (10001) must read it
    ports = {name: free_port() for name in ("LEARNER_PORT", "LEARNER_PUB_PORT", "PROMETHEUS_PORT")}
    env_file = tmp / "compose.env"
    env_file.write_text(
        "".join(f"{k}={v}\n" for k, v in ports.items())
        + f"IMAGE={IMAGE}\n"
        + f"AUTH_KEY_FILE={key}\n"
    )
    s = Stack(f"a3c-test-{os.getpid()}", env_file, ports["PROMETHEUS_PORT"])
    started = time.monotonic()
    try:
        s.compose("up", "-d", "--no-build", "--scale", f"worker={WORKERS}")
        say(
            f"project {s.project}: up --scale worker={WORKERS} in "
            f"{time.monotonic() - started:.1f}s, Prometheus on {s.prometheus}"
        )
        yield s
    finally:
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        log = STATE_DIR / f"{s.project}.log"
        log.write_text(s.compose("logs", "--no-color", "--timestamps", check=False))
        s.compose("down", "--volumes", "--remove-orphans", "--timeout", "60", check=False)
        left = subprocess.run(
            ["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={s.project}"],
            capture_output=True,
            text=True,
        ).stdout.split()
        say(f"torn down {s.project} ({len(left)} containers left); logs in {log}")


def test_eight_distinct_workers_push_gradients_that_the_learner_applies(stack: Stack) -> None:
    workers = wait_for(
        f"{WORKERS} running worker containers",
        lambda: len(c := stack.containers("worker")) == WORKERS and c,
        60,
    )
    assert len({w["hostname"] for w in workers}) == WORKERS, "replicas share an identity"

    up = wait_for(
        f"Prometheus to find {WORKERS} worker replicas up",
        lambda: len(u := stack.by_instance('up{job="worker"} == 1')) == WORKERS and u,
        120,
    )
    assert {i.rsplit(":", 1)[0] for i in up} == {w["ip"] for w in workers}

    acked = wait_for(
        f"all {WORKERS} workers to have gradients acknowledged",
        lambda: (
            len(a := stack.by_instance("a3c_worker_gradients_acked_total > 0")) == WORKERS and a
        ),
        240,
    )

    learner = wait_for(
        f"the learner to count {WORKERS} active workers",
        lambda: (m := stack.metrics("learner"))["a3c_learner_workers_active"] == WORKERS and m,
        60,
    )
    # Acks count applied gradients only, and Prometheus scraped them before this read.
    assert learner["a3c_learner_updates_total"] >= sum(acked.values())
    assert learner["a3c_learner_model_version"] > 0
    assert learner["a3c_learner_env_frames_total"] > 0
    assert stack.scalar('a3c_learner_workers_active{job="learner"}') is not None

    by_ip = {w["ip"]: w for w in workers}
    names = ", ".join(
        f"{by_ip[i.rsplit(':', 1)[0]]['name']} ({by_ip[i.rsplit(':', 1)[0]]['hostname']}: "
        f"{n:.0f} acked)"
        for i, n in sorted(acked.items())
    )
    say(f"{WORKERS} workers active: {names}")
    say(
        f"learner: {learner['a3c_learner_workers_active']:.0f} workers active, "
        f"{learner['a3c_learner_updates_total']:.0f} gradients applied, model version "
        f"{learner['a3c_learner_model_version']:.0f}, "
        f"{learner['a3c_learner_env_frames_total']:.0f} frames"
    )


def test_the_evaluator_scores_games(stack: Stack) -> None:
    episodes = wait_for(
        "an evaluation episode",
        lambda: (
            (stack.scalar('a3c_evaluator_episodes_total{job="evaluator"}') or 0) >= 1
            and stack.scalar("a3c_evaluator_episodes_total")
        ),
        180,
    )
    score = stack.scalar("a3c_evaluator_score_mean")
    assert score is not None
    say(f"evaluator scored {episodes:.0f} games, mean score {score:.2f}")


def test_prometheus_scrapes_every_target(stack: Stack) -> None:
    expected = {"learner": 1, "evaluator": 1, "worker": WORKERS, "prometheus": 1}

    def healthy() -> Counter[str] | None:
        targets = stack.api("targets", state="active")["activeTargets"]
        jobs = Counter(t["labels"]["job"] for t in targets if t["health"] == "up")
        return jobs if len(targets) == sum(expected.values()) and jobs == expected else None

    jobs = wait_for(f"targets {expected} all up", healthy, 90)
    say(
        "Prometheus scrapes every target: "
        + ", ".join(f"{job} {n}/{n} up" for job, n in sorted(jobs.items()))
    )


def test_prometheus_loads_the_alert_rules(stack: Stack) -> None:
    wanted = {
        r["alert"]
        for g in yaml.safe_load(ALERTS.read_text())["groups"]
        for r in g["rules"]
        if "alert" in r
    }
    loaded = {
        r["name"]
        for g in stack.api("rules")["groups"]
        for r in g["rules"]
        if r["type"] == "alerting"
    }
    assert loaded == wanted
    check = stack.compose(
        "exec", "-T", "prometheus", "promtool", "check", "config", "/etc/prometheus/prometheus.yml"
    )
    assert "SUCCESS" in check
    say(f"Prometheus loaded {len(loaded)} alert rules: {', '.join(sorted(loaded))}")


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every panel, Grafana's own variables given fixed values."""
    fixed = {"$__rate_interval": "1m", "$__interval": "5s", "$__range": "5m"}
    queries = []
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for name, value in fixed.items():
                expr = expr.replace(name, value)
            assert not re.search(r"\$\w+", expr), f"unresolved variable in {expr}"
            queries.append((panel["title"], expr))
    return queries


def test_every_dashboard_panel_has_data(stack: Stack) -> None:
    queries = dashboard_queries()
    panels = {title for title, _ in queries}
    empty = list(queries)

    def all_have_data() -> bool:
        empty[:] = [(title, expr) for title, expr in empty if not stack.query(expr)]
        return not empty

    try:
        wait_for("data for every dashboard query", all_have_data, 120, interval=3)
    except AssertionError:
        pytest.fail(
            "dashboard queries with no data:\n"
            + "\n".join(f"  {title}: {expr}" for title, expr in empty)
        )
    say(f"all {len(queries)} PromQL queries of the {len(panels)} dashboard panels return data")


def test_killing_a_worker_leaves_training_running(stack: Stack) -> None:
    workers = stack.containers("worker")
    victim, survivors = workers[0], workers[1:]
    before = stack.by_instance("a3c_worker_gradients_acked_total")
    subprocess.run(["docker", "kill", victim["id"]], check=True, capture_output=True)

    wait_for(
        f"the learner to forget {victim['name']}",
        lambda: stack.metrics("learner")["a3c_learner_workers_active"] == len(survivors),
        60,
    )
    start = stack.metrics("learner")["a3c_learner_updates_total"]
    started = time.monotonic()
    wait_for(
        "20 more updates without the killed worker",
        lambda: stack.metrics("learner")["a3c_learner_updates_total"] >= start + 20,
        90,
    )
    elapsed = time.monotonic() - started

    def survivors_progress() -> bool:
        now = stack.by_instance("a3c_worker_gradients_acked_total")
        return all(
            now.get(f"{w['ip']}:9100", 0) > before.get(f"{w['ip']}:9100", 0) for w in survivors
        )

    wait_for("every surviving worker to get gradients applied", survivors_progress, 60)
    say(
        f"killed {victim['name']}: the learner forgot it and applied 20 gradients in "
        f"{elapsed:.1f}s from the {len(survivors)} others, all of which kept training"
    )


def test_learner_restart_resumes_from_the_checkpoint_volume(stack: Stack) -> None:
    workers = {w["id"]: w for w in stack.containers("worker")}
    evaluator = stack.metrics("evaluator")["a3c_evaluator_weights_received_total"]
    version = stack.metrics("learner")["a3c_learner_model_version"]
    acked = stack.by_instance("a3c_worker_gradients_acked_total")

    stack.compose("restart", "learner", timeout=120)  # SIGTERM: a final checkpoint, then exit

    learner = wait_for(
        "the restarted learner to load its checkpoint",
        lambda: (m := stack.metrics("learner"))["a3c_learner_model_version"] > 0 and m,
        90,
    )
    # A fresh process counts updates from 0; its version started where the checkpoint was.
    resumed = learner["a3c_learner_model_version"] - learner["a3c_learner_updates_total"]
    assert resumed >= version, f"resumed at version {resumed}, was {version} before the restart"
    checkpoints = stack.compose("exec", "-T", "learner", "ls", "/data/checkpoints").split()
    assert any(name.endswith(".pt") for name in checkpoints), checkpoints

    wait_for(
        f"all {len(workers)} workers to be back",
        lambda: stack.metrics("learner")["a3c_learner_workers_active"] == len(workers),
        90,
    )

    def all_acked_again() -> bool:
        now = stack.by_instance("a3c_worker_gradients_acked_total")
        return all(
            now.get(f"{w['ip']}:9100", 0) > acked.get(f"{w['ip']}:9100", 0)
            for w in workers.values()
        )

    wait_for("a gradient of every worker applied by the new learner", all_acked_again, 120)
    wait_for(
        "the evaluator to receive the new learner's weights",
        lambda: stack.metrics("evaluator")["a3c_evaluator_weights_received_total"] > evaluator,
        60,
    )
    now = {w["id"]: w for w in stack.containers("worker")}
    assert now.keys() == workers.keys()
    assert all(
        now[i]["started"] == w["started"] and now[i]["restarts"] == 0 for i, w in workers.items()
    ), "workers were restarted instead of reconnecting"
    say(
        f"learner restarted: resumed from its checkpoint volume at version {resumed:.0f} "
        f"(version {version:.0f} before SIGTERM); {len(workers)}/{len(workers)} workers and "
        "the evaluator reconnected by themselves, none restarted"
    )


def test_a_peer_without_the_key_is_refused(stack: Stack) -> None:
    """The key really is in use: a worker started without the secret gets nowhere."""
    before = stack.metrics("learner")
    key = 'a3c_learner_gradients_rejected_total{reason="bad_signature"}'
    name = f"{stack.project}-intruder"
    subprocess.run(
        ["docker", "run", "-d", "--rm", "--name", name, "--network", f"{stack.project}_default",
         "-e", "A3C_LEARNER=learner:5555", "-e", "A3C_LOG_FORMAT=json", IMAGE, "worker"],
        check=True, capture_output=True,
    )  # fmt: skip
    try:
        refused = wait_for(
            "the learner to refuse the unsigned worker",
            lambda: (n := stack.metrics("learner")[key]) > before[key] and n,
            90,
        )
        learner = stack.metrics("learner")
        assert learner["a3c_learner_workers_active"] == before["a3c_learner_workers_active"]
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)
    say(f"a worker without the key was refused ({refused - before[key]:.0f} messages, "
        "bad_signature) and never counted as active")  # fmt: skip
