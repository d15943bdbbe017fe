"""
The connection layer: one twcomms connection, L{CommsProtocol} -- framing
plus a codec, dispatching decoded messages to a L{MessageReceiver} -- and
its write path.

Thread: the reactor thread only, like every Twisted protocol.
"""

from twcomms.connection.protocol import (
    CloseReason,
    CommsProtocol,
    MessageReceiver,
    MessageSender,
    SlowConsumerPolicy,
)

__all__ = [
    "CloseReason",
    "CommsProtocol",
    "MessageReceiver",
    "MessageSender",
    "SlowConsumerPolicy",
]
