"""
C{python -m twcomms}: the C{twcomms} command.
"""

from __future__ import annotations

import sys

from twcomms.ops.cli import main

if __name__ == "__main__":
    sys.exit(main())
