"""What every benchmark needs to read a machine honestly: labelled /metrics samples, histogram
quantiles, CPU seconds per process and for the whole machine, and the load around a window.

The machine is shared (other people run tests on it), so every figure carries the load average
and the machine's busy cores next to the cores our own processes used in the same window.
"""

from __future__ import annotations

import os
import platform
import subprocess
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
REPO = Path(__file__).resolve().parent.parent


def delta(after: Mapping[str, float], before: Mapping[str, float], key: str) -> float:
    return after.get(key, 0.0) - before.get(key, 0.0)


def histogram_buckets(samples: Mapping[str, float], name: str) -> list[tuple[float, float]]:
    """(upper bound, cumulative count) of histogram `name`, sorted by bound."""
    prefix = f'{name}_bucket{{le="'
    buckets = []
    for key, value in samples.items():
        if key.startswith(prefix):
            bound = key[len(prefix) : key.index('"', len(prefix))]
            buckets.append((float(bound), value))
    return sorted(buckets)


def bucket_quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    """The upper bound of the bucket holding quantile `q` (conservative: never understates).
    For integer observations and buckets 0, 1, 2, 4, ... this is exact up to 2."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    target = q * buckets[-1][1]
    for bound, count in buckets:
        if count >= target:
            return bound
    return buckets[-1][0]


def window_buckets(
    after: Mapping[str, float], before: Mapping[str, float], name: str
) -> list[tuple[float, float]]:
    """A histogram's buckets counting only observations made between two scrapes."""
    old = dict(histogram_buckets(before, name))
    return [(bound, count - old.get(bound, 0.0)) for bound, count in histogram_buckets(after, name)]


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process (all its threads); 0 if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def machine_cpu_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, all cores summed."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    total = sum(values[:8])
    return (total - idle) / CLOCK_TICKS, total / CLOCK_TICKS


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
