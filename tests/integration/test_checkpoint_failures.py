"""A real learner whose checkpoint writes fail, as on a full disk: training goes on, the
failures are logged and counted, the older checkpoints stay as they were, and writing resumes
once space returns.

The disk is filled by the kernel's file-size limit on the learner process (RLIMIT_FSIZE, set
from outside with prlimit): every write past the limit fails with EFBIG in the write call, the
way ENOSPC does on a full volume, and raising the limit again is space returning. Unlike a
read-only directory it also holds for root, and unlike a tmpfs it needs no mount privilege.
"""

from __future__ import annotations

import contextlib
import resource
from pathlib import Path

import pytest

from common.checkpoint import PATTERN, list_checkpoints, load_newest
from tests.conftest import Service, wait_for
from tests.integration.test_cluster import start_workers

pytestmark = pytest.mark.skipif(
    not hasattr(resource, "prlimit"), reason="needs prlimit (Linux) to limit another process"
)

FAILURES = "a3c_learner_checkpoint_failures_total"


def settled(directory: Path) -> dict[str, tuple[int, int]]:
    """Every file in the directory with its size and mtime, seen between two write attempts:
    a write under way has a temp file for some milliseconds of each interval, a partial file
    left behind would be there for good (and time this out)."""

    def between_writes() -> dict[str, tuple[int, int]] | None:
        found = {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in directory.iterdir()}
        return None if any(name.startswith(".tmp") for name in found) else found

    return wait_for(between_writes, 10, "no temp file in the checkpoint dir", interval=0.01)


def write_failures(learner: Service) -> float:
    return learner.value(FAILURES, stage="write")


def test_a_full_disk_fails_checkpoints_but_not_training_and_writing_resumes(cluster, tmp_path):
    directory = tmp_path / "ckpt"
    learner = cluster.start(
        "learner", None, "--checkpoint-interval", "1", "--keep-checkpoints", "2"
    )
    (worker,) = start_workers(cluster, 1)
    wait_for(lambda: learner.value("a3c_learner_checkpoints_total") >= 2, 60, "checkpoints")
    assert write_failures(learner) == 0

    # A limit well under one checkpoint, well over the learner's log (its stdout and stderr,
    # which must stay writable for the failures to be logged).
    size = min(path.stat().st_size for path in list_checkpoints(directory))
    limit = size // 2
    assert learner.log_path.stat().st_size < limit // 4, "the log would hit the limit too"
    pid = learner.popen.pid
    soft, hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (limit, hard))
    try:
        wait_for(lambda: write_failures(learner) >= 1, 30, "a failed checkpoint write")
        kept = settled(directory)
        assert kept and all(PATTERN.match(name) for name in kept), kept
        written = learner.value("a3c_learner_checkpoints_total")
        updates = learner.value("a3c_learner_updates_total")
        wait_for(lambda: write_failures(learner) >= 3, 30, "every interval to try again")
        wait_for(
            lambda: learner.value("a3c_learner_updates_total") >= updates + 20,
            60,
            "gradients to be applied while checkpoints fail",
        )
        assert settled(directory) == kept, "nothing pruned, no partial file left behind"
        assert learner.value("a3c_learner_checkpoints_total") == written
        assert learner.popen.poll() is None
    finally:
        with contextlib.suppress(ProcessLookupError):  # a dead learner fails the test above
            resource.prlimit(pid, resource.RLIMIT_FSIZE, (soft, hard))

    # Space is back: the next interval writes, and only now are old ones pruned.
    failed = write_failures(learner)
    wait_for(
        lambda: learner.value("a3c_learner_checkpoints_total") > written,
        30,
        "a checkpoint once space has returned",
    )
    newest, problems = load_newest(directory)
    assert newest is not None and not problems
    assert newest["model_version"] > max(int(PATTERN.match(name)[1]) for name in kept)
    assert write_failures(learner) <= failed + 1, "at most the write under way as it returned"
    log = learner.log()
    assert "not written: File too large (EFBIG)" in log, log[-2000:]
    assert str(directory / "ckpt-") in log
    assert learner.popen.poll() is None and worker.popen.poll() is None
