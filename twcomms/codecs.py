"""
Deprecated location: use L{twcomms.wire.codecs}. This module re-exports its names
and warns once on import.
"""

import warnings

from twcomms.wire.codecs import *  # noqa: F403
from twcomms.wire.codecs import __all__  # noqa: F401

warnings.warn(
    "twcomms.codecs moved to twcomms.wire.codecs; import it from there",
    DeprecationWarning,
    stacklevel=2,
)
