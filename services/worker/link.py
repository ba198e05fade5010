"""A worker's conversation with the learner, apart from the rollout loop that feeds it.

Handshake: say hello until welcomed, backing off exponentially with jitter (many workers must
not knock in step). Flow control: at most `max_inflight` gradients wait for an ack. Liveness
(Lazy Pirate): if the learner stays silent for `learner_timeout`, the caller is told, the
socket is replaced and the handshake starts over; gradients computed meanwhile are dropped
rather than queued, so a learner outage costs no memory here.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable

import numpy as np

from common.config import Config, split_address
from common.metrics import Health, WorkerMetrics
from common.protocol import (
    AckBody,
    ErrorBody,
    GradientBody,
    HelloBody,
    Message,
    Session,
    WeightsBody,
)
from common.transport import DealerClient

log = logging.getLogger("worker")

INITIAL_BACKOFF_S = 0.5
MAX_BACKOFF_S = 10.0

WeightsSink = Callable[[int, np.ndarray], None]
"""Takes weights for this model from the learner: their version and the flat array."""


class LearnerLink:
    def __init__(
        self,
        config: Config,
        session: Session,
        metrics: WorkerMetrics,
        layout: str,
        on_weights: WeightsSink,
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.layout = layout
        self.on_weights = on_weights
        host, port = split_address(config.learner)
        self.client = DealerClient(session, host, port)
        self.health: Health | None = None
        self.inflight = 0
        self.applied = 0
        self._backoff = INITIAL_BACKOFF_S

    @property
    def timeout_ms(self) -> int:
        return int(self.config.learner_timeout * 1000)

    def connect(self, stop: threading.Event) -> bool:
        """Say hello until the learner welcomes us (with backoff); False if stopped first.
        Waiting for a learner is healthy: liveness probes must not kill patient workers."""
        while not stop.is_set():
            if self.health is not None:
                self.health.tick()
            self.inflight = 0
            sent = self.client.send("hello", HelloBody(layout=self.layout))
            reply = self.client.recv(self.timeout_ms) if sent else None
            if reply is not None and reply.message is not None:
                if reply.message.type == "welcome":
                    version = self._take_weights(reply.message)
                    self._backoff = INITIAL_BACKOFF_S
                    log.info("welcomed by learner at version %s", version)
                    return True
                log.error("learner refused hello: %s", _detail(reply.message))
            elif reply is not None and reply.error is not None:
                log.error("unreadable reply from learner: %s", reply.error)
            self.metrics.reconnects.inc()
            delay = self._backoff * random.uniform(0.5, 1.5)
            log.warning("learner %s not answering; retrying in %.1fs", self.config.learner, delay)
            self._backoff = min(self._backoff * 2, MAX_BACKOFF_S)
            stop.wait(delay)
            self.client.connect()
        return False

    def reconnect(self, stop: threading.Event) -> bool:
        """A fresh socket and a new handshake, after the learner went silent."""
        self.metrics.reconnects.inc()
        self.client.connect()
        return self.connect(stop)

    def send_gradient(self, body: GradientBody, wire_dtype: str, wire: np.ndarray) -> bool:
        """Send one gradient and read replies, waiting while `max_inflight` are pending;
        False when the learner has to be greeted again (silent, or it forgot us)."""
        sent = self.client.send("gradient", body, [(wire_dtype, wire)], timeout_ms=self.timeout_ms)
        if sent:
            self.inflight += 1
            self.metrics.updates_sent.inc()
        return sent and self._await_replies(block=True)

    def close(self, say_bye: bool) -> None:
        if say_bye:
            self.client.send("bye", timeout_ms=200)
        self.client.close()

    # --- replies ---------------------------------------------------------------------------

    def _await_replies(self, block: bool) -> bool:
        """Read replies; block while `max_inflight` are pending. False on learner timeout."""
        started = time.monotonic()
        while True:
            must_wait = block and self.inflight >= self.config.max_inflight
            remaining = self.config.learner_timeout - (time.monotonic() - started)
            if must_wait and remaining <= 0:
                return False
            reply = self.client.recv(int(remaining * 1000) if must_wait else 0)
            if reply is None:
                return not must_wait
            if reply.message is None:
                log.error("unreadable reply from learner: %s", reply.error)
                continue
            if not self._on_reply(reply.message):
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
        self.on_weights(payload.model_version, message.arrays[0])
        return payload.model_version


def _detail(message: Message) -> str | None:
    return message.payload.detail if isinstance(message.payload, ErrorBody) else None
