"""Finite-difference gradient checking; see :mod:`tinycond.gradcheck.core` for the contract."""

from tinycond.gradcheck.core import (
    DEFAULT_STEP,
    DEFAULT_TOLERANCE,
    EPS,
    ROUNDOFF_FACTOR,
    GradcheckReport,
    GradientCheckError,
    TensorResult,
    check_gradients,
    numerical_gradient,
    relative_error,
)
from tinycond.gradcheck.wrappers import check_function, check_module

__all__ = [
    "DEFAULT_STEP",
    "DEFAULT_TOLERANCE",
    "EPS",
    "ROUNDOFF_FACTOR",
    "GradcheckReport",
    "GradientCheckError",
    "TensorResult",
    "check_function",
    "check_gradients",
    "check_module",
    "numerical_gradient",
    "relative_error",
]
