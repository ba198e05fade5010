"""`a3c evaluate`, `record`, `plot` and `export` on real files, as a user runs them."""

import json
import subprocess
import sys

import pytest
import torch

from common.checkpoint import atomic_save
from common.envs import env_spaces
from common.model import ActorCritic
from common.weights import layout_digest
from tests.conftest import REPO


def a3c(*args, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def breakout_model(tmp_path_factory):
    torch.manual_seed(0)
    model = ActorCritic(*env_spaces("ALE/Breakout-v5"))
    path = tmp_path_factory.mktemp("model") / "model.pt"
    atomic_save(
        path,
        {
            "model": {k: v.half() for k, v in model.state_dict().items()},
            "layout": layout_digest(model),
            "env": "ALE/Breakout-v5",
            "model_version": 12,
            "frames": 3456,
        },
    )
    return path


def test_evaluate_plays_full_games_under_the_protocol(breakout_model, tmp_path):
    out = tmp_path / "eval.json"
    result = a3c(
        "evaluate",
        "--checkpoint",
        str(breakout_model),
        "--episodes",
        "2",
        "--eval-policy",
        "sample",
        "--out",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert report["episodes"] == 2 and len(report["scores"]) == 2
    assert report["mean_score"] == sum(report["scores"]) / 2
    assert report["model_version"] == 12 and report["train_frames"] == 3456
    assert report["protocol"]["sticky_actions"] == 0.25 and report["protocol"]["noop_max"] == 30
    assert all(frames > 0 for frames in report["episode_frames"])


def test_evaluate_refuses_bad_checkpoints_clearly(breakout_model, tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00" * 100)
    for args, message in [
        (["--checkpoint", str(tmp_path / "missing.pt")], "missing.pt"),
        (["--checkpoint", str(garbage)], "unreadable"),
        (["--checkpoint", str(breakout_model), "--env", "CartPole-v1"], "trained on"),
    ]:
        result = a3c("evaluate", *args, "--episodes", "1")
        assert result.returncode == 2 and message in result.stderr, result.stderr


def test_record_writes_a_gif_of_a_whole_game(breakout_model, tmp_path):
    from PIL import Image

    out = tmp_path / "game.gif"
    result = a3c(
        "record", "--checkpoint", str(breakout_model), "--out", str(out), "--eval-policy", "sample"
    )
    assert result.returncode == 0, result.stderr
    with Image.open(out) as gif:
        assert gif.n_frames > 20 and gif.size == (160, 210)


def test_plot_draws_the_learning_curve(tmp_path):
    lines = [
        json.dumps(
            {
                "env": "ALE/Breakout-v5",
                "time": 1000.0 + 60 * i,
                "frames": 10_000 * i,
                "version": i,
                "score": float(i % 7),
                "mean_score": 3.0,
            }
        )
        for i in range(30)
    ]
    (tmp_path / "eval.jsonl").write_text("\n".join(lines) + "\n")
    out = tmp_path / "curve.png"
    result = a3c("plot", str(tmp_path), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert a3c("plot", str(tmp_path / "nothing"), "--out", str(out)).returncode == 2


def test_export_ships_a_float16_model_without_optimizer_state(tmp_path):
    model = ActorCritic(*env_spaces("CartPole-v1"))
    checkpoint = tmp_path / "ckpt-000000000007.pt"
    atomic_save(checkpoint, {
        "model": model.state_dict(), "optimizer": {"state": {}, "param_groups": []},
        "model_version": 7, "frames": 560, "layout": layout_digest(model), "env": "CartPole-v1",
    })  # fmt: skip
    out = tmp_path / "shipped.pt"
    result = a3c("export", "--checkpoint", str(checkpoint), "--out", str(out))
    assert result.returncode == 0, result.stderr
    shipped = torch.load(out, weights_only=True)
    assert "optimizer" not in shipped
    assert (shipped["model_version"], shipped["frames"], shipped["env"]) == (7, 560, "CartPole-v1")
    assert all(tensor.dtype == torch.float16 for tensor in shipped["model"].values())
    played = a3c("evaluate", "--checkpoint", str(out), "--env", "CartPole-v1", "--episodes", "1")
    assert played.returncode == 0, played.stderr
    missing = a3c("export", "--checkpoint", str(tmp_path / "nope.pt"), "--out", str(out))
    assert missing.returncode == 2 and "unreadable" in missing.stderr


def test_a_model_file_plays_on_the_frame_size_and_memory_it_was_trained_with(tmp_path):
    from common.config import load_config
    from services.evaluator.offline import evaluate_checkpoint, load_policy

    model = ActorCritic(*env_spaces("ALE/Breakout-v5", 84))
    path = tmp_path / "model84.pt"
    state = {
        "model": model.state_dict(),
        "layout": layout_digest(model),
        "frame_size": 84,
        "memory_reset": "life",
    }
    atomic_save(path, {**state, "env": "ALE/Breakout-v5"})
    config = load_config({"checkpoint": path, "episodes": 1, "out": tmp_path / "e.json"})
    loaded, saved = load_policy(config)  # no --frame-size: the file says 84
    assert loaded.obs_shape == (1, 84, 84) and saved["frame_size"] == 84
    assert saved["memory_reset"] == "life"
    assert evaluate_checkpoint(config)["episodes"] == 1
