"""The wire protocol: msgpack header + HMAC signature + raw array buffers, as separate frames.

Frame layout of every message (after the ROUTER identity, where there is one):

    [header: msgpack map] [signature: HMAC-SHA256 hex or b""] [buffer 0] [buffer 1] ...

The header names the protocol version, message type, sender, its run id (random per process
start, so a restart is noticed), a per-run sequence number (replay protection), and the dtype
and shape of each buffer. Arrays never go through msgpack (that is 3x slower for 2 MB) and
never through pickle. `decode` validates everything it can without knowing the model and
raises ProtocolError with a reason from `common.metrics.REJECT_REASONS`.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack
import numpy as np

PROTOCOL_VERSION = (1, 0)
"""(major, minor). Peers with another major version are refused; bump minor for additions."""

MESSAGE_TYPES = frozenset(
    {"hello", "welcome", "gradient", "ack", "heartbeat", "weights", "error", "bye"}
)

WIRE_DTYPES: dict[str, np.dtype[Any]] = {
    "float32": np.dtype(np.float32),
    "float16": np.dtype(np.float16),
    # numpy has no bfloat16: its raw 16-bit patterns travel as uint16.
    "bfloat16": np.dtype(np.uint16),
}

MAX_HEADER_BYTES = 64 * 1024
MAX_ARRAYS = 64
MAX_CLOCK_SKEW_S = 300.0
"""Signed messages older than this are refused as replays even if their sequence is new."""


class ProtocolError(Exception):
    """A message refused before it reached any state; `reason` labels the rejection counter."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass
class Message:
    type: str
    sender: str
    run: str
    seq: int
    sent_at: float
    body: dict[str, Any]
    arrays: list[np.ndarray] = field(default_factory=list)
    array_dtypes: list[str] = field(default_factory=list)
    nbytes: int = 0


def _signature(key: bytes, parts: Sequence[bytes | memoryview]) -> bytes:
    mac = hmac.new(key, digestmod=hashlib.sha256)
    for part in parts:
        mac.update(part)
    return mac.hexdigest().encode()


class Session:
    """Encodes and decodes messages for one process: its identity, key and sequence counter."""

    def __init__(
        self, sender: str, key: bytes | None = None, max_bytes: int = 256 * 1024 * 1024
    ) -> None:
        self.sender = sender
        self.run = os.urandom(8).hex()
        self.key = key
        self.max_bytes = max_bytes
        self._seq = itertools.count(1)

    def encode(
        self,
        msg_type: str,
        body: dict[str, Any] | None = None,
        arrays: Sequence[tuple[str, np.ndarray]] = (),
    ) -> list[bytes | memoryview]:
        """Frames for one message; `arrays` are (wire dtype name, contiguous array) pairs whose
        memory is sent without a copy."""
        assert msg_type in MESSAGE_TYPES, msg_type
        header = {
            "proto": list(PROTOCOL_VERSION),
            "type": msg_type,
            "sender": self.sender,
            "run": self.run,
            "seq": next(self._seq),
            "time": time.time(),
            "arrays": [[dtype, list(array.shape)] for dtype, array in arrays],
            "body": body or {},
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
        message = _message_from_header(header, buffers)
        message.nbytes = total
        if self.key and abs(time.time() - message.sent_at) > MAX_CLOCK_SKEW_S:
            raise ProtocolError("replay", f"message sent {time.time() - message.sent_at:.0f}s ago")
        return message


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


def _message_from_header(header: dict[str, Any], buffers: list[memoryview]) -> Message:
    msg_type = _require(header, "type", str)
    if msg_type not in MESSAGE_TYPES:
        raise ProtocolError("unknown_type", f"message type {msg_type[:40]!r}")
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
    return Message(msg_type, sender, run, seq, float(sent_at), body, arrays, dtypes)


def _array_spec(spec: Any) -> tuple[str, tuple[int, ...]]:
    if not (isinstance(spec, list) and len(spec) == 2 and isinstance(spec[1], list)):
        raise ProtocolError("shape", "array spec is not [dtype, shape]")
    dtype_name, shape = spec
    if dtype_name not in WIRE_DTYPES:
        raise ProtocolError("dtype", f"dtype {str(dtype_name)[:20]!r} not in {sorted(WIRE_DTYPES)}")
    if len(shape) > 8 or not all(isinstance(d, int) and 0 <= d < 2**31 for d in shape):
        raise ProtocolError("shape", f"bad shape {shape!r}"[:80])
    return dtype_name, tuple(shape)
