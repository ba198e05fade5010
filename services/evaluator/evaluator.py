"""The evaluator: plays full games with the newest broadcast weights under the standard
evaluation protocol (common.envs) and exports the scores.

It subscribes to the learner's weight broadcast (it never talks back, so it cannot slow the
learner down), keeps reading it during a game (a game can last 27,000 steps), swaps in the
newest weights only between games, and reports the mean over the last
`eval_window` games together with the model version and training frames behind each score.
It keeps the best-scoring weights on disk, labelled with the games those very weights played
(a moving window mixes several versions, so it says nothing about any one of them).

On its metrics port it also serves a page (`/`) with its latest and best games as GIFs and
the learning curve (services.evaluator.page); the frames come from the emulator's screen, not
the observations, so recording them changes nothing the agent sees (services.evaluator.gallery).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

from common.checkpoint import atomic_save
from common.config import Config, split_address
from common.envs import env_spaces, is_atari, make_env
from common.evaluation import EpisodeResult, play_episode
from common.metrics import EvaluatorMetrics, Health, evaluator_metrics
from common.model import ActorCritic
from common.protocol import Message, ProtocolError, Session, WeightsBody
from common.scalars import evaluator_scalars, open_writer
from common.seeding import evaluation_seed
from common.transport import Subscriber, curve_client
from common.weights import layout_digest, load_parameter_vector
from services.evaluator.gallery import Gallery, Thinned, screen_source
from services.evaluator.gif import pillow_available
from services.evaluator.page import PageView, Point, Site, parse_links

log = logging.getLogger("evaluator")

POLL_EVERY_STEPS = 256
"""During a game, the broadcast is read (and health ticked) every this many steps."""
CURVE_POINTS = 1000
"""Games the page's learning curve keeps, evenly thinned over the whole run."""


