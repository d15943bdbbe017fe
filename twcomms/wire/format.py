"""
The format of a frame: a 4-byte unsigned length in the connection's byte
order (L{struct_format}, L{header_struct}), then the payload; the limits
on its size (L{check_size}); and L{Frame}, one frame built once to be
written to many connections.

Thread: plain values and pure functions; any thread.
"""

from __future__ import annotations

import struct
from typing import Final, Literal

from twcomms.errors import MessageTooLargeError

__all__ = [
    "BIG_ENDIAN",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "JOIN_LIMIT",
    "LITTLE_ENDIAN",
    "MAX_FRAME_PAYLOAD",
    "ByteOrder",
    "Frame",
    "check_size",
    "frame_header",
    "header_struct",
    "struct_format",
]

ByteOrder = Literal["little", "big"]

#: C{structFormat} for each byte order.
LITTLE_ENDIAN: Final = "<I"
BIG_ENDIAN: Final = ">I"

#: The default maximum message size: 64 MiB.
DEFAULT_MAX_MESSAGE_SIZE: Final = 64 * 1024 * 1024

#: The largest payload a 4-byte unsigned header can announce.
MAX_FRAME_PAYLOAD: Final = 0xFFFFFFFF

#: Payloads up to this size are written in one C{write} together with their
#: header (one small copy, one syscall); larger ones as two buffers so the
#: payload is never copied to prepend 4 bytes.
JOIN_LIMIT: Final = 16 * 1024


_STRUCTS: dict[str, struct.Struct] = {}


def header_struct(fmt: str) -> struct.Struct:
    """
    The C{struct.Struct} for a header format, shared by every connection
    that uses it (one per format per process).
    """
    try:
        return _STRUCTS[fmt]
    except KeyError:
        s = _STRUCTS[fmt] = struct.Struct(fmt)
        return s


def struct_format(byte_order: str) -> str:
    """
    Return the C{structFormat} for C{byte_order} (C{"little"} or C{"big"}).

    @raise ValueError: any other value.
    """
    if byte_order == "little":
        return LITTLE_ENDIAN
    if byte_order == "big":
        return BIG_ENDIAN
    raise ValueError(f"unknown byteOrder {byte_order!r}; use 'little' or 'big'")


def frame_header(length: int, byte_order: str = "little") -> bytes:
    """
    Return the 4-byte header announcing a payload of C{length} bytes.
    """
    return header_struct(struct_format(byte_order)).pack(length)


class Frame:
    """
    One encoded frame, ready to write to any number of connections: the
    header is packed once and a small payload is joined to it once, so a
    broadcast costs one C{write} per client and no per-client copies.

    @ivar payload: the payload bytes.
    @ivar parts: what is written: C{(header + payload,)} for payloads up to
        16 KiB, C{(header, payload)} above (the payload is never copied).
    @ivar size: the frame size on the wire (header included).
    """

    __slots__ = ("parts", "payload", "size")

    def __init__(self, payload: bytes, structFormat: str = LITTLE_ENDIAN) -> None:
        header = header_struct(structFormat).pack(len(payload))
        self.payload = payload
        self.size = len(header) + len(payload)
        self.parts: tuple[bytes, ...] = (
            (header + payload,) if len(payload) <= JOIN_LIMIT else (header, payload)
        )

    def __repr__(self) -> str:
        return f"<Frame payload={len(self.payload)} bytes>"


def check_size(length: int, limit: int) -> None:
    """
    Raise L{MessageTooLargeError} if a payload of C{length} bytes is over
    C{limit} or over what a 4-byte header can announce.
    """
    if length > limit or length > MAX_FRAME_PAYLOAD:
        raise MessageTooLargeError(length, min(limit, MAX_FRAME_PAYLOAD))
