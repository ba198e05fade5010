"""A running learner fed every kind of bad message over a real socket: each is refused with
a reason and a counter, the weights stay finite, and the learner keeps serving."""

import math

import msgpack
import numpy as np
import pytest
import torch
import zmq

from common.checkpoint import load_newest
from common.envs import env_spaces
from common.model import ActorCritic, parameter_count
from common.protocol import PROTOCOL_VERSION, Session
from common.weights import layout_digest
from tests.conftest import http_status, wait_for

MODEL = ActorCritic(*env_spaces("CartPole-v1"))
N_PARAMS = parameter_count(MODEL)
LAYOUT = layout_digest(MODEL)


class RawPeer:
    """A DEALER that sends whatever frames a test hands it and reads the single reply."""

    def __init__(self, address: str, sender: str = "w1", key: bytes | None = None) -> None:
        self.session = Session(sender, key)
        self.sock = zmq.Context.instance().socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(f"tcp://{address}")

    def send_frames(self, frames) -> dict:
        self.sock.send_multipart(frames)
        assert self.sock.poll(10_000), "the learner did not answer"
        return Session("test").decode(self.sock.recv_multipart()).__dict__

    def send(self, msg_type, body=None, arrays=()) -> dict:
        return self.send_frames(self.session.encode(msg_type, body, arrays))

    def gradient(self, values=None, version=0, dtype="float32", **body):
        grad = np.zeros(N_PARAMS, np.float32) if values is None else values
        return self.send(
            "gradient",
            {"model_version": version, "frames": 20, "layout": LAYOUT, **body},
            [(dtype, grad)],
        )


@pytest.fixture
def learner(cluster):
    return cluster.start(
        "learner", None, "--max-staleness", "3", "--max-message-bytes", str(4 * N_PARAMS * 3)
    )


def rejected(learner, reason: str) -> float:
    return learner.value("a3c_learner_gradients_rejected_total", reason=reason)


