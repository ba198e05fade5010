"""The wire protocol: msgpack header + HMAC signature + raw array buffers, as separate frames.

Frame layout of every message (after the ROUTER identity, where there is one):

    [header: msgpack map] [signature: HMAC-SHA256 hex or b""] [buffer 0] [buffer 1] ...

The header names the protocol version, message type, sender, its run id (random per process
start, so a restart is noticed), a per-run sequence number (replay protection), and the dtype
and shape of each buffer. Arrays never go through msgpack (that is 3x slower for 2 MB) and
never through pickle. Each message type has one body schema here (`BODIES`), used by every
sender and receiver, so a field is spelled and checked in one place. `decode` validates
everything it can without knowing the model, the body included, and raises ProtocolError with
a reason from `common.metrics.REJECT_REASONS`.
"""

from __future__ import annotations

import builtins
import hashlib
import hmac
import itertools
import math
import os
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import msgpack
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

PROTOCOL_VERSION = (1, 2)
"""(major, minor). Peers with another major version are refused; bump minor for additions
(1.1: the hello's `heartbeat_interval`; 1.2: weights in a welcome, ack or broadcast may travel
as float16 or bfloat16, the learner's `weights_dtype`, and a receiver decodes the dtype their
array spec names)."""
ANY_WEIGHTS_DTYPE_SINCE = (1, 2)
"""The first version whose receivers decode weights of every wire dtype. A 1.1 peer reads
float16 weights right (numpy casts them to float32) but would load bfloat16's raw 16-bit
patterns as integers, so a learner sending bfloat16 weights refuses its hello."""

MESSAGE_TYPES = frozenset(
    {"hello", "welcome", "gradient", "ack", "heartbeat", "weights", "error", "bye"}
)
REQUEST_TYPES = frozenset({"hello", "gradient", "heartbeat", "bye"})
"""What a worker may ask the learner; the other types are answers or broadcasts."""

WIRE_DTYPES: dict[str, np.dtype[Any]] = {
    "float32": np.dtype(np.float32),
    "float16": np.dtype(np.float16),
    # numpy has no bfloat16: its raw 16-bit patterns travel as uint16.
    "bfloat16": np.dtype(np.uint16),
}

MAX_HEADER_BYTES = 64 * 1024
MAX_ARRAYS = 64
MAX_CLOCK_SKEW_S = 300.0
"""The signing window: a signed message whose send time is further than this from the
receiver's clock is refused (`clock_skew`) even if its sequence is new, so a recorded message
cannot be replayed to a learner that restarted and forgot the sequence numbers it saw."""
MAX_FRAMES_PER_GRADIENT = 10_000_000
HEARTBEAT_LIVENESS = 3
"""Heartbeat intervals without hearing from a peer after which it is counted gone: the learner
forgets a worker, a worker stops waiting and greets the learner again. Three, so one late or
lost heartbeat is no outage, and an outage is still noticed within seconds."""
MAX_HEARTBEAT_INTERVAL_S = 3600.0


