"""`make bench-learning`: how much the system learns per frame, the evidence for every default
that affects learning.

For each training seed, one after another (each has the machine to itself), it trains from
scratch with `a3c run` (the default configuration plus any `--set NAME=VALUE`) and keeps the
model at each frame mark. Training continues from the learner's checkpoint between marks, so a
benchmark that was stopped, or that is asked for a later mark, picks up where it left off.
Afterwards every mark's model plays `--episodes` full games under the evaluation protocol, on
evaluation seeds that no training seed can produce (common.seeding), two games at a time.

It writes `--out` (default bench/learning.json): the configuration, algorithm version, commit,
frames/s, and a `marks` list, each `{"frames", "mean_score", "ci95", "per_seed": [{"seed",
"mean_score", "scores", "wall_s", "frames"}]}`, plus a markdown table beside it.
`mean_score` is the mean over seeds of each seed's mean; `ci95` is a stratified bootstrap over
the games of each seed (evaluation noise; with two seeds the spread between seeds is shown,
not estimated: see `per_seed`).

    python -m bench.learning                                  Breakout, seeds 1,2, 10M frames
    python -m bench.learning --seeds 1 --frames 5000000
    python -m bench.learning --name lr1e-4 --set lr=1e-4      a variant, to bench/learning/
    python -m bench.learning --quick                          CartPole + Acrobot, several seeds
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from common.a3c import ALGORITHM_VERSION
from common.checkpoint import MODEL_KEYS, export_model, load_checkpoint, load_newest
from common.config import Config, load_config
from common.errors import A3CError, UsageError

REPO = Path(__file__).resolve().parent.parent
DEFAULT_MARKS = (2_500_000, 5_000_000, 10_000_000)
EVAL_SEED = 100
"""Base of the evaluation seeds (common.seeding.evaluation_seed): the same games for every
variant, none of them a training game."""
QUICK: dict[str, tuple[int, tuple[int, ...]]] = {
    "CartPole-v1": (500_000, (1, 2)),
    "Acrobot-v1": (800_000, (7, 8)),
}
"""Quick mode: env -> (frames, training seeds)."""


class BenchmarkStopped(RuntimeError):
    """Training was interrupted (Ctrl-C, SIGTERM): what was trained is kept for next time."""


def parse_overrides(pairs: list[str]) -> dict[str, str]:
    overrides = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise UsageError(f"--set expects NAME=VALUE, got {pair!r}")
        overrides[name.replace("-", "_")] = value
    return overrides


def marks_for(frames: int, marks: list[int] | None) -> list[int]:
    return sorted({m for m in (marks or DEFAULT_MARKS) if m < frames} | {frames})


def commit() -> str:
    try:
        return subprocess.run(
            ["git", "describe", "--always", "--dirty"], cwd=REPO, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        return "unknown"


def train_to_marks(
    config_values: dict[str, Any], seed: int, marks: list[int], run_dir: Path
) -> list[dict[str, Any]]:
    """Train `seed` up to each mark in turn and export each mark's model; returns one record
    per mark (model path, frames, wall time).

    Training resumes from the run's learner checkpoint (weights and Adam). Where that is gone
    (a fresh clone keeps only the exported marks, 1.2 MB each, not the 7 MB checkpoints), it
    warm-starts from the newest exported mark: same weights, version and frames, fresh Adam
    statistics (they settle within a few hundred updates)."""
    from services.local.launcher import LocalCluster

    records = []
    marks_dir = run_dir / "marks"
    marks_dir.mkdir(parents=True, exist_ok=True)
    for mark in marks:
        model_path = marks_dir / f"frames-{mark}.pt"
        meta_path = marks_dir / f"frames-{mark}.json"
        if model_path.exists() and meta_path.exists():
            record = json.loads(meta_path.read_text())
            records.append({**record, "model": str(model_path)})
            continue
        state, _ = load_newest(run_dir / "checkpoints")
        warm_start = None
        if state is None and records:
            warm_start = Path(records[-1]["model"])
            state = load_checkpoint(warm_start, MODEL_KEYS)
        done = int(state["frames"]) if state else 0
        if done < mark:
            config = load_config(
                {
                    **config_values,
                    "seed": seed,
                    "run_dir": run_dir,
                    "max_frames": mark - done,
                    "init_from": warm_start,
                }
            )
            summary = LocalCluster(config).run()
            _remember_wall(run_dir, _wall(run_dir) + summary["wall_s"])
            if summary["stopped_by"] != "max_frames":
                raise BenchmarkStopped(f"{run_dir}: training stopped by {summary['stopped_by']}")
            state, _ = load_newest(run_dir / "checkpoints")
            assert state is not None, f"{run_dir}: training left no checkpoint"
        assert state is not None, f"{run_dir}: nothing to export"
        source = Path(state["path"]) if "path" in state else warm_start
        assert source is not None
        exported = export_model(source, model_path)
        record = {
            "mark": mark,
            "frames": int(exported["frames"]),
            "model_version": int(exported["model_version"]),
            "model": model_path.name,
            "train_wall_s": round(_wall(run_dir), 1),
        }
        meta_path.write_text(json.dumps(record, indent=2) + "\n")
        records.append({**record, "model": str(model_path)})
    return records


def _wall_file(run_dir: Path) -> Path:
    return run_dir / "bench-wall.json"


def _remember_wall(run_dir: Path, wall_s: float) -> None:
    _wall_file(run_dir).write_text(json.dumps({"train_wall_s": wall_s}) + "\n")


def _wall(run_dir: Path) -> float:
    try:
        return float(json.loads(_wall_file(run_dir).read_text())["train_wall_s"])
    except (OSError, ValueError, KeyError):
        return 0.0


def evaluate(model: Path, env: str, episodes: int, eval_seed: int, out: Path) -> dict[str, Any]:
    """`a3c evaluate` in its own process (one core), cached in `out`."""
    if out.exists():
        return json.loads(out.read_text())
    command = [
        sys.executable,
        "-m",
        "services.cli",
        "evaluate",
        "--checkpoint",
        str(model),
        "--env",
        env,
        "--episodes",
        str(episodes),
        "--seed",
        str(eval_seed),
        "--out",
        str(out),
        "--log-level",
        "WARNING",
    ]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"evaluation of {model} failed:\n{result.stderr[-2000:]}")
    return json.loads(out.read_text())


def bootstrap_ci(per_seed_scores: list[list[float]], rounds: int = 2000) -> list[float]:
    """95% interval of the mean of seed means, resampling games within each seed."""
    rng = random.Random(0)
    means = []
    for _ in range(rounds):
        seed_means = [
            statistics.fmean(rng.choices(scores, k=len(scores))) for scores in per_seed_scores
        ]
        means.append(statistics.fmean(seed_means))
    means.sort()
    return [round(means[int(0.025 * rounds)], 2), round(means[int(0.975 * rounds) - 1], 2)]


def summarise_marks(
    marks: list[int], per_seed: dict[int, list[dict[str, Any]]]
) -> list[dict[str, Any]]:
    rows = []
    for i, mark in enumerate(marks):
        entries = [
            {
                "seed": seed,
                "frames": records[i]["frames"],
                "mean_score": round(statistics.fmean(records[i]["scores"]), 2),
                "scores": records[i]["scores"],
                "wall_s": records[i]["train_wall_s"],
            }
            for seed, records in per_seed.items()
        ]
        scores = [entry["scores"] for entry in entries]
        rows.append(
            {
                "frames": mark,
                "mean_score": round(statistics.fmean(e["mean_score"] for e in entries), 2),
                "ci95": bootstrap_ci(scores),
                "per_seed": entries,
            }
        )
    return rows


def run_benchmark(
    env: str,
    seeds: list[int],
    frames: int,
    marks: list[int] | None,
    episodes: int,
    overrides: dict[str, str],
    runs_dir: Path,
    name: str,
    workers: int,
) -> dict[str, Any]:
    chosen = marks_for(frames, marks)
    config_values: dict[str, Any] = {
        "env": env,
        "workers": workers,
        # The marks are scored afterwards: training has the machine to itself.
        "run_evaluator": False,
        "progress_interval": 30.0,
        **overrides,
    }
    reference = load_config(config_values)
    per_seed: dict[int, list[dict[str, Any]]] = {}
    started = time.monotonic()
    for seed in seeds:
        run_dir = runs_dir / name / f"seed-{seed}"
        print(f"bench-learning: {name} seed {seed}: marks {chosen} in {run_dir}", flush=True)
        per_seed[seed] = train_to_marks(config_values, seed, chosen, run_dir)
    train_s = time.monotonic() - started
    jobs = [(seed, record) for seed, records in per_seed.items() for record in records]
    with ThreadPoolExecutor(max_workers=max(1, min(2, os.cpu_count() or 1))) as pool:
        reports = list(
            pool.map(
                lambda job: evaluate(
                    Path(job[1]["model"]),
                    env,
                    episodes,
                    EVAL_SEED,
                    Path(job[1]["model"]).with_suffix(f".eval{episodes}.json"),
                ),
                jobs,
            )
        )
    for (_, record), report in zip(jobs, reports, strict=True):
        record["scores"] = report["scores"]
    total_frames = sum(records[-1]["frames"] for records in per_seed.values())
    total_wall = sum(records[-1]["train_wall_s"] for records in per_seed.values())
    return {
        "name": name,
        "env": env,
        "algorithm_version": ALGORITHM_VERSION,
        "commit": commit(),
        "seeds": seeds,
        "episodes_per_mark": episodes,
        "eval_seed": EVAL_SEED,
        "eval_protocol": dict(reports[0].get("protocol", {})) if reports else {},
        "overrides": overrides,
        "config": _learning_config(reference),
        "frames_per_s": round(total_frames / total_wall, 1) if total_wall else None,
        "bench_wall_s": round(time.monotonic() - started, 1),
        "train_wall_s_this_call": round(train_s, 1),
        "marks": summarise_marks(chosen, per_seed),
    }


def _learning_config(config: Config) -> dict[str, Any]:
    data = config.to_public_dict()
    for key in ("run_dir", "max_frames", "duration", "seed", "checkpoint", "out", "learner"):
        data.pop(key, None)
    return data


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"# Learning benchmark: {result['name']} on {result['env']}",
        "",
        f"Algorithm version {result['algorithm_version']}, commit {result['commit']}, "
        f"overrides {result['overrides'] or 'none (defaults)'}, "
        f"{result['frames_per_s']} frames/s. Each mark: {result['episodes_per_mark']} full games "
        f"per seed, evaluation seed base {result['eval_seed']}.",
        "",
        "| frames | mean score | 95% interval | per seed |",
        "|---:|---:|---|---|",
    ]
    for mark in result["marks"]:
        seeds = ", ".join(f"seed {e['seed']}: {e['mean_score']:.1f}" for e in mark["per_seed"])
        lo, hi = mark["ci95"]
        lines.append(
            f"| {mark['frames']:,} | {mark['mean_score']:.1f} | {lo:.1f}-{hi:.1f} | {seeds} |"
        )
    return "\n".join(lines) + "\n"


def write(result: dict[str, Any], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--env", default=Config.model_fields["env"].default)
    parser.add_argument("--seeds", default="1,2", help="training seeds, comma-separated")
    parser.add_argument("--frames", type=int, default=DEFAULT_MARKS[-1], help="last mark")
    parser.add_argument("--marks", default=None, help="frame marks, comma-separated")
    parser.add_argument("--episodes", type=int, default=30, help="games per mark and seed")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="K=V")
    parser.add_argument("--name", default="default")
    parser.add_argument(
        "--runs-dir",
        type=Path,
        default=REPO / "bench" / "learning" / "runs",
        help="run directories; their exported marks are kept in the repo, checkpoints not",
    )
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--quick", action="store_true", help="CartPole-v1 and Acrobot-v1")
    args = parser.parse_args(argv)
    try:
        _main(args)
    except BenchmarkStopped as stopped:
        print(f"bench-learning: {stopped}; run it again to continue", file=sys.stderr)
        return 130
    except A3CError as error:
        print(f"bench-learning: {error}", file=sys.stderr)
        return error.exit_code
    return 0


def _main(args: argparse.Namespace) -> None:
    overrides = parse_overrides(args.overrides)
    marks = [int(m) for m in args.marks.split(",")] if args.marks else None
    if args.quick:
        for env, (frames, quick_seeds) in QUICK.items():
            result = run_benchmark(
                env,
                list(quick_seeds),
                frames,
                [frames // 2, frames],
                10,
                overrides,
                args.runs_dir,
                f"{args.name}-{env}",
                args.workers,
            )
            write(result, args.out or REPO / "bench" / "learning" / f"quick-{args.name}-{env}.json")
        return
    seeds = [int(s) for s in args.seeds.split(",")]
    result = run_benchmark(
        args.env,
        seeds,
        args.frames,
        marks,
        args.episodes,
        overrides,
        args.runs_dir,
        args.name,
        args.workers,
    )
    default_out = (
        REPO
        / "bench"
        / ("learning.json" if args.name == "default" else f"learning/{args.name}.json")
    )
    write(result, args.out or default_out)


if __name__ == "__main__":
    sys.exit(main())
