"""
The C{twistd comms} plugin: only a ServiceMaker; the service itself is
imported from L{twcomms.service} when used.
"""

from twisted.application.service import ServiceMaker

TwcommsHub = ServiceMaker(
    "twcomms hub",
    "twcomms.ops.service",
    "A json/string/binary message hub over TCP (wire-compatible with Python Comms).",
    "comms",
)
