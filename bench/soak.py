"""`make soak`: run the local cluster for a long while (default 10 minutes) under a steady
flood of malformed messages, and record every process's resident memory over time.

Memory must stay flat: a learner that leaks per message, a worker that queues gradients, or an
evaluator that keeps old weights would show as a slope. Writes bench/soak.json with the series
and, per process, RSS after warm-up, at the end, its maximum and the slope in MiB per minute;
for the evaluator also the bytes its page's games held at most (a3c_evaluator_game_bytes)
beside their stated bound, and its RSS growth after warm-up, which must stay within it.
The cluster is `a3c run`'s own (services.local.launcher), without its restarts: a process that
dies under the flood is a finding, listed under `died`, not something to paper over.

    python -m bench.soak                       # 10 minutes, Breakout, 2 workers
    python -m bench.soak --seconds 120 --env CartPole-v1
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import zmq

from common.config import load_config
from services.local.launcher import LocalCluster
from services.local.process import Child

REPO = Path(__file__).resolve().parent.parent


def rss_mib(child: Child) -> float | None:
    """Resident memory of a running child; None once it has exited."""
    if not child.alive():
        return None
    try:
        return psutil.Process(child.pid).memory_info().rss / 2**20
    except psutil.Error:
        return None


def flood(address: str, stop: threading.Event, per_second: float, sent: list[int]) -> None:
    """Malformed traffic from a DEALER: random bytes, truncated headers, huge frame counts."""
    sock: zmq.Socket = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, 100)
    sock.connect(f"tcp://{address}")
    rng = random.Random(0)
    while not stop.is_set():
        kind = rng.randrange(3)
        if kind == 0:
            frames = [rng.randbytes(rng.randrange(1, 512))]
        elif kind == 1:
            frames = [b"\x85\xa5proto\x92\x01\x00", b"", rng.randbytes(64)]
        else:
            frames = [rng.randbytes(32) for _ in range(40)]
        try:
            sock.send_multipart(frames, flags=zmq.NOBLOCK)
            sent[0] += 1
        except zmq.Again:
            pass
        while sock.poll(0):
            sock.recv_multipart()
        stop.wait(1.0 / per_second)
    sock.close()


def slope_per_minute(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MiB) points, in MiB per minute."""
    if len(points) < 2 or len({t for t, _ in points}) < 2:
        return 0.0
    times, values = zip(*points, strict=True)
    return 60.0 * statistics.linear_regression(times, values).slope


def growth_percent(points: list[tuple[float, float]]) -> float:
    """Growth from the first to the last point of the least-squares line through (seconds,
    MiB) points, in percent of the line's first value: a trend, not two noisy samples."""
    if len(points) < 2:
        return 0.0
    times, values = [t for t, _ in points], [v for _, v in points]
    fit = statistics.linear_regression(times, values)
    start = fit.intercept + fit.slope * times[0]
    return 100.0 * fit.slope * (times[-1] - times[0]) / start


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--warmup", type=float, default=60.0)
    parser.add_argument("--interval", type=float, default=10.0)
    parser.add_argument("--env", default="ALE/Breakout-v5")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--flood-per-second", type=float, default=100.0)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "soak.json")
    args = parser.parse_args(argv)

    run_dir = Path(tempfile.mkdtemp(prefix="a3c-soak-"))
    config = load_config({"env": args.env, "workers": args.workers, "run_dir": run_dir})
    stop = threading.Event()
    sent = [0]
    series: dict[str, list[tuple[float, float]]] = {}
    died: dict[str, int | None] = {}
    game_bytes = {"max": 0.0, "bound": 0.0}
    with LocalCluster(config) as cluster:
        started = time.monotonic()
        flooder = threading.Thread(
            target=flood,
            args=(cluster.learner_address, stop, args.flood_per_second, sent),
            daemon=True,
        )
        flooder.start()
        try:
            while time.monotonic() - started < args.seconds:
                now = time.monotonic() - started
                for child in cluster.children:
                    value = rss_mib(child)
                    if value is not None:
                        series.setdefault(child.name, []).append((round(now, 1), round(value, 2)))
                    elif child.name not in died and child.process is not None:
                        died[child.name] = child.process.poll()
                if cluster.evaluator is not None:
                    page = cluster.evaluator.metrics()
                    game_bytes["max"] = max(game_bytes["max"], page.get("a3c_evaluator_game_bytes"))
                    bound = page.get("a3c_evaluator_game_bytes_bound")
                    game_bytes["bound"] = max(game_bytes["bound"], bound)
                print(
                    f"[{now:5.0f}s] "
                    + "  ".join(
                        f"{name} {points[-1][1]:.0f}MiB" for name, points in sorted(series.items())
                    )
                    + (f"  died: {sorted(died)}" if died else ""),
                    flush=True,
                )
                time.sleep(args.interval)
            learner = cluster.metrics("learner")
        finally:
            stop.set()
            flooder.join(5)
    summary = {}
    for name, points in sorted(series.items()):
        steady = [(t, v) for t, v in points if t >= args.warmup] or points
        summary[name] = {
            "rss_after_warmup_mib": steady[0][1],
            "rss_end_mib": points[-1][1],
            "rss_max_mib": max(v for _, v in points),
            "slope_mib_per_min": round(slope_per_minute(steady), 3),
            "growth_pct_after_warmup": round(growth_percent(steady), 2),
        }
    result = {
        "config": {
            "env": args.env,
            "workers": args.workers,
            "seconds": args.seconds,
            "warmup_s": args.warmup,
            "flood_per_second": args.flood_per_second,
        },
        "bad_messages_sent": sent[0],
        "frames": int(learner.get("a3c_learner_env_frames_total")),
        "updates": int(learner.get("a3c_learner_updates_total")),
        "died": died,
        "processes": summary,
        "evaluator_games": {
            "game_bytes_max_mib": round(game_bytes["max"] / 2**20, 2),
            "game_bytes_bound_mib": round(game_bytes["bound"] / 2**20, 2),
            "rss_growth_after_warmup_mib": (
                round(
                    summary["evaluator"]["rss_max_mib"]
                    - summary["evaluator"]["rss_after_warmup_mib"],
                    2,
                )
                if "evaluator" in summary
                else None
            ),
        },
        "series": series,
        "run_dir": str(run_dir),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "series"}, indent=2))
    return result


if __name__ == "__main__":
    main()
