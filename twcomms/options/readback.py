"""
L{ConnectionReadback}: what every front door offers to read its
connection options back under their keyword names.

Thread: any (the options are frozen).
"""

from __future__ import annotations

from twcomms.options.sections import Options
from twcomms.wire.codecs import Codec

__all__ = ["ConnectionReadback"]


class ConnectionReadback:
    """
    Mixed into the factories and the threaded C{Server}/C{Client}, which
    keep their L{Options} in C{self.options}.
    """

    options: Options

    @property
    def codec(self) -> Codec:
        return self.options.connection.codec

    @property
    def messageDataType(self) -> str:
        return self.options.connection.codec.name

    @property
    def byteOrder(self) -> str:
        return self.options.connection.byteOrder

    @property
    def max_message_size(self) -> int:
        return self.options.connection.max_message_size
