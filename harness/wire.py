"""
The wire format, written again with C{struct} only: a 4-byte unsigned
length header (little-endian by default, as the original library writes
it; big-endian on request), then the payload.

Independent of twcomms on purpose: the tests use it to check twcomms'
framing, and the benchmarks' raw-socket floor and peers use it to speak the
same format without twcomms.
"""

from __future__ import annotations

import struct

#: The header of each byte order (C{"<I"}, C{">I"}).
HEADERS = {"little": struct.Struct("<I"), "big": struct.Struct(">I")}
#: The original library's header, little-endian.
HEADER = HEADERS["little"]
HEADER_SIZE = HEADER.size


def header_struct(byte_order: str = "little") -> struct.Struct:
    """
    The header's C{struct} for C{byte_order} (C{"little"} or C{"big"}).
    """
    return HEADERS[byte_order]


def header(length: int, byte_order: str = "little") -> bytes:
    """
    A header announcing C{length} payload bytes (any 32-bit value, so a
    test can announce more than it sends).
    """
    return HEADERS[byte_order].pack(length)


def frame(payload: bytes, byte_order: str = "little") -> bytes:
    """
    One frame built the way the original library builds one:
    C{struct.pack('<I', len(payload)) + payload}.
    """
    return HEADERS[byte_order].pack(len(payload)) + payload


def scan(
    stream: bytes | bytearray, limit: int | None = None, byte_order: str = "little"
) -> tuple[list[bytes], int, bool]:
    """
    Read the frames at the start of C{stream}: their payloads, the offset
    of the first byte not consumed, and whether reading stopped at a header
    announcing more than C{limit} bytes (with a C{limit}).
    """
    unpack_from = HEADERS[byte_order].unpack_from
    payloads = []
    i = 0
    n = len(stream)
    while n - i >= HEADER_SIZE:
        (length,) = unpack_from(stream, i)
        if limit is not None and length > limit:
            return payloads, i, True
        if n - i - HEADER_SIZE < length:
            break
        payloads.append(bytes(stream[i + HEADER_SIZE : i + HEADER_SIZE + length]))
        i += HEADER_SIZE + length
    return payloads, i, False


def split(
    stream: bytes | bytearray, byte_order: str = "little"
) -> tuple[list[bytes], bytes]:
    """
    The complete frames' payloads at the start of C{stream}, and the bytes
    after them (an incomplete frame, or nothing).
    """
    payloads, end, _ = scan(stream, byte_order=byte_order)
    return payloads, bytes(stream[end:])


def parse(stream: bytes, byte_order: str = "little") -> list[bytes]:
    """
    Split a byte stream made of whole frames into their payloads.
    """
    payloads, rest = split(stream, byte_order)
    assert not rest, "trailing partial frame"
    return payloads


def outcome(stream: bytes, limit: int) -> tuple[list[bytes], bool, int]:
    """
    What a correct receiver makes of C{stream} with a maximum message size
    of C{limit}: the complete payloads before the first header over
    C{limit}, whether there is such a header, and how many bytes of an
    incomplete frame are left at the end (0 after an oversized header).
    """
    payloads, end, oversize = scan(stream, limit)
    return payloads, oversize, 0 if oversize else len(stream) - end
