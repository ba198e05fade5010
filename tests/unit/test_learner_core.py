"""The learner core without a socket: every way a request is refused, each on its own (the
reason in the reply, its counter up by one, the model untouched), and what an applied gradient
changes. Frames go through the same `Session.decode` the learner's socket uses."""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import msgpack
import numpy as np
import pytest
import torch

from common.config import load_config
from common.envs import env_spaces
from common.metrics import FORGET_REASONS, REJECT_REASONS, learner_metrics
from common.model import ActorCritic, parameter_count
from common.protocol import (
    HEARTBEAT_LIVENESS,
    MAX_CLOCK_SKEW_S,
    PROTOCOL_VERSION,
    REQUEST_TYPES,
    AckBody,
    ErrorBody,
    GradientBody,
    HeartbeatBody,
    HelloBody,
    ProtocolError,
    Session,
    WeightsBody,
)
from common.weights import layout_digest
from services.learner.core import LearnerCore, Reply

SPACES = env_spaces("CartPole-v1")
N_PARAMS = parameter_count(ActorCritic(*SPACES))
LAYOUT = layout_digest(ActorCritic(*SPACES))
MAX_STALENESS = 3
KEY = b"right-key"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_core(clock: Clock | None = None) -> LearnerCore:
    torch.manual_seed(0)
    config = load_config({"env": "CartPole-v1", "max_staleness": MAX_STALENESS, "lr": 1e-3})
    return LearnerCore.create(ActorCritic(*SPACES), config, learner_metrics(), clock or Clock())


class Peer:
    """A worker as the core sees it: frames from its Session, decoded by the learner's."""

    def __init__(
        self,
        core: LearnerCore,
        sender: str = "w1",
        identity: bytes = b"conn-1",
        key: bytes | None = None,
        learner_key: bytes | None = None,
        max_bytes: int = 4 * N_PARAMS * 3,
    ) -> None:
        self.core = core
        self.identity = identity
        self.session = Session(sender, key)
        self.learner = Session("learner", learner_key, max_bytes, accepts=REQUEST_TYPES)

    def frames(self, msg_type: str, body=None, arrays=()) -> list[bytes]:
        return [bytes(frame) for frame in self.session.encode(msg_type, body, arrays)]

    def send_frames(self, frames: list[bytes], learner: Session | None = None) -> Reply | None:
        try:
            incoming = (learner or self.learner).decode(frames)
        except ProtocolError as error:
            incoming = error
        return self.core.handle(self.identity, incoming)

    def send(self, msg_type: str, body=None, arrays=()) -> Reply | None:
        return self.send_frames(self.frames(msg_type, body, arrays))

    def hello(self) -> Reply | None:
        return self.send("hello", HelloBody(layout=LAYOUT))

    def gradient_frames(self, values=None, version=0, dtype="float32", **body) -> list[bytes]:
        grad = np.full(N_PARAMS, 1e-3, np.float32) if values is None else values
        fields = {"model_version": version, "frames": 20, "layout": LAYOUT, **body}
        return self.frames("gradient", fields, [(dtype, grad)])

    def gradient(self, values=None, version=0, dtype="float32", **body) -> Reply | None:
        return self.send_frames(self.gradient_frames(values, version, dtype, **body))


def sample(core: LearnerCore, name: str, **labels: str) -> float | None:
    return core.metrics.registry.get_sample_value(name, labels)


def rejected(core: LearnerCore, reason: str) -> float:
    value = sample(core, "a3c_learner_gradients_rejected_total", reason=reason)
    assert value is not None, reason
    return value


def welcomed(peer: Peer) -> None:
    reply = peer.hello()
    assert reply is not None and reply.type == "welcome"


def accept(peer: Peer, count: int) -> None:
    """Push the model `count` versions on with accepted gradients."""
    for _ in range(count):
        reply = peer.gradient(version=peer.core.version)
        assert reply is not None and reply.body.accepted is True


def with_header(frames: list[bytes], key: bytes | None = None, **changes) -> list[bytes]:
    """The same message with header fields changed (and signed again with `key`)."""
    header = {**msgpack.unpackb(frames[0]), **changes}
    packed = msgpack.packb(header)
    signature = b""
    if key is not None:
        mac = hmac.new(key, packed, hashlib.sha256)
        for buffer in frames[2:]:
            mac.update(buffer)
        signature = mac.hexdigest().encode()
    return [packed, signature, *frames[2:]]


