"""
The extended protocol's bytes (C{docs/protocol.md}, "Extensions"): the
hello a client opens with, the server's answer, and the control frames
both send once extensions are agreed.

Messages keep the original's frame on every connection, extended or not,
so a broadcast is framed once for plain and extended clients alike. A
control frame is marked by the top bit of its 4-byte length, which no
message can set (a message is under 2 GiB on an extended connection)::

    control frame:  u32 (0x80000000 | n)  |  kind (1 byte)  |  body (n - 1 bytes)

    request, reply, error, auth, join, leave bodies:  id (u32)  |  rest

Integers use the connection's byte order. The hello and the answer are
plain frames whose payload begins with a 16-byte magic:

    magic (16)  |  version (1)  |  nonce (16)  |  features (UTF-8 JSON object)

Thread: pure functions of their input; any thread.
"""

from __future__ import annotations

import enum
import json
import os
import re
from dataclasses import dataclass
from typing import Any, Final

from twcomms.errors import HelloError, InvalidRoomError
from twcomms.wire.format import header_struct

__all__ = [
    "ANSWER_MAGIC",
    "CONTROL_BIT",
    "CONTROL_OVERHEAD",
    "FEATURES",
    "HELLO_MAGIC",
    "MAX_EXTENDED_MESSAGE",
    "MAX_HELLO",
    "MAX_ROOM_LENGTH",
    "NONCE_SIZE",
    "VERSION",
    "Hello",
    "HelloError",
    "Kind",
    "check_room",
    "control_frame",
    "decode_error",
    "encode_error",
    "encode_hello",
    "new_nonce",
    "parse_hello",
]

#: The first 16 bytes of a hello. 0xFF never occurs in UTF-8 and NUL is in
#: no text a person writes, so no json or string message starts with it.
HELLO_MAGIC: Final = b"\xffTWCOMMS\x00HELLO\r\n"
#: The first 16 bytes of the server's answer.
ANSWER_MAGIC: Final = b"\xffTWCOMMS\x00READY\r\n"
#: The protocol version this implementation speaks (the highest).
VERSION: Final = 1
NONCE_SIZE: Final = 16
#: The length bit that marks a control frame.
CONTROL_BIT: Final = 0x80000000
#: The largest message an extended connection carries: 2 GiB - 6, so a
#: request (kind, id and message) still fits a control frame's 31 bits.
MAX_EXTENDED_MESSAGE: Final = 0x7FFFFFFF - 5
#: Kind byte and request id: what a control frame adds to a message.
CONTROL_OVERHEAD: Final = 5
#: The largest hello or answer payload accepted.
MAX_HELLO: Final = 4096
#: The features this implementation knows.
FEATURES: Final = ("heartbeat", "request", "auth", "rooms")

_PREFIX = len(HELLO_MAGIC) + 1 + NONCE_SIZE


class Kind(enum.IntEnum):
    """
    What a control frame is.
    """

    #: Are you there? Answered with a PONG carrying the same body.
    PING = 1
    PONG = 2
    #: id + message: answered by a REPLY or an ERROR with the same id.
    REQUEST = 3
    REPLY = 4
    #: id + UTF-8 JSON C{{"type": ..., "message": ...}}.
    ERROR = 5
    #: id + credentials (encoded as a message): REPLY (identity) or ERROR.
    AUTH = 6
    #: id + room name (UTF-8): REPLY (1 byte: 1 changed, 0 not) or ERROR.
    JOIN = 7
    LEAVE = 8


#: Kinds whose body starts with a request id.
WITH_ID: Final = frozenset(
    {Kind.REQUEST, Kind.REPLY, Kind.ERROR, Kind.AUTH, Kind.JOIN, Kind.LEAVE}
)


@dataclass(frozen=True)
class Hello:
    """
    A parsed hello or answer.

    @ivar version: the protocol version it names.
    @ivar nonce: its 16 random bytes (an answer echoes the hello's).
    @ivar features: feature name -> parameters.
    """

    version: int
    nonce: bytes
    features: dict[str, dict[str, Any]]


def new_nonce() -> bytes:
    """
    16 random bytes for a hello.
    """
    return os.urandom(NONCE_SIZE)


