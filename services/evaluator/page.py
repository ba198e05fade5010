"""The evaluator's page (`/`) and game endpoints (`/game/*`): one self-contained HTML file,
no external assets (clusters are often offline), rendered once per finished game.

The page shows the latest and the best game, the learning curve (score against training
frames, an inline SVG drawn from the evaluator's history), the model version, and links to
the other services' metrics. Its inline script only marks each image with its natural size
(`data-natural="WxH"`, what a headless browser test reads) and reloads the page when a newer
game has finished. Every URL on it is relative, so it works behind `kubectl proxy` too.
"""

from __future__ import annotations

import html
import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from common.metrics import Reply, Routes
from services.evaluator.gallery import Game
from services.evaluator.gif import compact

Point = tuple[float, float, float]
"""(training frames, score, window mean) of one evaluation game."""

NO_GAME = (
    "no evaluation game has finished yet: the evaluator plays its first one once it has "
    "received weights from the learner\n"
)
SCALE = 3
"""The page shows GIFs at 3x their size, pixelated (they are kept small in memory)."""


def parse_links(text: str) -> list[tuple[str, str]]:
    """`page_links` ('NAME=URL NAME=URL ...') as (name, url) pairs; only http(s) and relative
    URLs, so a setting can never put a script on the page."""
    links = []
    for token in text.split():
        name, sep, url = token.partition("=")
        if not sep:
            name, url = token, token
        if url.startswith(("http://", "https://", "/")) or ":" not in url.split("/")[0]:
            links.append((name, url))
    return links


@dataclass(frozen=True)
class PageView:
    """What one rendering of the page shows."""

    env: str
    policy: str
    latest: Game | None = None
    best: Game | None = None
    history: Sequence[Point] = ()
    episodes: int = 0
    window_mean: float | None = None
    window: int = 0
    links: Sequence[tuple[str, str]] = ()
    note: str = ""
    """Why no frames are recorded (game_max_frames 0, an env that renders nothing)."""


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    step = (high - low) / (count - 1)
    return [low + step * i for i in range(count)]


def curve_svg(points: Sequence[Point], width: int = 640, height: int = 240) -> str:
    """Scores (dots) and the window mean (line) against training frames."""
    if not points:
        return '<p class="empty">The curve starts with the first finished game.</p>'
    left, right, top, bottom = 52, 12, 10, 36
    frames = [p[0] for p in points]
    values = [v for p in points for v in p[1:]]
    x_hi = max(max(frames), 1.0)
    y_lo, y_hi = min(0.0, min(values)), max(values)
    if y_hi <= y_lo:
        y_hi = y_lo + 1.0

    def x(value: float) -> float:
        return left + (width - left - right) * value / x_hi

    def y(value: float) -> float:
        return top + (height - top - bottom) * (1 - (value - y_lo) / (y_hi - y_lo))

    parts = [
        f'<svg id="curve" data-points="{len(points)}" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" xmlns="http://www.w3.org/2000/svg">',
        "<title>Evaluation score against training frames</title>",
        f'<rect x="{left}" y="{top}" width="{width - left - right}" '
        f'height="{height - top - bottom}" class="plot"/>',
    ]
    for value in _ticks(y_lo, y_hi):
        parts.append(
            f'<line x1="{left}" x2="{width - right}" y1="{y(value):.1f}" y2="{y(value):.1f}" '
            f'class="grid"/><text x="{left - 4}" y="{y(value) + 4:.1f}" class="ylabel">'
            f"{compact(value) if abs(value) >= 10 else f'{value:.1f}'}</text>"
        )
    for value in _ticks(0.0, x_hi):
        parts.append(
            f'<text x="{x(value):.1f}" y="{height - 21}" class="xlabel">{compact(value)}</text>'
        )
    parts.append(
        f'<text x="{(left + width - right) / 2}" y="{height - 3}" class="xlabel">'
        "training frames</text>"
    )
    parts += [
        f'<circle cx="{x(f):.1f}" cy="{y(s):.1f}" r="2.2" class="score"/>' for f, s, _ in points
    ]
    line = " ".join(f"{x(f):.1f},{y(m):.1f}" for f, _, m in points)
    parts.append(f'<polyline points="{line}" class="mean"/>')
    parts.append("</svg>")
    return "\n".join(parts)


def _figure(name: str, title: str, game: Game | None, note: str) -> str:
    if game is None or game.gif is None:
        why = note or "No game has finished yet."
        return f'<figure id="{name}-game"><p class="empty">{html.escape(why)}</p></figure>'
    info = game.info
    width, height = info["gif_size"]
    return (
        f'<figure id="{name}-game"><img id="{name}" src="game/{name}.gif?game={info["game"]}" '
        f'width="{width * SCALE}" height="{height * SCALE}" alt="{title} evaluation game">'
        f"<figcaption>{title}: score <b>{info['score']:g}</b> in {info['length']:,} steps, "
        f"model v{info['version']:,} after {compact(info['frames'])} training frames "
        f'(game {info["game"]}; <a href="game/{name}.json">json</a>)</figcaption></figure>'
    )


