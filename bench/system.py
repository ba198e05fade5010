"""The distributed system as users run it: `a3c run`'s own wiring (services.local.launcher),
learner + W workers + evaluator as local processes on loopback, default configuration.

After start-up and a warm-up, it reads over one window: env frames/s from the learner's
`a3c_learner_env_frames_total` (frames behind applied gradients), staleness quantiles from its
histogram, each worker's time split from `a3c_worker_phase_seconds_total{phase=...}`, the bytes
in and out of the learner per update and per frame from its byte counters, and the CPU every
process used (the evaluator's share included).

    python -m bench.system --workers 2 --warmup 20 --seconds 60
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.measure import CpuWindow, link_bytes
from common.config import Config, load_config
from common.envs import frames_per_step
from common.samples import Samples
from services.local.launcher import LocalCluster

START_TIMEOUT_S = 180.0
WORKER_PHASES = ("env", "forward", "backward", "wire")
SYSTEM_FIELDS = (
    "env",
    "workers",
    "num_envs",
    "n_steps",
    "grad_dtype",
    "weights_dtype",
    "sync_interval",
    "max_inflight",
    "max_staleness",
    "lr",
    "publish_interval",
    "eval_interval",
    "checkpoint_interval",
)


def run_system(
    config: Config, seconds: float = 60.0, warmup: float = 20.0, evaluator: bool = True
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="a3c-bench-system-") as tmp:
        run = config.model_copy(update={"run_dir": Path(tmp), "run_evaluator": evaluator})
        with LocalCluster(run) as cluster:
            _wait_for_updates(cluster)
            time.sleep(warmup)
            return _measure(cluster, config, seconds)


def _wait_for_updates(cluster: LocalCluster) -> None:
    """Warm-up starts once every worker has had a gradient applied (start-up excluded)."""
    workers = cluster.processes("worker")
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        cluster.check_alive()
        acked = [w.metrics().get("a3c_worker_gradients_acked_total") for w in workers]
        if all(n > 0 for n in acked):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"workers not training within {START_TIMEOUT_S:.0f}s: {acked}")
        time.sleep(0.5)


def _scrape(cluster: LocalCluster) -> dict[str, list[Samples]]:
    return {role: [c.metrics() for c in cluster.processes(role)] for role in cluster.roles}


def _measure(cluster: LocalCluster, config: Config, seconds: float) -> dict[str, Any]:
    cpu = CpuWindow({c.name: c.pid for c in cluster.children})
    before = _scrape(cluster)
    cpu.start()
    time.sleep(seconds)
    after = _scrape(cluster)
    cpu.stop()
    cluster.check_alive()
    if not all([*after["learner"], *after["worker"]]):
        raise RuntimeError("a service stopped answering /metrics during the window")
    window = {
        role: [a.delta(b) for a, b in zip(pages, before[role], strict=True)]
        for role, pages in after.items()
    }
    wall = cpu.wall_s
    learner = window["learner"][0]
    frames = learner.get("a3c_learner_env_frames_total")
    updates = learner.get("a3c_learner_updates_total")
    played = sum(w.get("a3c_worker_env_frames_total") for w in window["worker"])
    staleness = learner.buckets("a3c_learner_gradient_staleness")
    split = _worker_split(window["worker"], wall, config)
    evaluator = "evaluator" in cluster.roles
    evaluator_now = after["evaluator"][0] if evaluator else Samples()
    cores = cpu.report()
    cluster_cores = cores["our_cores"]
    return {
        "frames_per_s": round(frames / wall, 1),
        "frames_per_s_played": round(played / wall, 1),
        "updates_per_s": round(updates / wall, 2),
        "frames_per_cpu_s": round(frames / wall / cluster_cores, 1) if cluster_cores else None,
        "staleness_p50": learner.quantile("a3c_learner_gradient_staleness", 0.5),
        "staleness_p99": learner.quantile("a3c_learner_gradient_staleness", 0.99),
        "staleness_buckets": [[b, round(n)] for b, n in staleness],
        "rejected": round(learner.total("a3c_learner_gradients_rejected_total")),
        # What the learner's link carried per update and per training frame, broadcasts to
        # the evaluator included when it runs.
        "bytes_per_update": link_bytes(window["learner"][0], updates, subscribers=evaluator),
        "worker_time_split": split,
        "evaluator_cores": cores["cores"].get("evaluator"),
        # Its CPU depends on how long the current policy's games last: say how many it played.
        "evaluator_episodes": (
            window["evaluator"][0].get("a3c_evaluator_episodes_total") if evaluator else 0.0
        ),
        "evaluator_last_episode_frames": (
            evaluator_now.get("a3c_evaluator_episode_frames")
            if evaluator_now.has("a3c_evaluator_episode_frames")
            else None
        ),
        "configuration": {
            "what": "a3c run wiring: learner + workers"
            + (" + evaluator" if evaluator else " (no evaluator)")
            + ", processes on loopback",
            **{name: getattr(config, name) for name in SYSTEM_FIELDS},
            "evaluator": evaluator,
            "frames_per_agent_step": frames_per_step(config.env),
            "warmup_note": "window starts after every worker had a gradient applied + warm-up",
        },
        "cpu": cores,
    }


def _worker_split(window: list[Samples], wall: float, config: Config) -> dict[str, Any]:
    """Where the workers' wall time went, as shares of the window and as ms per agent step.
    `wire` is gradient encoding + send + waiting for the ack + loading the weights it carries;
    `other` is what the phases do not cover (metrics, loop overhead)."""
    seconds = {phase: 0.0 for phase in WORKER_PHASES}
    steps = 0.0
    for worker in window:
        for phase in WORKER_PHASES:
            seconds[phase] += worker.get("a3c_worker_phase_seconds_total", phase=phase)
        steps += worker.get("a3c_worker_env_frames_total") / frames_per_step(config.env)
    total = wall * len(window)
    seconds["other"] = max(total - sum(seconds.values()), 0.0)
    return {
        "share": {phase: round(s / total, 3) for phase, s in seconds.items()},
        "ms_per_agent_step": {
            phase: round(1000 * s / steps, 3) if steps else None for phase, s in seconds.items()
        },
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--env", default="ALE/Breakout-v5")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--num-envs", type=int, help="default: the config's default")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--warmup", type=float, default=20.0)
    parser.add_argument("--no-evaluator", action="store_true")
    args = parser.parse_args(argv)
    config = load_config(
        {"env": args.env, "workers": args.workers}
        | ({"num_envs": args.num_envs} if args.num_envs else {})
    )
    result = run_system(config, args.seconds, args.warmup, not args.no_evaluator)
    json.dump(result, sys.stdout, indent=2, default=str)
    print()


if __name__ == "__main__":
    main()
