"""
The connection layer: one twcomms connection. L{CommsProtocol} (framing
plus a codec, dispatching decoded messages to a L{MessageReceiver}), its
write path (L{FrameWriter}: outbound limit, streaming, drain, batches),
its timers, and reading paused by reason (L{PauseReason}).

Thread: the reactor thread only, like every Twisted protocol.
"""

from twcomms.connection.interfaces import (
    CloseReason,
    MessageReceiver,
    MessageSender,
    PauseReason,
)
from twcomms.connection.protocol import CommsProtocol
from twcomms.connection.queue import STREAM_ABOVE, OutboundQueue
from twcomms.connection.writer import FrameWriter
from twcomms.options import SlowConsumerPolicy

__all__ = [
    "STREAM_ABOVE",
    "CloseReason",
    "CommsProtocol",
    "FrameWriter",
    "MessageReceiver",
    "MessageSender",
    "OutboundQueue",
    "PauseReason",
    "SlowConsumerPolicy",
]
