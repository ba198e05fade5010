"""CurveZMQ: with CURVE on, only clients whose public key the learner admits can push
gradients or read the weight broadcast; everyone else's handshake fails before any message
(real processes and real sockets; the peers that probe are in the test process)."""

import shutil
import time
from pathlib import Path

import pytest
import zmq

from common.config import ConfigError, load_config
from common.errors import UsageError
from common.protocol import HelloBody, Session
from common.transport import CurveClient, DealerClient, Subscriber, create_keys, curve_client
from services.cli import main as a3c_main
from tests.conftest import wait_for

pytestmark = pytest.mark.skipif(not zmq.has("curve"), reason="libzmq without CURVE")

SILENCE_S = 3.0
"""How long a refused peer is watched for anything at all (a keyed one hears within 1 s)."""


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    directory = tmp_path / "keys"
    create_keys(directory)
    return directory


def _learner_flags(keys: Path) -> list[str]:
    return [
        "--curve-key-file",
        str(keys / "learner.key_secret"),
        "--curve-clients-dir",
        str(keys / "clients"),
        "--publish-interval",
        "0.2",
    ]


def _client_flags(keys: Path, name: str) -> list[str]:
    return [
        "--curve-key-file",
        str(keys / f"{name}.key_secret"),
        "--curve-server-key-file",
        str(keys / "learner.key"),
    ]


def _curve(keys: Path, name: str) -> CurveClient:
    return CurveClient.from_files(keys / f"{name}.key_secret", keys / "learner.key")


def _stranger_keys(tmp_path: Path) -> Path:
    """A valid certificate pair that the learner was never told about."""
    other = tmp_path / "other"
    create_keys(other, clients=("stranger",))
    return other / "stranger.key_secret"


def _broadcasts(subscriber: Subscriber, seconds: float) -> int:
    received, deadline = 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        if subscriber.recv_newest(100) is not None:
            received += 1
    subscriber.close()
    return received


def _welcomed(client: DealerClient, layout: str, seconds: float) -> bool:
    sent = client.send("hello", HelloBody(layout=layout, heartbeat_interval=2.0), timeout_ms=500)
    reply = client.recv(int(seconds * 1000)) if sent else None
    client.close()
    return reply is not None and reply.message is not None and reply.message.type == "welcome"


def test_only_admitted_keys_read_the_broadcast_or_push_gradients(cluster, keys, tmp_path):
    learner = cluster.start("learner", None, *_learner_flags(keys))
    worker = cluster.start("worker", None, *_client_flags(keys, "worker"))
    wait_for(lambda: learner.value("a3c_learner_updates_total") > 0, 60, "keyed gradients")

    host, port = "127.0.0.1", cluster.port
    keyed = Subscriber(Session("evaluator-probe"), host, port + 1, _curve(keys, "evaluator"))
    assert _broadcasts(keyed, SILENCE_S) > 0

    # No CURVE at all, and CURVE with a key the learner does not admit: nothing arrives.
    assert _broadcasts(Subscriber(Session("plain"), host, port + 1), SILENCE_S) == 0
    stranger = CurveClient.from_files(_stranger_keys(tmp_path), keys / "learner.key")
    assert _broadcasts(Subscriber(Session("stranger"), host, port + 1, stranger), SILENCE_S) == 0

    layout = learner.log().split("layout ")[1].split(")")[0]
    assert not _welcomed(DealerClient(Session("plain-worker"), host, port), layout, SILENCE_S)
    assert not _welcomed(
        DealerClient(Session("stranger-worker"), host, port, stranger), layout, SILENCE_S
    )
    assert _welcomed(
        DealerClient(Session("keyed-worker"), host, port, _curve(keys, "worker")), layout, 5.0
    )

    wait_for(
        lambda: (
            learner.value("a3c_learner_handshakes_refused_total", socket="gradients") >= 2
            and learner.value("a3c_learner_handshakes_refused_total", socket="weights") >= 2
        ),
        10,
        "refused handshakes counted",
    )
    assert "CURVE on" in learner.log()
    assert "is not in" in learner.log()  # the unknown key is logged
    assert worker.popen.poll() is None


def test_a_removed_key_is_refused_without_restarting_the_learner(cluster, keys):
    learner = cluster.start("learner", None, *_learner_flags(keys))
    host, port = "127.0.0.1", cluster.port
    layout = learner.log().split("layout ")[1].split(")")[0]
    assert _welcomed(
        DealerClient(Session("keyed-worker"), host, port, _curve(keys, "worker")), layout, 5.0
    )
    revoked = keys / "revoked"
    revoked.mkdir()
    shutil.move(keys / "clients" / "worker.key", revoked / "worker.key")
    assert not _welcomed(
        DealerClient(Session("revoked-worker"), host, port, _curve(keys, "worker")),
        layout,
        SILENCE_S,
    )
    assert learner.popen.poll() is None


def test_curve_settings_that_cannot_work_are_refused_before_anything_starts(keys, tmp_path, capsys):
    """A learner key without the directory of admitted clients, a client key without the
    learner's public key, a public key where the secret one belongs: a clear error and exit
    code 2 from `a3c`, before a port is bound or a checkpoint read."""
    flags = ["--env", "CartPole-v1", "--metrics-port", "0", "--checkpoint-dir", str(tmp_path)]
    with pytest.raises(SystemExit) as exited:
        a3c_main(["learner", *flags, "--curve-key-file", str(keys / "learner.key_secret")])
    assert exited.value.code == 2
    assert "--curve-clients-dir" in capsys.readouterr().err
    with pytest.raises(UsageError, match="no secret key"):
        curve_client(keys / "learner.key", keys / "learner.key")
    with pytest.raises(UsageError, match="--curve-server-key-file"):
        curve_client(keys / "worker.key_secret", None)
    with pytest.raises(UsageError, match="cannot read the CURVE certificate"):
        curve_client(tmp_path / "missing.key_secret", keys / "learner.key")
    with pytest.raises(ConfigError, match="not a readable file"):
        load_config({"curve_key_file": str(tmp_path / "missing.key_secret")})
