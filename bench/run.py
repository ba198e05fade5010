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
from bench.system import run_system
from common.config import load_config

SCHEMA_VERSION = 1


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
        help="sender counts for the variant wires (other dtype; weights "
        "every 4th ack); default: min and max of --senders",
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


def run_all(args: argparse.Namespace) -> dict[str, Any]:
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


def summarise(
    args: argparse.Namespace, details: dict[str, Any], errors: dict[str, str]
) -> dict[str, Any]:
    """The headline figures (frames/s, updates/s, bytes per update, the learner's ceiling),
    each with its configuration and load."""
    system = details.get("system")
    hogwild_runs = details.get("hogwild") or []
    ceiling = details.get("learner_ceiling")
    result: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": "python -m bench.run " + " ".join(sys.argv[1:]),
        "quick": args.quick,
        "git": git_state(),
        "machine": machine_info(),
    }
    figures: dict[str, Any] = {}
    if hogwild_runs:
        hog = mean(run["frames_per_s"] for run in hogwild_runs)
        result["hogwild_frames_per_s"] = round(hog, 1)
        figures["hogwild_frames_per_s"] = _figure(
            hog,
            "env frames/s",
            hogwild_runs[0]["configuration"],
            [run["cpu"] for run in hogwild_runs],
            runs=[run["frames_per_s"] for run in hogwild_runs],
        )
    if system:
        result["system_frames_per_s"] = system["frames_per_s"]
        figures["system_frames_per_s"] = _figure(
            system["frames_per_s"], "env frames/s", system["configuration"], [system["cpu"]]
        )
        for q in ("p50", "p99"):
            key = f"staleness_{q}"
            result[key] = system[key]
            figures[key] = _figure(
                system[key], "versions (bucket upper bound)", system["configuration"],
                [system["cpu"]],
            )  # fmt: skip
        result["worker_time_split"] = system["worker_time_split"]["share"]
        figures["worker_time_split"] = _figure(
            system["worker_time_split"]["ms_per_agent_step"], "ms per agent step, per worker",
            system["configuration"], [system["cpu"]],
        )  # fmt: skip
    if system and hogwild_runs:
        result["ratio_vs_hogwild"] = round(
            system["frames_per_s"] / result["hogwild_frames_per_s"], 3
        )
        hog_eff = mean(run["frames_per_s"] / run["cpu"]["our_cores"] for run in hogwild_runs)
        if system.get("frames_per_cpu_s"):
            result["ratio_vs_hogwild_per_cpu"] = round(system["frames_per_cpu_s"] / hog_eff, 3)
        figures["ratio_vs_hogwild"] = _figure(
            result["ratio_vs_hogwild"],
            "system / Hogwild frames/s",
            {"system": system["configuration"]["what"], "hogwild": "mean of the bracketing runs"},
            [system["cpu"], *[run["cpu"] for run in hogwild_runs]],
            per_cpu=result.get("ratio_vs_hogwild_per_cpu"),
        )
    for name, batched in details.items():
        if not (name.startswith("system_num_envs_") and batched):
            continue
        result[f"{name}_frames_per_s"] = batched["frames_per_s"]
        ratio = batched["frames_per_s"] / result["hogwild_frames_per_s"] if hogwild_runs else None
        figures[f"{name}_frames_per_s"] = _figure(
            batched["frames_per_s"],
            "env frames/s",
            batched["configuration"],
            [batched["cpu"]],
            ratio_vs_hogwild=round(ratio, 3) if ratio else None,
        )
    if ceiling:
        at = ceiling["max_at"]
        result["learner_max_updates_per_s"] = ceiling["max_updates_per_s"]
        result["learner_max_updates_per_s_at"] = at
        result["learner_default_wire_max_updates_per_s"] = ceiling["default_wire_max_updates_per_s"]
        result["learner_updates_per_cpu_s"] = max(
            w["max_updates_per_learner_cpu_s"] for w in ceiling["by_wire"]
        )
        result["bytes_per_update"] = {
            dtype: sizes["total"] for dtype, sizes in ceiling["bytes_per_update"].items()
        }
        result["learner_scaling"] = [
            {
                key: phase[key]
                for key in (
                    "senders", "wire_dtype", "sync_interval", "updates_per_s", "learner_cores",
                    "updates_per_learner_cpu_s", "sender_cores",
                    "apply_ms_mean", "staleness_p50", "staleness_p99",
                )
            }
            | {"loadavg_1m": phase["cpu"]["loadavg_start"][0],
               "machine_busy_cores": phase["cpu"]["machine_busy_cores"]}
            for phase in ceiling["scaling"]
        ]  # fmt: skip
        cpus = [phase["cpu"] for phase in ceiling["scaling"]]
        figures["learner_max_updates_per_s"] = _figure(
            ceiling["max_updates_per_s"],
            f"updates/s ({at['senders']} senders, {at['wire_dtype']} gradients, weights in "
            f"every {at['sync_interval']} ack(s))",
            ceiling["configuration"],
            cpus,
            by_wire=ceiling["by_wire"],
        )
        figures["bytes_per_update"] = _figure(
            ceiling["bytes_per_update"], "bytes (gradient message + ack with weights)",
            ceiling["configuration"], cpus,
        )  # fmt: skip
    result["figures"] = figures
    result["details"] = details
    if errors:
        result["errors"] = errors
    return result


def _figure(
    value: Any, unit: str, configuration: Any, cpus: list[dict[str, Any]], **extra: Any
) -> dict[str, Any]:
    return {
        "value": value,
        "unit": unit,
        "configuration": configuration,
        "loadavg_1m": [[cpu["loadavg_start"][0], cpu["loadavg_end"][0]] for cpu in cpus],
        "machine_busy_cores": [cpu["machine_busy_cores"] for cpu in cpus],
        "our_cores": [cpu["our_cores"] for cpu in cpus],
        **extra,
    }


def write_results(result: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / "results.json", out_dir / "results.md"
    for path, text in (
        (json_path, json.dumps(result, indent=2, default=str) + "\n"),
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
    result["wall_s"] = round(time.monotonic() - started, 1)
    json_path, md_path = write_results(result, args.out_dir)
    print(md_path.read_text())
    print(f"bench: wrote {json_path} and {md_path} in {result['wall_s']:.0f}s", file=sys.stderr)
    return 1 if result.get("errors") else 0


if __name__ == "__main__":
    raise SystemExit(main())
