"""Weights on the wire: each `weights_dtype` decodes into a float32 model within its precision
(float32 exactly), one snapshot per model version serves every message of that version and
never changes once made, weights that do not fit are refused with their reason, and the
learner's byte counters move by what it received and sent."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest
import torch

from common.config import load_config
from common.envs import env_spaces
from common.metrics import learner_metrics
from common.model import ActorCritic, parameter_count
from common.protocol import (
    ANY_WEIGHTS_DTYPE_SINCE,
    REQUEST_TYPES,
    WIRE_DTYPES,
    GradientBody,
    HelloBody,
    ProtocolError,
    Session,
    WeightsBody,
)
from common.transport import _decode, frames_nbytes
from common.weights import (
    all_finite,
    layout_digest,
    load_parameter_vector,
    wire_snapshot,
    wire_tensor,
)
from services.learner import learner as learner_module
from services.learner.core import LearnerCore

SPACES = env_spaces("CartPole-v1")
N_PARAMS = parameter_count(ActorCritic(*SPACES))
LAYOUT = layout_digest(ActorCritic(*SPACES))
PRECISION = {"float32": 0.0, "float16": 2.0**-11, "bfloat16": 2.0**-8}
"""Relative rounding error of each wire dtype (round to nearest: half a unit in the last place)."""
TINY = {"float32": 0.0, "float16": 2.0**-25, "bfloat16": 0.0}
"""Absolute error below float16's smallest normal (6.1e-5), where its steps are 2**-24."""


def make_core(weights_dtype: str = "float32") -> LearnerCore:
    torch.manual_seed(0)
    config = load_config({"env": "CartPole-v1", "weights_dtype": weights_dtype})
    return LearnerCore.create(ActorCritic(*SPACES), config, learner_metrics())


def through_the_wire(frames: list) -> list[bytes]:
    return [bytes(memoryview(frame)) for frame in frames]


class Peer:
    """A worker's Session, its frames decoded by the learner's as its socket would."""

    def __init__(self, core: LearnerCore, sender: str = "w1") -> None:
        self.core, self.identity = core, sender.encode()
        self.session = Session(sender)
        self.learner = Session("learner", accepts=REQUEST_TYPES)

    def send(self, msg_type: str, body, arrays=(), proto: list[int] | None = None):
        frames = through_the_wire(self.session.encode(msg_type, body, arrays))
        if proto is not None:
            frames[0] = msgpack.packb({**msgpack.unpackb(frames[0]), "proto": proto})
        return self.core.handle(self.identity, self.learner.decode(frames))

    def hello(self, proto: list[int] | None = None):
        return self.send("hello", HelloBody(layout=LAYOUT), proto=proto)

    def gradient(self, version: int):
        body = GradientBody(model_version=version, frames=20, layout=LAYOUT)
        return self.send("gradient", body, [("float32", np.full(N_PARAMS, 1e-3, np.float32))])


def hello(core: LearnerCore, sender: str = "w1", proto: list[int] | None = None):
    return Peer(core, sender).hello(proto)


def assert_within_precision(loaded: np.ndarray, master: np.ndarray, dtype: str) -> None:
    if dtype == "float32":
        np.testing.assert_array_equal(loaded, master)
    else:
        np.testing.assert_allclose(loaded, master, rtol=PRECISION[dtype], atol=TINY[dtype])


