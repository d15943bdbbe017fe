"""
C{python -m harness.stress NAME [--scale ci|full]}: run one scenario in
this process and print C{RESULT <json>} (L{harness.stress.registry}).
"""

import sys

from harness.stress.registry import main

sys.exit(main())
