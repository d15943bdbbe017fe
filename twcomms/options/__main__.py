"""
C{python -m twcomms.options}: print C{docs/options.md}.
"""

from twcomms.options.commandline import options_table

print(options_table(), end="")
