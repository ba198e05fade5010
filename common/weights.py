"""Model parameters and gradients <-> one flat wire array, with a layout digest.

Everything travels as a single flat buffer (one frame, no per-tensor overhead); the header's
`layout` digest (names and shapes of every parameter) lets a receiver refuse a gradient for a
different model before touching it. Float16 gradients are scaled by a power of two per
message so that small gradients do not flush to zero. Weights travel unscaled in the
learner's `weights_dtype` (float32 masters stay on the learner): their values are O(1), well
inside float16's range, and a receiver decodes whatever dtype the array spec names.
"""

from __future__ import annotations

import hashlib
import math
import warnings

import numpy as np
import torch
from torch import nn

from common.protocol import WIRE_DTYPES, ProtocolError

FLOAT16_TARGET_MAX = 2.0**14
"""float16 gradients are scaled so that the largest lands near here (max finite: 65504)."""

TORCH_WIRE_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}
"""What each wire dtype is to torch (numpy's side is `common.protocol.WIRE_DTYPES`)."""
WIRE_NAMES: dict[np.dtype, str] = {dtype: name for name, dtype in WIRE_DTYPES.items()}
"""A decoded array's wire dtype name from its numpy dtype: the two correspond one to one
(bfloat16 alone arrives as uint16), so weights handed on without their name still decode."""


def layout_digest(model: nn.Module) -> str:
    """A short fingerprint of parameter names and shapes, equal iff the layouts match."""
    text = ";".join(f"{name}:{tuple(p.shape)}" for name, p in model.named_parameters())
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class FlatParameters:
    """Every parameter and gradient of a model as a view into one flat buffer each.

    The learner's Adam then steps one tensor instead of a list (less per-call overhead), a
    weight snapshot is one memcpy, and a decoded gradient lands where every `.grad` already
    points. The model itself keeps working: forward, `state_dict` and `load_state_dict` all
    read and write the flat buffers through the views."""

    def __init__(self, model: nn.Module) -> None:
        params = list(model.parameters())
        with torch.no_grad():
            self.values = nn.Parameter(torch.cat([p.detach().reshape(-1) for p in params]))
        self.grads = torch.zeros_like(self.values)
        self.values.grad = self.grads
        offset = 0
        for param in params:
            count = param.numel()
            param.data = self.values.data[offset : offset + count].view_as(param)
            param.grad = self.grads[offset : offset + count].view_as(param)
            offset += count
        self.sizes = [p.numel() for p in params]

    def snapshot(self) -> np.ndarray:
        """A float32 copy of all parameters, safe to send while the model moves on."""
        return self.values.detach().clone().numpy()

    def per_parameter_optimizer_state(self, state: dict) -> dict:
        """An optimizer state_dict saved per parameter (older checkpoints), as one flat
        parameter: each per-parameter tensor of the same size is concatenated in order."""
        groups = state["param_groups"]
        ids = [i for group in groups for i in group["params"]]
        if len(ids) == 1:
            return state
        if len(ids) != len(self.sizes):
            raise ValueError(f"optimizer state has {len(ids)} parameters, model {len(self.sizes)}")
        per_param = [state["state"].get(i, {}) for i in ids]
        merged: dict = {}
        for key, value in per_param[0].items():
            if isinstance(value, torch.Tensor) and value.numel() == self.sizes[0]:
                merged[key] = torch.cat([p[key].reshape(-1) for p in per_param])
            else:
                merged[key] = value
        group = {**groups[0], "params": [0]}
        return {"state": {0: merged} if merged else {}, "param_groups": [group]}


