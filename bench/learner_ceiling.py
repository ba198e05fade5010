"""The learner's ceiling: a real learner process fed by synthetic gradient senders, no envs.

For each sender count K, K synthetic senders (bench/senders.py: a worker's protocol and flow,
no env, no model) push gradients as fast as acks return. They are multiplexed over a few sender
processes: 64 processes importing torch on a small machine would measure the scheduler, not the
learner. Updates/s come from the learner's own /metrics, bytes per update from the messages.

    python -m bench.learner_ceiling --senders 1,2,4,8,16,32,64 --seconds 5
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bench.measure import CpuWindow
from bench.senders import SenderPool, Target
from common.config import Config, load_config
from common.envs import env_spaces, frames_per_step
from common.model import ActorCritic, parameter_count
from common.weights import layout_digest
from services.local.launcher import LocalCluster

SENDER_COUNTS = (1, 2, 4, 8, 16, 32, 64)
START_TIMEOUT_S = 120.0


LEARNER_SETTINGS = {"checkpoint_interval": 3600.0, "max_staleness": 1_000_000}
"""Besides the config's: no checkpoint inside a window, and no sender refused as stale."""


def start_learner(config: Config, workdir: Path) -> LocalCluster:
    """The launcher's learner alone, on free loopback ports, serving /metrics. Unsigned
    (the senders do not sign) and quiet: 64 "worker joined" lines per phase are not news."""
    settings = {
        **LEARNER_SETTINGS,
        "run_dir": workdir,
        "run_evaluator": False,
        "auth_key": None,
        "auth_key_file": None,
        "log_level": "WARNING",
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("A3C_")}
    cluster = LocalCluster(config.model_copy(update=settings), roles=("learner",), env=env)
    cluster.start()
    deadline = time.monotonic() + START_TIMEOUT_S
    while not cluster.metrics("learner").has("a3c_learner_updates_total"):
        try:
            cluster.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"learner not serving within {START_TIMEOUT_S:.0f}s")
        except RuntimeError:
            cluster.stop()
            raise
        time.sleep(0.2)
    return cluster


@dataclass(frozen=True)
class WireSetting:
    """What a sender puts on the wire: gradient dtype, and how often it asks for weights."""

    dtype: str
    sync_interval: int

    @property
    def name(self) -> str:
        return f"{self.dtype}, weights every {self.sync_interval} ack(s)"


def measure_phase(
    pool: SenderPool,
    cluster: LocalCluster,
    senders: int,
    wire: WireSetting,
    warmup: float,
    seconds: float,
) -> dict[str, Any]:
    active = pool.start_phase(senders, wire.dtype, wire.sync_interval)
    try:
        time.sleep(warmup)
        pids = {"learner": cluster.pid("learner")}
        pids.update({p.name: p.pid for i, p in enumerate(pool.procs) if i in active and p.pid})
        cpu = CpuWindow(pids)
        before = cluster.metrics("learner")
        cpu.start()
        time.sleep(seconds)
        after = cluster.metrics("learner")
        cpu.stop()
    finally:
        sent = pool.end_phase(active)
    learner = cluster.process("learner")
    if not after or not learner.alive():
        raise RuntimeError(f"learner stopped answering:\n{learner.log_tail()}")
    window = after.delta(before)
    updates = window.get("a3c_learner_updates_total")
    apply_ms = window.mean("a3c_learner_apply_seconds")
    sender_cores = sum(v for k, v in cpu.cores.items() if k != "learner")
    gradient_bytes = max(s["gradient_bytes"] for s in sent)
    acks = sum(s["acks"] + s["rejected"] for s in sent)
    ack_bytes = round(sum(s["ack_bytes_total"] for s in sent) / acks) if acks else 0
    return {
        "senders": senders,
        "sender_processes": len(active),
        "wire_dtype": wire.dtype,
        "sync_interval": wire.sync_interval,
        "updates_per_s": round(updates / cpu.wall_s, 1),
        "learner_cores": round(cpu.cores["learner"], 3),
        # What one learner core would do if the machine were its own (shared machines).
        "updates_per_learner_cpu_s": (
            round(updates / cpu.wall_s / cpu.cores["learner"], 1) if cpu.cores["learner"] else None
        ),
        "sender_cores": round(sender_cores, 3),
        "apply_ms_mean": round(1000 * apply_ms, 3) if apply_ms is not None else None,
        "staleness_p50": window.quantile("a3c_learner_gradient_staleness", 0.5),
        "staleness_p99": window.quantile("a3c_learner_gradient_staleness", 0.99),
        "rejected": sum(s["rejected"] for s in sent),
        "gradient_bytes": gradient_bytes,
        "ack_bytes": ack_bytes,
        "cpu": cpu.report(),
    }


def default_variants(config: Config) -> tuple[WireSetting, ...]:
    """Besides the default wire: the other gradient dtype with weights in every ack, and the
    default dtype with weights in every 4th ack (what `--sync-interval 4` buys)."""
    other = "float32" if config.grad_dtype != "float32" else "float16"
    variants = (WireSetting(other, 1), WireSetting(config.grad_dtype, 4))
    default = WireSetting(config.grad_dtype, config.sync_interval)
    return tuple(v for v in variants if v != default)


