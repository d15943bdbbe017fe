"""
Codecs: how a message value becomes a frame payload and back.

The rules are the original library's (see C{docs/protocol.md}): the sender
encodes by the value's type, the receiver decodes by its own configured
message data type.

  - C{"json"}: a C{str} or bytes-like value is taken as JSON text that is
    already encoded; it is validated and sent as is (UTF-8). Any other value
    (dict, list, numbers, bool, None) is encoded with C{json.dumps}. The
    receiver decodes UTF-8, then JSON.
  - C{"string"}: a C{str} is sent as UTF-8. The receiver decodes UTF-8.
  - C{"binary"}: a bytes-like value is sent as is. The receiver gets
    C{bytes}.

For compatibility with the original, every mode also accepts what the
original sent whatever its mode: C{str} (as UTF-8), C{bytes} (as is) and
C{dict} (as JSON).

Codecs hold no connection state: one instance serves every connection, and
any thread may use one.
"""

from __future__ import annotations

import json
import json.encoder
import json.scanner
from typing import Any, Final, Literal, Protocol

from twcomms.errors import DecodeError, InvalidJSONError, UnsupportedTypeError

__all__ = [
    "DATA_TYPES",
    "BinaryCodec",
    "Codec",
    "DataType",
    "JSONCodec",
    "StringCodec",
    "get_codec",
]

DataType = Literal["json", "string", "binary"]