def _as_tensor(array: np.ndarray) -> torch.Tensor:
    """A zero-copy tensor view of a (possibly read-only, received) array; it is only read."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "The given NumPy array is not writable", UserWarning)
        return torch.from_numpy(array)


def wire_tensor(array: np.ndarray, wire_dtype: str) -> torch.Tensor:
    """A zero-copy torch view of a wire array with its real dtype (bfloat16 from uint16)."""
    source = _as_tensor(array)
    if wire_dtype == "bfloat16":
        source = source.view(torch.int16).view(torch.bfloat16)
    return source


def load_parameter_vector(
    model: nn.Module, vector: np.ndarray, wire_dtype: str | None = None
) -> None:
    """Load weights from the wire into a float32 model, whatever wire dtype they came in.

    `wire_dtype` defaults to what the array's numpy dtype says (see WIRE_NAMES), so a
    receiver that hands on `message.arrays[0]` alone decodes float16 and bfloat16 right.
    Float32 weights are not copied (the parameters become views of the received buffer; the
    receiver never writes them, only their gradients); others are converted once, by torch.
    Raises ProtocolError ("dtype", "shape") for weights that are not this model's."""
    name = wire_dtype if wire_dtype is not None else WIRE_NAMES.get(vector.dtype)
    if name not in WIRE_DTYPES or WIRE_DTYPES[name] != vector.dtype:
        raise ProtocolError("dtype", f"weights of numpy dtype {vector.dtype} as {name!r}")
    count = sum(p.numel() for p in model.parameters())
    if vector.shape != (count,):
        raise ProtocolError("shape", f"weights of shape {vector.shape} for {count} parameters")
    with torch.no_grad():
        flat = wire_tensor(vector, name).to(torch.float32)
        torch.nn.utils.vector_to_parameters(flat, model.parameters())


def wire_snapshot(values: torch.Tensor, wire_dtype: str) -> np.ndarray:
    """A copy of `values` in the wire dtype, made in one pass that converts as it copies, for
    a zero-copy send: the socket reads its memory after `send` returns, so it must never
    change, and a fresh array never does. Reusing buffers would save nothing: with
    `common.service.tune_allocator` a fresh multi-MB array comes from the heap without page
    faults, and a copy into a reused buffer measured no faster than this one."""
    dtype = TORCH_WIRE_DTYPES.get(wire_dtype)
    if dtype is None:
        raise ValueError(f"weights dtype {wire_dtype!r} not in {sorted(TORCH_WIRE_DTYPES)}")
    with torch.no_grad():  # (`to` a dtype of its own would return `values` itself)
        copy = values.detach().clone() if dtype == values.dtype else values.detach().to(dtype)
    if wire_dtype == "bfloat16":
        return copy.view(torch.int16).numpy().view(np.uint16)
    return copy.numpy()


def all_finite(values: torch.Tensor) -> bool:
    """Whether every element is finite, at the cost of one sum: a NaN or infinity anywhere
    makes the sum non-finite, so a finite sum proves them all finite, and only a sum that
    overflowed needs the element-wise check. (torch's sum takes half the time of numpy's
    isfinite + all, and torch's own isfinite is slower still.)"""
    if math.isfinite(float(values.sum())):
        return True
    return bool(np.isfinite(values.detach().numpy()).all())


def gradient_vector(model: nn.Module, wire_dtype: str) -> tuple[np.ndarray, float]:
    """The model's gradients as one wire array and the scale they were multiplied by."""
    with torch.no_grad():
        grads = [
            (p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
            for p in model.parameters()
        ]
        flat = torch.cat(grads)
        if wire_dtype == "float32":
            return flat.numpy(), 1.0
        if wire_dtype == "bfloat16":
            return flat.to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16), 1.0
        largest = float(flat.abs().max())
        scale = 1.0
        if math.isfinite(largest) and largest > 0:
            scale = 2.0 ** math.floor(math.log2(FLOAT16_TARGET_MAX / largest))
            scale = min(max(scale, 2.0**-24), 2.0**40)
        return (flat * scale).to(torch.float16).numpy(), scale


def decode_into(out: torch.Tensor, wire: np.ndarray, wire_dtype: str, scale: float) -> None:
    """Write a wire array into a preallocated float32 tensor: one pass, no intermediate copy
    (torch converts float16 about 20x faster than numpy's casting copy)."""
    source = wire_tensor(wire, wire_dtype)
    with torch.no_grad():
        out.copy_(source)
        if scale != 1.0:
            out.mul_(1.0 / scale)
