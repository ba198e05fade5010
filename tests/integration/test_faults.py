"""Faults injected into a running cluster: kill -9 of the learner, a hung (stopped) worker."""

import signal

from common.checkpoint import load_newest
from tests.conftest import wait_for
from tests.integration.test_cluster import start_workers


def test_learner_killed_hard_resumes_and_every_peer_reconnects(cluster, tmp_path):
    learner = cluster.start("learner", None, "--checkpoint-interval", "1")
    workers = start_workers(cluster, 2, "--learner-timeout", "2")
    evaluator = cluster.start("evaluator", None, "--eval-interval", "0")
    wait_for(lambda: learner.value("a3c_learner_checkpoints_total") >= 2, 60, "checkpoints")
    wait_for(lambda: evaluator.value("a3c_evaluator_episodes_total") >= 1, 60, "an evaluation")
    learner.kill()  # SIGKILL: no final checkpoint, maybe a half-written temp file
    saved, _ = load_newest(tmp_path / "ckpt")

    restarted = cluster.start("learner", "learner-restarted")
    wait_for(
        lambda: restarted.value("a3c_learner_model_version") >= saved["model_version"],
        30,
        "resume from the newest valid checkpoint",
    )
    wait_for(lambda: restarted.value("a3c_learner_workers_active") == 2, 60, "workers back")
    wait_for(
        lambda: restarted.value("a3c_learner_model_version") >= saved["model_version"] + 20,
        60,
        "training to go on",
    )
    episodes = evaluator.value("a3c_evaluator_episodes_total")
    wait_for(
        lambda: (
            evaluator.value("a3c_evaluator_model_version") > saved["model_version"]
            and evaluator.value("a3c_evaluator_episodes_total") > episodes
        ),
        60,
        "the evaluator to score weights of the restarted learner",
    )
    assert all(w.process.poll() is None for w in [*workers, evaluator])


def test_a_hung_worker_is_detected_and_rejoins_when_it_wakes(cluster):
    learner = cluster.start("learner", None, "--heartbeat-interval", "1")
    hung, healthy = start_workers(cluster, 2, "--heartbeat-interval", "1")
    wait_for(lambda: learner.value("a3c_learner_workers_active") == 2, 60, "2 workers")
    hung.process.send_signal(signal.SIGSTOP)
    try:
        wait_for(
            lambda: learner.value("a3c_learner_workers_active") == 1,
            30,
            "the hung worker to be forgotten",
        )
        assert "forgetting worker w0" in learner.log()
    finally:
        hung.process.send_signal(signal.SIGCONT)
    acked = hung.value("a3c_worker_gradients_acked_total")
    wait_for(lambda: learner.value("a3c_learner_workers_active") == 2, 60, "the worker to rejoin")
    wait_for(
        lambda: hung.value("a3c_worker_gradients_acked_total") > acked,
        60,
        "its gradients to be applied again",
    )
    assert healthy.process.poll() is None


def test_learner_warm_starts_from_a_model_file_once(cluster, tmp_path):
    from common.checkpoint import atomic_save
    from common.envs import env_spaces
    from common.model import ActorCritic
    from common.weights import layout_digest

    model = ActorCritic(*env_spaces("CartPole-v1"))
    shipped = tmp_path / "shipped.pt"
    atomic_save(
        shipped,
        {
            "model": {k: v.half() for k, v in model.state_dict().items()},
            "layout": layout_digest(model),
            "model_version": 500,
            "frames": 9000,
        },
    )
    learner = cluster.start("learner", None, "--init-from", str(shipped))
    wait_for(lambda: learner.value("a3c_learner_model_version") == 500, 30, "the warm start")
    assert "warm start from" in learner.log()
    assert learner.terminate() == 0
    again = cluster.start("learner", "learner-again", "--init-from", str(shipped))
    wait_for(lambda: "resumed from" in again.log(), 30, "a resume, not a second warm start")
