"""Benchmarks: conditional against dense compute, as ratios measured in one run.

Each topic module (for example :mod:`tinycond.bench.sparse`) has a
``run(quick=False)`` function that returns a dict of results and can be
run as a script on its own.
"""
