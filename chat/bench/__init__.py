"""Benchmarks: commands that print numbers (``python -m chat.bench --help``).

``load``     the load generator: N clients, S senders, M messages at R/s.
``run``      one run against any server (ours, JSON or plain, or ncat --chat).
``ceiling``  the generator's own limit, against a server that does no work.
``compare``  our server.py against ``ncat --chat``, shape by shape.
``gui``      the window under a flood: stalls, memory, time to a mapped window.
``floor``    the least a fan-out to 100 connections can take in Python here.
``relay``    the least a chat server can be in Python: a yardstick for ours.

Benchmarks are commands, not tests: the tests check correctness, these
measure speed.  ``docs/performance.md`` has the method and the figures.
"""
