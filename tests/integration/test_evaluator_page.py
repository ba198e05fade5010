"""The evaluator's page during a real `a3c run` on Breakout: the latest game's GIF decodes and
is the game its JSON (and eval.jsonl) describes, and the page renders in headless Chromium.

One short run serves every test of this file. It is started the way a user starts it, and
its page is found at the address it prints. The browser test needs Debian's chromium, which
`make test` installs (deploy/scripts/install-chromium.sh); it is skipped, saying so, where
none is found. Its screenshot is kept in build/test-artifacts/ (or $A3C_TEST_ARTIFACTS).
"""

from __future__ import annotations

import io
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import urllib.error
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from PIL import Image

from common.samples import scrape
from services.evaluator.gallery import memory_bound
from services.local.launcher import read_eval
from tests.conftest import REPO, fetch, latest_game, wait_for

BREAKOUT_SCREEN = (210, 160, 3)
DEFAULT_FRAMES = 1024
GAME_TIMEOUT_S = 420
"""A first game needs the cluster up, weights broadcast, and a full game of an untrained
agent at batch 1 (tens of seconds on a loaded 2-core machine)."""


@dataclass
class Run:
    process: subprocess.Popen
    run_dir: Path
    output: list[str] = field(default_factory=list)

    def page(self) -> str | None:
        """The page's address as `a3c run` printed it (http://127.0.0.1:PORT, no slash)."""
        if self.process.poll() is not None:
            raise AssertionError("a3c run exited:\n" + "".join(self.output[-30:]))
        for line in self.output:
            found = re.search(r"watch it learn at (http://\S+)", line)
            if found:
                return found.group(1).rstrip("/")
        return None


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    run_dir = tmp_path_factory.mktemp("page") / "run"
    command = [
        sys.executable, "-m", "services.cli", "run",
        "--env", "ALE/Breakout-v5", "--workers", "1", "--num-envs", "4",
        "--duration", "900", "--eval-interval", "0", "--run-dir", str(run_dir),
    ]  # fmt: skip
    process = subprocess.Popen(
        command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    started = Run(process, run_dir)
    assert process.stdout is not None

    def read(stdout: Iterator[str]) -> None:
        for line in stdout:
            started.output.append(line)

    threading.Thread(target=read, args=(process.stdout,), daemon=True).start()
    try:
        yield started
    finally:
        process.send_signal(signal.SIGTERM)  # a3c run stops its children in order
        try:
            process.wait(90)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def page_of(run: Run) -> str:
    return wait_for(run.page, 120, "a3c run to print its page's address")


def a_game(run: Run) -> tuple[dict, bytes]:
    page = page_of(run)
    return wait_for(
        lambda: latest_game(page),
        GAME_TIMEOUT_S,
        "a finished game on the page",
        retry_on=(urllib.error.URLError,),  # an evaluator still binding its port
    )


def test_the_latest_gif_is_the_game_its_json_describes(run: Run) -> None:
    info, gif = a_game(run)
    with Image.open(io.BytesIO(gif)) as image:
        assert image.format == "GIF" and image.n_frames == info["gif_frames"] >= 2
        assert list(image.size) == info["gif_size"] == [80, 105 + 35]
        durations = []
        for index in range(image.n_frames):
            image.seek(index)
            durations.append(image.info["duration"])
    assert set(durations) == {info["gif_frame_ms"]}

    # The whole game, first step to last: every step up to the cap, evenly thinned beyond it.
    length, every = info["length"], info["steps_per_gif_frame"]
    assert math.ceil(length / every) <= info["gif_frames"] <= math.ceil(length / every) + 1
    if length < DEFAULT_FRAMES:
        assert info["gif_frames"] == length and every == 1
    else:
        assert every > 1 and info["gif_frames"] <= DEFAULT_FRAMES

    # The game eval.jsonl logged under the same number (this evaluator never restarted).
    record = wait_for(
        lambda: (read_eval(run.run_dir / "eval.jsonl")[info["game"] - 1 :] or [None])[0],
        30,
        "the game's line in eval.jsonl",
    )
    assert record["score"] == info["score"] and record["version"] == info["version"]
    assert record["frames"] == info["frames"] and record["episode_frames"] == info["game_frames"]

    best = Image.open(io.BytesIO(fetch(f"{page_of(run)}/game/best.gif")))
    assert best.n_frames >= 2


def test_the_game_buffer_stays_within_its_stated_bound(run: Run) -> None:
    info, _ = a_game(run)
    port = int(page_of(run).rsplit(":", 1)[1])
    metrics = scrape(port)
    bound = memory_bound(DEFAULT_FRAMES, BREAKOUT_SCREEN)
    assert info["memory_bound_bytes"] == bound == metrics.get("a3c_evaluator_game_bytes_bound")
    assert 0 < metrics.get("a3c_evaluator_game_bytes") <= bound


# --- In a real browser ---------------------------------------------------------------------


def find_chromium() -> str | None:
    for name in (os.environ.get("A3C_CHROMIUM", "chromium"), "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


def headless(chromium: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    """One headless Chromium run. No sandbox: tests run as root in CI, where Chromium's
    sandbox refuses to start; the page is the project's own."""
    return subprocess.run(
        [
            chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--no-first-run", "--mute-audio", "--hide-scrollbars",
            f"--user-data-dir={profile}", *args,
        ],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip


def dump_dom(chromium: str, profile: Path, url: str) -> str:
    """The page's DOM after its load event and scripts (its images marked with their natural
    size); the virtual time budget ends before the page's first poll for a newer game."""
    done = headless(chromium, profile, "--virtual-time-budget=5000", "--dump-dom", url)
    assert done.returncode == 0 and "<body" in done.stdout, done.stderr[-2000:]
    return done.stdout


def screenshot(chromium: str, profile: Path, url: str, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    done = headless(
        chromium, profile, "--virtual-time-budget=5000", "--window-size=1200,1100",
        f"--screenshot={out}", url,
    )  # fmt: skip
    assert done.returncode == 0 and out.is_file(), done.stderr[-2000:]


def natural_sizes(dom: str) -> dict[str, str]:
    """{img id: 'WxH'} as the page's script marked them in the DOM."""
    sizes = {}
    for tag in re.findall(r"<img\b[^>]*>", dom):
        name = re.search(r'\bid="([^"]+)"', tag)
        size = re.search(r'\bdata-natural="([^"]+)"', tag)
        if name:
            sizes[name.group(1)] = size.group(1) if size else "unmarked"
    return sizes


def artifacts() -> Path:
    return Path(os.environ.get("A3C_TEST_ARTIFACTS", REPO / "build" / "test-artifacts"))


@pytest.mark.browser
def test_the_page_renders_its_games_and_version_in_headless_chromium(
    run: Run, tmp_path: Path
) -> None:
    chromium = find_chromium()
    if chromium is None and os.environ.get("A3C_REQUIRE_BROWSER") == "1":
        pytest.fail("no chromium on PATH, and make test requires it (A3C_REQUIRE_BROWSER=1)")
    if chromium is None:
        pytest.skip(
            "no chromium on PATH (or $A3C_CHROMIUM): deploy/scripts/install-chromium.sh "
            "installs Debian's, which needs root and a Debian package mirror"
        )
    page = page_of(run)
    before, _ = a_game(run)
    dom = dump_dom(chromium, tmp_path / "profile", page + "/")
    after, _ = wait_for(lambda: latest_game(page), 60, "the latest game after the dump")

    sizes = natural_sizes(dom)
    for name in ("latest", "best"):
        width, _, height = sizes.get(name, "missing").partition("x")
        assert width.isdigit() and int(width) > 0 and int(height) > 0, (name, sizes)
    shown = re.search(r'<body[^>]*data-version="(\d+)"', dom)
    assert shown, dom[:2000]
    version = int(shown.group(1))
    assert before["version"] <= version <= after["version"]  # the version current at the dump
    assert f'id="version">v{version:,}<' in dom
    assert '<svg id="curve"' in dom

    out = artifacts() / "evaluator-page.png"
    screenshot(chromium, tmp_path / "profile", page + "/", out)
    with Image.open(out) as image:
        assert image.size == (1200, 1100)
        assert len(image.convert("RGB").getcolors(1 << 20) or []) > 10, "a blank screenshot"
