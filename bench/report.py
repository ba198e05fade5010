"""bench/results.md: the headline figures, the learner's scaling and the worker time split as
markdown tables, each row with the load the machine was under while it was measured."""

from __future__ import annotations

from typing import Any

from bench.results import Figure, Results


def _num(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _load(figure: Figure) -> str:
    loads = ", ".join(f"{a:.1f}->{b:.1f}" for a, b in figure.loadavg_1m)
    busy = ", ".join(
        f"{ours:.2f}/{busy:.2f}"
        for ours, busy in zip(figure.our_cores, figure.machine_busy_cores, strict=True)
    )
    return f"{loads} | {busy}"


def _headline(result: Results) -> list[str]:
    figures = result.figures
    rows: list[tuple[str, str, str, str]] = []
    if "system_frames_per_s" in figures:
        cfg = figures["system_frames_per_s"].configuration
        window = result.details["system"]["cpu"]["window_s"]
        rows.append((
            "system_frames_per_s",
            _num(result.system_frames_per_s),
            f"{cfg['env']}, learner + {cfg['workers']} workers"
            f"{' + evaluator' if cfg['evaluator'] else ''}, num_envs {cfg['num_envs']}, "
            f"{cfg['grad_dtype']} gradients, {cfg.get('weights_dtype', 'float32')} weights, "
            f"{_num(window)} s window",
            "system_frames_per_s",
        ))  # fmt: skip
    for key, figure in figures.items():
        if key.startswith("system_num_envs_"):
            cfg = figure.configuration
            rows.append((
                f"system_frames_per_s, num_envs {cfg['num_envs']}",
                _num(figure.value),
                f"as above with {cfg['num_envs']} envs per worker; vs Hogwild (batch 1): "
                f"{_num(figure.extra.get('ratio_vs_hogwild'), 3)}",
                key,
            ))  # fmt: skip
    if "hogwild_frames_per_s" in figures:
        figure = figures["hogwild_frames_per_s"]
        cfg = figure.configuration
        runs = ", ".join(_num(run) for run in figure.extra["runs"])
        rows.append((
            "hogwild_frames_per_s",
            _num(result.hogwild_frames_per_s),
            f"{cfg['env']}, {cfg['processes']} processes, batch {cfg['num_envs']}, shared model + "
            f"Adam, no network; mean of runs {runs}",
            "hogwild_frames_per_s",
        ))  # fmt: skip
    if "ratio_vs_hogwild" in figures:
        rows.append((
            "ratio_vs_hogwild",
            _num(result.ratio_vs_hogwild, 3),
            "frames/s ratio; per CPU-second used: " + _num(result.ratio_vs_hogwild_per_cpu, 3),
            "ratio_vs_hogwild",
        ))  # fmt: skip
    if "learner_max_updates_per_s" in figures:
        figure = figures["learner_max_updates_per_s"]
        at = result.learner_max_updates_per_s_at or {}
        others = "; ".join(
            f"{w['wire_dtype']} gradients, {w.get('weights_dtype', 'float32')} weights every "
            f"{w['sync_interval']}: {_num(w['max_updates_per_s'])}"
            + (" (default)" if w["default"] else "")
            for w in figure.extra["by_wire"]
        )
        rows.append((
            "learner_max_updates_per_s",
            _num(result.learner_max_updates_per_s),
            f"learner alone, synthetic senders, best phase: {at['senders']} senders, "
            f"{at['wire_dtype']} gradients, {at.get('weights_dtype', 'float32')} weights in "
            f"every {at['sync_interval']} ack(s). Best by wire: {others}; "
            f"{figure.configuration['parameters']:,} params",
            "learner_max_updates_per_s",
        ))  # fmt: skip
    if "bytes_per_update" in figures:
        for wire, size in figures["bytes_per_update"].value.items():
            rows.append((
                f"bytes_per_update ({wire})",
                _num(size["total"]),
                f"in {_num(size['in'])} + out {_num(size['out'])}, weights in every ack; "
                f"{_num(size['kb_per_frame'], 2)} KB per frame at {_num(size['frames'], 0)} "
                "frames per update (learner counters)",
                "bytes_per_update",
            ))  # fmt: skip
    if "system_bytes_per_update" in figures:
        size = figures["system_bytes_per_update"].extra
        rows.append((
            "system_bytes_per_update",
            _num(size["total"]),
            f"in {_num(size['in'])} + out {_num(size['out'])} + broadcast "
            f"{_num(size['broadcast'])}; {_num(size['kb_per_frame'], 2)} KB per frame at "
            f"{_num(size['frames'], 0)} frames per update (learner counters, system run)",
            "system_bytes_per_update",
        ))  # fmt: skip
    for key, staleness in (
        ("staleness_p50", result.staleness_p50),
        ("staleness_p99", result.staleness_p99),
    ):
        if key in figures:
            rows.append((
                key,
                _num(staleness, 0),
                "versions behind at apply time (bucket upper bound), system run",
                key,
            ))  # fmt: skip
    lines = [
        "| figure | value | configuration | load 1m (start->end) | our/busy cores |",
        "|---|---:|---|---|---|",
    ]
    for name, value, config, key in rows:
        lines.append(f"| {name} | {value} | {config} | {_load(figures[key])} |")
    return lines


def _split(result: Results) -> list[str]:
    """From the system benchmark's own output (result.details)."""
    system = result.details.get("system")
    if not system:
        return []
    split = system["worker_time_split"]
    hog = result.details.get("hogwild") or []
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
        f"{result.machine.get('cpus', '?')}."
        + (
            f" The evaluator played {system['evaluator_episodes']:.0f} games in the window "
            f"(the last: {_num(system.get('evaluator_last_episode_frames'), 0)} frames)."
            if system.get("evaluator_episodes") is not None
            else ""
        ),
    ]
    return lines


