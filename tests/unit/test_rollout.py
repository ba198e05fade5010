"""The actor-learner step shared by the worker and the Hogwild baseline."""

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode, SyncVectorEnv

from common.a3c import gae
from common.config import Config
from common.envs import env_spaces, make_vector_env
from common.model import ActorCritic
from common.rollout import RolloutRunner


def test_a_rollout_leaves_a_clipped_gradient_and_carries_the_lstm_state():
    config = Config(env="CartPole-v1", n_steps=7, num_envs=3, max_grad_norm=0.5)
    torch.manual_seed(0)
    model = ActorCritic(*env_spaces(config.env))
    runner = RolloutRunner(model, make_vector_env(config.env, 0, 3), config, seed=0)
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
    runner = RolloutRunner(model, make_vector_env(config.env, 0, 2), config, seed=0)
    scores = [score for _ in range(10) for score in runner.run().episode_returns]
    assert scores and all(score >= 8 for score in scores)


class LivesGame(gym.Env):
    """A game of `length` steps that loses a life at each step in `lives_lost_at`; reward 1
    per step, 3 emulator frames per step, and a reset that plays 5 frames of its own."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, length: int, lives_lost_at: tuple[int, ...]) -> None:
        self.length, self.lives_lost_at = length, lives_lost_at
        self.t, self.frames = 0, 0

    def _info(self, life_lost: bool = False) -> dict:
        return {"frames_total": self.frames, "life_lost": life_lost}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.frames = 0, self.frames + 5
        return np.zeros(2, np.float32), self._info()

    def step(self, action):
        self.t += 1
        self.frames += 3
        obs = np.array([self.t / self.length, 1.0], np.float32)
        return obs, 1.0, self.t >= self.length, False, self._info(self.t in self.lives_lost_at)


def test_a_lost_life_ends_the_return_but_not_the_lstm_memory_and_a_game_end_ends_both():
    config = Config(env="CartPole-v1", n_steps=4, num_envs=2, gamma=0.5)
    model = ActorCritic((2,), 2)
    # Env 0 loses a life at its 4th step; env 1's game ends at its 4th step.
    envs = SyncVectorEnv(
        [lambda: LivesGame(100, (4,)), lambda: LivesGame(4, ())],
        autoreset_mode=AutoresetMode.SAME_STEP,
    )
    runner = RolloutRunner(model, envs, config, seed=0)
    result = runner.run()
    h, c = runner.state
    assert h[0].abs().sum() > 0 and c[0].abs().sum() > 0, "memory kept across a lost life"
    assert h[1].abs().sum() == 0 and c[1].abs().sum() == 0, "memory reset at a game end"
    # Frames: 4 steps x 3 frames in each env, plus the 5 that env 1's reset played.
    assert result.frames == 2 * 4 * 3 + 5


def test_with_memory_reset_life_a_lost_life_also_zeroes_the_lstm_memory():
    config = Config(env="CartPole-v1", n_steps=4, num_envs=2, memory_reset="life")
    envs = SyncVectorEnv(
        [lambda: LivesGame(100, (4,)), lambda: LivesGame(100, ())],
        autoreset_mode=AutoresetMode.SAME_STEP,
    )
    runner = RolloutRunner(ActorCritic((2,), 2), envs, config, seed=0)
    runner.run()
    h, c = runner.state
    assert h[0].abs().sum() == 0 and c[0].abs().sum() == 0, "memory reset at the lost life"
    assert h[1].abs().sum() > 0, "an env that lost nothing keeps its memory"


def test_the_return_stops_at_a_lost_life(monkeypatch):
    captured = {}

    def spy(rewards, values, dones, bootstrap, gamma, lam):
        captured["dones"] = dones.clone()
        return gae(rewards, values, dones, bootstrap, gamma, lam)

    monkeypatch.setattr("common.rollout.gae", spy)
    config = Config(env="CartPole-v1", n_steps=5, num_envs=1)
    envs = SyncVectorEnv([lambda: LivesGame(100, (2,))], autoreset_mode=AutoresetMode.SAME_STEP)
    RolloutRunner(ActorCritic((2,), 2), envs, config, seed=0).run()
    assert captured["dones"][:, 0].tolist() == [0.0, 1.0, 0.0, 0.0, 0.0]
