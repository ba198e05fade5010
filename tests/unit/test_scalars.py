"""TensorBoard scalars: the learner's from two scrapes of its /metrics, and event files that
TensorBoard reads back with the expected tags (skipped without the `tensorboard` extra)."""

import pytest

from common.metrics import learner_metrics
from common.samples import Samples
from common.scalars import (
    EVALUATOR_TAGS,
    LEARNER_TAGS,
    LearnerScalars,
    evaluator_scalars,
    learner_scalars,
    open_writer,
)


def scrape(metrics):
    from prometheus_client import generate_latest

    return Samples.parse(generate_latest(metrics.registry).decode())


def test_learner_scalars_are_rates_and_means_over_the_window():
    metrics = learner_metrics()
    before = scrape(metrics)
    metrics.env_frames.inc(3200)
    metrics.updates.inc(10)
    for staleness in (1, 1, 2, 4):
        metrics.staleness.observe(staleness)
    metrics.rejected.labels(reason="stale").inc(2)
    metrics.loss.labels(term="entropy").set(1.3)
    metrics.model_version.set(10)
    values = learner_scalars(scrape(metrics), before, seconds=2.0)
    assert set(values) == set(LEARNER_TAGS)
    assert values["charts/frames_per_s"] == 1600 and values["charts/updates_per_s"] == 5
    assert values["charts/staleness"] == 2.0 and values["charts/gradients_rejected_per_s"] == 1
    assert values["losses/entropy"] == pytest.approx(1.3)
    assert values["charts/model_version"] == 10


class RecordingWriter:
    def __init__(self):
        self.points = []

    def add(self, values, step, wall_time=None):
        self.points.append((step, values))


def test_the_learner_writes_a_point_per_interval_and_none_for_its_resumed_totals():
    metrics = learner_metrics()
    metrics.env_frames.inc(1_000_000)  # a resumed run's totals, before the first reading
    writer = RecordingWriter()
    scalars = LearnerScalars(writer, lambda: scrape(metrics), interval=10.0)
    scalars.tick(now=100.0)
    metrics.env_frames.inc(800)
    scalars.tick(now=105.0)  # inside the interval: nothing read, nothing written
    assert writer.points == []
    metrics.env_frames.inc(200)
    scalars.tick(now=110.0)
    [(step, values)] = writer.points
    assert step == 1_001_000 and values["charts/frames_per_s"] == 100.0


def test_no_staleness_before_the_first_gradient():
    metrics = learner_metrics()
    page = scrape(metrics)
    assert learner_scalars(page, page, 5.0)["charts/staleness"] is None


def test_event_files_hold_the_expected_tags(tmp_path):
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    metrics = learner_metrics()
    before = scrape(metrics)
    metrics.env_frames.inc(100)
    metrics.staleness.observe(1)
    for term in ("policy_loss", "value_loss", "entropy", "grad_norm"):
        metrics.loss.labels(term=term).set(0.5)
    learner = open_writer(tmp_path, "learner")
    evaluator = open_writer(tmp_path, "evaluator")
    assert learner is not None and evaluator is not None
    learner.add(learner_scalars(scrape(metrics), before, 1.0), step=100)
    evaluator.add(evaluator_scalars(3.0, 2.5, 2.5, 180), step=100)
    evaluator.add({"eval/score": float("nan"), "eval/mean_score": None}, step=200)  # skipped
    learner.close()
    evaluator.close()

    def tags(role):
        events = EventAccumulator(str(tmp_path / role))
        events.Reload()
        return events, set(events.Tags()["scalars"])

    events, found = tags("learner")
    assert found == set(LEARNER_TAGS)
    assert [(e.step, e.value) for e in events.Scalars("charts/frames_per_s")] == [(100, 100.0)]
    events, found = tags("evaluator")
    assert found == set(EVALUATOR_TAGS)
    assert [e.step for e in events.Scalars("eval/score")] == [100]


def test_no_directory_no_writer():
    assert open_writer(None, "learner") is None
