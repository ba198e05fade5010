"""The only module that touches ZeroMQ sockets: bind/connect, bounded queues, polling with
timeouts, reconnects (the ZeroMQ guide's Lazy Pirate pattern on the client side; the
heartbeats that make it a Paranoid Pirate are services.worker.link's and the learner core's).

The learner binds a ROUTER on PORT (requests from workers: hello, gradient, heartbeat; each
gets one reply) and a PUB on PORT+1 (weights for evaluators: only the newest matters).

With CurveZMQ on (`CurveServer` on the learner's two sockets, `CurveClient` on the peers'),
every connection is encrypted and the learner admits only clients whose public key is in its
allowed directory, checked by a ZAP handler: a peer without an admitted key can neither push
gradients nor read the weight broadcast (its handshake fails before any message flows).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils.monitor import recv_monitor_message

from common.errors import UsageError
from common.protocol import BodyLike, Message, ProtocolError, Session

log = logging.getLogger("transport")

HIGH_WATER_MARK = 64
"""Messages a socket queues per peer before it drops (PUB) or blocks/refuses (others)."""
LINGER_MS = 500


BROADCAST_SILENCE_S = 10.0
"""A subscriber that has heard no broadcast for this long opens a new connection. The learner
publishes every `publish_interval` (1 s) whether or not the model changed, so silence means a
connection that died without a word (a network partition, a frozen or vanished learner);
without this a cut-off evaluator heard no weights again until the kernel's TCP timeout, many
minutes later (found by `make chaos`). Not ZMTP heartbeats (ZMQ_HEARTBEAT_IVL): with a small
receive high-water mark, as here, libzmq 4.3 aborts on an assertion (`_input_stopped`) when
a heartbeat resets a stalled connection, which `make chaos` also hit."""


def _tune(sock: zmq.Socket, max_bytes: int) -> None:
    sock.setsockopt(zmq.LINGER, LINGER_MS)
    sock.setsockopt(zmq.SNDHWM, HIGH_WATER_MARK)
    sock.setsockopt(zmq.RCVHWM, HIGH_WATER_MARK)
    sock.setsockopt(zmq.MAXMSGSIZE, max_bytes)


# --- CurveZMQ ---------------------------------------------------------------------------------


def _load_certificate(path: Path, need_secret: bool) -> tuple[bytes, bytes | None]:
    """(public, secret) from a ZeroMQ certificate file (`a3c keys` writes them)."""
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as error:
        raise UsageError(f"cannot read the CURVE certificate {path}: {error}") from None
    if need_secret and not secret:
        raise UsageError(f"{path} holds no secret key (pass the NAME.key_secret file)")
    return public, secret


@dataclass(frozen=True)
class CurveIdentity:
    """One peer's CURVE key pair, from its NAME.key_secret certificate."""

    public: bytes
    secret: bytes

    @staticmethod
    def load(key_file: Path) -> CurveIdentity:
        public, secret = _load_certificate(key_file, need_secret=True)
        assert secret is not None
        return CurveIdentity(public, secret)

    def apply(self, sock: zmq.Socket) -> None:
        sock.curve_secretkey = self.secret
        sock.curve_publickey = self.public


@dataclass(frozen=True)
class CurveServer:
    """The learner's CURVE identity and the directory of the client keys it admits."""

    identity: CurveIdentity
    clients_dir: Path

    @classmethod
    def from_files(cls, key_file: Path, clients_dir: Path | None) -> CurveServer:
        if clients_dir is None or not clients_dir.is_dir():
            raise UsageError(
                "CURVE on the learner needs --curve-clients-dir: the directory of the public "
                f"keys (*.key) it admits (got {clients_dir})"
            )
        return cls(CurveIdentity.load(key_file), clients_dir)

    def apply(self, sock: zmq.Socket) -> None:
        self.identity.apply(sock)
        sock.curve_server = True


@dataclass(frozen=True)
class CurveClient:
    """A worker's or evaluator's CURVE identity, and the learner's public key it expects."""

    identity: CurveIdentity
    server_public: bytes

    @classmethod
    def from_files(cls, key_file: Path, server_key_file: Path | None) -> CurveClient:
        if server_key_file is None:
            raise UsageError(
                "CURVE on a worker or evaluator needs --curve-server-key-file: the learner's "
                "public key (learner.key)"
            )
        identity = CurveIdentity.load(key_file)
        server_public, _ = _load_certificate(server_key_file, need_secret=False)
        return cls(identity, server_public)

    def apply(self, sock: zmq.Socket) -> None:
        self.identity.apply(sock)
        sock.curve_serverkey = self.server_public


