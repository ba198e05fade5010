"""TensorBoard scalars, optional (the `tensorboard` extra): the names RL users look for, and
the learner's scalars as two scrapes of its /metrics give them.

The learner reads its own metrics registry every LEARNER_INTERVAL_S (`LearnerScalars`), so
Prometheus and TensorBoard show the same numbers, whether it runs under `a3c run`, compose or
Kubernetes. The evaluator writes its scores as each game ends. Each writer has its own
directory, DIR/<run>/<role>, so `tensorboard --logdir DIR` lays runs side by side. Every
scalar's step is the training frames, the x axis RL results are compared on.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from common.errors import UsageError
from common.metrics import LOSS_STATS
from common.samples import Samples

LEARNER_INTERVAL_S = 10.0
"""Seconds between two of the learner's TensorBoard points (rates are over this window)."""
FLUSH_SECONDS = 10
"""How stale an open TensorBoard may be: the writer flushes at least this often."""

LEARNER_TAGS = (
    "losses/policy_loss",
    "losses/value_loss",
    "losses/entropy",
    "charts/grad_norm",
    "charts/staleness",
    "charts/frames_per_s",
    "charts/updates_per_s",
    "charts/model_version",
    "charts/workers_active",
    "charts/gradients_rejected_per_s",
    "charts/train_episode_return",
)
EVALUATOR_TAGS = ("eval/score", "eval/mean_score", "eval/best_score", "eval/game_length")


class ScalarWriter:
    """A TensorBoard event file writer that takes a dict of scalars per step and skips what
    is not known yet (None) or not finite."""

    def __init__(self, directory: Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise UsageError(
                "--tensorboard-dir needs the tensorboard package: "
                "pip install 'a3c-breakout[tensorboard]'"
            ) from None
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self._writer: Any = SummaryWriter(log_dir=str(directory), flush_secs=FLUSH_SECONDS)

    def add(
        self, values: Mapping[str, float | None], step: int, wall_time: float | None = None
    ) -> None:
        for tag, value in values.items():
            if value is not None and math.isfinite(value):
                self._writer.add_scalar(tag, value, global_step=step, walltime=wall_time)

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


def open_writer(directory: Path | None, role: str) -> ScalarWriter | None:
    """The writer for `role` under `directory`, or None when TensorBoard is off."""
    return None if directory is None else ScalarWriter(directory / role)


def learner_scalars(now: Samples, before: Samples, seconds: float) -> dict[str, float | None]:
    """The learner's scalars from two scrapes `seconds` apart: gauges as read now, rates and
    the mean staleness over the window between them (None where nothing happened yet)."""
    window = now.delta(before)
    per_s = 1.0 / seconds if seconds > 0 else 0.0

    def gauge(name: str, **labels: str) -> float | None:
        return now.get(name, **labels) if now.has(name, **labels) else None

    names = {"policy_loss": "losses/policy_loss", "value_loss": "losses/value_loss"}
    names |= {"entropy": "losses/entropy", "grad_norm": "charts/grad_norm"}
    assert set(names) == set(LOSS_STATS)
    values = {tag: gauge("a3c_learner_loss", term=term) for term, tag in names.items()}
    return {
        **values,
        "charts/staleness": window.mean("a3c_learner_gradient_staleness"),
        "charts/frames_per_s": window.get("a3c_learner_env_frames_total") * per_s,
        "charts/updates_per_s": window.get("a3c_learner_updates_total") * per_s,
        "charts/model_version": gauge("a3c_learner_model_version"),
        "charts/workers_active": gauge("a3c_learner_workers_active"),
        "charts/gradients_rejected_per_s": (
            window.total("a3c_learner_gradients_rejected_total") * per_s
        ),
        "charts/train_episode_return": gauge("a3c_learner_train_episode_return"),
    }


class LearnerScalars:
    """The learner's scalars every `interval` seconds, from two readings of its own metrics
    (`read`). The first reading only sets the baseline, so a resumed run's totals are never
    written as one window's rate."""

    def __init__(self, writer: ScalarWriter, read: Callable[[], Samples], interval: float) -> None:
        self.writer, self.read, self.interval = writer, read, interval
        self._last: tuple[float, Samples] | None = None

    def tick(self, now: float) -> None:
        if self._last is not None and now - self._last[0] < self.interval:
            return
        samples = self.read()
        if self._last is not None:
            then, before = self._last
            values = learner_scalars(samples, before, now - then)
            self.writer.add(values, step=int(samples.get("a3c_learner_env_frames_total")))
        self._last = (now, samples)

    def close(self) -> None:
        self.writer.close()


def evaluator_scalars(
    score: float, mean: float, best: float, length: int
) -> dict[str, float | None]:
    return {
        "eval/score": score,
        "eval/mean_score": mean,
        "eval/best_score": best,
        "eval/game_length": float(length),
    }
