"""The learner's ceiling: a real learner process fed by synthetic gradient senders, no envs.

For each sender count K, K synthetic senders (bench/senders.py: a worker's protocol and flow,
no env, no model) push gradients as fast as acks return. They are multiplexed over a few sender
processes: 64 processes importing torch on a small machine would measure the scheduler, not the
learner. Updates/s and the bytes in and out per update come from the learner's own /metrics
(a3c_learner_bytes_received_total, a3c_learner_bytes_sent_total); each weights dtype gets a
learner of its own, fed by the same sender processes.

    python -m bench.learner_ceiling --senders 1,2,4,8,16,32,64 --seconds 5
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import tempfile
import time
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bench.measure import CpuWindow, link_bytes
from bench.senders import SenderPool, Target
from common.config import Config, WeightsDtype, load_config
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
    """What crosses the learner's link: the senders' gradient dtype and how often they ask
    for weights, and the learner's weights dtype."""

    dtype: str
    sync_interval: int
    weights_dtype: str = "float32"

    @property
    def name(self) -> str:
        return (
            f"{self.dtype} gradients, {self.weights_dtype} weights every "
            f"{self.sync_interval} ack(s)"
        )

    @property
    def label(self) -> str:
        """The key of this wire in results.json's per-wire maps."""
        return f"{self.dtype} gradients, {self.weights_dtype} weights"


def measure_phase(
    pool: SenderPool,
    cluster: LocalCluster,
    senders: int,
    wire: WireSetting,
    warmup: float,
    seconds: float,
) -> dict[str, Any]:
    active = pool.start_phase(senders, wire.dtype, wire.sync_interval, cluster.learner_port)
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
    return {
        "senders": senders,
        "sender_processes": len(active),
        "wire_dtype": wire.dtype,
        "sync_interval": wire.sync_interval,
        "weights_dtype": wire.weights_dtype,
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
        # Nothing subscribes to this learner's broadcast: its bytes are not on any link.
        "bytes_per_update": link_bytes(window, updates, subscribers=False),
        "cpu": cpu.report(),
    }


WEIGHTS_DTYPES: tuple[str, ...] = typing.get_args(WeightsDtype)


def default_wire(config: Config) -> WireSetting:
    return WireSetting(config.grad_dtype, config.sync_interval, config.weights_dtype)


def default_variants(config: Config) -> tuple[WireSetting, ...]:
    """Besides the default wire: the other gradient dtype with weights in every ack, the
    default dtype with weights in every 4th ack (what `--sync-interval 4` buys), and each
    other weights dtype with weights in every ack (what `--weights-dtype` buys)."""
    other = "float32" if config.grad_dtype != "float32" else "float16"
    variants = [
        WireSetting(other, 1, config.weights_dtype),
        WireSetting(config.grad_dtype, 4, config.weights_dtype),
    ]
    variants += [
        WireSetting(config.grad_dtype, 1, dtype)
        for dtype in WEIGHTS_DTYPES
        if dtype != config.weights_dtype
    ]
    default = default_wire(config)
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
    default = default_wire(config)
    variants = default_variants(config) if variants is None else variants
    variant_counts = (
        variant_counts
        if variant_counts is not None
        else tuple(sorted({min(sender_counts), max(sender_counts)}))
    )
    plan = [(k, default) for k in sender_counts]
    plan += [(k, wire) for wire in variants for k in variant_counts]
    phases = []
    with tempfile.TemporaryDirectory(prefix="a3c-bench-learner-") as tmp:
        workdir = workdir or Path(tmp)
        pool: SenderPool | None = None
        try:
            # One learner per weights dtype (a learner setting), in the plan's order.
            groups = itertools.groupby(plan, key=lambda p: p[1].weights_dtype)
            for n, (weights_dtype, group) in enumerate(groups):
                learner_config = config.model_copy(update={"weights_dtype": weights_dtype})
                cluster = start_learner(learner_config, workdir / f"learner-{n}-{weights_dtype}")
                try:
                    if pool is None:
                        target = Target("127.0.0.1", cluster.learner_port, layout, n_params, frames)
                        pool = SenderPool(sender_processes, target)
                    for senders, wire in group:
                        phase = measure_phase(pool, cluster, senders, wire, warmup, seconds)
                        phases.append(phase)
                        _print_phase(senders, wire, phase)
                finally:
                    cluster.stop()
        finally:
            if pool is not None:
                pool.close()
    return _summarise(config, default, phases, n_params, seconds, sender_processes)


def _print_phase(senders: int, wire: WireSetting, phase: dict[str, Any]) -> None:
    sizes = phase["bytes_per_update"]
    print(
        f"  learner ceiling: {senders:3d} senders, {wire.name}: "
        f"{phase['updates_per_s']:7.1f} updates/s "
        f"(learner {phase['learner_cores']:.2f} cores, senders {phase['sender_cores']:.2f}; "
        f"{sizes['in']} B in + {sizes['out']} B out per update)",
        file=sys.stderr,
        flush=True,
    )


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
        wire = WireSetting(phase["wire_dtype"], phase["sync_interval"], phase["weights_dtype"])
        by_wire.setdefault(wire, []).append(phase)
    wires = []
    for wire, items in by_wire.items():
        wires.append({
            "wire_dtype": wire.dtype,
            "sync_interval": wire.sync_interval,
            "weights_dtype": wire.weights_dtype,
            "default": wire == default,
            "max_updates_per_s": max(p["updates_per_s"] for p in items),
            "max_updates_per_learner_cpu_s": max(
                p["updates_per_learner_cpu_s"] or 0.0 for p in items
            ),
            # The phase with the most updates measures the bytes per update most closely.
            "bytes_per_update": max(items, key=lambda p: p["updates_per_s"])["bytes_per_update"],
        })  # fmt: skip
    best_phase = max(phases, key=lambda p: p["updates_per_s"])
    every_ack = {
        WireSetting(w["wire_dtype"], 1, w["weights_dtype"]).label: w["bytes_per_update"]
        for w in wires
        if w["sync_interval"] == 1
    }
    return {
        "max_updates_per_s": best_phase["updates_per_s"],
        "max_at": {
            k: best_phase[k] for k in ("senders", "wire_dtype", "sync_interval", "weights_dtype")
        },
        "default_wire_max_updates_per_s": max(p["updates_per_s"] for p in by_wire[default]),
        "by_wire": wires,
        # Measured bytes in and out per update, by gradient and weights dtype, where every
        # ack carries the weights (the classic sync).
        "bytes_per_update": every_ack,
        "scaling": phases,
        "configuration": {
            "what": "one learner process fed by synthetic senders over loopback TCP, no envs",
            "env": config.env,
            "parameters": n_params,
            "max_inflight_per_sender": 1,
            "default_wire": {
                "wire_dtype": default.dtype,
                "sync_interval": default.sync_interval,
                "weights_dtype": default.weights_dtype,
            },
            "sender_processes": procs,
            "window_s": seconds,
            "learner_flags": "--max-staleness 1000000 --checkpoint-interval 3600, else the config",
            "ack": "carries the weights (in the learner's weights_dtype) when the sender asks "
            "(every sync_interval-th)",
            "bytes": "the learner's a3c_learner_bytes_{received,sent}_total over the window, "
            "per applied update",
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