class Evaluator:
    def __init__(
        self, config: Config, metrics: EvaluatorMetrics | None = None, site: Site | None = None
    ) -> None:
        self.config = config
        self.metrics = metrics or evaluator_metrics()
        obs_shape, n_actions = env_spaces(config.env, config.frame_size)
        self.model = ActorCritic(obs_shape, n_actions)
        self.layout = layout_digest(self.model)
        # Atari's screen is read from the emulator; other envs draw one only in rgb_array mode
        # (which changes nothing else about them).
        render = None if is_atari(config.env) or not config.game_max_frames else "rgb_array"
        self.env = make_env(
            config.env,
            evaluation_seed(config.seed, 0),
            training=False,
            render_mode=render,
            frame_size=config.frame_size,
        )
        session = Session(
            f"evaluator-{config.resolved_worker_id}", config.shared_key(), config.max_message_bytes
        )
        host, port = split_address(config.learner)
        curve = curve_client(config.curve_key_file, config.curve_server_key_file)
        self.subscriber = Subscriber(session, host, port + 1, curve)
        self.version = -1
        self.train_frames = 0
        self.scores: deque[float] = deque(maxlen=config.eval_window)
        self.best_mean = float("-inf")
        self._version_scores: list[float] = []
        """Scores of the games played by the weights loaded now (the best model's label)."""
        self.episodes = 0
        self._last_end = float("-inf")
        self._newest: Message | None = None
        self._steps = 0
        self._health: Health | None = None
        self._setup_page(site or Site())
        self.scalars = open_writer(config.tensorboard_dir, "evaluator")

    def _setup_page(self, site: Site) -> None:
        self.site = site
        self.links = parse_links(self.config.page_links)
        self.screen = screen_source(self.env) if self.config.game_max_frames else None
        self.note = ""
        if not self.config.game_max_frames:
            self.note = "Games are not recorded (game_max_frames is 0)."
        elif not pillow_available():
            self.note = "Games are not recorded: pillow is not installed."
        elif self.screen is None:
            self.note = f"Games are not recorded: {self.config.env} draws no frames here."
        self.gallery = Gallery(self.config.game_max_frames, recording=not self.note)
        self.metrics.game_bytes.set_function(lambda: self.gallery.nbytes)
        self.metrics.game_bytes_bound.set_function(lambda: self.gallery.bound)
        self.curve: Thinned[Point] = Thinned(CURVE_POINTS)
        for record in _read_history(self.config.eval_log, self.config.env):
            self.curve.add((record["frames"], record["score"], record["mean_score"]))
        self._publish()

    def _publish(self) -> None:
        """Render the page for the games so far (once per game, never per request)."""
        self.site.publish(
            PageView(
                env=self.config.env,
                policy=self.config.eval_policy,
                latest=self.gallery.latest,
                best=self.gallery.best,
                history=list(self.curve.items),
                episodes=self.curve.offered,
                window_mean=sum(self.scores) / len(self.scores) if self.scores else None,
                window=self.config.eval_window,
                links=self.links,
                note=self.note,
            )
        )

    def poll_weights(self, timeout_ms: int, load: bool = True) -> None:
        """Read the newest broadcast; load it now, or (`load=False`, mid-game) keep it for the
        next game, so one game is always played by one model version."""
        received = self.subscriber.recv_newest(timeout_ms)
        if received is None:
            return
        if received.error is not None:
            self.metrics.rejected.labels(reason=received.error.reason).inc()
            log.warning("refused broadcast: %s", received.error)
            return
        message = received.message
        assert message is not None
        if (
            message.type != "weights"
            or message.payload_as(WeightsBody).layout != self.layout
            or len(message.arrays) != 1
        ):
            self.metrics.rejected.labels(reason="model_mismatch").inc()
            log.warning("broadcast for another model or type (%s); ignored", message.type)
            return
        self.metrics.weights_received.inc()
        self._newest = message
        if load:
            self._load_newest()

    def _load_newest(self) -> None:
        message, self._newest = self._newest, None
        if message is None:
            return
        weights = message.payload_as(WeightsBody)
        if weights.model_version != self.version:
            try:
                load_parameter_vector(self.model, message.arrays[0], message.array_dtypes[0])
            except ProtocolError as error:
                # Refused before the model is touched: the evaluator keeps the weights it has.
                self.metrics.rejected.labels(reason=error.reason).inc()
                log.warning("refused broadcast weights: %s", error)
                return
            self.version, self.train_frames = weights.model_version, weights.frames
            self._version_scores = []

    def _during_game(self, score: float) -> None:
        self._steps += 1
        if self.gallery.recording and self.screen is not None:
            self.gallery.add(self.screen(), score)
        if self._steps % POLL_EVERY_STEPS == 0:
            self.poll_weights(0, load=False)
            if self._health is not None:
                self._health.tick()

    def evaluate_once(self, stop: threading.Event) -> EpisodeResult | None:
        self._load_newest()
        version, frames = self.version, self.train_frames
        started = time.time()
        self.gallery.start()
        result = play_episode(
            self.model,
            self.env,
            self.config.env,
            self.config.eval_policy,
            seed=evaluation_seed(self.config.seed, self.episodes),
            stop=stop,
            on_step=self._during_game,
            memory_reset=self.config.memory_reset,
        )
        if result is None:
            self.gallery.discard()
            return None
        self.episodes += 1
        self.scores.append(result.score)
        self._version_scores.append(result.score)
        mean = sum(self.scores) / len(self.scores)
        self.metrics.episodes.inc()
        self.metrics.last_score.set(result.score)
        self.metrics.score_mean.set(mean)
        self.metrics.model_version.set(version)
        self.metrics.train_frames.set(frames)
        self.metrics.episode_frames.set(result.frames)
        self.metrics.value_spread.set(result.value_spread)
        record = {
            "env": self.config.env,
            "time": started,
            "duration_s": round(time.time() - started, 3),
            "frames": frames,
            "version": version,
            "score": result.score,
            "mean_score": mean,
            "episode_frames": result.frames,
            "truncated": result.truncated,
            "policy": self.config.eval_policy,
            "value_spread": round(result.value_spread, 6),
        }
        log.info(
            "episode %d: score %.1f, mean %.1f over %d (version %d, %d frames)",
            self.episodes,
            result.score,
            mean,
            len(self.scores),
            version,
            frames,
        )
        if self.config.eval_log is not None:
            with self.config.eval_log.open("a") as handle:
                handle.write(json.dumps(record) + "\n")
        own_mean = sum(self._version_scores) / len(self._version_scores)
        if own_mean > self.best_mean:
            self.best_mean = own_mean
            self.metrics.best_score.set(own_mean)
            self._save_best(version, frames, mean)
        self._show(record, result)
        return result

    def _show(self, record: dict[str, Any], result: EpisodeResult) -> None:
        """The finished game on the page and in TensorBoard (after the protocol's work)."""
        self.gallery.finish(
            {
                "game": self.episodes,
                **{k: record[k] for k in ("env", "policy", "score", "version", "frames")},
                "length": result.steps,
                "game_frames": result.frames,
                "truncated": result.truncated,
                "started": record["time"],
                "time": time.time(),
            }
        )
        self.curve.add((record["frames"], result.score, record["mean_score"]))
        self._publish()
        if self.scalars is not None:
            self.scalars.add(
                evaluator_scalars(result.score, record["mean_score"], self.best_mean, result.steps),
                step=int(record["frames"]),
            )

    def _save_best(self, version: int, frames: int, window_mean: float) -> None:
        """`eval_scores` are the games these weights played (often one: weights change between
        games); `a3c evaluate` scores them properly."""
        path: Path | None = self.config.best_model_path
        if path is None:
            return
        state: dict[str, Any] = {
            "model": self.model.state_dict(),
            "model_version": version,
            "frames": frames,
            "layout": self.layout,
            "env": self.config.env,
            "frame_size": self.config.frame_size,
            "memory_reset": self.config.memory_reset,
            "eval_scores": list(self._version_scores),
            "eval_mean": sum(self._version_scores) / len(self._version_scores),
            "eval_window_mean": window_mean,
        }
        atomic_save(path, state)

    def run(self, stop: threading.Event, health: Health | None = None) -> None:
        self._health = health
        try:
            while not stop.is_set():
                self.poll_weights(200 if self.version >= 0 else 1000)
                if health is not None:
                    health.tick()
                # Counted from the end of the last game: long games of a good agent must not
                # run back to back and take a core from the workers.
                wait = self.config.eval_interval - (time.monotonic() - self._last_end)
                if self.version < 0 or wait > 0:
                    stop.wait(min(max(wait, 0.0), 0.2))
                    continue
                self.evaluate_once(stop)
                self._last_end = time.monotonic()
        finally:
            self.subscriber.close()
            self.env.close()
            if self.scalars is not None:
                self.scalars.close()


