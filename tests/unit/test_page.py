"""The evaluator's page and /game/* routes, driven as WSGI calls (no sockets)."""

import io
import json
import re

import numpy as np
from PIL import Image
from prometheus_client import CollectorRegistry, Gauge

from common.metrics import Health, metrics_app
from services.evaluator.gallery import Gallery
from services.evaluator.page import PageView, Site, curve_svg, parse_links


def call(app, path, method="GET"):
    """(status code, headers, body) of one request to a WSGI app."""
    answer = {}

    def start_response(status, headers):
        answer["status"], answer["headers"] = int(status.split()[0]), dict(headers)

    body = b"".join(app({"PATH_INFO": path, "REQUEST_METHOD": method}, start_response))
    return answer["status"], answer["headers"], body


def played(max_frames=16, games=((1, 3.0), (2, 7.0), (3, 5.0))):
    gallery = Gallery(max_frames)
    for game, score in games:
        gallery.start()
        for step in range(25 + game):
            frame = np.zeros((210, 160, 3), np.uint8)
            frame[100:104, step : step + 2] = 255
            gallery.add(frame, min(step, score))
        info = {"game": game, "score": score, "version": 100 + game, "frames": 5000 * game}
        gallery.finish({**info, "length": 25 + game, "env": "ALE/Breakout-v5"})
    return gallery


def view(gallery=None, **extra):
    history = [(5000.0 * i, float(i % 4), 1.5) for i in range(1, 4)] if gallery else []
    return PageView(
        env="ALE/Breakout-v5",
        policy="sample",
        latest=gallery.latest if gallery else None,
        best=gallery.best if gallery else None,
        history=history,
        episodes=len(history),
        window_mean=1.5 if gallery else None,
        window=10,
        **extra,
    )


def site_app(site):
    registry = CollectorRegistry()
    Gauge("a3c_evaluator_model_version", "v", registry=registry).set(103)
    return metrics_app(registry, Health(), site.routes())


def test_before_the_first_game_the_games_are_a_clear_404_and_the_page_says_so():
    site = Site()
    site.publish(view())
    app = site_app(site)
    for path in ("/game/latest.gif", "/game/best.gif", "/game/latest.json", "/game/best.json"):
        status, headers, body = call(app, path)
        assert status == 404 and headers["Content-Type"].startswith("text/plain")
        assert b"no evaluation game has finished yet" in body
    status, headers, body = call(app, "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert b"no model evaluated yet" in body and b"<img" not in body


def test_the_gif_matches_the_json_and_is_served_as_encoded():
    gallery = played()
    site = Site()
    site.publish(view(gallery))
    app = site_app(site)
    status, headers, gif = call(app, "/game/latest.gif")
    assert status == 200 and headers["Content-Type"] == "image/gif"
    assert headers["Cache-Control"] == "no-store" and int(headers["Content-Length"]) == len(gif)
    assert gif == gallery.latest.gif  # encoded once, when the game ended
    info = json.loads(call(app, "/game/latest.json")[2])
    with Image.open(io.BytesIO(gif)) as image:
        assert image.n_frames == info["gif_frames"] and list(image.size) == info["gif_size"]
    assert info["length"] == 28 and info["game"] == 3 and info["version"] == 103
    assert info["score"] == 5.0 and info["frames"] == 15000 and info["gif_bytes"] == len(gif)
    assert info["memory_bound_bytes"] > 0
    best = json.loads(call(app, "/game/best.json")[2])
    assert best["game"] == 2 and call(app, "/game/best.gif")[2] == gallery.best.gif
    assert call(app, "/game/latest.gif", method="HEAD")[2] == b""


def test_the_page_is_self_contained_and_shows_games_curve_version_and_links():
    gallery = played()
    site = Site()
    site.publish(view(gallery, links=parse_links("learner=http://127.0.0.1:9101/metrics")))
    status, _, body = call(site_app(site), "/")
    page = body.decode()
    assert status == 200
    assert 'id="version">v103<' in page and 'data-version="103"' in page
    assert 'src="game/latest.gif?game=3"' in page and 'src="game/best.gif?game=2"' in page
    assert re.search(r'<svg id="curve" data-points="3"', page)
    assert page.count("<circle") == 3 and "<polyline" in page
    assert 'href="http://127.0.0.1:9101/metrics">learner<' in page
    assert 'href="metrics"' in page
    # No external assets: every src is relative, nothing is linked in or imported.
    assert all(not src.startswith(("http", "//")) for src in re.findall(r'src="([^"]*)"', page))
    assert "<link" not in page and "@import" not in page and "url(" not in page


def test_the_page_says_why_games_are_not_recorded():
    gallery = Gallery(0)
    gallery.start()
    gallery.finish({"game": 1, "score": 1.0, "version": 2, "frames": 3, "length": 4})
    site = Site()
    note = "Games are not recorded (game_max_frames is 0)."
    site.publish(view(gallery, note=note))
    app = site_app(site)
    assert note in call(app, "/")[2].decode()
    status, _, body = call(app, "/game/latest.gif")
    assert status == 404 and b"not recorded" in body
    assert call(app, "/game/latest.json")[0] == 200


def test_healthz_and_metrics_still_answer_beside_the_routes():
    app = site_app(Site())
    assert call(app, "/healthz")[:1] == (200,)
    status, _, body = call(app, "/metrics")
    assert status == 200 and b"a3c_evaluator_model_version 103.0" in body


def test_links_are_http_or_relative_only():
    links = parse_links("a=http://x/metrics b=https://y c=/rel d=javascript:alert(1) e=metrics")
    assert links == [("a", "http://x/metrics"), ("b", "https://y"), ("c", "/rel"), ("e", "metrics")]
    assert parse_links("") == []


def test_curve_scales_scores_into_the_plot():
    svg = curve_svg([(0.0, -1.0, -1.0), (1e6, 10.0, 4.0)], width=200, height=100)
    xs = [float(v) for v in re.findall(r'<circle cx="([\d.]+)"', svg)]
    ys = [float(v) for v in re.findall(r'cy="([\d.]+)"', svg)]
    assert xs[0] < xs[1] <= 200 and ys[0] > ys[1] >= 0  # higher scores higher up
    assert "1M" in svg and "training frames" in svg
    assert "first finished game" in curve_svg([])


def test_a3c_run_links_every_childs_metrics_and_prints_the_page(tmp_path):
    from common.config import Config, load_config
    from services.cli import parse_command_line
    from services.local.launcher import LocalCluster

    config = Config(run_dir=tmp_path / "run", workers=2, tensorboard_dir=tmp_path / "tb")
    cluster = LocalCluster(config)
    assert cluster.evaluator is not None
    _, values = parse_command_line(["evaluator", *cluster.evaluator.args[1:]])
    evaluator = load_config(values)
    assert dict(parse_links(evaluator.page_links)) == {
        "learner": cluster.metrics_url("learner"),
        "worker-0": cluster.metrics_url("worker", 0),
        "worker-1": cluster.metrics_url("worker", 1),
    }
    assert evaluator.tensorboard_dir == tmp_path / "tb" / "run"  # one TensorBoard run per run
    assert cluster.page_url == f"http://127.0.0.1:{cluster.evaluator.metrics_port}/"
