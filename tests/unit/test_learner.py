"""Learner pieces that need no sockets: its checkpoints on a failing disk, its start-up order,
and the rate limit on rejection logs. The sockets are replaced by fakes that record."""

from __future__ import annotations

import errno
import logging
import os
import threading
from pathlib import Path

import pytest

from common.config import load_config
from services.learner import learner as learner_module


class FakeSocket:
    """Stands in for RouterServer and Publisher: nothing arrives, everything sent is kept."""

    def __init__(self, *_args: object) -> None:
        self.sent: list[str] = []
        self.closed = False

    def recv(self, _timeout_ms: int) -> None:
        return None

    def publish(self, msg_type: str, *_args: object) -> int:
        self.sent.append(msg_type)
        return 0

    def refused_handshakes(self) -> int:
        return 0

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def no_sockets(monkeypatch):
    monkeypatch.setattr(learner_module, "RouterServer", FakeSocket)
    monkeypatch.setattr(learner_module, "Publisher", FakeSocket)


@pytest.fixture
def clock(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(learner_module.time, "monotonic", lambda: now[0])
    return now


def make_learner(directory: Path, **values) -> learner_module.Learner:
    config = load_config({
        "env": "CartPole-v1", "checkpoint_dir": str(directory), "metrics_port": 0,
        "checkpoint_interval": 10.0, **values,
    })  # fmt: skip
    return learner_module.Learner(config)


def failures(learner: learner_module.Learner, stage: str) -> float | None:
    registry = learner.metrics.registry
    return registry.get_sample_value("a3c_learner_checkpoint_failures_total", {"stage": stage})


def written(learner: learner_module.Learner) -> float | None:
    return learner.metrics.registry.get_sample_value("a3c_learner_checkpoints_total")


def names(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir())


def disk_full(monkeypatch) -> None:
    """Every fsync fails as on a full disk: after the temp file has its bytes, so the write
    is really under way when it fails."""

    def full(_fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)


def test_a_failed_checkpoint_write_is_logged_counted_and_retried_next_interval(
    tmp_path, monkeypatch, caplog, clock, no_sockets
):
    learner = make_learner(tmp_path, keep_checkpoints=1)
    assert failures(learner, "write") == 0 and failures(learner, "load") == 0, "pre-declared"
    assert learner.checkpoint() is True
    assert names(tmp_path) == ["ckpt-000000000000.pt"]
    learner.version = 1

    with monkeypatch.context() as patch:
        disk_full(patch)
        with caplog.at_level(logging.ERROR, logger="learner"):
            assert learner.checkpoint() is False
        assert failures(learner, "write") == 1 and written(learner) == 1
        assert names(tmp_path) == ["ckpt-000000000000.pt"], "kept, not pruned; no temp file"
        (line,) = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert str(tmp_path / "ckpt-000000000001.pt") in line and "ENOSPC" in line, line

        clock[0] += 9.9
        learner.tick()
        assert failures(learner, "write") == 1, "no retry before the interval is up"
        clock[0] += 0.1
        learner.tick()
        assert failures(learner, "write") == 2, "the next interval tries again"
        assert names(tmp_path) == ["ckpt-000000000000.pt"]

    clock[0] += 10.0
    learner.tick()  # space is back
    assert written(learner) == 2 and failures(learner, "write") == 2
    assert names(tmp_path) == ["ckpt-000000000001.pt"], "written, and only now pruned"


def test_a_failing_final_checkpoint_does_not_crash_the_stop(tmp_path, monkeypatch, no_sockets):
    learner = make_learner(tmp_path)
    disk_full(monkeypatch)
    stop = threading.Event()
    stop.set()
    learner.serve(stop)
    assert failures(learner, "write") == 1
    assert learner.server.closed and learner.publisher.closed
    assert names(tmp_path) == []


def test_resume_counts_corrupt_files_as_load_failures(tmp_path, no_sockets):
    make_learner(tmp_path).checkpoint()
    (tmp_path / "ckpt-000000000009.pt").write_bytes(b"not a checkpoint")
    learner = make_learner(tmp_path)
    assert failures(learner, "load") == 1 and failures(learner, "write") == 0


def test_the_learner_serves_metrics_only_after_it_has_resumed(tmp_path, monkeypatch, no_sockets):
    """What /metrics would show the moment it answers: the resumed version, never 0."""
    first = make_learner(tmp_path)
    first.version = 7
    first.checkpoint()
    seen: list[tuple[str, float | None]] = []

    class Runtime:
        stop = threading.Event()
        health = None

        def serve(self, registry, _config) -> None:
            seen.append(("metrics", registry.get_sample_value("a3c_learner_model_version")))

        def close(self) -> None:
            seen.append(("closed", None))

    def start_service(*_args, serve: bool = True, **_kwargs) -> Runtime:
        seen.append(("started, serving" if serve else "started", None))
        return Runtime()

    class Resumed(learner_module.Learner):
        def serve(self, stop, health=None) -> None:
            seen.append(("loop", self.version))

    monkeypatch.setattr("common.service.start_service", start_service)
    monkeypatch.setattr(learner_module, "Learner", Resumed)
    learner_module.run_learner(first.config)
    assert seen == [("started", None), ("metrics", 7.0), ("loop", 7), ("closed", None)]


def test_rejection_logs_are_rate_limited_but_say_what_they_held_back(clock):
    clock[0] = 0.0
    limiter = learner_module.LogLimiter(per_minute=2)
    assert [limiter.allow("decode") for _ in range(5)] == [0, 0, None, None, None]
    assert limiter.allow("shape") == 0
    clock[0] = 61.0
    assert limiter.allow("decode") == 3