def _scaling(result: Results) -> list[str]:
    phases = result.learner_scaling
    if not phases:
        return []
    lines = [
        "",
        "Learner ceiling by number of synthetic senders (each: 1 gradient in flight, as a worker):",
        "",
        "| senders | gradient wire | weights every k-th ack | weights wire | updates/s "
        "| learner cores | updates per learner CPU-s | sender cores | apply ms "
        "| staleness p50/p99 | bytes in/out per update | KB per frame | load 1m | busy cores |",
        "|---:|---|---:|---|---:|---:|---:|---:|---:|---|---|---:|---:|---:|",
    ]
    for p in phases:
        lines.append(
            f"| {p.senders} | {p.wire_dtype} | {p.sync_interval} | {p.weights_dtype} | "
            f"{_num(p.updates_per_s)} | "
            f"{p.learner_cores:.2f} | {_num(p.updates_per_learner_cpu_s)} | "
            f"{p.sender_cores:.2f} | {_num(p.apply_ms_mean, 2)} | "
            f"{_num(p.staleness_p50, 0)}/{_num(p.staleness_p99, 0)} | "
            f"{_num(p.bytes_in_per_update)}/{_num(p.bytes_out_per_update)} | "
            f"{_num(p.kb_per_frame, 2)} | "
            f"{p.loadavg_1m:.1f} | {p.machine_busy_cores:.2f} |"
        )
    return lines


def render_markdown(result: Results) -> str:
    machine, git = result.machine, result.git
    lines = [
        "# Benchmark results",
        "",
        f"{result.created}, {machine.get('cpus', '?')} CPUs "
        f"({machine.get('processor', '?')}), torch {machine.get('torch', '?')}, commit "
        f"{str(git.get('commit', ''))[:10]}{' (code modified)' if git.get('code_dirty') else ''}"
        f"{', QUICK mode' if result.quick else ''}. Command: `{result.command}`.",
        "",
        *_headline(result),
        *_split(result),
        *_scaling(result),
    ]
    if result.errors:
        lines += ["", "Failed: " + ", ".join(sorted(result.errors)) + " (see results.json)."]
    return "\n".join(lines) + "\n"
