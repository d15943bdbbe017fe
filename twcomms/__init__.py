"""
twcomms: json, string and binary messages over TCP, on Twisted.

Wire-compatible with "Python Comms" (4-byte unsigned length, then the
payload; little-endian by default) and keeping its promise that every message
arrives whole.

The public API is what this module lists in C{__all__}; everything in a
module whose name starts with an underscore is private.
"""

from twcomms._version import __version__
from twcomms.client.factory import CommsClientFactory, GaveUpError
from twcomms.connection.protocol import (
    CloseReason,
    CommsProtocol,
    MessageReceiver,
    MessageSender,
    SlowConsumerPolicy,
)
from twcomms.errors import (
    ClientGoneError,
    CommsError,
    ConnectionClosedError,
    DecodeError,
    EncodeError,
    InvalidJSONError,
    MessageTooLargeError,
    NotConnectedError,
    SlowConsumerError,
    UnsupportedTypeError,
)
from twcomms.server.factory import (
    ClientHandle,
    ClientRegistry,
    CommsServerFactory,
    LocalClientRegistry,
)
from twcomms.threaded.api import (
    Client,
    ConnectedClient,
    FlowControl,
    QueueFullError,
    ReactorThreadError,
    SendTimeoutError,
    Server,
)
from twcomms.wire.codecs import (
    DATA_TYPES,
    BinaryCodec,
    Codec,
    JSONCodec,
    StringCodec,
    get_codec,
)
from twcomms.wire.framing import (
    DEFAULT_MAX_MESSAGE_SIZE,
    Frame,
    FrameReceiver,
    frame_header,
)

__all__ = [
    "DATA_TYPES",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "BinaryCodec",
    "Client",
    "ClientGoneError",
    "ClientHandle",
    "ClientRegistry",
    "CloseReason",
    "Codec",
    "CommsClientFactory",
    "CommsError",
    "CommsProtocol",
    "CommsServerFactory",
    "ConnectedClient",
    "ConnectionClosedError",
    "DecodeError",
    "EncodeError",
    "FlowControl",
    "Frame",
    "FrameReceiver",
    "GaveUpError",
    "InvalidJSONError",
    "JSONCodec",
    "LocalClientRegistry",
    "MessageReceiver",
    "MessageSender",
    "MessageTooLargeError",
    "NotConnectedError",
    "QueueFullError",
    "ReactorThreadError",
    "SendTimeoutError",
    "Server",
    "SlowConsumerError",
    "SlowConsumerPolicy",
    "StringCodec",
    "UnsupportedTypeError",
    "__version__",
    "frame_header",
    "get_codec",
]
