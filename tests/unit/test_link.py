"""The worker's side of the heartbeats without a socket or a wait: `Liveness` on a fake clock,
and `LearnerLink` over a fake learner whose receive lets fake time pass instead of sleeping.
Replies are real messages, encoded by a learner's Session and decoded by the worker's; weights
that do not fit the worker's model are refused and counted."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable

import gymnasium as gym
import msgpack
import numpy as np
import pytest
import torch

from common.config import load_config
from common.metrics import LOST_REASONS, worker_metrics
from common.protocol import (
    HEARTBEAT_LIVENESS,
    REQUEST_TYPES,
    AckBody,
    ErrorBody,
    GradientBody,
    HeartbeatBody,
    ProtocolError,
    Session,
    WeightsBody,
)
from common.transport import Received
from common.weights import load_parameter_vector
from services.worker.link import LearnerLink, Liveness
from services.worker.worker import Heartbeats

INTERVAL = 0.5
TIMEOUT = 30.0
LAYOUT = "0123456789abcdef"
WEIGHTS = np.zeros(4, np.float32)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- Liveness --------------------------------------------------------------------------------


def test_a_heartbeat_is_due_after_an_interval_without_sending():
    clock = Clock()
    pulse = Liveness(INTERVAL, clock)
    clock.now += INTERVAL - 0.01
    assert not pulse.heartbeat_due()
    clock.now += 0.01
    assert pulse.heartbeat_due()
    pulse.sent()
    assert not pulse.heartbeat_due()


def test_the_learner_is_gone_after_liveness_intervals_with_something_unanswered():
    clock = Clock()
    pulse = Liveness(INTERVAL, clock)
    clock.now += 100
    assert not pulse.gone(), "nothing asked, so silence says nothing"
    pulse.sent()
    clock.now += HEARTBEAT_LIVENESS * INTERVAL - 0.01
    assert not pulse.gone()
    clock.now += 0.01
    assert pulse.gone()


def test_any_answer_restarts_the_count_from_the_next_request():
    clock = Clock()
    pulse = Liveness(INTERVAL, clock)
    pulse.sent()
    clock.now += INTERVAL
    pulse.sent()  # a heartbeat while the first is unanswered: the count runs from the first
    clock.now += HEARTBEAT_LIVENESS * INTERVAL - INTERVAL
    assert pulse.gone()
    pulse.heard()
    assert not pulse.gone()
    clock.now += 100
    assert not pulse.gone()
    pulse.sent()
    clock.now += HEARTBEAT_LIVENESS * INTERVAL
    assert pulse.gone()


def test_the_next_check_is_the_nearer_of_the_heartbeat_and_the_deadline():
    clock = Clock()
    pulse = Liveness(INTERVAL, clock)
    assert pulse.next_check_in() == pytest.approx(INTERVAL)
    pulse.sent()
    clock.now += HEARTBEAT_LIVENESS * INTERVAL - 0.1
    assert pulse.next_check_in() == pytest.approx(0.0)  # a heartbeat is overdue
    pulse.last_sent = clock.now
    assert pulse.next_check_in() == pytest.approx(0.1)  # and the deadline is near
    pulse.restart()
    assert pulse.next_check_in() == pytest.approx(INTERVAL) and not pulse.gone()


# --- LearnerLink over a fake learner ---------------------------------------------------------

Answer = Callable[[str, object], tuple[str, object, tuple] | None]


class FakeLearner:
    """A DealerClient stand-in: keeps what the worker sent (with the fake time), queues the
    learner's answers as `answer` decides, and lets time pass while a receive finds nothing."""

    def __init__(self, clock: Clock, answer: Answer) -> None:
        self.clock = clock
        self.answer = answer
        self.sent: list[tuple[float, str]] = []
        self.inbox: deque[Received] = deque()
        self.learner = Session("learner", accepts=REQUEST_TYPES)
        self.worker = Session("w0")
        self.connects = 0
        self.reachable = True

    def send(self, msg_type, body=None, arrays=(), timeout_ms=1000) -> bool:
        if not self.reachable:
            self.clock.now += timeout_ms / 1000
            return False
        self.sent.append((self.clock.now, msg_type))
        answer = self.answer(msg_type, body)
        if answer is not None:
            self.reply(*answer)
        return True

    def reply(self, msg_type: str, body, arrays=()) -> None:
        frames = [bytes(frame) for frame in self.learner.encode(msg_type, body, arrays)]
        self.inbox.append(Received(None, self.worker.decode(frames), None))

    def recv(self, timeout_ms: int) -> Received | None:
        if self.inbox:
            return self.inbox.popleft()
        self.clock.now += timeout_ms / 1000
        return None

    def connect(self) -> None:
        self.connects += 1
        self.inbox.clear()

    def close(self) -> None:
        pass

    def types(self) -> list[str]:
        return [msg_type for _, msg_type in self.sent]


