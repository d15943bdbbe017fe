"""
Deprecated location: use L{twcomms.wire.framing}. This module re-exports its names
and warns once on import.
"""

import warnings

from twcomms.wire.framing import *  # noqa: F403
from twcomms.wire.framing import __all__  # noqa: F401

warnings.warn(
    "twcomms.framing moved to twcomms.wire.framing; import it from there",
    DeprecationWarning,
    stacklevel=2,
)
