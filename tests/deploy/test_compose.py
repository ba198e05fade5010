"""`docker compose up --scale worker=8` for real, proven through PromQL and the learner's metrics.

Brings up docker-compose.yml with the offline override (Prometheus from the host's binary, no
Grafana), the CI one (short intervals, no restarts) and the auth one (signed messages, the key a
compose secret) as a project of its own, and tears down exactly that project. The tests share
one stack and run in file order: first what a fresh stack must show, then a killed worker, then
a learner restart. Run by `make test-compose` (deploy/scripts/test-compose.sh installs the
engine and builds the image first); skipped elsewhere.
"""

from __future__ import annotations

import functools
import io
import json
import os
import re
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from bench.compose_stack import ComposeError, Stack
from common.protocol import Session
from common.samples import Samples
from common.transport import CurveClient, Subscriber, create_keys
from tests.conftest import fetch, free_port, k8s_validate, latest_game
from tests.conftest import wait_for as wait_until

ROOT = Path(__file__).resolve().parents[2]
STATE_DIR = ROOT / "build" / "compose"
ALERTS = ROOT / "k8s/base/monitoring/prometheus/alerts.yml"
COMPOSE_FILES = (
    "docker-compose.yml",
    "docker-compose.offline.yml",
    "docker-compose.ci.yml",
    "docker-compose.auth.yml",
    "docker-compose.curve.yml",
)
WORKERS = 8
IMAGE = os.environ.get("TEST_COMPOSE_IMAGE", "a3c-breakout:ci")  # built by test-compose.sh
pytestmark = pytest.mark.skipif(
    os.environ.get("RUN_COMPOSE_TESTS") != "1",
    reason="needs a Docker engine and the image: run by `make test-compose`",
)


wait_for = functools.partial(
    wait_until,
    interval=1.0,
    # What a probe meets while a container starts or restarts: retried, not fatal.
    retry_on=(OSError, ValueError, KeyError, ComposeError, subprocess.SubprocessError),
)


def say(line: str) -> None:
    print(f"\n[compose] {line}", flush=True)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("compose")
    key = tmp / "auth_key"
    key.write_text(os.urandom(24).hex() + "\n")
    key.chmod(0o444)  # bind-mounted as is: the image's user (10001) must read it
    curve = tmp / "curve"
    create_keys(curve)
    for path in curve.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o444)
    published = ("LEARNER_PORT", "LEARNER_PUB_PORT", "PROMETHEUS_PORT", "EVALUATOR_PORT")
    ports = {name: free_port() for name in published}
    env_file = tmp / "compose.env"
    env_file.write_text(
        "".join(f"{k}={v}\n" for k, v in ports.items())
        + f"IMAGE={IMAGE}\n"
        + f"AUTH_KEY_FILE={key}\n"
        + f"CURVE_KEYS_DIR={curve}\n"
    )
    s = Stack(
        f"a3c-test-{os.getpid()}",
        COMPOSE_FILES,
        env_file,
        ports["PROMETHEUS_PORT"],
        ports["EVALUATOR_PORT"],
    )
    s.curve_keys = curve
    s.learner_pub_port = ports["LEARNER_PUB_PORT"]
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
        lambda: len(c := stack.containers("worker")) == WORKERS and c,
        60,
        f"{WORKERS} running worker containers",
    )
    assert len({w["hostname"] for w in workers}) == WORKERS, "replicas share an identity"

    up = wait_for(
        lambda: len(u := stack.by_instance('up{job="worker"} == 1')) == WORKERS and u,
        120,
        f"Prometheus to find {WORKERS} worker replicas up",
    )
    assert {i.rsplit(":", 1)[0] for i in up} == {w["ip"] for w in workers}

    acked = wait_for(
        lambda: (
            len(a := stack.by_instance("a3c_worker_gradients_acked_total > 0")) == WORKERS and a
        ),
        240,
        f"all {WORKERS} workers to have gradients acknowledged",
    )

    learner = wait_for(
        lambda: (m := stack.metrics("learner")).get("a3c_learner_workers_active") == WORKERS and m,
        60,
        f"the learner to count {WORKERS} active workers",
    )
    # Acks count applied gradients only, and Prometheus scraped them before this read.
    assert learner.get("a3c_learner_updates_total") >= sum(acked.values())
    assert learner.get("a3c_learner_model_version") > 0
    assert learner.get("a3c_learner_env_frames_total") > 0
    assert stack.scalar('a3c_learner_workers_active{job="learner"}') is not None

    by_ip = {w["ip"]: w for w in workers}
    names = ", ".join(
        f"{by_ip[i.rsplit(':', 1)[0]]['name']} ({by_ip[i.rsplit(':', 1)[0]]['hostname']}: "
        f"{n:.0f} acked)"
        for i, n in sorted(acked.items())
    )
    say(f"{WORKERS} workers active: {names}")
    say(
        f"learner: {learner.get('a3c_learner_workers_active'):.0f} workers active, "
        f"{learner.get('a3c_learner_updates_total'):.0f} gradients applied, model version "
        f"{learner.get('a3c_learner_model_version'):.0f}, "
        f"{learner.get('a3c_learner_env_frames_total'):.0f} frames"
    )


