"""CurveZMQ certificates (`a3c keys`) and the learner's list of admitted clients, without
sockets; tests/integration/test_curve.py proves the same over real connections."""

import logging
import shutil

import pytest
import zmq.auth

from common.errors import UsageError
from common.transport import AllowedClients, CurveServer, create_keys


def test_keys_are_made_once_and_each_client_is_admitted(tmp_path):
    written = create_keys(tmp_path)
    names = sorted(p.relative_to(tmp_path).as_posix() for p in written)
    assert names == [
        "clients/evaluator.key",
        "clients/worker.key",
        "evaluator.key",
        "evaluator.key_secret",
        "learner.key",
        "learner.key_secret",
        "worker.key",
        "worker.key_secret",
    ]
    assert (tmp_path / "learner.key_secret").stat().st_mode & 0o077 == 0
    learner_secret = (tmp_path / "learner.key_secret").read_bytes()
    # Again, with one more client: nothing deployed is replaced, the new one is added.
    again = create_keys(tmp_path, clients=("worker", "evaluator", "worker-gpu"))
    assert sorted(p.name for p in again) == [
        "worker-gpu.key",
        "worker-gpu.key",
        "worker-gpu.key_secret",
    ]
    assert (tmp_path / "learner.key_secret").read_bytes() == learner_secret
    assert not (tmp_path / "clients" / "learner.key").exists()


def test_admitted_clients_follow_the_directory(tmp_path, caplog):
    create_keys(tmp_path)
    worker, _ = zmq.auth.load_certificate(tmp_path / "worker.key")
    evaluator, _ = zmq.auth.load_certificate(tmp_path / "evaluator.key")
    now = [0.0]
    allowed = AllowedClients(tmp_path / "clients", clock=lambda: now[0])
    assert allowed.callback("*", worker) and allowed.callback("*", evaluator)

    (tmp_path / "revoked").mkdir()
    shutil.move(tmp_path / "clients" / "worker.key", tmp_path / "revoked" / "worker.key")
    with caplog.at_level(logging.WARNING, logger="transport"):
        assert not allowed.callback("*", worker)
        assert not allowed.callback("*", worker)  # logged once a minute at most
        now[0] = 61.0
        assert not allowed.callback("*", worker)
    assert sum("is not in" in r.getMessage() for r in caplog.records) == 2
    assert allowed.callback("*", evaluator)

    shutil.move(tmp_path / "revoked" / "worker.key", tmp_path / "clients" / "worker.key")
    assert allowed.callback("*", worker)


def test_a_learner_key_needs_its_clients_and_a_secret(tmp_path):
    create_keys(tmp_path)
    with pytest.raises(UsageError, match="--curve-clients-dir"):
        CurveServer.from_files(tmp_path / "learner.key_secret", None)
    with pytest.raises(UsageError, match="no secret key"):
        CurveServer.from_files(tmp_path / "learner.key", tmp_path / "clients")
    server = CurveServer.from_files(tmp_path / "learner.key_secret", tmp_path / "clients")
    assert len(server.identity.public) == len(server.identity.secret) == 40  # z85 of 32 bytes
