"""Environment construction: Breakout preprocessing and the evaluation protocol."""

import numpy as np

from common.envs import env_spaces, frames_per_step, make_env, make_vector_env


def test_breakout_frames_are_42x42_and_normalised():
    assert env_spaces("ALE/Breakout-v5") == ((1, 42, 42), 4)
    env = make_env("ALE/Breakout-v5", 0, training=True)
    obs, _ = env.reset(seed=0)
    for _ in range(20):
        obs, *_ = env.step(env.action_space.sample())
    assert obs.shape == (1, 42, 42) and obs.dtype == np.float32
    assert abs(float(obs.mean())) < 5
    assert frames_per_step("ALE/Breakout-v5") == 4


def test_training_ends_episodes_at_a_lost_life_but_evaluation_plays_the_whole_game():
    def episode_lives(training: bool) -> tuple[int, dict]:
        env = make_env("ALE/Breakout-v5", 1, training=training)
        env.reset(seed=1)
        while True:
            _, _, terminated, truncated, info = env.step(0)  # never moves: loses every ball
            if terminated or truncated:
                return info["lives"], info

    lives, _ = episode_lives(training=True)
    assert lives == 4
    lives, info = episode_lives(training=False)
    assert lives == 0 and "game_score" in info


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


def test_every_ball_is_served_under_sticky_actions():
    """An agent that never presses FIRE still plays every ball: no game idles to the cap."""
    for seed in range(30):
        env = make_env("ALE/Breakout-v5", seed, training=False)
        env.reset(seed=seed)
        steps, truncated = 0, False
        while True:
            _, _, terminated, truncated, info = env.step(0)  # NOOP
            steps += 1
            if terminated or truncated:
                break
        assert not truncated and info["lives"] == 0, f"seed {seed}: game idled for {steps} steps"
        env.close()