def test_the_evaluator_scores_games(stack: Stack) -> None:
    episodes = wait_for(
        lambda: (
            (stack.scalar('a3c_evaluator_episodes_total{job="evaluator"}') or 0) >= 1
            and stack.scalar("a3c_evaluator_episodes_total")
        ),
        180,
        "an evaluation episode",
    )
    score = stack.scalar("a3c_evaluator_score_mean")
    assert score is not None
    say(f"evaluator scored {episodes:.0f} games, mean score {score:.2f}")


def test_the_evaluator_serves_its_page_and_games_on_the_host(stack: Stack) -> None:
    from PIL import Image

    info = wait_for(
        lambda: json.loads(fetch(f"{stack.page}/game/latest.json")), 180, "a game on the page"
    )
    page = fetch(f"{stack.page}/").decode()
    assert "watch it learn" in page and 'id="version"' in page
    if info["gif_frames"]:  # Atari; classic-control envs draw no frames without pygame
        info, gif = wait_for(lambda: latest_game(stack.page), 60, "the latest game's GIF")
        with Image.open(io.BytesIO(gif)) as image:
            assert image.n_frames == info["gif_frames"] > 0
    say(f"page at {stack.page}: game {info['game']}, score {info['score']}, v{info['version']}")


def test_prometheus_scrapes_every_target(stack: Stack) -> None:
    expected = {"learner": 1, "evaluator": 1, "worker": WORKERS, "prometheus": 1}

    def healthy() -> Counter[str] | None:
        targets = stack.api("targets", state="active")["activeTargets"]
        jobs = Counter(t["labels"]["job"] for t in targets if t["health"] == "up")
        return jobs if len(targets) == sum(expected.values()) and jobs == expected else None

    jobs = wait_for(healthy, 90, f"targets {expected} all up")
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
    """(panel title, PromQL) of every query k8s/validate.py finds in the dashboard, Grafana's
    own variables given fixed values."""
    validate = k8s_validate()
    fixed = {"$__rate_interval": "1m", "$__interval": "5s", "$__range": "5m"}
    queries = []
    for where, expr in validate.dashboard_queries(validate.DASHBOARD.read_text()).items():
        for name, value in fixed.items():
            expr = expr.replace(name, value)
        assert not re.search(r"\$\w+", expr), f"unresolved variable in {expr}"
        queries.append((where.rsplit(" / ", 1)[0], expr))
    return queries


def test_every_dashboard_panel_has_data(stack: Stack) -> None:
    queries = dashboard_queries()
    panels = {title for title, _ in queries}
    empty = list(queries)

    def all_have_data() -> bool:
        empty[:] = [(title, expr) for title, expr in empty if not stack.query(expr)]
        return not empty

    try:
        wait_for(all_have_data, 120, "data for every dashboard query", interval=3)
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
        lambda: stack.metrics("learner").get("a3c_learner_workers_active") == len(survivors),
        60,
        f"the learner to forget {victim['name']}",
    )
    start = stack.metrics("learner").get("a3c_learner_updates_total")
    started = time.monotonic()
    wait_for(
        lambda: stack.metrics("learner").get("a3c_learner_updates_total") >= start + 20,
        90,
        "20 more updates without the killed worker",
    )
    elapsed = time.monotonic() - started

    def survivors_progress() -> bool:
        now = stack.by_instance("a3c_worker_gradients_acked_total")
        return all(
            now.get(f"{w['ip']}:9100", 0) > before.get(f"{w['ip']}:9100", 0) for w in survivors
        )

    wait_for(survivors_progress, 60, "every surviving worker to get gradients applied")
    say(
        f"killed {victim['name']}: the learner forgot it and applied 20 gradients in "
        f"{elapsed:.1f}s from the {len(survivors)} others, all of which kept training"
    )


