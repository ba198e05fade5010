"""Prometheus metric names of every service, in one place, and the /metrics + /healthz server.

Each service builds its own registry (so tests can run several services in one process) and
serves it with `serve_metrics`. Dashboards, alert rules and tests depend on these names;
common.samples reads the pages back.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from socketserver import ThreadingMixIn
from typing import Any, TypeVar
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app

REJECT_REASONS = (
    "decode",
    "bad_signature",
    "protocol_version",
    "unknown_type",
    "unknown_worker",
    "model_mismatch",
    "shape",
    "dtype",
    "non_finite",
    "bad_version",
    "stale",
    "replay",
    "clock_skew",
    "oversize",
)
"""Every reason a learner refuses a message; pre-declared so dashboards see zeros, not gaps."""

LOSS_STATS = ("policy_loss", "value_loss", "entropy", "grad_norm")

CHECKPOINT_STAGES = ("write", "load")
"""Where a checkpoint failed: writing it (training goes on, the next interval tries again)
or loading it at resume (the file is skipped for an older one)."""

FORGET_REASONS = ("silent", "bye", "reconnected")
"""Why a learner drops a worker: it missed its heartbeats, it said bye, or it said hello again
on a new connection (the old one is dropped)."""
LOST_REASONS = ("silent", "timeout", "forgotten")
"""Why a worker starts over with the learner: nothing heard for 3 heartbeat intervals (the
quick path), a gradient left unanswered for `learner_timeout` while the learner otherwise
answered, or the learner no longer knew the worker."""
RECEIVED_TYPES = ("hello", "gradient", "heartbeat", "bye", "unreadable")
"""What a learner's bytes in are, by message type; `unreadable`: frames it refused to decode."""
SENT_TYPES = ("welcome", "ack", "heartbeat", "error", "weights")
"""What a learner's bytes out are: replies to workers, and `weights`, the broadcast."""
MetricT = TypeVar("MetricT", Counter, Gauge)


@dataclass
class LearnerMetrics:
    registry: CollectorRegistry
    updates: Counter
    model_version: Gauge
    rejected: Counter
    staleness: Histogram
    workers_active: Gauge
    env_frames: Counter
    apply_seconds: Histogram
    messages: Counter
    loss: Gauge
    episode_return: Gauge
    checkpoints: Counter
    checkpoint_failures: Counter
    bytes_received: Counter
    bytes_sent: Counter
    workers_forgotten: Counter
    handshakes_refused: Counter


def predeclared(
    kind: type[MetricT],
    name: str,
    documentation: str,
    label: str,
    values: Iterable[str],
    registry: CollectorRegistry,
) -> MetricT:
    """A metric with one label whose every known value is exported (at 0) from the start, so
    that rate() and the alert rules see a series before the first event of its kind."""
    metric = kind(name, documentation, [label], registry=registry)
    for value in values:
        metric.labels(**{label: value})
    return metric


def learner_metrics() -> LearnerMetrics:
    r = CollectorRegistry()
    rejected = predeclared(
        Counter,
        "a3c_learner_gradients_rejected",
        "Messages refused by the learner, by reason",
        "reason",
        REJECT_REASONS,
        r,
    )
    loss = predeclared(
        Gauge,
        "a3c_learner_loss",
        "Latest worker-reported loss terms of applied gradients",
        "term",
        LOSS_STATS,
        r,
    )
    forgotten = predeclared(
        Counter,
        "a3c_learner_workers_forgotten",
        "Workers the learner stopped counting, by reason",
        "reason",
        FORGET_REASONS,
        r,
    )
    checkpoint_failures = predeclared(
        Counter,
        "a3c_learner_checkpoint_failures",
        "Checkpoints not written (stage=write: the write failed, e.g. a full disk) or found "
        "corrupt or unreadable at resume (stage=load)",
        "stage",
        CHECKPOINT_STAGES,
        r,
    )
    handshakes_refused = predeclared(
        Counter,
        "a3c_learner_handshakes_refused",
        "Connections refused by CurveZMQ before any message (a peer without CURVE or with a "
        "key the learner does not admit), by socket: gradients (ROUTER) or weights (PUB)",
        "socket",
        ("gradients", "weights"),
        r,
    )
    return LearnerMetrics(
        registry=r,
        handshakes_refused=handshakes_refused,
        updates=Counter("a3c_learner_updates", "Gradients applied", registry=r),
        model_version=Gauge("a3c_learner_model_version", "Global model version", registry=r),
        rejected=rejected,
        staleness=Histogram(
            "a3c_learner_gradient_staleness",
            "Versions between the model a gradient was computed on and the global model",
            buckets=(0, 1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=r,
        ),
        workers_active=Gauge("a3c_learner_workers_active", "Workers heard from", registry=r),
        env_frames=Counter(
            "a3c_learner_env_frames", "Environment frames behind applied gradients", registry=r
        ),
        apply_seconds=Histogram(
            "a3c_learner_apply_seconds",
            "Time to validate and apply one gradient",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0, 2.5),
            registry=r,
        ),
        messages=Counter("a3c_learner_messages", "Messages received", ["type"], registry=r),
        loss=loss,
        episode_return=Gauge(
            "a3c_learner_train_episode_return",
            "Latest raw training episode return reported by a worker",
            registry=r,
        ),
        checkpoints=Counter("a3c_learner_checkpoints", "Checkpoints written", registry=r),
        checkpoint_failures=checkpoint_failures,
        bytes_received=predeclared(
            Counter,
            "a3c_learner_bytes_received",
            "Bytes of the messages the learner received (refused ones too), by type",
            "type",
            RECEIVED_TYPES,
            r,
        ),
        bytes_sent=predeclared(
            Counter,
            "a3c_learner_bytes_sent",
            "Bytes of the messages the learner queued to send, by type (a broadcast once, "
            "however many subscribers get it)",
            "type",
            SENT_TYPES,
            r,
        ),
        workers_forgotten=forgotten,
    )


