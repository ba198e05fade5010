"""Learner, workers and evaluator as real processes over real sockets on 127.0.0.1."""

import time

import torch

from common.checkpoint import load_newest
from tests.conftest import http_status, wait_for

PINNED = {
    "learner": [
        ("a3c_learner_updates_total", {}),
        ("a3c_learner_model_version", {}),
        ("a3c_learner_gradients_rejected_total", {"reason": "stale"}),
        ("a3c_learner_gradient_staleness_count", {}),
        ("a3c_learner_workers_active", {}),
        ("a3c_learner_env_frames_total", {}),
    ],
    "worker": [("a3c_worker_env_frames_total", {}), ("a3c_worker_episodes_total", {})],
    "evaluator": [
        ("a3c_evaluator_score_mean", {}),
        ("a3c_evaluator_best_score", {}),
        ("a3c_evaluator_episodes_total", {}),
        ("a3c_evaluator_model_version", {}),
    ],
}
"""(name, labels) of samples that dashboards and alerts read, by role."""


def start_workers(cluster, count, *args):
    return [
        cluster.start("worker", f"worker-{i}", "--worker-id", f"w{i}", "--seed", str(i + 1), *args)
        for i in range(count)
    ]


def test_services_train_together_and_stop_cleanly(cluster, tmp_path):
    learner = cluster.start("learner", None, "--publish-interval", "0.2")
    workers = start_workers(cluster, 2)
    evaluator = cluster.start(
        "evaluator", None, "--eval-interval", "0", "--eval-log", str(tmp_path / "eval.jsonl")
    )

    wait_for(lambda: learner.value("a3c_learner_workers_active") == 2, 60, "2 active workers")
    wait_for(
        lambda: all(w.value("a3c_worker_gradients_acked_total") >= 20 for w in workers),
        60,
        "both workers' gradients applied",
    )
    assert learner.value("a3c_learner_model_version") >= 40
    assert learner.value("a3c_learner_env_frames_total") >= 40 * 20
    wait_for(lambda: evaluator.value("a3c_evaluator_episodes_total") >= 1, 60, "an evaluated game")
    assert evaluator.value("a3c_evaluator_model_version") > 0
    assert evaluator.value("a3c_evaluator_score_mean") > 0
    assert (tmp_path / "eval.jsonl").read_text().count("\n") >= 1

    for service in [learner, *workers, evaluator]:
        role = service.name.split("-")[0]
        page = service.metrics()
        missing = [(name, labels) for name, labels in PINNED[role] if not page.has(name, **labels)]
        assert not missing, f"{service.name} lacks {missing}"
        assert http_status(service.metrics_port, "/healthz") == 200

    for service in [*workers, evaluator]:
        started = time.monotonic()
        assert service.terminate() == 0
        assert time.monotonic() - started < 10
    final_version = learner.value("a3c_learner_model_version")
    started = time.monotonic()
    assert learner.terminate() == 0
    assert time.monotonic() - started < 10
    state, problems = load_newest(tmp_path / "ckpt")
    assert not problems and state["model_version"] == final_version
    assert all(torch.isfinite(t).all() for t in state["model"].values())


def test_restarted_learner_resumes_and_workers_reconnect_by_themselves(cluster, tmp_path):
    learner = cluster.start("learner")
    workers = start_workers(cluster, 2, "--learner-timeout", "2")
    wait_for(lambda: learner.value("a3c_learner_model_version") >= 30, 60, "30 updates")
    assert learner.terminate() == 0
    saved, _ = load_newest(tmp_path / "ckpt")
    saved_version = saved["model_version"]

    restarted = cluster.start("learner", "learner-restarted")
    wait_for(
        lambda: restarted.value("a3c_learner_model_version") >= saved_version,
        30,
        "the restarted learner to resume at the checkpoint's version",
    )
    assert f"resumed from {saved['path']}" in restarted.log()
    wait_for(
        lambda: restarted.value("a3c_learner_workers_active") == 2,
        60,
        "both workers back on the restarted learner",
    )
    wait_for(
        lambda: restarted.value("a3c_learner_model_version") >= saved_version + 20,
        60,
        "training to continue past the checkpoint",
    )
    for worker in workers:
        assert worker.process.poll() is None, "a worker had to be restarted"
        assert worker.value("a3c_worker_reconnects_total") >= 1


def test_a_killed_worker_is_forgotten_and_the_others_keep_training(cluster):
    learner = cluster.start("learner", None, "--heartbeat-interval", "1")
    doomed, _survivor = start_workers(cluster, 2, "--heartbeat-interval", "1")
    wait_for(lambda: learner.value("a3c_learner_workers_active") == 2, 60, "2 active workers")
    doomed.kill()
    wait_for(
        lambda: learner.value("a3c_learner_workers_active") == 1,
        30,
        "the dead worker to be forgotten",
    )
    version = learner.value("a3c_learner_model_version")
    wait_for(
        lambda: learner.value("a3c_learner_model_version") >= version + 20,
        30,
        "the survivor to keep training",
    )
    late = cluster.start("worker", "late-joiner", "--worker-id", "late")
    wait_for(lambda: learner.value("a3c_learner_workers_active") == 2, 60, "a new worker to join")
    wait_for(
        lambda: late.value("a3c_worker_gradients_acked_total") >= 5, 60, "its gradients applied"
    )