def test_learner_restart_resumes_from_the_checkpoint_volume(stack: Stack) -> None:
    workers = {w["id"]: w for w in stack.containers("worker")}
    evaluator = stack.metrics("evaluator").get("a3c_evaluator_weights_received_total")
    version = stack.metrics("learner").get("a3c_learner_model_version")
    acked = stack.by_instance("a3c_worker_gradients_acked_total")

    stack.compose("restart", "learner", timeout=120)  # SIGTERM: a final checkpoint, then exit

    learner = wait_for(
        lambda: (m := stack.metrics("learner")).get("a3c_learner_model_version") > 0 and m,
        90,
        "the restarted learner to load its checkpoint",
    )
    # A fresh process counts updates from 0; its version started where the checkpoint was.
    resumed = learner.get("a3c_learner_model_version") - learner.get("a3c_learner_updates_total")
    assert resumed >= version, f"resumed at version {resumed}, was {version} before the restart"
    checkpoints = stack.compose("exec", "-T", "learner", "ls", "/data/checkpoints").split()
    assert any(name.endswith(".pt") for name in checkpoints), checkpoints

    wait_for(
        lambda: stack.metrics("learner").get("a3c_learner_workers_active") == len(workers),
        90,
        f"all {len(workers)} workers to be back",
    )

    def all_acked_again() -> bool:
        now = stack.by_instance("a3c_worker_gradients_acked_total")
        return all(
            now.get(f"{w['ip']}:9100", 0) > acked.get(f"{w['ip']}:9100", 0)
            for w in workers.values()
        )

    wait_for(all_acked_again, 120, "a gradient of every worker applied by the new learner")
    wait_for(
        lambda: stack.metrics("evaluator").get("a3c_evaluator_weights_received_total") > evaluator,
        60,
        "the evaluator to receive the new learner's weights",
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


def _intruder(stack: Stack, name: str, *env: str, keys: bool) -> str:
    """A worker container on the stack's network, not one of its replicas: `env` its only
    settings, and with `keys` the CURVE worker certificate mounted (but no signing key)."""
    mounts = ["-v", f"{stack.curve_keys}:/keys:ro"] if keys else []
    curve = (
        ["-e", "A3C_CURVE_KEY_FILE=/keys/worker.key_secret",
         "-e", "A3C_CURVE_SERVER_KEY_FILE=/keys/learner.key"]
        if keys else []
    )  # fmt: skip
    name = f"{stack.project}-{name}"
    subprocess.run(
        ["docker", "run", "-d", "--rm", "--name", name, "--network", f"{stack.project}_default",
         *mounts, "-e", "A3C_LEARNER=learner:5555", "-e", "A3C_LOG_FORMAT=json", *curve, *env,
         IMAGE, "worker"],
        check=True, capture_output=True,
    )  # fmt: skip
    return name


def test_a_peer_without_the_signing_key_is_refused(stack: Stack) -> None:
    """The key really is in use: a worker with the CURVE certificate (so it gets through the
    handshake) but without the signing key gets nowhere."""
    before = stack.metrics("learner")

    def refusals(page: Samples) -> float:
        return page.get("a3c_learner_gradients_rejected_total", reason="bad_signature")

    name = _intruder(stack, "unsigned", keys=True)
    try:
        refused = wait_for(
            lambda: (n := refusals(stack.metrics("learner"))) > refusals(before) and n,
            90,
            "the learner to refuse the unsigned worker",
        )
        learner = stack.metrics("learner")
        assert learner.get("a3c_learner_workers_active") == before.get("a3c_learner_workers_active")
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)
    say(f"a worker without the key was refused ({refused - refusals(before):.0f} messages, "
        "bad_signature) and never counted as active")  # fmt: skip


def test_a_peer_without_a_curve_key_gets_no_connection(stack: Stack) -> None:
    """CURVE really is in use: a worker without an admitted certificate is refused at the
    handshake (no message of it ever reaches the learner), and the weight broadcast published
    on the host gives an unkeyed subscriber nothing while a keyed one reads it."""
    before = stack.metrics("learner")

    def refused(page: Samples) -> float:
        return page.get("a3c_learner_handshakes_refused_total", socket="gradients")

    name = _intruder(stack, "unkeyed", keys=False)
    try:
        wait_for(
            lambda: refused(stack.metrics("learner")) > refused(before),
            90,
            "the learner to refuse the unkeyed worker's handshake",
        )
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)
    assert stack.curve_keys is not None

    def broadcasts(curve: CurveClient | None) -> int:
        subscriber = Subscriber(Session("probe"), "127.0.0.1", stack.learner_pub_port, curve)
        received, deadline = 0, time.monotonic() + 5
        while time.monotonic() < deadline:
            received += subscriber.recv_newest(200) is not None
        subscriber.close()
        return received

    keyed = CurveClient.from_files(
        stack.curve_keys / "evaluator.key_secret", stack.curve_keys / "learner.key"
    )
    assert broadcasts(None) == 0
    assert broadcasts(keyed) > 0
    say("a worker without a CURVE key was refused at the handshake; an unkeyed subscriber "
        "read no weights, a keyed one did")  # fmt: skip
