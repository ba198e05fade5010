"""The evaluator reads the weight broadcast during a game but swaps weights only between
games, so each score belongs to one model version (in process, real sockets)."""

import threading
import time

from common.config import load_config
from services.evaluator.evaluator import POLL_EVERY_STEPS, Evaluator
from services.learner.learner import Learner
from services.local.process import free_port


def test_broadcasts_during_a_game_are_kept_for_the_next_one(tmp_path):
    port = free_port(pair=True)
    common = {"env": "CartPole-v1", "metrics_port": free_port(), "publish_interval": 0.0}
    learner = Learner(load_config({**common, "port": port, "checkpoint_dir": str(tmp_path)}))
    evaluator = Evaluator(load_config({**common, "learner": f"127.0.0.1:{port}"}))
    try:
        deadline = time.monotonic() + 20
        while evaluator.version < 0 and time.monotonic() < deadline:  # PUB/SUB joins late
            learner.tick()
            evaluator.poll_weights(100)
        assert evaluator.version == 0
        learner.version = 5  # the learner moved on while a game is being played
        received = evaluator.metrics.weights_received._value.get()
        deadline = time.monotonic() + 20
        while evaluator._newest is None and time.monotonic() < deadline:
            learner.tick()
            for _ in range(POLL_EVERY_STEPS):
                evaluator._during_game(0.0)
        assert evaluator.metrics.weights_received._value.get() > received
        assert evaluator.version == 0, "weights swapped in the middle of a game"
        result = evaluator.evaluate_once(threading.Event())
        assert result is not None and evaluator.version == 5
    finally:
        evaluator.subscriber.close()
        learner.server.close()
        learner.publisher.close()


def test_the_best_model_is_labelled_with_the_games_its_own_weights_played(tmp_path):
    """Not with a moving window over several versions: `eval_scores` are the games these
    very weights played, and the file holds those weights."""
    import torch

    from common.checkpoint import MODEL_KEYS, load_checkpoint

    port = free_port(pair=True)
    best = tmp_path / "best.pt"
    common = {"env": "CartPole-v1", "metrics_port": free_port(), "publish_interval": 0.0}
    learner = Learner(load_config({**common, "port": port, "checkpoint_dir": str(tmp_path)}))
    evaluator = Evaluator(
        load_config({**common, "learner": f"127.0.0.1:{port}", "best_model_path": str(best)})
    )
    try:
        deadline = time.monotonic() + 20
        while evaluator.version < 0 and time.monotonic() < deadline:
            learner.tick()
            evaluator.poll_weights(100)
        scores = []
        for _ in range(3):
            result = evaluator.evaluate_once(threading.Event())
            assert result is not None
            scores.append(result.score)
        saved = load_checkpoint(best, MODEL_KEYS)
        assert saved["model_version"] == 0
        # One version played all three games; the label is the best prefix mean among them.
        prefix_means = [sum(scores[: i + 1]) / (i + 1) for i in range(3)]
        assert saved["eval_mean"] == max(prefix_means)
        assert saved["eval_scores"] == scores[: prefix_means.index(max(prefix_means)) + 1]
        for name, tensor in evaluator.model.state_dict().items():
            assert torch.equal(saved["model"][name], tensor)
    finally:
        evaluator.subscriber.close()
        learner.server.close()
        learner.publisher.close()
