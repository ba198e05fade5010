"""The benchmark harness works end to end (behaviour, never speed): every piece runs for a
few seconds on CartPole and writes results with the figures the issue asks for."""

import json
import subprocess
import sys

from bench.measure import bucket_quantile, histogram_buckets, window_buckets
from bench.report import render_markdown
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
    assert set(result["bytes_per_update"]) == {"float32", "float16"}
    assert result["bytes_per_update"]["float16"] < result["bytes_per_update"]["float32"]
    assert 0 <= result["staleness_p50"] <= result["staleness_p99"]
    assert set(result["worker_time_split"]) == {"env", "forward", "backward", "wire", "other"}
    # The sweep at the default wire, then the variants: the other dtype, and weights every 4th.
    phases = [
        (p["senders"], p["wire_dtype"], p["sync_interval"]) for p in result["learner_scaling"]
    ]
    assert phases == [
        (1, "float16", 1), (2, "float16", 1), (1, "float32", 1), (1, "float16", 4),
    ]  # fmt: skip
    assert result["learner_max_updates_per_s_at"]["wire_dtype"] in ("float16", "float32")
    assert result["learner_default_wire_max_updates_per_s"] > 0
    for name, figure in result["figures"].items():
        assert figure["configuration"], name
        assert figure["loadavg_1m"] and figure["machine_busy_cores"], name
    assert result["details"]["system"]["configuration"]["evaluator"] is True
    table = (tmp_path / "results.md").read_text()
    assert "| system_frames_per_s |" in table and "| 2 | float16 | 1 |" in table


def test_quantiles_come_from_the_window_only():
    before = {'h_bucket{le="0.0"}': 10, 'h_bucket{le="1.0"}': 10, 'h_bucket{le="+Inf"}': 10}
    after = {'h_bucket{le="0.0"}': 11, 'h_bucket{le="1.0"}': 19, 'h_bucket{le="+Inf"}': 20}
    window = window_buckets(after, before, "h")
    assert window == [(0.0, 1), (1.0, 9), (float("inf"), 10)]
    assert bucket_quantile(window, 0.5) == 1.0
    assert bucket_quantile(window, 0.99) == float("inf")
    assert bucket_quantile(histogram_buckets(before, "h"), 0.5) == 0.0
    assert bucket_quantile([], 0.5) is None


def test_report_renders_partial_results():
    text = render_markdown({"errors": {"system": "boom"}, "figures": {}})
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