# --- each dtype, end to end ------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_welcome_weights_decode_into_a_float32_model_within_their_precision(dtype):
    core = make_core(dtype)
    with torch.no_grad():  # values across float16's range, subnormals included
        core.flat.values.copy_(torch.logspace(-7, 4, N_PARAMS) * torch.sign(torch.randn(N_PARAMS)))
    reply = hello(core)
    assert reply is not None and reply.type == "welcome"
    frames = through_the_wire(Session("learner").encode(reply.type, reply.body, reply.arrays))
    message = Session("w1").decode(frames)
    assert message.array_dtypes == [dtype]
    worker_model = ActorCritic(*SPACES)
    load_parameter_vector(worker_model, message.arrays[0])  # the dtype from the array alone
    loaded = torch.cat([p.detach().reshape(-1) for p in worker_model.parameters()])
    assert loaded.dtype == torch.float32
    assert_within_precision(loaded.numpy(), core.flat.values.detach().numpy(), dtype)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_width_weights_halve_the_bytes(dtype):
    full, half = hello(make_core("float32")), hello(make_core(dtype))
    assert full is not None and half is not None
    assert half.arrays[0][1].nbytes * 2 == full.arrays[0][1].nbytes == 4 * N_PARAMS


def test_a_peer_older_than_1_2_is_refused_bfloat16_weights_but_not_float16():
    old = [ANY_WEIGHTS_DTYPE_SINCE[0], ANY_WEIGHTS_DTYPE_SINCE[1] - 1]
    refused = hello(make_core("bfloat16"), proto=old)
    assert refused is not None and refused.type == "error"
    assert refused.body.reason == "protocol_version" and "bfloat16" in refused.body.detail
    welcomed = hello(make_core("float16"), proto=old)
    assert welcomed is not None and welcomed.type == "welcome", "a 1.1 peer casts float16 right"


# --- one snapshot per version ----------------------------------------------------------------


def test_every_message_of_one_version_shares_one_snapshot():
    core = make_core("float16")
    first, second = Peer(core, "w1"), Peer(core, "w2")
    welcome_1, welcome_2 = first.hello(), second.hello()
    assert welcome_1 is not None and welcome_2 is not None
    refused = first.gradient(version=10**6)  # refused with the current weights
    assert refused is not None and refused.body.reason == "bad_version"
    held = welcome_1.arrays[0][1]
    assert welcome_2.arrays[0][1] is held and refused.arrays[0][1] is held
    assert core.weights() is held and core.snapshots_taken == 1
    before = held.copy()
    ack = second.gradient(version=0)
    assert ack is not None and ack.body.accepted and core.snapshots_taken == 2
    assert ack.arrays[0][1] is not held, "a new version, a new snapshot"
    np.testing.assert_array_equal(held, before, "a snapshot once sent never changes")
    assert not np.array_equal(ack.arrays[0][1], before), "the new one has the new weights"


# --- malformed weights -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("weights", "dtype", "reason"),
    [
        (np.zeros(N_PARAMS - 1, np.float32), None, "shape"),
        (np.zeros((2, N_PARAMS // 2), np.float16), None, "shape"),
        (np.zeros(N_PARAMS, np.int64), None, "dtype"),
        (np.zeros(N_PARAMS, np.float32), "float16", "dtype"),
        (np.zeros(N_PARAMS, np.float16), "float8", "dtype"),
    ],
)
def test_weights_that_do_not_fit_the_model_are_refused_with_their_reason(weights, dtype, reason):
    model = ActorCritic(*SPACES)
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ProtocolError) as refused:
        load_parameter_vector(model, weights, dtype)
    assert refused.value.reason == reason
    assert all(torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True))


def weights_frames(dtype_name: str, shape: list[int], buffer: bytes) -> list[bytes]:
    body = WeightsBody(model_version=0, frames=0, layout=LAYOUT, env="CartPole-v1")
    frames = through_the_wire(Session("learner").encode("weights", body, []))
    header = {**msgpack.unpackb(frames[0]), "arrays": [[dtype_name, shape]]}
    return [msgpack.packb(header), b"", buffer]


@pytest.mark.parametrize(
    ("dtype_name", "nbytes", "reason"),
    [("float8", N_PARAMS, "dtype"), ("float16", 4 * N_PARAMS, "shape"), ("bfloat16", 3, "shape")],
)
def test_a_broadcast_of_bad_dtype_or_byte_count_is_refused_before_decoding(
    dtype_name, nbytes, reason
):
    received = _decode(Session("evaluator"), weights_frames(dtype_name, [N_PARAMS], bytes(nbytes)))
    assert received.message is None and received.error is not None
    assert received.error.reason == reason
    assert received.nbytes > nbytes, "refused bytes are counted as received too"


