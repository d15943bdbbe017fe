"""
Every option of twcomms, declared once.

An option is a field of one of eight sections, each a frozen dataclass
(L{twcomms.options.sections}, L{twcomms.options.extensions}):

  - L{ConnectionOptions}: every connection, either side (codec, byte order,
    sizes, timeouts, the outbound limit);
  - L{ServerOptions}: a server's (how many clients);
  - L{ReconnectOptions}: a client's reconnection (back-off, retries);
  - L{FlowControl}: the threaded API's send and receive windows;
  - L{ExtensionOptions}: the extended protocol, either side (heartbeats,
    requests);
  - L{HelloOptions}: a client's ask for the extended protocol;
  - L{AccessOptions}: a server's for extended clients (authentication);
  - L{ClusterOptions}: several hubs acting as one (a backplane);
  - L{WebOptions}: browsers as clients (the WebSocket gateway).

L{Options} holds one of each: the one options object. A field carries its
documentation and how it is read from command-line text
(L{twcomms.options.spec.option}), and the front doors are built from these
declarations: the Twisted factories and the threaded C{Server}/C{Client}
take any field of their sections as a keyword (L{Options.build}),
C{twistd comms} and C{twcomms serve} get a flag per field, and so do
C{twcomms send/listen} (L{twcomms.options.commandline}). A new option is
one field, plus its tests: C{tests/test_options.py} checks that every
front door takes every field. C{docs/options.md} is L{options_table}
(C{python -m twcomms.options} prints it).

Values are validated once, when a section is made; a bad one raises
C{ValueError} or C{TypeError} naming the option.

Thread: plain values; any thread. Layer: above L{twcomms.wire}, below
L{twcomms.connection}.
"""

from twcomms.options.cluster import ClusterOptions
from twcomms.options.commandline import (
    add_arguments,
    from_arguments,
    options_table,
    twistd_parameters,
)
from twcomms.options.extensions import (
    DEFAULT_HEARTBEAT_INTERVAL,
    DEFAULT_HEARTBEAT_TIMEOUT,
    MIN_HEARTBEAT_INTERVAL,
    AccessOptions,
    ExtensionOptions,
    HelloOptions,
)
from twcomms.options.sections import (
    DEFAULT_HANDSHAKE_TIMEOUT,
    DEFAULT_OUTBOUND_HEADROOM,
    SECTIONS,
    ConnectionOptions,
    FlowControl,
    Options,
    ReconnectOptions,
    ServerOptions,
    SlowConsumerPolicy,
)
from twcomms.options.spec import OptionSpec, option, option_fields
from twcomms.options.web import WebOptions

__all__ = [
    "DEFAULT_HANDSHAKE_TIMEOUT",
    "DEFAULT_HEARTBEAT_INTERVAL",
    "DEFAULT_HEARTBEAT_TIMEOUT",
    "DEFAULT_OUTBOUND_HEADROOM",
    "MIN_HEARTBEAT_INTERVAL",
    "SECTIONS",
    "AccessOptions",
    "ClusterOptions",
    "ConnectionOptions",
    "ExtensionOptions",
    "FlowControl",
    "HelloOptions",
    "OptionSpec",
    "Options",
    "ReconnectOptions",
    "ServerOptions",
    "SlowConsumerPolicy",
    "WebOptions",
    "add_arguments",
    "from_arguments",
    "option",
    "option_fields",
    "options_table",
    "twistd_parameters",
]