def welcome() -> tuple[str, object, tuple]:
    body = WeightsBody(model_version=0, frames=0, layout=LAYOUT, env="CartPole-v1")
    return "welcome", body, (("float32", WEIGHTS),)


def live(msg_type: str, body) -> tuple[str, object, tuple] | None:
    """A learner that answers everything at once."""
    if msg_type == "hello":
        return welcome()
    if msg_type == "gradient":
        return "ack", AckBody(accepted=True, model_version=1), ()
    if msg_type == "heartbeat":
        return "heartbeat", HeartbeatBody(model_version=1), ()
    return None


def unconnected_link(answer: Answer, **config) -> tuple[LearnerLink, FakeLearner, Clock]:
    clock = Clock()
    learner = FakeLearner(clock, answer)
    settings = {"heartbeat_interval": INTERVAL, "learner_timeout": TIMEOUT, **config}
    link = LearnerLink(
        load_config(settings),
        learner.worker,
        worker_metrics(),
        LAYOUT,
        lambda version, weights: None,
        client=learner,  # type: ignore[arg-type]
        clock=clock,
    )
    return link, learner, clock


def make_link(answer: Answer, **config) -> tuple[LearnerLink, FakeLearner, Clock]:
    link, learner, clock = unconnected_link(answer, **config)
    assert link.connect(threading.Event())
    return link, learner, clock


def gradient() -> GradientBody:
    return GradientBody(model_version=0, frames=20, layout=LAYOUT)


def lost(link: LearnerLink, reason: str) -> float | None:
    return link.metrics.registry.get_sample_value(
        "a3c_worker_learner_lost_total", {"reason": reason}
    )


def test_the_hello_tells_the_learner_the_workers_heartbeat_interval():
    hellos = []
    make_link(lambda msg_type, body: hellos.append(body) or welcome())
    assert hellos[0].heartbeat_interval == INTERVAL


def test_a_rollout_longer_than_the_liveness_window_keeps_heartbeating():
    link, learner, clock = make_link(live)
    steps = int(4 * HEARTBEAT_LIVENESS * INTERVAL / 0.01)
    for _ in range(steps):  # env steps of 10 ms: four liveness windows of rollout
        link.keep_alive()
        clock.now += 0.01
    beats = [at for at, msg_type in learner.sent if msg_type == "heartbeat"]
    assert len(beats) == pytest.approx(4 * HEARTBEAT_LIVENESS, abs=1)
    assert max(np.diff(beats)) <= INTERVAL + 0.011
    sent = link.metrics.registry.get_sample_value("a3c_worker_heartbeats_sent_total")
    assert sent == len(beats)
    # Their answers wait unread during the rollout; read after it, they are no silence.
    assert link.send_gradient(gradient(), "float32", WEIGHTS)
    assert link.applied == 1 and lost(link, "silent") == 0


def test_a_busy_worker_that_sends_gradients_does_not_heartbeat():
    link, learner, clock = make_link(live)
    for _ in range(20):
        for _ in range(5):
            link.keep_alive()
            clock.now += INTERVAL / 10
        assert link.send_gradient(gradient(), "float32", WEIGHTS)
    assert "heartbeat" not in learner.types()


def test_a_silent_learner_is_given_up_within_the_liveness_window_not_the_timeout():
    link, learner, clock = make_link(live)
    learner.answer = lambda msg_type, body: None
    started = clock.now
    assert not link.send_gradient(gradient(), "float32", WEIGHTS)
    waited = clock.now - started
    assert HEARTBEAT_LIVENESS * INTERVAL <= waited < HEARTBEAT_LIVENESS * INTERVAL + 0.01
    assert waited < TIMEOUT
    assert learner.types().count("heartbeat") == HEARTBEAT_LIVENESS - 1, "one per interval"
    assert lost(link, "silent") == 1 and not link.connected


def test_a_learner_found_gone_during_the_rollout_gets_no_gradient():
    link, learner, clock = make_link(live)
    learner.answer = lambda msg_type, body: None
    for _ in range(int(2 * HEARTBEAT_LIVENESS * INTERVAL / 0.01)):
        link.keep_alive()
        clock.now += 0.01
    assert not link.send_gradient(gradient(), "float32", WEIGHTS)
    assert "gradient" not in learner.types() and lost(link, "silent") == 1


def test_a_learner_that_answers_heartbeats_but_not_the_gradient_times_out():
    def no_acks(msg_type, body):
        return None if msg_type == "gradient" else live(msg_type, body)

    link, learner, clock = make_link(no_acks)
    started = clock.now
    assert not link.send_gradient(gradient(), "float32", WEIGHTS)
    assert clock.now - started == pytest.approx(TIMEOUT, abs=0.01)
    assert learner.types().count("heartbeat") == pytest.approx(TIMEOUT / INTERVAL, abs=1)
    assert lost(link, "timeout") == 1 and lost(link, "silent") == 0