def run_evaluator(config: Config) -> None:
    from common.service import start_service

    metrics = evaluator_metrics()
    site = Site()  # a page from the start: the model and env take a while to load
    site.publish(PageView(config.env, config.eval_policy, links=parse_links(config.page_links)))
    # Health is judged on whole games, which can take minutes for a good Breakout agent.
    runtime = start_service(
        "evaluator",
        config.resolved_worker_id,
        config,
        metrics.registry,
        stale_after=900,
        routes=site.routes(),
    )
    if runtime.metrics_server is not None:
        log.info("page on http://%s:%d/", config.metrics_host, runtime.metrics_server.port)
    try:
        Evaluator(config, metrics, site).run(runtime.stop, runtime.health)
    finally:
        runtime.close()


def _read_history(path: Path | None, env: str) -> list[dict[str, Any]]:
    """This env's earlier games from eval.jsonl, so a restarted evaluator's curve starts where
    the run did, not at its own first game."""
    if path is None or not path.exists():
        return []
    records = []
    try:
        lines = path.read_text().splitlines()
    except OSError as error:
        log.warning("cannot read %s for the learning curve: %s", path, error)
        return []
    for line in lines:
        try:
            record = json.loads(line)
            if record.get("env") == env:
                records.append({k: float(record[k]) for k in ("frames", "score", "mean_score")})
        except (ValueError, KeyError, TypeError, AttributeError):
            continue  # a line being written, or of another format
    return records
