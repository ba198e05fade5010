"""The evaluator's game recording: bounded frames, downsampling, GIFs that decode as promised."""

import io
import itertools

import numpy as np
import pytest
from PIL import Image

from common.envs import make_env
from services.evaluator.gallery import (
    GIF_BYTES_CAP,
    FrameBuffer,
    Gallery,
    Thinned,
    downsample,
    downsample_factor,
    encode_game,
    memory_bound,
    screen_source,
)

BREAKOUT_SCREEN = (210, 160, 3)


def screen(step: int) -> np.ndarray:
    """A Breakout-sized screen with a 2x4 'ball' that moves one pixel a step."""
    frame = np.zeros(BREAKOUT_SCREEN, np.uint8)
    frame[20 + step % 180 : 24 + step % 180, step % 158 : step % 158 + 2] = (200, 72, 72)
    return frame


def record(steps: int, max_frames: int) -> FrameBuffer:
    buffer = FrameBuffer(max_frames)
    for step in range(steps):
        buffer.add(screen(step), float(step // 10))
    return buffer


def decode(gif: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(gif))
    image.load()
    return image


@pytest.mark.parametrize("count", [1, 2, 7, 8, 9, 100, 1000])
def test_thinned_keeps_at_most_capacity_evenly_spaced_from_the_first(count):
    thinned = Thinned[int](8)
    for i in range(count):
        thinned.add(i)
    items = thinned.items
    assert 1 <= len(items) <= 8 and items[0] == 0
    assert all(b - a == thinned.stride for a, b in itertools.pairwise(items))
    assert len(items) > 4 or count <= 8  # thinning never leaves it less than half full


def test_make_runs_only_for_kept_items():
    thinned = Thinned[int](4)
    made = []
    for i in range(64):
        thinned.offer(lambda i=i: made.append(i) or i)
    assert len(made) < 64 and set(thinned.items) <= set(made)


@pytest.mark.parametrize("steps", [1, 2, 5, 63, 64, 65, 300, 2049])
def test_a_game_of_any_length_fits_the_cap_first_and_last_step_included(steps):
    buffer = record(steps, 64)
    frames = buffer.frames()
    assert len(frames) <= 64
    assert frames[0].step == 0 and frames[-1].step == steps - 1
    assert len(frames) == steps if steps <= 63 else len(frames) >= 32
    kept = [f.step for f in frames[:-1]]
    assert kept == [i * buffer.stride for i in range(len(kept))]


def test_breakout_frames_are_halved_and_keep_the_two_pixel_ball():
    assert downsample_factor(210, 160) == 2
    assert downsample_factor(400, 600) == 4
    assert downsample_factor(100, 100) == 1
    for step in range(158):
        small = downsample(screen(step), 2)
        assert small.shape == (105, 80, 3) and small.dtype == np.uint8
        assert small.any(axis=2).sum() >= 2, f"the ball vanished at x={step}"


def test_buffer_bytes_stay_within_the_stated_bound():
    bound = memory_bound(64, BREAKOUT_SCREEN)
    buffer = FrameBuffer(64)
    peak = 0
    for step in range(3000):
        buffer.add(screen(step), 0.0)
        peak = max(peak, buffer.nbytes)
    frame = 105 * 80 * 3
    assert peak <= 64 * frame + 210 * 160 * 3 < bound
    assert memory_bound(1024, BREAKOUT_SCREEN) < 64 * 2**20  # the bound the docs state


def test_gif_decodes_with_one_frame_per_kept_step_and_the_caption_strip():
    buffer = record(100, 16)
    frames = buffer.frames()
    encoded = encode_game(frames, buffer.stride, version=1234, train_frames=5_600_000)
    gif = decode(encoded.gif)
    assert gif.format == "GIF" and gif.n_frames == encoded.frames == len(frames)
    assert gif.size == encoded.size and gif.size[0] == 80 and gif.size[1] > 105
    assert encoded.steps_per_frame == buffer.stride
    gif.seek(gif.n_frames - 1)
    last = np.asarray(gif.convert("RGB"))
    assert last[: gif.size[1] - 105].any(), "no caption drawn above the frame"


def test_a_gif_over_the_byte_cap_is_reencoded_with_fewer_frames():
    rng = np.random.default_rng(0)
    buffer = FrameBuffer(64)
    for _ in range(64):  # noise compresses badly
        buffer.add(rng.integers(0, 255, BREAKOUT_SCREEN, dtype=np.uint8), 0.0)
    frames = buffer.frames()
    full = encode_game(frames, buffer.stride, 1, 1)
    capped = encode_game(frames, buffer.stride, 1, 1, cap=len(full.gif) // 3)
    assert capped.frames < full.frames and len(capped.gif) <= len(full.gif) // 3
    assert decode(capped.gif).n_frames == capped.frames
    assert capped.steps_per_frame > full.steps_per_frame


def finish(gallery: Gallery, game: int, score: float, steps: int = 40) -> dict:
    gallery.start()
    for step in range(steps):
        gallery.add(screen(step), min(score, step))
    info = {"game": game, "score": score, "version": 10 * game, "frames": 1000 * game}
    return gallery.finish({**info, "length": steps}).info


def test_gallery_keeps_the_latest_and_the_best_game():
    gallery = Gallery(32)
    assert gallery.latest is None and gallery.best is None
    finish(gallery, 1, 3.0)
    finish(gallery, 2, 5.0)
    info = finish(gallery, 3, 4.0, steps=50)
    assert gallery.latest is not None and gallery.best is not None
    assert gallery.latest.info["game"] == 3 and gallery.best.info["game"] == 2
    assert info["gif_frames"] == decode(gallery.latest.gif).n_frames <= 32
    assert info["steps_per_gif_frame"] == 2 and info["gif_size"] == [80, 140]
    assert info["gif_bytes"] == len(gallery.latest.gif) <= GIF_BYTES_CAP
    assert info["memory_bound_bytes"] == memory_bound(32, BREAKOUT_SCREEN)
    assert 0 < gallery.nbytes <= gallery.bound


def test_a_game_without_frames_is_kept_without_a_gif():
    gallery = Gallery(0)
    assert not gallery.recording
    gallery.start()
    game = gallery.finish({"game": 1, "score": 2.0, "version": 3, "frames": 4, "length": 5})
    assert game.gif is None and game.info["gif_frames"] == 0 and gallery.best is game


def test_screens_come_from_the_emulator_and_leave_observations_alone():
    watched = make_env("ALE/Breakout-v5", 5, training=False)
    plain = make_env("ALE/Breakout-v5", 5, training=False)
    read = screen_source(watched)
    assert read is not None
    for env in (watched, plain):
        env.reset(seed=11)
    for step in range(40):
        frame = read()
        assert frame.shape == BREAKOUT_SCREEN and frame.dtype == np.uint8
        a, *_ = watched.step(step % 4)
        b, *_ = plain.step(step % 4)
        assert np.array_equal(a, b)
    for env in (watched, plain):
        env.close()


def test_an_env_that_draws_nothing_has_no_screen():
    env = make_env("CartPole-v1", 0, training=False)
    assert screen_source(env) is None
    env.close()
