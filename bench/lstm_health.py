"""Is a trained model still alive? Reads out its LSTM while it plays.

A model whose LSTM gates saturate stops depending on what it sees: the value is one number
in every state, the policy one distribution, and no gradient reaches the gates again. It then
plays at the random score for the rest of the run, however long it trains (docs/learning.md:
2 x 5 seed 1 on Breakout, every Acrobot run). This plays a few games with each model under the
evaluation protocol (sampled policy) and reports, per model, a verdict (alive; flat: its
output ignores the input but its gates are in range, as a model that has not learned yet;
collapsed: flat because its gates saturated) and:

- `value_std`: the spread of the critic's value over all steps (about 0 for a dead model);
- `entropy`: the policy's mean entropy per step, against ln(actions) for uniform;
- `saturated_cells`: LSTM units with |c| > 3 after 100 and 250 steps of a game;
- `gate_preactivation`, `features`, `h`: mean absolute values of the LSTM's gate inputs, the
  encoder's output and the LSTM's output (Breakout models that learned, at 10M frames: about
  3, 0.5, 0.14; one that collapsed: 17.8, 4.9, 0.006).

    python -m bench.lstm_health --env ALE/Breakout-v5 MODEL.pt [MODEL.pt ...] [--games 3]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional

from common.config import load_config
from common.envs import make_env
from common.model import ActorCritic
from common.seeding import evaluation_seed
from services.evaluator.offline import load_policy

SATURATED = 3.0
"""|c| above which tanh(c) is within 0.5% of +-1: the unit's output no longer moves."""
READ_AT = (100, 250)
MAX_STEPS = 2000
FLAT_VALUE_STD = 0.01
"""A value spread below this: the model's output does not depend on what it sees."""
SATURATED_GATES = 5.0
"""Mean |gate pre-activation| above this: the gates sit at 0 or 1 (a healthy model: ~1-2)."""


def load_model(path: Path, env_id: str) -> ActorCritic:
    """The model behind `path`, loaded as `a3c evaluate` loads it (layout checked)."""
    model, _ = load_policy(load_config({"checkpoint": str(path), "env": env_id}))
    return model


@torch.no_grad()
def read_out(model: ActorCritic, env_id: str, games: int, seed_base: int) -> dict:
    values, entropies, gates, features, outputs = [], [], [], [], []
    saturated: dict[int, list[int]] = {step: [] for step in READ_AT}
    for game in range(games):
        seed = evaluation_seed(seed_base, game)
        env = make_env(env_id, seed, training=False)
        obs, _ = env.reset(seed=seed)
        generator = torch.Generator().manual_seed(seed)
        h, c = model.initial_state(1)
        for step in range(1, MAX_STEPS + 1):
            x = model.encoder(torch.as_tensor(obs).unsqueeze(0))
            lstm = model.lstm
            pre = functional.linear(x, lstm.weight_ih, lstm.bias_ih) + functional.linear(
                h, lstm.weight_hh, lstm.bias_hh
            )
            h, c = lstm(x, (h, c))
            logits, value = model.actor(h), model.critic(h).squeeze(-1)
            log_probs = logits.log_softmax(-1)
            values.append(float(value))
            entropies.append(float(-(log_probs.exp() * log_probs).sum()))
            gates.append(float(pre.abs().mean()))
            features.append(float(x.abs().mean()))
            outputs.append(float(h.abs().mean()))
            if step in saturated:
                saturated[step].append(int((c.abs() > SATURATED).sum()))
            action = int(torch.multinomial(log_probs.exp()[0], 1, generator=generator))
            obs, _, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                break
        env.close()
    return {
        "value_std": float(np.std(values)),
        "value_mean": float(np.mean(values)),
        "entropy": float(np.mean(entropies)),
        "uniform_entropy": math.log(model.n_actions),
        "saturated_cells": {str(step): counts for step, counts in saturated.items()},
        "lstm_units": model.lstm_size,
        "gate_preactivation": float(np.mean(gates)),
        "features": float(np.mean(features)),
        "h": float(np.mean(outputs)),
        "steps": len(values),
        "verdict": verdict(float(np.std(values)), float(np.mean(gates))),
    }


def verdict(value_std: float, gate_preactivation: float) -> str:
    """collapsed: output independent of the input because the gates saturated (it cannot
    recover); flat: independent of the input with gates in range (not learned yet, as a fresh
    model); alive otherwise."""
    if value_std >= FLAT_VALUE_STD:
        return "alive"
    return "collapsed" if gate_preactivation > SATURATED_GATES else "flat"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--env", default="ALE/Breakout-v5")
    parser.add_argument("--games", type=int, default=3)
    parser.add_argument("--seed-base", type=int, default=70, help="evaluation seed base")
    parser.add_argument("--out", type=Path, help="also write the read-outs as JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    report = {}
    for path in args.models:
        result = read_out(load_model(path, args.env), args.env, args.games, args.seed_base)
        report[str(path)] = result
        cells = " ".join(f"{k}:{v}" for k, v in result["saturated_cells"].items())
        print(
            f"{path}: {result['verdict']}  value {result['value_mean']:.2f}"
            f" +- {result['value_std']:.3f}  entropy {result['entropy']:.3f}"
            f"/{result['uniform_entropy']:.3f}  saturated cells {cells}"
            f" (of {result['lstm_units']})  gates {result['gate_preactivation']:.2f}"
            f"  features {result['features']:.2f}  h {result['h']:.3f}"
        )
    if args.out is not None:
        args.out.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
