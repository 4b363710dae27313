"""Timing and memory helpers shared by the benchmarks.

Speed is always reported as a ratio of two measurements taken in the same
run, with the candidates interleaved (A, B, A, B, ...) so that a slow spell
on a shared machine hits every candidate alike.
"""

from __future__ import annotations

import time
import tracemalloc
from typing import Callable, NamedTuple

import numpy as np


class Timing(NamedTuple):
    """Seconds per call over the repeats: median, and the spread as (max - min) / median."""

    median: float
    low: float
    high: float

    @property
    def spread(self) -> float:
        return (self.high - self.low) / self.median if self.median > 0 else 0.0


def time_interleaved(candidates: dict[str, Callable[[], object]], repeats: int = 5, warmup: int = 1) -> dict[str, Timing]:
    """Time each callable ``repeats`` times, interleaved, after ``warmup`` untimed calls each."""
    for _ in range(warmup):
        for fn in candidates.values():
            fn()
    samples = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, fn in candidates.items():
            start = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - start)
    return {name: Timing(float(np.median(s)), float(np.min(s)), float(np.max(s))) for name, s in samples.items()}


def peak_memory(fn: Callable[[], object]) -> int:
    """Return the peak bytes that NumPy and Python allocate while ``fn`` runs (tracemalloc).

    Arrays that exist before the call (inputs, weights) are not counted.
    """
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        baseline, _ = tracemalloc.get_traced_memory()
        fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak - baseline
