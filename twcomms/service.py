"""
Deprecated location: use L{twcomms.ops.service}. This module re-exports its names
and warns once on import.
"""

import warnings

from twcomms.ops.service import *  # noqa: F403
from twcomms.ops.service import __all__  # noqa: F401

warnings.warn(
    "twcomms.service moved to twcomms.ops.service; import it from there",
    DeprecationWarning,
    stacklevel=2,
)
