"""
The wire layer: bytes to payloads (L{twcomms.wire.framing}: a 4-byte
unsigned length, then the payload) and payloads to messages
(L{twcomms.wire.codecs}: json, string, binary).

It knows nothing of connections, servers or threads.

Thread: codecs are pure functions of their input, safe from any thread; a
L{FrameReceiver} is a Twisted protocol and runs on the reactor thread.
"""

from twcomms.wire.codecs import (
    DATA_TYPES,
    BinaryCodec,
    Codec,
    JSONCodec,
    StringCodec,
    get_codec,
)
from twcomms.wire.framing import (
    BIG_ENDIAN,
    DEFAULT_MAX_MESSAGE_SIZE,
    LITTLE_ENDIAN,
    MAX_FRAME_PAYLOAD,
    Frame,
    FrameReceiver,
    check_size,
    frame_header,
    struct_format,
)

__all__ = [
    "BIG_ENDIAN",
    "DATA_TYPES",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "LITTLE_ENDIAN",
    "MAX_FRAME_PAYLOAD",
    "BinaryCodec",
    "Codec",
    "Frame",
    "FrameReceiver",
    "JSONCodec",
    "StringCodec",
    "check_size",
    "frame_header",
    "get_codec",
    "struct_format",
]