STYLE = """
body { font: 15px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; background: #fafafa; }
h1 { font-size: 1.4em; margin: 0 0 .3em; } h2 { font-size: 1.1em; margin: 1.2em 0 .4em; }
.games { display: flex; flex-wrap: wrap; gap: 2em; } figure { margin: 0; max-width: 360px; }
img { image-rendering: pixelated; background: #000; display: block; }
figcaption { font-size: .9em; margin-top: .3em; } .empty { color: #777; font-style: italic; }
.plot { fill: #fff; stroke: #ccc; } .grid { stroke: #eee; } .score { fill: #4a7bd0; }
.mean { fill: none; stroke: #d0604a; stroke-width: 2; }
.ylabel { font-size: 11px; text-anchor: end; } .xlabel { font-size: 11px; text-anchor: middle; }
"""

SCRIPT = """
for (const img of document.images) {
  const mark = () => { img.dataset.natural = img.naturalWidth + "x" + img.naturalHeight; };
  if (img.complete) mark(); else { img.addEventListener("load", mark);
    img.addEventListener("error", () => { img.dataset.natural = "error"; }); }
}
const shown = Number(document.body.dataset.game);
setInterval(() => fetch("game/latest.json", {cache: "no-store"})
  .then(r => r.ok ? r.json() : null)
  .then(j => { if (j && j.game !== shown) location.reload(); })
  .catch(() => {}), 10000);
"""


def render_page(view: PageView) -> str:
    latest = view.latest.info if view.latest else None
    version = latest["version"] if latest else -1
    if latest and view.best:
        mean = f"{view.window_mean:.1f}" if view.window_mean is not None else "-"
        summary = (
            f'model <b id="version">v{version:,}</b> after {compact(latest["frames"])} '
            f"training frames &middot; {view.episodes:,} games &middot; mean <b>{mean}</b> "
            f"over the last {view.window} &middot; best game {view.best.score:g}"
        )
    else:
        summary = f'<span id="version">no model evaluated yet</span>: {html.escape(NO_GAME)}'
    links = [("evaluator /metrics", "metrics"), *view.links]
    items = "".join(
        f'<li><a href="{html.escape(url, quote=True)}">{html.escape(name)}</a></li>'
        for name, url in links
    )
    title = f"A3C {html.escape(view.env)}"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}: evaluation</title><style>{STYLE}</style></head>
<body data-game="{latest["game"] if latest else -1}" data-version="{version}">
<h1>{title}: watch it learn</h1>
<p class="summary">{summary}</p>
<section class="games">
{_figure("latest", "Latest game", view.latest, view.note)}
{_figure("best", "Best game", view.best, view.note)}
</section>
<h2>Learning curve</h2>
{curve_svg(view.history)}
<p class="empty">Dots: one game each ({html.escape(view.policy)} policy, full games, raw
score); line: mean of the last {view.window} games.</p>
<h2>Metrics</h2><ul>{items}</ul>
<script>{SCRIPT}</script>
</body></html>
"""


def _text(status: int, message: str) -> Reply:
    return Reply(status, "text/plain; charset=utf-8", message.encode())


@dataclass
class Site:
    """The page and the two games as the HTTP threads serve them: built by the evaluator's
    thread, swapped in whole under a lock, never built per request."""

    page: bytes = b""
    latest: Game | None = None
    best: Game | None = None
    note: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def publish(self, view: PageView) -> None:
        page = render_page(view).encode()
        with self._lock:
            self.page, self.latest, self.best, self.note = page, view.latest, view.best, view.note

    def _game(self, which: str) -> Game | None:
        with self._lock:
            return self.latest if which == "latest" else self.best

    def _gif(self, which: str) -> Reply:
        game = self._game(which)
        if game is None:
            return _text(404, NO_GAME)
        if game.gif is None:
            return _text(404, f"the {which} game was not recorded: {self.note or 'no frames'}\n")
        return Reply(200, "image/gif", game.gif)

    def _json(self, which: str) -> Reply:
        game = self._game(which)
        if game is None:
            return _text(404, NO_GAME)
        return Reply(200, "application/json", json.dumps(game.info, indent=1).encode())

    def _page(self) -> Reply:
        with self._lock:
            return Reply(200, "text/html; charset=utf-8", self.page)

    def routes(self) -> Routes:
        return {
            "/": self._page,
            "/index.html": self._page,
            "/game/latest.gif": lambda: self._gif("latest"),
            "/game/best.gif": lambda: self._gif("best"),
            "/game/latest.json": lambda: self._json("latest"),
            "/game/best.json": lambda: self._json("best"),
        }
