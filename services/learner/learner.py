"""The learner process: `LearnerCore` (services.learner.core) behind its sockets and timers.

This module owns what the core must not: building the model for the configured env, resuming
from disk, the ROUTER socket that workers talk to (each request gets the core's reply), the
PUB socket that broadcasts weights to evaluators at a bounded rate, and atomic checkpoints on
a cadence and at exit.
"""

from __future__ import annotations

import errno
import logging
import threading
import time
from pathlib import Path

import numpy as np
import torch
from prometheus_client import generate_latest

from common.a3c import ALGORITHM_VERSION
from common.checkpoint import (
    MODEL_KEYS,
    checkpoint_path,
    load_checkpoint,
    load_newest,
    save_checkpoint,
)
from common.config import Config
from common.envs import env_spaces
from common.errors import CheckpointError, CheckpointMismatchError
from common.metrics import Health, LearnerMetrics, learner_metrics
from common.model import ActorCritic
from common.protocol import REQUEST_TYPES, Session
from common.samples import Samples
from common.scalars import LEARNER_INTERVAL_S, LearnerScalars, open_writer
from common.transport import Publisher, Received, RouterServer, curve_server
from common.weights import FlatParameters
from services.learner.core import LearnerCore, LogLimiter

__all__ = ["Learner", "LearnerCore", "LogLimiter", "run_learner"]

log = logging.getLogger("learner")

POLL_MS = 100