class ProtocolError(Exception):
    """A message refused before it reached any state; `reason` labels the rejection counter.
    `message_type` is set when the header was readable and only the body was not, so the
    receiver can still answer in kind (a refused gradient is acknowledged with fresh weights)."""

    def __init__(self, reason: str, detail: str, message_type: str | None = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.message_type = message_type


# --- bodies ------------------------------------------------------------------------------


class Body(BaseModel):
    """A message body. Strict, so "7" is no model version and True no frame count; fields it
    does not know are ignored, so a peer of a newer minor version may add some."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)

    reasons: ClassVar[Mapping[str, str]] = {}
    """The rejection reason for a bad value of a field, where it is not "decode"."""

    def wire(self) -> dict[str, Any]:
        """The msgpack map this body travels as; unset optional fields are left out."""
        return self.model_dump(exclude_none=True)


class HelloBody(Body):
    """A worker asking to join: the learner refuses a peer built for another model."""

    reasons: ClassVar[Mapping[str, str]] = {"layout": "model_mismatch"}
    layout: str
    heartbeat_interval: float | None = Field(
        default=None, gt=0.0, le=MAX_HEARTBEAT_INTERVAL_S, allow_inf_nan=False
    )
    """Seconds this worker may stay quiet before it heartbeats. The learner judges the worker
    by this cadence, not its own setting, so a worker configured slower is not forgotten while
    alive; without it (a 1.0 peer) the learner assumes its own interval."""


class WeightsBody(Body):
    """What the weights sent with a welcome or a broadcast are: their version and model."""

    reasons: ClassVar[Mapping[str, str]] = {"layout": "model_mismatch"}
    model_version: int = Field(ge=0)
    frames: int = Field(ge=0)
    """Environment frames behind these weights."""
    layout: str
    env: str


class GradientBody(Body):
    """One rollout's gradient (the array travels beside it) and what it was computed on.
    Checks that need the learner's state (version range, layout, staleness) are the learner's."""

    reasons: ClassVar[Mapping[str, str]] = {
        "model_version": "bad_version",
        "layout": "model_mismatch",
    }
    model_version: int
    """The version of the weights the gradient was computed with."""
    frames: int = Field(ge=0, le=MAX_FRAMES_PER_GRADIENT)
    scale: float = Field(default=1.0, gt=0, allow_inf_nan=False)
    """The factor the wire array was multiplied by (float16 keeps small gradients that way)."""
    layout: str
    want_weights: bool = True
    """Ask for fresh weights with the ack (a worker resyncs every `sync_interval` gradients)."""
    stats: dict[str, float] = Field(default_factory=dict)
    """Loss terms of the rollout, for the learner's metrics (non-finite ones are ignored)."""
    episode_returns: list[float] = Field(default_factory=list)
    """Raw scores of the games that ended during the rollout."""


class AckBody(Body):
    """The answer to a gradient: applied (with the new version, and weights if asked for), or
    refused for a reason that fresh weights cure (stale, non-finite, bad version)."""

    accepted: bool
    model_version: int
    frames: int | None = None
    layout: str | None = None
    env: str | None = None
    reason: str | None = None
    detail: str | None = None


class ErrorBody(Body):
    """A refused request: `reason` is one of `common.metrics.REJECT_REASONS`."""

    reason: str
    detail: str
    model_version: int


class HeartbeatBody(Body):
    """A worker's sign of life when it has sent nothing for a heartbeat interval, and the
    learner's answer to it (with its model version), the worker's sign that the learner lives."""

    model_version: int | None = None


class ByeBody(Body):
    """A worker leaving on purpose, so the learner forgets it at once."""


BODIES: dict[str, type[Body]] = {
    "hello": HelloBody,
    "welcome": WeightsBody,
    "gradient": GradientBody,
    "ack": AckBody,
    "heartbeat": HeartbeatBody,
    "weights": WeightsBody,
    "error": ErrorBody,
    "bye": ByeBody,
}
assert set(BODIES) == MESSAGE_TYPES

B = TypeVar("B", bound=Body)


@dataclass
class Message:
    type: str
    sender: str
    run: str
    seq: int
    sent_at: float
    body: dict[str, Any]
    """The body as it came off the wire (already valid against `payload`'s schema)."""
    payload: Body
    """The body validated against the schema of `type`."""
    arrays: list[np.ndarray] = field(default_factory=list)
    array_dtypes: list[str] = field(default_factory=list)
    nbytes: int = 0
    proto: tuple[int, int] = PROTOCOL_VERSION
    """The protocol version the sender speaks (same major; its minor says what it reads)."""

    def payload_as(self, kind: builtins.type[B]) -> B:
        """The typed body, for a receiver that has already dispatched on `type`."""
        if not isinstance(self.payload, kind):
            raise TypeError(f"a {self.type} message carries {type(self.payload).__name__}")
        return self.payload


BodyLike = Body | Mapping[str, Any] | None
"""What `encode` sends as a body: a schema's model, or a raw map."""


def _signature(key: bytes, parts: Sequence[bytes | memoryview]) -> bytes:
    mac = hmac.new(key, digestmod=hashlib.sha256)
    for part in parts:
        mac.update(part)
    return mac.hexdigest().encode()


class Session:
    """Encodes and decodes messages for one process: its identity, key and sequence counter."""

    def __init__(
        self,
        sender: str,
        key: bytes | None = None,
        max_bytes: int = 256 * 1024 * 1024,
        accepts: Collection[str] = MESSAGE_TYPES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`accepts`: the message types this peer may receive; others are refused as
        `unknown_type` before their body is looked at. `clock`: wall-clock seconds, for the
        send time of outgoing messages and the signing window of incoming ones."""
        self.sender = sender
        self.run = os.urandom(8).hex()
        self.key = key
        self.max_bytes = max_bytes
        self.accepts = frozenset(accepts)
        self.clock = clock
        self._seq = itertools.count(1)

    def encode(
        self,
        msg_type: str,
        body: BodyLike = None,
        arrays: Sequence[tuple[str, np.ndarray]] = (),
    ) -> list[bytes | memoryview]:
        """Frames for one message; `arrays` are (wire dtype name, contiguous array) pairs whose
        memory is sent without a copy. A plain map as body is sent unchecked (tests use that
        to send what no schema allows)."""
        assert msg_type in MESSAGE_TYPES, msg_type
        if isinstance(body, Body):
            assert isinstance(body, BODIES[msg_type]), (msg_type, type(body).__name__)
        header = {
            "proto": list(PROTOCOL_VERSION),
            "type": msg_type,
            "sender": self.sender,
            "run": self.run,
            "seq": next(self._seq),
            "time": self.clock(),
            "arrays": [[dtype, list(array.shape)] for dtype, array in arrays],
            "body": body.wire() if isinstance(body, Body) else dict(body or {}),
        }
        packed = msgpack.packb(header, use_bin_type=True)
        buffers = [np.ascontiguousarray(array).data.cast("B") for _, array in arrays]
        signature = _signature(self.key, [packed, *buffers]) if self.key else b""
        return [packed, signature, *buffers]

    def decode(self, frames: Sequence[Any]) -> Message:
        """Validate and decode frames (bytes or zmq.Frame); arrays are zero-copy views."""
        if len(frames) < 2:
            raise ProtocolError("decode", f"{len(frames)} frame(s), need header and signature")
        parts = [memoryview(getattr(frame, "buffer", frame)) for frame in frames]
        total = sum(part.nbytes for part in parts)
        if total > self.max_bytes:
            raise ProtocolError("oversize", f"{total} bytes > limit {self.max_bytes}")
        raw_header, signature, buffers = parts[0], parts[1], parts[2:]
        if raw_header.nbytes > MAX_HEADER_BYTES:
            raise ProtocolError("oversize", f"header of {raw_header.nbytes} bytes")
        if self.key:
            expected = _signature(self.key, [raw_header, *buffers])
            if not hmac.compare_digest(expected, bytes(signature)):
                raise ProtocolError("bad_signature", "missing or wrong HMAC signature")
        header = _unpack_header(raw_header)
        message = _message_from_header(header, buffers, self.accepts)
        message.nbytes = total
        if self.key:
            _check_clock(message, self.clock())
        return message


def _check_clock(message: Message, now: float) -> None:
    """Refuse a signed message sent outside the signing window, as `clock_skew`: the
    signature is good, so either the peer's clock is off or the message is a recording. The
    peer's clock is the likelier cause, and the one an operator can fix, so the detail says
    by how much and which way."""
    skew = message.sent_at - now
    if abs(skew) <= MAX_CLOCK_SKEW_S:
        return
    direction = "ahead of" if skew > 0 else "behind"
    raise ProtocolError(
        "clock_skew",
        f"the clock of {message.sender[:64]} is off by {skew:+.0f} s ({direction} this "
        f"host's; the signing window is {MAX_CLOCK_SKEW_S:.0f} s): check NTP on both hosts",
    )


def _unpack_header(raw: memoryview) -> dict[str, Any]:
    try:
        header = msgpack.unpackb(raw, raw=False, strict_map_key=True)
    except Exception as error:  # msgpack raises several unrelated types for garbage
        raise ProtocolError("decode", f"header is not msgpack: {type(error).__name__}") from None
    if not isinstance(header, dict):
        raise ProtocolError("decode", "header is not a map")
    proto = header.get("proto")
    if (
        not isinstance(proto, list)
        or len(proto) != 2
        or not all(isinstance(part, int) for part in proto)
    ):
        raise ProtocolError("decode", "header has no protocol version")
    if proto[0] != PROTOCOL_VERSION[0]:
        raise ProtocolError(
            "protocol_version",
            f"peer speaks protocol {proto[0]}.{proto[1]}, this side "
            f"{PROTOCOL_VERSION[0]}.{PROTOCOL_VERSION[1]}",
        )
    return header


def _require(header: dict[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    value = header.get(key)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise ProtocolError("decode", f"header field {key!r} missing or not {kind}")
    return value


def _message_from_header(
    header: dict[str, Any], buffers: list[memoryview], accepts: frozenset[str]
) -> Message:
    msg_type = _require(header, "type", str)
    if msg_type not in MESSAGE_TYPES:
        raise ProtocolError("unknown_type", f"message type {msg_type[:40]!r}")
    if msg_type not in accepts:
        raise ProtocolError("unknown_type", f"{msg_type!r} is not for this peer")
    sender = _require(header, "sender", str)
    run = _require(header, "run", str)
    seq = _require(header, "seq", int)
    sent_at = _require(header, "time", (int, float))
    body = _require(header, "body", dict)
    specs = _require(header, "arrays", list)
    if not (0 < len(sender) <= 128 and 0 < len(run) <= 64) or seq < 1 or not math.isfinite(sent_at):
        raise ProtocolError("decode", "bad sender, run or seq")
    if len(specs) != len(buffers) or len(specs) > MAX_ARRAYS:
        raise ProtocolError("shape", f"{len(specs)} array specs for {len(buffers)} buffers")
    arrays, dtypes = [], []
    for spec, buffer in zip(specs, buffers, strict=True):
        dtype_name, shape = _array_spec(spec)
        dtype = WIRE_DTYPES[dtype_name]
        expected = math.prod(shape) * dtype.itemsize
        if buffer.nbytes != expected:
            raise ProtocolError(
                "shape", f"buffer of {buffer.nbytes} bytes for {shape} {dtype_name}"
            )
        arrays.append(np.frombuffer(buffer, dtype=dtype).reshape(shape))
        dtypes.append(dtype_name)
    payload = _validate_body(msg_type, body)
    proto = (header["proto"][0], header["proto"][1])
    return Message(
        msg_type, sender, run, seq, float(sent_at), body, payload, arrays, dtypes, proto=proto
    )


def _validate_body(msg_type: str, body: dict[str, Any]) -> Body:
    """The body as its schema's model; the first bad field names the rejection reason."""
    kind = BODIES[msg_type]
    try:
        return kind.model_validate(body)
    except ValidationError as error:
        first = error.errors(include_url=False, include_input=False)[0]
        name = str(first["loc"][0]) if first["loc"] else ""
        raise ProtocolError(
            kind.reasons.get(name, "decode"),
            f"{msg_type} body: {name[:40]!r} {first['msg']}"[:200],
            message_type=msg_type,
        ) from None


def _array_spec(spec: Any) -> tuple[str, tuple[int, ...]]:
    if not (isinstance(spec, list) and len(spec) == 2 and isinstance(spec[1], list)):
        raise ProtocolError("shape", "array spec is not [dtype, shape]")
    dtype_name, shape = spec
    if dtype_name not in WIRE_DTYPES:
        raise ProtocolError("dtype", f"dtype {str(dtype_name)[:20]!r} not in {sorted(WIRE_DTYPES)}")
    if len(shape) > 8 or not all(isinstance(d, int) and 0 <= d < 2**31 for d in shape):
        raise ProtocolError("shape", f"bad shape {shape!r}"[:80])
    return dtype_name, tuple(shape)
