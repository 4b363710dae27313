"""Adaptive computation time (Graves 2016): the halting pair in :mod:`.halting`, the layer in :mod:`.module`."""

from tinycond.act.halting import (
    DEFAULT_EPSILON,
    ActCache,
    PonderStep,
    act_backward,
    act_forward,
    halting_margin,
    halting_step,
)
from tinycond.act.module import ACT, DEFAULT_HALTING_BIAS

__all__ = [
    "ACT",
    "DEFAULT_EPSILON",
    "DEFAULT_HALTING_BIAS",
    "ActCache",
    "PonderStep",
    "act_backward",
    "act_forward",
    "halting_margin",
    "halting_step",
]
