"""
Deprecated location: use L{twcomms.ops.cli}. This module re-exports its names
and warns once on import.
"""

import warnings

from twcomms.ops.cli import *  # noqa: F403
from twcomms.ops.cli import __all__  # noqa: F401

warnings.warn(
    "twcomms.cli moved to twcomms.ops.cli; import it from there",
    DeprecationWarning,
    stacklevel=2,
)
