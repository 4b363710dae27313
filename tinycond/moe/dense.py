r"""Dense mixture of experts: a softmax gate over E expert MLPs, every expert runs.

This is the baseline that sparse routing improves on: its cost grows
linearly with the number of experts, because every token visits every expert.

References
----------
Jacobs, Jordan, Nowlan and Hinton (1991). Adaptive Mixtures of Local Experts.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from tinycond import functional as F
from tinycond import layers as L
from tinycond._checks import as_generator, check_choice, check_float_array, check_positive_int
from tinycond.nn import Module


class DenseMoECache(NamedTuple):
    x: np.ndarray  # (N, d_model)
    W_gate: np.ndarray  # (d_model, E)
    gates: np.ndarray  # (N, E)
    expert_out: np.ndarray  # (E, N, d_out)
    experts: L.MlpCache


def dense_moe_forward(x, W_gate, W1, b1, W2, b2, *, activation="relu"):
    r"""Run every expert on every token and mix the outputs with softmax gates.

    1. ``gates``: the softmax of the router logits ``x @ W_gate``, shape (N, E).
    2. ``expert_out``: every expert's MLP on every token, shape (E, N, d_out),
       in one call of :func:`tinycond.layers.mlp_forward` with the stacked weights.
    3. ``y``: for each token, the gate-weighted sum of the E expert outputs,
       shape (N, d_out).
    4. Return ``y`` and a :class:`DenseMoECache` of what backward needs.

    Hint: ``np.einsum("ne,eno->no", ...)`` writes step 3 without a loop.

    Parameters
    ----------
    x : ndarray of shape (N, d_model)
    W_gate : ndarray of shape (d_model, E)
        Gate weights; router logits are ``x @ W_gate``.
    W1 : ndarray of shape (E, d_model, d_hidden)
    b1 : ndarray of shape (E, d_hidden)
    W2 : ndarray of shape (E, d_hidden, d_out)
    b2 : ndarray of shape (E, d_out)
    activation : {"relu", "gelu", "sigmoid"}

    Returns
    -------
    y : ndarray of shape (N, d_out)
    cache : DenseMoECache

    Notes
    -----
    .. math:: g(x) = \mathrm{softmax}(x W_g), \qquad y = \sum_{e=1}^{E} g_e(x)\, f_e(x)

    where :math:`f_e` is expert e's two-layer MLP.
    """
    ### BEGIN SOLUTION ex2_1
    gates = F.softmax(x @ W_gate)  # (N, E)
    expert_out, experts = L.mlp_forward(x, W1, b1, W2, b2, activation=activation)  # (E, N, d_out)
    y = np.einsum("ne,eno->no", gates, expert_out)  # (N, d_out)
    return y, DenseMoECache(x, W_gate, gates, expert_out, experts)
    ### END SOLUTION


def dense_moe_backward(dy, cache: DenseMoECache):
    r"""Return the gradients of the dense mixture with respect to ``x`` and every weight.

    1. Back through the mixing step: ``dgates`` of shape (N, E) and
       ``dexpert_out`` of shape (E, N, d_out), from the equations below.
    2. Back through the softmax gate to ``dlogits`` with
       ``F.softmax_backward(dgates, F.SoftmaxCache(gates))``, then through the
       linear gate to ``dW_gate`` and the gate's share of ``dx``.
    3. Back through the experts with :func:`tinycond.layers.mlp_backward`.
    4. ``dx`` is the sum of the gate's and the experts' contributions.

    Hint: ``x`` feeds both the gate and every expert, so it receives a
    gradient from each path.

    Parameters
    ----------
    dy : ndarray of shape (N, d_out)
    cache : DenseMoECache

    Returns
    -------
    dx : ndarray of shape (N, d_model)
    dW_gate : ndarray of shape (d_model, E)
    dW1, db1, dW2, db2 : ndarray, shapes of the expert weights

    Notes
    -----
    The mixing step gives :math:`\partial L / \partial g_e = \langle dy, f_e(x) \rangle`
    and :math:`\partial L / \partial f_e(x) = g_e\, dy`. The gate gradient then
    goes through the softmax vector-Jacobian product and the linear gate, and
    the expert gradient through each MLP. ``x`` receives both contributions.
    """
    x, W_gate, gates, expert_out, experts = cache
    ### BEGIN SOLUTION ex2_2
    dgates = np.einsum("no,eno->ne", dy, expert_out)  # (N, E)
    dexpert_out = gates.T[:, :, None] * dy[None, :, :]  # (E, N, d_out)

    dlogits = F.softmax_backward(dgates, F.SoftmaxCache(gates))
    dW_gate = x.T @ dlogits
    dx_gate = dlogits @ W_gate.T

    dx_experts, dW1, db1, dW2, db2 = L.mlp_backward(dexpert_out, experts)
    return dx_gate + dx_experts, dW_gate, dW1, db1, dW2, db2
    ### END SOLUTION


def init_expert_weights(n_experts, d_model, d_hidden, d_out, rng, activation="relu", dtype=np.float64):
    """Return stacked expert weights ``(W1, b1, W2, b2)`` with He or LeCun scaling."""
    gain = np.sqrt(2.0) if activation == "relu" else 1.0
    W1 = rng.standard_normal((n_experts, d_model, d_hidden)) * gain / np.sqrt(d_model)
    W2 = rng.standard_normal((n_experts, d_hidden, d_out)) / np.sqrt(d_hidden)
    b1 = np.zeros((n_experts, d_hidden))
    b2 = np.zeros((n_experts, d_out))
    return tuple(a.astype(dtype) for a in (W1, b1, W2, b2))


class DenseMoE(Module):
    """Dense mixture of E two-layer MLP experts under a softmax gate.

    Parameters
    ----------
    d_model : int
        Input width.
    d_hidden : int
        Hidden width of each expert.
    n_experts : int
        Number of experts E.
    d_out : int, optional
        Output width; defaults to ``d_model``.
    activation : {"relu", "gelu", "sigmoid"}
    rng : Generator or int

    Attributes
    ----------
    gates : ndarray of shape (N, E)
        Gate values of the last forward pass, for plots.
    """

    def __init__(self, d_model, d_hidden, n_experts, d_out=None, *, activation="relu", rng, gate_scale=1.0, dtype=np.float64):
        super().__init__()
        self.d_model = check_positive_int(d_model, "d_model")
        self.d_hidden = check_positive_int(d_hidden, "d_hidden")
        self.n_experts = check_positive_int(n_experts, "n_experts")
        self.d_out = d_model if d_out is None else check_positive_int(d_out, "d_out")
        self.activation = check_choice(activation, "activation", tuple(F.ACTIVATIONS))
        rng = as_generator(rng)
        self.add_parameter("W_gate", (rng.standard_normal((d_model, n_experts)) * gate_scale / np.sqrt(d_model)).astype(dtype))
        W1, b1, W2, b2 = init_expert_weights(n_experts, d_model, d_hidden, self.d_out, rng, activation, dtype)
        for name, value in (("W1", W1), ("b1", b1), ("W2", W2), ("b2", b2)):
            self.add_parameter(name, value)
        self.cache = None

    @property
    def gates(self):
        return None if self.cache is None else self.cache.gates

    def forward(self, x):
        check_float_array(x, "x", ndim=2, last_dim=self.d_model)
        p = self.params
        y, self.cache = dense_moe_forward(x, p["W_gate"], p["W1"], p["b1"], p["W2"], p["b2"], activation=self.activation)
        return y

    def backward(self, dy):
        dx, *dparams = dense_moe_backward(dy, self.cache)
        for name, grad in zip(("W_gate", "W1", "b1", "W2", "b2"), dparams):
            self.grads[name] += grad
        return dx

    def own_choices(self):
        if self.activation == "relu" and self.cache is not None:
            return {"positive": self.cache.experts.activation.positive}
        return {}
