"""Parameters and gradients <-> one flat wire array."""

import numpy as np
import pytest
import torch

from common.model import ActorCritic, parameter_count
from common.weights import (
    decode_into,
    gradient_vector,
    layout_digest,
    load_parameter_vector,
    parameter_vector,
)


@pytest.fixture
def model_with_grads():
    torch.manual_seed(0)
    model = ActorCritic((4,), 2)
    logits, value, _ = model(torch.randn(3, 4), model.initial_state(3))
    (logits.sum() + value.sum() * 1e-6).backward()
    return model


def test_parameter_vector_round_trip():
    source, target = ActorCritic((4,), 2), ActorCritic((4,), 2)
    load_parameter_vector(target, parameter_vector(source))
    for a, b in zip(source.parameters(), target.parameters(), strict=True):
        assert torch.equal(a, b)


def test_parameter_vector_is_a_snapshot():
    model = ActorCritic((4,), 2)
    snapshot = parameter_vector(model).copy()
    vector = parameter_vector(model)
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    np.testing.assert_array_equal(vector, snapshot)


@pytest.mark.parametrize(
    ("dtype", "tolerance"), [("float32", 0), ("float16", 2e-3), ("bfloat16", 1e-2)]
)
def test_gradient_wire_dtypes_round_trip(model_with_grads, dtype, tolerance):
    exact = torch.cat([p.grad.reshape(-1) for p in model_with_grads.parameters()]).numpy()
    wire, scale = gradient_vector(model_with_grads, dtype)
    out = torch.zeros(parameter_count(model_with_grads))
    decode_into(out, wire, dtype, scale)
    np.testing.assert_allclose(
        out.numpy(), exact, rtol=tolerance, atol=tolerance * np.abs(exact).max()
    )


def test_float16_scaling_keeps_tiny_gradients(model_with_grads):
    for p in model_with_grads.parameters():
        p.grad.mul_(1e-9)  # far below float16's smallest subnormal (6e-8)
    exact = torch.cat([p.grad.reshape(-1) for p in model_with_grads.parameters()]).numpy()
    wire, scale = gradient_vector(model_with_grads, "float16")
    out = torch.zeros(len(exact))
    decode_into(out, wire, "float16", scale)
    out = out.numpy()
    big = np.abs(exact) > np.abs(exact).max() * 1e-3
    np.testing.assert_allclose(out[big], exact[big], rtol=2e-3)


def test_layout_digest_tells_models_apart():
    assert layout_digest(ActorCritic((4,), 2)) == layout_digest(ActorCritic((4,), 2))
    assert layout_digest(ActorCritic((4,), 2)) != layout_digest(ActorCritic((4,), 3))
    assert layout_digest(ActorCritic((1, 42, 42), 4)) != layout_digest(ActorCritic((1, 42, 42), 6))
