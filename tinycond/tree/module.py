r"""The decision-tree mixture of experts as a Module: soft or hard training, hard inference."""

from __future__ import annotations

import numpy as np

from tinycond import functional as F
from tinycond._checks import as_generator, check_choice, check_float_array, check_positive_float, check_positive_int
from tinycond.moe.dense import init_expert_weights
from tinycond.nn import Module
from tinycond.tree.hard import hard_tree_backward, hard_tree_forward, hard_tree_predict
from tinycond.tree.heap import DEFAULT_MAX_LEAF_BYTES, check_depth
from tinycond.tree.penalties import (
    balance_penalty_backward,
    balance_penalty_forward,
    hardening_penalty_backward,
    hardening_penalty_forward,
)
from tinycond.tree.soft import soft_tree_backward, soft_tree_forward, soft_tree_predict

MODES = ("soft", "hard")
PARAMETER_NAMES = ("W_node", "b_node", "W1", "b1", "W2", "b2")


def init_tree_weights(depth, d_model, d_hidden, d_out, rng, *, activation="relu", node_init_scale=1.0, dtype=np.float64):
    """Return ``(W_node, b_node, W1, b1, W2, b2)`` for a tree of depth D.

    Node weights are normal noise of standard deviation
    ``node_init_scale / sqrt(d_model)``, so a node logit starts with about
    unit variance for unit-variance inputs. Node biases start at zero. The
    leaf experts use :func:`tinycond.moe.dense.init_expert_weights`.

    Returns
    -------
    W_node : ndarray of shape (2^D - 1, d_model)
    b_node : ndarray of shape (2^D - 1,)
    W1, b1, W2, b2 : ndarray of shapes (2^D, d_model, d_hidden), (2^D, d_hidden), (2^D, d_hidden, d_out), (2^D, d_out)
    """
    rng = as_generator(rng)
    n_nodes = 2**depth - 1
    W_node = (rng.standard_normal((n_nodes, d_model)) * node_init_scale / np.sqrt(d_model)).astype(dtype)
    b_node = np.zeros(n_nodes, dtype=dtype)
    return (W_node, b_node) + init_expert_weights(2**depth, d_model, d_hidden, d_out, rng, activation, dtype)


