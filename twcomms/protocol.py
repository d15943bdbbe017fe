"""
Deprecated location: use L{twcomms.connection} (and L{twcomms.options} for
the option values). This module re-exports the names it had and warns on
import.
"""

import warnings

from twcomms.connection import (
    CloseReason,
    CommsProtocol,
    MessageReceiver,
    MessageSender,
    SlowConsumerPolicy,
)
from twcomms.options import (
    DEFAULT_HANDSHAKE_TIMEOUT,
    DEFAULT_OUTBOUND_HEADROOM,
    ConnectionOptions,
)

__all__ = [
    "DEFAULT_HANDSHAKE_TIMEOUT",
    "DEFAULT_OUTBOUND_HEADROOM",
    "CloseReason",
    "CommsProtocol",
    "ConnectionOptions",
    "MessageReceiver",
    "MessageSender",
    "SlowConsumerPolicy",
    "validate_max_message_size",
]


def validate_max_message_size(size: int) -> int:
    """
    Check a maximum message size (now L{ConnectionOptions} checks it).
    """
    return ConnectionOptions(max_message_size=size).max_message_size


warnings.warn(
    "twcomms.protocol moved to twcomms.connection; import it from there",
    DeprecationWarning,
    stacklevel=2,
)
