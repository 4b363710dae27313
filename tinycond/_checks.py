"""Argument validation shared by every module.

Each helper raises ``ValueError`` or ``TypeError`` with a message that names
the argument, the value received and what is expected, so the error points at
the call that went wrong instead of a shape error deep inside NumPy.
"""

from __future__ import annotations

import numbers

import numpy as np


def as_generator(rng, name: str = "rng") -> np.random.Generator:
    """Return a ``numpy.random.Generator`` from a Generator or an integer seed.

    ``None`` is rejected on purpose: every random choice in tinycond must be
    reproducible, so the caller passes a seed or a Generator explicitly.
    """
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, numbers.Integral) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng))
    raise TypeError(
        f"{name} must be a numpy.random.Generator or an integer seed, got {rng!r}; "
        f"pass for example {name}=np.random.default_rng(0) or {name}=0"
    )


def check_positive_int(value, name: str) -> int:
    """Return ``value`` as an int, or raise unless it is an integer >= 1."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a positive integer, got {value!r} of type {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be a positive integer (>= 1), got {value}")
    return int(value)


def check_positive_float(value, name: str, allow_zero: bool = False) -> float:
    """Return ``value`` as a float, or raise unless it is finite and > 0 (or >= 0)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r} of type {type(value).__name__}")
    value = float(value)
    bound = ">= 0" if allow_zero else "> 0"
    if not np.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be a finite number {bound}, got {value}")
    return value


def check_float_array(x, name: str, ndim=None, last_dim=None, finite: bool = True) -> np.ndarray:
    """Return ``x`` unchanged after checking its type, dtype, rank, width and values.

    Parameters
    ----------
    x : ndarray
        The array to check. Lists are rejected rather than converted, because
        a silent conversion would hide a dtype the caller did not intend.
    name : str
        The argument name used in error messages.
    ndim : int or tuple of int, optional
        Allowed numbers of dimensions.
    last_dim : int, optional
        Required size of the last axis (for example ``d_model``).
    finite : bool
        Reject NaN and infinite entries.
    """
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(x).__name__}")
    if x.dtype.kind != "f":
        raise TypeError(f"{name} must have a floating-point dtype, got {x.dtype}; convert with {name}.astype(np.float64)")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if x.ndim not in allowed:
            expected = " or ".join(str(a) for a in allowed)
            raise ValueError(f"{name} must have {expected} dimensions, got shape {x.shape}")
    if last_dim is not None and (x.ndim == 0 or x.shape[-1] != last_dim):
        raise ValueError(f"{name} must have last dimension {last_dim}, got shape {x.shape}")
    if finite and not np.all(np.isfinite(x)):
        bad = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
        raise ValueError(f"{name} contains {bad} NaN or infinite entries; all entries must be finite")
    return x


def check_choice(value, name: str, allowed) -> str:
    """Return ``value`` if it is one of ``allowed``, else raise naming the options."""
    if value not in allowed:
        options = ", ".join(repr(a) for a in allowed)
        raise ValueError(f"{name} must be one of {options}, got {value!r}")
    return value
