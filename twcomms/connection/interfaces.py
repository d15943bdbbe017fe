"""
What joins a connection to the application: the L{MessageReceiver} a
connection delivers to, the L{MessageSender} it offers back, why it closed
(L{CloseReason}) and why its reading is paused (L{PauseReason}).

Thread: the reactor thread only.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Any, Protocol

from twisted.python.failure import Failure

from twcomms.errors import DecodeError

if TYPE_CHECKING:
    from twcomms.connection.protocol import CommsProtocol

__all__ = ["CloseReason", "MessageReceiver", "MessageSender", "PauseReason"]


class CloseReason(str, enum.Enum):
    """
    Why a connection closed, as given to close events.
    """

    #: The peer closed the connection cleanly.
    PEER_CLOSED = "peer closed"
    #: The connection failed (reset, TLS failure, ...); see the failure.
    ERROR = "error"
    #: The peer announced a message over the maximum message size.
    OVERSIZE = "oversize"
    #: The peer sent nothing for longer than the idle timeout.
    IDLE_TIMEOUT = "idle timeout"
    #: The TLS handshake did not complete within the handshake timeout.
    HANDSHAKE_TIMEOUT = "handshake timeout"
    #: The peer did not read fast enough; its outbound limit was exceeded.
    SLOW_CONSUMER = "slow consumer"
    #: The server was stopping.
    SERVER_STOPPING = "server stopping"
    #: The server already had its maximum number of clients.
    MAX_CLIENTS = "max clients"
    #: This side closed the connection (C{close()}).
    CLOSED = "closed"
    #: An extended peer was silent for the heartbeat interval and timeout.
    HEARTBEAT_TIMEOUT = "heartbeat timeout"
    #: Authentication was refused, or required and not attempted.
    AUTH_FAILED = "auth failed"
    #: The server requires authentication and none came in time.
    AUTH_TIMEOUT = "auth timeout"
    #: The client asked for extensions and the server did not answer.
    EXTENSION_TIMEOUT = "extension timeout"

    def __str__(self) -> str:
        return self.value


class PauseReason(str, enum.Enum):
    """
    Why a connection's reading is paused. Reading is paused while any
    reason holds and resumes only when none does, so one part resuming
    does not undo another part's pause (see L{CommsProtocol.pauseReading}).
    """

    #: C{pauseProducing()} was called: the protocol used as a Twisted
    #: producer (its C{IPushProducer} methods).
    PRODUCER = "producer"
    #: The threaded API's callbacks have too many messages in hand.
    RECEIVE_WINDOW = "receive window"
    #: The hub relays this client's messages to clients that are behind
    #: (over the drain high-water mark): TCP then slows the sender.
    PACING = "pacing"

    def __str__(self) -> str:
        return self.value


class MessageSender(Protocol):
    """
    What a L{MessageReceiver} can do with its connection.
    """

    def sendMessage(self, message: Any) -> None:
        """
        Encode and send one message.

        @raise ConnectionClosedError: the connection is closed or closing.
        @raise EncodeError: the message cannot be encoded.
        @raise MessageTooLargeError: it is over the maximum message size.
        """

    def close(self, reason: CloseReason = CloseReason.CLOSED) -> None:
        """
        Close the connection after what was sent is written.
        """


class MessageReceiver(Protocol):
    """
    The application side of a connection: where decoded messages go.

    Every method is called on the reactor thread.
    """

    def startReceivingMessages(self, sender: CommsProtocol) -> None:
        """
        The connection is made; C{sender} sends on it.
        """

    def messageReceived(self, message: Any) -> None:
        """
        One decoded message arrived.
        """

    def messageDecodeFailed(self, error: DecodeError) -> None:
        """
        A complete frame arrived but did not decode. The connection stays up;
        C{error.payload} holds the raw bytes.
        """

    def stopReceivingMessages(self, reason: CloseReason, failure: Failure) -> None:
        """
        The connection is closed, for C{reason}; C{failure} is what Twisted
        gave C{connectionLost}. Also called, without a
        L{startReceivingMessages} before it, when a TLS connection fails its
        handshake.
        """
