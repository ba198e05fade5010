"""Parameters and gradients <-> one flat wire array."""

import numpy as np
import pytest
import torch

from common.model import ActorCritic, parameter_count
from common.weights import (
    FlatParameters,
    decode_into,
    gradient_vector,
    layout_digest,
    load_parameter_vector,
)


def parameter_vector(model: torch.nn.Module) -> np.ndarray:
    """All parameters in one array (a copy), the layout FlatParameters and the wire use."""
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).numpy()


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


def test_flat_parameters_are_the_models_parameters_and_gradients():
    model = ActorCritic((4,), 2)
    before = parameter_vector(model).copy()
    flat = FlatParameters(model)
    np.testing.assert_array_equal(flat.snapshot(), before)
    optimizer = torch.optim.Adam([flat.values], lr=0.1)
    flat.values.grad.fill_(1.0)
    first = next(model.parameters())
    assert torch.equal(first.grad, torch.ones_like(first))
    snapshot = flat.snapshot()
    optimizer.step()
    # The step moved every model parameter; the snapshot taken before it did not move.
    np.testing.assert_allclose(parameter_vector(model), before - 0.1, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(snapshot, before)
    # load_state_dict writes through the views into the flat buffer.
    model.load_state_dict(ActorCritic((4,), 2).state_dict())
    np.testing.assert_array_equal(flat.snapshot(), parameter_vector(model))


def test_flat_parameters_take_an_older_per_parameter_optimizer_state():
    torch.manual_seed(0)
    old_model = ActorCritic((4,), 2)
    old_optimizer = torch.optim.Adam(old_model.parameters(), lr=0.1)
    for param in old_model.parameters():
        param.grad = torch.randn_like(param)
    old_optimizer.step()
    model = ActorCritic((4,), 2)
    flat = FlatParameters(model)
    optimizer = torch.optim.Adam([flat.values], lr=0.1)
    optimizer.load_state_dict(flat.per_parameter_optimizer_state(old_optimizer.state_dict()))
    merged = optimizer.state_dict()["state"][0]
    expected = torch.cat(
        [old_optimizer.state[p]["exp_avg"].reshape(-1) for p in old_model.parameters()]
    )
    assert torch.equal(merged["exp_avg"], expected)
    assert float(merged["step"]) == 1.0
