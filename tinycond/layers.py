r"""Linear, two-layer MLP, layer normalisation and embedding as forward/backward pairs.

``linear_forward`` and ``mlp_forward`` accept either one weight matrix or a
stack of E weight matrices, one per expert. With a stack, ``x`` of shape
``(N, d_in)`` is shared by every expert (the dense mixture) and ``x`` of
shape ``(E, n, d_in)`` gives each expert its own rows; NumPy's batched
``matmul`` runs all experts without a Python loop.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from tinycond.functional import get_activation


def unbroadcast(grad, shape):
    """Sum ``grad`` over the axes that broadcasting added or stretched, to get ``shape``."""
    while grad.ndim > len(shape):
        grad = grad.sum(axis=0)
    for axis, size in enumerate(shape):
        if size == 1 and grad.shape[axis] != 1:
            grad = grad.sum(axis=axis, keepdims=True)
    return grad


# Linear map


class LinearCache(NamedTuple):
    x: np.ndarray
    W: np.ndarray


def linear_forward(x, W, b):
    r"""Compute :math:`y = x W + b`.

    Parameters
    ----------
    x : ndarray of shape (..., d_in)
        With a stacked ``W``: (E, n, d_in), one block of rows per expert, or
        (N, d_in), the same rows shared by every expert.
    W : ndarray of shape (d_in, d_out), or (E, d_in, d_out) for E experts
    b : ndarray of shape (d_out,), or (E, d_out)

    Returns
    -------
    y : ndarray of shape (..., d_out), or (E, n, d_out) with a stacked ``W``
    cache : LinearCache
    """
    if W.ndim == 3:
        return x @ W + b[:, None, :], LinearCache(x, W)  # (E, n, d_out)
    return x @ W + b, LinearCache(x, W)


def linear_backward(dy, cache: LinearCache):
    r"""Return the gradients of :math:`y = x W + b` with respect to ``x``, ``W`` and ``b``.

    1. :math:`dx = dy\,W^\top`, shape of ``x``.
    2. :math:`dW = x^\top dy`, summed over every row: flatten the leading axes
       of ``x`` and ``dy`` to ``(M, d_in)`` and ``(M, d_out)`` first.
    3. :math:`db = \sum dy` over every axis but the last.
    4. With a stack of E weights, ``W`` of shape (E, d_in, d_out), do the same
       per expert with batched ``@``, and sum ``db`` over the rows axis only,
       giving (E, d_out). If ``x`` of shape (N, d_in) is shared by all
       experts, ``dx`` sums the E contributions (:func:`unbroadcast`).

    Hint: each gradient has the shape of what it is the gradient of; a wrong
    transpose shows up as a shape mismatch.

    Parameters
    ----------
    dy : ndarray of shape (..., d_out), or (E, n, d_out) with a stacked ``W``
    cache : LinearCache

    Returns
    -------
    dx : ndarray, shape of ``x``
    dW : ndarray, shape of ``W``
    db : ndarray, shape of ``b``
    """
    x, W = cache
    ### BEGIN SOLUTION ex1_2
    if W.ndim == 3:
        dx = unbroadcast(dy @ W.transpose(0, 2, 1), x.shape)
        dW = np.swapaxes(x, -1, -2) @ dy  # (E, d_in, d_out), broadcast over a shared x
        db = dy.sum(axis=1)  # (E, d_out)
        return dx, dW, db
    d_in, d_out = W.shape
    dx = dy @ W.T
    x2 = x.reshape(-1, d_in)
    dy2 = dy.reshape(-1, d_out)
    return dx, x2.T @ dy2, dy2.sum(axis=0)
    ### END SOLUTION


# Two-layer MLP: the expert


class MlpCache(NamedTuple):
    first: LinearCache
    activation: object
    second: LinearCache
    name: str


def mlp_forward(x, W1, b1, W2, b2, *, activation="relu"):
    r"""Compute the two-layer perceptron :math:`y = f(x W_1 + b_1) W_2 + b_2`.

    Parameters
    ----------
    x : ndarray of shape (..., d_in), or (E, n, d_in)
    W1 : ndarray of shape (d_in, d_hidden), or (E, d_in, d_hidden)
    b1 : ndarray of shape (d_hidden,), or (E, d_hidden)
    W2 : ndarray of shape (d_hidden, d_out), or (E, d_hidden, d_out)
    b2 : ndarray of shape (d_out,), or (E, d_out)
    activation : {"relu", "gelu", "sigmoid"}

    Returns
    -------
    y : ndarray of shape (..., d_out), or (E, n, d_out) for stacked weights
    cache : MlpCache
    """
    act_forward, _ = get_activation(activation)
    a, first = linear_forward(x, W1, b1)
    h, act_cache = act_forward(a)
    y, second = linear_forward(h, W2, b2)
    return y, MlpCache(first, act_cache, second, activation)


def mlp_backward(dy, cache: MlpCache):
    """Return the gradients of the two-layer perceptron, the forward steps in reverse.

    1. Back through the second linear layer: ``dh``, ``dW2``, ``db2``.
    2. Back through the activation: ``da`` from ``dh``.
    3. Back through the first linear layer: ``dx``, ``dW1``, ``db1``.

    Hint: each step is a backward you already wrote; ``cache`` contains one cache
    per forward step and ``act_backward`` is the activation's backward.

    Parameters
    ----------
    dy : ndarray of shape (..., d_out), or (E, n, d_out)
    cache : MlpCache

    Returns
    -------
    dx : ndarray, shape of ``x``
    dW1, db1, dW2, db2 : ndarray, shapes of the parameters
    """
    _, act_backward = get_activation(cache.name)
    ### BEGIN SOLUTION ex1_6
    dh, dW2, db2 = linear_backward(dy, cache.second)
    da = act_backward(dh, cache.activation)
    dx, dW1, db1 = linear_backward(da, cache.first)
    return dx, dW1, db1, dW2, db2
    ### END SOLUTION


# Layer normalisation


class LayerNormCache(NamedTuple):
    x_hat: np.ndarray
    inv_std: np.ndarray
    gamma: np.ndarray


def layer_norm_forward(x, gamma, beta, *, eps=1e-5):
    r"""Normalise each row of ``x`` over its last axis, then scale and shift.

    Parameters
    ----------
    x : ndarray of shape (..., d)
    gamma, beta : ndarray of shape (d,)
    eps : float
        Added to the variance before the square root.

    Notes
    -----
    .. math:: \hat x = (x - \mu) / \sqrt{\sigma^2 + \epsilon}, \qquad y = \gamma \hat x + \beta

    with :math:`\mu` and the population variance :math:`\sigma^2` over the last axis.

    References
    ----------
    Ba, Kiros and Hinton (2016). Layer Normalization.
    """
    mu = x.mean(axis=-1, keepdims=True)
    var = x.var(axis=-1, keepdims=True)
    inv_std = 1.0 / np.sqrt(var + eps)
    x_hat = (x - mu) * inv_std
    return gamma * x_hat + beta, LayerNormCache(x_hat, inv_std, gamma)


def layer_norm_backward(dy, cache: LayerNormCache):
    r"""Return the gradients of layer normalisation with respect to ``x``, ``gamma`` and ``beta``.

    1. ``dgamma``: sum of ``dy * x_hat`` over every row, shape (d,).
    2. ``dbeta``: sum of ``dy`` over every row, shape (d,).
    3. ``g = dy * gamma``, the gradient with respect to ``x_hat``.
    4. ``dx`` from ``g`` with the formula below, shape of ``x``.

    Hint: the mean and the variance depend on every entry of the row, which
    is where the two subtracted means come from.

    Parameters
    ----------
    dy : ndarray of shape (..., d)
    cache : LayerNormCache

    Returns
    -------
    dx : ndarray of shape (..., d)
    dgamma : ndarray of shape (d,)
    dbeta : ndarray of shape (d,)

    Notes
    -----
    With :math:`g = dy \cdot \gamma` and d features,
    :math:`dx = \mathrm{inv\_std}\,\bigl(g - \overline{g} - \hat x\, \overline{g \hat x}\bigr)`.
    The bars are means over the last axis, and ``inv_std`` is
    :math:`1 / \sqrt{\sigma^2 + \epsilon}`, as the cache stores it.
    """
    x_hat, inv_std, gamma = cache
    d = x_hat.shape[-1]
    ### BEGIN SOLUTION ex1_5
    dgamma = (dy * x_hat).reshape(-1, d).sum(axis=0)
    dbeta = dy.reshape(-1, d).sum(axis=0)
    g = dy * gamma
    dx = inv_std * (g - g.mean(axis=-1, keepdims=True) - x_hat * (g * x_hat).mean(axis=-1, keepdims=True))
    return dx, dgamma, dbeta
    ### END SOLUTION


# Embedding lookup


class EmbeddingCache(NamedTuple):
    ids: np.ndarray
    n_rows: int


def embedding_forward(ids, W):
    """Look up rows of ``W``: ``ids`` of shape (...) gives ``W[ids]`` of shape (..., d)."""
    return W[ids], EmbeddingCache(ids, W.shape[0])


def embedding_backward(dy, cache: EmbeddingCache):
    """Return the gradient of the embedding table ``W``.

    Each id's row receives the sum of the upstream gradients of every
    position that looked it up.

    1. Start from zeros of shape ``(n_rows, d)``.
    2. Flatten ``ids`` to (M,) and ``dy`` to (M, d).
    3. Add row m of ``dy`` into row ``ids[m]``, for every m at once.

    Hint: ``dW[ids] += dy`` keeps only the last of repeated ids; ``np.add.at``
    accumulates them all.

    Parameters
    ----------
    dy : ndarray of shape (..., d)
    cache : EmbeddingCache

    Returns
    -------
    dW : ndarray of shape (n_rows, d)
    """
    d = dy.shape[-1]
    ### BEGIN SOLUTION ex1_6
    dW = np.zeros((cache.n_rows, d), dtype=dy.dtype)
    np.add.at(dW, cache.ids.reshape(-1), dy.reshape(-1, d))
    return dW
    ### END SOLUTION
