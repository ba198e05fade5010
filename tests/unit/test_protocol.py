"""Wire protocol: round trips, signing, and every kind of malformed message refused with a
reason (never another exception)."""

import time

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.protocol import (
    MAX_CLOCK_SKEW_S,
    PROTOCOL_VERSION,
    REQUEST_TYPES,
    AckBody,
    GradientBody,
    HelloBody,
    ProtocolError,
    Session,
)

GRADIENT = {"model_version": 7, "frames": 20, "layout": "0123456789abcdef"}


def frames_of(header: dict, *buffers: bytes) -> list[bytes]:
    return [msgpack.packb(header), b"", *buffers]


def valid_header(**changes) -> dict:
    header = {
        "proto": list(PROTOCOL_VERSION),
        "type": "gradient",
        "sender": "w1",
        "run": "abc",
        "seq": 1,
        "time": time.time(),
        "arrays": [["float32", [3]]],
        "body": {},
    }
    header.update(changes)
    return header


def test_round_trip_with_arrays_is_zero_copy_and_exact():
    sender, receiver = Session("w1"), Session("learner")
    grads = np.arange(6, dtype=np.float32).reshape(2, 3)
    half = np.linspace(-1, 1, 5).astype(np.float16)
    frames = sender.encode("gradient", GRADIENT, [("float32", grads), ("float16", half)])
    message = receiver.decode([bytes(f) for f in frames])
    assert message.type == "gradient" and message.sender == "w1" and message.run == sender.run
    assert message.body == GRADIENT
    assert message.payload_as(GradientBody) == GradientBody(**GRADIENT)
    np.testing.assert_array_equal(message.arrays[0], grads)
    np.testing.assert_array_equal(message.arrays[1], half)
    assert message.array_dtypes == ["float32", "float16"]


def test_sequence_numbers_increase():
    session = Session("w1")
    first = Session("x").decode([bytes(f) for f in session.encode("heartbeat")])
    second = Session("x").decode([bytes(f) for f in session.encode("heartbeat")])
    assert second.seq == first.seq + 1


@pytest.mark.parametrize(
    ("frames", "reason"),
    [
        ([b"only one frame"], "decode"),
        ([b"\xc1\xff garbage", b""], "decode"),
        ([msgpack.packb([1, 2, 3]), b""], "decode"),
        (
            frames_of(valid_header(proto=[PROTOCOL_VERSION[0] + 1, 0]), bytes(12)),
            "protocol_version",
        ),
        (frames_of(valid_header(proto="1.0"), bytes(12)), "decode"),
        (frames_of(valid_header(type="launch_missiles"), bytes(12)), "unknown_type"),
        (frames_of(valid_header(seq="one"), bytes(12)), "decode"),
        (frames_of(valid_header(seq=True), bytes(12)), "decode"),
        (frames_of(valid_header(sender=""), bytes(12)), "decode"),
        (frames_of(valid_header(), bytes(11)), "shape"),
        (frames_of(valid_header(arrays=[["float32", [3]]])), "shape"),
        (frames_of(valid_header(arrays=[["float32", [-3]]]), bytes(12)), "shape"),
        (frames_of(valid_header(arrays=[["int64", [3]]]), bytes(24)), "dtype"),
        (frames_of(valid_header(arrays=[["object", [3]]]), bytes(24)), "dtype"),
        (frames_of(valid_header(arrays="float32"), bytes(12)), "decode"),
    ],
)
def test_malformed_messages_are_refused_with_a_reason(frames, reason):
    with pytest.raises(ProtocolError) as refused:
        Session("learner").decode(frames)
    assert refused.value.reason == reason


def decode_body(msg_type: str, body: dict, session: Session | None = None):
    frames = Session("w1").encode(msg_type, body)
    return (session or Session("learner")).decode([bytes(f) for f in frames])


@pytest.mark.parametrize(
    ("msg_type", "body", "reason"),
    [
        ("gradient", {**GRADIENT, "model_version": "7"}, "bad_version"),
        ("gradient", {**GRADIENT, "model_version": True}, "bad_version"),
        ("gradient", {"frames": 20, "layout": "x"}, "bad_version"),
        ("gradient", {**GRADIENT, "frames": -1}, "decode"),
        ("gradient", {**GRADIENT, "scale": float("nan")}, "decode"),
        ("gradient", {**GRADIENT, "layout": 5}, "model_mismatch"),
        ("hello", {}, "model_mismatch"),
        ("weights", {"model_version": 1, "frames": 0, "env": "x"}, "model_mismatch"),
        ("ack", {"model_version": 1}, "decode"),
        ("error", {"reason": "stale"}, "decode"),
    ],
)
def test_bodies_are_validated_while_decoding(msg_type, body, reason):
    with pytest.raises(ProtocolError) as refused:
        decode_body(msg_type, body)
    assert refused.value.reason == reason
    assert refused.value.message_type == msg_type, "the header was read: its type is known"


def test_unknown_body_fields_are_ignored_for_newer_minor_versions():
    message = decode_body("hello", {"layout": "abc", "role": "worker", "added_in_1_1": [1]})
    assert message.payload == HelloBody(layout="abc")