def _not_serializable(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


# json.dumps' C encoder with its default settings, made once: JSONEncoder
# builds a new one on every call, 40% of the cost of a small message.
# (markers=None: a reference cycle ends in RecursionError, reported below.)
_c_encode = json.encoder.c_make_encoder(  # type: ignore[attr-defined]
    None,
    _not_serializable,
    json.encoder.encode_basestring_ascii,
    None,
    ": ",
    ", ",
    False,
    False,
    True,
)


def _json_encode(value: Any) -> str:
    if _c_encode is None:  # pragma: no cover - CPython always has it
        return json.dumps(value)
    return "".join(_c_encode(value, 0))


_json_decode = json.JSONDecoder().decode
# The C scanner json.loads uses, called directly: JSONDecoder.decode adds two
# whitespace regex matches per call, a third of the time for small messages.
_scan_once = json.scanner.make_scanner(json.JSONDecoder())  # type: ignore[arg-type]


def _loads(text: str) -> Any:
    """
    C{json.loads(text)}, faster for the common case (no surrounding white
    space); anything unusual takes C{json.loads}'s own path, so values and
    errors are exactly its.
    """
    try:
        value, end = _scan_once(text, 0)
    except StopIteration:
        return _json_decode(text)
    if end != len(text) and text[end:].strip(" \t\n\r"):
        return _json_decode(text)
    return value


class Codec(Protocol):
    """
    Turns message values into payload bytes and back.

    @ivar name: the message data type this codec implements.
    """

    name: str

    def encode(self, message: Any) -> bytes:
        """
        Encode C{message} as a frame payload.

        @raise UnsupportedTypeError: the value's type cannot be sent.
        @raise InvalidJSONError: JSON text given as C{str}/C{bytes} is not
            valid (JSON codec only).
        @raise EncodeError: the value cannot be encoded.
        """

    def decode(self, payload: bytes) -> Any:
        """
        Decode a complete frame payload.

        @raise DecodeError: the payload is not valid for this data type.
        """

    def encode_value(self, value: Any) -> bytes:
        """
        Encode a value as this codec decodes it, so that
        C{decode(encode_value(v)) == v}: what a relay or an echo needs. It
        differs from L{encode} only in json mode, where a C{str} is a JSON
        string value here, not JSON text.
        """


def _to_bytes(message: Any) -> bytes | None:
    """
    Return the bytes of a bytes-like C{message}, or L{None} if it is not
    bytes-like. C{bytes} itself is returned without a copy.
    """
    if type(message) is bytes:
        return message
    if isinstance(message, (bytes, bytearray)):
        return bytes(message)
    if isinstance(message, memoryview):
        return message.tobytes()
    return None


def _encode_text(message: str, data_type: str) -> bytes:
    try:
        return message.encode("utf-8")
    except UnicodeEncodeError as e:
        raise UnsupportedTypeError(
            str,
            data_type,
            f"the string is not encodable as UTF-8 ({e.reason} at index "
            f"{e.start}); remove lone surrogates",
        ) from e


class JSONCodec:
    """
    The C{"json"} message data type.
    """

    name = "json"

    def encode(self, message: Any) -> bytes:
        if type(message) is dict:
            # The hot path: no validation needed, json.dumps makes it valid.
            return self._dumps(message)
        if isinstance(message, str):
            try:
                _json_decode(message)
            except (ValueError, RecursionError) as e:
                raise InvalidJSONError(
                    f"in json mode a str is sent as already-encoded JSON "
                    f"text, and this one is not valid JSON ({e}); to send "
                    f"the string itself, pass json.dumps(value), or use "
                    f"messageDataType='string'"
                ) from e
            return _encode_text(message, self.name)
        raw = _to_bytes(message)
        if raw is not None:
            try:
                _json_decode(raw.decode("utf-8"))
            except (ValueError, RecursionError) as e:
                raise InvalidJSONError(
                    f"in json mode bytes are sent as already-encoded UTF-8 "
                    f"JSON text, and these are not valid ({e}); pass "
                    f"json.dumps(value).encode(), or use "
                    f"messageDataType='binary'"
                ) from e
            return raw
        return self._dumps(message)

    def encode_value(self, value: Any) -> bytes:
        return self._dumps(value)

    def _dumps(self, message: Any) -> bytes:
        try:
            text = _json_encode(message)
        except (TypeError, ValueError, RecursionError) as e:
            raise UnsupportedTypeError(
                type(message),
                self.name,
                f"it is not JSON-serializable ({e}); send dict, list, str, "
                f"int, float, bool or None",
            ) from e
        # ensure_ascii is on (the original's default): the text is ASCII.
        return text.encode("ascii")

    def decode(self, payload: bytes) -> Any:
        try:
            return _loads(payload.decode("utf-8"))
        except UnicodeDecodeError as e:
            raise DecodeError(payload, self.name, f"invalid UTF-8: {e}") from e
        except ValueError as e:
            raise DecodeError(payload, self.name, f"invalid JSON: {e}") from e
        except RecursionError as e:
            raise DecodeError(payload, self.name, "JSON nested too deep") from e


class StringCodec:
    """
    The C{"string"} message data type.
    """

    name = "string"

    def encode(self, message: Any) -> bytes:
        if isinstance(message, str):
            return _encode_text(message, self.name)
        raw = _to_bytes(message)
        if raw is not None:
            return raw
        if type(message) is dict:
            return JSONCodec._dumps(_JSON, message)
        raise UnsupportedTypeError(
            type(message),
            self.name,
            "send a str; use messageDataType='json' for other values",
        )

    def encode_value(self, value: Any) -> bytes:
        return self.encode(value)

    def decode(self, payload: bytes) -> str:
        try:
            return payload.decode("utf-8")
        except UnicodeDecodeError as e:
            raise DecodeError(payload, self.name, f"invalid UTF-8: {e}") from e


class BinaryCodec:
    """
    The C{"binary"} message data type.
    """

    name = "binary"

    def encode(self, message: Any) -> bytes:
        raw = _to_bytes(message)
        if raw is not None:
            return raw
        if isinstance(message, str):
            return _encode_text(message, self.name)
        if type(message) is dict:
            return JSONCodec._dumps(_JSON, message)
        raise UnsupportedTypeError(
            type(message),
            self.name,
            "send bytes, bytearray or memoryview; use "
            "messageDataType='json' for other values",
        )

    def encode_value(self, value: Any) -> bytes:
        return self.encode(value)

    def decode(self, payload: bytes) -> bytes:
        return payload


_JSON: Final = JSONCodec()

_CODECS: Final[dict[str, Codec]] = {
    "json": _JSON,
    "string": StringCodec(),
    "binary": BinaryCodec(),
}

#: The accepted message data type names.
DATA_TYPES: Final = tuple(_CODECS)


def get_codec(data_type: str | Codec) -> Codec:
    """
    Return the codec for a message data type name (C{"json"}, C{"string"}
    or C{"binary"}). A L{Codec} instance is returned as is.

    @raise ValueError: the name is not one of those.
    """
    if not isinstance(data_type, str):
        return data_type
    try:
        return _CODECS[data_type]
    except KeyError:
        raise ValueError(
            f"unknown messageDataType {data_type!r}; use one of "
            f"{', '.join(repr(n) for n in DATA_TYPES)}"
        ) from None
