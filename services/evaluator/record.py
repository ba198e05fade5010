"""`a3c record`: a GIF of one full evaluation game played by a saved model, with the running
score drawn on every frame, at full size and every step (services.evaluator.gif writes it, as
it writes the evaluator's live games)."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from common.config import Config
from common.envs import make_env
from common.errors import UsageError
from common.evaluation import play_episode
from common.logs import setup_logging
from common.seeding import evaluation_seed
from services.evaluator.gif import FRAME_MS, encode_gif, pillow_available, to_palette, with_overlay
from services.evaluator.offline import load_policy

log = logging.getLogger("record")


def record_game(config: Config) -> dict[str, Any]:
    setup_logging("record", str(config.checkpoint), config.log_level, config.log_format)
    if not pillow_available():
        raise UsageError("needs pillow: pip install pillow")
    if config.out is None:
        raise UsageError("--out FILE.gif is required")
    model, state = load_policy(config)
    env = make_env(
        config.env,
        evaluation_seed(config.seed, 0),
        training=False,
        render_mode="rgb_array",
        frame_size=state["frame_size"],
    )
    frames: list[Any] = []

    def capture(score: float) -> None:
        # Kept as palette images (1 byte a pixel): a long game is tens of thousands of steps.
        frames.append(to_palette(with_overlay(np.asarray(env.render()), f"score {score:.0f}")))

    result = play_episode(
        model,
        env,
        config.env,
        config.eval_policy,
        seed=evaluation_seed(config.seed, 0),
        on_step=capture,
        memory_reset=state["memory_reset"],
    )
    env.close()
    assert result is not None
    config.out.parent.mkdir(parents=True, exist_ok=True)
    config.out.write_bytes(encode_gif(frames, FRAME_MS))
    summary = {
        "out": str(config.out),
        "score": result.score,
        "frames": len(frames),
        "model_version": int(state.get("model_version", -1)),
    }
    log.info("recorded a game scoring %.0f (%d steps) to %s", result.score, len(frames), config.out)
    return summary
