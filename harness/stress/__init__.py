"""
The reliability scenarios: twcomms under load, faults and hostile input.
The tests in C{tests/reliability} assert on them; C{benchmarks.stress}
tabulates them.
"""
