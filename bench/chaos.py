"""`make chaos`: the compose stack of `make test-compose` (learner, 8 workers, evaluator,
Prometheus; signing and CURVE on) under a seeded schedule of faults, with the invariants a user
relies on checked while it runs. Writes bench/chaos.json. A benchmark, not a test: the short
version in the compose tests (tests/deploy/test_chaos.py) asserts that the invariants hold.

Two lanes of faults run at once, so faults combine (a worker cut off while the learner is
down): the learner's lane kills (`kill -9`) or stops (SIGSTOP, then SIGCONT) the learner,
fills the checkpoint disk, corrupts the newest checkpoint before a kill, and restarts
Prometheus; the peers' lane kills, stops or cuts off (`docker network disconnect`) a worker,
three workers at once, or the evaluator. Each lane takes the kinds in a seeded shuffled order,
round after round, and waits for each fault's recovery before the next.

A process is killed from the host (`kill -9` of the service under docker-init), as a crash
would, so compose's restart policy brings it back; nothing is restarted by the harness.

Invariants, each counted as passes and failures:
- resume_at_or_above_newest_checkpoint: after every learner restart its version resumes at or
  above the newest checkpoint on the disk that loads;
- no_unloadable_checkpoint_used: the version it resumed at is one of a checkpoint that loads
  (a corrupted newest one is skipped);
- recovered_within_limit: every worker affected by a fault is applying gradients again (its
  acked count grows), the evaluator scores a newer version, checkpoints are written again, or
  Prometheus scrapes again, within RECOVERY_LIMIT_S of the fault's end;
- evaluator_scores_newer_versions: after every fault the evaluator scores a version newer than
  the one it had scored when the fault ended;
- full_disk_counted and full_disk_keeps_checkpoints: a checkpoint write that met a full disk
  is counted (a3c_learner_checkpoint_failures_total), the learner keeps running, and the
  newest checkpoint from before still loads;
- no_unscheduled_exit: every container exit is one the schedule caused;
- expected_alerts_fired and alerts_resolved: the alerts a fault should raise (learner down,
  workers lost, checkpoints stalled) fire, and every alert that fired has resolved by the end.

Prometheus evaluates the project's alert rules with their windows divided by `--time-factor`
(scale_rules), so that a 10-minute run can see them fire and resolve.

    make chaos                                   # 10 minutes, seed 1
    make chaos CHAOS_ARGS='--seconds 180 --seed 2'
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import re
import signal
import statistics
import subprocess
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil
import yaml

from bench.compose_stack import ROOT, ComposeError, Stack
from common.checkpoint import list_checkpoints, load_checkpoint
from common.samples import Samples
from common.transport import create_keys
from services.local.process import free_port

COMPOSE_FILES = (
    "docker-compose.yml",
    "docker-compose.offline.yml",
    "docker-compose.auth.yml",
    "docker-compose.curve.yml",
    "docker-compose.chaos.yml",
)
ALERT_RULES = ROOT / "k8s/base/monitoring/prometheus/alerts.yml"
WORKERS = 8
RECOVERY_LIMIT_S = 150.0
"""How long after its end a fault may take to heal. Generous for 11 containers on 2 cores:
a restarted worker imports torch and builds its envs before it can send a gradient."""
MIN_RULE_WINDOW_S = 15
"""Scaled range windows stay at least three scrapes long, so rate() and increase() work."""
LEARNER_KINDS = (
    "learner_kill",
    "learner_stop",
    "disk_full",
    "checkpoint_corrupt",
    "prometheus_restart",
)
PEER_KINDS = (
    "worker_kill",
    "worker_stop",
    "worker_partition",
    "workers_partition",
    "evaluator_kill",
    "evaluator_partition",
)
EXPECTED_ALERTS = {
    "learner_stop": "A3CLearnerDown",
    "workers_partition": "A3CWorkersLost",
    "disk_full": "A3CCheckpointsStalled",
}
"""The alert each kind of fault must raise (with the rules' windows scaled)."""


# --- Pure parts ---------------------------------------------------------------------------


def _seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    total = 0.0
    for number, unit in re.findall(r"(\d+)(ms|s|m|h|d)", duration):
        total += int(number) * units[unit]
    return total


def _duration(seconds: float) -> str:
    return f"{max(1, math.ceil(seconds))}s"


def scale_rules(text: str, factor: float) -> str:
    """The alert rules YAML with every `for:` and every PromQL range window divided by
    `factor` (windows no shorter than MIN_RULE_WINDOW_S); expressions otherwise unchanged."""
    rules = yaml.safe_load(text)
    window = re.compile(r"\[(\d+(?:ms|s|m|h|d))\]")

    def shrink(match: re.Match[str]) -> str:
        return f"[{_duration(max(_seconds(match.group(1)) / factor, MIN_RULE_WINDOW_S))}]"

    for group in rules["groups"]:
        for rule in group["rules"]:
            rule["expr"] = window.sub(shrink, str(rule["expr"]))
            if "for" in rule:
                rule["for"] = _duration(_seconds(str(rule["for"])) / factor)
    return yaml.safe_dump(rules, sort_keys=False)


@dataclass
class Fault:
    kind: str
    target: str
    started_s: float
    """Seconds since the run started."""
    ended_s: float | None = None
    recovered_s: float | None = None
    """Seconds from the fault's end until it had healed; None if it did not within the limit."""
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Acked:
    value: float
    started: str
    """The container's start time: a restart resets the count."""


@dataclass
class Invariants:
    counts: dict[str, Counter[str]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def check(self, name: str, held: bool, what: str) -> bool:
        self.counts.setdefault(name, Counter())["passed" if held else "failed"] += 1
        if not held:
            self.failures.append(f"{name}: {what}")
        return held

    def held(self) -> bool:
        return not self.failures

    def as_dict(self) -> dict[str, dict[str, int]]:
        return {
            name: {"passed": c["passed"], "failed": c["failed"]}
            for name, c in sorted(self.counts.items())
        }


def lane_schedule(kinds: tuple[str, ...], rng: random.Random) -> Iterator[str]:
    """The kinds in a shuffled order, round after round: every kind comes back regularly."""
    while True:
        order = list(kinds)
        rng.shuffle(order)
        yield from order


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summarise(
    faults: list[Fault],
    invariants: Invariants,
    alerts: dict[str, dict[str, float | None]],
    exits: dict[str, int],
    config: dict[str, Any],
) -> dict[str, Any]:
    """bench/chaos.json: faults by kind, recovery times, losses per learner kill, alerts and
    invariants."""
    by_kind: dict[str, dict[str, Any]] = {}
    for kind in sorted({f.kind for f in faults}):
        mine = [f for f in faults if f.kind == kind]
        times = [f.recovered_s for f in mine if f.recovered_s is not None]
        by_kind[kind] = {
            "injected": len(mine),
            "recovered": len(times),
            "recover_s_p50": percentile(times, 0.5),
            "recover_s_max": max(times) if times else None,
        }
    recovered = [f.recovered_s for f in faults if f.recovered_s is not None]
    kills = [f for f in faults if f.kind in ("learner_kill", "checkpoint_corrupt")]
    lost_updates = [f.detail["updates_lost"] for f in kills if "updates_lost" in f.detail]
    lost_frames = [f.detail["frames_lost"] for f in kills if "frames_lost" in f.detail]
    return {
        "config": config,
        "faults_injected": len(faults),
        "fault_kinds": len(by_kind),
        "faults_recovered": len(recovered),
        "recover_s_p50": percentile(recovered, 0.5),
        "recover_s_max": max(recovered) if recovered else None,
        "by_kind": by_kind,
        "learner_kills": {
            "count": len(kills),
            "updates_lost_mean": statistics.fmean(lost_updates) if lost_updates else None,
            "updates_lost_max": max(lost_updates) if lost_updates else None,
            "frames_lost_mean": statistics.fmean(lost_frames) if lost_frames else None,
            "frames_lost_max": max(lost_frames) if lost_frames else None,
        },
        "alerts": alerts,
        "container_exits": exits,
        "invariants": invariants.as_dict(),
        "invariant_failures": invariants.failures,
        "all_invariants_held": invariants.held(),
        "faults": [asdict(f) for f in faults],
    }


# --- The stack ------------------------------------------------------------------------------


def say(line: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {line}", flush=True)


class ChaosStack:
    """The compose project under test, and the host-side handles the faults need: the
    checkpoint tmpfs, each container's service process, its networks."""

    def __init__(self, stack: Stack, checkpoint_dir: Path) -> None:
        self.stack = stack
        self.checkpoint_dir = checkpoint_dir
        self.network = f"{stack.project}_default"

    def containers(self, service: str) -> list[dict[str, Any]]:
        return self.stack.containers(service)

    def one(self, service: str) -> dict[str, Any] | None:
        running = self.containers(service)
        return running[0] if running else None

    def require(self, service: str) -> dict[str, Any]:
        """The running container of a single-replica service; a fault cannot start without."""
        container = self.one(service)
        if container is None:
            raise RuntimeError(f"no {service} running")
        return container

    def process(self, container_id: str) -> psutil.Process | None:
        """The service's own process: the child of docker-init in the container."""
        pid = subprocess.run(
            ["docker", "inspect", "-f", "{{.State.Pid}}", container_id],
            capture_output=True,
            text=True,
        ).stdout.strip()
        if not pid or pid == "0":
            return None
        with contextlib.suppress(psutil.Error):
            children = psutil.Process(int(pid)).children()
            return children[0] if children else None
        return None

    def signal(self, container_id: str, sig: signal.Signals) -> bool:
        process = self.process(container_id)
        if process is None:
            return False
        with contextlib.suppress(psutil.Error):
            process.send_signal(sig)
            return True
        return False

    def address(self, container_id: str) -> str | None:
        """The container's IP on the project's network (None while it is cut off or down)."""
        out = subprocess.run(
            ["docker", "inspect", "-f", "{{json .NetworkSettings.Networks}}", container_id],
            capture_output=True,
            text=True,
        ).stdout
        with contextlib.suppress(ValueError, AttributeError):
            return (json.loads(out) or {}).get(self.network, {}).get("IPAddress") or None
        return None

    def metrics(self, container_id: str) -> Samples | None:
        """A container's own /metrics, read from the host over the project's bridge network
        (no process started in the container, which on 2 cores would cost as much as the
        service); None while it is down, stopped, cut off or starting."""
        address = self.address(container_id)
        if address is None:
            return None
        try:
            with urllib.request.urlopen(f"http://{address}:9100/metrics", timeout=4) as reply:
                return Samples.parse(reply.read().decode())
        except (OSError, ValueError):
            return None

    def value(self, container_id: str, name: str, **labels: str) -> float | None:
        page = self.metrics(container_id)
        return None if page is None else page.get(name, **labels)

    def aliases(self, container_id: str) -> list[str]:
        out = subprocess.run(
            ["docker", "inspect", container_id], capture_output=True, text=True, check=True
        ).stdout
        networks = json.loads(out)[0]["NetworkSettings"]["Networks"]
        return [a for a in networks.get(self.network, {}).get("Aliases") or [] if a]

    def disconnect(self, container_id: str) -> list[str]:
        aliases = self.aliases(container_id)
        subprocess.run(
            ["docker", "network", "disconnect", "-f", self.network, container_id],
            check=True, capture_output=True,
        )  # fmt: skip
        return aliases

    def connect(self, container_id: str, aliases: list[str]) -> None:
        flags = [arg for alias in aliases for arg in ("--alias", alias)]
        subprocess.run(
            ["docker", "network", "connect", *flags, self.network, container_id],
            check=True, capture_output=True,
        )  # fmt: skip

    def loadable_versions(self) -> list[int]:
        """Versions of the checkpoints on the disk that load, newest first."""
        versions = []
        for path in list_checkpoints(self.checkpoint_dir):  # newest first
            try:
                state = load_checkpoint(path)
            except (ValueError, OSError):  # corrupt, half-written or pruned meanwhile
                continue
            versions.append(int(state["model_version"]))
        return versions

    def fill_disk(self, filler: Path | None = None) -> Path:
        """Fill the checkpoint tmpfs to the last byte (root can: it is the harness's mount),
        or top up an earlier filler."""
        filler = filler or self.checkpoint_dir / ".chaos-fill"
        chunk = b"\0" * (1 << 20)
        with filler.open("ab", buffering=0) as handle, contextlib.suppress(OSError):
            while True:  # unbuffered: a short write is retried, a full disk raises ENOSPC
                handle.write(chunk)
        return filler


def mount_tmpfs(path: Path, size_mib: int) -> None:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mib}m,mode=0777", "tmpfs", str(path)],
        check=True,
    )


def unmount(path: Path) -> None:
    subprocess.run(["umount", str(path)], capture_output=True)


class DeathWatch:
    """Every container exit of the project, from `docker events`, matched against the exits
    the schedule caused."""

    def __init__(self, project: str) -> None:
        self.process = subprocess.Popen(
            ["docker", "events", "--format", "{{json .}}", "--filter", "type=container",
             "--filter", "event=die", "--filter", f"label=com.docker.compose.project={project}"],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.deaths: list[tuple[float, str]] = []
        self.expected: list[tuple[float, str]] = []
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with contextlib.suppress(ValueError, KeyError):
                event = json.loads(line)
                name = event["Actor"]["Attributes"]["name"]
                with self.lock:
                    self.deaths.append((time.monotonic(), name))

    def expect(self, name: str) -> None:
        with self.lock:
            self.expected.append((time.monotonic(), name))

    def close(self, invariants: Invariants) -> dict[str, int]:
        time.sleep(2)
        self.process.terminate()
        with self.lock:
            deaths, expected = list(self.deaths), list(self.expected)
        unmatched = list(expected)
        unexpected = []
        for when, name in deaths:
            match = next((e for e in unmatched if e[1] == name and -5 <= when - e[0] <= 60), None)
            if match is None:
                unexpected.append(name)
            else:
                unmatched.remove(match)
            invariants.check("no_unscheduled_exit", match is not None, f"{name} exited")
        return {"exits": len(deaths), "scheduled": len(expected), "unscheduled": len(unexpected)}


# --- The run --------------------------------------------------------------------------------


class Chaos:
    def __init__(self, chaos: ChaosStack, seed: int, seconds: float) -> None:
        self.c = chaos
        self.seed = seed
        self.local = threading.local()
        """Each lane's own random stream (`rng`), so the schedule does not depend on how the
        two lanes' threads interleave."""
        self.seconds = seconds
        self.t0 = time.monotonic()
        self.faults: list[Fault] = []
        self.invariants = Invariants()
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.alerts: dict[str, dict[str, float | None]] = {}
        self.harness_errors: list[str] = []
        self.busy: set[str] = set()
        """Workers under a fault of the peers' lane that has not healed yet: a learner fault's
        recovery does not wait for them (their own fault's recovery does)."""
        self.deaths = DeathWatch(chaos.stack.project)

    def now(self) -> float:
        return time.monotonic() - self.t0

    def check(self, name: str, held: bool, what: str) -> bool:
        with self.lock:
            ok = self.invariants.check(name, held, what)
        if not ok:
            say(f"INVARIANT FAILED {name}: {what}")
        return ok

    # --- waiting ----------------------------------------------------------------------------
    def wait(
        self, condition: Callable[[], bool], limit: float, interval: float = 3.0
    ) -> float | None:
        started = time.monotonic()
        while time.monotonic() - started < limit:
            try:
                if condition():
                    return time.monotonic() - started
            except (OSError, ValueError, KeyError, ComposeError, subprocess.SubprocessError):
                pass
            time.sleep(interval)
        return None

    def acked(self, ids: list[str] | None = None) -> dict[str, Acked]:
        """Each running worker's acked gradients, with the start of the process that counted
        them (a restarted worker counts from 0 again)."""
        values = {}
        for worker in self.c.containers("worker"):
            if ids is not None and worker["id"] not in ids:
                continue
            value = self.c.value(worker["id"], "a3c_worker_gradients_acked_total")
            if value is not None:
                values[worker["id"]] = Acked(value, worker["started"])
        return values

    def workers_advance(
        self, baseline: dict[str, Acked], ids: list[str] | None = None
    ) -> Callable[[], bool]:
        """True once every given worker (default: every running one) has acked gradients
        since `baseline`: more than it had then, or any at all if its process restarted."""

        def advanced() -> bool:
            running = {w["id"]: w for w in self.c.containers("worker")}
            with self.lock:
                others = set() if ids else set(self.busy)
            for worker_id in ids or [i for i in running if i not in others]:
                if worker_id not in running:
                    return False
                value = self.c.value(worker_id, "a3c_worker_gradients_acked_total")
                before = baseline.get(worker_id)
                same = before is not None and before.started == running[worker_id]["started"]
                if value is None or value <= (before.value if same and before else 0.0):
                    return False
            return True

        return advanced

    def evaluator_version(self) -> float:
        evaluator = self.c.one("evaluator")
        if evaluator is None:
            return -1.0
        value = self.c.value(evaluator["id"], "a3c_evaluator_model_version")
        return -1.0 if value is None else value

    def learner(self) -> Samples | None:
        learner = self.c.one("learner")
        return None if learner is None else self.c.metrics(learner["id"])

    # --- faults -----------------------------------------------------------------------------
    def inject(self, kind: str) -> None:
        fault = Fault(kind, "", round(self.now(), 1))
        self.local.held = []
        handler = getattr(self, f"_{kind}")
        before_eval = self.evaluator_version()
        try:
            heal = handler(fault)
        except (OSError, ComposeError, subprocess.SubprocessError, RuntimeError) as error:
            fault.detail["error"] = str(error)
            say(f"{kind}: could not inject ({error})")
            return
        if fault.ended_s is None:  # a kill ends at the kill: a restart is part of the recovery
            fault.ended_s = round(self.now(), 1)
        took = self.wait(heal, RECOVERY_LIMIT_S)
        fault.recovered_s = None if took is None else round(self.now() - fault.ended_s, 1)
        with self.lock:
            self.busy.difference_update(self.local.held)
        self.check(
            "recovered_within_limit",
            took is not None,
            f"{kind} of {fault.target} at {fault.started_s:.0f}s not healed in "
            f"{RECOVERY_LIMIT_S:.0f}s",
        )
        newer = self.wait(
            lambda: self.evaluator_version() > max(before_eval, 0.0), RECOVERY_LIMIT_S
        )
        self.check(
            "evaluator_scores_newer_versions",
            newer is not None,
            f"after {kind} at {fault.started_s:.0f}s the evaluator scored no version above "
            f"{before_eval:.0f}",
        )
        say(
            f"{kind} {fault.target}: {fault.ended_s - fault.started_s:.0f}s, healed "
            + ("never" if fault.recovered_s is None else f"{fault.recovered_s:.0f}s after its end")
        )
        with self.lock:
            self.faults.append(fault)

    def _pick_worker(self) -> dict[str, Any]:
        workers = self.c.containers("worker")
        if not workers:
            raise RuntimeError("no running worker")
        return self._hold([self.local.rng.choice(workers)])[0]

    def _hold(self, victims: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Mark workers as under this lane's fault until `inject` sees it healed."""
        with self.lock:
            self.busy.update(v["id"] for v in victims)
            self.local.held = [v["id"] for v in victims]
        return victims

    def _kill(self, container: dict[str, Any], fault: Fault) -> None:
        self.deaths.expect(container["name"])
        if not self.c.signal(container["id"], signal.SIGKILL):
            raise RuntimeError(f"no process in {container['name']}")
        fault.ended_s = round(self.now(), 1)

    def _worker_kill(self, fault: Fault) -> Callable[[], bool]:
        victim = self._pick_worker()
        fault.target = victim["name"]
        self._kill(victim, fault)
        return self.workers_advance({}, [victim["id"]])

    def _worker_stop(self, fault: Fault) -> Callable[[], bool]:
        victim = self._pick_worker()
        fault.target = victim["name"]
        pause = self.local.rng.uniform(20, 60)
        self.c.signal(victim["id"], signal.SIGSTOP)
        self.stop.wait(pause)
        self.c.signal(victim["id"], signal.SIGCONT)
        return self.workers_advance(self.acked([victim["id"]]), [victim["id"]])

    def _partition(self, fault: Fault, victims: list[dict[str, Any]], seconds: float) -> None:
        fault.target = ",".join(v["name"] for v in victims)
        aliases = {v["id"]: self.c.disconnect(v["id"]) for v in victims}
        try:
            self.stop.wait(seconds)
        finally:
            for v in victims:
                self.c.connect(v["id"], aliases[v["id"]])

    def _worker_partition(self, fault: Fault) -> Callable[[], bool]:
        victim = self._pick_worker()
        self._partition(fault, [victim], 30)
        return self.workers_advance(self.acked([victim["id"]]), [victim["id"]])

    def _workers_partition(self, fault: Fault) -> Callable[[], bool]:
        workers = self.c.containers("worker")
        victims = self._hold(self.local.rng.sample(workers, min(3, len(workers))))
        self._partition(fault, victims, 45)
        ids = [v["id"] for v in victims]
        return self.workers_advance(self.acked(ids), ids)

    def _evaluator_kill(self, fault: Fault) -> Callable[[], bool]:
        evaluator = self.c.require("evaluator")
        fault.target = evaluator["name"]
        before = self.evaluator_version()
        self._kill(evaluator, fault)
        return lambda: self.evaluator_version() > max(before, 0.0)

    def _evaluator_partition(self, fault: Fault) -> Callable[[], bool]:
        evaluator = self.c.require("evaluator")
        received = self.c.value(evaluator["id"], "a3c_evaluator_weights_received_total") or 0.0
        self._partition(fault, [evaluator], 30)
        after = self.c.value(evaluator["id"], "a3c_evaluator_weights_received_total") or 0.0
        fault.detail["weights_received_while_cut_off"] = after - received
        return lambda: (
            (self.c.value(evaluator["id"], "a3c_evaluator_weights_received_total") or 0.0) > after
        )

    def _restart_check(self, fault: Fault, before: Samples | None) -> Callable[[], bool]:
        """After the learner was killed: its resume must be from a checkpoint that loads and
        at least as new as the newest one that does; losses are measured from its first
        /metrics (served only once it has resumed)."""
        time.sleep(0.5)  # the dead process writes nothing more
        loadable_then = self.c.loadable_versions()
        newest_before = loadable_then[0] if loadable_then else 0
        baseline = self.acked()
        page: Samples | None = None

        def resumed() -> bool:
            nonlocal page
            page = self.learner()
            return page is not None

        took = self.wait(resumed, RECOVERY_LIMIT_S, interval=1.0)
        if page is not None:
            version = page.get("a3c_learner_model_version") - page.get("a3c_learner_updates_total")
            loadable = self.c.loadable_versions()
            fault.detail["resumed_version"] = version
            fault.detail["newest_loadable_checkpoint"] = newest_before
            fault.detail["learner_back_s"] = None if took is None else round(took, 1)
            self.check(
                "resume_at_or_above_newest_checkpoint",
                version >= newest_before,
                f"resumed at {version:.0f}, the newest checkpoint that loads was {newest_before}",
            )
            self.check(
                "no_unloadable_checkpoint_used",
                version in loadable or (version == 0 and newest_before == 0),
                f"resumed at {version:.0f}, loadable checkpoints {loadable}",
            )
            if before is not None:
                lost = before.get("a3c_learner_model_version") - version
                updates = before.get("a3c_learner_updates_total")
                per_update = (
                    before.get("a3c_learner_env_frames_total") / updates if updates else 0.0
                )
                fault.detail["updates_lost"] = max(lost, 0.0)
                fault.detail["frames_lost"] = round(max(lost, 0.0) * per_update)
        return self.workers_advance(baseline)

    def _learner_kill(self, fault: Fault) -> Callable[[], bool]:
        learner = self.c.require("learner")
        fault.target = learner["name"]
        before = self.c.metrics(learner["id"])
        self._kill(learner, fault)
        return self._restart_check(fault, before)

    def _checkpoint_corrupt(self, fault: Fault) -> Callable[[], bool]:
        learner = self.c.require("learner")
        fault.target = learner["name"]
        before = self.c.metrics(learner["id"])
        self.c.signal(learner["id"], signal.SIGSTOP)  # no checkpoint written while we cut
        try:
            paths = list_checkpoints(self.c.checkpoint_dir)
            if not paths:
                raise RuntimeError("no checkpoint to corrupt yet")
            newest = paths[0]  # list_checkpoints: newest first
            data = newest.read_bytes()
            newest.write_bytes(data[: len(data) // 2])
            fault.detail["corrupted"] = newest.name
        finally:
            self._kill(learner, fault)
        return self._restart_check(fault, before)

    def _learner_stop(self, fault: Fault) -> Callable[[], bool]:
        learner = self.c.require("learner")
        fault.target = learner["name"]
        pause = self.local.rng.uniform(20, 60)
        baseline = self.acked()
        self.c.signal(learner["id"], signal.SIGSTOP)
        self.stop.wait(pause)
        self.c.signal(learner["id"], signal.SIGCONT)
        return self.workers_advance(baseline)

    def _disk_full(self, fault: Fault) -> Callable[[], bool]:
        learner = self.c.require("learner")
        fault.target = "checkpoint volume"
        before = self.c.metrics(learner["id"])
        intact = self.c.loadable_versions()
        filler = self.c.fill_disk()
        try:
            # Past the scaled CheckpointsStalled window and its for:, topped up every second,
            # because a write that fails frees the space its temp file held.
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline and not self.stop.wait(1):
                self.c.fill_disk(filler)
            during = self.c.metrics(learner["id"])
        finally:
            filler.unlink()

        def failures(page: Samples | None) -> float:
            return page.get("a3c_learner_checkpoint_failures_total", stage="write") if page else 0.0

        still = self.c.one("learner")
        self.check(
            "full_disk_counted",
            during is not None
            and failures(during) > failures(before)
            and still is not None
            and still["id"] == learner["id"]
            and still["restarts"] == learner["restarts"],
            "the learner did not count its failed checkpoint writes, or did not survive them",
        )
        self.check(
            "full_disk_keeps_checkpoints",
            not intact or intact[0] in self.c.loadable_versions(),
            f"the newest checkpoint before the disk filled ({intact[:1]}) no longer loads",
        )
        fault.detail["checkpoint_failures"] = failures(during) - failures(before)
        written = (during or before or Samples.parse("")).get("a3c_learner_checkpoints_total")
        return lambda: (
            (page := self.c.metrics(learner["id"])) is not None
            and page.get("a3c_learner_checkpoints_total") > written
        )

    def _prometheus_restart(self, fault: Fault) -> Callable[[], bool]:
        prometheus = self.c.require("prometheus")
        fault.target = prometheus["name"]
        self.deaths.expect(prometheus["name"])
        subprocess.run(
            ["docker", "restart", "-t", "5", prometheus["id"]], check=True, capture_output=True
        )
        # A fresh scrape, not a sample from before the restart that its TSDB replayed.
        fresh = 'time() - timestamp(up{job="learner"} == 1)'
        return lambda: (age := self.c.stack.scalar(fresh)) is not None and age < 10

    def _overlaps_an_outage(self, fault: Fault) -> bool:
        """A peer fault during which the learner or Prometheus was down, stopped or
        restarting: the learner cannot forget workers while it is stopped, and Prometheus
        forgets pending alerts when it restarts, so no alert can be expected of it."""
        if fault.kind not in PEER_KINDS or fault.ended_s is None:
            return False
        outages = ("learner_kill", "learner_stop", "checkpoint_corrupt", "prometheus_restart")
        for other in self.faults:
            if other.kind in outages and other.ended_s is not None:
                healed = other.ended_s + (other.recovered_s or RECOVERY_LIMIT_S)
                if other.started_s < fault.ended_s and fault.started_s < healed:
                    return True
        return False

    # --- lanes and the alert watch ----------------------------------------------------------
    def lane(self, kinds: tuple[str, ...], gap: tuple[float, float], stream: int) -> None:
        self.local.rng = random.Random(self.seed * 1000 + stream)
        for kind in lane_schedule(kinds, self.local.rng):
            if self.stop.wait(self.local.rng.uniform(*gap)) or self.now() > self.seconds:
                return
            try:
                self.inject(kind)
            except Exception as error:  # a harness bug is reported; it must not end the lane
                say(f"{kind}: harness error {type(error).__name__}: {error}")
                with self.lock:
                    self.harness_errors.append(f"{kind} at {self.now():.0f}s: {error!r}")
            finally:
                with self.lock:
                    self.busy.difference_update(getattr(self.local, "held", []))

    def watch_alerts(self) -> None:
        while not self.stop.is_set():
            with contextlib.suppress(OSError, ValueError, KeyError):
                firing = {
                    r["metric"]["alertname"]
                    for r in self.c.stack.query('ALERTS{alertstate="firing"}')
                }
                with self.lock:
                    for name in firing:
                        seen = self.alerts.setdefault(
                            name, {"first_fired_s": round(self.now(), 1), "resolved_s": None}
                        )
                        seen["resolved_s"] = None
                    for name, seen in self.alerts.items():
                        if name not in firing and seen["resolved_s"] is None:
                            seen["resolved_s"] = round(self.now(), 1)
            self.stop.wait(3)

    def run(self) -> None:
        threads = [
            threading.Thread(target=self.lane, args=(LEARNER_KINDS, (3, 8), 1), daemon=True),
            threading.Thread(target=self.lane, args=(PEER_KINDS, (2, 6), 2), daemon=True),
        ]
        watcher = threading.Thread(target=self.watch_alerts, daemon=True)
        watcher.start()
        for thread in threads:
            thread.start()
        try:
            while any(thread.is_alive() for thread in threads):
                time.sleep(1)  # not join(): Ctrl-C and SIGTERM must reach this thread
        except BaseException:
            self.stop.set()
            raise
        # Every alert that fired must resolve once the faults are over.
        settled = self.wait(
            lambda: all(a["resolved_s"] is not None for a in self.alerts.values()), 240, 5
        )
        self.stop.set()
        watcher.join(10)
        for name, seen in sorted(self.alerts.items()):
            self.check("alerts_resolved", seen["resolved_s"] is not None, f"{name} still firing")
        for kind, alert in EXPECTED_ALERTS.items():
            if any(f.kind == kind and not self._overlaps_an_outage(f) for f in self.faults):
                self.check("expected_alerts_fired", alert in self.alerts, f"{alert} never fired")
        say("alerts did not settle" if settled is None else f"alerts settled after {settled:.0f}s")


def start_stack(
    project: str, work: Path, factor: float, env: dict[str, str]
) -> tuple[ChaosStack, Path]:
    """Keys, the checkpoint tmpfs, the scaled rules and the env file; then `compose up`."""
    key = work / "auth_key"
    key.write_text(os.urandom(24).hex() + "\n")
    key.chmod(0o444)
    curve = work / "curve"
    create_keys(curve)
    for path in curve.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o444)
    checkpoints = work / "checkpoints"
    mount_tmpfs(checkpoints, 64)
    rules = work / "alerts.yml"
    rules.write_text(scale_rules(ALERT_RULES.read_text(), factor))
    rules.chmod(0o444)
    ports = {
        n: free_port()
        for n in ("LEARNER_PORT", "LEARNER_PUB_PORT", "PROMETHEUS_PORT", "EVALUATOR_PORT")
    }
    env_file = work / "compose.env"
    env_file.write_text(
        "".join(f"{k}={v}\n" for k, v in {**ports, **env}.items())
        + f"AUTH_KEY_FILE={key}\nCURVE_KEYS_DIR={curve}\n"
        + f"CHAOS_CHECKPOINT_DIR={checkpoints}\nCHAOS_RULES={rules}\n"
    )
    stack = Stack(
        project, COMPOSE_FILES, env_file, ports["PROMETHEUS_PORT"], ports["EVALUATOR_PORT"]
    )
    stack.compose("up", "-d", "--no-build", "--scale", f"worker={WORKERS}")
    return ChaosStack(stack, checkpoints), checkpoints


def run(
    seconds: float,
    seed: int,
    factor: float,
    image: str,
    out: Path | None,
    work: Path,
) -> dict[str, Any]:
    project = f"a3c-chaos-{os.getpid()}"
    work.mkdir(parents=True, exist_ok=True)
    chaos_stack, checkpoints = start_stack(project, work, factor, {"IMAGE": image})
    started = time.monotonic()
    try:
        say(f"project {project} up; waiting for {WORKERS} workers to be training")
        chaos = Chaos(chaos_stack, seed, seconds)
        ready = chaos.wait(
            lambda: (
                len(a := chaos.acked()) == WORKERS
                and all(v.value > 0 for v in a.values())
                and chaos.evaluator_version() > 0
                and bool(chaos_stack.loadable_versions())
            ),
            300,
            5,
        )
        if ready is None:
            raise RuntimeError("the stack never got all workers training and a checkpoint written")
        say(f"training after {time.monotonic() - started:.0f}s; faults for {seconds:.0f}s")
        chaos.t0 = time.monotonic()
        chaos.run()
        exits = chaos.deaths.close(chaos.invariants)
        result = summarise(
            chaos.faults,
            chaos.invariants,
            chaos.alerts,
            exits,
            {"seconds": seconds, "seed": seed, "time_factor": factor, "workers": WORKERS,
             "recovery_limit_s": RECOVERY_LIMIT_S, "compose_files": list(COMPOSE_FILES),
             "image": image},
        )  # fmt: skip
        result["wall_s"] = round(time.monotonic() - started, 1)
        result["harness_errors"] = chaos.harness_errors
    finally:
        log = work / "compose.log"
        log.write_text(chaos_stack.stack.compose("logs", "--no-color", "--timestamps", check=False))
        chaos_stack.stack.compose(
            "down", "--volumes", "--remove-orphans", "--timeout", "30", check=False
        )
        unmount(checkpoints)
    if out is not None:
        out.write_text(json.dumps(result, indent=2) + "\n")
    table = {k: v for k, v in result.items() if k not in ("faults", "config")}
    print(json.dumps(table, indent=2))
    return result


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--time-factor", type=float, default=20.0)
    parser.add_argument("--image", default=os.environ.get("TEST_COMPOSE_IMAGE", "a3c-breakout:ci"))
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "chaos.json")
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "chaos")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)  # stop as Ctrl-C does: tear the stack down
    return run(args.seconds, args.seed, args.time_factor, args.image, args.out, args.work)


if __name__ == "__main__":
    main()
