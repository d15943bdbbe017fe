"""
Reliability scenarios: twcomms under load, faults and hostile input, on
127.0.0.1. Each scenario checks what it promises and returns a
L{harness.stress.result.Result} (numbers for the stress table, and the list
of C{problems} it found).

The tests in C{tests/reliability} call these functions and assert on their
results; C{python -m benchmarks.stress} runs each in a fresh process through
this package's command line (L{harness.stress.registry})::

    python -m harness.stress NAME [--scale ci|full]

which prints C{RESULT <json>} as its last line.

Scale: C{TWCOMMS_SCALE} (C{ci}, the default, or C{full}) sizes the heavy
scenarios (L{harness.stress.scale.SCALES}).

One module per scenario (C{hostile_framing}, C{bad_payloads},
C{slow_consumer}, C{load}, C{churn}, C{restart}, C{shutdown},
C{slow_callback}, C{cross_node}, C{node_kill}); what they share is in
C{scale}, C{result}, C{measure}, C{reactor}, C{threads}, C{processes},
C{nodes} and C{garbage}; C{driver} is the client process several of them
start.

The cross-node scenarios (C{cross_node}, C{node_kill}) run hub processes
(C{twcomms serve --backplane}) on a real Redis whose URL they are given
(L{harness.redis.RedisServer}; the tests' C{redis_server} fixture, or the
one C{python -m benchmarks.stress} starts).

Two kinds of scenario:
  - Twisted ones are C{async def} functions run on a running global reactor
    (pytest-twisted's, or C{task.react} in the command line). Every wait is
    bounded (L{harness.stress.reactor.bounded}); client processes are
    started with C{reactor.spawnProcess} and killed by pid in C{finally}.
  - Threaded ones (names ending C{_threaded}, and C{slow_callback}) are plain
    functions using the threaded API; they must not run on the reactor
    thread (run them with C{-p no:twisted}).
"""
