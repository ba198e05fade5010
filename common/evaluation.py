"""Playing evaluation games with a policy: the evaluator service, `a3c evaluate` and
`a3c record` share this loop. No gradients, no I/O beyond the env."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

import gymnasium as gym
import torch

from common.model import ActorCritic


@dataclass(frozen=True)
class EpisodeResult:
    score: float
    """Raw, unclipped score of the whole game."""
    steps: int
    frames: int
    truncated: bool
    value_spread: float = 0.0
    """Standard deviation of the critic's value over the game's steps. About 0 when the model's
    output no longer depends on what it sees (a fresh model, or one whose LSTM collapsed:
    bench/lstm_health.py); a model that has learned anything spreads its values."""


@torch.inference_mode()
def play_episode(
    model: ActorCritic,
    env: gym.Env,
    env_id: str,
    policy: str = "greedy",
    seed: int | None = None,
    stop: threading.Event | None = None,
    on_step: Callable[[float], None] | None = None,
    memory_reset: str = "game",
) -> EpisodeResult | None:
    """One full episode; None if `stop` was set before it ended. `on_step` is called after
    every step with the score so far (for recording). With `memory_reset="life"` the LSTM
    state is zeroed after every lost life (`info["lives"]` falls), as training did."""
    obs, info = env.reset(seed=seed)
    state = model.initial_state(1)
    lives = info.get("lives")
    generator = torch.Generator().manual_seed(seed or 0)
    score, steps = 0.0, 0
    value_sum = value_square_sum = 0.0
    while True:
        logits, value, state = model(torch.as_tensor(obs).unsqueeze(0), state)
        value_sum += float(value)
        value_square_sum += float(value) ** 2
        if policy == "greedy":
            action = int(logits.argmax(-1))
        else:
            action = int(torch.multinomial(logits.softmax(-1), 1, generator=generator))
        obs, reward, terminated, truncated, info = env.step(action)
        score += float(reward)
        steps += 1
        if on_step is not None:
            on_step(score)
        if memory_reset == "life" and lives is not None and info.get("lives", lives) < lives:
            state = model.initial_state(1)
        lives = info.get("lives", lives)
        if terminated or truncated:
            score = float(info.get("game_score", score))
            frames = int(info["game_frames"])
            mean = value_sum / steps
            spread = max(value_square_sum / steps - mean * mean, 0.0) ** 0.5
            return EpisodeResult(score, steps, frames, bool(truncated), spread)
        if stop is not None and steps % 64 == 0 and stop.is_set():
            return None
