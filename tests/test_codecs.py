"""
Tests for L{twcomms.wire.codecs}: every codec rule and edge case, and value
equality with the original library's encoding.
"""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.helpers import original_decode, original_encode
from twcomms.errors import (
    DecodeError,
    EncodeError,
    InvalidJSONError,
    UnsupportedTypeError,
)
from twcomms.wire.codecs import (
    DATA_TYPES,
    BinaryCodec,
    JSONCodec,
    StringCodec,
    get_codec,
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=20,
)


def test_get_codec() -> None:
    assert DATA_TYPES == ("json", "string", "binary")
    assert isinstance(get_codec("json"), JSONCodec)
    assert isinstance(get_codec("string"), StringCodec)
    assert isinstance(get_codec("binary"), BinaryCodec)
    codec = StringCodec()
    assert get_codec(codec) is codec


def test_get_codec_rejects_unknown_names() -> None:
    with pytest.raises(ValueError, match="'json', 'string', 'binary'"):
        get_codec("jason")


# -- json ----------------------------------------------------------------------


@given(json_values.filter(lambda v: not isinstance(v, str)))
def test_json_round_trip(value: object) -> None:
    # A top-level str is JSON text in json mode (the original's rule), so it
    # is not in this round trip; see test_json_str_is_sent_as_json_text_as_is.
    codec = JSONCodec()
    assert codec.decode(codec.encode(value)) == value


@given(st.dictionaries(st.text(), json_values, max_size=5))
def test_json_dict_value_equal_to_the_original(value: dict) -> None:
    """
    What we send for a dict decodes, at an original receiver, to the same
    value as what the original sends; and the other way round.
    """
    ours = JSONCodec().encode(value)
    assert original_decode(ours, "json") == original_decode(
        original_encode(value), "json"
    )
    assert JSONCodec().decode(original_encode(value)) == value


@pytest.mark.parametrize("value", [[1, 2, 3], 7, 2.5, True, False, None, [], {}])
def test_json_sends_what_the_original_could_not(value: object) -> None:
    payload = JSONCodec().encode(value)
    assert json.loads(payload) == value


def test_json_str_is_sent_as_json_text_as_is() -> None:
    text = '{"a": [1, 2], "é": "ü"}'
    payload = JSONCodec().encode(text)
    assert payload == text.encode("utf-8") == original_encode(text)
    assert JSONCodec().decode(payload) == {"a": [1, 2], "é": "ü"}


def test_json_bytes_and_bytes_like_are_sent_as_is() -> None:
    text = b'{"k": 1}'
    codec = JSONCodec()
    assert codec.encode(text) is text
    assert codec.encode(bytearray(text)) == text
    assert codec.encode(memoryview(text)) == text


@pytest.mark.parametrize("bad", ["hello", "{'a': 1}", "", "[1,", b"\xff\xfe", b"nope"])
def test_json_invalid_text_raises_naming_json_dumps(bad: str | bytes) -> None:
    with pytest.raises(InvalidJSONError, match=r"json\.dumps") as info:
        JSONCodec().encode(bad)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("value", [{1, 2}, object(), b"x".decode, {"k": object()}])
def test_json_unsupported_value_raises_type_error(value: object) -> None:
    with pytest.raises(UnsupportedTypeError, match="not JSON-serializable") as info:
        JSONCodec().encode(value)
    assert isinstance(info.value, TypeError) and isinstance(info.value, EncodeError)


def test_json_nan_and_infinity_as_python_json_does() -> None:
    codec = JSONCodec()
    assert math.isnan(codec.decode(codec.encode(float("nan"))))
    assert codec.decode(codec.encode([float("inf")])) == [float("inf")]


def test_json_circular_reference_raises() -> None:
    loop: list[object] = []
    loop.append(loop)
    with pytest.raises(UnsupportedTypeError):
        JSONCodec().encode(loop)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"", "invalid JSON"),
        (b"{", "invalid JSON"),
        (b"\xff", "invalid UTF-8"),
        (b'"\xed\xa0\x80"', "invalid UTF-8"),  # an encoded lone surrogate
        (b"\xef\xbb\xbf{}", "invalid JSON"),  # a BOM
        (b"[" * 100_000 + b"]" * 100_000, "nested too deep"),
    ],
)
def test_json_decode_errors_keep_the_payload(payload: bytes, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason) as info:
        JSONCodec().decode(payload)
    assert info.value.payload is payload
    assert info.value.data_type == "json"


