"""`a3c plot RUN_DIR --out FILE.png`: the learning curve of a run from its eval.jsonl,
evaluation score against training frames and against wall time. Needs the `viz` extra."""

from __future__ import annotations

from pathlib import Path

from common.errors import UsageError
from services.local.launcher import read_eval

PAUSE_S = 300.0
"""A gap this long between two evaluation games means training was stopped (a run continued
later from its checkpoint): the wall-time axis leaves it out."""


def training_hours(times: list[float]) -> list[float]:
    """Wall time since the first game, in hours, with pauses between runs removed."""
    hours, elapsed = [], 0.0
    for i, now in enumerate(times):
        if i:
            gap = now - times[i - 1]
            elapsed += gap if gap < PAUSE_S else 0.0
        hours.append(elapsed / 3600)
    return hours


def plot_run(run_dir: Path, out: Path, window: int = 10) -> Path:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UsageError("needs matplotlib: pip install 'a3c-breakout[viz]'") from None
    records = read_eval(run_dir / "eval.jsonl")
    if not records:
        raise UsageError(f"no evaluation games in {run_dir / 'eval.jsonl'}")
    frames = [r["frames"] / 1e6 for r in records]
    hours = training_hours([r["time"] for r in records])
    scores = [r["score"] for r in records]
    means = [
        sum(scores[max(0, i - window + 1) : i + 1]) / len(scores[max(0, i - window + 1) : i + 1])
        for i in range(len(scores))
    ]
    figure, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for axis, x, label in (
        (axes[0], frames, "training frames (millions)"),
        (axes[1], hours, "training wall time (hours; pauses between runs left out)"),
    ):
        axis.scatter(x, scores, s=6, alpha=0.35, label="game score")
        axis.plot(x, means, color="C1", label=f"mean of last {window}")
        axis.set_xlabel(label)
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("raw game score (evaluation protocol)")
    axes[0].legend(loc="upper left")
    figure.suptitle(f"{records[0].get('env', run_dir.name)}: {len(records)} evaluation games")
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=100)
    plt.close(figure)
    return out
