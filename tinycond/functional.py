r"""Elementwise activations, softmax and losses as forward/backward pairs.

Each ``name_forward(...)`` returns ``(out, cache)`` and each
``name_backward(dy, cache)`` returns the gradient of the loss with respect to
every floating-point positional input, in argument order (a vector-Jacobian
product: the Jacobian itself is never built). Everything stays finite for
inputs of any finite magnitude, including logits of 1e4.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from tinycond._checks import check_choice

# Rectified linear unit


class ReluCache(NamedTuple):
    positive: np.ndarray  # bool mask of x > 0


def relu_forward(x):
    """Compute ``max(x, 0)`` elementwise. The derivative at 0 is taken as 0."""
    positive = x > 0
    # np.maximum is about 3x faster than np.where on large arrays.
    return np.maximum(x, 0.0), ReluCache(positive)


def relu_backward(dy, cache: ReluCache):
    """Return the gradient of ReLU with respect to its input.

    1. ``cache.positive`` is the mask ``x > 0`` that the forward pass stored.
    2. Pass ``dy`` through where the mask is true and put 0 elsewhere.

    Hint: multiplying by a boolean mask keeps the entries where it is true.

    Parameters
    ----------
    dy : ndarray, same shape as ``x``
    cache : ReluCache

    Returns
    -------
    dx : ndarray, same shape as ``x``
    """
    ### BEGIN SOLUTION ex1_3
    return dy * cache.positive
    ### END SOLUTION


# GELU, tanh approximation

_GELU_C = float(np.sqrt(2.0 / np.pi))  # a Python float, so float32 inputs stay float32


class GeluCache(NamedTuple):
    x: np.ndarray
    tanh_u: np.ndarray


def gelu_forward(x):
    r"""Compute the tanh approximation of GELU.

    Notes
    -----
    .. math:: \mathrm{gelu}(x) = \tfrac12 x \bigl(1 + \tanh u\bigr), \quad
              u = \sqrt{2/\pi}\,(x + 0.044715 x^3)

    References
    ----------
    Hendrycks and Gimpel (2016). Gaussian Error Linear Units (GELUs).
    """
    tanh_u = np.tanh(_GELU_C * (x + 0.044715 * x**3))
    return 0.5 * x * (1.0 + tanh_u), GeluCache(x, tanh_u)


def gelu_backward(dy, cache: GeluCache):
    r"""Return the gradient of the tanh approximation of GELU with respect to ``x``.

    1. Differentiate the inner argument: :math:`du/dx = \sqrt{2/\pi}\,(1 + 3 \cdot 0.044715\, x^2)`.
    2. Apply the product rule to :math:`\tfrac12 x (1 + \tanh u)`, using the
       stored ``tanh_u``.
    3. Multiply by ``dy``.

    Hint: :math:`d\tanh u/du = 1 - \tanh^2 u`, so nothing needs recomputing.

    Parameters
    ----------
    dy : ndarray, same shape as ``x``
    cache : GeluCache

    Returns
    -------
    dx : ndarray, same shape as ``x``
    """
    x, tanh_u = cache
    ### BEGIN SOLUTION ex1_3
    du_dx = _GELU_C * (1.0 + 3 * 0.044715 * x**2)
    dgelu = 0.5 * (1.0 + tanh_u) + 0.5 * x * (1.0 - tanh_u**2) * du_dx
    return dy * dgelu
    ### END SOLUTION


# Logistic sigmoid and softplus


class SigmoidCache(NamedTuple):
    s: np.ndarray


def sigmoid(x):
    r"""Return :math:`\sigma(x) = 1 / (1 + e^{-x})` without overflow.

    ``exp`` is only ever evaluated at :math:`-|x| \le 0`, so neither branch overflows.
    """
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def sigmoid_forward(x):
    """Compute the logistic sigmoid; see :func:`sigmoid`."""
    s = sigmoid(x)
    return s, SigmoidCache(s)


def sigmoid_backward(dy, cache: SigmoidCache):
    r"""Return the gradient of the logistic sigmoid with respect to its input.

    1. ``cache.s`` is the forward output :math:`s = \sigma(x)`.
    2. Multiply ``dy`` by the local derivative :math:`\sigma'(x)`.

    Hint: :math:`\sigma'(x) = \sigma(x)\,(1 - \sigma(x))`, written with ``s`` alone.

    Parameters
    ----------
    dy : ndarray, same shape as ``x``
    cache : SigmoidCache

    Returns
    -------
    dx : ndarray, same shape as ``x``
    """
    ### BEGIN SOLUTION ex1_3
    return dy * cache.s * (1.0 - cache.s)
    ### END SOLUTION


class SoftplusCache(NamedTuple):
    x: np.ndarray


def softplus(x):
    r"""Return :math:`\log(1 + e^x) = \max(x, 0) + \log(1 + e^{-|x|})` without overflow."""
    return np.maximum(x, 0.0) + np.log1p(np.exp(-np.abs(x)))


def softplus_forward(x):
    """Compute softplus; its derivative is the sigmoid."""
    return softplus(x), SoftplusCache(x)


def softplus_backward(dy, cache: SoftplusCache):
    """Return ``dx = dy * sigmoid(x)``."""
    return dy * sigmoid(cache.x)


# Softmax and log-softmax over the last axis


class SoftmaxCache(NamedTuple):
    p: np.ndarray


def softmax(z):
    r"""Return :math:`p_i = e^{z_i - m} / \sum_j e^{z_j - m}` over the last axis, with :math:`m = \max_j z_j`.

    Subtracting the row maximum leaves the result unchanged and keeps every
    exponent at or below 0, so large logits cannot overflow.
    """
    shifted = z - np.max(z, axis=-1, keepdims=True)
    e = np.exp(shifted)
    return e / np.sum(e, axis=-1, keepdims=True)


def logsumexp(z):
    """Return ``log(sum(exp(z)))`` over the last axis, shifted by the row maximum."""
    m = np.max(z, axis=-1, keepdims=True)
    return (m + np.log(np.sum(np.exp(z - m), axis=-1, keepdims=True)))[..., 0]


def softmax_forward(z):
    """Compute the softmax over the last axis; see :func:`softmax`."""
    p = softmax(z)
    return p, SoftmaxCache(p)


def softmax_backward(dp, cache: SoftmaxCache):
    r"""Return the softmax vector-Jacobian product ``dz`` over the last axis.

    1. Compute the row sums :math:`\sum_i dp_i\, p_i`, shape ``(..., 1)``.
    2. Return :math:`dz_j = p_j (dp_j - \sum_i dp_i p_i)`, same shape as ``p``.

    Hint: never build the ``(C, C)`` Jacobian; ``keepdims=True`` lets the row
    sums broadcast against ``p``.

    Parameters
    ----------
    dp : ndarray of shape (..., C)
        Gradient of the loss with respect to the softmax output.
    cache : SoftmaxCache

    Returns
    -------
    dz : ndarray of shape (..., C)

    Notes
    -----
    The Jacobian is :math:`\partial p_i / \partial z_j = p_i (\delta_{ij} - p_j)`,
    so :math:`dz_j = \sum_i dp_i\, p_i (\delta_{ij} - p_j) = p_j (dp_j - \sum_i dp_i p_i)`.
    """
    p = cache.p
    ### BEGIN SOLUTION ex1_4
    return p * (dp - np.sum(dp * p, axis=-1, keepdims=True))
    ### END SOLUTION


class LogSoftmaxCache(NamedTuple):
    p: np.ndarray


def log_softmax_forward(z):
    r"""Compute :math:`\log p = z - \mathrm{logsumexp}(z)` over the last axis."""
    out = z - logsumexp(z)[..., None]
    return out, LogSoftmaxCache(np.exp(out))


def log_softmax_backward(dy, cache: LogSoftmaxCache):
    r"""Return the gradient of log-softmax with respect to the logits ``z``.

    1. Sum ``dy`` over the last axis, keeping it as shape ``(..., 1)``.
    2. Subtract ``p`` times that sum from ``dy``.

    Hint: :math:`\partial \log p_i / \partial z_j = \delta_{ij} - p_j`, and
    ``cache.p`` is :math:`p = \mathrm{softmax}(z)`.

    Parameters
    ----------
    dy : ndarray of shape (..., C)
    cache : LogSoftmaxCache

    Returns
    -------
    dz : ndarray of shape (..., C)
    """
    ### BEGIN SOLUTION ex1_4
    return dy - cache.p * np.sum(dy, axis=-1, keepdims=True)
    ### END SOLUTION


# Losses


class CrossEntropyCache(NamedTuple):
    p: np.ndarray  # (M, C) softmax of the flattened logits
    targets: np.ndarray  # (M,)
    shape: tuple


def cross_entropy_forward(logits, targets):
    r"""Compute the mean cross-entropy of integer targets under softmax(logits).

    Parameters
    ----------
    logits : ndarray of shape (..., C)
    targets : int ndarray of shape (...)
        Class ids in ``[0, C)``.

    Returns
    -------
    loss : float
        :math:`-\frac1M \sum_m \log \mathrm{softmax}(z_m)_{t_m}` over the M rows.
    cache : CrossEntropyCache
    """
    C = logits.shape[-1]
    if targets.shape != logits.shape[:-1]:
        raise ValueError(f"targets must have shape {logits.shape[:-1]} to match logits {logits.shape}, got {targets.shape}")
    if targets.dtype.kind not in "iu":
        raise TypeError(f"targets must be an integer array of class ids, got dtype {targets.dtype}")
    if targets.size and (targets.min() < 0 or targets.max() >= C):
        raise ValueError(f"targets must be class ids in [0, {C}), got values from {targets.min()} to {targets.max()}")
    z = logits.reshape(-1, C)
    t = targets.reshape(-1)
    log_p = z - logsumexp(z)[:, None]
    loss = -np.mean(log_p[np.arange(t.size), t])
    return loss, CrossEntropyCache(np.exp(log_p), t, logits.shape)


def cross_entropy_backward(dloss, cache: CrossEntropyCache):
    r"""Return the gradient of the mean cross-entropy with respect to the logits.

    1. Start from a copy of the softmax ``p``, shape ``(M, C)``; never change
       the cache in place.
    2. Subtract 1 at each row's target class: this is ``p - onehot(t)``.
    3. Scale by ``dloss / M`` for the mean over M rows, and reshape to the
       logits' shape.

    Hint: ``a[np.arange(M), t]`` selects one entry per row without a loop.

    Parameters
    ----------
    dloss : float
        Gradient of the final loss with respect to this loss (1.0 at the top).
    cache : CrossEntropyCache

    Returns
    -------
    dlogits : ndarray of shape (..., C), the shape of ``logits``
    """
    p, t, shape = cache
    ### BEGIN SOLUTION ex1_4
    dz = p.copy()
    dz[np.arange(t.size), t] -= 1.0
    return (dz * (dloss / t.size)).reshape(shape)
    ### END SOLUTION


class MseCache(NamedTuple):
    diff: np.ndarray


def mse_forward(y, target):
    r"""Compute the mean squared error :math:`\frac1M \sum (y - target)^2` over all M entries."""
    diff = y - target
    return np.mean(diff**2), MseCache(diff)


def mse_backward(dloss, cache: MseCache):
    """Return ``(dy, dtarget)``: ``dy = 2 (y - target) / M * dloss`` and its negative."""
    dy = 2.0 * cache.diff / cache.diff.size * dloss
    return dy, -dy


# Activation registry

ACTIVATIONS = {
    "relu": (relu_forward, relu_backward),
    "gelu": (gelu_forward, gelu_backward),
    "sigmoid": (sigmoid_forward, sigmoid_backward),
}


def get_activation(name: str):
    """Return the ``(forward, backward)`` pair for an activation name."""
    check_choice(name, "activation", tuple(ACTIVATIONS))
    return ACTIVATIONS[name]
