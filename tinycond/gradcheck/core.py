r"""Finite-difference gradient checking.

Every hand-written backward pass in tinycond is compared against a numerical
derivative of the loss. The checker follows one contract:

* **Stencil.** The five-point central difference

  .. math:: f'(x) \approx \frac{-f(x+2h) + 8 f(x+h) - 8 f(x-h) + f(x-2h)}{12 h}

  has truncation error :math:`O(h^4)`, so with the default step
  ``h = 1e-4`` truncation stays far below the 1e-7 tolerance for smooth
  functions. ``stencil=3`` selects the plain central difference
  :math:`(f(x+h) - f(x-h)) / 2h` with error :math:`O(h^2)`.
* **Relative error** ``|a - n| / max(|a| + |n|, floor)``. The floor is the
  round-off level of the finite difference divided by the tolerance, where the
  round-off level is ``16 * eps * max|f| / h`` (``eps`` is float64 machine
  epsilon and ``max|f|`` the largest loss value seen on the stencil). An
  absolute difference below that round-off level therefore always passes, and
  any larger difference is judged relative to the gradient's size. Without
  the floor, a gradient that is exactly zero fails on round-off noise alone.
* **Coverage.** Every entry of every tensor is checked, or, for tensors larger
  than ``max_entries``, a random sample of entries plus one random-direction
  check of the whole tensor.
* **Kink guard.** If a ``choices`` callable is given, the discrete choices
  (selected experts, tree paths, halting steps, ReLU signs) are recomputed at
  every stencil point. An entry whose perturbation flips a choice is skipped
  and reported, and a tensor with more than half its entries skipped fails,
  because such a check proves nothing.
* **float64 only.** float32 and float16 tensors are rejected: their round-off
  (about 1e-7 and 1e-3) is as large as the tolerance itself.

A failure raises :class:`GradientCheckError` naming the function, the
tensor, the index, the analytic and numeric values and the relative error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np

from tinycond._checks import as_generator

EPS = np.finfo(np.float64).eps
DEFAULT_STEP = 1e-4
DEFAULT_TOLERANCE = 1e-7
# Safety factor on the round-off estimate: a loss summed over many terms
# carries more than one ulp of error.
ROUNDOFF_FACTOR = 16.0

_STENCILS = {
    3: ((1.0, -1.0), (1.0, -1.0), 2.0),
    5: ((2.0, 1.0, -1.0, -2.0), (-1.0, 8.0, -8.0, 1.0), 12.0),
}


class GradientCheckError(AssertionError):
    """Raised when an analytic gradient disagrees with the finite difference."""


@dataclass
class TensorResult:
    """Outcome of checking one tensor.

    Attributes
    ----------
    name : str
        Tensor name, for example ``"x"`` or ``"experts.W1"``.
    max_rel_error : float
        Largest relative error over the checked entries (0.0 if none).
    worst_index : tuple of int or None
        Index of the entry with the largest relative error.
    n_checked : int
        Entries compared (skipped kinks not counted).
    skipped : list of tuple of int
        Entries whose perturbation flipped a discrete choice.
    direction_rel_error : float or None
        Relative error of the random-direction check, for sampled tensors.
    failures : list of str
        One line per entry that failed.
    n_failed : int
        Entries whose relative error is above the tolerance.
    n_negated : int
        Failed entries whose analytic value is the negative of the numeric one.
    """

    name: str
    max_rel_error: float = 0.0
    worst_index: tuple | None = None
    n_checked: int = 0
    skipped: list = field(default_factory=list)
    direction_rel_error: float | None = None
    failures: list = field(default_factory=list)
    n_failed: int = 0
    n_negated: int = 0


@dataclass
class GradcheckReport:
    """All tensors of one check; ``str(report)`` prints a table."""

    function: str
    tensors: list

    @property
    def max_rel_error(self) -> float:
        """Largest relative error over all tensors."""
        errors = [t.max_rel_error for t in self.tensors]
        errors += [t.direction_rel_error for t in self.tensors if t.direction_rel_error is not None]
        return max(errors, default=0.0)

    def __getitem__(self, name: str) -> TensorResult:
        for tensor in self.tensors:
            if tensor.name == name:
                return tensor
        raise KeyError(f"no tensor named {name!r} in this report; tensors: {[t.name for t in self.tensors]}")

    def __str__(self) -> str:
        header = f"{'tensor':<24}{'checked':>8}{'skipped':>8}{'max rel error':>15}{'direction':>11}  result"
        lines = [f"gradient check of {self.function}", header]
        for t in self.tensors:
            direction = "-" if t.direction_rel_error is None else f"{t.direction_rel_error:.2e}"
            verdict = "FAIL" if t.failures else "ok"
            lines.append(f"{t.name:<24}{t.n_checked:>8}{len(t.skipped):>8}{t.max_rel_error:>15.2e}{direction:>11}  {verdict}")
        return "\n".join(lines)


def relative_error(analytic, numeric, floor: float = 0.0):
    """Return ``|a - n| / max(|a| + |n|, floor)`` elementwise.

    With ``floor = 0`` and both values exactly zero the result is 0.
    """
    analytic = np.asarray(analytic, dtype=np.float64)
    numeric = np.asarray(numeric, dtype=np.float64)
    denominator = np.maximum(np.abs(analytic) + np.abs(numeric), floor)
    difference = np.abs(analytic - numeric)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(difference == 0, 0.0, difference / denominator)


def numerical_gradient(f: Callable[[np.ndarray], float], x: np.ndarray, h: float = 1e-6) -> np.ndarray:
    r"""Return the three-point central-difference gradient of a scalar ``f`` at ``x``.

    A plain reference implementation for lesson 1; the checker uses
    :func:`check_gradients`.

    1. Start from ``grad`` of zeros, the shape of ``x``.
    2. For every index ``i`` of ``x``: set ``x[i]`` to ``x[i] + h`` and
       evaluate ``f``, then to ``x[i] - h`` and evaluate again, then put the
       original value back.
    3. ``grad[i] = (f_plus - f_minus) / (2 h)``.

    Hint: ``np.ndindex(x.shape)`` walks every index of an array of any rank.

    Parameters
    ----------
    f : callable
        Takes an array shaped like ``x`` and returns a float.
    x : array_like
        The point; it is copied to float64, so the caller's array never changes.
    h : float
        Finite-difference step.

    Returns
    -------
    grad : ndarray of float64, shape of ``x``

    Notes
    -----
    .. math:: \frac{\partial f}{\partial x_i} \approx \frac{f(x + h e_i) - f(x - h e_i)}{2h}

    with truncation error :math:`O(h^2)`.
    """
    x = np.array(x, dtype=np.float64)
    ### BEGIN SOLUTION ex1_1
    grad = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        original = x[index]
        x[index] = original + h
        f_plus = f(x)
        x[index] = original - h
        f_minus = f(x)
        x[index] = original
        grad[index] = (f_plus - f_minus) / (2 * h)
    return grad
    ### END SOLUTION


def _validate_tensor(name: str, array) -> None:
    if not isinstance(array, np.ndarray):
        raise TypeError(f"tensor {name!r} must be a numpy.ndarray, got {type(array).__name__}")
    if array.dtype in (np.float32, np.float16):
        raise TypeError(
            f"tensor {name!r} has dtype {array.dtype}; gradient checks need float64 because "
            f"{array.dtype} round-off is as large as the 1e-7 tolerance: use .astype(np.float64)"
        )
    if array.dtype != np.float64:
        raise TypeError(f"tensor {name!r} must have dtype float64, got {array.dtype}")
    if not np.all(np.isfinite(array)):
        bad = int(array.size - np.count_nonzero(np.isfinite(array)))
        raise ValueError(f"tensor {name!r} contains {bad} NaN or infinite entries; the checker needs finite values")


def _same_choices(a, b) -> bool:
    if isinstance(a, Mapping):
        return a.keys() == b.keys() and all(_same_choices(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same_choices(x, y) for x, y in zip(a, b))
    return np.array_equal(np.asarray(a), np.asarray(b))


def _snapshot(choices):
    """Copy choices so later in-place changes by the model cannot alias them."""
    if isinstance(choices, Mapping):
        return {k: _snapshot(v) for k, v in choices.items()}
    if isinstance(choices, (list, tuple)):
        return [_snapshot(v) for v in choices]
    return np.array(choices, copy=True)


class _Stencil:
    """Evaluate the loss along one perturbation direction of one tensor."""

    def __init__(self, loss_fn, choices, baseline, h, stencil):
        self.loss_fn = loss_fn
        self.choices = choices
        self.baseline = baseline
        self.h = h
        self.offsets, self.weights, self.denominator = _STENCILS[stencil]

    def derivative(self, array, index, direction=None):
        """Return (numeric derivative, round-off level, flipped) for one entry or direction."""
        saved = array.copy() if direction is not None else array[index]
        values = []
        flipped = False
        try:
            for offset in self.offsets:
                if direction is None:
                    array[index] = saved + offset * self.h
                else:
                    array[...] = saved + offset * self.h * direction
                value = float(self.loss_fn())
                if not np.isfinite(value):
                    raise ValueError(f"loss is not finite ({value}) at a perturbed point; the function overflows near its input")
                values.append(value)
                if self.choices is not None and not _same_choices(self.choices(), self.baseline):
                    flipped = True
        finally:
            if direction is None:
                array[index] = saved
            else:
                array[...] = saved
        numeric = sum(w * v for w, v in zip(self.weights, values)) / (self.denominator * self.h)
        roundoff = ROUNDOFF_FACTOR * EPS * max(abs(v) for v in values) / self.h
        return numeric, roundoff, flipped


def check_gradients(
    loss_fn: Callable[[], float],
    tensors: Mapping[str, np.ndarray],
    grads: Mapping[str, np.ndarray],
    *,
    choices: Callable[[], object] | None = None,
    h: float = DEFAULT_STEP,
    tol: float = DEFAULT_TOLERANCE,
    stencil: int = 5,
    max_entries: int = 200,
    rng=0,
    name: str = "function",
    raise_on_failure: bool = True,
) -> GradcheckReport:
    """Compare analytic gradients with finite differences of ``loss_fn``.

    Parameters
    ----------
    loss_fn : callable
        Takes no arguments and returns the scalar loss computed from the
        current contents of the arrays in ``tensors``. The checker perturbs
        those arrays in place and restores them afterwards.
    tensors : mapping of str to ndarray
        The float64 arrays to check, by name.
    grads : mapping of str to ndarray
        The analytic gradient of the loss for each name in ``tensors``, same shape.
    choices : callable, optional
        Takes no arguments and returns the discrete choices (an array, or a
        list or dict of arrays) of the most recent ``loss_fn`` call. Entries
        whose perturbation changes them are skipped as kinks.
    h : float
        Finite-difference step.
    tol : float
        Largest relative error that passes.
    stencil : {5, 3}
        Number of points of the central difference.
    max_entries : int
        Tensors with more entries get a random sample of this many entries
        plus one random-direction check.
    rng : Generator or int
        Chooses the sampled entries and the random direction.
    name : str
        Function name used in the report.
    raise_on_failure : bool
        Raise :class:`GradientCheckError` on failure (default); otherwise
        return the report with ``failures`` filled in.

    Returns
    -------
    GradcheckReport
    """
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable, got {type(loss_fn).__name__}")
    if stencil not in _STENCILS:
        raise ValueError(f"stencil must be 3 or 5, got {stencil!r}")
    if not (isinstance(h, float) and 0 < h < 1):
        raise ValueError(f"h must be a float in (0, 1), got {h!r}")
    if not (isinstance(tol, float) and tol > 0):
        raise ValueError(f"tol must be a positive float, got {tol!r}")
    if not isinstance(max_entries, int) or max_entries < 1:
        raise ValueError(f"max_entries must be a positive integer, got {max_entries!r}")
    if set(tensors) != set(grads):
        raise ValueError(f"tensors and grads must have the same names, got {sorted(tensors)} and {sorted(grads)}")
    for tensor_name, array in tensors.items():
        _validate_tensor(tensor_name, array)
        grad = grads[tensor_name]
        if not isinstance(grad, np.ndarray) or grad.shape != array.shape:
            shape = getattr(grad, "shape", type(grad).__name__)
            raise ValueError(f"gradient for {tensor_name!r} must have shape {array.shape}, got {shape}")
        _validate_tensor(f"gradient of {tensor_name}", grad)
    rng = as_generator(rng)

    base = float(loss_fn())
    if not np.isfinite(base):
        raise ValueError(f"loss_fn returned {base} at the unperturbed point; the loss must be finite")
    baseline = _snapshot(choices()) if choices is not None else None
    evaluator = _Stencil(loss_fn, choices, baseline, h, stencil)

    results = []
    for tensor_name, array in tensors.items():
        results.append(_check_tensor(tensor_name, array, grads[tensor_name], evaluator, tol, max_entries, rng))

    report = GradcheckReport(function=name, tensors=results)
    if any(t.failures for t in results) and raise_on_failure:
        __tracebackhide__ = True  # pytest shows the message, not the checker's own frames
        raise GradientCheckError(_failure_message(name, tol, results))
    return report


def _failure_message(name, tol, results, per_tensor: int = 3) -> str:
    """Return a summary line per failing tensor, hints, then a few failing entries of each."""
    failing = [t for t in results if t.failures]
    lines = [f"gradient check of {name} failed (tolerance {tol:.0e}):"]
    for t in failing:
        if t.n_failed:
            lines.append(f"  {t.name}: {t.n_failed} of {t.n_checked} entries fail, max relative error {t.max_rel_error:.2e}")
    negated = sum(t.n_negated for t in failing)
    failed = sum(t.n_failed for t in failing)
    if failed and negated >= failed / 2:
        lines.append("  hint: the analytic gradient is the negative of the numeric one in most failing entries; check a sign")
    for t in failing:
        lines.extend(t.failures[:per_tensor])
        if len(t.failures) > per_tensor:
            lines.append(f"  ... and {len(t.failures) - per_tensor} more in {t.name}")
    passing = [t.name for t in results if not t.failures]
    if passing:
        lines.append(f"  passed: {', '.join(passing)}")
    return "\n".join(lines)


def _check_tensor(name, array, grad, evaluator, tol, max_entries, rng) -> TensorResult:
    result = TensorResult(name=name)
    if array.size <= max_entries:
        indices = list(np.ndindex(array.shape))
    else:
        flat = rng.choice(array.size, size=max_entries, replace=False)
        indices = [np.unravel_index(i, array.shape) for i in np.sort(flat)]

    for index in indices:
        index = tuple(int(i) for i in index)
        numeric, roundoff, flipped = evaluator.derivative(array, index)
        if flipped:
            result.skipped.append(index)
            continue
        analytic = float(grad[index])
        error = float(relative_error(analytic, numeric, roundoff / tol))
        result.n_checked += 1
        if error > result.max_rel_error or result.worst_index is None:
            result.max_rel_error, result.worst_index = max(error, result.max_rel_error), index
        if error > tol:
            result.n_failed += 1
            if numeric != 0 and float(relative_error(analytic, -numeric, roundoff / tol)) <= 1e-3:
                result.n_negated += 1
            result.failures.append(
                f"  {name}{list(index)}: analytic {analytic:.10e}, numeric {numeric:.10e}, relative error {error:.2e}"
            )

    if indices and len(result.skipped) > len(indices) / 2:
        result.failures.append(
            f"  {name}: {len(result.skipped)} of {len(indices)} entries flipped a discrete choice under the "
            f"perturbation, so the check proves nothing; move inputs away from the kinks or reduce h"
        )

    if array.size > max_entries:
        _check_direction(result, name, array, grad, evaluator, tol, rng)
    return result


def _check_direction(result, name, array, grad, evaluator, tol, rng, attempts: int = 5) -> None:
    """Compare the directional derivative along a random unit vector."""
    for _ in range(attempts):
        direction = rng.standard_normal(array.shape)
        direction /= np.linalg.norm(direction)
        numeric, roundoff, flipped = evaluator.derivative(array, None, direction)
        if flipped:
            continue
        analytic = float(np.sum(grad * direction))
        error = float(relative_error(analytic, numeric, roundoff / tol))
        result.direction_rel_error = error
        if error > tol:
            result.failures.append(
                f"  {name} along a random direction: analytic {analytic:.10e}, numeric {numeric:.10e}, "
                f"relative error {error:.2e}"
            )
        return
    result.failures.append(f"  {name}: every random direction flipped a discrete choice; the direction check proves nothing")

