"""A (re)started learner answers /metrics and /healthz only once it has resumed from its
checkpoint: scraped as early as possible, it never reports the version 0 it has before the
resume, which every dashboard and rate() would take for a drop."""

from __future__ import annotations

import os
import time

from common.samples import scrape
from services.learner.learner import Learner
from services.local.process import service_args
from tests.conftest import Cluster, Service, free_port, http_status
from tests.integration.test_learner_state import close, make_learner

VERSION = 500
VERSION_GAUGE = "a3c_learner_model_version"


def start_unwaited(cluster: Cluster, name: str) -> Service:
    """A learner process on the cluster's ports and checkpoint dir, returned at once (not
    after its /metrics answers, as `Cluster.start` does), so the test can watch it start."""
    metrics_port = free_port()
    wiring = service_args(
        "learner",
        env=cluster.env_id,
        metrics_port=metrics_port,
        host="127.0.0.1",
        port=cluster.port,
        checkpoint_dir=cluster.tmp_path / "ckpt",
    )
    service = Service(name, wiring, cluster.tmp_path / f"{name}.log", metrics_port)
    service.start(dict(os.environ))
    cluster.services.append(service)
    return service


def watch_start(service: Service, timeout: float = 60.0) -> list[float]:
    """Scrape /metrics and /healthz back to back from the moment the process starts, and
    return the model versions of the first 20 pages. Fails if an endpoint answers before the
    resume was logged, or a page lacks the version."""
    versions: list[float] = []
    deadline = time.monotonic() + timeout
    while len(versions) < 20:
        assert time.monotonic() < deadline, f"no /metrics in {timeout}s:\n{service.log()[-3000:]}"
        assert service.popen.poll() is None, f"{service.name} died:\n{service.log()[-3000:]}"
        health = http_status(service.metrics_port, "/healthz")
        page = scrape(service.metrics_port, timeout=2)
        if health or page:
            assert "resumed from" in service.log(), "an endpoint answered before the resume"
        if health:
            assert health == 200, health
        if page:
            assert page.has(VERSION_GAUGE), "a page without the model version"
            versions.append(page.get(VERSION_GAUGE))
        else:
            time.sleep(0.002)
    return versions


def test_a_restarted_learner_never_reports_a_version_it_has_not_resumed(cluster, tmp_path):
    seed: Learner = make_learner(tmp_path / "ckpt")
    try:
        seed.version = VERSION
        seed.checkpoint()
    finally:
        close(seed)

    first = start_unwaited(cluster, "learner")
    assert set(watch_start(first)) == {VERSION}
    first.kill()  # as an operator would: kill -9, start again, scrape at once

    again = start_unwaited(cluster, "learner-again")
    assert set(watch_start(again)) == {VERSION}
    assert again.terminate() == 0
