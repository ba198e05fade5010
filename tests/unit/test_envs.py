"""Environment construction: Breakout preprocessing and the evaluation protocol."""

import cv2
import numpy as np
import pytest

from common.envs import env_spaces, frames_per_step, make_env, make_vector_env


def test_breakout_frames_are_42x42_standardised_by_the_frame_alone():
    """No running statistics: the same screen is the same input after any history."""
    assert env_spaces("ALE/Breakout-v5") == ((1, 42, 42), 4)
    env = make_env("ALE/Breakout-v5", 0, training=True)
    obs, _ = env.reset(seed=0)
    for _ in range(20):
        obs, *_ = env.step(env.action_space.sample())
    assert obs.shape == (1, 42, 42) and obs.dtype == np.float32
    assert abs(float(obs.mean())) < 1e-4 and abs(float(obs.std()) - 1.0) < 1e-3
    screen = env.unwrapped.ale.getScreenGrayscale()[34:194]
    pixels = cv2.resize(screen, (42, 42), interpolation=cv2.INTER_AREA) / 255.0
    expected = (pixels - pixels.mean()) / pixels.std()
    np.testing.assert_allclose(obs[0], expected, atol=1e-4)
    assert frames_per_step("ALE/Breakout-v5") == 4


def _ball_in_play(env, limit=200):
    """Step NOOP until the ball is in the empty band below the bricks; its (row, column) on
    the raw screen, and the observation."""
    for _ in range(limit):
        obs, *_ = env.step(0)
        band = env.unwrapped.ale.getScreenGrayscale()[100:185, 8:152]
        rows, cols = np.nonzero(band)
        if len(rows):
            return (rows.mean() + 100, cols.mean() + 8), obs
    raise AssertionError("no ball in play")


def test_breakout_frames_can_be_84x84_where_the_ball_keeps_more_contrast():
    assert env_spaces("ALE/Breakout-v5", 84) == ((1, 84, 84), 4)
    contrast = {}
    for size in (42, 84):
        env = make_env("ALE/Breakout-v5", 4, training=True, sticky_actions=0.0, frame_size=size)
        env.reset(seed=4)
        (row, col), obs = _ball_in_play(env)
        assert obs.shape == (1, size, size)
        y, x = round((row - 34) / 160 * size), round(col / 160 * size)
        around = obs[0, y - 2 : y + 3, x - 2 : x + 3]
        contrast[size] = float(around.max() - np.median(obs[0, y - 6 : y + 7, x - 6 : x + 7]))
    assert contrast[84] > 1.5 * contrast[42] > 0.3
    with pytest.raises(ValueError, match="frame size"):
        make_env("ALE/Breakout-v5", 0, training=False, frame_size=64)


def _play(env, action, until, limit=5000):
    """Step `action` until `until(terminated, truncated, info)`; the step count and info."""
    for steps in range(1, limit + 1):
        _, _, terminated, truncated, info = env.step(action)
        if until(terminated, truncated, info):
            return steps, terminated, info
    raise AssertionError(f"nothing happened in {limit} steps")


def test_training_signals_a_lost_life_but_the_game_goes_on():
    env = make_env("ALE/Breakout-v5", 1, training=True)
    env.reset(seed=1)
    # NOOP never moves the paddle: the ball served at game start is lost.
    _, terminated, info = _play(env, 0, lambda term, trunc, info: info["life_lost"] or term)
    assert info["life_lost"] and not terminated and info["lives"] == 4
    _, _, _, _, info = env.step(0)
    assert not info["life_lost"], "the signal marks one step only"


def test_nobody_serves_for_the_agent_after_a_lost_life():
    """FIRE is pressed at game start only, in training as in evaluation."""
    for training in (True, False):
        env = make_env("ALE/Breakout-v5", 2, training=training)
        env.reset(seed=2)
        _play(env, 0, lambda term, trunc, info: info["lives"] < 5)
        _, _, terminated, truncated, info = env.step(0)
        for _ in range(300):  # an agent that never fires keeps its 4 lives
            _, _, terminated, truncated, info = env.step(0)
        assert info["lives"] == 4 and not (terminated or truncated)
        _play(env, 1, lambda term, trunc, info: info["lives"] < 4)  # FIRE serves


def test_every_game_starts_served():
    """A NOOP agent loses its first ball in every game: FIRE was pressed for it at the start."""
    for seed in range(10):
        env = make_env("ALE/Breakout-v5", seed, training=False)
        env.reset(seed=seed)
        _play(env, 0, lambda term, trunc, info: info["lives"] < 5, limit=400)
        env.close()


def test_every_emulator_frame_of_a_game_is_counted():
    """The no-op start and the FIRE that the wrappers play count like the agent's frames:
    the game's frames equal the emulator's own episode frame counter."""
    env = make_env("ALE/Breakout-v5", 3, training=False)
    _, info = env.reset(seed=3)
    at_reset = info["frames_total"]
    steps, _, info = _play(env, 1, lambda term, trunc, info: term or trunc, limit=20000)
    assert info["lives"] == 0
    assert info["game_frames"] == info["episode_frame_number"] > 4 * steps
    assert 4 * (steps - 1) < info["frames_total"] - at_reset <= 4 * steps


def test_vector_env_reports_raw_game_scores():
    envs = make_vector_env("CartPole-v1", 0, 3)
    envs.reset(seed=0)
    scores = []
    for _ in range(200):
        _, _, _, _, info = envs.step(envs.action_space.sample())
        final = info.get("final_info", {})
        if "game_score" in final:
            pairs = zip(final["game_score"], final["_game_score"], strict=True)
            scores += [score for score, ended in pairs if ended]
    assert scores and all(s >= 8 for s in scores)


def test_vector_observations_are_scaled_by_their_bounds():
    env = make_env("Acrobot-v1", 0, training=True)
    for _ in range(100):
        obs, *_ = env.step(env.action_space.sample())
        assert np.all(np.abs(obs) <= 1.0 + 1e-6)


@pytest.mark.parametrize(
    ("scale", "low", "high"), [("return_std", 5.0, 100.0), ("return_rms", 0.3, 3.0)]
)
def test_return_rms_keeps_a_constant_cost_game_at_unit_value_scale(scale, low, high):
    """Acrobot pays -1 per step: the value the critic must fit is reward / (1 - gamma). Divided by
    the return's std it stays far from 1 (which saturates the LSTM, docs/learning.md); divided by
    the return's root mean square it is O(1)."""
    gamma = 0.99
    env = make_env("Acrobot-v1", 0, training=True, reward_scale=scale, gamma=gamma)
    rewards = []
    for _ in range(2000):
        _, reward, terminated, truncated, _ = env.step(env.action_space.sample())
        rewards.append(float(reward))
        if terminated or truncated:
            env.reset()
    value_scale = abs(np.mean(rewards[-500:])) / (1 - gamma)
    assert low < value_scale < high
    raw = make_env("Acrobot-v1", 0, training=True)
    assert raw.step(raw.action_space.sample())[1] == -1.0  # no reward_scale: raw rewards
