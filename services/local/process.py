"""The processes of the embedded cluster: one `python -m services.<role>` child each, with its
flags built from the config, its output appended to a log, and a free loopback port for it.
services.local.launcher assembles them into `a3c run`; the tests start single services with
the same pieces.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.config import Config, to_cli_args
from common.samples import Samples, metrics_url, scrape

STOP_TIMEOUT_S = 20.0


class ChildDied(RuntimeError):
    """A child of the cluster exited while it should be running (its log tail is the message)."""


def free_port(pair: bool = False) -> int:
    """A free loopback port (and, with pair=True, its successor free too)."""
    for _ in range(100):
        with socket.socket() as first:
            first.bind(("127.0.0.1", 0))
            port = first.getsockname()[1]
            if not pair:
                return port
            if port >= 65535:
                continue
            with socket.socket() as second:
                try:
                    second.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port pair on 127.0.0.1")


def service_args(role: str, config: Config | None = None, **settings: Any) -> list[str]:
    """`-m services.<role>` and its flags: the config's fields for that role plus `settings`,
    or with no config `settings` alone. Settings a role does not read are dropped, so one dict
    of wiring (addresses, ports, paths) serves every role."""
    flags = config.to_cli_args(role, **settings) if config else to_cli_args(role, **settings)
    return [f"services.{role}", *flags]


@dataclass
class Child:
    """One `python -m services.<role>` process, restartable, its output appended to a log."""

    name: str
    args: list[str]
    log_path: Path
    metrics_port: int
    process: subprocess.Popen | None = None
    restarts: int = 0

    @property
    def role(self) -> str:
        return self.args[0].removeprefix("services.")

    @property
    def pid(self) -> int:
        if self.process is None:
            raise ChildDied(f"{self.name} was never started")
        return self.process.pid

    @property
    def metrics_url(self) -> str:
        return metrics_url(self.metrics_port)

    def metrics(self) -> Samples:
        return scrape(self.metrics_port)

    def start(self, env: Mapping[str, str]) -> None:
        # The child holds its own copy of the log's descriptor; ours closes at once.
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", *self.args],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(env),
                start_new_session=True,  # Ctrl-C reaches only the launcher, which stops in order
            )

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                print(f"  {self.name} did not stop in {timeout:.0f}s; killing it", flush=True)
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""