@dataclass
class WorkerMetrics:
    registry: CollectorRegistry
    env_frames: Counter
    episodes: Counter
    episode_return: Gauge
    updates_sent: Counter
    updates_acked: Counter
    reconnects: Counter
    rejected: Counter
    model_version: Gauge
    phase_seconds: Counter
    heartbeats_sent: Counter
    learner_lost: Counter
    replies_rejected: Counter


def worker_metrics() -> WorkerMetrics:
    r = CollectorRegistry()
    lost = predeclared(
        Counter,
        "a3c_worker_learner_lost",
        "Times the worker gave up on its connection to the learner, by reason",
        "reason",
        LOST_REASONS,
        r,
    )
    return WorkerMetrics(
        registry=r,
        env_frames=Counter("a3c_worker_env_frames", "Environment frames played", registry=r),
        episodes=Counter("a3c_worker_episodes", "Training episodes (full games) ended", registry=r),
        episode_return=Gauge(
            "a3c_worker_episode_return", "Raw return of the latest training episode", registry=r
        ),
        updates_sent=Counter("a3c_worker_gradients_sent", "Gradients sent", registry=r),
        updates_acked=Counter("a3c_worker_gradients_acked", "Gradients acknowledged", registry=r),
        reconnects=Counter("a3c_worker_reconnects", "Reconnects to the learner", registry=r),
        rejected=Counter(
            "a3c_worker_gradients_rejected", "Gradients the learner refused", ["reason"], registry=r
        ),
        model_version=Gauge(
            "a3c_worker_model_version", "Version of the weights in use", registry=r
        ),
        phase_seconds=Counter(
            "a3c_worker_phase_seconds",
            "Wall time by phase of the worker loop",
            ["phase"],
            registry=r,
        ),
        heartbeats_sent=Counter(
            "a3c_worker_heartbeats_sent",
            "Heartbeats sent after a heartbeat interval with nothing else sent",
            registry=r,
        ),
        learner_lost=lost,
        replies_rejected=predeclared(
            Counter,
            "a3c_worker_replies_rejected",
            "Learner replies the worker refused, by reason: unreadable ones, and weights "
            "that do not fit its model (wrong dtype or size)",
            "reason",
            REJECT_REASONS,
            r,
        ),
    )


@dataclass
class EvaluatorMetrics:
    registry: CollectorRegistry
    score_mean: Gauge
    best_score: Gauge
    last_score: Gauge
    episodes: Counter
    model_version: Gauge
    train_frames: Gauge
    episode_frames: Gauge
    weights_received: Counter
    rejected: Counter
    game_bytes: Gauge
    game_bytes_bound: Gauge
    value_spread: Gauge


