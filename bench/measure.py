"""What every benchmark needs to read a machine honestly: CPU seconds per process and for the
whole machine, and the load around a window (/metrics samples are common.samples).

The machine is shared (other people run tests on it), so every figure carries the load average
and the machine's busy cores next to the cores our own processes used in the same window. The
bytes through the learner's link come from its own counters, the same way for every benchmark.
"""

from __future__ import annotations

import os
import platform
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from common.samples import Samples

REPO = Path(__file__).resolve().parent.parent


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process (all its threads); 0 if it is gone."""
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return 0.0
    return times.user + times.system


def machine_cpu_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, all cores summed; waiting
    for I/O counts as idle, guest time is already inside user time."""
    times = psutil.cpu_times()
    idle = times.idle + getattr(times, "iowait", 0.0)
    total = sum(getattr(times, name, 0.0) for name in _MACHINE_TIMES)
    return total - idle, total


_MACHINE_TIMES = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


@dataclass
class CpuWindow:
    """CPU used by named processes and by the whole machine between `start()` and `stop()`."""

    pids: dict[str, int]
    started: float = 0.0
    wall_s: float = 0.0
    loadavg_start: tuple[float, float, float] = (0.0, 0.0, 0.0)
    loadavg_end: tuple[float, float, float] = (0.0, 0.0, 0.0)
    _cpu0: dict[str, float] = field(default_factory=dict)
    _machine0: tuple[float, float] = (0.0, 0.0)
    cores: dict[str, float] = field(default_factory=dict)
    machine_busy_cores: float = 0.0

    def start(self) -> None:
        self.loadavg_start = os.getloadavg()
        self._cpu0 = {name: process_cpu_seconds(pid) for name, pid in self.pids.items()}
        self._machine0 = machine_cpu_seconds()
        self.started = time.monotonic()

    def stop(self) -> None:
        self.wall_s = time.monotonic() - self.started
        busy, _ = machine_cpu_seconds()
        self.cores = {
            name: (process_cpu_seconds(pid) - self._cpu0[name]) / self.wall_s
            for name, pid in self.pids.items()
        }
        self.machine_busy_cores = (busy - self._machine0[0]) / self.wall_s
        self.loadavg_end = os.getloadavg()

    def report(self) -> dict[str, Any]:
        """Cores each process used (1.0 = one core busy all window), ours in total, the whole
        machine's, and the load average at both ends: what a reader needs to judge noise."""
        ours = sum(self.cores.values())
        return {
            "window_s": round(self.wall_s, 2),
            "cores": {name: round(value, 3) for name, value in self.cores.items()},
            "our_cores": round(ours, 3),
            "machine_busy_cores": round(self.machine_busy_cores, 3),
            "other_cores": round(max(self.machine_busy_cores - ours, 0.0), 3),
            "loadavg_start": [round(x, 2) for x in self.loadavg_start],
            "loadavg_end": [round(x, 2) for x in self.loadavg_end],
        }


def link_bytes(window: Samples, updates: float, subscribers: bool) -> dict[str, Any]:
    """Bytes through the learner's link per applied update, from its own counters over a
    window (a3c_learner_bytes_{received,sent}_total): `in` (gradients, hellos, heartbeats,
    refused frames), `out` (acks with their weights, welcomes, heartbeat answers), `broadcast`
    (the rate-limited weights for subscribers, counted once however many there are, and in
    `total` only when something subscribes), and per training frame: the total over the
    frames behind each update (num_envs x n_steps x frames per agent step for a worker)."""
    if not updates:
        return {key: None for key in ("in", "out", "broadcast", "total", "frames", "kb_per_frame")}
    received = window.total("a3c_learner_bytes_received_total") / updates
    broadcast = window.get("a3c_learner_bytes_sent_total", type="weights") / updates
    sent = window.total("a3c_learner_bytes_sent_total") / updates - broadcast
    total = received + sent + (broadcast if subscribers else 0.0)
    frames = window.get("a3c_learner_env_frames_total") / updates
    return {
        "in": round(received),
        "out": round(sent),
        "broadcast": round(broadcast),
        "total": round(total),
        "frames": round(frames, 1),
        "kb_per_frame": round(total / frames / 1000, 3) if frames else None,
    }


def machine_info() -> dict[str, Any]:
    import torch

    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "processor": _cpu_model(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def _cpu_model() -> str:
    """psutil has no CPU model name: /proc/cpuinfo's, else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def git_state() -> dict[str, Any]:
    def git(*args: str) -> str:
        try:
            out = subprocess.run(
                ["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10, check=True
            )
            return out.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    # Uncommitted changes to the code under test make a figure hard to reproduce: say so.
    dirty = git("status", "--porcelain", "--", "common", "services", "bench")
    return {"commit": git("rev-parse", "HEAD"), "code_dirty": bool(dirty)}


def mean(values: Iterable[float]) -> float:
    items = list(values)
    return sum(items) / len(items) if items else 0.0
