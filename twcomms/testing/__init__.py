"""
Helpers for testing code that uses twcomms (and twcomms itself):

  - L{MemoryNetwork}: servers and clients connected in memory, with a fake
    clock -- no sockets, no waiting;
  - L{Received}: an C{on_message} callable whose C{next()} waits, with a
    bound, for the next message over real sockets;
  - L{RegistryContract}: the tests any L{twcomms.server.ClientRegistry}
    must pass, to mix into a test case.

Thread: the test's (L{Received}: the reactor thread).
"""

from twcomms.testing.contract import RegistryContract
from twcomms.testing.memory import MemoryNetwork
from twcomms.testing.received import Received

__all__ = ["MemoryNetwork", "Received", "RegistryContract"]