def replayed(peer: Peer) -> Reply | None:
    """A gradient with the sequence number of one already accepted."""
    last = peer.core.workers[peer.identity].last_seq
    return peer.send_frames(with_header(peer.gradient_frames(version=1), seq=last))


def signed_but_old(peer: Peer) -> Reply | None:
    """Correctly signed, but sent from a clock far outside the signing window."""
    frames = with_header(peer.frames("hello", HelloBody(layout=LAYOUT)), KEY, time=1.0)
    return signed_learner(peer, frames)


def signed_from_the_future(peer: Peer) -> Reply | None:
    """Correctly signed by a peer whose clock runs ahead of the learner's by more than the
    signing window."""
    sent_at = time.time() + MAX_CLOCK_SKEW_S + 60
    frames = with_header(peer.frames("heartbeat"), KEY, time=sent_at)
    return signed_learner(peer, frames)


def signed_learner(peer: Peer, frames: list[bytes]) -> Reply | None:
    return peer.send_frames(frames, Session("learner", KEY, accepts=REQUEST_TYPES))


def int64_gradient(peer: Peer) -> Reply | None:
    """A raw int64 buffer declared as such: refused by dtype before anything is read."""
    return peer.send_frames(
        with_header(peer.gradient_frames(), arrays=[["int64", [N_PARAMS // 2]]])
    )


def two_arrays(peer: Peer) -> Reply | None:
    grad = np.zeros(N_PARAMS, np.float32)
    fields = {"model_version": 0, "frames": 20, "layout": LAYOUT}
    return peer.send("gradient", fields, [("float32", grad), ("float32", grad)])


def no_array(peer: Peer) -> Reply | None:
    return peer.send("gradient", {"model_version": 0, "frames": 20, "layout": LAYOUT})


def not_a_request_for_the_core(peer: Peer) -> Reply | None:
    """A type the core has no handler for, decoded by a session that lets every type in."""
    frames = peer.frames("welcome", WeightsBody(model_version=0, frames=0, layout=LAYOUT, env="x"))
    return peer.send_frames(frames, Session("permissive"))


def spoofed(peer: Peer) -> Reply | None:
    """The sender id of a worker that said hello, from another connection."""
    other = Peer(peer.core, sender="w1", identity=b"conn-2")
    return other.gradient()


def other_run(peer: Peer) -> Reply | None:
    """The same id and connection after a restart (a new run) that has not said hello."""
    restarted = Peer(peer.core, sender="w1", identity=peer.identity)
    return restarted.gradient()


@dataclass(frozen=True)
class Case:
    reason: str
    send: Callable[[Peer], Reply | None]
    hello: bool = True
    before: int = 0
    """Accepted gradients before the bad message (to move the version on)."""
    reply: str = "error"
    """"ack" where the refusal carries fresh weights."""


NAN = float("nan")
CASES = {
    # Refused while decoding, before any state is looked at.
    "garbage frame": Case("decode", lambda p: p.send_frames([b"\x00random bytes\xff"])),
    "header not msgpack": Case("decode", lambda p: p.send_frames([b"\xc1\xc1\xc1", b""])),
    "header not a map": Case("decode", lambda p: p.send_frames([msgpack.packb([1, 2]), b""])),
    "other protocol major": Case(
        "protocol_version",
        lambda p: p.send_frames([msgpack.packb({"proto": [PROTOCOL_VERSION[0] + 1, 0]}), b""]),
    ),
    "oversize": Case(
        "oversize",
        lambda p: p.send_frames([*p.frames("heartbeat"), *[bytes(4 * N_PARAMS)] * 4]),
    ),
    "unsigned to a signed learner": Case(
        "bad_signature", lambda p: signed_learner(p, p.frames("hello", HelloBody(layout=LAYOUT)))
    ),
    "wrongly signed": Case(
        "bad_signature",
        lambda p: signed_learner(
            p, [bytes(f) for f in Session("w1", b"wrong").encode("hello", {"layout": LAYOUT})]
        ),
    ),
    "int64 dtype": Case("dtype", int64_gradient),
    "broadcast type sent to the learner": Case("unknown_type", lambda p: p.send("weights", {})),
    "type without a handler": Case("unknown_type", not_a_request_for_the_core),
    # hello
    "hello for another model": Case(
        "model_mismatch", lambda p: p.send("hello", {"layout": "0123456789abcdef"}), hello=False
    ),
    "hello without layout": Case("model_mismatch", lambda p: p.send("hello", {}), hello=False),
    # Who may talk.
    "gradient before hello": Case("unknown_worker", lambda p: p.gradient(), hello=False),
    "heartbeat before hello": Case("unknown_worker", lambda p: p.send("heartbeat"), hello=False),
    "bye before hello": Case("unknown_worker", lambda p: p.send("bye"), hello=False),
    "spoofed sender": Case("unknown_worker", spoofed),
    "restarted without hello": Case("unknown_worker", other_run),
    "replayed sequence number": Case("replay", replayed, before=1),
    "signed but old": Case("clock_skew", signed_but_old),
    "signed from the future": Case("clock_skew", signed_from_the_future),
    # The gradient's body.
    "version as string": Case("bad_version", lambda p: p.gradient(version="7"), reply="ack"),
    "version as bool": Case("bad_version", lambda p: p.gradient(version=True), reply="ack"),
    "version missing": Case(
        "bad_version",
        lambda p: p.send(
            "gradient",
            {"frames": 20, "layout": LAYOUT},
            [("float32", np.zeros(N_PARAMS, np.float32))],
        ),
        reply="ack",
    ),
    "version negative": Case("bad_version", lambda p: p.gradient(version=-5), reply="ack"),
    "version from the future": Case(
        "bad_version", lambda p: p.gradient(version=10**9), reply="ack"
    ),
    "frames negative": Case("decode", lambda p: p.gradient(frames=-1)),
    "frames huge": Case("decode", lambda p: p.gradient(frames=10**12)),
    "frames as float": Case("decode", lambda p: p.gradient(frames=20.0)),
    "scale nan": Case("decode", lambda p: p.gradient(scale=NAN)),
    "scale inf": Case("decode", lambda p: p.gradient(scale=float("inf"))),
    "scale zero": Case("decode", lambda p: p.gradient(scale=0.0)),
    "scale negative": Case("decode", lambda p: p.gradient(scale=-1.0)),
    "scale as string": Case("decode", lambda p: p.gradient(scale="1")),
    "want_weights not a bool": Case("decode", lambda p: p.gradient(want_weights="yes")),
    "stats not numbers": Case("decode", lambda p: p.gradient(stats={"entropy": "high"})),
    "gradient for another model": Case(
        "model_mismatch", lambda p: p.gradient(layout="ffffffffffffffff")
    ),
    "gradient without layout": Case(
        "model_mismatch",
        lambda p: p.send(
            "gradient",
            {"model_version": 0, "frames": 20},
            [("float32", np.zeros(N_PARAMS, np.float32))],
        ),
    ),
    # The gradient's array.
    "too short": Case("shape", lambda p: p.gradient(values=np.zeros(N_PARAMS - 1, np.float32))),
    "two-dimensional": Case(
        "shape", lambda p: p.gradient(values=np.zeros((2, N_PARAMS), np.float32))
    ),
    "two arrays": Case("shape", two_arrays),
    "no array": Case("shape", no_array),
    "nan float32": Case(
        "non_finite", lambda p: p.gradient(values=np.full(N_PARAMS, NAN, np.float32)), reply="ack"
    ),
    "inf float16": Case(
        "non_finite",
        lambda p: p.gradient(values=np.full(N_PARAMS, np.inf, np.float16), dtype="float16"),
        reply="ack",
    ),
    "overflow by unscaling": Case(
        "non_finite",
        lambda p: p.gradient(
            values=np.full(N_PARAMS, 6e4, np.float16), dtype="float16", scale=1e-300
        ),
        reply="ack",
    ),
    # Staleness.
    "stale beyond max_staleness": Case(
        "stale", lambda p: p.gradient(version=0), before=MAX_STALENESS + 1, reply="ack"
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_each_bad_request_is_refused_with_its_reason_and_leaves_the_model_alone(case: Case):
    core = make_core()
    peer = Peer(core)
    if case.hello:
        welcomed(peer)
    accept(peer, case.before)
    snapshot = {
        "weights": core.flat.values.detach().clone(),
        "version": core.version,
        "frames": core.frames,
        "updates": sample(core, "a3c_learner_updates_total"),
        "counts": {reason: rejected(core, reason) for reason in REJECT_REASONS},
    }

    reply = case.send(peer)

    assert reply is not None and reply.type == case.reply, reply
    assert reply.body.reason == case.reason, reply.body
    assert reply.body.model_version == snapshot["version"]
    if case.reply == "ack":
        assert isinstance(reply.body, AckBody) and reply.body.accepted is False
        assert len(reply.arrays) == 1, "a refusal as ack carries fresh weights"
        assert reply.body.layout == core.layout, "named, so that the worker takes them"
        np.testing.assert_array_equal(reply.arrays[0][1], snapshot["weights"].numpy())
    else:
        assert isinstance(reply.body, ErrorBody) and reply.arrays == ()
    counts = {reason: rejected(core, reason) for reason in REJECT_REASONS}
    expected = {**snapshot["counts"], case.reason: snapshot["counts"][case.reason] + 1}
    assert counts == expected, "exactly the counter of this reason moved"
    assert torch.equal(core.flat.values.detach(), snapshot["weights"])
    assert (core.version, core.frames) == (snapshot["version"], snapshot["frames"])
    assert sample(core, "a3c_learner_updates_total") == snapshot["updates"]


def test_every_reason_the_learner_counts_has_a_case():
    assert {case.reason for case in CASES.values()} == set(REJECT_REASONS)


def test_a_skewed_peer_is_logged_with_the_offset_of_its_clock(caplog):
    core = make_core()
    with caplog.at_level(logging.WARNING, logger="learner"):
        reply = signed_from_the_future(Peer(core))
    assert reply is not None and reply.body.reason == "clock_skew"
    (line,) = [r.getMessage() for r in caplog.records if "clock_skew" in r.getMessage()]
    assert "the clock of w1 is off by +3" in line and "ahead of" in line, line


# --- what is accepted ----------------------------------------------------------------------


def test_hello_is_welcomed_with_the_current_weights():
    core = make_core()
    reply = Peer(core).hello()
    assert reply is not None and reply.type == "welcome"
    assert reply.body == WeightsBody(model_version=0, frames=0, layout=LAYOUT, env="CartPole-v1")
    ((dtype, weights),) = reply.arrays
    assert dtype == "float32" and weights.shape == (N_PARAMS,)
    np.testing.assert_array_equal(weights, core.flat.values.detach().numpy())
    assert sample(core, "a3c_learner_workers_active") == 1


def test_an_applied_gradient_moves_the_model_and_the_books():
    core = make_core()
    peer = Peer(core)
    welcomed(peer)
    before = core.flat.values.detach().clone()
    stats = {"policy_loss": 0.5, "value_loss": 2.0, "entropy": 0.6, "grad_norm": NAN}
    reply = peer.send(
        "gradient",
        GradientBody(
            model_version=0, frames=20, layout=LAYOUT, stats=stats, episode_returns=[3.0, 9.0]
        ),
        [("float32", np.full(N_PARAMS, 1e-3, np.float32))],
    )
    assert reply is not None and reply.type == "ack"
    assert reply.body == AckBody(
        accepted=True, model_version=1, frames=20, layout=LAYOUT, env="CartPole-v1"
    )
    ((dtype, weights),) = reply.arrays
    assert dtype == "float32"
    after = core.flat.values.detach()
    np.testing.assert_array_equal(weights, after.numpy())
    assert not torch.equal(after, before), "Adam stepped"
    assert (core.version, core.frames) == (1, 20)
    registry = core.metrics.registry
    assert registry.get_sample_value("a3c_learner_updates_total") == 1
    assert registry.get_sample_value("a3c_learner_model_version") == 1
    assert registry.get_sample_value("a3c_learner_env_frames_total") == 20
    assert registry.get_sample_value("a3c_learner_gradient_staleness_count") == 1
    assert registry.get_sample_value("a3c_learner_apply_seconds_count") == 1
    assert registry.get_sample_value("a3c_learner_messages_total", {"type": "gradient"}) == 1
    assert registry.get_sample_value("a3c_learner_loss", {"term": "value_loss"}) == 2.0
    assert registry.get_sample_value("a3c_learner_loss", {"term": "grad_norm"}) == 0.0, (
        "a non-finite stat is ignored, the gradient is not"
    )
    assert registry.get_sample_value("a3c_learner_train_episode_return") == 9.0
    assert core.workers[peer.identity].applied == 1
    assert sum(rejected(core, reason) for reason in REJECT_REASONS) == 0


def test_a_gradient_within_max_staleness_is_applied_and_its_staleness_observed():
    core = make_core()
    peer = Peer(core)
    welcomed(peer)
    accept(peer, MAX_STALENESS)
    reply = peer.gradient(version=0)
    assert reply is not None and reply.body.accepted is True
    assert core.version == MAX_STALENESS + 1
    staleness_sum = core.metrics.registry.get_sample_value("a3c_learner_gradient_staleness_sum")
    assert staleness_sum == MAX_STALENESS


def test_the_ack_carries_weights_only_when_asked():
    core = make_core()
    peer = Peer(core)
    welcomed(peer)
    without = peer.gradient(want_weights=False)
    assert without is not None and without.arrays == ()
    assert without.body.accepted is True and without.body.model_version == 1
    with_weights = peer.gradient(version=1)
    assert with_weights is not None and with_weights.arrays[0][1].shape == (N_PARAMS,)


def test_a_float16_gradient_is_unscaled_before_it_is_applied():
    core = make_core()
    peer = Peer(core)
    welcomed(peer)
    values = np.linspace(-1, 1, N_PARAMS).astype(np.float16)
    reply = peer.gradient(values=values, dtype="float16", scale=1024.0)
    assert reply is not None and reply.body.accepted is True
    expected = torch.from_numpy(values.astype(np.float32)) / 1024.0
    torch.testing.assert_close(core.flat.grads, expected)


def test_heartbeat_is_answered_with_the_version_and_bye_forgets_the_worker():
    core = make_core()
    peer = Peer(core)
    welcomed(peer)
    accept(peer, 2)
    reply = peer.send("heartbeat")
    assert reply == Reply("heartbeat", HeartbeatBody(model_version=2))
    assert peer.send("bye") is None, "a leaving worker is not answered"
    assert core.workers == {} and sample(core, "a3c_learner_workers_active") == 0


def test_a_reconnecting_worker_replaces_its_old_connection():
    core = make_core()
    welcomed(Peer(core, identity=b"conn-1"))
    moved = Peer(core, identity=b"conn-2")
    welcomed(moved)
    assert list(core.workers) == [b"conn-2"]
    reply = moved.gradient()
    assert reply is not None and reply.body.accepted is True


def forgotten(core: LearnerCore, reason: str) -> float | None:
    return sample(core, "a3c_learner_workers_forgotten_total", reason=reason)


def test_a_worker_is_forgotten_after_missing_its_heartbeats_and_any_message_is_one():
    clock = Clock()
    core = make_core(clock)
    interval = core.config.heartbeat_interval
    welcomed(Peer(core, sender="quiet", identity=b"conn-1"))
    talker = Peer(core, sender="talker", identity=b"conn-2")
    welcomed(talker)
    for beat in range(1, 2 * HEARTBEAT_LIVENESS + 1):
        clock.now += interval
        if beat % 2:
            talker.send("heartbeat")
        else:
            accept(talker, 1)
        core.forget_silent()
        if beat <= HEARTBEAT_LIVENESS:
            assert len(core.workers) == 2, f"{beat} intervals are within the allowance"
    assert [record.worker_id for record in core.workers.values()] == ["talker"]
    assert sample(core, "a3c_learner_workers_active") == 1
    assert forgotten(core, "silent") == 1


def test_a_worker_is_judged_by_the_heartbeat_interval_of_its_hello():
    clock = Clock()
    core = make_core(clock)
    slow = Peer(core, sender="slow", identity=b"conn-1")
    fast = Peer(core, sender="fast", identity=b"conn-2")
    own = core.config.heartbeat_interval
    assert (
        slow.send("hello", HelloBody(layout=LAYOUT, heartbeat_interval=4 * own)).type == "welcome"
    )
    assert (
        fast.send("hello", HelloBody(layout=LAYOUT, heartbeat_interval=own / 4)).type == "welcome"
    )
    clock.now += HEARTBEAT_LIVENESS * own / 4 + 0.01
    core.forget_silent()
    assert [record.worker_id for record in core.workers.values()] == ["slow"]
    clock.now += HEARTBEAT_LIVENESS * 4 * own
    core.forget_silent()
    assert core.workers == {} and forgotten(core, "silent") == 2


def test_a_hello_without_an_interval_is_judged_by_the_learners_own():
    clock = Clock()
    core = make_core(clock)
    welcomed(Peer(core))
    clock.now += HEARTBEAT_LIVENESS * core.config.heartbeat_interval
    core.forget_silent()
    assert len(core.workers) == 1, "exactly the allowance is not yet a miss"
    clock.now += 0.01
    core.forget_silent()
    assert core.workers == {}


@pytest.mark.parametrize("interval", [0.0, -1.0, float("nan"), 1e9])
def test_a_hello_with_an_impossible_interval_is_refused(interval):
    core = make_core()
    reply = Peer(core).send("hello", {"layout": LAYOUT, "heartbeat_interval": interval})
    assert reply is not None and reply.type == "error" and reply.body.reason == "decode"
    assert core.workers == {}


def test_a_forgotten_worker_is_refused_until_it_says_hello_again():
    clock = Clock()
    core = make_core(clock)
    peer = Peer(core)
    welcomed(peer)
    clock.now += HEARTBEAT_LIVENESS * core.config.heartbeat_interval + 1
    core.forget_silent()
    reply = peer.send("heartbeat")
    assert reply is not None and reply.body.reason == "unknown_worker"
    welcomed(peer)
    assert peer.send("heartbeat") == Reply("heartbeat", HeartbeatBody(model_version=0))


def test_workers_forgotten_are_counted_by_reason():
    core = make_core()
    assert {reason: forgotten(core, reason) for reason in FORGET_REASONS} == dict.fromkeys(
        FORGET_REASONS, 0.0
    )
    welcomed(Peer(core, identity=b"conn-1"))
    moved = Peer(core, identity=b"conn-2")
    welcomed(moved)
    assert forgotten(core, "reconnected") == 1
    moved.send("bye")
    assert forgotten(core, "bye") == 1 and forgotten(core, "silent") == 0


def test_restore_carries_version_frames_and_weights_on():
    source = make_core()
    peer = Peer(source)
    welcomed(peer)
    accept(peer, 2)
    target = make_core()
    target.restore(source.model.state_dict(), source.version, source.frames)
    assert (target.version, target.frames) == (2, 40)
    assert torch.equal(target.flat.values, source.flat.values)
    assert target.metrics.registry.get_sample_value("a3c_learner_model_version") == 2


def make_core_with(**settings) -> LearnerCore:
    torch.manual_seed(0)
    config = load_config({"env": "CartPole-v1", "max_staleness": MAX_STALENESS, **settings})
    return LearnerCore.create(ActorCritic(*SPACES), config, learner_metrics(), Clock())


def test_rmsprop_is_the_a3c_papers_shared_rmsprop_and_steps_like_sgd_on_small_gradients():
    """decay 0.99, eps 0.1: a gradient far below eps moves each weight by lr * g / eps (about
    SGD), where Adam would move it by about lr whatever its size."""
    rmsprop, adam = make_core_with(optimizer="rmsprop", lr=1e-3), make_core_with(lr=1e-3)
    assert isinstance(rmsprop.optimizer, torch.optim.RMSprop)
    group = rmsprop.optimizer.param_groups[0]
    assert (group["alpha"], group["eps"], group["momentum"]) == (0.99, 0.1, 0)
    assert adam.optimizer.param_groups[0]["eps"] == 1e-8
    moves = {}
    for name, core in (("rmsprop", rmsprop), ("adam", adam)):
        peer = Peer(core)
        welcomed(peer)
        before = core.flat.values.detach().clone()
        accept(peer, 1)
        moves[name] = float((core.flat.values.detach() - before).abs().max())
    assert moves["rmsprop"] < 1e-3 * 1e-3 / 0.1 * 1.01
    assert moves["adam"] > 0.5e-3


def test_the_configured_eps_and_a_fresh_optimizer_win_over_the_checkpoints():
    source = make_core_with(lr=1e-3)
    peer = Peer(source)
    welcomed(peer)
    accept(peer, 2)
    saved = source.optimizer.state_dict()
    resumed = make_core_with(lr=2e-3, optimizer_eps=1e-5)
    resumed.restore(source.model.state_dict(), source.version, source.frames, saved)
    group = resumed.optimizer.param_groups[0]
    assert (group["lr"], group["eps"]) == (2e-3, 1e-5)
    assert resumed.optimizer.state_dict()["state"][0]["step"] == 2
    other = make_core_with(optimizer="rmsprop")
    other.restore(source.model.state_dict(), source.version, source.frames, saved)
    assert other.optimizer.state_dict()["state"] == {}, "Adam's statistics are not RMSProp's"
    assert torch.equal(other.flat.values, source.flat.values)
