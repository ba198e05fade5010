"""The learner's apply path in one process, no sockets: what one update costs on its CPU.

A `LearnerCore` over the real model takes synthetic gradients as a worker's Session encodes
them; each is decoded by the learner's Session, handled (decode into the flat gradient, finite
check, Adam step, weight snapshot) and its reply encoded as the serve loop does before it
sends. The thread CPU time per update is what bounds the learner's ceiling when the network is
not the limit (ZeroMQ's I/O thread, which copies the bytes into the kernel, comes on top);
`--profile` adds where it goes (cProfile, by own time). CPU time leaves out the time another
process had the core, but not the cache and memory bandwidth it shares, so on a loaded
machine the figures are only indicative.

    python -m bench.apply_profile --updates 200 --weights-dtype float16 --profile
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import statistics
import sys
import time
from typing import Any

import numpy as np
import torch

from common.config import load_config
from common.envs import env_spaces, frames_per_step
from common.metrics import learner_metrics
from common.model import ActorCritic
from common.protocol import REQUEST_TYPES, AckBody, GradientBody, HelloBody, Session
from common.service import tune_allocator
from common.weights import gradient_vector
from services.learner.core import LearnerCore

GRADIENT_STD = 1e-3
WARMUP_UPDATES = 5


def _synthetic_gradient(model: torch.nn.Module, dtype: str) -> tuple[np.ndarray, float]:
    """A random gradient of the model's size, encoded as a worker encodes it."""
    generator = torch.Generator().manual_seed(0)
    for param in model.parameters():
        param.grad = torch.randn(param.shape, generator=generator) * GRADIENT_STD
    return gradient_vector(model, dtype)


def profile_apply(
    env: str = "ALE/Breakout-v5",
    updates: int = 50,
    grad_dtype: str = "float16",
    weights_dtype: str = "float32",
    want_weights: bool = True,
    profile: bool = False,
) -> dict[str, Any]:
    """Microseconds per update over `updates` (after a short warm-up), in a process set up as
    a service's (one thread, glibc tuned)."""
    torch.set_num_threads(1)
    tune_allocator()
    values: dict[str, Any] = {"env": env}
    if weights_dtype != "float32":
        values["weights_dtype"] = weights_dtype
    config = load_config(values)
    obs_shape, n_actions = env_spaces(env)
    torch.manual_seed(0)
    core = LearnerCore.create(ActorCritic(obs_shape, n_actions), config, learner_metrics())
    wire, scale = _synthetic_gradient(ActorCritic(obs_shape, n_actions), grad_dtype)
    worker = Session("profile-worker")
    learner = Session("learner", accepts=REQUEST_TYPES)
    reply_session = Session("learner-replies")
    identity = b"profile"
    core.handle(identity, learner.decode(worker.encode("hello", HelloBody(layout=core.layout))))
    frames_per_update = config.n_steps * config.num_envs * frames_per_step(env)

    def one_update() -> tuple[int, int, int, int]:
        body = GradientBody(
            model_version=core.version,
            frames=frames_per_update,
            scale=scale,
            layout=core.layout,
            want_weights=want_weights,
        )
        incoming = [bytes(f) for f in worker.encode("gradient", body, [(grad_dtype, wire)])]
        started, cpu_started = time.perf_counter_ns(), time.thread_time_ns()
        reply = core.handle(identity, learner.decode(incoming))
        assert reply is not None and isinstance(reply.body, AckBody) and reply.body.accepted
        out = reply_session.encode(reply.type, reply.body, reply.arrays)
        cpu, wall = time.thread_time_ns() - cpu_started, time.perf_counter_ns() - started
        return cpu, wall, sum(map(len, incoming)), sum(memoryview(f).nbytes for f in out)

    for _ in range(WARMUP_UPDATES):
        one_update()
    profiler = cProfile.Profile() if profile else None
    if profiler is not None:
        profiler.enable()
    cpu_us, wall_us, received, sent = [], [], 0, 0
    for _ in range(updates):
        cpu, wall, received, sent = one_update()
        cpu_us.append(cpu / 1000)
        wall_us.append(wall / 1000)
    if profiler is not None:
        profiler.disable()
    result: dict[str, Any] = {
        "env": env,
        "grad_dtype": grad_dtype,
        "weights_dtype": weights_dtype,
        "want_weights": want_weights,
        "updates": updates,
        # Thread CPU time: what the update costs the learner's core, preemption left out.
        "cpu_us_per_update_median": round(statistics.median(cpu_us), 1),
        "cpu_us_per_update_mean": round(statistics.fmean(cpu_us), 1),
        "wall_us_per_update_median": round(statistics.median(wall_us), 1),
        "bytes_in_per_update": received,
        "bytes_out_per_update": sent,
        "frames_per_update": frames_per_update,
    }
    if profiler is not None:
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(12)
        result["profile"] = text.getvalue()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--env", default="ALE/Breakout-v5")
    parser.add_argument("--updates", type=int, default=50)
    parser.add_argument("--grad-dtype", default="float16")
    parser.add_argument("--weights-dtype", default="float32")
    parser.add_argument("--no-weights", action="store_true", help="acks without weights")
    parser.add_argument("--profile", action="store_true", help="add cProfile's top functions")
    args = parser.parse_args(argv)
    result = profile_apply(
        args.env,
        args.updates,
        args.grad_dtype,
        args.weights_dtype,
        not args.no_weights,
        args.profile,
    )
    profile = result.pop("profile", None)
    print(result)
    if profile:
        print(profile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
