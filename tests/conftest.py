"""Shared helpers: start real service processes on free loopback ports, read their metrics,
and wait for conditions (polling with a deadline, never a fixed sleep)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from common.metrics import scrape
from services.local.launcher import free_port

REPO = Path(__file__).resolve().parent.parent


def wait_for(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    """Poll `condition` until it returns something truthy; fail with `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def metrics(port: int) -> dict[str, float]:
    """Every sample keyed by name plus labels, e.g. 'x_total{reason="a"}'."""
    return scrape(port)


def http_status(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return 0


@dataclass
class Service:
    name: str
    process: subprocess.Popen
    metrics_port: int
    log_path: Path

    def metrics(self) -> dict[str, float]:
        return metrics(self.metrics_port)

    def value(self, key: str) -> float:
        return self.metrics().get(key, 0.0)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def terminate(self, timeout: float = 15.0) -> int:
        """SIGTERM and wait; the exit code (fails the test if it does not stop in time)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise AssertionError(
                f"{self.name} ignored SIGTERM for {timeout}s:\n{self.log()[-2000:]}"
            ) from None

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()


class Cluster:
    """Starts services as `python -m services.<role>` processes; stops them all at the end."""

    def __init__(self, tmp_path: Path, env_id: str = "CartPole-v1") -> None:
        self.tmp_path = tmp_path
        self.env_id = env_id
        self.port = free_port(pair=True)
        self.services: list[Service] = []

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(
        self, role: str, name: str | None = None, *args: str, env: dict[str, str] | None = None
    ) -> Service:
        name = name or role
        metrics_port = free_port()
        log_path = self.tmp_path / f"{name}.log"
        # Each role takes only the flags it reads: the learner binds, the others connect.
        checkpoints = str(self.tmp_path / "ckpt")
        wiring = (
            ["--host", "127.0.0.1", "--port", str(self.port), "--checkpoint-dir", checkpoints]
            if role == "learner"
            else ["--learner", self.address]
        )
        command = [
            sys.executable,
            "-m",
            f"services.{role}",
            "--env",
            self.env_id,
            "--metrics-port",
            str(metrics_port),
            *wiring,
            *args,
        ]
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO,
                env={**os.environ, **(env or {})},
            )
        service = Service(name, process, metrics_port, log_path)
        self.services.append(service)
        wait_for(
            lambda: service.metrics() or service.process.poll() is not None,
            60,
            f"{name} to serve /metrics",
        )
        assert service.process.poll() is None, f"{name} died:\n{service.log()[-3000:]}"
        return service

    def stop_all(self) -> None:
        for service in reversed(self.services):
            if service.process.poll() is None:
                service.process.kill()
                service.process.wait()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path)
    try:
        yield cluster
    finally:
        cluster.stop_all()