def test_the_finite_check_is_exact_even_where_the_sum_overflows():
    assert all_finite(torch.full((10,), 3e38)), "finite elements whose sum overflows"
    for bad in (np.inf, -np.inf, np.nan):
        values = torch.ones(10)
        values[3] = bad
        assert not all_finite(values)


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_a_snapshot_is_a_copy_in_the_wire_dtype(dtype):
    values = torch.linspace(-2, 2, 101)
    master = values.clone()
    snapshot = wire_snapshot(values, dtype)
    values.add_(1.0)  # the model moves on; the snapshot does not
    assert snapshot.dtype == WIRE_DTYPES[dtype] and snapshot.shape == (101,)
    decoded = wire_tensor(snapshot, dtype).float().numpy()
    assert_within_precision(decoded, master.numpy(), dtype)


# --- bytes through the learner ---------------------------------------------------------------


class RecordingServer:
    """The learner's ROUTER and PUB without sockets: replies are encoded by a real Session and
    their size returned, as the transport returns the bytes it queued."""

    def __init__(self, session: Session, *_args: object) -> None:
        self.session = session
        self.sizes: list[tuple[str, int]] = []

    def reply(self, _identity: bytes, msg_type: str, body=None, arrays=()) -> int:
        size = frames_nbytes(self.session.encode(msg_type, body, arrays))
        self.sizes.append((msg_type, size))
        return size

    def publish(self, msg_type: str, body, arrays=()) -> int:
        return self.reply(b"", msg_type, body, arrays)

    def recv(self, _timeout_ms: int) -> None:
        return None

    def refused_handshakes(self) -> int:
        return 0

    def close(self) -> None:
        pass


def test_the_byte_counters_move_by_the_encoded_sizes(tmp_path, monkeypatch):
    monkeypatch.setattr(learner_module, "RouterServer", RecordingServer)
    monkeypatch.setattr(learner_module, "Publisher", RecordingServer)
    config = load_config({
        "env": "CartPole-v1", "checkpoint_dir": str(tmp_path), "metrics_port": 0,
        "weights_dtype": "float16", "publish_interval": 0.0,
    })  # fmt: skip
    learner = learner_module.Learner(config)
    registry = learner.metrics.registry

    def count(name: str, kind: str) -> float:
        value = registry.get_sample_value(f"a3c_learner_bytes_{name}_total", {"type": kind})
        assert value is not None, (name, kind)
        return value

    worker = Session("w1")
    hello_frames = through_the_wire(worker.encode("hello", HelloBody(layout=learner.core.layout)))
    learner.handle(_decode(learner.session, hello_frames, identity=b"w1"))
    grad = np.full(learner.core.n_params, 1e-3, np.float16)
    body = GradientBody(model_version=0, frames=20, layout=learner.core.layout)
    gradient_frames = through_the_wire(worker.encode("gradient", body, [("float16", grad)]))
    learner.handle(_decode(learner.session, gradient_frames, identity=b"w1"))
    learner.handle(_decode(learner.session, [b"\x00garbage"], identity=b"w1"))
    learner.tick()

    assert count("received", "hello") == frames_nbytes(hello_frames)
    assert count("received", "gradient") == frames_nbytes(gradient_frames)
    assert count("received", "unreadable") == len(b"\x00garbage")
    sizes = dict(learner.server.sizes)
    assert [kind for kind, _ in learner.server.sizes] == ["welcome", "ack", "error"]
    for kind in ("welcome", "ack", "error"):
        assert count("sent", kind) == sizes[kind]
    assert sizes["ack"] > 2 * learner.core.n_params, "the ack carried the float16 weights"
    assert count("sent", "weights") == dict(learner.publisher.sizes)["weights"]
