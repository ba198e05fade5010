"""The system really learns: end-to-end `a3c run` as a user would start it (marked slow)."""

import json
import subprocess
import sys

import pytest

from common.config import Config
from tests.conftest import REPO

pytestmark = pytest.mark.slow


def a3c_run(tmp_path, *args, timeout):
    run_dir = tmp_path / "run"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "services.cli",
            "run",
            "--run-dir",
            str(run_dir),
            "--progress-interval",
            "10",
            *args,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    print(result.stdout[-4000:], result.stderr[-4000:])
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir, json.loads((run_dir / "summary.json").read_text())


def test_cartpole_is_solved_within_500k_frames(tmp_path):
    """Greedy evaluation mean >= 475 over the evaluator's 10-game window, 2 workers, at most
    500k frames, with the classic worker (one env, 20-step rollouts, lr 1e-3): solved after
    ~40k frames here, far inside the bound. With the defaults (16 envs x 5 steps) the final
    models of seeds 1 and 2 score 500.0 greedy at 500k frames (`bench/learning/cp-16x5.md`),
    but the window over the evaluator's moving versions peaked at 448 and ended at 372 (seed
    1): that run is a benchmark figure, not a test outcome that holds on every run."""
    run_dir, summary = a3c_run(
        tmp_path,
        "--env",
        "CartPole-v1",
        "--workers",
        "2",
        "--lr",
        "1e-3",
        "--num-envs",
        "1",
        "--n-steps",
        "20",
        "--seed",
        "0",
        "--eval-policy",
        "greedy",
        "--max-frames",
        "500000",
        "--target-score",
        "475",
        "--eval-interval",
        "2",
        timeout=900,
    )
    assert summary["stopped_by"] == "target_score", summary
    assert summary["eval"]["mean_score"] >= 475
    assert summary["eval"]["last_train_frames"] <= 500_000
    assert summary["frames"] > 0 and summary["updates"] > 0
    assert (run_dir / "best.pt").exists()


def test_a_short_breakout_run_goes_through_the_whole_pipeline(tmp_path):
    """Atari frames -> gradients -> applied updates -> a full evaluation game, scored raw."""
    run_dir, summary = a3c_run(
        tmp_path,
        "--env",
        "ALE/Breakout-v5",
        "--workers",
        "2",
        "--duration",
        "75",
        "--eval-interval",
        "0",
        "--checkpoint-interval",
        "30",
        timeout=300,
    )
    assert summary["stopped_by"] == "duration"
    defaults = Config()
    agent_frames_per_update = defaults.n_steps * defaults.num_envs * 4  # frameskip 4
    assert summary["updates"] >= 20
    # Every emulator frame counts: the wrappers' no-op starts and FIRE presses too (a step
    # that ends a game stops inside its frameskip, a few frames in a thousand).
    assert summary["frames"] >= 0.99 * summary["updates"] * agent_frames_per_update
    games = [json.loads(line) for line in (run_dir / "eval.jsonl").read_text().splitlines()]
    assert games, "no evaluation game finished"
    first = games[0]
    # An untrained agent may never serve after its first lost ball: then the game ends at
    # the protocol's frame cap, which is still a whole game.
    assert 0 < first["episode_frames"] <= 108_000 and first["score"] >= 0
    assert first["version"] >= 0 and first["policy"] == "sample"
    assert list((run_dir / "checkpoints").glob("ckpt-*.pt"))
    assert json.loads((run_dir / "config.json").read_text())["env"] == "ALE/Breakout-v5"
