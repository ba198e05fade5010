"""The benchmark harness works end to end (behaviour, never speed): every piece runs for a
few seconds on CartPole and writes results with every headline figure (bench/run.py)."""

import json
import subprocess
import sys

import pytest

from bench.report import render_markdown
from bench.results import Results
from tests.conftest import REPO

HEADLINE = (
    "system_frames_per_s",
    "hogwild_frames_per_s",
    "ratio_vs_hogwild",
    "learner_max_updates_per_s",
)


def test_every_benchmark_runs_briefly_and_writes_its_figures(tmp_path):
    command = [
        sys.executable, "-m", "bench.run",
        "--env", "CartPole-v1", "--workers", "2", "--no-bracket",
        "--hogwild-seconds", "1.5", "--hogwild-warmup", "0.5",
        "--system-seconds", "2", "--system-warmup", "0.5",
        "--ceiling-seconds", "1", "--ceiling-warmup", "0.5",
        "--senders", "1,2", "--variant-senders", "1", "--sender-processes", "1",
        "--out-dir", str(tmp_path),
    ]  # fmt: skip
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-4000:]

    result = json.loads((tmp_path / "results.json").read_text())
    assert "errors" not in result
    for key in HEADLINE:
        assert result[key] > 0, key
    # Measured by the learner's byte counters, weights in every ack, by gradient and weights dtype.
    sizes = result["bytes_per_update"]
    assert set(sizes) == {
        "float16 gradients, float32 weights", "float32 gradients, float32 weights",
        "float16 gradients, float16 weights", "float16 gradients, bfloat16 weights",
    }  # fmt: skip
    default = sizes["float16 gradients, float32 weights"]
    assert default < sizes["float32 gradients, float32 weights"]
    assert sizes["float16 gradients, float16 weights"] < default
    assert sizes["float16 gradients, bfloat16 weights"] < default
    assert set(result["kb_per_frame"]) == set(sizes) and all(result["kb_per_frame"].values())
    system = result["system_bytes_per_update"]
    assert system["in"] > 0 and system["out"] > 0 and result["system_kb_per_frame"] > 0
    assert 0 <= result["staleness_p50"] <= result["staleness_p99"]
    assert set(result["worker_time_split"]) == {"env", "forward", "backward", "wire", "other"}
    # The sweep at the default wire, then the variants: the other dtype, weights every 4th,
    # and each other weights dtype (a learner of its own).
    phases = [
        (p["senders"], p["wire_dtype"], p["sync_interval"], p["weights_dtype"])
        for p in result["learner_scaling"]
    ]
    assert phases == [
        (1, "float16", 1, "float32"), (2, "float16", 1, "float32"),
        (1, "float32", 1, "float32"), (1, "float16", 4, "float32"),
        (1, "float16", 1, "float16"), (1, "float16", 1, "bfloat16"),
    ]  # fmt: skip
    assert result["learner_max_updates_per_s_at"]["wire_dtype"] in ("float16", "float32")
    assert result["learner_default_wire_max_updates_per_s"] > 0
    for name, figure in result["figures"].items():
        assert figure["configuration"], name
        assert figure["loadavg_1m"] and figure["machine_busy_cores"], name
    assert result["details"]["system"]["configuration"]["evaluator"] is True
    table = (tmp_path / "results.md").read_text()
    assert "| system_frames_per_s |" in table and "| 2 | float16 | 1 |" in table


def test_report_renders_partial_results():
    text = render_markdown(Results(errors={"system": "boom"}))
    assert "Failed: system" in text


def test_hogwild_adam_updates_the_shared_statistics_in_place():
    import torch

    from bench.hogwild import shared_adam, shared_adam_state
    from common.model import ActorCritic

    model = ActorCritic((4,), 2)
    state = shared_adam_state(model)
    optimizer = shared_adam(model, state, lr=1e-3)
    before = [p.detach().clone() for p in model.parameters()]
    for param in model.parameters():
        param.grad = torch.ones_like(param)
    optimizer.step()
    assert all(float(step) == 1.0 for step, _, _ in state)
    assert all(float(m.abs().sum()) > 0 for _, m, _ in state)
    assert all(not torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True))
    assert all(t.is_shared() for entry in state for t in entry)