def encode_hello(
    nonce: bytes,
    features: dict[str, dict[str, Any]],
    *,
    answer: bool = False,
    version: int = VERSION,
) -> bytes:
    """
    The payload of a hello (or, with C{answer}, of an answer).
    """
    if len(nonce) != NONCE_SIZE:
        raise ValueError(f"a nonce is {NONCE_SIZE} bytes, not {len(nonce)}")
    magic = ANSWER_MAGIC if answer else HELLO_MAGIC
    body = json.dumps(features, separators=(",", ":"), sort_keys=True).encode()
    return magic + bytes([version]) + nonce + body


def parse_hello(payload: bytes, *, answer: bool = False) -> Hello | None:
    """
    Read a hello (or, with C{answer}, an answer) from a frame's payload.

    @return: L{None} if C{payload} does not start with the magic.
    @raise HelloError: it starts with the magic but is not valid.
    """
    magic = ANSWER_MAGIC if answer else HELLO_MAGIC
    if not payload.startswith(magic):
        return None
    what = "answer" if answer else "hello"
    if len(payload) > MAX_HELLO:
        raise HelloError(f"a {what} is at most {MAX_HELLO} bytes, not {len(payload)}")
    if len(payload) < _PREFIX + 2:
        raise HelloError(f"a {what} of {len(payload)} bytes is too short")
    version = payload[len(magic)]
    if version < 1:
        raise HelloError(f"{what} version {version}: versions start at 1")
    nonce = bytes(payload[len(magic) + 1 : _PREFIX])
    try:
        # NaN and Infinity are Python's JSON, not JSON: other peers' parsers
        # refuse them, and a NaN interval would reach a timer.
        features = json.loads(
            payload[_PREFIX:].decode("utf-8"), parse_constant=_not_a_number
        )
    except (UnicodeDecodeError, ValueError) as e:
        raise HelloError(f"the {what}'s features are not UTF-8 JSON: {e}") from None
    if not isinstance(features, dict) or not all(
        isinstance(k, str) and isinstance(v, dict) for k, v in features.items()
    ):
        raise HelloError(
            f"the {what}'s features must be a JSON object of objects, not "
            f"{payload[_PREFIX:][:60]!r}"
        )
    return Hello(version, nonce, features)


def _not_a_number(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def control_frame(
    kind: int, body: bytes, structFormat: str, request_id: int | None = None
) -> tuple[bytes, ...]:
    """
    The parts of one control frame: C{(header + kind [+ id] + body,)} for a
    small body, or C{(header + kind [+ id], body)} so a large one is not
    copied.
    """
    pack = header_struct(structFormat).pack
    prefix = bytes((kind,))
    if request_id is not None:
        prefix += pack(request_id)
    head = pack(CONTROL_BIT | (len(prefix) + len(body))) + prefix
    if len(body) <= 16 * 1024:
        return (head + body,)
    return (head, body)


def encode_error(error_type: str, message: str) -> bytes:
    """
    The body of an ERROR frame after its id.
    """
    return json.dumps({"type": error_type, "message": message}).encode()


def decode_error(body: bytes) -> tuple[str, str]:
    """
    C{(type, message)} from an ERROR frame's body after its id; a body
    that is not the expected JSON is reported as it is, never raised.
    """
    try:
        value = json.loads(bytes(body).decode("utf-8"))
        return str(value["type"]), str(value["message"])
    except (UnicodeDecodeError, ValueError, TypeError, KeyError):
        return "ProtocolError", f"malformed error reply: {bytes(body)[:200]!r}"


#: The longest room name, in characters.
MAX_ROOM_LENGTH = 128

# Letters and digits of any script, and - _ . : / @ # + = ~ !: a room name
# is an identifier (a meeting, a scene, a lab), printed in logs and, later,
# sent on the wire; spaces and control characters would make both ambiguous.
_ROOM = re.compile(r"[\w\-.:/@#+=~!]+")


def check_room(room: object) -> str:
    """
    Return C{room} if it is a valid room name.

    @raise InvalidRoomError: it is not a C{str} of 1 to L{MAX_ROOM_LENGTH}
        letters, digits and C{- _ . : / @ # + = ~ !}.
    """
    if not isinstance(room, str):
        raise InvalidRoomError(f"a room is a str, not {type(room).__name__}")
    if not 0 < len(room) <= MAX_ROOM_LENGTH:
        raise InvalidRoomError(
            f"a room name has 1 to {MAX_ROOM_LENGTH} characters, not {len(room)}"
        )
    if not _ROOM.fullmatch(room):
        raise InvalidRoomError(
            f"room {room!r}: use letters, digits and - _ . : / @ # + = ~ ! only "
            f"(no spaces or control characters)"
        )
    return room
