"""bench/results.md: the headline figures, the learner's scaling and the worker time split as
markdown tables, each row with the load the machine was under while it was measured."""

from __future__ import annotations

from typing import Any


def _num(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _load(figure: dict[str, Any]) -> str:
    loads = ", ".join(f"{a:.1f}->{b:.1f}" for a, b in figure["loadavg_1m"])
    busy = ", ".join(
        f"{ours:.2f}/{busy:.2f}"
        for ours, busy in zip(figure["our_cores"], figure["machine_busy_cores"], strict=True)
    )
    return f"{loads} | {busy}"


def _headline(result: dict[str, Any]) -> list[str]:
    figures = result.get("figures", {})
    details = result.get("details", {})
    system = details.get("system") or {}
    sys_cfg = system.get("configuration", {})
    hog = details.get("hogwild") or []
    rows: list[tuple[str, str, str, str]] = []
    if "system_frames_per_s" in figures:
        rows.append((
            "system_frames_per_s",
            _num(result["system_frames_per_s"]),
            f"{sys_cfg['env']}, learner + {sys_cfg['workers']} workers"
            f"{' + evaluator' if sys_cfg['evaluator'] else ''}, num_envs {sys_cfg['num_envs']}, "
            f"{sys_cfg['grad_dtype']} wire, {_num(system['cpu']['window_s'])} s window",
            "system_frames_per_s",
        ))  # fmt: skip
    for key, figure in figures.items():
        if key.startswith("system_num_envs_"):
            cfg = figure["configuration"]
            rows.append((
                f"system_frames_per_s, num_envs {cfg['num_envs']}",
                _num(figure["value"]),
                f"as above with {cfg['num_envs']} envs per worker; vs Hogwild (batch 1): "
                f"{_num(figure.get('ratio_vs_hogwild'), 3)}",
                key,
            ))  # fmt: skip
    if "hogwild_frames_per_s" in figures:
        cfg = hog[0]["configuration"]
        runs = ", ".join(_num(run["frames_per_s"]) for run in hog)
        rows.append((
            "hogwild_frames_per_s",
            _num(result["hogwild_frames_per_s"]),
            f"{cfg['env']}, {cfg['processes']} processes, batch {cfg['num_envs']}, shared model + "
            f"Adam, no network; mean of runs {runs}",
            "hogwild_frames_per_s",
        ))  # fmt: skip
    if "ratio_vs_hogwild" in figures:
        per_cpu = result.get("ratio_vs_hogwild_per_cpu")
        rows.append((
            "ratio_vs_hogwild",
            _num(result["ratio_vs_hogwild"], 3),
            "frames/s ratio; per CPU-second used: " + _num(per_cpu, 3),
            "ratio_vs_hogwild",
        ))  # fmt: skip
    if "learner_max_updates_per_s" in figures:
        ceiling = details["learner_ceiling"]
        at = ceiling["max_at"]
        others = "; ".join(
            f"{w['wire_dtype']} weights every {w['sync_interval']}: {_num(w['max_updates_per_s'])}"
            + (" (default)" if w["default"] else "")
            for w in ceiling["by_wire"]
        )
        rows.append((
            "learner_max_updates_per_s",
            _num(result["learner_max_updates_per_s"]),
            f"learner alone, synthetic senders, best phase: {at['senders']} senders, "
            f"{at['wire_dtype']} gradients, weights in every {at['sync_interval']} ack(s). "
            f"Best by wire: {others}; {ceiling['configuration']['parameters']:,} params",
            "learner_max_updates_per_s",
        ))  # fmt: skip
        for dtype, size in ceiling["bytes_per_update"].items():
            rows.append((
                f"bytes_per_update ({dtype})",
                _num(size["total"]),
                f"gradient {size['gradient']:,} + ack {size['ack']:,} "
                "(weights in every ack)",
                "bytes_per_update",
            ))  # fmt: skip
    for q in ("p50", "p99"):
        if f"staleness_{q}" in figures:
            rows.append((
                f"staleness_{q}",
                _num(result[f"staleness_{q}"], 0),
                "versions behind at apply time (bucket upper bound), system run",
                f"staleness_{q}",
            ))  # fmt: skip
    lines = [
        "| figure | value | configuration | load 1m (start->end) | our/busy cores |",
        "|---|---:|---|---|---|",
    ]
    for name, value, config, key in rows:
        lines.append(f"| {name} | {value} | {config} | {_load(figures[key])} |")
    return lines


def _split(result: dict[str, Any]) -> list[str]:
    system = (result.get("details") or {}).get("system")
    if not system:
        return []
    split = system["worker_time_split"]
    hog = (result.get("details") or {}).get("hogwild") or []
    hog_ms = hog[0]["phase_ms_per_agent_step"] if hog else {}
    lines = [
        "",
        "Worker time split (system run; Hogwild's first run for comparison, its `sync` is the "
        "shared-memory weight copy and Adam step):",
        "",
        "| phase | share of worker wall time | ms per agent step | Hogwild ms per agent step |",
        "|---|---:|---:|---:|",
    ]
    for phase, share in split["share"].items():
        hog_value = hog_ms.get("sync" if phase == "wire" else phase)
        lines.append(
            f"| {phase} | {share:.1%} | {_num(split['ms_per_agent_step'][phase], 2)} | "
            f"{_num(hog_value, 2)} |"
        )
    cores = system["cpu"]["cores"]
    lines += [
        "",
        "CPU cores used in the system window: "
        + ", ".join(f"{name} {value:.2f}" for name, value in cores.items())
        + f"; whole machine {system['cpu']['machine_busy_cores']:.2f} of "
        f"{result.get('machine', {}).get('cpus', '?')}."
        + (
            f" The evaluator played {system['evaluator_episodes']:.0f} games in the window "
            f"(the last: {_num(system.get('evaluator_last_episode_frames'), 0)} frames)."
            if system.get("evaluator_episodes") is not None
            else ""
        ),
    ]
    return lines


def _scaling(result: dict[str, Any]) -> list[str]:
    phases = result.get("learner_scaling")
    if not phases:
        return []
    lines = [
        "",
        "Learner ceiling by number of synthetic senders (each: 1 gradient in flight, as a worker):",
        "",
        "| senders | gradient wire | weights every k-th ack | updates/s | learner cores "
        "| updates per learner CPU-s | sender cores | apply ms | staleness p50/p99 | load 1m "
        "| busy cores |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for p in phases:
        lines.append(
            f"| {p['senders']} | {p['wire_dtype']} | {p.get('sync_interval', 1)} | "
            f"{_num(p['updates_per_s'])} | "
            f"{p['learner_cores']:.2f} | {_num(p['updates_per_learner_cpu_s'])} | "
            f"{p['sender_cores']:.2f} | {_num(p['apply_ms_mean'], 2)} | "
            f"{_num(p['staleness_p50'], 0)}/{_num(p['staleness_p99'], 0)} | "
            f"{p['loadavg_1m']:.1f} | {p['machine_busy_cores']:.2f} |"
        )
    return lines


def render_markdown(result: dict[str, Any]) -> str:
    machine = result.get("machine", {})
    git = result.get("git", {})
    lines = [
        "# Benchmark results",
        "",
        f"{result.get('created', '')}, {machine.get('cpus', '?')} CPUs "
        f"({machine.get('processor', '?')}), torch {machine.get('torch', '?')}, commit "
        f"{str(git.get('commit', ''))[:10]}{' (code modified)' if git.get('code_dirty') else ''}"
        f"{', QUICK mode' if result.get('quick') else ''}. Command: `{result.get('command', '')}`.",
        "",
        *_headline(result),
        *_split(result),
        *_scaling(result),
    ]
    if result.get("errors"):
        lines += ["", "Failed: " + ", ".join(sorted(result["errors"])) + " (see results.json)."]
    return "\n".join(lines) + "\n"
