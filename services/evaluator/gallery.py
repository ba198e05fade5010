"""The evaluator's latest and best games as GIFs, in bounded memory, without touching the game.

Frames come from the emulator's own screen (Atari: the ALE's RGB screen; other envs: their
`rgb_array` render), never from the observations, so the agent sees exactly what the
evaluation protocol gives it. Each kept frame is downsampled by an integer stride so that no
side exceeds MAX_SIDE (Breakout's 210x160 screen becomes 105x80: every other row and column,
which keeps the 2-pixel-wide ball), and a game longer than the frame cap is thinned to every
2nd, 4th, ... step, so the GIF always spans the whole game, first and last step included.
The GIF is encoded once, when the game ends; requests only read the finished bytes.

Memory bound (`memory_bound`), with N = game_max_frames, F = bytes of a downsampled frame,
R = bytes of a full screen, P = pixels of a captioned GIF frame, G = GIF_BYTES_CAP:
    N*F + R            frames of the game being played (+ the newest screen, by reference)
  + N*P + 1.5*N*P + 1024*N   while encoding: pillow's palette copy of every frame, and its
                     output (LZW writes at most 12 bits per pixel; a 32-colour palette and
                     headers per frame)
  + 2*G              the GIFs of the latest and the best game (a larger one is re-encoded
                     with every other frame until it fits).
Breakout at N = 1024: 25.8 MB + 0.1 + 11.5 + 17.2 + 1.0 + 8.4 = 64.0 MB (61 MiB), which
the evaluator exports as a3c_evaluator_game_bytes_bound. A GIF of a real Breakout game is tens
to hundreds of kB, so what stays resident between games is far below the bound.
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import gymnasium as gym
import numpy as np

from services.evaluator.gif import compact, encode_gif, frame_ms, with_caption

log = logging.getLogger("evaluator")

MAX_SIDE = 160
"""Longest side of a kept frame, in pixels (the page scales the GIF up for viewing)."""
GIF_BYTES_CAP = 4 << 20
"""Most bytes one game's GIF may take; a larger one is re-encoded with half the frames."""
CAPTION_LINES = 3
T = TypeVar("T")


class Thinned(Generic[T]):
    """At most `capacity` of the items offered, evenly spaced: every `stride`-th is kept, and
    when the list is full every other kept item is dropped and the stride doubles. The first
    item is always kept; any number of items fits."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self.items: list[T] = []
        self.stride = 1
        self.offered = 0

    def offer(self, make: Callable[[], T]) -> bool:
        """Keep `make()` if this offer falls on the stride; `make` runs only then."""
        index = self.offered
        self.offered += 1
        if index % self.stride:
            return False
        if len(self.items) >= self.capacity:
            del self.items[1::2]
            self.stride *= 2
            if index % self.stride:
                return False
        self.items.append(make())
        return True

    def add(self, item: T) -> bool:
        """`offer` for an item that costs nothing to make."""
        return self.offer(lambda: item)


def downsample_factor(height: int, width: int, max_side: int = MAX_SIDE) -> int:
    return max(1, math.ceil(max(height, width) / max_side))


def downsample(frame: np.ndarray, factor: int) -> np.ndarray:
    """Every `factor`-th row and column of an RGB frame, copied (the emulator reuses nothing,
    but a render may): nearest pixels keep the game's few colours, which GIF palettes need."""
    return np.array(frame[::factor, ::factor, :3], dtype=np.uint8, copy=True)


@dataclass(frozen=True)
class Kept:
    step: int
    score: float
    frame: np.ndarray


class FrameBuffer:
    """The frames of one game while it is played: at most `max_frames` (at least 2: the first
    and the last step), each downsampled once when it is kept."""

    def __init__(self, max_frames: int, max_side: int = MAX_SIDE) -> None:
        self.max_frames = max(2, max_frames)
        self.max_side = max_side
        self._thinned: Thinned[Kept] = Thinned(self.max_frames - 1)
        self._last: tuple[int, float, np.ndarray] | None = None
        self.factor = 0
        self.raw_shape: tuple[int, ...] = ()

    @property
    def steps(self) -> int:
        return self._thinned.offered

    @property
    def stride(self) -> int:
        return self._thinned.stride

    def add(self, frame: np.ndarray, score: float) -> None:
        """The screen after one agent step and the score so far."""
        if not self.factor:
            self.raw_shape = frame.shape
            self.factor = downsample_factor(frame.shape[0], frame.shape[1], self.max_side)
        step = self.steps
        kept = self._thinned.offer(lambda: Kept(step, score, downsample(frame, self.factor)))
        self._last = None if kept else (step, score, frame)

    def frames(self) -> list[Kept]:
        """Every kept frame, the game's last step included."""
        kept = list(self._thinned.items)
        if self._last is not None:
            step, score, frame = self._last
            kept.append(Kept(step, score, downsample(frame, self.factor)))
        return kept

    @property
    def nbytes(self) -> int:
        last = self._last  # read once: /metrics asks from another thread
        held = sum(k.frame.nbytes for k in list(self._thinned.items))
        return held + (last[2].nbytes if last is not None else 0)


@dataclass(frozen=True)
class Game:
    """One finished game: its GIF (None where no frames were recorded) and what
    /game/*.json says about it."""

    info: dict[str, Any]
    gif: bytes | None = field(default=None, repr=False)

    @property
    def score(self) -> float:
        return float(self.info["score"])


