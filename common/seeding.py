"""Seeds of every random stream, derived in one place so that no two actors share one and no
evaluation game replays a training game.

Training seeds lie in [0, 2**31), evaluation seeds in [2**31, 2**32): the two ranges never
meet, whatever the base seed. A worker's seed comes from the base seed and its id, so replicas
that share one config (compose, Kubernetes) still draw their own sticky-action, no-op and
action-sampling streams, and a restarted worker with the same id draws the same ones again.
"""

from __future__ import annotations

import hashlib

TRAINING_SEEDS = 2**31
"""Training seeds are below this; evaluation seeds are at or above it."""
MAX_ENVS_PER_WORKER = 256
"""A worker's envs take consecutive seeds; the derivation leaves room for this many."""


def _digest(*parts: object) -> int:
    text = ":".join(str(part) for part in parts).encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "big")


def worker_seed(base_seed: int, worker_id: str) -> int:
    """The seed of a worker's torch stream; its env i is seeded `worker_seed + i`."""
    return _digest("train", base_seed, worker_id) % (TRAINING_SEEDS - MAX_ENVS_PER_WORKER)


def evaluation_seed(base_seed: int, game: int) -> int:
    """The seed of evaluation game `game` (0, 1, ...): disjoint from every training seed,
    and the same games for the same base seed in the evaluator, `a3c evaluate` and the
    learning benchmark."""
    return TRAINING_SEEDS + (base_seed * 1_000_003 + game) % TRAINING_SEEDS
