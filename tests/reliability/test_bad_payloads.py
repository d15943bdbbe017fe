"""
Bad payloads: invalid UTF-8, invalid JSON, an empty frame in json mode, a
byte-order mark, JSON nested 100,000 deep.

The documented outcome (docs/protocol.md, "Error outcomes"): a
C{DecodeError} carrying the raw payload goes to the decode-error hook, is
logged and counted in C{decodeErrors}; the connection stays up and later
messages are delivered; other clients are unaffected.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
import pytest_twisted
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.stress.bad_payloads import BAD_PAYLOADS, bad_payloads, independent_decode
from harness.stress.garbage import memory_connection
from harness.stress.measure import LogWatch
from harness.stress.result import assert_held
from harness.stress.scale import Scale, current_scale
from harness.wire import frame
from twcomms.errors import DecodeError
from twcomms.wire.codecs import get_codec

fuzz = settings(
    max_examples=current_scale().hypothesis_examples // 2,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=12,
)
#: JSON text, with surrounding white space or trailing junk, or not JSON.
json_texts = st.one_of(
    json_values.map(json.dumps),
    st.tuples(
        st.sampled_from(["", " ", "\n", "\t\r ", "\ufeff", "x"]),
        json_values.map(json.dumps),
        st.sampled_from(["", " ", "\n\n", "x", " ,1", "]", "}", "\x00", "\u00a0"]),
    ).map("".join),
    st.text(max_size=30),
)


def canonical(value: Any) -> str:
    """
    A comparable form of a decoded value (NaN != NaN as a float).
    """
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    return json.dumps(value)


@fuzz
@given(
    st.one_of(json_texts.map(lambda t: t.encode("utf-8", "surrogatepass")), st.binary())
)
def test_json_decoding_agrees_with_json_loads(payload: bytes) -> None:
    """
    The json receiver's fast decoding path accepts exactly what
    C{json.loads} (after strict UTF-8) accepts, with the same value; what
    it refuses is a C{DecodeError} carrying the payload, never another
    exception.
    """
    ok, value = independent_decode(payload, "json")
    codec = get_codec("json")
    try:
        got = codec.decode(payload)
    except DecodeError as e:
        assert not ok, f"refused valid JSON {payload!r}: {e}"
        assert e.payload == payload
        return
    assert ok, f"accepted invalid JSON {payload!r} as {got!r}"
    assert canonical(got) == canonical(value)


@pytest.mark.parametrize("data_type", ["json", "string"])
@pytest.mark.parametrize("what,payload", BAD_PAYLOADS, ids=[b[0] for b in BAD_PAYLOADS])
def test_each_bad_payload_in_memory(data_type: str, what: str, payload: bytes) -> None:
    """
    One bad payload between two good ones: the hook gets it (raw bytes
    kept), it is counted and logged, the connection stays open and the next
    message arrives.
    """
    ok, value = independent_decode(payload, data_type)
    good = b'{"n": 1}'
    with LogWatch() as watch:
        proto, receiver, transport = memory_connection(1 << 20, data_type)
        proto.dataReceived(frame(good) + frame(payload) + frame(good))
    decoded_good = independent_decode(good, data_type)[1]
    if ok:  # e.g. invalid JSON is a valid string
        assert receiver.messages == [decoded_good, value, decoded_good]
        assert proto.decodeErrors == 0
        return
    assert receiver.messages == [decoded_good, decoded_good]
    [error] = receiver.decode_errors
    assert isinstance(error, DecodeError)
    assert error.payload == payload
    assert proto.decodeErrors == 1
    assert proto.messagesReceived == 3
    assert not transport.disconnecting
    assert watch.count("did not decode") == 1
    if "nested" in what and data_type == "json":
        assert "nested too deep" in str(error)


@pytest.mark.parametrize("data_type", ["json", "string"])
@pytest_twisted.ensureDeferred
async def test_bad_payloads_over_real_sockets(scale: Scale, data_type: str) -> None:
    """
    Many connections mix good and bad payloads while a well-behaved client
    keeps getting echoes (see L{harness.stress.bad_payloads.bad_payloads}).
    """
    result = await bad_payloads(scale, data_type)
    assert_held(result)
    assert result.details["decode_errors"] > 0
