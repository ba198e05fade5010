"""`a3c run`: the embedded cluster. Learner, N workers and an evaluator as local processes on
127.0.0.1, all wiring in this one place.

It writes the run directory (config.json, checkpoints/, eval.jsonl, logs/, summary.json),
prints progress read from the learner's own /metrics and the evaluator's eval.jsonl (and the
address of the evaluator's page, which links every child's /metrics), hands learner and
evaluator a TensorBoard directory of this run's own with --tensorboard-dir, restarts
a child that dies, and stops by itself at --max-frames, --duration or --target-score. On
Ctrl-C or SIGTERM it stops workers and evaluator first, then the learner (which writes its
final checkpoint).

The benchmarks and the soak start the same cluster without the supervision loop:
`with LocalCluster(config) as cluster:` starts every child and stops them in order on exit;
`cluster.processes(role)`, `cluster.pid(role, i)` and `cluster.metrics(role, i)` find them.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from common.a3c import ALGORITHM_VERSION
from common.checkpoint import load_newest
from common.config import Config
from common.samples import Samples
from services.local.process import Child, ChildDied, free_port, service_args

MAX_RESTARTS = 5
ROLES = ("learner", "worker", "evaluator")
"""In start order; `stop()` goes the other way, so the learner's final checkpoint comes last."""

PAGE_WAIT_S = 30.0
"""Longest `a3c run` waits for the evaluator's page before printing its address."""


