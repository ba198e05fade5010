"""The only module that touches ZeroMQ sockets: bind/connect, bounded queues, polling with
timeouts, reconnects (the ZeroMQ guide's Lazy Pirate pattern on the client side; the
heartbeats that make it a Paranoid Pirate are services.worker.link's and the learner core's).

The learner binds a ROUTER on PORT (requests from workers: hello, gradient, heartbeat; each
gets one reply) and a PUB on PORT+1 (weights for evaluators: only the newest matters).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import zmq

from common.protocol import BodyLike, Message, ProtocolError, Session

HIGH_WATER_MARK = 64
"""Messages a socket queues per peer before it drops (PUB) or blocks/refuses (others)."""
LINGER_MS = 500


def _tune(sock: zmq.Socket, max_bytes: int) -> None:
    sock.setsockopt(zmq.LINGER, LINGER_MS)
    sock.setsockopt(zmq.SNDHWM, HIGH_WATER_MARK)
    sock.setsockopt(zmq.RCVHWM, HIGH_WATER_MARK)
    sock.setsockopt(zmq.MAXMSGSIZE, max_bytes)


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

    def __init__(self, session: Session, host: str, port: int) -> None:
        self.session = session
        self.context: zmq.Context = zmq.Context.instance()
        self.sock: zmq.Socket = self.context.socket(zmq.ROUTER)
        _tune(self.sock, session.max_bytes)
        # Replies to a vanished peer are dropped instead of raising or queueing forever.
        self.sock.setsockopt(zmq.ROUTER_MANDATORY, 0)
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

    def close(self) -> None:
        self.sock.close()


class Publisher:
    """Learner side: broadcast to subscribers; a slow subscriber loses old messages, never
    delays the learner."""

    def __init__(self, session: Session, host: str, port: int) -> None:
        self.session = session
        self.sock: zmq.Socket = zmq.Context.instance().socket(zmq.PUB)
        _tune(self.sock, session.max_bytes)
        self.sock.setsockopt(zmq.SNDHWM, 2)
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

    def close(self) -> None:
        self.sock.close()


class DealerClient:
    """Worker side of the Lazy Pirate: requests with replies awaited under a timeout; on
    silence the socket is thrown away and a fresh one connects (after a backoff chosen by the
    caller), so nothing queued for a dead learner is ever replayed into a new one."""

    def __init__(self, session: Session, host: str, port: int) -> None:
        self.session = session
        self.endpoint = f"tcp://{host}:{port}"
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
    """Evaluator side: keeps only the newest broadcast (older ones are skipped)."""

    def __init__(self, session: Session, host: str, port: int) -> None:
        self.session = session
        self.sock: zmq.Socket = zmq.Context.instance().socket(zmq.SUB)
        _tune(self.sock, session.max_bytes)
        self.sock.setsockopt(zmq.RCVHWM, 2)
        self.sock.setsockopt(zmq.SUBSCRIBE, b"")
        self.sock.connect(f"tcp://{host}:{port}")

    def recv_newest(self, timeout_ms: int) -> Received | None:
        """Wait up to `timeout_ms` for a broadcast, then drain to the newest one."""
        if not self.sock.poll(timeout_ms, zmq.POLLIN):
            return None
        frames = self.sock.recv_multipart(copy=False)
        while self.sock.poll(0, zmq.POLLIN):
            frames = self.sock.recv_multipart(copy=False)
        return _decode(self.session, frames)

    def close(self) -> None:
        self.sock.close(linger=0)
