"""
twcomms: json, string and binary messages over TCP, on Twisted.

Wire-compatible with "Python Comms" (4-byte unsigned length, then the
payload; little-endian by default) and keeping its promise that every message
arrives whole.

The public API is what this module lists in C{__all__}. The packages are
its layers, each importing only those below it (C{docs/architecture.md}):

  - L{twcomms.wire}: framing and codecs (bytes, payloads, values);
  - L{twcomms.options}: every option, declared once;
  - L{twcomms.connection}: one connection (protocol, write path, timers);
  - L{twcomms.server}, L{twcomms.client}: the Twisted API;
  - L{twcomms.threaded}: the threaded API (C{Server}, C{Client});
  - L{twcomms.ops}: C{twistd comms} and the C{twcomms} command;
  - L{twcomms.testing}: an in-memory network for tests;
  - L{twcomms.errors}: every exception.

Thread: each package's docstring says which thread calls it: the Twisted
API only the reactor thread, the threaded API any thread.
"""

from twcomms._version import __version__
from twcomms.client import CommsClientFactory
from twcomms.connection import (
    CloseReason,
    CommsProtocol,
    FrameWriter,
    MessageReceiver,
    MessageSender,
    PauseReason,
    SlowConsumerPolicy,
)
from twcomms.errors import (
    AuthenticationError,
    ClientGoneError,
    CommsError,
    ConnectionClosedError,
    DecodeError,
    EncodeError,
    ExtensionsRefusedError,
    GaveUpError,
    HelloError,
    InvalidJSONError,
    InvalidRoomError,
    MessageTooLargeError,
    NotConnectedError,
    NotNegotiatedError,
    PayloadSourceError,
    QueueFullError,
    ReactorThreadError,
    RedisError,
    RemoteError,
    RequestTimeoutError,
    SendTimeoutError,
    SlowConsumerError,
    UnsupportedTypeError,
)
from twcomms.options import (
    AccessOptions,
    ConnectionOptions,
    ExtensionOptions,
    FlowControl,
    HelloOptions,
    Options,
    ReconnectOptions,
    ServerOptions,
)
from twcomms.server import (
    ClientHandle,
    ClientRegistry,
    CommsServerFactory,
    LocalClientRegistry,
)
from twcomms.threaded import Client, ConnectedClient, Server
from twcomms.wire import (
    DATA_TYPES,
    DEFAULT_MAX_MESSAGE_SIZE,
    BinaryCodec,
    Codec,
    Frame,
    FrameReceiver,
    JSONCodec,
    StringCodec,
    frame_header,
    get_codec,
)

__all__ = [
    "DATA_TYPES",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "AccessOptions",
    "AuthenticationError",
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
    "ConnectionOptions",
    "DecodeError",
    "EncodeError",
    "ExtensionOptions",
    "ExtensionsRefusedError",
    "FlowControl",
    "Frame",
    "FrameReceiver",
    "FrameWriter",
    "GaveUpError",
    "HelloError",
    "HelloOptions",
    "InvalidJSONError",
    "InvalidRoomError",
    "JSONCodec",
    "LocalClientRegistry",
    "MessageReceiver",
    "MessageSender",
    "MessageTooLargeError",
    "NotConnectedError",
    "NotNegotiatedError",
    "Options",
    "PauseReason",
    "PayloadSourceError",
    "QueueFullError",
    "ReactorThreadError",
    "ReconnectOptions",
    "RedisError",
    "RemoteError",
    "RequestTimeoutError",
    "SendTimeoutError",
    "Server",
    "ServerOptions",
    "SlowConsumerError",
    "SlowConsumerPolicy",
    "StringCodec",
    "UnsupportedTypeError",
    "__version__",
    "frame_header",
    "get_codec",
]
