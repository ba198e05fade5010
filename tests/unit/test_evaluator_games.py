"""The evaluator records its games for the page without changing them (no sockets: the
learner's broadcast is replaced by one that never arrives, and weights are set by hand).

CartPole keeps these games short; it draws no frames without pygame, so its screen here is
one drawn from the cart's state (test_gallery reads Breakout's real screen)."""

import io
import json
import threading

import numpy as np
import pytest
import torch
from PIL import Image

import services.evaluator.evaluator as evaluator_module
from common.config import Config
from common.metrics import Health, metrics_app
from services.evaluator.evaluator import Evaluator
from tests.unit.test_page import call


class NoBroadcast:
    def __init__(self, *_args, **_kwargs):
        pass

    def recv_newest(self, _timeout_ms):
        return None

    def close(self):
        pass


def cart_screen(env):
    """A 60x200 picture of the cart: where the game is, as pixels."""

    def draw():
        x = float(env.unwrapped.state[0])
        frame = np.zeros((60, 200, 3), np.uint8)
        column = int(np.clip(100 + 40 * x, 0, 190))
        frame[30:40, column : column + 10] = (255, 255, 255)
        return frame

    return draw


@pytest.fixture
def make_evaluator(monkeypatch, tmp_path):
    monkeypatch.setattr(evaluator_module, "Subscriber", NoBroadcast)
    monkeypatch.setattr(evaluator_module, "screen_source", cart_screen)
    made = []

    def make(**settings):
        torch.manual_seed(0)
        config = Config(env="CartPole-v1", metrics_port=0, eval_policy="sample", **settings)
        evaluator = Evaluator(config)
        evaluator.version, evaluator.train_frames = 7, 12_345
        made.append(evaluator)
        return evaluator

    yield make
    for evaluator in made:
        evaluator.env.close()


def app_of(evaluator):
    return metrics_app(evaluator.metrics.registry, Health(), evaluator.site.routes())


def test_a_finished_game_is_served_as_a_gif_that_matches_its_json(make_evaluator):
    evaluator = make_evaluator(game_max_frames=8)
    app = app_of(evaluator)
    assert call(app, "/game/latest.gif")[0] == 404
    assert call(app, "/game/latest.json")[0] == 404

    result = evaluator.evaluate_once(stop=_never())
    assert result is not None
    status, _, gif = call(app, "/game/latest.gif")
    info = json.loads(call(app, "/game/latest.json")[2])
    assert status == 200
    assert info["length"] == result.steps and info["score"] == result.score
    assert info["game_frames"] == result.frames
    assert info["version"] == 7 and info["frames"] == 12_345 and info["game"] == 1
    with Image.open(io.BytesIO(gif)) as image:
        assert image.n_frames == info["gif_frames"] <= 8 < result.steps
        assert image.size == (100, 30 + 35) == tuple(info["gif_size"])  # halved: 200 > 160
    page = call(app, "/")[2].decode()
    assert 'id="version">v7<' in page and 'data-points="1"' in page
    held = evaluator.metrics.registry.get_sample_value("a3c_evaluator_game_bytes")
    bound = evaluator.metrics.registry.get_sample_value("a3c_evaluator_game_bytes_bound")
    assert 0 < held == len(gif) <= bound == info["memory_bound_bytes"]


def test_recording_changes_nothing_about_the_game(make_evaluator):
    plain = make_evaluator(game_max_frames=0).evaluate_once(stop=_never())
    watched = make_evaluator(game_max_frames=16).evaluate_once(stop=_never())
    assert plain == watched


def test_the_curve_starts_from_the_runs_earlier_games(make_evaluator, tmp_path):
    log = tmp_path / "eval.jsonl"
    lines = [
        {"env": "CartPole-v1", "frames": 1000 * i, "score": i, "mean_score": i / 2}
        for i in range(3)
    ]
    lines.append({"env": "Acrobot-v1", "frames": 1, "score": 1, "mean_score": 1})
    log.write_text("\n".join(json.dumps(line) for line in lines) + "\n{truncated")
    evaluator = make_evaluator(game_max_frames=0, eval_log=log)
    assert 'data-points="3"' in call(app_of(evaluator), "/")[2].decode()


def _never():
    return threading.Event()


def test_a_game_reports_how_much_the_critics_value_moved():
    """The value's spread over a game is what tells a collapsed model (one number in every
    state) from a working one; the evaluator exports it as a3c_evaluator_value_spread."""
    from common.envs import env_spaces, make_env
    from common.evaluation import play_episode
    from common.model import ActorCritic

    torch.manual_seed(0)
    working, flat = ActorCritic(*env_spaces("CartPole-v1")), ActorCritic(*env_spaces("CartPole-v1"))
    with torch.no_grad():
        flat.lstm.bias_ih[3 * flat.lstm_size :].fill_(-50.0)  # output gates shut: h = 0
    spreads = {}
    for name, model in (("working", working), ("flat", flat)):
        env = make_env("CartPole-v1", 3, training=False)
        result = play_episode(model, env, "CartPole-v1", "sample", seed=3)
        assert result is not None and result.steps > 1
        spreads[name] = result.value_spread
    assert spreads["flat"] < 1e-6 < spreads["working"]


@pytest.mark.parametrize("memory_reset", ["game", "life"])
def test_evaluation_resets_the_memory_where_training_did(memory_reset):
    """A game of Breakout: with memory_reset "life" every step after a lost life starts from
    zeroed LSTM memory, as training's rollouts do; with "game" memory spans all lives."""
    from common.envs import env_spaces, make_env
    from common.evaluation import play_episode
    from common.model import ActorCritic

    torch.manual_seed(0)
    model = ActorCritic(*env_spaces("ALE/Breakout-v5"))
    env = make_env("ALE/Breakout-v5", 5, training=False)
    zeroed_states, steps = [], [0]
    original = model.forward

    def spy(obs, state):
        steps[0] += 1
        if steps[0] > 1 and float(state[0].abs().sum()) == 0.0:
            zeroed_states.append(steps[0])
        return original(obs, state)

    model.forward = spy  # type: ignore[method-assign]
    result = play_episode(
        model, env, "ALE/Breakout-v5", "sample", seed=5, memory_reset=memory_reset
    )
    assert result is not None
    # 5 lives: 4 are lost before the last one ends the game.
    assert len(zeroed_states) == (4 if memory_reset == "life" else 0)
