r"""Multi-head causal self-attention, forward and backward by hand.

Two pairs build the layer. :func:`causal_attention_forward` is the core:
scaled dot-product attention in which position t may only look at positions
0..t. :func:`causal_self_attention_forward` wraps it with the query, key and
value projections, the split into heads and the output projection.
:class:`CausalSelfAttention` is the module that stores the weights.

Shapes use B sequences, T positions, H heads and ``d_head = d_model / H``.

References
----------
Vaswani et al. (2017). Attention Is All You Need.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from tinycond import functional as F
from tinycond import layers as L
from tinycond._checks import as_generator, check_float_array, check_positive_float, check_positive_int
from tinycond.nn import Module


def causal_mask(T: int) -> np.ndarray:
    """Return the (T, T) boolean mask that is True where query t may attend to key s (s <= t)."""
    return np.tril(np.ones((T, T), dtype=bool))


class CausalAttentionCache(NamedTuple):
    q: np.ndarray  # (..., T, d_head)
    k: np.ndarray  # (..., T, d_head)
    v: np.ndarray  # (..., T, d_head)
    weights: np.ndarray  # (..., T, T) attention probabilities, zero above the diagonal
    scale: float


def causal_attention_forward(q, k, v):
    r"""Compute scaled dot-product attention under the causal mask.

    Parameters
    ----------
    q, k, v : ndarray of shape (..., T, d_head)
        Queries, keys and values, for example (B, H, T, d_head).

    Returns
    -------
    out : ndarray of shape (..., T, d_head)
    cache : CausalAttentionCache

    Notes
    -----
    .. math::
        S_{ts} = \frac{q_t \cdot k_s}{\sqrt{d_{head}}}, \qquad
        A_{ts} = \frac{[s \le t]\, e^{S_{ts}}}{\sum_{s' \le t} e^{S_{ts'}}}, \qquad
        o_t = \sum_{s} A_{ts}\, v_s

    Masked scores are set to :math:`-\infty` before the softmax, so their
    weights are exactly 0. The diagonal is never masked, so every row has a
    finite maximum and the shifted softmax cannot produce NaN.
    """
    T, d_head = q.shape[-2:]
    scale = 1.0 / float(np.sqrt(d_head))  # a Python float, so float32 inputs stay float32
    scores = (q @ np.swapaxes(k, -1, -2)) * scale  # (..., T, T)
    scores = np.where(causal_mask(T), scores, -np.inf)
    weights = F.softmax(scores)  # (..., T, T)
    out = weights @ v  # (..., T, d_head)
    return out, CausalAttentionCache(q, k, v, weights, scale)


def causal_attention_backward(dy, cache: CausalAttentionCache):
    r"""Return ``(dq, dk, dv)`` for :func:`causal_attention_forward`.

    Steps, with ``dy`` of shape (..., T, d_head):

    1. ``out = A v``, so ``dv = A^T dy`` and ``dA = dy v^T`` (..., T, T).
    2. Softmax over each row: ``dS = A * (dA - sum_s(dA * A))``. Masked
       entries have ``A = 0``, so they get exactly zero gradient.
    3. ``S = q k^T * scale``, so ``dq = dS k * scale`` and ``dk = dS^T q * scale``.

    Hint: every step is a batched matmul over the leading axes; use
    ``np.swapaxes(a, -1, -2)`` for the transposes.

    Returns
    -------
    dq, dk, dv : ndarray of shape (..., T, d_head)
    """
    ### BEGIN SOLUTION ex6_1
    q, k, v, weights, scale = cache
    dv = np.swapaxes(weights, -1, -2) @ dy  # (..., T, d_head)
    dweights = dy @ np.swapaxes(v, -1, -2)  # (..., T, T)

    dscores = weights * (dweights - np.sum(dweights * weights, axis=-1, keepdims=True))
    dscores = dscores * scale

    dq = dscores @ k  # (..., T, d_head)
    dk = np.swapaxes(dscores, -1, -2) @ q  # (..., T, d_head)
    return dq, dk, dv
    ### END SOLUTION


class SelfAttentionCache(NamedTuple):
    qkv: L.LinearCache
    attention: CausalAttentionCache
    out: L.LinearCache
    n_heads: int


def causal_self_attention_forward(x, W_qkv, b_qkv, W_out, b_out, *, n_heads):
    r"""Run multi-head causal self-attention on a batch of sequences.

    Parameters
    ----------
    x : ndarray of shape (B, T, d_model)
    W_qkv : ndarray of shape (d_model, 3 * d_model)
        Query, key and value projections side by side.
    b_qkv : ndarray of shape (3 * d_model,)
    W_out : ndarray of shape (d_model, d_model)
    b_out : ndarray of shape (d_model,)
    n_heads : int
        Number of heads H; must divide ``d_model``.

    Returns
    -------
    y : ndarray of shape (B, T, d_model)
    cache : SelfAttentionCache

    Notes
    -----
    .. math::
        [Q\, K\, V] = x W_{qkv} + b_{qkv}, \qquad
        y = \mathrm{concat}_h\bigl(\mathrm{attn}(Q_h, K_h, V_h)\bigr) W_{out} + b_{out}

    where head h takes columns ``h * d_head`` to ``(h + 1) * d_head`` of each
    of Q, K and V.
    """
    B, T, d_model = x.shape
    d_head = d_model // n_heads
    qkv, qkv_cache = L.linear_forward(x, W_qkv, b_qkv)  # (B, T, 3 d_model)
    qkv = qkv.reshape(B, T, 3, n_heads, d_head).transpose(2, 0, 3, 1, 4)  # (3, B, H, T, d_head)
    heads, attention_cache = causal_attention_forward(qkv[0], qkv[1], qkv[2])  # (B, H, T, d_head)
    merged = heads.transpose(0, 2, 1, 3).reshape(B, T, d_model)  # (B, T, d_model)
    y, out_cache = L.linear_forward(merged, W_out, b_out)
    return y, SelfAttentionCache(qkv_cache, attention_cache, out_cache, n_heads)


def causal_self_attention_backward(dy, cache: SelfAttentionCache):
    r"""Return ``(dx, dW_qkv, db_qkv, dW_out, db_out)`` for :func:`causal_self_attention_forward`.

    Steps, with ``dy`` of shape (B, T, d_model):

    1. Back through the output projection (``tinycond.layers.linear_backward``)
       to the merged heads (B, T, d_model).
    2. Undo the merge: reshape to (B, T, H, d_head) and move the head axis
       in front, giving (B, H, T, d_head).
    3. Back through the core attention to ``dq``, ``dk``, ``dv``.
    4. Undo the split: stack them into (3, B, H, T, d_head), then transpose
       and reshape to (B, T, 3 d_model), the inverse of the forward steps.
    5. Back through the query, key and value projection.

    Hint: the forward reshape was followed by ``transpose(2, 0, 3, 1, 4)``;
    its inverse permutation is ``transpose(1, 3, 0, 2, 4)``.
    """
    ### BEGIN SOLUTION ex6_2
    qkv_cache, attention_cache, out_cache, n_heads = cache
    B, T, d_model = dy.shape
    d_head = d_model // n_heads
    dmerged, dW_out, db_out = L.linear_backward(dy, out_cache)
    dheads = dmerged.reshape(B, T, n_heads, d_head).transpose(0, 2, 1, 3)  # (B, H, T, d_head)
    dq, dk, dv = causal_attention_backward(dheads, attention_cache)
    dqkv = np.stack([dq, dk, dv]).transpose(1, 3, 0, 2, 4).reshape(B, T, 3 * d_model)  # (B, T, 3 d_model)
    dx, dW_qkv, db_qkv = L.linear_backward(dqkv, qkv_cache)
    return dx, dW_qkv, db_qkv, dW_out, db_out
    ### END SOLUTION


class CausalSelfAttention(Module):
    """Multi-head causal self-attention layer.

    Parameters
    ----------
    d_model : int
        Width of each position's vector.
    n_heads : int
        Number of heads H; must divide ``d_model``.
    rng : Generator or int
    out_scale : float
        Multiplies the initial output projection; values below 1 keep a deep
        residual stream from growing at initialisation.
    dtype : numpy dtype

    Attributes
    ----------
    weights : ndarray of shape (B, H, T, T)
        Attention probabilities of the last forward pass, for plots.
    """

    def __init__(self, d_model, n_heads, *, rng, out_scale=1.0, dtype=np.float64):
        super().__init__()
        self.d_model = check_positive_int(d_model, "d_model")
        self.n_heads = check_positive_int(n_heads, "n_heads")
        if d_model % n_heads:
            raise ValueError(f"n_heads must divide d_model, got d_model={d_model} and n_heads={n_heads}")
        out_scale = check_positive_float(out_scale, "out_scale")
        rng = as_generator(rng)
        scale = 1.0 / np.sqrt(d_model)
        self.add_parameter("W_qkv", (rng.standard_normal((d_model, 3 * d_model)) * scale).astype(dtype))
        self.add_parameter("b_qkv", np.zeros(3 * d_model, dtype=dtype))
        self.add_parameter("W_out", (rng.standard_normal((d_model, d_model)) * scale * out_scale).astype(dtype))
        self.add_parameter("b_out", np.zeros(d_model, dtype=dtype))
        self.cache = None

    @property
    def weights(self):
        return None if self.cache is None else self.cache.attention.weights

    def forward(self, x):
        check_float_array(x, "x", ndim=3, last_dim=self.d_model)
        p = self.params
        y, self.cache = causal_self_attention_forward(x, p["W_qkv"], p["b_qkv"], p["W_out"], p["b_out"], n_heads=self.n_heads)
        return y

    def backward(self, dy):
        dx, *dparams = causal_self_attention_backward(dy, self.cache)
        for name, grad in zip(("W_qkv", "b_qkv", "W_out", "b_out"), dparams):
            self.grads[name] += grad
        return dx


__all__ = [
    "CausalSelfAttention",
    "causal_attention_backward",
    "causal_attention_forward",
    "causal_mask",
    "causal_self_attention_backward",
    "causal_self_attention_forward",
]