def test_json_decode_of_nested_but_allowed_depth() -> None:
    deep = b"[" * 500 + b"]" * 500
    assert JSONCodec().decode(deep) == json.loads(deep)


# -- string ------------------------------------------------------------------


@given(st.text())
def test_string_round_trip(text: str) -> None:
    codec = StringCodec()
    payload = codec.encode(text)
    assert payload == original_encode(text)
    assert codec.decode(payload) == text == original_decode(payload, "string")


def test_string_empty() -> None:
    assert StringCodec().encode("") == b""
    assert StringCodec().decode(b"") == ""


def test_string_mode_accepts_what_the_original_sent() -> None:
    codec = StringCodec()
    assert codec.encode(b"raw") == b"raw"
    assert json.loads(codec.encode({"a": 1})) == {"a": 1}


def test_string_lone_surrogate_raises() -> None:
    with pytest.raises(UnsupportedTypeError, match="surrogate"):
        StringCodec().encode("\ud800")


@pytest.mark.parametrize("value", [1, [1], None, 2.0])
def test_string_unsupported_types(value: object) -> None:
    with pytest.raises(UnsupportedTypeError, match="messageDataType='json'"):
        StringCodec().encode(value)


def test_string_invalid_utf8() -> None:
    with pytest.raises(DecodeError, match="invalid UTF-8") as info:
        StringCodec().decode(b"ok\xc3")
    assert info.value.payload == b"ok\xc3"


# -- binary ------------------------------------------------------------------


@given(st.binary())
def test_binary_round_trip(data: bytes) -> None:
    codec = BinaryCodec()
    assert codec.decode(codec.encode(data)) == data


def test_binary_bytes_like() -> None:
    codec = BinaryCodec()
    data = b"\x00\x01\x02"
    assert codec.encode(data) is data
    assert codec.encode(bytearray(data)) == data
    assert type(codec.encode(bytearray(data))) is bytes
    assert codec.encode(memoryview(b"xx" + data)[2:]) == data
    assert codec.encode(memoryview(bytes(8)).cast("d")) == bytes(8)


def test_binary_mode_accepts_what_the_original_sent() -> None:
    assert BinaryCodec().encode("é") == "é".encode()
    assert json.loads(BinaryCodec().encode({"a": 1})) == {"a": 1}


@pytest.mark.parametrize("value", [1, [1], None])
def test_binary_unsupported_types(value: object) -> None:
    with pytest.raises(UnsupportedTypeError, match="bytes, bytearray or memoryview"):
        BinaryCodec().encode(value)


def test_binary_decode_is_identity() -> None:
    payload = b"\xff\x00"
    assert BinaryCodec().decode(payload) is payload


@pytest.mark.parametrize(
    "value", ["a JSON string value", {"k": [1]}, [1, "x"], 3, None, "", "\u00e9"]
)
def test_json_encode_value_round_trips_every_decoded_value(value: object) -> None:
    codec = JSONCodec()
    assert codec.decode(codec.encode_value(value)) == value


def test_encode_value_in_string_and_binary_modes_is_encode() -> None:
    assert StringCodec().encode_value("hé") == "hé".encode()
    assert BinaryCodec().encode_value(b"\x00") == b"\x00"


@given(
    json_values,
    st.sampled_from(["", " ", "\n", " \t\r\n"]),
    st.sampled_from(["", " ", "\n\n"]),
)
def test_json_decode_fast_path_equals_json_loads(
    value: object, before: str, after: str
) -> None:
    text = before + json.dumps(value) + after
    assert JSONCodec().decode(text.encode()) == json.loads(text)


@pytest.mark.parametrize(
    "text", ["1 2", "[1] x", " ", "{} {}", "\u00a0[1]", "[1]\u00a0"]
)
def test_json_decode_fast_path_errors_like_json_loads(text: str) -> None:
    with pytest.raises(json.JSONDecodeError) as expected:
        json.loads(text)
    with pytest.raises(DecodeError) as got:
        JSONCodec().decode(text.encode())
    assert str(expected.value) in str(got.value)


@given(json_values)
def test_json_encoding_is_json_dumps(value: object) -> None:
    assert JSONCodec().encode_value(value) == json.dumps(value).encode()