class AllowedClients:
    """The ZAP credentials check: a client key is admitted iff a certificate with it is in
    `directory`. The directory is read again whenever it changes, so a key is added or
    revoked without restarting the learner. (Refusals are counted by the server sockets'
    HandshakeMonitor; here each unknown key is logged once a minute at most.)"""

    LOG_EVERY_S = 60.0
    MAX_REMEMBERED = 1024

    def __init__(self, directory: Path, clock: Callable[[], float] = time.monotonic) -> None:
        self.directory = directory
        self.clock = clock
        self._stamp: tuple[int, int] | None = None
        self._keys: frozenset[bytes] = frozenset()
        self._logged: dict[bytes, float] = {}
        self._lock = threading.Lock()

    def keys(self) -> frozenset[bytes]:
        with self._lock:
            try:
                stamp = (self.directory.stat().st_mtime_ns, len(list(self.directory.glob("*.key"))))
            except OSError:
                return self._keys
            if stamp != self._stamp:
                try:
                    self._keys = frozenset(zmq.auth.load_certificates(self.directory))
                except (OSError, ValueError) as error:
                    log.error("keeping the admitted CURVE keys as they were: %s", error)
                self._stamp = stamp
            return self._keys

    def callback(self, domain: str, z85_key: bytes) -> bool:
        if z85_key in self.keys():
            return True
        now = self.clock()
        if len(self._logged) > self.MAX_REMEMBERED:  # random keys must not grow it forever
            self._logged.clear()
        if now - self._logged.get(z85_key, float("-inf")) >= self.LOG_EVERY_S:
            self._logged[z85_key] = now
            log.warning(
                "refused a CURVE client whose key %s... is not in %s",
                z85_key.decode()[:12],
                self.directory,
            )
        return False


def curve_server(key_file: Path | None, clients_dir: Path | None) -> CurveServer | None:
    """The learner's CURVE settings from its config (None: CURVE off)."""
    return None if key_file is None else CurveServer.from_files(key_file, clients_dir)


def curve_client(key_file: Path | None, server_key_file: Path | None) -> CurveClient | None:
    """A worker's or evaluator's CURVE settings from its config (None: CURVE off)."""
    return None if key_file is None else CurveClient.from_files(key_file, server_key_file)


_authenticators: dict[int, ThreadAuthenticator] = {}


def _start_authenticator(context: zmq.Context, allowed: AllowedClients) -> None:
    """One ZAP handler per context: every CURVE server socket of the process shares it (both
    of the learner's sockets admit the same clients)."""
    if id(context) in _authenticators:
        return
    authenticator = ThreadAuthenticator(context, log=logging.getLogger("transport.zap"))
    authenticator.start()
    authenticator.configure_curve_callback(domain="*", credentials_provider=allowed)
    _authenticators[id(context)] = authenticator


class HandshakeMonitor:
    """Counts the handshakes a server socket refused (a peer without CURVE, or with a wrong
    key), from ZeroMQ's socket monitor; `drain` is called from the socket's own thread."""

    EVENTS = (
        zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
        | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
        | zmq.EVENT_HANDSHAKE_FAILED_AUTH
    )

    def __init__(self, sock: zmq.Socket) -> None:
        self.monitor = sock.get_monitor_socket(self.EVENTS)

    def drain(self) -> int:
        failed = 0
        while self.monitor.poll(0, zmq.POLLIN):
            recv_monitor_message(self.monitor)
            failed += 1
        return failed

    def close(self) -> None:
        self.monitor.close(linger=0)


class Received:
    """One incoming message: decoded, or the reason it was refused (never an exception)."""

    def __init__(
        self,
        identity: bytes | None,
        message: Message | None,
        error: ProtocolError | None,
        nbytes: int = 0,
    ) -> None:
        self.identity = identity
        self.message = message
        self.error = error
        self.nbytes = nbytes
        """Bytes of the message's frames (the ROUTER identity aside), refused ones too."""


def frames_nbytes(frames: Sequence[Any]) -> int:
    """Bytes of a message's frames (bytes, memoryviews or zmq.Frames), as they cross the wire
    less ZeroMQ's own framing of a few bytes each."""
    return sum(memoryview(getattr(frame, "buffer", frame)).nbytes for frame in frames)