def read_eval(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line being written right now
    return records


def eval_summary(records: list[dict[str, Any]], window: int) -> dict[str, Any]:
    scores = [float(r["score"]) for r in records]
    last = scores[-window:]
    full_windows = [float(r["mean_score"]) for i, r in enumerate(records) if i + 1 >= window]
    return {
        "episodes": len(scores),
        "mean_score": sum(last) / len(last) if last else None,
        "best_score": max(full_windows or [float(r["mean_score"]) for r in records], default=None),
        "max_episode_score": max(scores) if scores else None,
        "last_scores": last,
        "window": window,
        "last_model_version": records[-1]["version"] if records else None,
        "last_train_frames": records[-1]["frames"] if records else None,
    }


class LocalCluster:
    """Learner, workers and evaluator of one run as local processes; `run()` is `a3c run`.

    `roles` picks which of them to build (the learner ceiling wants a learner alone); the
    evaluator is built only where the config asks for it. `env` is the children's environment
    (default: this process's), plus the config's key as A3C_AUTH_KEY."""

    def __init__(
        self,
        config: Config,
        *,
        roles: Iterable[str] = ROLES,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.config = config
        wanted = set(roles)
        if "learner" not in wanted or not wanted <= set(ROLES):
            raise ValueError(f"roles must include the learner and be among {ROLES}: {roles}")
        stamp = time.strftime("%Y%m%d-%H%M%S")
        name = re.sub(r"[^A-Za-z0-9]+", "-", config.env).strip("-").lower()
        self.run_dir = config.run_dir or Path("runs") / f"{name}-{stamp}"
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "logs").mkdir(exist_ok=True)
        self.eval_log = self.run_dir / "eval.jsonl"
        self.tensorboard_dir = (
            config.tensorboard_dir / self.run_dir.name if config.tensorboard_dir else None
        )
        port = free_port(pair=True)
        self.learner_port = port
        common = {
            "host": "127.0.0.1",
            "learner": f"127.0.0.1:{port}",
            "port": port,
            "metrics_host": "127.0.0.1",
            "log_format": "text",
        }
        self.children: list[Child] = []
        self.learner = self._child(
            "learner",
            "learner",
            common,
            checkpoint_dir=self.run_dir / "checkpoints",
            tensorboard_dir=self.tensorboard_dir,
        )
        for i in range(config.workers if "worker" in wanted else 0):
            self._child(
                f"worker-{i}",
                "worker",
                common,
                worker_id=f"worker-{i}",
            )
        self.evaluator = (
            self._child(
                "evaluator",
                "evaluator",
                common,
                worker_id="evaluator",
                eval_log=self.eval_log,
                best_model_path=self.run_dir / "best.pt",
                page_links=" ".join(f"{c.name}={c.metrics_url}" for c in self.children),
                tensorboard_dir=self.tensorboard_dir,
            )
            if config.run_evaluator and "evaluator" in wanted
            else None
        )
        (self.run_dir / "config.json").write_text(
            json.dumps(
                {
                    **config.to_public_dict(),
                    "algorithm_version": ALGORITHM_VERSION,
                    "run_dir": str(self.run_dir),
                    "learner_port": port,
                },
                indent=2,
            )
            + "\n"
        )
        self.env = dict(os.environ if env is None else env)
        if config.auth_key is not None:
            self.env["A3C_AUTH_KEY"] = config.auth_key.get_secret_value()

    def _child(self, name: str, role: str, common: dict[str, Any], **overrides: Any) -> Child:
        """A `python -m services.<role>` child with this run's settings; `common` holds what
        every child gets (SET_BY_LAUNCHER), each role takes the flags it reads from it."""
        metrics_port = free_port()
        args = service_args(role, self.config, **common, metrics_port=metrics_port, **overrides)
        child = Child(name, args, self.run_dir / "logs" / f"{name}.log", metrics_port)
        self.children.append(child)
        return child

    # --- The public interface: roles, processes, start and stop -------------------------

    @property
    def roles(self) -> tuple[str, ...]:
        """The roles this cluster runs, in start order."""
        return tuple(role for role in ROLES if self.processes(role))

    @property
    def learner_address(self) -> str:
        return f"127.0.0.1:{self.learner_port}"

    def processes(self, role: str) -> list[Child]:
        """The children of one role, in index order (workers: worker-0, worker-1, ...)."""
        if role not in ROLES:
            raise ValueError(f"no role {role!r}; roles are {ROLES}")
        return [child for child in self.children if child.role == role]

    def process(self, role: str, index: int = 0) -> Child:
        found = self.processes(role)
        if index >= len(found):
            raise LookupError(f"this cluster has {len(found)} {role}(s), not {index + 1}")
        return found[index]

    def pid(self, role: str, index: int = 0) -> int:
        return self.process(role, index).pid

    def metrics_url(self, role: str, index: int = 0) -> str:
        return self.process(role, index).metrics_url

    @property
    def page_url(self) -> str | None:
        """The evaluator's page: latest and best games, learning curve, links."""
        if self.evaluator is None:
            return None
        return f"http://127.0.0.1:{self.evaluator.metrics_port}/"

    def metrics(self, role: str, index: int = 0) -> Samples:
        """That child's /metrics now; empty if it does not answer."""
        return self.process(role, index).metrics()

    def start(self) -> LocalCluster:
        """Start every child (learner first); returns the cluster, for `with`. If one cannot
        be started, those already running are stopped again."""
        try:
            for child in self.children:
                child.start(self.env)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_for_page(self) -> None:
        """Up to PAGE_WAIT_S for the evaluator's port to answer, so that the address printed
        is one a browser can open at once (the page itself says when no game has ended)."""
        assert self.evaluator is not None
        deadline = time.monotonic() + PAGE_WAIT_S
        while time.monotonic() < deadline and self.evaluator.alive():
            if len(self.evaluator.metrics()):
                return
            time.sleep(0.2)

    def check_alive(self) -> None:
        """Raise ChildDied, with its last log lines, if any child has exited."""
        for child in self.children:
            if not child.alive():
                raise ChildDied(f"{child.name} died:\n{child.log_tail()}")

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _error: BaseException | None,
        _traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def run(self) -> dict[str, Any]:
        """`a3c run`: start, supervise (progress, restarts, the stop conditions), stop, and
        write summary.json; returns the summary."""
        config = self.config
        print(
            f"a3c run: {config.env}, {config.workers} workers, run dir {self.run_dir}", flush=True
        )
        self.start()
        if self.page_url is not None:
            self._wait_for_page()
            print(f"a3c run: watch it learn at {self.page_url}", flush=True)
        if self.tensorboard_dir is not None:
            print(f"a3c run: TensorBoard scalars in {self.tensorboard_dir}", flush=True)
        started = time.monotonic()
        stopped_by = "interrupt"
        last = (started, 0.0, 0.0)
        metrics = Samples()
        frames = 0.0
        previous_handler = signal.signal(signal.SIGTERM, _raise_interrupt)
        # Started in the background by a non-interactive shell, SIGINT arrives ignored.
        previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            while True:
                time.sleep(min(config.progress_interval, 1.0))
                self._revive_dead()
                now = time.monotonic()
                metrics = self.learner.metrics() or metrics
                frames = metrics.get("a3c_learner_env_frames_total")
                updates = metrics.get("a3c_learner_updates_total")
                evals = eval_summary(read_eval(self.eval_log), config.eval_window)
                if now - last[0] >= config.progress_interval:
                    self._print_progress(now - started, frames, updates, metrics, evals, last)
                    last = (now, frames, updates)
                if config.max_frames is not None and frames >= config.max_frames:
                    stopped_by = "max_frames"
                    break
                if config.duration is not None and now - started >= config.duration:
                    stopped_by = "duration"
                    break
                if (
                    config.target_score is not None
                    and evals["episodes"] >= config.eval_window
                    and evals["mean_score"] >= config.target_score
                ):
                    stopped_by = "target_score"
                    break
        except KeyboardInterrupt:
            print("\na3c run: interrupted; stopping cleanly", flush=True)
        finally:
            signal.signal(signal.SIGTERM, previous_handler)
            signal.signal(signal.SIGINT, previous_int)
            wall = time.monotonic() - started
            self.stop()
        return self._summarise(stopped_by, wall, frames)

    def _print_progress(
        self,
        elapsed: float,
        frames: float,
        updates: float,
        metrics: Samples,
        evals: dict[str, Any],
        last: tuple[float, float, float],
    ) -> None:
        span = max(time.monotonic() - last[0], 1e-6)
        score = (
            "-"
            if evals["mean_score"] is None
            else (
                f"{evals['mean_score']:.1f} over {len(evals['last_scores'])} "
                f"(v{evals['last_model_version']})"
            )
        )
        print(
            f"[{elapsed:6.0f}s] frames {frames:,.0f} ({(frames - last[1]) / span:,.0f}/s) | "
            f"updates {updates:,.0f} ({(updates - last[2]) / span:,.1f}/s) | "
            f"version {metrics.get('a3c_learner_model_version'):,.0f} | "
            f"workers {metrics.get('a3c_learner_workers_active'):.0f} | eval {score}",
            flush=True,
        )

    def _revive_dead(self) -> None:
        for child in self.children:
            if child.process is not None and not child.alive():
                code = child.process.returncode
                print(
                    f"a3c run: {child.name} exited with {code}; last log lines:\n"
                    f"{child.log_tail()}",
                    flush=True,
                )
                if child.restarts >= MAX_RESTARTS:
                    raise RuntimeError(f"{child.name} keeps dying; see {child.log_path}")
                child.restarts += 1
                child.start(self.env)

    def stop(self) -> None:
        """Workers and evaluator first (in parallel), then the learner's final checkpoint."""
        others = [child for child in self.children if child is not self.learner]
        for child in others:
            if child.process is not None and child.alive():
                child.process.send_signal(signal.SIGTERM)
        for child in others:
            child.stop()
        code = self.learner.stop()
        if code not in (0, None):
            print(f"a3c run: learner exited with {code}:\n{self.learner.log_tail()}", flush=True)

    def _summarise(self, stopped_by: str, wall: float, run_frames: float) -> dict[str, Any]:
        """`frames` and `updates` are the model's totals (a warm start or resume carries them
        on); `frames_this_run` and `frames_per_s` count this run only."""
        state, _ = load_newest(self.run_dir / "checkpoints")
        frames = int(state["frames"]) if state else 0
        summary: dict[str, Any] = {
            "env": self.config.env,
            "algorithm_version": ALGORITHM_VERSION,
            "frames": frames,
            "frames_this_run": int(run_frames),
            "updates": int(state.get("updates", 0)) if state else 0,
            "wall_s": round(wall, 2),
            "frames_per_s": round(run_frames / wall, 1) if wall > 0 else 0.0,
            "model_version": int(state["model_version"]) if state else 0,
            "workers": self.config.workers,
            "stopped_by": stopped_by,
            "eval": eval_summary(read_eval(self.eval_log), self.config.eval_window),
            "run_dir": str(self.run_dir),
        }
        (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        evals = summary["eval"]
        mean = "-" if evals["mean_score"] is None else f"{evals['mean_score']:.1f}"
        print(
            f"a3c run: stopped by {stopped_by} after {wall:.0f}s: {int(run_frames):,} frames "
            f"({summary['frames_per_s']:,.0f}/s; model total {frames:,}), "
            f"version {summary['model_version']:,}, "
            f"eval mean {mean} over {len(evals['last_scores'])} games; "
            f"summary in {self.run_dir / 'summary.json'}",
            flush=True,
        )
        return summary


def _raise_interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def run_local(config: Config) -> dict[str, Any]:
    return LocalCluster(config).run()