def evaluator_metrics() -> EvaluatorMetrics:
    r = CollectorRegistry()
    return EvaluatorMetrics(
        registry=r,
        value_spread=Gauge(
            "a3c_evaluator_value_spread",
            "Standard deviation of the critic's value over the latest evaluation game: about 0 "
            "when the model ignores its input (fresh, or collapsed if it was above 0 before)",
            registry=r,
        ),
        score_mean=Gauge(
            "a3c_evaluator_score_mean",
            "Mean raw score over the last eval_window episodes",
            registry=r,
        ),
        best_score=Gauge(
            "a3c_evaluator_best_score",
            "Best mean score of one model version over its own games",
            registry=r,
        ),
        last_score=Gauge("a3c_evaluator_last_score", "Raw score of the latest episode", registry=r),
        episodes=Counter("a3c_evaluator_episodes", "Evaluation episodes played", registry=r),
        model_version=Gauge(
            "a3c_evaluator_model_version", "Model version of the latest evaluation", registry=r
        ),
        train_frames=Gauge(
            "a3c_evaluator_train_frames",
            "Training frames behind the latest evaluated model",
            registry=r,
        ),
        episode_frames=Gauge(
            "a3c_evaluator_episode_frames", "Frames in the latest evaluation episode", registry=r
        ),
        weights_received=Counter(
            "a3c_evaluator_weights_received", "Weight broadcasts received", registry=r
        ),
        rejected=Counter(
            "a3c_evaluator_messages_rejected",
            "Broadcasts refused, by reason",
            ["reason"],
            registry=r,
        ),
        game_bytes=Gauge(
            "a3c_evaluator_game_bytes",
            "Bytes held for the page's games: frames of the game being played plus the GIFs "
            "of the latest and best games",
            registry=r,
        ),
        game_bytes_bound=Gauge(
            "a3c_evaluator_game_bytes_bound",
            "The most a3c_evaluator_game_bytes can reach, GIF encoding included "
            "(services/evaluator/gallery.py derives it)",
            registry=r,
        ),
    )


class Health:
    """Liveness as the main loop sees it: healthy while it ticked within `stale_after` s."""

    def __init__(self, stale_after: float = 30.0) -> None:
        self.stale_after = stale_after
        self._last_tick = time.monotonic()

    def tick(self) -> None:
        self._last_tick = time.monotonic()

    def healthy(self) -> bool:
        return time.monotonic() - self._last_tick < self.stale_after


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    """One thread per request, so a slow scraper cannot block health probes."""

    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # scrapes are not news
        pass


@dataclass(frozen=True)
class Reply:
    """What a route answers: built whole before it is sent, so a page or a GIF is never
    served half-updated. Sent with `Cache-Control: no-store`: the latest game changes under
    the same URL."""

    status: int
    content_type: str
    body: bytes


Routes = Mapping[str, Callable[[], Reply]]
"""Extra paths a service serves beside /metrics and /healthz (the evaluator's page)."""


def metrics_app(registry: CollectorRegistry, health: Health, routes: Routes | None = None) -> Any:
    """The WSGI app of a metrics port: /healthz, `routes`, and /metrics for anything else
    (Prometheus scrapes /metrics, but any path has always answered with the metrics)."""
    prometheus_app = make_wsgi_app(registry)
    extra = dict(routes or {})

    def app(environ: dict, start_response: Callable) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path in ("/healthz", "/health", "/readyz"):
            ok = health.healthy()
            start_response(
                "200 OK" if ok else "503 Service Unavailable",
                [("Content-Type", "text/plain")],
            )
            return [b"ok\n" if ok else b"stalled\n"]
        if path in extra:
            reply = extra[path]()
            headers = [
                ("Content-Type", reply.content_type),
                ("Content-Length", str(len(reply.body))),
                ("Cache-Control", "no-store"),
            ]
            start_response(f"{reply.status} {HTTPStatus(reply.status).phrase}", headers)
            return [b"" if environ.get("REQUEST_METHOD") == "HEAD" else reply.body]
        return prometheus_app(environ, start_response)

    return app


class MetricsServer:
    """Serves /metrics (Prometheus text), /healthz (200 or 503) and any extra `routes` from a
    daemon thread."""

    def __init__(
        self,
        registry: CollectorRegistry,
        health: Health,
        host: str,
        port: int,
        routes: Routes | None = None,
    ) -> None:
        app = metrics_app(registry, health, routes)
        self._server: WSGIServer = make_server(
            host, port, app, server_class=_ThreadingWSGIServer, handler_class=_QuietHandler
        )
        self.port = self._server.server_port
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def serve_metrics(
    registry: CollectorRegistry,
    health: Health,
    host: str,
    port: int,
    routes: Routes | None = None,
) -> MetricsServer | None:
    """Start the endpoint, or do nothing when port is 0 (disabled)."""
    if port == 0:
        return None
    return MetricsServer(registry, health, host, port, routes)
