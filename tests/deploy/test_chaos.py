"""The compose stack under a few minutes of scheduled faults (bench/chaos.py, the short
version of `make chaos`): every invariant holds. Run by `make test-compose`; skipped elsewhere.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench import chaos

pytestmark = pytest.mark.skipif(
    os.environ.get("RUN_COMPOSE_TESTS") != "1",
    reason="needs a Docker engine and the image: run by `make test-compose`",
)


def test_the_stack_survives_a_schedule_of_faults_with_every_invariant_held(
    tmp_path: Path,
) -> None:
    image = os.environ.get("TEST_COMPOSE_IMAGE", "a3c-breakout:ci")
    report = chaos.run(seconds=150, seed=7, factor=20, image=image, out=None, work=tmp_path)
    assert report["invariant_failures"] == []
    assert report["faults_injected"] >= 5 and report["fault_kinds"] >= 4
    assert report["faults_recovered"] == report["faults_injected"]
    held = report["invariants"]
    for name in ("recovered_within_limit", "evaluator_scores_newer_versions"):
        assert held[name]["passed"] >= report["faults_injected"]
    assert held.get("no_unscheduled_exit", {}).get("failed", 0) == 0
    assert report["harness_errors"] == []
