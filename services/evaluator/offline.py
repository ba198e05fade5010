"""`a3c evaluate`: play N full games with a saved model under the evaluation protocol and
write the scores as JSON. Works on learner checkpoints, the evaluator's best model and
shipped models alike (anything with `model` and `layout`)."""

from __future__ import annotations

import json
import logging
import statistics
import time

import torch

from common.a3c import ALGORITHM_VERSION
from common.checkpoint import MODEL_KEYS, load_checkpoint
from common.config import Config
from common.envs import (
    ATARI_FRAME_CAP,
    EVAL_STICKY_ACTIONS,
    FRAME_SIZE,
    NOOP_MAX,
    env_spaces,
    is_atari,
    make_env,
)
from common.errors import UsageError
from common.evaluation import play_episode
from common.logs import setup_logging
from common.model import ActorCritic
from common.seeding import evaluation_seed
from common.weights import layout_digest

log = logging.getLogger("evaluate")


def load_policy(config: Config) -> tuple[ActorCritic, dict]:
    """The saved model behind `config.checkpoint`, ready to play; UsageError when there is
    none or it does not fit `config.env`. The frames it sees are the size it was trained on
    (`state["frame_size"]`; 42 for files from before the setting), and its memory is reset
    as it was in training (`state["memory_reset"]`; "game" before the setting)."""
    if config.checkpoint is None:
        raise UsageError("--checkpoint PATH is required")
    try:
        state = load_checkpoint(config.checkpoint, MODEL_KEYS)
    except (ValueError, FileNotFoundError) as error:
        raise UsageError(str(error)) from None
    state["frame_size"] = int(state.get("frame_size", FRAME_SIZE))
    state["memory_reset"] = str(state.get("memory_reset", "game"))
    obs_shape, n_actions = env_spaces(config.env, state["frame_size"])
    model = ActorCritic(obs_shape, n_actions)
    if state["layout"] != layout_digest(model):
        raise UsageError(
            f"{config.checkpoint} was trained on {state.get('env', 'another env')}, "
            f"not {config.env} (pass --env)"
        )
    model.load_state_dict({k: v.float() for k, v in state["model"].items()})
    model.eval()
    trained_with = int(state.get("algorithm_version", 1))
    if trained_with != ALGORITHM_VERSION:
        log.warning(
            "%s was trained with algorithm version %d, this is version %d: it is scored "
            "under another preprocessing or protocol than it learned with (common/a3c.py)",
            config.checkpoint,
            trained_with,
            ALGORITHM_VERSION,
        )
    return model, state


def evaluate_checkpoint(config: Config) -> dict:
    setup_logging("evaluate", str(config.checkpoint), config.log_level, config.log_format)
    # One game is a chain of batch-1 steps: extra intra-op threads only spin, and two
    # evaluations side by side (the learning benchmark) then ran 10-30x slower.
    torch.set_num_threads(1)
    model, state = load_policy(config)
    env = make_env(
        config.env,
        evaluation_seed(config.seed, 0),
        training=False,
        frame_size=state["frame_size"],
    )
    scores, frames = [], []
    started = time.time()
    for episode in range(config.episodes):
        result = play_episode(
            model,
            env,
            config.env,
            config.eval_policy,
            seed=evaluation_seed(config.seed, episode),
            memory_reset=state["memory_reset"],
        )
        assert result is not None
        scores.append(result.score)
        frames.append(result.frames)
        log.info(
            "episode %d/%d: score %.1f (%d frames)",
            episode + 1,
            config.episodes,
            result.score,
            result.frames,
        )
    env.close()
    report = {
        "env": config.env,
        "checkpoint": str(config.checkpoint),
        "model_version": int(state.get("model_version", -1)),
        "algorithm_version": int(state.get("algorithm_version", 1)),
        "train_frames": int(state.get("frames", -1)),
        "episodes": len(scores),
        "scores": scores,
        "mean_score": statistics.fmean(scores),
        "std_score": statistics.pstdev(scores),
        "episode_frames": frames,
        "wall_s": round(time.time() - started, 2),
        "protocol": {
            "policy": config.eval_policy,
            "seed": config.seed,
            "full_games": True,
            "raw_score": True,
            **(
                {
                    "sticky_actions": EVAL_STICKY_ACTIONS,
                    "noop_max": NOOP_MAX,
                    "frame_cap": ATARI_FRAME_CAP,
                }
                if is_atari(config.env)
                else {}
            ),
        },
    }
    text = json.dumps(report, indent=2)
    if config.out is not None:
        config.out.parent.mkdir(parents=True, exist_ok=True)
        config.out.write_text(text + "\n")
    print(text)
    return report