def run_ceiling(
    config: Config,
    sender_counts: tuple[int, ...] = SENDER_COUNTS,
    seconds: float = 5.0,
    warmup: float = 1.5,
    sender_processes: int = 2,
    variant_counts: tuple[int, ...] | None = None,
    variants: tuple[WireSetting, ...] | None = None,
    workdir: Path | None = None,
) -> dict[str, Any]:
    """Updates/s of one learner for each sender count with the configured wire (the sweep),
    then each variant wire at `variant_counts` (default: the smallest and largest count)."""
    torch.set_num_threads(1)
    obs_shape, n_actions = env_spaces(config.env)
    model = ActorCritic(obs_shape, n_actions)
    layout, n_params = layout_digest(model), parameter_count(model)
    frames = config.n_steps * config.num_envs * frames_per_step(config.env)
    default = WireSetting(config.grad_dtype, config.sync_interval)
    variants = default_variants(config) if variants is None else variants
    variant_counts = (
        variant_counts
        if variant_counts is not None
        else tuple(sorted({min(sender_counts), max(sender_counts)}))
    )
    with tempfile.TemporaryDirectory(prefix="a3c-bench-learner-") as tmp:
        workdir = workdir or Path(tmp)
        cluster = start_learner(config, workdir)
        pool: SenderPool | None = None
        try:
            target = Target("127.0.0.1", cluster.learner_port, layout, n_params, frames)
            pool = SenderPool(sender_processes, target)
            phases = []
            plan = [(k, default) for k in sender_counts]
            plan += [(k, wire) for wire in variants for k in variant_counts]
            for senders, wire in plan:
                phase = measure_phase(pool, cluster, senders, wire, warmup, seconds)
                phases.append(phase)
                print(
                    f"  learner ceiling: {senders:3d} senders, {wire.name}: "
                    f"{phase['updates_per_s']:7.1f} updates/s "
                    f"(learner {phase['learner_cores']:.2f} cores, "
                    f"senders {phase['sender_cores']:.2f})",
                    file=sys.stderr,
                    flush=True,
                )
        finally:
            if pool is not None:
                pool.close()
            cluster.stop()
    return _summarise(config, default, phases, n_params, seconds, sender_processes)


def _summarise(
    config: Config,
    default: WireSetting,
    phases: list[dict[str, Any]],
    n_params: int,
    seconds: float,
    procs: int,
) -> dict[str, Any]:
    by_wire: dict[WireSetting, list[dict[str, Any]]] = {}
    for phase in phases:
        by_wire.setdefault(WireSetting(phase["wire_dtype"], phase["sync_interval"]), []).append(
            phase
        )
    wires = []
    for wire, items in by_wire.items():
        wires.append({
            "wire_dtype": wire.dtype,
            "sync_interval": wire.sync_interval,
            "default": wire == default,
            "max_updates_per_s": max(p["updates_per_s"] for p in items),
            "max_updates_per_learner_cpu_s": max(
                p["updates_per_learner_cpu_s"] or 0.0 for p in items
            ),
            "bytes_per_update": {
                "gradient": items[0]["gradient_bytes"],
                "ack": items[0]["ack_bytes"],
                "total": items[0]["gradient_bytes"] + items[0]["ack_bytes"],
            },
        })  # fmt: skip
    best_phase = max(phases, key=lambda p: p["updates_per_s"])
    every_ack = {w["wire_dtype"]: w for w in wires if w["sync_interval"] == 1}
    return {
        "max_updates_per_s": best_phase["updates_per_s"],
        "max_at": {k: best_phase[k] for k in ("senders", "wire_dtype", "sync_interval")},
        "default_wire_max_updates_per_s": max(p["updates_per_s"] for p in by_wire[default]),
        "by_wire": wires,
        # Bytes per update (float32 and float16) where every ack carries the weights.
        "bytes_per_update": {dtype: w["bytes_per_update"] for dtype, w in every_ack.items()},
        "scaling": phases,
        "configuration": {
            "what": "one learner process fed by synthetic senders over loopback TCP, no envs",
            "env": config.env,
            "parameters": n_params,
            "max_inflight_per_sender": 1,
            "default_wire": {"wire_dtype": default.dtype, "sync_interval": default.sync_interval},
            "sender_processes": procs,
            "window_s": seconds,
            "learner_flags": "--max-staleness 1000000 --checkpoint-interval 3600, else the config",
            "ack": "carries the float32 weights when the sender asks (every sync_interval-th)",
        },
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--env", default="ALE/Breakout-v5")
    parser.add_argument("--senders", default=",".join(map(str, SENDER_COUNTS)))
    parser.add_argument(
        "--variant-senders",
        default=None,
        help="sender counts for the variant wires (default: min and max of --senders)",
    )
    parser.add_argument("--sender-processes", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.5)
    args = parser.parse_args(argv)
    counts = tuple(int(k) for k in args.senders.split(","))
    variant_counts = (
        tuple(int(k) for k in args.variant_senders.split(",")) if args.variant_senders else None
    )
    config = load_config({"env": args.env})
    result = run_ceiling(
        config, counts, args.seconds, args.warmup, args.sender_processes, variant_counts
    )
    json.dump(result, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
