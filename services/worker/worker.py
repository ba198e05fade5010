"""The worker: an independent actor that plays its own environments, turns each n-step
rollout into a gradient, and sends it to the learner with the model version it was computed on.

Flow control: at most `max_inflight` gradients wait for an acknowledgement; each ack carries
the newest weights, so the next rollout starts from the global model (the A3C "sync").
Liveness (Lazy Pirate): if the learner stays silent for `learner_timeout`, the socket is
replaced and the worker says hello again, backing off exponentially; gradients computed
meanwhile are dropped rather than queued, so a learner outage costs no memory here.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time

import torch

from common.config import Config, split_address
from common.envs import env_spaces, make_vector_env
from common.metrics import Health, WorkerMetrics, worker_metrics
from common.model import ActorCritic
from common.protocol import Message, Session
from common.rollout import RolloutResult, RolloutRunner
from common.seeding import worker_seed
from common.transport import DealerClient
from common.weights import gradient_vector, layout_digest, load_parameter_vector

log = logging.getLogger("worker")

MAX_BACKOFF_S = 10.0


class Worker:
    def __init__(self, config: Config, metrics: WorkerMetrics | None = None) -> None:
        torch.set_num_threads(1)
        self.config = config
        self.metrics = metrics or worker_metrics()
        self.worker_id = config.resolved_worker_id
        # Replicas share one config: each draws its own streams from its id.
        self.seed = worker_seed(config.seed, self.worker_id)
        torch.manual_seed(self.seed)
        obs_shape, n_actions = env_spaces(config.env)
        self.model = ActorCritic(obs_shape, n_actions)
        self.layout = layout_digest(self.model)
        self.envs = make_vector_env(
            config.env,
            self.seed,
            config.num_envs,
            config.train_sticky_actions,
            config.normalize_rewards,
            config.gamma,
        )
        self.session = Session(self.worker_id, config.shared_key(), config.max_message_bytes)
        host, port = split_address(config.learner)
        self.client = DealerClient(self.session, host, port)
        self.version = -1
        self.health: Health | None = None
        self.inflight = 0
        self._since_weights = 0
        self.applied = 0
        self._last_sent = time.monotonic()
        self._backoff = 0.5
        self.runner = RolloutRunner(self.model, self.envs, config, self.seed)

    # --- connection ------------------------------------------------------------------------

    def connect(self, stop: threading.Event) -> bool:
        """Say hello until the learner welcomes us (with backoff); False if stopped first.
        Waiting for a learner is healthy: liveness probes must not kill patient workers."""
        while not stop.is_set():
            if self.health is not None:
                self.health.tick()
            self.inflight = 0
            sent = self.client.send("hello", {"layout": self.layout, "role": "worker"})
            reply = self.client.recv(int(self.config.learner_timeout * 1000)) if sent else None
            if reply is not None and reply.message is not None:
                if reply.message.type == "welcome":
                    self._load_weights(reply.message)
                    self._backoff = 0.5
                    self._last_sent = time.monotonic()
                    log.info("welcomed by learner at version %d", self.version)
                    return True
                log.error("learner refused hello: %s", reply.message.body.get("detail"))
            elif reply is not None and reply.error is not None:
                log.error("unreadable reply from learner: %s", reply.error)
            self.metrics.reconnects.inc()
            delay = self._backoff * random.uniform(0.5, 1.5)
            log.warning("learner %s not answering; retrying in %.1fs", self.config.learner, delay)
            self._backoff = min(self._backoff * 2, MAX_BACKOFF_S)
            stop.wait(delay)
            self.client.connect()
        return False

    def _load_weights(self, message: Message) -> None:
        if message.body.get("layout") != self.layout or len(message.arrays) != 1:
            log.error("learner sent weights for another model; ignoring them")
            return
        load_parameter_vector(self.model, message.arrays[0])
        self._since_weights = 0
        self.version = int(message.body["model_version"])
        self.metrics.model_version.set(self.version)

    def _handle_reply(self, message: Message) -> bool:
        """Apply an ack/heartbeat/error; False when we must say hello again."""
        if message.type == "ack":
            self.inflight = max(0, self.inflight - 1)
            if message.body.get("accepted"):
                self.applied += 1
                self.metrics.updates_acked.inc()
            else:
                reason = str(message.body.get("reason", "unknown"))
                self.metrics.rejected.labels(reason=reason).inc()
                log.warning("gradient refused: %s", message.body.get("detail"))
            if message.arrays:
                self._load_weights(message)
            return True
        if message.type == "heartbeat":
            return True
        if message.type == "error":
            self.inflight = max(0, self.inflight - 1)
            reason = str(message.body.get("reason", "unknown"))
            self.metrics.rejected.labels(reason=reason).inc()
            log.warning("learner error: %s (%s)", reason, message.body.get("detail"))
            return reason != "unknown_worker"
        return True

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
            if not self._handle_reply(reply.message):
                return False

    # --- the actor-learner step ------------------------------------------------------------

    def rollout(self) -> RolloutResult:
        """Play one rollout; its A3C gradient is left in the model."""
        result = self.runner.run()
        for phase, seconds in result.seconds.items():
            self.metrics.phase_seconds.labels(phase=phase).inc(seconds)
        self.metrics.env_frames.inc(result.frames)
        for score in result.episode_returns:
            self.metrics.episodes.inc()
            self.metrics.episode_return.set(score)
        return result

    def send_gradient(self, rollout: RolloutResult) -> bool:
        t0 = time.perf_counter()
        if not math.isfinite(rollout.stats["grad_norm"]):
            log.error("dropping a non-finite gradient (version %d)", self.version)
            return True
        wire, scale = gradient_vector(self.model, self.config.grad_dtype)
        self._since_weights += 1
        body = {
            "want_weights": self._since_weights >= self.config.sync_interval,
            "model_version": self.version,
            "frames": rollout.frames,
            "layout": self.layout,
            "scale": scale,
            "stats": rollout.stats,
            "episode_returns": rollout.episode_returns,
        }
        sent = self.client.send(
            "gradient",
            body,
            [(self.config.grad_dtype, wire)],
            timeout_ms=int(self.config.learner_timeout * 1000),
        )
        if sent:
            self.inflight += 1
            self._last_sent = time.monotonic()
            self.metrics.updates_sent.inc()
        ok = sent and self._await_replies(block=True)
        self.metrics.phase_seconds.labels(phase="wire").inc(time.perf_counter() - t0)
        return ok

    def run(self, stop: threading.Event, health: Health | None = None) -> None:
        self.health = health
        try:
            if not self.connect(stop):
                return
            while not stop.is_set():
                rollout = self.rollout()
                if not self.send_gradient(rollout) and not stop.is_set():
                    log.warning("lost the learner; reconnecting")
                    self.metrics.reconnects.inc()
                    self.client.connect()
                    if not self.connect(stop):
                        return
                if health is not None:
                    health.tick()
        finally:
            if self.version >= 0:
                self.client.send("bye", {}, timeout_ms=200)
            self.client.close()
            self.envs.close()
            log.info("stopped after %d applied gradients", self.applied)


def run_worker(config: Config) -> None:
    from common.service import start_service

    metrics = worker_metrics()
    runtime = start_service("worker", config.resolved_worker_id, config, metrics.registry)
    try:
        Worker(config, metrics).run(runtime.stop, runtime.health)
    finally:
        runtime.close()
