"""The actor-learner step shared by the worker and the Hogwild baseline."""

import torch

from common.config import Config
from common.envs import env_spaces, make_vector_env
from common.model import ActorCritic
from common.rollout import RolloutRunner


def test_a_rollout_leaves_a_clipped_gradient_and_carries_the_lstm_state():
    config = Config(env="CartPole-v1", n_steps=7, num_envs=3, max_grad_norm=0.5)
    torch.manual_seed(0)
    model = ActorCritic(*env_spaces(config.env))
    runner = RolloutRunner(model, make_vector_env(config.env, 0, 3), config, 1, seed=0)
    result = runner.run()
    assert result.frames == 7 * 3
    grads = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
    assert grads.abs().sum() > 0 and torch.isfinite(grads).all()
    assert grads.norm() <= 0.5 + 1e-4 < result.stats["grad_norm"]
    assert set(result.seconds) == {"env", "forward", "backward"}
    assert runner.state[0].abs().sum() > 0, "the LSTM state is carried to the next rollout"
    assert not runner.state[0].requires_grad


def test_games_that_end_report_their_raw_score():
    config = Config(env="CartPole-v1", n_steps=50, num_envs=2)
    model = ActorCritic(*env_spaces(config.env))
    runner = RolloutRunner(model, make_vector_env(config.env, 0, 2), config, 1, seed=0)
    scores = [score for _ in range(10) for score in runner.run().episode_returns]
    assert scores and all(score >= 8 for score in scores)
