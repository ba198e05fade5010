"""Heartbeats over real sockets between real processes: a silent peer is noticed within a few
heartbeat intervals, far sooner than any timeout would notice it, and the link heals once the
peer is back. The interval is short (0.5 s) so that "a few intervals" is seconds; SIGSTOP makes
a peer silent without closing its sockets, the case only heartbeats can tell from a slow peer.
"""

import signal
import time

from common.protocol import HEARTBEAT_LIVENESS
from tests.conftest import Service, wait_for
from tests.integration.test_cluster import start_workers

INTERVAL = 0.5
BEATS = ("--heartbeat-interval", str(INTERVAL))
NOTICED_WITHIN = 4 * HEARTBEAT_LIVENESS * INTERVAL
"""The liveness window (3 intervals) with room for the poll loops and a loaded machine."""
LEARNER_TIMEOUT = 60.0
"""Long, so that a worker that notices within seconds can only have done it by heartbeats."""


def seconds_until(condition, timeout: float, what: str) -> float:
    started = time.monotonic()
    wait_for(condition, timeout, what, interval=0.05)
    return time.monotonic() - started


def lost(worker: Service, reason: str) -> float:
    return worker.value("a3c_worker_learner_lost_total", reason=reason)


def test_a_stopped_worker_is_forgotten_within_a_few_heartbeat_intervals(cluster):
    learner = cluster.start("learner", None, *BEATS)
    hung, healthy = start_workers(cluster, 2, *BEATS)
    wait_for(lambda: learner.value("a3c_learner_workers_active") == 2, 60, "2 workers")
    hung.popen.send_signal(signal.SIGSTOP)
    try:
        took = seconds_until(
            lambda: learner.value("a3c_learner_workers_forgotten_total", reason="silent") >= 1,
            30,
            "the stopped worker to be forgotten",
        )
        assert learner.value("a3c_learner_workers_active") == 1
        assert "forgetting worker w0" in learner.log()
        assert "forgetting worker w1" not in learner.log(), "the busy worker is alive"
    finally:
        hung.popen.send_signal(signal.SIGCONT)
    assert took < NOTICED_WITHIN, f"forgotten after {took:.1f}s"
    acked = hung.value("a3c_worker_gradients_acked_total")
    wait_for(lambda: learner.value("a3c_learner_workers_active") == 2, 60, "the worker to rejoin")
    wait_for(
        lambda: hung.value("a3c_worker_gradients_acked_total") > acked,
        60,
        "its gradients to be applied again",
    )
    assert learner.value("a3c_learner_workers_forgotten_total", reason="silent") == 1
    assert all(lost(healthy, reason) == 0 for reason in ("silent", "timeout", "forgotten"))
    assert healthy.popen.poll() is None


def test_a_stopped_learner_is_noticed_by_heartbeats_and_rejoined_when_it_resumes(cluster):
    learner = cluster.start("learner", None, *BEATS)
    (worker,) = start_workers(cluster, 1, *BEATS, "--learner-timeout", str(LEARNER_TIMEOUT))
    wait_for(lambda: worker.value("a3c_worker_gradients_acked_total") >= 5, 60, "5 acks")
    beats = worker.value("a3c_worker_heartbeats_sent_total")
    learner.popen.send_signal(signal.SIGSTOP)
    try:
        took = seconds_until(
            lambda: lost(worker, "silent") >= 1, 30, "the worker to notice the silence"
        )
        assert worker.value("a3c_worker_heartbeats_sent_total") > beats, "it asked meanwhile"
        acked = worker.value("a3c_worker_gradients_acked_total")
    finally:
        learner.popen.send_signal(signal.SIGCONT)
    assert took < NOTICED_WITHIN < LEARNER_TIMEOUT, f"noticed after {took:.1f}s"
    back = seconds_until(
        lambda: worker.value("a3c_worker_gradients_acked_total") > acked,
        30,
        "the worker's gradients applied by the resumed learner",
    )
    assert back < LEARNER_TIMEOUT
    assert lost(worker, "timeout") == 0, "the heartbeats, not the timeout, noticed it"
    assert worker.value("a3c_worker_reconnects_total") >= 1
    assert worker.popen.poll() is None and learner.popen.poll() is None


def test_a_killed_learner_is_noticed_within_a_few_intervals_and_its_successor_joined(cluster):
    learner = cluster.start("learner", None, *BEATS)
    (worker,) = start_workers(cluster, 1, *BEATS, "--learner-timeout", str(LEARNER_TIMEOUT))
    wait_for(lambda: worker.value("a3c_worker_gradients_acked_total") >= 5, 60, "5 acks")
    learner.kill()
    took = seconds_until(lambda: lost(worker, "silent") >= 1, 30, "the worker to notice")
    assert took < NOTICED_WITHIN, f"noticed after {took:.1f}s"
    successor = cluster.start("learner", "learner-successor", *BEATS)
    wait_for(
        lambda: successor.value("a3c_learner_workers_active") == 1,
        30,
        "the worker to join the new learner",
    )
    acked = worker.value("a3c_worker_gradients_acked_total")
    wait_for(
        lambda: worker.value("a3c_worker_gradients_acked_total") > acked,
        30,
        "its gradients applied by the new learner",
    )
    assert lost(worker, "timeout") == 0


def test_a_subscriber_reconnects_after_a_silent_broadcast_and_hears_it_again(cluster):
    """The learner broadcasts every second, so silence means a dead connection (a learner
    frozen by SIGSTOP here; a network partition looks the same): the subscriber opens a new
    one after its silence window instead of waiting on a dead TCP connection for the
    kernel's timeout, and hears the learner again once it is back."""
    from common.protocol import Session
    from common.transport import Subscriber

    learner = cluster.start("learner", None)
    subscriber = Subscriber(Session("probe"), "127.0.0.1", cluster.port + 1, silence_s=2.0)
    wait_for(lambda: subscriber.recv_newest(200) is not None, 30, "a broadcast")
    learner.popen.send_signal(signal.SIGSTOP)
    try:
        took = seconds_until(
            lambda: subscriber.recv_newest(100) is None and subscriber.reconnects >= 1,
            20,
            "a reconnect after the silence",
        )
    finally:
        learner.popen.send_signal(signal.SIGCONT)
    assert took < 2.0 + NOTICED_WITHIN
    wait_for(lambda: subscriber.recv_newest(200) is not None, 30, "broadcasts again")
    subscriber.close()