def test_the_learning_benchmark_trains_to_its_marks_scores_them_and_resumes(tmp_path):
    """Two marks on CartPole, a few games each; a second call with a later mark trains only
    the frames it lacks, from the learner's checkpoint or, where that is gone (a fresh clone
    keeps only the exported marks), from the newest mark's model."""
    import shutil

    runs, out = tmp_path / "runs", tmp_path / "learning.json"
    base = [
        sys.executable, "-m", "bench.learning", "--env", "CartPole-v1", "--seeds", "1,2",
        "--episodes", "3", "--runs-dir", str(runs), "--out", str(out),
    ]  # fmt: skip

    def bench(*args: str) -> dict:
        done = subprocess.run([*base, *args], cwd=REPO, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-4000:]
        return json.loads(out.read_text())

    result = bench("--frames", "8000", "--marks", "4000")
    assert [mark["frames"] for mark in result["marks"]] == [4000, 8000]
    assert result["algorithm_version"] >= 2 and result["config"]["env"] == "CartPole-v1"
    for mark in result["marks"]:
        lo, hi = mark["ci95"]
        assert lo <= mark["mean_score"] <= hi
        assert [entry["seed"] for entry in mark["per_seed"]] == [1, 2]
        for entry in mark["per_seed"]:
            assert len(entry["scores"]) == 3 and entry["frames"] >= mark["frames"]
    assert out.with_suffix(".md").read_text().startswith("# Learning benchmark")

    first_frames = result["marks"][-1]["per_seed"][0]["frames"]
    shutil.rmtree(runs / "default" / "seed-2" / "checkpoints")
    again = bench("--frames", "16000", "--marks", "4000,8000")
    assert [mark["frames"] for mark in again["marks"]] == [4000, 8000, 16000]
    assert again["marks"][1]["per_seed"][0]["frames"] == first_frames
    assert again["marks"][2]["per_seed"][0]["frames"] >= 16000
    seed_2 = [mark["per_seed"][1]["frames"] for mark in again["marks"]]
    assert seed_2[2] >= 16000 and seed_2[2] - seed_2[1] < 16000, "warm start kept the frames"


def test_learning_marks_always_end_at_the_last_frame_count():
    from bench.learning import marks_for

    assert marks_for(10_000_000, None) == [2_500_000, 5_000_000, 10_000_000]
    assert marks_for(5_000_000, None) == [2_500_000, 5_000_000]
    assert marks_for(1_000, [500, 2_000]) == [500, 1_000]


def test_learning_interval_covers_the_mean_and_narrows_with_more_games():
    from bench.learning import bootstrap_ci

    few = bootstrap_ci([[0.0, 10.0, 5.0], [2.0, 8.0, 4.0]])
    many = bootstrap_ci([[0.0, 10.0, 5.0] * 20, [2.0, 8.0, 4.0] * 20])
    assert few[0] <= 29 / 6 <= few[1] and many[0] <= 29 / 6 <= many[1]
    assert many[1] - many[0] < few[1] - few[0]
    assert bootstrap_ci([[3.0, 3.0]]) == [3.0, 3.0]


def test_lstm_health_tells_a_dead_model_from_a_live_one(tmp_path):
    """A model whose LSTM output gates are forced shut (as in the Breakout run that died, where
    `h` averaged 0.006) is reported collapsed; the freshly initialised one is not."""
    import torch

    from bench import lstm_health
    from common.envs import env_spaces
    from common.model import ActorCritic
    from common.weights import layout_digest

    torch.manual_seed(0)
    live = ActorCritic(*env_spaces("CartPole-v1"))
    dead = ActorCritic(*env_spaces("CartPole-v1"))
    with torch.no_grad():
        size = dead.lstm_size  # gates in the order i, f, g, o
        dead.lstm.bias_ih[3 * size :].fill_(-50.0)  # o = 0: h = 0, whatever the input
    for name, model in (("live", live), ("dead", dead)):
        torch.save(
            {"model": model.state_dict(), "layout": layout_digest(model)}, tmp_path / f"{name}.pt"
        )
    out = tmp_path / "health.json"
    models = [str(tmp_path / "live.pt"), str(tmp_path / "dead.pt")]
    assert (
        lstm_health.main(["--env", "CartPole-v1", "--games", "2", "--out", str(out), *models]) == 0
    )
    report = json.loads(out.read_text())
    live_report, dead_report = report[str(tmp_path / "live.pt")], report[str(tmp_path / "dead.pt")]
    assert live_report["verdict"] != "collapsed" and dead_report["verdict"] == "collapsed"
    assert dead_report["gate_preactivation"] > 10 * live_report["gate_preactivation"]
    assert dead_report["h"] < 1e-6 < live_report["h"]


def test_soak_reports_the_trend_of_memory_not_two_samples():
    from bench.soak import growth_percent, slope_per_minute

    noisy_flat = [(t, 100.0 + (3.0 if t % 120 == 0 else -3.0)) for t in range(600, 3601, 60)]
    assert abs(growth_percent(noisy_flat)) < 1.0
    leaking = [(float(t), 100.0 + t / 60.0) for t in range(600, 3601, 60)]
    assert slope_per_minute(leaking) == pytest.approx(1.0)
    assert growth_percent(leaking) == pytest.approx(100.0 * 50.0 / 110.0)  # from 110 MiB at 600 s