def _decode(session: Session, frames: list, identity: bytes | None = None) -> Received:
    """Decode or explain: a bad message becomes a Received with its error, never a raise."""
    nbytes = frames_nbytes(frames)
    try:
        return Received(identity, session.decode(frames), None, nbytes)
    except ProtocolError as error:
        return Received(identity, None, error, nbytes)


class RouterServer:
    """Learner side: one reply per request, addressed by the peer's ZeroMQ identity."""

    def __init__(
        self,
        session: Session,
        host: str,
        port: int,
        curve: CurveServer | None = None,
    ) -> None:
        self.session = session
        self.context: zmq.Context = zmq.Context.instance()
        self.sock: zmq.Socket = self.context.socket(zmq.ROUTER)
        _tune(self.sock, session.max_bytes)
        # Replies to a vanished peer are dropped instead of raising or queueing forever.
        self.sock.setsockopt(zmq.ROUTER_MANDATORY, 0)
        self.handshakes = _secure_server(self.sock, self.context, curve)
        self.sock.bind(f"tcp://{host}:{port}")
        self.poller = zmq.Poller()
        self.poller.register(self.sock, zmq.POLLIN)

    def recv(self, timeout_ms: int) -> Received | None:
        """The next request within `timeout_ms`, or None."""
        if not self.poller.poll(timeout_ms):
            return None
        frames = self.sock.recv_multipart(copy=False)
        return _decode(self.session, frames[1:], identity=bytes(frames[0].buffer))

    def reply(
        self,
        identity: bytes,
        msg_type: str,
        body: BodyLike = None,
        arrays: Sequence[tuple[str, Any]] = (),
    ) -> int:
        """Queue the reply without copying its arrays; the bytes queued (0: dropped)."""
        frames = self.session.encode(msg_type, body, arrays)
        try:
            self.sock.send_multipart([identity, *frames], copy=False, flags=zmq.NOBLOCK)
        except zmq.Again:
            return 0  # the peer's queue is full: it is not reading; its own timeout recovers it
        return frames_nbytes(frames)

    def refused_handshakes(self) -> int:
        """Handshakes refused since the last call (0 without CURVE)."""
        return self.handshakes.drain() if self.handshakes else 0

    def close(self) -> None:
        if self.handshakes:
            self.handshakes.close()
        self.sock.close()


def _secure_server(
    sock: zmq.Socket, context: zmq.Context, curve: CurveServer | None
) -> HandshakeMonitor | None:
    """CURVE on a server socket, with the process's ZAP handler for `curve.clients_dir`."""
    if curve is None:
        return None
    _start_authenticator(context, AllowedClients(curve.clients_dir))
    curve.apply(sock)
    return HandshakeMonitor(sock)


class Publisher:
    """Learner side: broadcast to subscribers; a slow subscriber loses old messages, never
    delays the learner."""

    def __init__(
        self,
        session: Session,
        host: str,
        port: int,
        curve: CurveServer | None = None,
    ) -> None:
        self.session = session
        context: zmq.Context = zmq.Context.instance()
        self.sock: zmq.Socket = context.socket(zmq.PUB)
        _tune(self.sock, session.max_bytes)
        self.sock.setsockopt(zmq.SNDHWM, 2)
        self.handshakes = _secure_server(self.sock, context, curve)
        self.sock.bind(f"tcp://{host}:{port}")

    def publish(self, msg_type: str, body: BodyLike, arrays: Sequence[tuple[str, Any]] = ()) -> int:
        """Broadcast without copying the arrays; the bytes of the message (0: dropped),
        counted once however many subscribers (none included) are sent a copy."""
        frames = self.session.encode(msg_type, body, arrays)
        try:
            self.sock.send_multipart(frames, copy=False, flags=zmq.NOBLOCK)
        except zmq.Again:
            return 0
        return frames_nbytes(frames)

    def refused_handshakes(self) -> int:
        return self.handshakes.drain() if self.handshakes else 0

    def close(self) -> None:
        if self.handshakes:
            self.handshakes.close()
        self.sock.close()


