"""Animated GIFs of played games, for `a3c record` and the evaluator's page: one encoder, so
both draw their captions and write their frames the same way. Needs pillow.

Frames are kept as the emulator draws them (no smoothing), so each GIF frame needs only the
game's few colours; each frame gets its own 32-colour palette, as `a3c record` always did.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from PIL import Image

FRAME_MS = 50
"""GIF frame duration of one agent step (4 emulator frames): about 1.2x real time."""
MAX_FRAME_MS = 200
"""A thinned game (every k-th step kept) shows each frame k x FRAME_MS, up to this: a long
game then plays faster than real time rather than as a slide show."""
LINE_HEIGHT = 11
"""Pixels per caption line in pillow's default font (10 px)."""
TEXT = (255, 255, 0)


def pillow_available() -> bool:
    try:
        import PIL.Image  # noqa: F401
    except ImportError:
        return False
    return True


def compact(number: float) -> str:
    """12 -> '12', 1234 -> '1.2k', 12_345_678 -> '12.3M': a caption line must fit 80 pixels."""
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(number) >= size:
            return f"{number / size:.1f}".rstrip("0").rstrip(".") + suffix
    return f"{number:.0f}"


def frame_ms(stride: int) -> int:
    """The duration of a GIF frame that stands for `stride` agent steps."""
    return min(FRAME_MS * stride, MAX_FRAME_MS)


def with_caption(frame: np.ndarray, lines: Sequence[str]) -> Image.Image:
    """The frame under a black strip holding `lines`. The frame itself stays untouched: at
    80 pixels wide, text drawn over Breakout's field would hide its score and bricks."""
    from PIL import Image, ImageDraw

    height, width = frame.shape[:2]
    strip = LINE_HEIGHT * len(lines) + 2
    image = Image.new("RGB", (width, height + strip))
    image.paste(Image.fromarray(np.ascontiguousarray(frame[..., :3])), (0, strip))
    draw = ImageDraw.Draw(image)
    for i, line in enumerate(lines):
        draw.text((1, 1 + LINE_HEIGHT * i), line, fill=TEXT)
    return image


def with_overlay(frame: np.ndarray, text: str) -> Image.Image:
    """The frame with `text` drawn in its top-left corner (full-size frames of `a3c record`)."""
    from PIL import Image, ImageDraw

    image = Image.fromarray(np.ascontiguousarray(frame[..., :3]))
    ImageDraw.Draw(image).text((4, 2), text, fill=TEXT)
    return image


def to_palette(image: Image.Image) -> Image.Image:
    from PIL import Image

    return image.convert("P", palette=Image.Palette.ADAPTIVE, colors=32)


def encode_gif(images: Iterable[Image.Image], duration_ms: int) -> bytes:
    """One looping GIF of `images`, taken one at a time (pillow keeps its own palette copy of
    each, so an iterator is never held twice). Pillow merges a frame identical to the one
    before it into a longer frame, so callers that promise a frame count make every frame
    differ (the evaluator's captions carry the step number)."""
    frames = (image if image.mode == "P" else to_palette(image) for image in images)
    first = next(frames, None)
    if first is None:
        raise ValueError("a GIF needs at least one frame")
    out = io.BytesIO()
    first.save(
        out,
        format="GIF",
        save_all=True,
        append_images=frames,
        duration=duration_ms,
        loop=0,
        optimize=True,
    )
    return out.getvalue()