def caption(kept: Kept, version: int, train_frames: int) -> list[str]:
    """Score, step (so no two frames are alike and pillow merges none), model and frames."""
    return [
        f"score {kept.score:.0f}",
        f"step {kept.step + 1:,}",
        f"v{compact(version)} {compact(train_frames)} fr",
    ]


@dataclass(frozen=True)
class Encoded:
    gif: bytes
    frames: int
    steps_per_frame: int
    size: tuple[int, int]
    """(width, height) of the GIF, caption strip included."""


def encode_game(
    frames: list[Kept], stride: int, version: int, train_frames: int, cap: int = GIF_BYTES_CAP
) -> Encoded:
    """The captioned GIF of a game's kept frames (`stride` steps apart), re-encoded with
    every other frame until it fits in `cap` bytes; the last step is always in it."""
    every = 1
    while True:
        chosen = frames[::every]
        if chosen[-1] is not frames[-1]:
            chosen.append(frames[-1])
        first = with_caption(chosen[0].frame, caption(chosen[0], version, train_frames))
        rest = (with_caption(k.frame, caption(k, version, train_frames)) for k in chosen[1:])
        gif = encode_gif(itertools.chain([first], rest), frame_ms(stride * every))
        if len(gif) <= cap or len(chosen) <= 2:
            return Encoded(gif, len(chosen), stride * every, first.size)
        del gif, first  # never two outputs at once (the bound counts one)
        every *= 2


def memory_bound(max_frames: int, raw_shape: tuple[int, ...], max_side: int = MAX_SIDE) -> int:
    """The bound of the module docstring for a screen of `raw_shape` (height, width, 3)."""
    n = max(2, max_frames)
    height, width = raw_shape[0], raw_shape[1]
    factor = downsample_factor(height, width, max_side)
    small_h, small_w = math.ceil(height / factor), math.ceil(width / factor)
    frame = small_h * small_w * 3
    pixels = small_w * (small_h + CAPTION_LINES * 11 + 2)
    raw = height * width * 3
    return int(n * frame + raw + n * pixels + 1.5 * n * pixels + 1024 * n + 2 * GIF_BYTES_CAP)


def screen_source(env: gym.Env) -> Callable[[], np.ndarray] | None:
    """What shows the game as a person sees it, without changing what the agent sees: the
    ALE's RGB screen, or the env's `rgb_array` render; None where neither works."""
    ale = getattr(env.unwrapped, "ale", None)
    if ale is not None:
        return ale.getScreenRGB  # type: ignore[no-any-return]
    if env.render_mode != "rgb_array":
        return None
    try:
        frame = env.render()
    except Exception as error:  # e.g. gymnasium's DependencyNotInstalled (pygame)
        log.warning("no game frames for the page: %s renders nothing (%s)", env.spec, error)
        return None
    if not isinstance(frame, np.ndarray) or frame.ndim != 3:
        return None
    return lambda: np.asarray(env.render())


class Gallery:
    """The latest and the best finished game. The evaluator's thread records and encodes;
    the HTTP threads read `latest` and `best`, which are replaced whole under a lock."""

    def __init__(self, max_frames: int, recording: bool = True) -> None:
        self.max_frames = max_frames
        self.recording = recording and max_frames > 0
        self._buffer: FrameBuffer | None = None
        self._lock = threading.Lock()
        self._latest: Game | None = None
        self._best: Game | None = None
        self.bound = 0

    @property
    def latest(self) -> Game | None:
        with self._lock:
            return self._latest

    @property
    def best(self) -> Game | None:
        with self._lock:
            return self._best

    def start(self) -> None:
        self._buffer = FrameBuffer(self.max_frames) if self.recording else None

    def add(self, frame: np.ndarray, score: float) -> None:
        if self._buffer is not None:
            self._buffer.add(frame, score)
            if not self.bound:
                self.bound = memory_bound(self.max_frames, self._buffer.raw_shape)

    def discard(self) -> None:
        self._buffer = None

    def finish(self, info: dict[str, Any]) -> Game:
        """Encode the game just played (`info`: its score, version, frames, ...) and make it
        the latest, and the best if it scored higher than every game before."""
        buffer, self._buffer = self._buffer, None
        encoded = None
        if buffer is not None and buffer.steps:
            encoded = encode_game(
                buffer.frames(), buffer.stride, int(info["version"]), int(info["frames"])
            )
        del buffer  # its frames are not needed past here
        stride = encoded.steps_per_frame if encoded else 1
        game = Game(
            {
                **info,
                "gif_frames": encoded.frames if encoded else 0,
                "gif_size": list(encoded.size) if encoded else None,
                "steps_per_gif_frame": stride,
                "gif_frame_ms": frame_ms(stride),
                "gif_bytes": len(encoded.gif) if encoded else 0,
                "memory_bound_bytes": self.bound,
            },
            encoded.gif if encoded else None,
        )
        with self._lock:
            self._latest = game
            if self._best is None or game.score > self._best.score:
                self._best = game
        return game

    @property
    def nbytes(self) -> int:
        """Bytes held now: the frames being recorded and the two GIFs."""
        recording = self._buffer  # read once: the evaluator's thread may swap it meanwhile
        buffer = recording.nbytes if recording is not None else 0
        with self._lock:
            games = {id(g): len(g.gif or b"") for g in (self._latest, self._best) if g}
        return buffer + sum(games.values())
