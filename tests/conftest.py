"""Shared helpers: start real service processes on free loopback ports (with the flags and
process handling of `a3c run`'s own launcher), read their metrics, and wait for conditions
(polling with a deadline, never a fixed sleep)."""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import pytest

from services.local.process import Child, free_port, service_args

__all__ = [
    "REPO",
    "Cluster",
    "Service",
    "fetch",
    "free_port",
    "http_status",
    "k8s_validate",
    "latest_game",
    "wait_for",
]

REPO = Path(__file__).resolve().parent.parent
T = TypeVar("T")


def wait_for(
    condition: Callable[[], T],
    timeout: float,
    what: str,
    interval: float = 0.2,
    retry_on: tuple[type[BaseException], ...] = (),
) -> T:
    """Poll `condition` until it returns something truthy, and return that; fail naming `what`
    and the last answer at the deadline. Errors in `retry_on` count as a falsy answer (a
    service still starting, a container being restarted)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = condition()
        except retry_on as error:
            last = error
        else:
            if last:
                return last
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}"
            )
        time.sleep(interval)


def http_status(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return 0


def fetch(url: str, timeout: float = 10) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


def latest_game(page: str) -> tuple[dict[str, Any], bytes] | None:
    """The evaluator's /game/latest.json and the /game/latest.gif of that same game, from its
    page at `page` (http://host:port); None before its first game (a 404), or when a newer
    game replaced the latest between the requests: call again."""
    try:
        before = json.loads(fetch(f"{page}/game/latest.json"))
        gif = fetch(f"{page}/game/latest.gif")
        after = json.loads(fetch(f"{page}/game/latest.json"))
    except urllib.error.HTTPError as error:
        if error.code == 404:
            return None
        raise
    return (after, gif) if before["game"] == after["game"] else None


@functools.cache
def k8s_validate() -> ModuleType:
    """k8s/validate.py (and its sibling policies), which is a script, not a package."""
    spec = importlib.util.spec_from_file_location("k8s_validate", REPO / "k8s" / "validate.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Service(Child):
    """A started child, with what tests ask of it."""

    @property
    def popen(self) -> subprocess.Popen:
        assert self.process is not None, f"{self.name} was never started"
        return self.process

    def value(self, name: str, **labels: str) -> float:
        """One sample of its /metrics now (0 if absent), e.g. value("x_total", reason="a")."""
        return self.metrics().get(name, **labels)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def terminate(self, timeout: float = 15.0) -> int:
        """SIGTERM and wait; the exit code (fails the test if it does not stop in time)."""
        process = self.popen
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            raise AssertionError(
                f"{self.name} ignored SIGTERM for {timeout}s:\n{self.log()[-2000:]}"
            ) from None

    def kill(self) -> None:
        self.popen.kill()
        self.popen.wait()


class Cluster:
    """Starts services one at a time, as the launcher builds them, on one learner port; stops
    them all at the end. Unlike `a3c run` each test picks its roles, flags and environment."""

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
        """`python -m services.<role>` with the wiring flags, then `args`; waits for /metrics.
        Only the wiring is set by flags, so `env` (A3C_*) decides everything else."""
        name = name or role
        metrics_port = free_port()
        wiring = service_args(
            role,
            env=self.env_id,
            metrics_port=metrics_port,
            host="127.0.0.1",
            port=self.port,
            checkpoint_dir=self.tmp_path / "ckpt",
            learner=self.address,
        )
        service = Service(name, [*wiring, *args], self.tmp_path / f"{name}.log", metrics_port)
        service.start({**os.environ, **(env or {})})
        self.services.append(service)
        wait_for(
            lambda: service.metrics() or service.popen.poll() is not None,
            60,
            f"{name} to serve /metrics",
        )
        assert service.popen.poll() is None, f"{name} died:\n{service.log()[-3000:]}"
        return service

    def stop_all(self) -> None:
        for service in reversed(self.services):
            if service.popen.poll() is None:
                service.kill()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path)
    try:
        yield cluster
    finally:
        cluster.stop_all()
