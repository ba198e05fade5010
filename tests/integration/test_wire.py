"""Weights on the wire in the learner's `weights_dtype`, over real sockets: a raw peer gets
them in that dtype and half the bytes, the learner's byte counters match the frames that
crossed, and a real worker trains from them."""

import numpy as np
import pytest
import zmq

from common.envs import env_spaces
from common.model import ActorCritic, parameter_count
from common.protocol import Message, Session
from common.weights import layout_digest
from tests.conftest import wait_for

MODEL = ActorCritic(*env_spaces("CartPole-v1"))
N_PARAMS = parameter_count(MODEL)
LAYOUT = layout_digest(MODEL)


class Peer:
    """A DEALER that keeps the size of every message it sends and receives."""

    def __init__(self, address: str) -> None:
        self.session = Session("w1")
        self.sock = zmq.Context.instance().socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(f"tcp://{address}")

    def ask(self, msg_type: str, body, arrays=()) -> tuple[int, Message, int]:
        """Bytes sent, the reply, and its bytes."""
        frames = [bytes(memoryview(f)) for f in self.session.encode(msg_type, body, arrays)]
        self.sock.send_multipart(frames)
        assert self.sock.poll(10_000), "the learner did not answer"
        reply = self.sock.recv_multipart()
        return sum(map(len, frames)), Session("test").decode(reply), sum(map(len, reply))


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_weights_come_in_the_learners_dtype_and_every_byte_is_counted(cluster, dtype):
    learner = cluster.start("learner", None, "--weights-dtype", dtype)
    peer = Peer(cluster.address)
    hello_out, welcome, welcome_in = peer.ask("hello", {"layout": LAYOUT})
    assert welcome.type == "welcome" and welcome.array_dtypes == [dtype]
    assert welcome.arrays[0].shape == (N_PARAMS,) and welcome.arrays[0].nbytes == 2 * N_PARAMS
    body = {"model_version": 0, "frames": 20, "layout": LAYOUT}
    gradient = [("float16", np.full(N_PARAMS, 1e-3, np.float16))]
    gradient_out, ack, ack_in = peer.ask("gradient", body, gradient)
    assert ack.type == "ack" and ack.body["accepted"] is True and ack.array_dtypes == [dtype]

    expected = {
        ("received", "hello"): hello_out,
        ("received", "gradient"): gradient_out,
        ("sent", "welcome"): welcome_in,
        ("sent", "ack"): ack_in,
    }

    def counted() -> dict:
        return {
            (way, kind): learner.value(f"a3c_learner_bytes_{way}_total", type=kind)
            for way, kind in expected
        }

    wait_for(lambda: counted() == expected, 10, f"byte counters {expected}")


def test_a_worker_trains_from_float16_weights(cluster):
    learner = cluster.start("learner", None, "--weights-dtype", "float16")
    worker = cluster.start("worker")
    wait_for(lambda: learner.value("a3c_learner_updates_total") >= 10, 90, "10 updates")
    assert worker.metrics().total("a3c_worker_replies_rejected_total") == 0
    assert worker.value("a3c_worker_model_version") > 0, "the worker took the acks' weights"