class TreeMoE(Module):
    r"""Mixture of :math:`2^D` leaf experts routed by a learned binary tree of depth D.

    Each of the :math:`2^D - 1` inner nodes is a linear unit with a sigmoid,
    :math:`s_n = \sigma(\beta (x \cdot w_n + b_n))`, and each leaf is a
    two-layer MLP expert. In training mode, ``mode`` chooses the forward pass:

    * ``"soft"``: the probability-weighted sum of all leaves
      (:func:`tinycond.tree.soft.soft_tree_forward`), smooth in every parameter;
    * ``"hard"``: the leaf at the end of each sample's hard path, weighted by
      its path probability (:func:`tinycond.tree.hard.hard_tree_forward`).

    In evaluation mode (``module.eval()``) the forward pass is always hard
    inference (:func:`tinycond.tree.hard.hard_tree_predict`): D node
    evaluations and one leaf per sample, with samples grouped by leaf. It
    keeps no cache, so ``backward`` raises after it.

    Parameters
    ----------
    d_model : int
        Input width.
    d_hidden : int
        Hidden width of each leaf expert.
    depth : int
        Tree depth D >= 1. The limit is the memory of the stacked leaf weights,
        :math:`2^D (d_{model} d_{hidden} + d_{hidden} + d_{hidden} d_{out} + d_{out})`
        numbers, which must fit in ``max_leaf_bytes``.
    d_out : int, optional
        Output width; defaults to ``d_model``.
    activation : {"relu", "gelu", "sigmoid"}
        Activation of the leaf experts.
    beta : float
        Inverse temperature of the node sigmoids, > 0.
    mode : {"soft", "hard"}
        Forward pass in training mode.
    balance_coef : float
        Weight of the Frosst-Hinton balance penalty in ``aux_loss``.
    hardening_coef : float
        Weight of the hardening penalty (mean binary entropy of the decisions).
    rng : Generator or int
    node_init_scale : float
        Node weights start as normal noise of standard deviation
        ``node_init_scale / sqrt(d_model)``; node biases start at zero.
    max_leaf_bytes : int
        Memory limit of the stacked leaf weights (default 1 GiB).
    dtype : numpy dtype

    Attributes
    ----------
    leaf_index : int ndarray of shape (N,)
        After forward: the leaf of each sample's hard path, or in soft mode
        its most probable leaf.
    leaf_probs : ndarray of shape (N, 2^D) or None
        After a soft forward: every leaf's probability. ``None`` otherwise.
    path_prob : ndarray of shape (N,)
        After forward: the probability of ``leaf_index``.
    penalties : dict
        After a training forward: ``"balance"`` and ``"hardening"``, before
        scaling by their coefficients. ``aux_loss`` is the scaled sum.

    References
    ----------
    Jordan and Jacobs (1994). Hierarchical Mixtures of Experts and the EM Algorithm.
    Frosst and Hinton (2017). Distilling a Neural Network Into a Soft Decision Tree.
    Belcak and Wattenhofer (2023). Fast Feedforward Networks.
    """

    def __init__(
        self,
        d_model,
        d_hidden,
        depth,
        *,
        d_out=None,
        activation="relu",
        beta=1.0,
        mode="soft",
        balance_coef=0.0,
        hardening_coef=0.0,
        rng,
        node_init_scale=1.0,
        max_leaf_bytes=DEFAULT_MAX_LEAF_BYTES,
        dtype=np.float64,
    ):
        super().__init__()
        self.d_model = check_positive_int(d_model, "d_model")
        self.d_hidden = check_positive_int(d_hidden, "d_hidden")
        self.d_out = self.d_model if d_out is None else check_positive_int(d_out, "d_out")
        itemsize = np.dtype(dtype).itemsize
        self.depth = check_depth(
            depth, d_model=self.d_model, d_hidden=self.d_hidden, d_out=self.d_out, itemsize=itemsize, max_leaf_bytes=max_leaf_bytes
        )
        self.activation = check_choice(activation, "activation", tuple(F.ACTIVATIONS))
        self.beta = check_positive_float(beta, "beta")
        self.mode = check_choice(mode, "mode", MODES)
        self.balance_coef = check_positive_float(balance_coef, "balance_coef", allow_zero=True)
        self.hardening_coef = check_positive_float(hardening_coef, "hardening_coef", allow_zero=True)
        node_init_scale = check_positive_float(node_init_scale, "node_init_scale")
        self.n_nodes = 2**self.depth - 1
        self.n_leaves = 2**self.depth

        weights = init_tree_weights(
            self.depth, self.d_model, self.d_hidden, self.d_out, rng,
            activation=self.activation, node_init_scale=node_init_scale, dtype=dtype,
        )
        for name, value in zip(PARAMETER_NAMES, weights):
            self.add_parameter(name, value)

        self.cache = None
        self.leaf_index = None
        self.leaf_probs = None
        self.path_prob = None
        self.penalties = {}
        self._penalty_caches = {}

    def _weights(self):
        return tuple(self.params[name] for name in PARAMETER_NAMES)

    def forward(self, x):
        check_float_array(x, "x", ndim=2, last_dim=self.d_model)
        options = {"beta": self.beta, "activation": self.activation}
        self.cache = None
        self.leaf_probs = None
        self.penalties = {}
        self._penalty_caches = {}
        self.aux_loss = 0.0

        if not self.training:
            y, self.leaf_index, self.path_prob = hard_tree_predict(x, *self._weights(), **options)
            return y

        if self.mode == "soft":
            y, self.cache = soft_tree_forward(x, *self._weights(), **options)
            reach = self.cache.path.reach  # (N, 2^(D+1) - 1)
            self.leaf_probs = reach[:, self.n_nodes :]  # (N, 2^D)
            self.leaf_index = np.argmax(self.leaf_probs, axis=1)
            self.path_prob = np.take_along_axis(self.leaf_probs, self.leaf_index[:, None], axis=1)[:, 0]
            node_probs, node_reach, node_logits = self.cache.node_probs, reach[:, : self.n_nodes], self.cache.node_logits
            balance_options = {}
        else:
            y, self.cache = hard_tree_forward(x, *self._weights(), **options)
            self.leaf_index = self.cache.leaf_index
            self.path_prob = self.cache.reach[:, -1]
            node_logits = self.cache.node_logits  # (N, D), the visited nodes only
            node_probs, node_reach = F.sigmoid(node_logits), self.cache.reach[:, :-1]
            balance_options = {"node_index": self.cache.node_index, "n_nodes": self.n_nodes}

        self.penalties["balance"], self._penalty_caches["balance"] = balance_penalty_forward(node_probs, node_reach, **balance_options)
        self.penalties["hardening"], self._penalty_caches["hardening"] = hardening_penalty_forward(node_logits)
        self.aux_loss = self.balance_coef * self.penalties["balance"] + self.hardening_coef * self.penalties["hardening"]
        return y

    def _penalty_gradients(self):
        """Return the penalties' gradients on the node logits and on the reach array."""
        dnode_logits, dreach = None, None
        if self.balance_coef:
            balance = self._penalty_caches["balance"]
            dnode_probs, dnode_reach = balance_penalty_backward(self.balance_coef, balance)
            dnode_logits = F.sigmoid_backward(dnode_probs, F.SigmoidCache(balance.node_probs))
            reach = self.cache.path.reach if self.mode == "soft" else self.cache.reach
            dreach = np.zeros_like(reach)
            dreach[:, : dnode_reach.shape[1]] = dnode_reach  # inner nodes come first in both layouts
        if self.hardening_coef:
            dhardening = hardening_penalty_backward(self.hardening_coef, self._penalty_caches["hardening"])
            dnode_logits = dhardening if dnode_logits is None else dnode_logits + dhardening
        return dnode_logits, dreach

    def backward(self, dy):
        if self.cache is None:
            raise RuntimeError(
                "TreeMoE.backward needs the cache of a training-mode forward; hard inference in eval mode keeps none. "
                "Call module.train() and run forward again before backward."
            )
        dnode_logits, dreach = self._penalty_gradients()
        backward = soft_tree_backward if self.mode == "soft" else hard_tree_backward
        dx, *dparams = backward(dy, self.cache, dnode_logits=dnode_logits, dreach=dreach)
        for name, grad in zip(PARAMETER_NAMES, dparams):
            self.grads[name] += grad
        return dx

    def soft_predict(self, x):
        """Return the soft tree's output for ``x``, shape (N, d_out), without a cache.

        Evaluates all :math:`2^D` leaves one at a time; see
        :func:`tinycond.tree.soft.soft_tree_predict`. It leaves ``leaf_index``
        and the other attributes of the last forward unchanged.
        """
        check_float_array(x, "x", ndim=2, last_dim=self.d_model)
        y, _ = soft_tree_predict(x, *self._weights(), beta=self.beta, activation=self.activation)
        return y

    def own_choices(self):
        """Return the discrete choices that the last training forward's gradient depends on.

        Hard mode: the visited nodes (the hard path) and the ReLU signs of the
        leaf experts. Soft mode: only the ReLU signs, because the soft output
        is smooth in the routing. Hard inference has no backward and returns
        its leaves for inspection.
        """
        if self.cache is None:
            return {} if self.leaf_index is None else {"leaf_index": self.leaf_index}
        choices = {}
        if self.mode == "hard":
            choices["node_index"] = self.cache.node_index
        if self.activation == "relu":
            if self.mode == "soft":
                choices["positive"] = self.cache.experts.activation.positive
            else:
                choices["positive"] = [e.activation.positive for e in self.cache.experts.experts if e is not None]
        return choices
