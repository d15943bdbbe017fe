"""
The exceptions twcomms raises.

Every exception is a L{CommsError}, and also subclasses the built-in
exception a caller would naturally catch (C{ValueError} for a bad value,
C{TypeError} for a bad type, C{ConnectionError} for a connection that is
gone), so code written against the original library's plain exceptions keeps
working.

Thread: these are plain values; any thread may create, raise or catch them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.protocols.basic import StringTooLongError

if TYPE_CHECKING:
    from twisted.python.failure import Failure

__all__ = [
    "AuthenticationError",
    "ClientGoneError",
    "CommsError",
    "ConnectionClosedError",
    "DecodeError",
    "EncodeError",
    "ExtensionsRefusedError",
    "GaveUpError",
    "HelloError",
    "InvalidJSONError",
    "InvalidRoomError",
    "MessageTooLargeError",
    "NotConnectedError",
    "NotNegotiatedError",
    "PayloadSourceError",
    "QueueFullError",
    "ReactorThreadError",
    "RedisError",
    "RemoteError",
    "RequestTimeoutError",
    "SendTimeoutError",
    "SlowConsumerError",
    "UnsupportedTypeError",
]


class CommsError(Exception):
    """
    Base class of every exception raised by twcomms.
    """


class EncodeError(CommsError, ValueError):
    """
    A message could not be encoded for sending. Nothing was written.
    """


class UnsupportedTypeError(EncodeError, TypeError):
    """
    The value's type cannot be sent in the configured message data type.

    @ivar value_type: the type that was refused.
    @ivar data_type: the configured message data type (C{"json"},
        C{"string"} or C{"binary"}).
    """

    def __init__(self, value_type: type, data_type: str, hint: str) -> None:
        self.value_type = value_type
        self.data_type = data_type
        super().__init__(
            f"cannot send a {value_type.__name__!r} with "
            f"messageDataType={data_type!r}: {hint}"
        )


class InvalidJSONError(EncodeError):
    """
    In C{"json"} mode a C{str} or C{bytes} is sent as already-encoded JSON
    text, and this one is not valid JSON.
    """


class MessageTooLargeError(CommsError, ValueError, StringTooLongError):
    """
    An outgoing message is larger than the maximum message size. Nothing was
    written.

    It is also a L{twisted.protocols.basic.StringTooLongError}, so code
    written for Twisted's C{Int32StringReceiver} that catches that keeps
    working.

    @ivar size: the encoded size of the message, in bytes.
    @ivar limit: the maximum message size in force, in bytes.
    """

    def __init__(self, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(
            f"message of {size} bytes is over the maximum message size of "
            f"{limit} bytes; raise max_message_size on both ends, or split "
            f"the message"
        )


class DecodeError(CommsError, ValueError):
    """
    A complete frame arrived but its payload could not be decoded (invalid
    UTF-8, invalid JSON, JSON nested too deep).

    The framing is intact, so the connection stays up; the raw payload is
    kept on the exception so nothing is lost.

    @ivar payload: the raw payload bytes of the frame.
    @ivar data_type: the receiver's configured message data type.
    @ivar reason: a short description of what was wrong.
    """

    def __init__(self, payload: bytes, data_type: str, reason: str) -> None:
        self.payload = payload
        self.data_type = data_type
        self.reason = reason
        super().__init__(
            f"could not decode a {len(payload)}-byte message as {data_type}: {reason}"
        )


class NotConnectedError(CommsError, ConnectionError):
    """
    A message was sent on a connection that is not (or no longer)
    connected. Nothing was written.
    """


class ConnectionClosedError(NotConnectedError):
    """
    A message was sent on a connection after it was closed. Nothing was
    written.
    """


class ClientGoneError(ConnectionClosedError, LookupError):
    """
    A message was addressed to a server-side client that is not connected
    (it has disconnected, or the id is unknown). Nothing was written.

    @ivar client_id: the id that was looked up.
    """

    def __init__(self, client_id: str) -> None:
        self.client_id = client_id
        super().__init__(
            f"client {client_id!r} is not connected to this server "
            f"(it has disconnected, or the id is unknown)"
        )


class SlowConsumerError(CommsError, ConnectionError):
    """
    A message was not sent because the peer is not reading: the bytes queued
    for it while its transport asked us to pause would exceed its outbound
    limit. Nothing of this message was written. Under the default policy
    (C{"close"}) the connection is also closed, with close reason
    C{slow consumer}.

    @ivar queued: bytes queued to the peer while paused, before this message.
    @ivar limit: the outbound limit, in bytes.
    """

    def __init__(self, peer: str, queued: int, size: int, limit: int) -> None:
        self.queued = queued
        self.limit = limit
        super().__init__(
            f"{peer} is not reading: {queued} bytes are queued for it and "
            f"this {size}-byte frame would exceed its outbound limit of "
            f"{limit} bytes; nothing was sent"
        )


class PayloadSourceError(CommsError, OSError):
    """
    A payload streamed from a file (C{FrameWriter.streamPayload}, C{twcomms
    send --file}) ended, or overran, before the size its header announced.
    The connection was aborted, so the peer discards the partial message.
    """


class GaveUpError(NotConnectedError):
    """
    The client stopped trying to connect (it was stopped, reconnecting is
    off, or C{max_retries} was reached) before a connection was made.

    @ivar failure: the last connection failure, if any.
    """

    def __init__(self, message: str, failure: Failure | None = None) -> None:
        self.failure = failure
        super().__init__(message)


class ReactorThreadError(CommsError, RuntimeError):
    """
    A blocking call of the threaded API was made on the reactor thread,
    where it would deadlock (the reactor could not run what it waits for).
    """


class SendTimeoutError(CommsError, TimeoutError):
    """
    C{send()} waited for the peer to read (the connection's outbound data
    was over its high-water mark) and the peer did not catch up within the
    send timeout. Nothing of this message was sent.
    """


class QueueFullError(CommsError, BufferError):
    """
    An auto-reconnecting client is disconnected and its queue of messages
    waiting for the next connection is full (by count or bytes). Nothing of
    this message was queued.
    """


class InvalidRoomError(CommsError, ValueError):
    """
    A room name that is not a C{str} of 1 to 128 letters, digits and
    C{- _ . : / @ # + = ~ !}. Nothing was joined or sent.
    """


class NotNegotiatedError(CommsError, RuntimeError):
    """
    An extension (request/reply, rooms from the client, authentication) was
    used on a connection that did not agree it: a plain peer (one that sent
    no hello, like the original library or a Unity client), or a server that
    declined the feature. Nothing was sent.
    """


class ExtensionsRefusedError(NotConnectedError):
    """
    A client asked for extensions (C{extensions=True}) and the server did
    not answer its hello within C{extension_timeout}, or closed the
    connection instead: it is not a twcomms server, or it has extensions
    turned off (or, for a close, it is full). Use C{extensions="prefer"} to
    fall back to the plain protocol, or C{extensions=False}.

    @ivar closed: whether the server closed the connection rather than stay
        silent (an original server in json or string mode does, on a
        hello; so does a full twcomms server, before reading it).
    """

    closed = False


class RequestTimeoutError(CommsError, TimeoutError):
    """
    No reply to a request arrived within its timeout. A reply arriving later
    is counted and dropped.
    """


class RemoteError(CommsError):
    """
    The peer answered a request with an error: its handler raised, or it
    refused (a room, the request itself). No traceback crosses the wire.

    @ivar type: the peer's name for the error (its exception's type name).
    @ivar remote_message: the peer's message.
    """

    def __init__(self, error_type: str, message: str) -> None:
        self.type = error_type
        self.remote_message = message
        super().__init__(f"{error_type}: {message}")


class AuthenticationError(RemoteError, PermissionError):
    """
    The server refused this client's credentials (the connection is then
    closed with reason C{auth failed}), or asked for credentials and none
    were given.
    """


class HelloError(CommsError, ValueError):
    """
    A frame starts with the hello (or answer) magic of the extended
    protocol but is not a valid hello; the message says what is wrong. (A
    server then treats the connection as plain.)
    """


class RedisError(CommsError, ConnectionError):
    """
    The backplane's Redis answered a command with an error, was not
    reachable, or the connection to it was lost before the answer.
    """
