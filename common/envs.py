"""Environment construction: Atari preprocessing for training and evaluation, vector envs.

Atari (`ALE/*`): grey frames cropped to the playing field, resized to 42x42 and standardised
by their own mean and std (no running statistics), FIRE once at game start, and for training
only clipped rewards and a lost-life signal that ends the return. Training and evaluation play
the same game the same way: the agent serves after a lost life by itself, and nothing is reset or
played for it in between. Evaluation is the standard protocol: full games,
raw score, sticky actions 0.25, up to 30 no-op starts, 108,000-frame cap. Every emulator frame
is counted, those the wrappers play included (`info["frames_total"]`).

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

from common.config import FRAME_SIZES

gym.register_envs(ale_py)

ATARI_FRAMESKIP = 4
ATARI_FRAME_CAP = 108_000
EVAL_STICKY_ACTIONS = 0.25
NOOP_MAX = 30
FRAME_SIZE = 42
"""Atari frames are resized to FRAME_SIZE x FRAME_SIZE by default; 84 (config.FRAME_SIZES) is
the DQN/IMPALA input, which keeps Breakout's ball at about twice the contrast."""


def is_atari(env_id: str) -> bool:
    return env_id.startswith("ALE/")


def frames_per_step(env_id: str) -> int:
    """Emulator frames behind one agent step (Atari's frameskip; 1 elsewhere)."""
    return ATARI_FRAMESKIP if is_atari(env_id) else 1


class GameScore(gym.Wrapper):
    """Counts every emulator frame and adds the raw, unclipped score of a whole game to the
    final step's info.

    It sits directly on the emulator, so the frames that other wrappers play (no-op starts,
    the FIRE at game start) are counted like the agent's own, and neither reward clipping nor
    the training-only life signal changes what is reported as a game's score. Every step's and
    reset's info carries `frames_total`, the frames this env has played since it was made."""

    def __init__(self, env: gym.Env, frames_per_step: int) -> None:
        super().__init__(env)
        self.frames_per_step = frames_per_step
        self.frames_total = 0
        self._score = 0.0
        self._game_frames = 0
        self._frame_number: int | None = None

    def reset(self, **kwargs: Any) -> tuple[Any, dict]:
        self._score, self._game_frames = 0.0, 0
        obs, info = self.env.reset(**kwargs)
        self._frame_number = info.get("frame_number")
        return obs, {**info, "frames_total": self.frames_total}

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        played = self._frames_played(info.get("frame_number"))
        self._score += float(reward)
        self._game_frames += played
        self.frames_total += played
        info = {**info, "frames_total": self.frames_total}
        if terminated or truncated:
            info["game_score"] = self._score
            info["game_frames"] = self._game_frames
        return obs, reward, terminated, truncated, info

    def _frames_played(self, frame_number: int | None) -> int:
        """The emulator's own count where it has one (a step that ends the game stops within
        its frameskip), else `frames_per_step`."""
        if frame_number is None or self._frame_number is None:
            return self.frames_per_step
        played = max(int(frame_number) - int(self._frame_number), 0)
        self._frame_number = frame_number
        return played


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


class FireOnReset(gym.Wrapper):
    """Presses FIRE once when a game starts (games such as Breakout wait for it), and never
    again: after a lost life the agent serves by itself, in training as in evaluation, so the
    evaluation protocol does not play for the agent and the policy that is scored is the one
    that was trained. Under sticky actions the press is swallowed 0.25**4 = 0.4% of the time;
    the agent then serves as it does after every lost life."""

    def __init__(self, env: gym.Env, fire_action: int) -> None:
        super().__init__(env)
        self.fire_action = fire_action

    def reset(self, **kwargs: Any) -> tuple[Any, dict]:
        self.env.reset(**kwargs)
        obs, _, terminated, truncated, info = self.env.step(self.fire_action)
        if terminated or truncated:
            obs, info = self.env.reset(**kwargs)
        return obs, info


