"""Environment construction: Atari preprocessing for training and evaluation, vector envs.

Atari (`ALE/*`): grey frames cropped to the playing field and resized to 42x42, running
normalisation (as the classic A3C), FIRE after reset and after a lost life, and for training
only clipped rewards and episodic life. Evaluation plays full games with the standard protocol
(DESIGN section 1): raw score, sticky actions 0.25, up to 30 no-op starts, 108,000-frame cap.

Other Gymnasium ids (CartPole-v1, Acrobot-v1, ...) get their observations scaled by the
finite bounds of the observation space: stateless, so workers and evaluator see the same
inputs (Acrobot's angular velocities reach +-28 raw).
"""

from __future__ import annotations

import functools
from typing import Any, SupportsFloat

import ale_py
import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, SyncVectorEnv

gym.register_envs(ale_py)

ATARI_FRAMESKIP = 4
ATARI_FRAME_CAP = 108_000
EVAL_STICKY_ACTIONS = 0.25
NOOP_MAX = 30
FRAME_SIZE = 42


def is_atari(env_id: str) -> bool:
    return env_id.startswith("ALE/")


def frames_per_step(env_id: str) -> int:
    """Emulator frames behind one agent step (Atari's frameskip; 1 elsewhere)."""
    return ATARI_FRAMESKIP if is_atari(env_id) else 1


class GameScore(gym.Wrapper):
    """Adds the raw, unclipped score and frame count of a whole game to the final step's info.

    It sits directly on the emulator so that neither reward clipping nor episodic life
    (training) changes what is reported as a game's score."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self._score = 0.0
        self._steps = 0

    def reset(self, **kwargs: Any) -> tuple[Any, dict]:
        self._score, self._steps = 0.0, 0
        return self.env.reset(**kwargs)

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._score += float(reward)
        self._steps += 1
        if terminated or truncated:
            info = {**info, "game_score": self._score, "game_steps": self._steps}
        return obs, reward, terminated, truncated, info


class NoopStart(gym.Wrapper):
    """Up to `noop_max` random NOOPs after reset, so that games do not all start alike."""

    def __init__(self, env: gym.Env, noop_max: int = NOOP_MAX) -> None:
        super().__init__(env)
        self.noop_max = noop_max

    def reset(self, **kwargs: Any) -> tuple[Any, dict]:
        obs, info = self.env.reset(**kwargs)
        for _ in range(int(self.np_random.integers(0, self.noop_max + 1))):
            obs, _, terminated, truncated, info = self.env.step(0)
            if terminated or truncated:
                obs, info = self.env.reset()
        return obs, info


class EpisodicLife(gym.Wrapper):
    """Training only: a lost life ends the episode for the learner (bootstrapping stops), but
    the emulator resets only when the game is really over."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self._lives = 0
        self._game_over = True

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._game_over = terminated or truncated
        lives = info.get("lives", 0)
        if 0 < lives < self._lives:
            terminated = True
        self._lives = lives
        return obs, reward, terminated, truncated, info

    def reset(self, **kwargs: Any) -> tuple[Any, dict]:
        if self._game_over:
            obs, info = self.env.reset(**kwargs)
        else:
            obs, _, _, _, info = self.env.step(0)
        self._lives = info.get("lives", 0)
        return obs, info


FIRE_PRESSES = 2
"""With sticky actions (p = 0.25 per emulator frame) one FIRE step of 4 frames is swallowed
with probability 0.25**4 = 0.4%; a game has ~6 serves, and a greedy agent that never fires
itself then idles until the 108,000-frame cap (2 of 185 evaluation games did). Two presses:
0.0015% per serve. FIRE does nothing in Breakout once the ball is in play."""


