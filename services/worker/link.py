"""A worker's conversation with the learner, apart from the rollout loop that feeds it.

Handshake: say hello until welcomed, backing off exponentially with jitter (many workers must
not knock in step). Flow control: at most `max_inflight` gradients wait for an ack.

Liveness (the ZeroMQ guide's Paranoid Pirate, worker side): a worker that has sent nothing
for `heartbeat_interval` sends a heartbeat, and the learner answers each, so each side hears
from the other at least once an interval. Heartbeats go out between the env steps of a
rollout (`keep_alive`) and while an ack is awaited. A learner that leaves something unanswered
for `HEARTBEAT_LIVENESS` intervals is gone (the quick path); one that answers heartbeats but
leaves a gradient unacked for `learner_timeout` is given up on too. Either way the caller is
told, the socket is replaced and the handshake starts over; gradients computed meanwhile are
dropped rather than queued, so a learner outage costs no memory here.

All on the thread that owns the socket: a worker whose loop hangs falls silent, as it should,
instead of being kept alive by a helper thread. Replies are read between rollouts only, since
the weights in an ack must not change the model under a rollout's autograd graph.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Callable

import numpy as np

from common.config import Config, split_address
from common.metrics import Health, WorkerMetrics
from common.protocol import (
    HEARTBEAT_LIVENESS,
    AckBody,
    ErrorBody,
    GradientBody,
    HeartbeatBody,
    HelloBody,
    Message,
    ProtocolError,
    Session,
    WeightsBody,
)
from common.transport import DealerClient, curve_client

log = logging.getLogger("worker")

INITIAL_BACKOFF_S = 0.5
MAX_BACKOFF_S = 10.0

Clock = Callable[[], float]
WeightsSink = Callable[[int, np.ndarray], None]
"""Takes weights for this model from the learner: their version and the flat array, in the
wire dtype the learner sent (its numpy dtype names it). Raises ProtocolError for weights that
do not fit the model; the link counts and drops them."""


class Liveness:
    """The learner's pulse as this worker sees it, by the clock alone, so that its rules can
    be tested without a socket or a wait.

    `waiting_since` is when the first request since the learner's last answer left; any answer
    proves the learner alive and clears it. Requests are not matched to answers: one left
    unanswered behind an answer is forgiven until the next heartbeat, at most an interval
    later, starts the count again, so a lost reply can never leave a stale debt behind."""

    def __init__(self, interval: float, clock: Clock = time.monotonic) -> None:
        self.interval = interval
        self.window = HEARTBEAT_LIVENESS * interval
        """Seconds of silence after which the learner counts as gone."""
        self.clock = clock
        self.last_sent = clock()
        self.waiting_since: float | None = None

    def restart(self) -> None:
        """A fresh connection: nothing is owed either way."""
        self.last_sent = self.clock()
        self.waiting_since = None

    def sent(self) -> None:
        """A request left, or was tried: one that cannot leave is no sign of life either."""
        now = self.clock()
        self.last_sent = now
        if self.waiting_since is None:
            self.waiting_since = now

    def heard(self) -> None:
        self.waiting_since = None

    def heartbeat_due(self) -> bool:
        return self.clock() - self.last_sent >= self.interval

    def gone(self) -> bool:
        return self.waiting_since is not None and self.clock() - self.waiting_since >= self.window

    def next_check_in(self) -> float:
        """Seconds until a heartbeat is due or the learner would count as gone."""
        now = self.clock()
        due = self.last_sent + self.interval - now
        if self.waiting_since is not None:
            due = min(due, self.waiting_since + self.window - now)
        return max(0.0, due)


def _ms(seconds: float) -> int:
    """A poll timeout, rounded up: rounded down, a wait just short of a deadline would spin."""
    return max(0, math.ceil(seconds * 1000))


class LearnerLink:
    def __init__(
        self,
        config: Config,
        session: Session,
        metrics: WorkerMetrics,
        layout: str,
        on_weights: WeightsSink,
        client: DealerClient | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        """`client` and `clock` are for tests; by default a socket to `config.learner`."""
        self.config = config
        self.metrics = metrics
        self.layout = layout
        self.on_weights = on_weights
        if client is None:
            host, port = split_address(config.learner)
            curve = curve_client(config.curve_key_file, config.curve_server_key_file)
            client = DealerClient(session, host, port, curve)
        self.client = client
        self.pulse = Liveness(config.heartbeat_interval, clock)
        self.health: Health | None = None
        self.connected = False
        self.inflight = 0
        self.applied = 0
        self._backoff = INITIAL_BACKOFF_S

    @property
    def patience_ms(self) -> int:
        """How long to wait on a learner that says nothing: for a send to leave, or for the
        welcome; the learner's answers to these take milliseconds when it lives."""
        return _ms(min(self.config.learner_timeout, self.pulse.window))

    def connect(self, stop: threading.Event) -> bool:
        """Say hello until the learner welcomes us (with backoff); False if stopped first.
        Waiting for a learner is healthy: liveness probes must not kill patient workers."""
        while not stop.is_set():
            if self.health is not None:
                self.health.tick()
            self.inflight = 0
            hello = HelloBody(layout=self.layout, heartbeat_interval=self.config.heartbeat_interval)
            sent = self.client.send("hello", hello)
            reply = self.client.recv(self.patience_ms) if sent else None
            if reply is not None and reply.message is not None:
                if reply.message.type == "welcome":
                    version = self._take_weights(reply.message)
                    if version is not None:
                        self._backoff = INITIAL_BACKOFF_S
                        self.connected = True
                        self.pulse.restart()
                        log.info("welcomed by learner at version %s", version)
                        return True
                else:
                    log.error("learner refused hello: %s", _detail(reply.message))
            elif reply is not None and reply.error is not None:
                self._unreadable(reply.error)
            self.metrics.reconnects.inc()
            delay = self._backoff * random.uniform(0.5, 1.5)
            log.warning("no welcome from learner %s; retrying in %.1fs", self.config.learner, delay)
            self._backoff = min(self._backoff * 2, MAX_BACKOFF_S)
            stop.wait(delay)
            self.client.connect()
        return False

    def reconnect(self, stop: threading.Event) -> bool:
        """A fresh socket and a new handshake, after the learner went silent."""
        self.connected = False
        self.metrics.reconnects.inc()
        self.client.connect()
        return self.connect(stop)

    def keep_alive(self) -> None:
        """Heartbeat if nothing was sent for an interval. Called before every env step, so a
        rollout of any length is no silence to the learner; it only sends (the answers are read
        after the rollout, see the module docstring), so it costs a clock read per step."""
        if self.connected and self.pulse.heartbeat_due():
            self._heartbeat()

    def send_gradient(self, body: GradientBody, wire_dtype: str, wire: np.ndarray) -> bool:
        """Send one gradient and read replies, waiting while `max_inflight` are pending;
        False when the learner has to be greeted again (gone, or it forgot us)."""
        # First the answers to heartbeats sent during the rollout: unread, they would look
        # like silence, and read, they may show the learner gone before a gradient is wasted.
        if not self._await_replies(block=False):
            return False
        sent = self.client.send("gradient", body, [(wire_dtype, wire)], timeout_ms=self.patience_ms)
        self.pulse.sent()
        if not sent:
            return self._lost("silent", f"a gradient could not leave for {self.patience_ms} ms")
        self.inflight += 1
        self.metrics.updates_sent.inc()
        return self._await_replies(block=True)

    def close(self, say_bye: bool) -> None:
        if say_bye:
            self.client.send("bye", timeout_ms=200)
        self.client.close()

    # --- replies ---------------------------------------------------------------------------

    def _await_replies(self, block: bool) -> bool:
        """Read the replies that have come; with `block`, wait while `max_inflight` gradients
        are unacked, heartbeating meanwhile. False when the learner must be greeted again:
        it forgot us, it said nothing for HEARTBEAT_LIVENESS intervals, or it answered
        heartbeats but not the gradient for `learner_timeout`."""
        clock = self.pulse.clock
        deadline = clock() + self.config.learner_timeout
        while True:
            must_wait = block and self.inflight >= self.config.max_inflight
            wait_s = min(self.pulse.next_check_in(), deadline - clock()) if must_wait else 0.0
            reply = self.client.recv(_ms(wait_s))
            if reply is not None:
                self.pulse.heard()
                if reply.message is None:
                    assert reply.error is not None
                    self._unreadable(reply.error)
                elif not self._on_reply(reply.message):
                    return self._lost("forgotten", "it no longer knows this worker")
                continue
            # Nothing (more) to read: only now does silence mean anything.
            if self.pulse.gone():
                return self._lost(
                    "silent",
                    f"no answer for {self.pulse.window:g}s "
                    f"({HEARTBEAT_LIVENESS} heartbeat intervals)",
                )
            if not must_wait:
                return True
            if clock() >= deadline:
                return self._lost(
                    "timeout", f"no ack for {self.config.learner_timeout:g}s (learner_timeout)"
                )
            if self.pulse.heartbeat_due():
                self._heartbeat()

    def _heartbeat(self) -> None:
        if self.client.send("heartbeat", HeartbeatBody(), timeout_ms=0):
            self.metrics.heartbeats_sent.inc()
        self.pulse.sent()

    def _lost(self, reason: str, detail: str) -> bool:
        """Give this connection up (the caller reconnects); always False."""
        log.warning("lost the learner %s: %s; reconnecting", self.config.learner, detail)
        self.metrics.learner_lost.labels(reason=reason).inc()
        self.connected = False
        return False

    def _on_reply(self, message: Message) -> bool:
        """Apply an ack/heartbeat/error; False when we must say hello again."""
        if message.type == "ack":
            self.inflight = max(0, self.inflight - 1)
            ack = message.payload_as(AckBody)
            if ack.accepted:
                self.applied += 1
                self.metrics.updates_acked.inc()
            else:
                self.metrics.rejected.labels(reason=ack.reason or "unknown").inc()
                log.warning("gradient refused: %s", ack.detail)
            if message.arrays:
                self._take_weights(message)
            return True
        if message.type == "error":
            self.inflight = max(0, self.inflight - 1)
            error = message.payload_as(ErrorBody)
            self.metrics.rejected.labels(reason=error.reason).inc()
            log.warning("learner error: %s (%s)", error.reason, error.detail)
            return error.reason != "unknown_worker"
        return True

    def _take_weights(self, message: Message) -> int | None:
        """Hand weights for this model on; the version taken, or None if they are not ours
        (a refusal's ack carries the layout too, so its fresh weights are taken)."""
        payload = message.payload
        if (
            not isinstance(payload, WeightsBody | AckBody)
            or payload.layout != self.layout
            or len(message.arrays) != 1
        ):
            log.error("learner sent weights for another model; ignoring them")
            return None
        try:
            self.on_weights(payload.model_version, message.arrays[0])
        except ProtocolError as error:
            self.metrics.replies_rejected.labels(reason=error.reason).inc()
            log.error("refused the learner's weights (%s); keeping the model as it was", error)
            return None
        return payload.model_version

    def _unreadable(self, error: ProtocolError) -> None:
        self.metrics.replies_rejected.labels(reason=error.reason).inc()
        log.error("unreadable reply from learner: %s", error)


def _detail(message: Message) -> str | None:
    return message.payload.detail if isinstance(message.payload, ErrorBody) else None
