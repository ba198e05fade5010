"""The worker: an independent actor that plays its own environments, turns each n-step
rollout into a gradient, and sends it to the learner with the model version it was computed on.

Each ack carries the newest weights every `sync_interval` gradients, so the next rollout
starts from the global model (the A3C "sync"). Talking to the learner (handshake, backoff,
flow control, heartbeats, reconnects) is services.worker.link's; this module is the rollout
loop, which lets the link heartbeat between env steps.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from gymnasium.vector import VectorEnv, VectorWrapper

from common.config import Config
from common.envs import env_spaces, make_vector_env
from common.metrics import Health, WorkerMetrics, worker_metrics
from common.model import ActorCritic
from common.protocol import GradientBody, Session
from common.rollout import RolloutResult, RolloutRunner
from common.seeding import worker_seed
from common.weights import gradient_vector, layout_digest, load_parameter_vector
from services.worker.link import LearnerLink

log = logging.getLogger("worker")


class Heartbeats(VectorWrapper):
    """Calls `keep_alive` before every env step. A rollout is one call from the worker's
    loop, and one long enough (many steps or envs, a slow game) would be silence the learner
    takes for a dead worker; an env step is the finest point at which the loop can send."""

    def __init__(self, env: VectorEnv, keep_alive: Callable[[], None]) -> None:
        super().__init__(env)
        self._keep_alive = keep_alive

    def step(self, actions: Any) -> Any:
        self._keep_alive()
        return self.env.step(actions)


class Worker:
    def __init__(self, config: Config, metrics: WorkerMetrics | None = None) -> None:
        torch.set_num_threads(1)
        self.config = config
        self.metrics = metrics or worker_metrics()
        self.worker_id = config.resolved_worker_id
        # Replicas share one config: each draws its own streams from its id.
        self.seed = worker_seed(config.seed, self.worker_id)
        torch.manual_seed(self.seed)
        obs_shape, n_actions = env_spaces(config.env, config.frame_size)
        self.model = ActorCritic(obs_shape, n_actions)
        self.layout = layout_digest(self.model)
        self.envs = make_vector_env(
            config.env,
            self.seed,
            config.num_envs,
            config.train_sticky_actions,
            config.training_reward_scale,
            config.gamma,
            config.frame_size,
        )
        session = Session(self.worker_id, config.shared_key(), config.max_message_bytes)
        self.link = LearnerLink(config, session, self.metrics, self.layout, self._load_weights)
        self.version = -1
        self._since_weights = 0
        self.runner = RolloutRunner(
            self.model, Heartbeats(self.envs, self.link.keep_alive), config, self.seed
        )

    def _load_weights(self, version: int, weights: np.ndarray) -> None:
        load_parameter_vector(self.model, weights)
        self._since_weights = 0
        self.version = version
        self.metrics.model_version.set(version)

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
        """False when the learner was lost on the way."""
        t0 = time.perf_counter()
        if not math.isfinite(rollout.stats["grad_norm"]):
            log.error("dropping a non-finite gradient (version %d)", self.version)
            return True
        wire, scale = gradient_vector(self.model, self.config.grad_dtype)
        self._since_weights += 1
        body = GradientBody(
            model_version=self.version,
            frames=rollout.frames,
            scale=scale,
            layout=self.layout,
            want_weights=self._since_weights >= self.config.sync_interval,
            stats=rollout.stats,
            episode_returns=rollout.episode_returns,
        )
        ok = self.link.send_gradient(body, self.config.grad_dtype, wire)
        self.metrics.phase_seconds.labels(phase="wire").inc(time.perf_counter() - t0)
        return ok

    def run(self, stop: threading.Event, health: Health | None = None) -> None:
        self.link.health = health
        try:
            if not self.link.connect(stop):
                return
            while not stop.is_set():
                rollout = self.rollout()
                # False: the learner is lost (the link has logged why); greet it again.
                lost = not self.send_gradient(rollout) and not stop.is_set()
                if lost and not self.link.reconnect(stop):
                    return
                if health is not None:
                    health.tick()
        finally:
            self.link.close(say_bye=self.version >= 0)
            self.envs.close()
            log.info("stopped after %d applied gradients", self.link.applied)


def run_worker(config: Config) -> None:
    from common.service import start_service

    metrics = worker_metrics()
    runtime = start_service("worker", config.resolved_worker_id, config, metrics.registry)
    try:
        Worker(config, metrics).run(runtime.stop, runtime.health)
    finally:
        runtime.close()