class DealerClient:
    """Worker side of the Lazy Pirate: requests with replies awaited under a timeout; on
    silence the socket is thrown away and a fresh one connects (after a backoff chosen by the
    caller), so nothing queued for a dead learner is ever replayed into a new one."""

    def __init__(
        self, session: Session, host: str, port: int, curve: CurveClient | None = None
    ) -> None:
        self.session = session
        self.endpoint = f"tcp://{host}:{port}"
        self.curve = curve
        self.context: zmq.Context = zmq.Context.instance()
        self.sock: zmq.Socket | None = None
        self.connect()

    def connect(self) -> None:
        self.close()
        self.sock = self.context.socket(zmq.DEALER)
        _tune(self.sock, self.session.max_bytes)
        self.sock.setsockopt(zmq.SNDHWM, 4)
        self.sock.setsockopt(zmq.RECONNECT_IVL, 100)
        self.sock.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
        # Queue only for peers that are connected: a dead learner costs no memory here.
        self.sock.setsockopt(zmq.IMMEDIATE, 1)
        if self.curve is not None:
            self.curve.apply(self.sock)
        self.sock.connect(self.endpoint)

    def send(
        self,
        msg_type: str,
        body: BodyLike = None,
        arrays: Sequence[tuple[str, Any]] = (),
        timeout_ms: int = 1000,
    ) -> bool:
        """Send one request; False when it cannot leave within the timeout (learner away)."""
        assert self.sock is not None
        frames = self.session.encode(msg_type, body, arrays)
        if not self.sock.poll(timeout_ms, zmq.POLLOUT):
            return False
        self.sock.send_multipart(frames, copy=False)
        return True

    def recv(self, timeout_ms: int) -> Received | None:
        assert self.sock is not None
        if not self.sock.poll(timeout_ms, zmq.POLLIN):
            return None
        return _decode(self.session, self.sock.recv_multipart(copy=False))

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close(linger=0)
            self.sock = None


class Subscriber:
    """Evaluator side: keeps only the newest broadcast (older ones are skipped), and opens a
    new connection after `silence_s` without one (BROADCAST_SILENCE_S)."""

    def __init__(
        self,
        session: Session,
        host: str,
        port: int,
        curve: CurveClient | None = None,
        silence_s: float = BROADCAST_SILENCE_S,
    ) -> None:
        self.session = session
        self.endpoint = f"tcp://{host}:{port}"
        self.curve = curve
        self.silence_s = silence_s
        self.reconnects = 0
        """New connections opened after a silence."""
        self.sock = self._connect()
        self._heard = time.monotonic()

    def _connect(self) -> zmq.Socket:
        sock: zmq.Socket = zmq.Context.instance().socket(zmq.SUB)
        _tune(sock, self.session.max_bytes)
        sock.setsockopt(zmq.RCVHWM, 2)
        sock.setsockopt(zmq.SUBSCRIBE, b"")
        if self.curve is not None:
            self.curve.apply(sock)
        sock.connect(self.endpoint)
        return sock

    def recv_newest(self, timeout_ms: int) -> Received | None:
        """Wait up to `timeout_ms` for a broadcast, then drain to the newest one."""
        if not self.sock.poll(timeout_ms, zmq.POLLIN):
            if time.monotonic() - self._heard > self.silence_s:
                self.sock.close(linger=0)
                self.sock = self._connect()
                self._heard = time.monotonic()
                self.reconnects += 1
                log.info("no weight broadcast for %.0fs: reconnecting", self.silence_s)
            return None
        self._heard = time.monotonic()
        frames = self.sock.recv_multipart(copy=False)
        while self.sock.poll(0, zmq.POLLIN):
            frames = self.sock.recv_multipart(copy=False)
        return _decode(self.session, frames)

    def close(self) -> None:
        self.sock.close(linger=0)


def create_keys(directory: Path, clients: Sequence[str] = ("worker", "evaluator")) -> list[Path]:
    """A CURVE certificate pair for the learner and for each client name, with the clients'
    public keys also in `directory/clients` (the learner's --curve-clients-dir). Existing files
    are kept, so running it again adds clients without replacing keys already deployed."""
    allowed = directory / "clients"
    allowed.mkdir(parents=True, exist_ok=True)
    written = []
    for name in ("learner", *clients):
        public, secret = directory / f"{name}.key", directory / f"{name}.key_secret"
        if not secret.exists():
            zmq.auth.create_certificates(directory, name)
            secret.chmod(0o600)
            written += [public, secret]
        if name != "learner" and not (allowed / public.name).exists():
            (allowed / public.name).write_bytes(public.read_bytes())
            written.append(allowed / public.name)
    return written