class AutoFire(gym.Wrapper):
    """Presses FIRE after reset and after a lost life: Breakout waits for it to serve, and an
    agent that has not learned that yet would otherwise idle until the frame cap."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self._lives = 0

    def reset(self, **kwargs: Any) -> tuple[Any, dict]:
        obs, info = self.env.reset(**kwargs)
        for _ in range(FIRE_PRESSES):
            obs, _, terminated, truncated, info = self.env.step(1)
            if terminated or truncated:
                obs, info = self.env.reset(**kwargs)
        self._lives = info.get("lives", 0)
        return obs, info

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        lives = info.get("lives", 0)
        presses = FIRE_PRESSES if lives < self._lives else 0
        while presses and not (terminated or truncated):
            obs, extra, terminated, truncated, info = self.env.step(1)
            reward = float(reward) + float(extra)
            presses -= 1
        self._lives = info.get("lives", 0)
        return obs, reward, terminated, truncated, info


class FrameNormalize(gym.ObservationWrapper):
    """Running normalisation of whole frames (the classic A3C's NormalizedEnv): one mean and
    one std per frame, tracked with an exponential average and bias-corrected."""

    def __init__(self, env: gym.Env, alpha: float = 0.9999) -> None:
        super().__init__(env)
        self.alpha = alpha
        self._mean = 0.0
        self._std = 0.0
        self._count = 0
        shape = env.observation_space.shape
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape, np.float32)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        self._count += 1
        self._mean = self._mean * self.alpha + float(observation.mean()) * (1 - self.alpha)
        self._std = self._std * self.alpha + float(observation.std()) * (1 - self.alpha)
        correction = 1 - self.alpha**self._count
        mean, std = self._mean / correction, self._std / correction
        return ((observation - mean) / (std + 1e-8)).astype(np.float32)


def _preprocess_frames(env: gym.Env) -> gym.Env:
    """Crop the playing field (rows 34-193), resize to 42x42, scale to [0, 1], add a channel."""
    crop = gym.wrappers.TransformObservation(
        env,
        lambda frame: frame[34:194],
        gym.spaces.Box(0, 255, (160, 160), np.uint8),
    )
    resized = gym.wrappers.ResizeObservation(crop, (FRAME_SIZE, FRAME_SIZE))
    scaled = gym.wrappers.TransformObservation(
        resized,
        lambda frame: (frame.astype(np.float32) / 255.0)[None],
        gym.spaces.Box(0.0, 1.0, (1, FRAME_SIZE, FRAME_SIZE), np.float32),
    )
    return FrameNormalize(scaled)


def _scale_by_bounds(env: gym.Env) -> gym.Env:
    space = env.observation_space
    assert isinstance(space, gym.spaces.Box), "vector observations must be a Box"
    bound = np.maximum(np.abs(space.low), np.abs(space.high))
    scale = np.where(np.isfinite(bound) & (bound > 0), bound, 1.0).astype(np.float32)
    return gym.wrappers.TransformObservation(
        env,
        lambda obs: np.asarray(obs, np.float32) / scale,
        gym.spaces.Box(-np.inf, np.inf, space.shape, np.float32),
    )


def make_env(
    env_id: str,
    seed: int,
    *,
    training: bool,
    sticky_actions: float | None = None,
    normalize_rewards: bool = False,
    gamma: float = 0.99,
    render_mode: str | None = None,
) -> gym.Env:
    """One environment for training (`training=True`) or for the evaluation protocol.

    `normalize_rewards` (training, vector envs) divides rewards by a running std of the
    discounted return, so the critic's targets stay near unit scale: on CartPole it took the
    greedy score from ~180 to ~390 after 80k frames. Atari rewards are clipped instead."""
    if is_atari(env_id):
        sticky = sticky_actions if sticky_actions is not None else EVAL_STICKY_ACTIONS
        env: gym.Env = gym.make(
            env_id,
            obs_type="grayscale",
            frameskip=ATARI_FRAMESKIP,
            repeat_action_probability=sticky if training else EVAL_STICKY_ACTIONS,
            max_num_frames_per_episode=ATARI_FRAME_CAP,
            full_action_space=False,
            render_mode=render_mode,
        )
        env = GameScore(env)
        env = NoopStart(env)
        if training:
            env = EpisodicLife(env)
        emulator: Any = env.unwrapped
        if "FIRE" in emulator.get_action_meanings():
            env = AutoFire(env)
        if training:
            env = gym.wrappers.ClipReward(env, -1.0, 1.0)
        env = _preprocess_frames(env)
    else:
        env = GameScore(gym.make(env_id, render_mode=render_mode))
        env = _scale_by_bounds(env)
        if training and normalize_rewards:
            env = gym.wrappers.NormalizeReward(env, gamma=gamma)
    env.action_space.seed(seed)
    env.reset(seed=seed)
    return env


def make_vector_env(
    env_id: str,
    seed: int,
    num_envs: int,
    sticky_actions: float = 0.0,
    normalize_rewards: bool = False,
    gamma: float = 0.99,
) -> SyncVectorEnv:
    """`num_envs` training envs stepped as a batch; a finished env resets in the same step
    (its last observation is in info['final_obs']) so every step yields a usable observation."""
    factories = [
        functools.partial(
            make_env,
            env_id,
            seed + i,
            training=True,
            sticky_actions=sticky_actions,
            normalize_rewards=normalize_rewards,
            gamma=gamma,
        )
        for i in range(num_envs)
    ]
    return SyncVectorEnv(factories, autoreset_mode=AutoresetMode.SAME_STEP)


def env_spaces(env_id: str) -> tuple[tuple[int, ...], int]:
    """(observation shape, number of actions) of the preprocessed env, for building models."""
    env = make_env(env_id, 0, training=False)
    try:
        shape = env.observation_space.shape
        assert shape is not None and isinstance(env.action_space, gym.spaces.Discrete)
        return tuple(shape), int(env.action_space.n)
    finally:
        env.close()
