"""
Helpers shared by the tests (C{tests/}) and the benchmarks (C{benchmarks/}).

Neither imports the other; both import this package. It is not part of
twcomms and is not shipped in the wheel (C{pyproject.toml} lists the
packages that are).
"""
