"""The baseline: classic Hogwild A3C on one machine, no network (ikostrikov/pytorch-a3c style).

N processes share one model (`share_memory()`) and one Adam whose statistics live in shared
memory too (the classic SharedAdam). Each process, per update: copies the shared weights into
its local model, runs the worker's own rollout (common.rollout: n steps at batch `num_envs`, 1
by default, the A3C loss, backward, clip), and steps the shared Adam on its gradients,
lock-free. Only the wire differs from a worker: that is what the system is compared against.

    python -m bench.hogwild --seconds 30 --processes 2
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import time
from typing import Any

import torch

from bench.measure import CpuWindow
from common.config import Config, load_config
from common.envs import env_spaces, frames_per_step, make_vector_env
from common.model import ActorCritic
from common.rollout import RolloutRunner
from common.seeding import worker_seed

PHASES = ("env", "forward", "backward", "sync")
"""sync: copy shared weights in, hand gradients over, step the shared Adam."""
ROW = ("steps", *PHASES)
STOP_TIMEOUT_S = 20.0

SharedAdamState = list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


def shared_adam_state(model: torch.nn.Module) -> SharedAdamState:
    """Adam's step, first and second moments per parameter, in shared memory."""
    state = []
    for param in model.parameters():
        step = torch.tensor(0.0).share_memory_()
        state.append(
            (step, torch.zeros_like(param).share_memory_(), torch.zeros_like(param).share_memory_())
        )
    return state


ADAM_FUSED = True
"""As services/learner builds its Adam: keep the two the same, or the baseline measures an
optimizer difference instead of the wire."""


