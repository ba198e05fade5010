"""Atomic checkpoints: write to a temp file, fsync, rename, fsync the directory; keep the last
K; resume from the newest one that loads (a corrupt or truncated file is logged and skipped).

Files are loaded with `torch.load(weights_only=True)`: a checkpoint can hold tensors and plain
data, never code.
"""

from __future__ import annotations

import io
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

PATTERN = re.compile(r"^ckpt-(\d{12})\.pt$")
REQUIRED_KEYS = ("model", "optimizer", "model_version", "frames", "layout")
MODEL_KEYS = ("model", "layout")
"""Enough to play: learner checkpoints, the evaluator's best model and shipped models."""


def checkpoint_path(directory: Path, version: int) -> Path:
    return directory / f"ckpt-{version:012d}.pt"


def atomic_save(path: Path, state: dict[str, Any]) -> None:
    """torch.save that never leaves a partial file at `path`: temp file, fsync, rename,
    fsync the directory. A crash leaves either the old file or the new one; a failed write
    (a full disk) removes its temp file and raises OSError.

    The state is serialised in memory first: torch's own writer turns a failed write into a
    RuntimeError without the errno, and a caller must be able to tell a full disk (OSError,
    worth retrying) from a bug."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".tmp-", suffix=".pt", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(buffer.getbuffer())
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def save_checkpoint(directory: Path, version: int, state: dict[str, Any], keep: int) -> Path:
    """Write `state` atomically as the checkpoint of `version`, then prune to the newest
    `keep`. A failed write raises OSError before anything is pruned, so the checkpoints that
    were there stay; a failed prune only leaves an extra old file behind."""
    final = checkpoint_path(directory, version)
    atomic_save(final, state)
    for old in list_checkpoints(directory)[keep:]:
        try:
            old.unlink(missing_ok=True)
        except OSError as error:
            log.warning("could not prune old checkpoint %s: %s", old, error)
    return final


def list_checkpoints(directory: Path) -> list[Path]:
    """Checkpoint files, newest version first (temp files of interrupted writes excluded)."""
    if not directory.is_dir():
        return []
    found = [path for path in directory.iterdir() if PATTERN.match(path.name)]
    return sorted(found, key=lambda path: path.name, reverse=True)


def load_checkpoint(path: Path, required: tuple[str, ...] = REQUIRED_KEYS) -> dict[str, Any]:
    """Load one checkpoint (or model file: `required=MODEL_KEYS`); raises ValueError with the
    reason when it is unusable."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(f"{path.name} is unreadable ({type(error).__name__}: {error})") from None
    if not isinstance(state, dict) or any(key not in state for key in required):
        raise ValueError(f"{path.name} is not a checkpoint: it lacks one of {required}")
    return state


EXPORT_KEYS = (
    "model_version",
    "frames",
    "layout",
    "env",
    "frame_size",
    "memory_reset",
    "algorithm_version",
    "eval_mean",
    "eval_scores",
)


def export_model(source: Path, out: Path) -> dict[str, Any]:
    """A small, shippable model file from a learner checkpoint or the evaluator's best model:
    float16 weights (half the bytes; playing needs no more precision) and the metadata that
    says what it is, without the optimizer state. Loads anywhere a model file is accepted."""
    state = load_checkpoint(source, MODEL_KEYS)
    exported: dict[str, Any] = {key: state[key] for key in EXPORT_KEYS if key in state}
    exported["model"] = {name: tensor.half() for name, tensor in state["model"].items()}
    exported["exported_from"] = source.name
    atomic_save(out, exported)
    return exported


def load_newest(directory: Path) -> tuple[dict[str, Any] | None, list[str]]:
    """The newest loadable checkpoint (or None) and the problems met on the way to it."""
    problems = []
    for path in list_checkpoints(directory):
        try:
            state = load_checkpoint(path)
        except ValueError as error:
            log.error("skipping corrupt checkpoint: %s", error)
            problems.append(str(error))
            continue
        state["path"] = str(path)
        return state, problems
    return None, problems
