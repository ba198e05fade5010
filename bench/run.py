"""`make bench`: every benchmark in one run, back to back on the same machine, written to
bench/results.json and a short markdown table bench/results.md.

Order: Hogwild baseline, the system, Hogwild again (the baseline brackets the system, so a
change of load on a shared machine shows as a gap between the two baselines), then the learner
ceiling. A full run takes about five minutes; `--quick` about one.

    python -m bench.run                 # the full run
    python -m bench.run --quick         # short windows, fewer sender counts
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from bench.hogwild import run_hogwild
from bench.learner_ceiling import SENDER_COUNTS, run_ceiling
from bench.measure import REPO, git_state, machine_info, mean
from bench.report import render_markdown
from bench.results import Figure, Results, ScalingRow, batched_key
from bench.system import run_system
from common.config import load_config


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="short windows (about a minute)")
    parser.add_argument("--out-dir", type=Path, default=REPO / "bench")
    parser.add_argument("--env", default="ALE/Breakout-v5")
    parser.add_argument("--workers", type=int, default=2, help="system workers = Hogwild processes")
    parser.add_argument(
        "--num-envs", type=int, help="envs per system worker (default: the config's default)"
    )
    parser.add_argument(
        "--hogwild-num-envs", type=int, default=1, help="Hogwild batch (classic: 1)"
    )
    parser.add_argument(
        "--also-num-envs",
        type=int,
        action="append",
        default=[],
        help="extra system run with this many envs per worker (repeatable; not in the ratio)",
    )
    parser.add_argument("--hogwild-seconds", type=float)
    parser.add_argument("--hogwild-warmup", type=float)
    parser.add_argument("--system-seconds", type=float)
    parser.add_argument("--system-warmup", type=float)
    parser.add_argument("--no-evaluator", action="store_true", help="system without evaluator")
    parser.add_argument("--ceiling-seconds", type=float)
    parser.add_argument("--ceiling-warmup", type=float)
    parser.add_argument("--senders", help="comma-separated sender counts for the ceiling")
    parser.add_argument(
        "--variant-senders",
        help="sender counts for the variant wires (other gradient dtype; weights every 4th "
        "ack; each other weights dtype); default: min and max of --senders",
    )
    parser.add_argument("--sender-processes", type=int, default=2)
    parser.add_argument("--no-bracket", action="store_true", help="one Hogwild run, not two")
    parser.add_argument(
        "--only", choices=("hogwild", "system", "ceiling"), action="append", help="repeatable"
    )
    args = parser.parse_args(argv)
    full = {"hogwild": (30.0, 10.0), "system": (60.0, 20.0), "ceiling": (5.0, 1.5)}
    quick = {"hogwild": (6.0, 3.0), "system": (12.0, 5.0), "ceiling": (2.5, 1.0)}
    for name, (seconds, warmup) in (quick if args.quick else full).items():
        if getattr(args, f"{name}_seconds") is None:
            setattr(args, f"{name}_seconds", seconds)
        if getattr(args, f"{name}_warmup") is None:
            setattr(args, f"{name}_warmup", warmup)
    if args.senders is None:
        args.senders = "1,4,16" if args.quick else ",".join(map(str, SENDER_COUNTS))
    return args


def run_all(args: argparse.Namespace) -> Results:
    """Runs the selected benchmarks; a failing one is recorded, the others still run."""
    torch.set_num_threads(1)
    config = load_config(
        {"env": args.env, "workers": args.workers}
        | ({"num_envs": args.num_envs} if args.num_envs else {})
    )
    hogwild_config = config.model_copy(update={"num_envs": args.hogwild_num_envs})
    wanted = set(args.only or ("hogwild", "system", "ceiling"))
    details: dict[str, Any] = {}
    errors: dict[str, str] = {}

    def attempt(name: str, fn: Callable[[], Any]) -> Any:
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        started = time.monotonic()
        try:
            result = fn()
        except Exception:
            errors[name] = traceback.format_exc(limit=5)
            print(f"bench: {name} FAILED\n{errors[name]}", file=sys.stderr, flush=True)
            return None
        print(f"bench: {name} done in {time.monotonic() - started:.0f}s", file=sys.stderr)
        return result

    def hogwild() -> Any:
        return run_hogwild(hogwild_config, args.workers, args.hogwild_seconds, args.hogwild_warmup)

    hogwild_runs = []
    if "hogwild" in wanted:
        hogwild_runs.append(attempt("hogwild (before)", hogwild))
    if "system" in wanted:
        details["system"] = attempt(
            "system",
            lambda: run_system(
                config, args.system_seconds, args.system_warmup, not args.no_evaluator
            ),
        )
    if "hogwild" in wanted and "system" in wanted and not args.no_bracket:
        hogwild_runs.append(attempt("hogwild (after)", hogwild))
    if "hogwild" in wanted:
        details["hogwild"] = [run for run in hogwild_runs if run is not None]
    for num_envs in args.also_num_envs:
        batched = config.model_copy(update={"num_envs": num_envs})
        details[f"system_num_envs_{num_envs}"] = attempt(
            f"system, num_envs {num_envs}",
            functools.partial(
                run_system, batched, args.system_seconds, args.system_warmup,
                not args.no_evaluator,
            ),
        )  # fmt: skip
    if "ceiling" in wanted:
        counts = tuple(int(k) for k in args.senders.split(","))
        variant_counts = (
            tuple(int(k) for k in args.variant_senders.split(",")) if args.variant_senders else None
        )
        details["learner_ceiling"] = attempt(
            "learner ceiling",
            lambda: run_ceiling(
                config,
                counts,
                args.ceiling_seconds,
                args.ceiling_warmup,
                args.sender_processes,
                variant_counts,
            ),
        )
    return summarise(args, details, errors)


def summarise(args: argparse.Namespace, details: dict[str, Any], errors: dict[str, str]) -> Results:
    """The headline figures (frames/s, updates/s, bytes per update, the learner's ceiling),
    each with its configuration and load."""
    results = Results(
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        command="python -m bench.run " + " ".join(sys.argv[1:]),
        quick=args.quick,
        git=git_state(),
        machine=machine_info(),
        details=details,
        errors=errors,
    )
    _hogwild(results, details.get("hogwild") or [])
    if details.get("system"):
        _system(results, details["system"], details.get("hogwild") or [])
    for name, batched in details.items():
        if name.startswith("system_num_envs_") and batched:
            _batched(results, batched)
    if details.get("learner_ceiling"):
        _ceiling(results, details["learner_ceiling"])
    return results


def _hogwild(results: Results, runs: list[dict[str, Any]]) -> None:
    if not runs:
        return
    hog = mean(run["frames_per_s"] for run in runs)
    results.hogwild_frames_per_s = round(hog, 1)
    results.figures["hogwild_frames_per_s"] = Figure.measured(
        hog,
        "env frames/s",
        runs[0]["configuration"],
        [run["cpu"] for run in runs],
        runs=[run["frames_per_s"] for run in runs],
    )


def _system(results: Results, system: dict[str, Any], hogwild: list[dict[str, Any]]) -> None:
    configuration, cpus = system["configuration"], [system["cpu"]]
    results.system_frames_per_s = system["frames_per_s"]
    results.figures["system_frames_per_s"] = Figure.measured(
        system["frames_per_s"], "env frames/s", configuration, cpus
    )
    results.staleness_p50 = system["staleness_p50"]
    results.staleness_p99 = system["staleness_p99"]
    for key in ("staleness_p50", "staleness_p99"):
        results.figures[key] = Figure.measured(
            system[key], "versions (bucket upper bound)", configuration, cpus
        )
    results.worker_time_split = system["worker_time_split"]["share"]
    sizes = system["bytes_per_update"]
    results.system_bytes_per_update = sizes
    results.system_kb_per_frame = sizes["kb_per_frame"]
    results.figures["system_bytes_per_update"] = Figure.measured(
        sizes["total"],
        "bytes through the learner per update (in + out + broadcast)",
        configuration,
        cpus,
        **sizes,
    )
    results.figures["worker_time_split"] = Figure.measured(
        system["worker_time_split"]["ms_per_agent_step"],
        "ms per agent step, per worker",
        configuration,
        cpus,
    )
    if not hogwild or results.hogwild_frames_per_s is None:
        return
    results.ratio_vs_hogwild = round(system["frames_per_s"] / results.hogwild_frames_per_s, 3)
    hog_eff = mean(run["frames_per_s"] / run["cpu"]["our_cores"] for run in hogwild)
    if system.get("frames_per_cpu_s"):
        results.ratio_vs_hogwild_per_cpu = round(system["frames_per_cpu_s"] / hog_eff, 3)
    results.figures["ratio_vs_hogwild"] = Figure.measured(
        results.ratio_vs_hogwild,
        "system / Hogwild frames/s",
        {"system": configuration["what"], "hogwild": "mean of the bracketing runs"},
        [system["cpu"], *[run["cpu"] for run in hogwild]],
        per_cpu=results.ratio_vs_hogwild_per_cpu,
    )


def _batched(results: Results, batched: dict[str, Any]) -> None:
    num_envs = int(batched["configuration"]["num_envs"])
    results.batched_frames_per_s[num_envs] = batched["frames_per_s"]
    hog = results.hogwild_frames_per_s
    ratio = batched["frames_per_s"] / hog if hog else None
    results.figures[batched_key(num_envs)] = Figure.measured(
        batched["frames_per_s"],
        "env frames/s",
        batched["configuration"],
        [batched["cpu"]],
        ratio_vs_hogwild=round(ratio, 3) if ratio else None,
    )


def _ceiling(results: Results, ceiling: dict[str, Any]) -> None:
    at = ceiling["max_at"]
    results.learner_max_updates_per_s = ceiling["max_updates_per_s"]
    results.learner_max_updates_per_s_at = at
    results.learner_default_wire_max_updates_per_s = ceiling["default_wire_max_updates_per_s"]
    results.learner_updates_per_cpu_s = max(
        w["max_updates_per_learner_cpu_s"] for w in ceiling["by_wire"]
    )
    results.bytes_per_update = {
        wire: sizes["total"] for wire, sizes in ceiling["bytes_per_update"].items()
    }
    results.kb_per_frame = {
        wire: sizes["kb_per_frame"] for wire, sizes in ceiling["bytes_per_update"].items()
    }
    results.learner_scaling = [ScalingRow.from_phase(phase) for phase in ceiling["scaling"]]
    cpus = [phase["cpu"] for phase in ceiling["scaling"]]
    results.figures["learner_max_updates_per_s"] = Figure.measured(
        ceiling["max_updates_per_s"],
        f"updates/s ({at['senders']} senders, {at['wire_dtype']} gradients, weights in "
        f"every {at['sync_interval']} ack(s))",
        ceiling["configuration"],
        cpus,
        by_wire=ceiling["by_wire"],
    )
    results.figures["bytes_per_update"] = Figure.measured(
        ceiling["bytes_per_update"],
        "bytes per update in and out of the learner, its counters (weights in every ack)",
        ceiling["configuration"],
        cpus,
    )


def write_results(result: Results, out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / "results.json", out_dir / "results.md"
    for path, text in (
        (json_path, json.dumps(result.to_json(), indent=2, default=str) + "\n"),
        (md_path, render_markdown(result)),
    ):
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    return json_path, md_path


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    result = run_all(args)
    result.wall_s = round(time.monotonic() - started, 1)
    json_path, md_path = write_results(result, args.out_dir)
    print(md_path.read_text())
    print(f"bench: wrote {json_path} and {md_path} in {result.wall_s:.0f}s", file=sys.stderr)
    return 1 if result.errors else 0


if __name__ == "__main__":
    sys.exit(main())
