"""
C{python -m benchmarks.peers}: the command line of L{benchmarks.peers}.
"""

import sys

from benchmarks.peers import main

sys.exit(main())
