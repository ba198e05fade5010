"""`a3c record`: a GIF of one full evaluation game played by a saved model, with the running
score drawn on every frame. Needs the `viz` extra (pillow)."""

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
from services.evaluator.offline import load_policy

log = logging.getLogger("record")

FRAME_MS = 50
"""GIF frame duration: every agent step (4 emulator frames) shown for 50 ms, about 1.2x speed."""


def record_game(config: Config) -> dict[str, Any]:
    setup_logging("record", str(config.checkpoint), config.log_level, config.log_format)
    try:
        from PIL import Image, ImageDraw
    except ImportError:
        raise UsageError("needs pillow: pip install 'a3c-breakout[viz]'") from None
    if config.out is None:
        raise UsageError("--out FILE.gif is required")
    model, state = load_policy(config)
    env = make_env(
        config.env, evaluation_seed(config.seed, 0), training=False, render_mode="rgb_array"
    )
    frames: list[Any] = []

    def capture(score: float) -> None:
        image = Image.fromarray(np.asarray(env.render()))
        ImageDraw.Draw(image).text((4, 2), f"score {score:.0f}", fill=(255, 255, 0))
        frames.append(image.convert("P", palette=Image.Palette.ADAPTIVE, colors=32))

    result = play_episode(
        model,
        env,
        config.env,
        config.eval_policy,
        seed=evaluation_seed(config.seed, 0),
        on_step=capture,
    )
    env.close()
    assert result is not None
    config.out.parent.mkdir(parents=True, exist_ok=True)
    frames[0].save(
        config.out,
        save_all=True,
        append_images=frames[1:],
        duration=FRAME_MS,
        loop=0,
        optimize=True,
    )
    summary = {
        "out": str(config.out),
        "score": result.score,
        "frames": len(frames),
        "model_version": int(state.get("model_version", -1)),
    }
    log.info("recorded a game scoring %.0f (%d steps) to %s", result.score, len(frames), config.out)
    return summary