class Learner:
    """One learner process: a LearnerCore, the sockets it answers on, and its checkpoints."""

    def __init__(self, config: Config, metrics: LearnerMetrics | None = None) -> None:
        self.config = config
        self.metrics = metrics or learner_metrics()
        # First: CURVE settings that cannot work stop the start before anything is touched.
        curve = curve_server(config.curve_key_file, config.curve_clients_dir)
        obs_shape, n_actions = env_spaces(config.env, config.frame_size)
        self.core = LearnerCore.create(ActorCritic(obs_shape, n_actions), config, self.metrics)
        self._last_publish = 0.0
        self._last_checkpoint = time.monotonic()
        # Before binding: a checkpoint for another model stops the start with the ports free.
        self._resume()
        writer = open_writer(config.tensorboard_dir, "learner")
        self.scalars = (
            None
            if writer is None
            else LearnerScalars(writer, self._own_metrics, LEARNER_INTERVAL_S)
        )
        self.session = Session(
            "learner", config.shared_key(), config.max_message_bytes, accepts=REQUEST_TYPES
        )
        self.server = RouterServer(self.session, config.host, config.port, curve)
        self.publisher = Publisher(self.session, config.host, config.port + 1, curve)
        log.info(
            "serving %s (%d parameters, layout %s) on %s:%d (gradients) and :%d (weights), "
            "version %d, weights as %s, signing %s, CURVE %s",
            config.env,
            self.core.n_params,
            self.core.layout,
            config.host,
            config.port,
            config.port + 1,
            self.version,
            self.core.weights_dtype,
            "on" if self.session.key else "off",
            f"on (clients admitted from {config.curve_clients_dir})" if curve else "off",
        )

    # --- views of the core (tests and tools read and move them) ----------------------------

    @property
    def version(self) -> int:
        return self.core.version

    @version.setter
    def version(self, value: int) -> None:
        self.core.version = value

    @property
    def frames(self) -> int:
        return self.core.frames

    @property
    def flat(self) -> FlatParameters:
        return self.core.flat

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self.core.optimizer

    def weights(self) -> np.ndarray:
        return self.core.weights()

    # --- state on disk ---------------------------------------------------------------------

    def _resume(self) -> None:
        state, problems = load_newest(self.config.checkpoint_dir)
        if problems:
            self.metrics.checkpoint_failures.labels(stage="load").inc(len(problems))
        if state is None and self.config.init_from is not None:
            self._warm_start(self.config.init_from)
            return
        if state is None:
            log.info("no checkpoint in %s: starting fresh", self.config.checkpoint_dir)
            return
        if state["layout"] != self.core.layout:
            raise CheckpointMismatchError(
                f"checkpoint {state['path']} is for another model (layout {state['layout']}, "
                f"this env {self.config.env} needs {self.core.layout}); "
                "use another --checkpoint-dir"
            )
        # Older checkpoints also hold "updates"; it always equalled the version.
        self.core.restore(
            state["model"], int(state["model_version"]), int(state["frames"]), state["optimizer"]
        )
        log.info("resumed from %s: version %d, %d frames", state["path"], self.version, self.frames)

    def _warm_start(self, path: Path) -> None:
        """Start from a model file (e.g. a shipped models/*.pt): its weights, version and frames
        carry on; Adam's statistics start afresh (they rebuild within a few hundred updates)."""
        try:
            state = load_checkpoint(path, MODEL_KEYS)
        except (OSError, ValueError) as error:
            raise CheckpointError(f"--init-from {path}: {error}") from None
        if state["layout"] != self.core.layout:
            raise CheckpointMismatchError(
                f"--init-from {path} is for another model than {self.config.env}"
            )
        self.core.restore(
            state["model"], int(state.get("model_version", 0)), int(state.get("frames", 0))
        )
        log.info("warm start from %s: version %d, %d frames", path, self.version, self.frames)

    def checkpoint(self) -> bool:
        """Write a checkpoint now; False if the write failed.

        A failed write (a full or broken disk: any OSError) is logged and counted, never
        raised: the model in memory is intact, the older checkpoints on disk are too (nothing
        is pruned after a failed write), and training is worth more than one missed
        checkpoint. The next interval tries again, so writing resumes once space returns."""
        core = self.core
        state = {
            "model": core.model.state_dict(),
            "optimizer": core.optimizer.state_dict(),
            "model_version": core.version,
            "frames": core.frames,
            # Kept for readers of the key (the run summary, older tools): one update per version.
            "updates": core.version,
            "layout": core.layout,
            "env": self.config.env,
            "frame_size": self.config.frame_size,
            "memory_reset": self.config.memory_reset,
            "config": self.config.to_public_dict(),
            "algorithm_version": ALGORITHM_VERSION,
            "saved_at": time.time(),
        }
        self._last_checkpoint = time.monotonic()
        directory = self.config.checkpoint_dir
        try:
            path = save_checkpoint(directory, core.version, state, self.config.keep_checkpoints)
        except OSError as error:
            self.metrics.checkpoint_failures.labels(stage="write").inc()
            code = errno.errorcode.get(error.errno or -1, f"errno {error.errno}")
            log.error(
                "checkpoint %s not written: %s (%s); training goes on, older checkpoints are "
                "kept, next try in %gs",
                checkpoint_path(directory, core.version),
                error.strerror or error,
                code,
                self.config.checkpoint_interval,
            )
            return False
        self.metrics.checkpoints.inc()
        log.info("checkpoint %s (version %d, %d frames)", path.name, core.version, core.frames)
        return True

    # --- loop ------------------------------------------------------------------------------

    def serve(self, stop: threading.Event, health: Health | None = None) -> None:
        try:
            while not stop.is_set():
                received = self.server.recv(POLL_MS)
                if received is not None:
                    self.handle(received)
                self.tick()
                if health is not None:
                    health.tick()
        finally:
            self.checkpoint()
            self.server.close()
            self.publisher.close()
            if self.scalars is not None:
                self.scalars.close()

    def _own_metrics(self) -> Samples:
        return Samples.parse(generate_latest(self.metrics.registry).decode())

    def tick(self) -> None:
        """Housekeeping between messages: forget silent workers, publish, checkpoint, and the
        TensorBoard scalars where asked for."""
        self.core.forget_silent()
        for name, sock in (("gradients", self.server), ("weights", self.publisher)):
            refused = sock.refused_handshakes()
            if refused:
                self.metrics.handshakes_refused.labels(socket=name).inc(refused)
        now = time.monotonic()
        if self.scalars is not None:
            self.scalars.tick(now)
        if now - self._last_publish >= self.config.publish_interval:
            sent = self.publisher.publish(
                "weights", self.core.weights_body(), self.core.weights_arrays()
            )
            self.metrics.bytes_sent.labels(type="weights").inc(sent)
            self._last_publish = now
        if now - self._last_checkpoint >= self.config.checkpoint_interval:
            self.checkpoint()

    def handle(self, received: Received) -> None:
        """Answer one request on the socket it came from, as the core decides, and count the
        bytes both ways: what crosses the learner's link is what a cluster's network pays."""
        identity = received.identity
        assert identity is not None
        incoming = received.error if received.error is not None else received.message
        assert incoming is not None
        kind = received.message.type if received.message is not None else "unreadable"
        self.metrics.bytes_received.labels(type=kind).inc(received.nbytes)
        reply = self.core.handle(identity, incoming)
        if reply is not None:
            sent = self.server.reply(identity, reply.type, reply.body, reply.arrays)
            self.metrics.bytes_sent.labels(type=reply.type).inc(sent)


def run_learner(config: Config) -> None:
    from common.service import start_service

    metrics = learner_metrics()
    runtime = start_service(
        "learner", f"{config.host}:{config.port}", config, metrics.registry, serve=False
    )
    try:
        learner = Learner(config, metrics)
        # Only now: before the resume its gauges would say version 0, a false drop for every
        # dashboard and rate() at each restart. Until then /metrics and /healthz do not
        # answer, so probes and scrapes see a learner that is starting, which it is.
        runtime.serve(metrics.registry, config)
        learner.serve(runtime.stop, runtime.health)
        log.info("stopped at version %d", learner.version)
    finally:
        runtime.close()
