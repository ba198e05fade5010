"""The actor-learner step of A3C, independent of where the gradient goes: play `n_steps` in a
batch of environments with the LSTM carried across rollouts, then leave the clipped gradient of
the A3C loss in the model's `.grad`.

The worker service sends that gradient over the network; the Hogwild baseline of the
benchmarks applies it to a shared-memory model. Both run exactly this code.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
from gymnasium.vector import VectorEnv

from common.a3c import a3c_loss, gae
from common.config import Config
from common.model import ActorCritic, LSTMState


@dataclass
class RolloutResult:
    frames: int
    """Emulator frames played, those the env wrappers play (no-op starts, FIRE) included."""
    stats: dict[str, float]
    """policy_loss, value_loss, entropy, grad_norm (before clipping)."""
    episode_returns: list[float] = field(default_factory=list)
    """Raw scores of the games that ended during the rollout."""
    seconds: dict[str, float] = field(default_factory=dict)
    """Wall time by phase: env, forward, backward."""


class RolloutRunner:
    """Plays rollouts in `envs` (built by common.envs.make_vector_env).

    Two kinds of boundary: a game that ends (terminated or truncated) resets the env and the
    LSTM state; a lost life (`info["life_lost"]`, training only) ends the return, and with
    `memory_reset="life"` zeroes the LSTM state too; either way the LSTM sees a game the way
    the evaluator plays it (common.evaluation does the same)."""

    def __init__(self, model: ActorCritic, envs: VectorEnv, config: Config, seed: int) -> None:
        self.model = model
        self.envs = envs
        self.config = config
        obs, info = envs.reset(seed=seed)
        self.obs = torch.as_tensor(obs)
        self._frames_total = np.asarray(info["frames_total"], dtype=np.int64)
        self.state: LSTMState = model.initial_state(envs.num_envs)

    def run(self) -> RolloutResult:
        """One rollout; the gradient is left in `model.parameters()`'s `.grad`."""
        config, model = self.config, self.model
        seconds = {"env": 0.0, "forward": 0.0, "backward": 0.0}
        h, c = self.state[0].detach(), self.state[1].detach()
        logits_t, values_t, actions_t, rewards_t, dones_t = [], [], [], [], []
        episode_returns: list[float] = []
        frames = 0
        for _ in range(config.n_steps):
            t0 = time.perf_counter()
            logits, value, (h, c) = model(self.obs, (h, c))
            action = torch.multinomial(logits.detach().softmax(-1), 1).squeeze(-1)
            t1 = time.perf_counter()
            obs, reward, terminated, truncated, info = self.envs.step(action.numpy())
            t2 = time.perf_counter()
            reward_t = torch.as_tensor(reward, dtype=torch.float32)
            if truncated.any():
                reward_t = reward_t + self._truncation_bootstrap(
                    info, truncated, terminated, (h, c)
                )
            game_over = terminated | truncated
            return_ends = game_over | np.asarray(info.get("life_lost", False), dtype=bool)
            episode_returns += finished_games(info)
            frames += self._count_frames(info)
            logits_t.append(logits)
            values_t.append(value)
            actions_t.append(action)
            rewards_t.append(reward_t)
            dones_t.append(torch.as_tensor(return_ends, dtype=torch.float32))
            forget = return_ends if config.memory_reset == "life" else game_over
            keep = torch.as_tensor(~forget, dtype=torch.float32).unsqueeze(-1)
            h, c = h * keep, c * keep
            self.obs = torch.as_tensor(obs)
            seconds["forward"] += t1 - t0
            seconds["env"] += t2 - t1
        t0 = time.perf_counter()
        with torch.no_grad():
            _, bootstrap, _ = model(self.obs, (h, c))
        values = torch.stack(values_t)
        advantages, returns = gae(
            torch.stack(rewards_t),
            values,
            torch.stack(dones_t),
            bootstrap,
            config.gamma,
            config.gae_lambda,
        )
        loss = a3c_loss(
            torch.stack(logits_t),
            torch.stack(actions_t),
            values,
            advantages,
            returns,
            config.value_coef,
            config.entropy_coef,
            config.normalize_advantages,
        )
        t1 = time.perf_counter()
        model.zero_grad(set_to_none=False)
        loss.total.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
        self.state = (h.detach(), c.detach())
        seconds["forward"] += t1 - t0
        seconds["backward"] += time.perf_counter() - t1
        stats = {
            "policy_loss": loss.policy,
            "value_loss": loss.value,
            "entropy": loss.entropy,
            "grad_norm": float(grad_norm),
        }
        return RolloutResult(frames, stats, episode_returns, seconds)

    def _count_frames(self, info: dict) -> int:
        """Emulator frames since the last step, from each env's own counter (a reset in the
        same step, with its no-ops and FIRE, is in it)."""
        now = np.asarray(info["frames_total"], dtype=np.int64)
        played = int((now - self._frames_total).sum())
        self._frames_total = now
        return played

    @torch.no_grad()
    def _truncation_bootstrap(
        self, info: dict, truncated: np.ndarray, terminated: np.ndarray, state: LSTMState
    ) -> torch.Tensor:
        """A time limit is not a real end: fold gamma * V(final obs) into the last reward."""
        bonus = torch.zeros(len(truncated))
        final_obs = info.get("final_obs")
        for i in np.flatnonzero(truncated & ~terminated):
            if final_obs is None or final_obs[i] is None:
                continue
            obs = torch.as_tensor(np.asarray(final_obs[i], dtype=np.float32)).unsqueeze(0)
            _, value, _ = self.model(obs, (state[0][i : i + 1], state[1][i : i + 1]))
            bonus[i] = self.config.gamma * float(value)
        return bonus


def finished_games(info: dict) -> list[float]:
    """Raw scores of the games that ended in this vector step (from common.envs.GameScore)."""
    final = info.get("final_info")
    if not final or "game_score" not in final:
        return []
    pairs = zip(final["game_score"], final["_game_score"], strict=True)
    return [float(score) for score, ended in pairs if ended]