def shared_adam(model: torch.nn.Module, state: SharedAdamState, lr: float) -> torch.optim.Adam:
    """The learner's optimizer (torch Adam, same settings), statistics shared between processes."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, fused=ADAM_FUSED)
    for param, (step, exp_avg, exp_avg_sq) in zip(model.parameters(), state, strict=True):
        optimizer.state[param] = {"step": step, "exp_avg": exp_avg, "exp_avg_sq": exp_avg_sq}
    return optimizer


def _train(
    rank: int,
    config_values: dict[str, Any],
    shared_model: ActorCritic,
    adam_state: SharedAdamState,
    counters: torch.Tensor,
    stop: Any,
) -> None:
    """One Hogwild process: the worker's rollout (common.rollout, the same code), the learner's
    Adam, shared memory instead of a wire. `counters[rank]` accumulates agent steps and seconds
    per phase."""
    torch.set_num_threads(1)
    config = load_config(config_values)
    seed = worker_seed(config.seed, f"hogwild-{rank}")
    torch.manual_seed(seed)
    envs = make_vector_env(
        config.env,
        seed,
        config.num_envs,
        config.train_sticky_actions,
        config.training_reward_scale,
        config.gamma,
    )
    model = ActorCritic(shared_model.obs_shape, shared_model.n_actions)
    for param in model.parameters():
        param.grad = torch.zeros_like(param)
    # The classic trick: this process's view of the shared model takes its gradients from the
    # local model's .grad tensors (the attribute is per process; the parameters are shared).
    # The runner zeroes them in place (set_to_none=False), so the link holds.
    for shared, local in zip(shared_model.parameters(), model.parameters(), strict=True):
        shared.grad = local.grad
    optimizer = shared_adam(shared_model, adam_state, config.lr)
    runner = RolloutRunner(model, envs, config, seed)
    row = counters[rank]
    try:
        while not stop.is_set():
            t0 = time.perf_counter()
            model.load_state_dict(shared_model.state_dict())
            t1 = time.perf_counter()
            result = runner.run()
            t2 = time.perf_counter()
            optimizer.step()
            sync = (t1 - t0) + (time.perf_counter() - t2)
            row[0] += config.n_steps * config.num_envs
            for i, phase in enumerate(PHASES, start=1):
                row[i] += sync if phase == "sync" else result.seconds[phase]
    finally:
        envs.close()


def run_hogwild(
    config: Config,
    processes: int = 2,
    seconds: float = 30.0,
    warmup: float = 10.0,
    start_timeout: float = 120.0,
) -> dict[str, Any]:
    """Train Hogwild-style for `warmup` + `seconds` and report frames/s over the last `seconds`."""
    torch.set_num_threads(1)
    obs_shape, n_actions = env_spaces(config.env)
    torch.manual_seed(config.seed)
    shared_model = ActorCritic(obs_shape, n_actions)
    shared_model.share_memory()
    adam_state = shared_adam_state(shared_model)
    counters = torch.zeros(processes, len(ROW), dtype=torch.float64).share_memory_()
    context = mp.get_context("spawn")
    stop = context.Event()
    values = config.model_dump(mode="json", exclude={"auth_key"})
    procs = [
        context.Process(
            target=_train,
            args=(rank, values, shared_model, adam_state, counters, stop),
            name=f"hogwild-{rank}",
            daemon=True,
        )
        for rank in range(processes)
    ]
    try:
        for proc in procs:
            proc.start()
        _wait_until_all_stepped(procs, counters, start_timeout)
        time.sleep(warmup)
        cpu = CpuWindow({proc.name: proc.pid for proc in procs if proc.pid is not None})
        before = counters.clone()
        cpu.start()
        time.sleep(seconds)
        after = counters.clone()
        cpu.stop()
        _check_alive(procs)
    finally:
        stop.set()
        _stop_all(procs)
    return _report(config, processes, after - before, cpu)


def _wait_until_all_stepped(procs: list[Any], counters: torch.Tensor, timeout: float) -> None:
    """Warm-up starts once every process has finished one update (imports and env start-up
    are not counted)."""
    deadline = time.monotonic() + timeout
    while not bool((counters[:, 0] > 0).all()):
        _check_alive(procs)
        if time.monotonic() > deadline:
            raise RuntimeError(f"Hogwild processes did not start within {timeout:.0f}s")
        time.sleep(0.2)


def _check_alive(procs: list[Any]) -> None:
    dead = [f"{p.name} (exit {p.exitcode})" for p in procs if not p.is_alive()]
    if dead:
        raise RuntimeError(f"Hogwild process died: {', '.join(dead)}")


def _stop_all(procs: list[Any]) -> None:
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for proc in procs:
        proc.join(max(deadline - time.monotonic(), 0.1))
    for proc in procs:
        if proc.is_alive():
            proc.kill()
            proc.join()


def _report(config: Config, processes: int, window: torch.Tensor, cpu: CpuWindow) -> dict[str, Any]:
    seconds = cpu.wall_s
    steps = float(window[:, 0].sum())
    frames = steps * frames_per_step(config.env)
    phase_s = {phase: float(window[:, i].sum()) for i, phase in enumerate(PHASES, start=1)}
    per_step_ms = {phase: round(1000 * s / max(steps, 1.0), 3) for phase, s in phase_s.items()}
    busy = sum(phase_s.values())
    return {
        "frames_per_s": round(frames / seconds, 1),
        "agent_steps_per_s": round(steps / seconds, 1),
        "updates_per_s": round(steps / (config.n_steps * config.num_envs) / seconds, 2),
        "phase_ms_per_agent_step": per_step_ms,
        "phase_share": {phase: round(s / busy, 3) for phase, s in phase_s.items()} if busy else {},
        "configuration": {
            "what": "classic Hogwild: shared-memory model and Adam, no network",
            "env": config.env,
            "processes": processes,
            "num_envs": config.num_envs,
            "n_steps": config.n_steps,
            "lr": config.lr,
            "adam": f"torch Adam, fused={ADAM_FUSED}, shared step and moments",
            "frames_per_agent_step": frames_per_step(config.env),
        },
        "cpu": cpu.report(),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--env", default="ALE/Breakout-v5")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--num-envs", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--warmup", type=float, default=10.0)
    args = parser.parse_args(argv)
    config = load_config({"env": args.env, "num_envs": args.num_envs})
    result = run_hogwild(config, args.processes, args.seconds, args.warmup)
    json.dump(result, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
