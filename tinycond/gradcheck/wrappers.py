"""Gradient checks for forward/backward pairs and for modules.

Both wrappers build the loss ``sum(dy * out)`` for a random upstream gradient
``dy`` and hand it to :func:`tinycond.gradcheck.core.check_gradients`.
"""

from __future__ import annotations

import inspect

import numpy as np

from tinycond._checks import as_generator
from tinycond.gradcheck.core import check_gradients


def _random_upstream(out, rng):
    """Draw a random upstream gradient shaped like ``out`` (a tuple for tuple outputs).

    A random ``dy`` rather than ones: an all-ones upstream gradient hides
    transposes and wrong sums. Integer outputs (indices) get ``None``.
    """
    if isinstance(out, tuple):
        return tuple(_random_upstream(o, rng) for o in out)
    out = np.asarray(out)
    if out.dtype.kind != "f":
        return None
    return rng.standard_normal(out.shape)


def _contract(out, dy) -> float:
    """Return sum(dy * out), summed over the float outputs of a tuple."""
    if isinstance(out, tuple):
        return sum(_contract(o, d) for o, d in zip(out, dy) if d is not None)
    return float(np.sum(np.asarray(dy) * np.asarray(out)))


def check_function(forward, backward, *inputs, choices=None, dy=None, rng=0, name=None, forward_kwargs=None, **options):
    """Check a ``name_forward`` / ``name_backward`` pair on the given inputs.

    The loss is ``sum(dy * out)`` for a random ``dy``, so its gradient with
    respect to ``out`` is ``dy``. ``backward(dy, cache)`` must return one
    gradient per floating-point positional input, in argument order (a bare
    array when there is one). Integer positional inputs (indices, targets)
    get no gradient, and keyword arguments in ``forward_kwargs`` are held fixed.

    Parameters
    ----------
    forward, backward : callable
        The pair under test.
    *inputs : ndarray
        Positional inputs of ``forward``; float64 ones are checked.
    choices : callable, optional
        ``choices(out, cache)`` returns the discrete choices of a forward call.
    dy : ndarray or tuple, optional
        Upstream gradient; random normal by default.
    rng : Generator or int
        Seeds ``dy`` and the sampling.
    name : str, optional
        Name in the report; defaults to ``forward.__name__``.
    forward_kwargs : dict, optional
        Fixed keyword arguments of ``forward``.
    **options
        Passed to :func:`check_gradients` (``h``, ``tol``, ``max_entries``, ...).

    Returns
    -------
    GradcheckReport
    """
    rng = as_generator(rng)
    forward_kwargs = dict(forward_kwargs or {})
    __tracebackhide__ = True  # a failure is reported at the caller's line
    if name is None:
        name = f"{getattr(backward, '__name__', 'backward')} against finite differences of {getattr(forward, '__name__', 'forward')}"
    inputs = list(inputs)
    float_positions = [i for i, a in enumerate(inputs) if isinstance(a, np.ndarray) and a.dtype.kind == "f"]

    out, cache = forward(*inputs, **forward_kwargs)
    if dy is None:
        dy = _random_upstream(out, rng)
    analytic = backward(dy, cache)
    if not isinstance(analytic, tuple):
        analytic = (analytic,)
    if len(analytic) != len(float_positions):
        raise ValueError(
            f"{getattr(backward, '__name__', 'backward')} returned {len(analytic)} gradients, "
            f"expected {len(float_positions)} (one per floating-point positional input of {name})"
        )

    tensors = {}
    grads = {}
    arg_names = _argument_names(forward, len(inputs))
    for position, grad in zip(float_positions, analytic):
        tensors[arg_names[position]] = inputs[position]
        grads[arg_names[position]] = np.asarray(grad)

    last = {}

    def loss_fn():
        last["out"], last["cache"] = forward(*inputs, **forward_kwargs)
        return _contract(last["out"], dy)

    choice_fn = None
    if choices is not None:
        def choice_fn():
            return choices(last["out"], last["cache"])

    return check_gradients(loss_fn, tensors, grads, choices=choice_fn, rng=rng, name=name, **options)


def _argument_names(function, count):
    """Return the names of the first ``count`` positional parameters of ``function``."""
    try:
        parameters = [
            p.name for p in inspect.signature(function).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
    except (TypeError, ValueError):
        parameters = []
    names = parameters[:count]
    names += [f"input{i}" for i in range(len(names), count)]
    return names


def check_module(module, *inputs, choices: bool = True, dy=None, rng=0, name=None, forward_kwargs=None, **options):
    """Check a module's ``backward`` for every float input and every parameter.

    The loss is ``sum(dy * module.forward(*inputs)) + module.total_aux_loss()``,
    so auxiliary losses (load balancing, ponder cost, tree penalties) are
    checked together with the main output. When ``choices`` is true the
    module's :meth:`~tinycond.nn.Module.choices` are the kink guard.

    Returns
    -------
    GradcheckReport
        Tensors are named ``x`` (or ``input0``, ``input1``, ... for several
        inputs) and by each parameter's dotted name.
    """
    rng = as_generator(rng)
    forward_kwargs = dict(forward_kwargs or {})
    __tracebackhide__ = True  # a failure is reported at the caller's line
    name = name or type(module).__name__
    float_positions = [i for i, a in enumerate(inputs) if isinstance(a, np.ndarray) and a.dtype.kind == "f"]
    input_names = ["x"] if len(inputs) == 1 else [f"input{i}" for i in range(len(inputs))]

    out = module.forward(*inputs, **forward_kwargs)
    if dy is None:
        dy = _random_upstream(out, rng)
    module.zero_grad()
    dinputs = module.backward(dy)
    if not isinstance(dinputs, tuple):
        dinputs = (dinputs,)

    tensors = {}
    grads = {}
    if float_positions:
        if len(dinputs) != len(float_positions):
            raise ValueError(
                f"{name}.backward returned {len(dinputs)} input gradients, expected {len(float_positions)}"
            )
        for position, grad in zip(float_positions, dinputs):
            tensors[input_names[position]] = inputs[position]
            grads[input_names[position]] = np.asarray(grad)
    for (param_name, param), (_, grad) in zip(module.parameters(), module.gradients()):
        tensors[param_name] = param
        grads[param_name] = grad.copy()

    def loss_fn():
        return _contract(module.forward(*inputs, **forward_kwargs), dy) + float(module.total_aux_loss())

    choice_fn = module.choices if choices else None
    return check_gradients(loss_fn, tensors, grads, choices=choice_fn, rng=rng, name=name, **options)
