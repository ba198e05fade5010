"""The A3C objective as pure functions: GAE advantages, n-step returns, and the loss.

Rollouts are time-major: tensors of shape [T, B] (T steps of B environments). `dones[t]`
marks that the episode ended at step t, so nothing after it bootstraps into step t.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

ALGORITHM_VERSION = 4
"""Bumped by every change that affects what is learned per frame (the objective, the env
preprocessing, a default of the algorithm); recorded in config.json, checkpoints, summaries
and the learning benchmark, so results are only ever compared within one version.
1: FIRE after every lost life, LSTM reset at a lost life in training only, running frame
normalisation. 2: FIRE at game start only (the agent serves), the LSTM spans whole games in
training as in evaluation, frames scaled to [0, 1], every emulator frame counted.
3: each frame standardised by its own mean and std (plain [0, 1] pixels left Breakout at
random level after 2.5M frames on 2 seeds: docs/learning.md).
4: 4 envs per worker instead of 16 (one gradient per 80 agent frames, 4x the optimizer steps
per frame): on Breakout 6.0 against 4.2 at 5M frames, both seeds higher, and 10.5 at 10M;
it halves frames/s (docs/learning.md)."""


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    dones: torch.Tensor,
    bootstrap_value: torch.Tensor,
    gamma: float,
    lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimates and the returns the critic regresses to.

    With lam = 1 the advantage is the n-step return minus the value (the classic A3C); the
    returns are always advantages + values, i.e. lambda-returns."""
    values = values.detach()
    steps = rewards.shape[0]
    advantages = torch.zeros_like(rewards)
    next_value = bootstrap_value.detach()
    running = torch.zeros_like(bootstrap_value)
    for t in reversed(range(steps)):
        not_done = 1.0 - dones[t]
        delta = rewards[t] + gamma * next_value * not_done - values[t]
        running = delta + gamma * lam * not_done * running
        advantages[t] = running
        next_value = values[t]
    return advantages, advantages + values


@dataclass(frozen=True)
class LossTerms:
    total: torch.Tensor
    policy: float
    value: float
    entropy: float


def a3c_loss(
    logits: torch.Tensor,
    actions: torch.Tensor,
    values: torch.Tensor,
    advantages: torch.Tensor,
    returns: torch.Tensor,
    value_coef: float,
    entropy_coef: float,
    normalize_advantages: bool,
) -> LossTerms:
    """policy_loss + value_coef * value_loss - entropy_coef * entropy.
    logits [T, B, A], actions/values/advantages/returns [T, B].

    Each term is summed over the T steps of a rollout (as the classic A3C, so that the default
    gradient clip of 50 means what it meant there) and averaged over the B environments (so
    that batching more environments does not change the gradient's scale)."""

    def reduce(per_sample: torch.Tensor) -> torch.Tensor:
        return per_sample.sum(0).mean()

    log_probs = torch.log_softmax(logits, dim=-1)
    probs = log_probs.exp()
    entropy = reduce(-(probs * log_probs).sum(-1))
    chosen = log_probs.gather(-1, actions.unsqueeze(-1)).squeeze(-1)
    advantages = advantages.detach()
    if normalize_advantages and advantages.numel() > 1:
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    policy_loss = reduce(-chosen * advantages)
    value_loss = reduce(0.5 * (returns.detach() - values).pow(2))
    total = policy_loss + value_coef * value_loss - entropy_coef * entropy
    return LossTerms(total, policy_loss.item(), value_loss.item(), entropy.item())
