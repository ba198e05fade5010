"""`make soak`: run the local cluster for a long while (default 10 minutes) under a steady
flood of malformed messages, and record every process's resident memory over time.

Memory must stay flat: a learner that leaks per message, a worker that queues gradients, or an
evaluator that keeps old weights would show as a slope. Writes bench/soak.json with the series
and, per process, RSS after warm-up, at the end, its maximum and the slope in MiB per minute.

    python -m bench.soak                       # 10 minutes, Breakout, 2 workers
    python -m bench.soak --seconds 120 --env CartPole-v1
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import zmq

REPO = Path(__file__).resolve().parent.parent
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") / 1024


def rss_mib(pid: int) -> float | None:
    try:
        pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return pages * PAGE_KIB / 1024


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def role(pid: int) -> str:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    text = [part.decode(errors="replace") for part in argv]
    name = next((p.split(".")[-1] for p in text if p.startswith("services.")), "?")
    if "--worker-id" in text and text[text.index("--worker-id") + 1]:
        name = text[text.index("--worker-id") + 1]
    return name


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
    if len(points) < 2:
        return 0.0
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    cov = sum((t - mean_t) * (v - mean_v) for t, v in points)
    return 60.0 * cov / var if var else 0.0


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
    launcher = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "services.cli",
            "run",
            "--env",
            args.env,
            "--workers",
            str(args.workers),
            "--duration",
            str(args.seconds + 30),
            "--run-dir",
            str(run_dir),
            "--progress-interval",
            "30",
        ],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    stop = threading.Event()
    sent = [0]
    series: dict[str, list[tuple[float, float]]] = {}
    started = time.monotonic()
    try:
        deadline = time.monotonic() + 60
        while not (run_dir / "config.json").exists() and time.monotonic() < deadline:
            time.sleep(0.5)
        port = json.loads((run_dir / "config.json").read_text())["learner_port"]
        threading.Thread(
            target=flood,
            args=(f"127.0.0.1:{port}", stop, args.flood_per_second, sent),
            daemon=True,
        ).start()
        while time.monotonic() - started < args.seconds:
            now = time.monotonic() - started
            for pid in children(launcher.pid):
                value = rss_mib(pid)
                if value is not None:
                    series.setdefault(role(pid), []).append((round(now, 1), round(value, 2)))
            print(
                f"[{now:5.0f}s] "
                + "  ".join(
                    f"{name} {points[-1][1]:.0f}MiB" for name, points in sorted(series.items())
                ),
                flush=True,
            )
            time.sleep(args.interval)
    finally:
        stop.set()
        launcher.send_signal(signal.SIGINT)
        launcher.wait(60)
    summary = {}
    for name, points in sorted(series.items()):
        steady = [(t, v) for t, v in points if t >= args.warmup] or points
        summary[name] = {
            "rss_after_warmup_mib": steady[0][1],
            "rss_end_mib": points[-1][1],
            "rss_max_mib": max(v for _, v in points),
            "slope_mib_per_min": round(slope_per_minute(steady), 3),
        }
    run_summary = json.loads((run_dir / "summary.json").read_text())
    result = {
        "config": {
            "env": args.env,
            "workers": args.workers,
            "seconds": args.seconds,
            "warmup_s": args.warmup,
            "flood_per_second": args.flood_per_second,
        },
        "bad_messages_sent": sent[0],
        "frames": run_summary["frames"],
        "updates": run_summary["updates"],
        "processes": summary,
        "series": series,
        "run_dir": str(run_dir),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "series"}, indent=2))
    return result


if __name__ == "__main__":
    main()