class LifeLossSignal(gym.Wrapper):
    """Training only: marks the step that lost a life with `info["life_lost"]` (every step
    carries the key, so vector envs stack it into one array).

    The rollout ends the return there (a lost ball is the end of the value the agent can
    collect, which speeds up learning in games with lives), but the game goes on: no fake
    reset, no hidden step, and the LSTM keeps its memory across lives exactly as it does in
    evaluation, where a lost life is just another frame."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self._lives = 0

    def reset(self, **kwargs: Any) -> tuple[Any, dict]:
        obs, info = self.env.reset(**kwargs)
        self._lives = int(info.get("lives", 0))
        return obs, {**info, "life_lost": False}

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        lives = int(info.get("lives", 0))
        lost = lives < self._lives and not (terminated or truncated)
        self._lives = lives
        return obs, reward, terminated, truncated, {**info, "life_lost": lost}


def standardize_frame(frame: np.ndarray) -> np.ndarray:
    """A frame scaled to zero mean and unit variance by its own statistics.

    It depends on this frame alone, so a screen means the same to the model in every worker,
    in the evaluator and in `a3c evaluate`, whatever was played before it. The scale matters:
    on a mostly black Breakout frame (mean 0.15, std 0.23 in [0, 1]) the ball's faint dot
    becomes about 4x larger than in plain [0, 1] pixels, which is where the first conv layer
    has to find it."""
    frame = frame.astype(np.float32) * (1.0 / 255.0)
    std = float(frame.std())
    return (frame - float(frame.mean())) / (std if std > 1e-6 else 1.0)


def _preprocess_frames(env: gym.Env, size: int) -> gym.Env:
    """Crop the playing field (rows 34-193), resize to `size` x `size` by area averaging (so
    at 42 the 2-pixel ball survives as a faint dot), standardise, add a channel."""
    crop = gym.wrappers.TransformObservation(
        env,
        lambda frame: frame[34:194],
        gym.spaces.Box(0, 255, (160, 160), np.uint8),
    )
    if size not in FRAME_SIZES:
        raise ValueError(f"frame size {size} is not one of {FRAME_SIZES}")
    resized = gym.wrappers.ResizeObservation(crop, (size, size))
    return gym.wrappers.TransformObservation(
        resized,
        lambda frame: standardize_frame(frame)[None],
        gym.spaces.Box(-np.inf, np.inf, (1, size, size), np.float32),
    )


class ReturnRmsReward(gym.wrappers.NormalizeReward):
    """Rewards divided by the running root mean square of the discounted return, sqrt(mean^2
    + var), instead of its std alone: the critic's targets are then O(1) even where every
    step pays the same (Acrobot's -1), which the std leaves at -1/(std * (1 - gamma))."""

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.discounted_reward = self.discounted_reward * self.gamma * (1 - terminated) + float(
            reward
        )
        if self.update_running_mean:
            self.return_rms.update(self.discounted_reward)
        scale = np.sqrt(self.return_rms.var + self.return_rms.mean**2 + self.epsilon)
        return obs, float(reward) / float(scale), terminated, truncated, info


REWARD_SCALES: dict[str, type[gym.wrappers.NormalizeReward]] = {
    "return_std": gym.wrappers.NormalizeReward,
    "return_rms": ReturnRmsReward,
}


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
    reward_scale: str | None = None,
    gamma: float = 0.99,
    render_mode: str | None = None,
    frame_size: int = FRAME_SIZE,
) -> gym.Env:
    """One environment for training (`training=True`) or for the evaluation protocol.

    `reward_scale` (training, vector envs; a key of REWARD_SCALES, None for raw rewards)
    divides rewards by a running statistic of the discounted return, so the critic's targets
    stay near unit scale: on CartPole it took the greedy score from ~180 to ~390 after 80k
    frames. Atari rewards are clipped instead."""
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
        env = GameScore(env, ATARI_FRAMESKIP)
        env = NoopStart(env)
        emulator: Any = env.unwrapped
        meanings = emulator.get_action_meanings()
        if "FIRE" in meanings:
            env = FireOnReset(env, meanings.index("FIRE"))
        if training:
            env = LifeLossSignal(env)
            env = gym.wrappers.ClipReward(env, -1.0, 1.0)
        env = _preprocess_frames(env, frame_size)
    else:
        env = GameScore(gym.make(env_id, render_mode=render_mode), 1)
        env = _scale_by_bounds(env)
        if training and reward_scale is not None:
            env = REWARD_SCALES[reward_scale](env, gamma=gamma)
    env.action_space.seed(seed)
    env.reset(seed=seed)
    return env


def make_vector_env(
    env_id: str,
    seed: int,
    num_envs: int,
    sticky_actions: float = 0.0,
    reward_scale: str | None = None,
    gamma: float = 0.99,
    frame_size: int = FRAME_SIZE,
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
            reward_scale=reward_scale,
            gamma=gamma,
            frame_size=frame_size,
        )
        for i in range(num_envs)
    ]
    return SyncVectorEnv(factories, autoreset_mode=AutoresetMode.SAME_STEP)


def env_spaces(env_id: str, frame_size: int = FRAME_SIZE) -> tuple[tuple[int, ...], int]:
    """(observation shape, number of actions) of the preprocessed env, for building models."""
    env = make_env(env_id, 0, training=False, frame_size=frame_size)
    try:
        shape = env.observation_space.shape
        assert shape is not None and isinstance(env.action_space, gym.spaces.Discrete)
        return tuple(shape), int(env.action_space.n)
    finally:
        env.close()
