"""What every service process does at start: logging, stop signals, /metrics and /healthz."""

from __future__ import annotations

import logging
import signal
import threading
from dataclasses import dataclass

import torch
from prometheus_client import CollectorRegistry

from common.config import Config
from common.logs import setup_logging
from common.metrics import Health, MetricsServer, serve_metrics

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    stop: threading.Event
    health: Health
    metrics_server: MetricsServer | None

    def close(self) -> None:
        if self.metrics_server is not None:
            self.metrics_server.close()


def start_service(
    name: str, instance: str, config: Config, registry: CollectorRegistry, stale_after: float = 60
) -> Runtime:
    """Set up logging, turn SIGTERM/SIGINT into a stop event, and serve metrics + health."""
    setup_logging(name, instance, config.log_level, config.log_format)
    # Processes, not threads, scale: intra-op threads in N processes on few cores only fight.
    torch.set_num_threads(1)
    stop = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    health = Health(stale_after)
    server = serve_metrics(registry, health, config.metrics_host, config.metrics_port)
    if server is not None:
        log.info("metrics on http://%s:%d/metrics", config.metrics_host, server.port)
    return Runtime(stop, health, server)