def test_an_unreachable_learner_is_given_up_within_the_window():
    link, learner, clock = make_link(live)
    learner.reachable = False
    started = clock.now
    assert not link.send_gradient(gradient(), "float32", WEIGHTS)
    assert clock.now - started <= HEARTBEAT_LIVENESS * INTERVAL + 0.01
    assert lost(link, "silent") == 1


def test_a_learner_that_forgot_the_worker_is_greeted_again():
    link, learner, clock = make_link(live)
    learner.answer = lambda msg_type, body: (
        "error",
        ErrorBody(reason="unknown_worker", detail="who?", model_version=1),
        (),
    )
    clock.now += INTERVAL
    link.keep_alive()
    assert not link.send_gradient(gradient(), "float32", WEIGHTS)
    assert lost(link, "forgotten") == 1
    learner.answer = live
    assert link.reconnect(threading.Event())
    assert link.connected and learner.connects == 1
    assert link.send_gradient(gradient(), "float32", WEIGHTS)


def test_no_heartbeat_before_the_welcome():
    link, learner, clock = unconnected_link(live)
    clock.now += 10 * INTERVAL
    link.keep_alive()
    assert learner.sent == []


def test_lost_reasons_are_predeclared():
    metrics = worker_metrics()
    for reason in LOST_REASONS:
        assert (
            metrics.registry.get_sample_value("a3c_worker_learner_lost_total", {"reason": reason})
            == 0
        )


def test_the_env_wrapper_offers_a_heartbeat_before_every_step():
    calls = []
    envs = Heartbeats(
        gym.vector.SyncVectorEnv([lambda: gym.make("CartPole-v1")] * 2), lambda: calls.append(1)
    )
    envs.reset(seed=0)
    assert calls == [] and envs.num_envs == 2
    for _ in range(3):
        envs.step(np.zeros(2, np.int64))
    assert len(calls) == 3
    envs.close()


# --- weights that do not fit ------------------------------------------------------------------


def strict_link(answer: Answer, loaded: list) -> tuple[LearnerLink, FakeLearner, Clock]:
    """A link whose sink loads weights as the worker does: into a float32 model of WEIGHTS'
    size, refusing what does not fit it."""
    model = torch.nn.Linear(3, 1)  # 4 parameters, as WEIGHTS
    link, learner, clock = unconnected_link(answer)

    def load(version: int, weights: np.ndarray) -> None:
        load_parameter_vector(model, weights)
        loaded.append((version, weights.dtype))

    link.on_weights = load
    return link, learner, clock


def replies_rejected(link: LearnerLink, reason: str) -> float | None:
    return link.metrics.registry.get_sample_value(
        "a3c_worker_replies_rejected_total", {"reason": reason}
    )


def test_a_welcome_with_weights_of_another_size_is_refused_counted_and_retried():
    body = WeightsBody(model_version=0, frames=0, layout=LAYOUT, env="CartPole-v1")
    wrong = ("welcome", body, (("float16", np.zeros(5, np.float16)),))
    answers = iter([wrong, welcome()])
    loaded: list = []
    link, learner, _ = strict_link(lambda msg_type, body: next(answers), loaded)
    assert link.connect(threading.Event())
    assert replies_rejected(link, "shape") == 1
    assert learner.types() == ["hello", "hello"], "refused weights are no welcome"
    assert loaded == [(0, np.dtype(np.float32))]


def test_weights_in_float16_and_bfloat16_are_taken_as_their_dtype_says():
    loaded: list = []
    link, learner, _ = strict_link(live, loaded)
    assert link.connect(threading.Event())
    for dtype, array in (
        ("float16", np.ones(4, np.float16)),
        ("bfloat16", np.full(4, 0x3F80, np.uint16)),  # 1.0 in bfloat16
    ):
        reply = ("ack", AckBody(accepted=True, model_version=2, layout=LAYOUT), ((dtype, array),))
        learner.answer = lambda msg_type, body, r=reply: r
        assert link.send_gradient(gradient(), "float32", WEIGHTS)
    assert [dtype for _, dtype in loaded[1:]] == [np.dtype(np.float16), np.dtype(np.uint16)]
    assert sum(replies_rejected(link, r) or 0 for r in ("dtype", "shape", "decode")) == 0


def test_an_unreadable_ack_is_counted_with_its_reason():
    link, learner, _ = make_link(live)
    ack = AckBody(accepted=True, model_version=1)
    frames = [bytes(f) for f in learner.learner.encode("ack", ack)]
    header = {**msgpack.unpackb(frames[0]), "arrays": [["float8", [4]]]}
    broken = [msgpack.packb(header), b"", bytes(4)]
    with pytest.raises(ProtocolError) as refused:
        learner.worker.decode(broken)
    learner.inbox.append(Received(None, None, refused.value))
    link._await_replies(block=False)
    assert replies_rejected(link, "dtype") == 1
