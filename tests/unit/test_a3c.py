"""GAE and the A3C loss against values computed by hand."""

import math

import pytest
import torch

from common.a3c import a3c_loss, gae


def test_gae_lambda_one_is_n_step_return_minus_value():
    rewards = torch.tensor([[1.0], [0.0], [2.0]])
    values = torch.tensor([[0.5], [0.2], [0.1]])
    dones = torch.zeros(3, 1)
    bootstrap = torch.tensor([1.0])
    advantages, returns = gae(rewards, values, dones, bootstrap, gamma=0.5, lam=1.0)
    # R2 = 2 + 0.5*1 = 2.5; R1 = 0 + 0.5*2.5 = 1.25; R0 = 1 + 0.5*1.25 = 1.625
    assert returns[:, 0].tolist() == pytest.approx([1.625, 1.25, 2.5])
    assert advantages[:, 0].tolist() == pytest.approx([1.125, 1.05, 2.4])


def test_gae_stops_at_episode_end():
    rewards = torch.tensor([[1.0], [1.0]])
    values = torch.tensor([[0.0], [0.0]])
    dones = torch.tensor([[1.0], [0.0]])  # the episode ended at step 0
    _, returns = gae(rewards, values, dones, torch.tensor([10.0]), gamma=0.9, lam=1.0)
    assert returns[:, 0].tolist() == pytest.approx([1.0, 1.0 + 0.9 * 10.0])


def test_gae_lambda_between_zero_and_one():
    rewards = torch.tensor([[0.0], [1.0]])
    values = torch.tensor([[0.5], [1.0]])
    dones = torch.zeros(2, 1)
    gamma, lam = 0.9, 0.5
    advantages, _ = gae(rewards, values, dones, torch.tensor([2.0]), gamma, lam)
    delta1 = 1.0 + gamma * 2.0 - 1.0
    delta0 = 0.0 + gamma * 1.0 - 0.5
    assert advantages[1, 0].item() == pytest.approx(delta1)
    assert advantages[0, 0].item() == pytest.approx(delta0 + gamma * lam * delta1)


def test_gae_is_batched_per_environment():
    rewards = torch.tensor([[1.0, 0.0]])
    values = torch.zeros(1, 2)
    advantages, _ = gae(rewards, values, torch.zeros(1, 2), torch.tensor([0.0, 1.0]), 0.5, 1.0)
    assert advantages[0].tolist() == pytest.approx([1.0, 0.5])


def test_loss_matches_hand_computation():
    logits = torch.tensor([[[0.0, math.log(3.0)]]], requires_grad=True)  # probs 0.25, 0.75
    actions = torch.tensor([[1]])
    values = torch.tensor([[0.5]], requires_grad=True)
    advantages = torch.tensor([[2.0]])
    returns = torch.tensor([[1.5]])
    terms = a3c_loss(logits, actions, values, advantages, returns, 0.5, 0.01, False)
    entropy = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    policy = -math.log(0.75) * 2.0
    value = 0.5 * (1.5 - 0.5) ** 2
    assert terms.policy == pytest.approx(policy)
    assert terms.value == pytest.approx(value)
    assert terms.entropy == pytest.approx(entropy)
    assert terms.total.item() == pytest.approx(policy + 0.5 * value - 0.01 * entropy)
    terms.total.backward()
    # d(0.5 * 0.5 * (R - V)^2)/dV = -0.5 * (R - V)
    assert values.grad.item() == pytest.approx(-0.5 * 1.0)


def test_loss_sums_over_time_and_averages_over_envs():
    logits = torch.zeros(4, 3, 2)
    actions = torch.zeros(4, 3, dtype=torch.long)
    values = torch.zeros(4, 3)
    ones = torch.ones(4, 3)
    terms = a3c_loss(logits, actions, values, ones, ones, 0.5, 0.0, False)
    assert terms.policy == pytest.approx(4 * math.log(2.0))
    assert terms.value == pytest.approx(4 * 0.5)


def test_advantage_normalisation_centres_the_policy_term():
    logits = torch.zeros(5, 1, 2)
    actions = torch.zeros(5, 1, dtype=torch.long)
    advantages = torch.arange(5.0).reshape(5, 1) * 100
    terms = a3c_loss(
        logits, actions, torch.zeros(5, 1), advantages, torch.zeros(5, 1), 0.5, 0.0, True
    )
    assert terms.policy == pytest.approx(0.0, abs=1e-5)