def test_every_bad_message_is_refused_with_its_reason(cluster, learner, tmp_path):
    peer = RawPeer(cluster.address)
    header_only = Session("w1").encode("heartbeat")
    cases = [
        ("decode", lambda: peer.send_frames([b"\x00random bytes\xff"])),
        ("decode", lambda: peer.send_frames([b"\xc1\xc1\xc1", b""])),
        (
            "protocol_version",
            lambda: peer.send_frames([msgpack.packb({"proto": [PROTOCOL_VERSION[0] + 1, 0]}), b""]),
        ),
        ("unknown_type", lambda: peer.send("weights", {})),
        ("unknown_worker", lambda: peer.gradient()),
        ("model_mismatch", lambda: peer.send("hello", {"layout": "0123456789abcdef"})),
        ("oversize", lambda: peer.send_frames([*header_only, *[bytes(4 * N_PARAMS)] * 4])),
    ]
    for reason, send in cases:
        before = rejected(learner, reason)
        reply = send()
        assert reply["type"] == "error" and reply["body"]["reason"] == reason, reply["body"]
        assert rejected(learner, reason) == before + 1

    welcome = peer.send("hello", {"layout": LAYOUT})
    assert welcome["type"] == "welcome"
    bad_gradients = [
        ("shape", dict(values=np.zeros(N_PARAMS - 1, np.float32))),
        ("shape", dict(values=np.zeros((2, N_PARAMS), np.float32))),
        ("non_finite", dict(values=np.full(N_PARAMS, np.nan, np.float32))),
        ("non_finite", dict(values=np.full(N_PARAMS, np.inf, np.float16), dtype="float16")),
        ("bad_version", dict(version=-5)),
        ("bad_version", dict(version=10**9)),
        ("bad_version", dict(version="7")),
        ("decode", dict(frames=-1)),
        ("decode", dict(scale=float("nan"))),
        ("model_mismatch", dict(layout="ffffffffffffffff")),
    ]
    for reason, kwargs in bad_gradients:
        before = rejected(learner, reason)
        reply = peer.gradient(**kwargs)
        assert reply["body"]["reason"] == reason and not reply["body"].get("accepted")
        assert rejected(learner, reason) == before + 1

    # Raw int64 buffer declared as such: refused by dtype before anything is read.
    before = rejected(learner, "dtype")
    frames = peer.session.encode(
        "gradient",
        {"model_version": 0, "frames": 1, "layout": LAYOUT},
        [("float32", np.zeros(N_PARAMS, np.float32))],
    )
    header = msgpack.unpackb(frames[0])
    header["arrays"] = [["int64", [N_PARAMS // 2]]]
    reply = peer.send_frames([msgpack.packb(header), b"", bytes(frames[2])])
    assert reply["body"]["reason"] == "dtype" and rejected(learner, "dtype") == before + 1

    # Replays of an accepted message are refused.
    good = peer.session.encode(
        "gradient",
        {"model_version": 0, "frames": 20, "layout": LAYOUT},
        [("float32", np.full(N_PARAMS, 1e-3, np.float32))],
    )
    good = [bytes(f) for f in good]
    assert peer.send_frames(good)["body"]["accepted"] is True
    assert peer.send_frames(good)["body"]["reason"] == "replay"

    # A spoofed sender id from another connection is unknown to the learner.
    spoofer = RawPeer(cluster.address, sender="w1")
    assert spoofer.gradient()["body"]["reason"] == "unknown_worker"

    # Stale: push the version past max_staleness (3), then send a gradient for version 0.
    for version in range(1, 5):
        assert peer.gradient(version=version)["body"]["accepted"] is True
    before = rejected(learner, "stale")
    reply = peer.gradient(version=0)
    assert reply["body"]["reason"] == "stale" and rejected(learner, "stale") == before + 1
    assert reply["arrays"], "a stale worker gets fresh weights with the refusal"

    assert http_status(learner.metrics_port, "/healthz") == 200
    applied = learner.value("a3c_learner_updates_total")
    assert applied == 5
    assert learner.terminate() == 0
    state, _ = load_newest(tmp_path / "ckpt")
    assert state["model_version"] == 5
    assert all(torch.isfinite(t).all() for t in state["model"].values())


def test_signed_learner_refuses_unsigned_and_wrongly_signed_peers(cluster):
    learner = cluster.start("learner", None, env={"A3C_AUTH_KEY": "right-key"})
    for key in (None, b"wrong-key"):
        peer = RawPeer(cluster.address, key=key)
        before = rejected(learner, "bad_signature")
        peer.sock.send_multipart(peer.session.encode("hello", {"layout": LAYOUT}))
        assert peer.sock.poll(10_000)
        frames = peer.sock.recv_multipart()
        reply = Session("t", b"right-key").decode(frames)
        assert reply.type == "error" and reply.body["reason"] == "bad_signature"
        assert rejected(learner, "bad_signature") == before + 1
    signed = RawPeer(cluster.address, key=b"right-key")
    signed.sock.send_multipart(signed.session.encode("hello", {"layout": LAYOUT}))
    assert signed.sock.poll(10_000)
    assert Session("t", b"right-key").decode(signed.sock.recv_multipart()).type == "welcome"


def test_signed_cluster_trains(cluster):
    key = {"A3C_AUTH_KEY": "shared-secret"}
    learner = cluster.start("learner", None, env=key)
    cluster.start("worker", None, "--worker-id", "signed", env=key)
    wait_for(lambda: learner.value("a3c_learner_updates_total") >= 10, 60, "signed updates")
    assert rejected(learner, "bad_signature") == 0
    assert math.isfinite(learner.value("a3c_learner_model_version"))


def test_acks_carry_weights_only_when_the_worker_asks(cluster, learner):
    peer = RawPeer(cluster.address)
    assert peer.send("hello", {"layout": LAYOUT})["type"] == "welcome"
    without = peer.gradient(version=0, want_weights=False)
    assert without["body"]["accepted"] is True and without["arrays"] == []
    with_weights = peer.gradient(version=1)
    assert with_weights["body"]["accepted"] is True
    assert with_weights["arrays"][0].shape == (N_PARAMS,)
    assert with_weights["body"]["model_version"] == 2