def test_a_peer_refuses_types_it_does_not_accept_before_reading_the_body():
    with pytest.raises(ProtocolError) as refused:
        decode_body("weights", {}, Session("learner", accepts=REQUEST_TYPES))
    assert refused.value.reason == "unknown_type"


def test_a_body_model_travels_as_the_same_map_as_the_plain_dict():
    """Byte-compatible with peers that build bodies by hand: unset optional fields are left
    out, and a model encodes exactly what the equivalent dict does."""
    ack = AckBody(accepted=False, reason="stale", detail="old", model_version=3)
    assert ack.wire() == {"accepted": False, "reason": "stale", "detail": "old", "model_version": 3}
    gradient = GradientBody(**GRADIENT)
    message = decode_body("gradient", gradient.wire())
    assert message.payload == gradient


def test_oversize_message_is_refused_before_decoding():
    with pytest.raises(ProtocolError) as refused:
        Session("learner", max_bytes=1024).decode(frames_of(valid_header(), bytes(4096)))
    assert refused.value.reason == "oversize"


def test_signed_messages_verify_and_tampering_is_caught():
    key = b"secret"
    frames = [
        bytes(f)
        for f in Session("w1", key).encode(
            "gradient", GRADIENT, [("float32", np.ones(3, np.float32))]
        )
    ]
    assert Session("learner", key).decode(frames).type == "gradient"
    tampered = [*frames[:2], np.zeros(3, np.float32).tobytes()]
    for bad, reason in [
        (tampered, "bad_signature"),
        ([frames[0], b"", frames[2]], "bad_signature"),
        (frames, "bad_signature"),  # with another key below
    ]:
        session = Session("learner", b"other" if bad is frames else key)
        with pytest.raises(ProtocolError) as refused:
            session.decode(bad)
        assert refused.value.reason == reason


NOW = 1_700_000_000.0


def skewed_frames(skew: float, key: bytes | None = b"secret") -> list[bytes]:
    """A heartbeat from a peer whose clock is `skew` seconds ahead of the receiver's."""
    return [bytes(f) for f in Session("w1", key, clock=lambda: NOW + skew).encode("heartbeat")]


def receiver(key: bytes | None = b"secret") -> Session:
    return Session("learner", key, clock=lambda: NOW)


@pytest.mark.parametrize(
    ("skew", "words"),
    [
        (MAX_CLOCK_SKEW_S + 1, "off by +301 s (ahead of"),
        (-(MAX_CLOCK_SKEW_S + 1), "off by -301 s (behind"),
        (-8 * 3600.0, "off by -28800 s (behind"),  # a host left on another time zone's clock
        (NOW, "ahead of"),
    ],
)
def test_a_peer_clock_outside_the_signing_window_has_its_own_reason(skew, words):
    with pytest.raises(ProtocolError) as refused:
        receiver().decode(skewed_frames(skew))
    assert refused.value.reason == "clock_skew"
    assert words in refused.value.detail and "the clock of w1" in refused.value.detail
    assert f"signing window is {MAX_CLOCK_SKEW_S:.0f} s" in refused.value.detail


@pytest.mark.parametrize("skew", [0.0, MAX_CLOCK_SKEW_S - 1, -(MAX_CLOCK_SKEW_S - 1)])
def test_a_peer_clock_within_the_signing_window_is_accepted(skew):
    message = receiver().decode(skewed_frames(skew))
    assert message.type == "heartbeat" and message.sent_at == NOW + skew


def test_without_signing_clocks_are_not_compared():
    """An unsigned send time proves nothing, so it is not held against the peer."""
    assert receiver(None).decode(skewed_frames(10 * MAX_CLOCK_SKEW_S, None)).type == "heartbeat"


def test_a_skewed_message_with_a_bad_signature_is_a_bad_signature():
    """The signature is checked first: an unsigned time cannot choose the reason given."""
    with pytest.raises(ProtocolError) as refused:
        Session("learner", b"other", clock=lambda: NOW).decode(skewed_frames(10_000.0))
    assert refused.value.reason == "bad_signature"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(max_size=200), min_size=0, max_size=5))
def test_decoder_never_fails_other_than_with_protocol_error(frames):
    try:
        Session("learner").decode(frames)
    except ProtocolError:
        pass


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["proto", "type", "sender", "run", "seq", "time", "arrays", "body"]),
        st.recursive(
            st.none()
            | st.booleans()
            | st.integers(-(2**63), 2**64 - 1)
            | st.floats()
            | st.text(max_size=10),
            lambda inner: (
                st.lists(inner, max_size=3)
                | st.dictionaries(st.text(max_size=5), inner, max_size=3)
            ),
            max_leaves=8,
        ),
    ),
    st.lists(st.binary(max_size=64), max_size=3),
)
def test_decoder_survives_structured_garbage_headers(header, buffers):
    try:
        Session("learner").decode([msgpack.packb(header), b"", *buffers])
    except ProtocolError:
        pass
