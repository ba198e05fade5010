"""The ActorCritic: sizes of the classic model, shapes, and the LSTM state that carries."""

import torch

from common.model import ActorCritic, parameter_count


def test_atari_model_has_the_classic_size():
    model = ActorCritic((1, 42, 42), 4)
    assert parameter_count(model) == 588_453
    assert model.lstm.input_size == 288 and model.lstm.hidden_size == 256


def test_shapes_for_a_batch():
    model = ActorCritic((1, 42, 42), 4)
    logits, value, (h, c) = model(torch.randn(3, 1, 42, 42), model.initial_state(3))
    assert logits.shape == (3, 4) and value.shape == (3,)
    assert h.shape == c.shape == (3, 256)


def test_vector_model_uses_an_mlp_encoder():
    model = ActorCritic((4,), 2)
    logits, value, _ = model(torch.randn(5, 4), model.initial_state(5))
    assert logits.shape == (5, 2) and value.shape == (5,)


def test_lstm_state_carries_information_across_steps():
    torch.manual_seed(0)
    model = ActorCritic((4,), 2)
    obs = torch.randn(1, 4)
    fresh_logits, _, state = model(obs, model.initial_state(1))
    carried_logits, _, _ = model(obs, state)
    assert not torch.allclose(fresh_logits, carried_logits)


def test_actor_starts_near_uniform():
    model = ActorCritic((1, 42, 42), 4)
    logits, _, _ = model(torch.randn(8, 1, 42, 42), model.initial_state(8))
    probs = logits.softmax(-1)
    assert torch.allclose(probs, torch.full_like(probs, 0.25), atol=0.02)
