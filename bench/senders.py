"""Synthetic gradient senders for the learner ceiling: what a worker is to the learner, minus
the environment and the model.

Each sender has its own Session (identity, run id, sequence) and DealerClient, says hello with
the model's layout, then sends one precomputed random gradient after another, each as soon as
the previous one's ack (with the newest weights) is back: the worker's `max_inflight=1` flow.
Many senders share one process and one poll loop; the processes live across measurement
phases, since starting torch processes is the slow part.
"""

from __future__ import annotations

import dataclasses
import functools
import multiprocessing as mp
import queue
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import zmq

from common.protocol import AckBody, GradientBody, HelloBody, Session, WeightsBody
from common.transport import DealerClient
from common.weights import gradient_vector

HELLO_TIMEOUT_S = 30.0
READY_TIMEOUT_S = 120.0
GRADIENT_STD = 1e-3
"""Random gradients of about this size: finite, and small enough that Adam stays sane."""


def _wire_gradients(n_params: int, seed: int) -> dict[str, tuple[np.ndarray, float]]:
    """One random gradient per wire dtype, encoded by the worker's own `gradient_vector`."""
    holder = torch.nn.Module()
    holder.flat = torch.nn.Parameter(torch.zeros(n_params))
    generator = torch.Generator().manual_seed(seed)
    holder.flat.grad = torch.randn(n_params, generator=generator) * GRADIENT_STD
    return {dtype: gradient_vector(holder, dtype) for dtype in ("float32", "float16")}


@dataclass(frozen=True)
class Target:
    """What a sender needs to know about the learner it feeds."""

    host: str
    port: int
    layout: str
    n_params: int
    frames_per_update: int


def _sender_process(index: int, target: Target, commands: Any, results: Any, stop: Any) -> None:
    """Runs phases on command: ("run", count, dtype, sync_interval, phase, port) connects
    `count` senders to the learner on `port` (None: the target's), says hello, reports ready,
    pushes gradients until `stop`, then reports its counts; None exits."""
    torch.set_num_threads(1)
    wires = _wire_gradients(target.n_params, seed=index)
    while True:
        command = commands.get()
        if command is None:
            return
        _, count, dtype, sync_interval, phase, port = command
        learner = target if port is None else dataclasses.replace(target, port=port)
        try:
            names = [f"bench-sender-{phase}-{index}-{i}" for i in range(count)]
            ready = functools.partial(results.put, ("ready", index, None))
            stats = _run_phase(learner, names, dtype, sync_interval, wires[dtype], ready, stop)
            results.put(("done", index, stats))
        except Exception as error:  # reported to the parent, which fails the benchmark
            results.put(("error", index, f"{type(error).__name__}: {error}"))


def _run_phase(
    target: Target,
    names: list[str],
    dtype: str,
    sync_interval: int,
    wire: tuple[np.ndarray, float],
    ready: Callable[[], None],
    stop: Any,
) -> dict[str, Any]:
    gradient, scale = wire
    clients = [DealerClient(Session(name), target.host, target.port) for name in names]
    versions = [-1] * len(clients)
    layout, count = target.layout, len(clients)
    try:
        for i, client in enumerate(clients):
            client.send("hello", HelloBody(layout=layout))
            reply = client.recv(int(HELLO_TIMEOUT_S * 1000))
            if reply is None or reply.message is None or reply.message.type != "welcome":
                raise RuntimeError(f"{names[i]}: no welcome from the learner")
            versions[i] = reply.message.payload_as(WeightsBody).model_version
        ready()
        poller = zmq.Poller()
        by_socket = {}
        for i, client in enumerate(clients):
            assert client.sock is not None
            poller.register(client.sock, zmq.POLLIN)
            by_socket[client.sock] = i
        stats = {"acks": 0, "rejected": 0}
        since_weights = [0] * count

        def body(i: int) -> GradientBody:
            return GradientBody(
                model_version=versions[i],
                frames=target.frames_per_update,
                scale=scale,
                layout=layout,
                want_weights=since_weights[i] >= sync_interval,
                stats={"policy_loss": 0.0, "value_loss": 0.0, "entropy": 0.0, "grad_norm": 0.0},
            )

        def send(i: int) -> None:
            since_weights[i] += 1
            if not clients[i].send("gradient", body(i), [(dtype, gradient)], timeout_ms=10_000):
                raise RuntimeError(f"{names[i]}: the learner does not take gradients")

        for i in range(count):
            send(i)
        while not stop.is_set():
            for sock, _ in poller.poll(200):
                i = by_socket[sock]
                reply = clients[i].recv(0)
                if reply is None:
                    continue
                if reply.message is None:
                    raise RuntimeError(f"unreadable reply: {reply.error}")
                message = reply.message
                if message.type == "ack":
                    ack = message.payload_as(AckBody)
                    stats["acks" if ack.accepted else "rejected"] += 1
                    if message.arrays:  # weights: a worker would load them here
                        versions[i] = ack.model_version
                        since_weights[i] = 0
                    send(i)
                elif message.type == "error":
                    raise RuntimeError(f"learner refused a gradient: {message.body}")
        for client in clients:
            client.send("bye", timeout_ms=200)
        return stats
    finally:
        for client in clients:
            client.close()


class SenderPool:
    """Sender processes kept across phases (spawning torch processes is the slow part)."""

    def __init__(self, processes: int, target: Target) -> None:
        context = mp.get_context("spawn")
        self.stop = context.Event()
        self.results = context.Queue()
        self.commands = [context.Queue() for _ in range(processes)]
        self.procs = [
            context.Process(
                target=_sender_process,
                args=(i, target, self.commands[i], self.results, self.stop),
                name=f"sender-{i}",
                daemon=True,
            )
            for i in range(processes)
        ]
        for proc in self.procs:
            proc.start()
        self.phase = 0

    def start_phase(
        self, senders: int, dtype: str, sync_interval: int, port: int | None = None
    ) -> list[int]:
        """Spread `senders` over the processes; returns the indices of those taking part.
        Each sender asks for weights with every `sync_interval`-th gradient, as a worker does.
        `port`: a learner other than the target's (the processes outlive a learner)."""
        self.phase += 1
        self.stop.clear()
        n = len(self.procs)
        share = [senders // n + (i < senders % n) for i in range(n)]
        active = [i for i, n in enumerate(share) if n > 0]
        for i in active:
            self.commands[i].put(("run", share[i], dtype, sync_interval, self.phase, port))
        self._collect("ready", active, READY_TIMEOUT_S)
        return active

    def end_phase(self, active: list[int]) -> list[dict[str, Any]]:
        self.stop.set()
        return self._collect("done", active, 30.0)

    def _collect(self, kind: str, active: list[int], timeout: float) -> list[Any]:
        got: dict[int, Any] = {}
        deadline = time.monotonic() + timeout
        while len(got) < len(active):
            dead = [p.name for p in self.procs if not p.is_alive()]
            if dead:
                raise RuntimeError(f"sender process died: {dead}")
            try:
                what, index, payload = self.results.get(timeout=0.5)
            except queue.Empty:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"senders not {kind} within {timeout:.0f}s") from None
                continue
            if what == "error":
                raise RuntimeError(f"sender process {index}: {payload}")
            if what == kind:
                got[index] = payload
        return [got[i] for i in sorted(got)]

    def close(self) -> None:
        self.stop.set()
        for q in self.commands:
            q.put(None)
        deadline = time.monotonic() + 15
        for proc in self.procs:
            proc.join(max(deadline - time.monotonic(), 0.1))
            if proc.is_alive():
                proc.kill()
                proc.join()
