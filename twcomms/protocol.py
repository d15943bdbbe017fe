"""
Deprecated location: use L{twcomms.connection.protocol}. This module
re-exports its names and warns once on import.
"""

import warnings

from twcomms.connection.protocol import *  # noqa: F403
from twcomms.connection.protocol import __all__  # noqa: F401

warnings.warn(
    "twcomms.protocol moved to twcomms.connection.protocol; import it from there",
    DeprecationWarning,
    stacklevel=2,
)
