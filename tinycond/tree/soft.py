r"""Soft decision tree: path probabilities and the probability-weighted mixture of leaves.

Every inner node n of a depth-D tree is a linear unit with a sigmoid,
:math:`s_n(x) = \sigma(\beta (x \cdot w_n + b_n))`, the probability of taking
the right branch. A leaf's probability is the product of the branch
probabilities along its path, and the soft tree's output is the
probability-weighted sum of all :math:`2^D` leaf experts. Every leaf runs on
every sample, so training is smooth but costs as much as a dense mixture;
:mod:`tinycond.tree.hard` gives the O(D) inference.

Nodes are in heap order (:mod:`tinycond.tree.heap`).

References
----------
Jordan and Jacobs (1994). Hierarchical Mixtures of Experts and the EM Algorithm.
Frosst and Hinton (2017). Distilling a Neural Network Into a Soft Decision Tree.
Belcak and Wattenhofer (2023). Fast Feedforward Networks.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from tinycond import functional as F
from tinycond import layers as L
from tinycond.tree.heap import depth_from_n_nodes, level_slice

# Path probabilities


class TreePathCache(NamedTuple):
    node_probs: np.ndarray  # (N, 2^D - 1) right-branch probability of every inner node
    reach: np.ndarray  # (N, 2^(D+1) - 1) probability of reaching every node, leaves last


def tree_path_forward(node_probs):
    r"""Compute the probability of reaching every node of the tree, leaves included.

    1. The root is reached with probability 1.
    2. Level by level, a node reached with probability :math:`\mu` passes
       :math:`\mu (1 - s)` to its left child and :math:`\mu s` to its right child.
    3. The last :math:`2^D` columns are the leaf probabilities.

    Hint: the children of level l are the whole of level l + 1, so one
    ``np.stack([left, right], axis=-1).reshape(N, -1)`` per level puts them
    in heap order.

    Parameters
    ----------
    node_probs : ndarray of shape (N, 2^D - 1)
        Right-branch probability :math:`s_n` of each inner node, in heap order.

    Returns
    -------
    reach : ndarray of shape (N, 2^(D+1) - 1)
        :math:`\mu_n`, the probability of reaching heap node n. Columns
        :math:`2^D - 1` onwards are the leaf probabilities, which sum to one.
    cache : TreePathCache

    Notes
    -----
    .. math:: \mu_0 = 1, \qquad \mu_{2n+1} = \mu_n (1 - s_n), \qquad \mu_{2n+2} = \mu_n s_n

    References
    ----------
    Frosst and Hinton (2017). Distilling a Neural Network Into a Soft Decision Tree.
    """
    N, n_inner = node_probs.shape
    depth = depth_from_n_nodes(n_inner, "node_probs.shape[1]")
    ### BEGIN SOLUTION ex4_1
    reach = np.empty((N, 2 * n_inner + 1), dtype=node_probs.dtype)
    reach[:, 0] = 1.0
    for level in range(depth):
        nodes, children = level_slice(level), level_slice(level + 1)
        mu = reach[:, nodes]  # (N, 2^level)
        s = node_probs[:, nodes]
        reach[:, children] = np.stack([mu * (1.0 - s), mu * s], axis=-1).reshape(N, -1)  # (N, 2^(level+1))
    return reach, TreePathCache(node_probs, reach)
    ### END SOLUTION


def tree_path_backward(dreach, cache: TreePathCache):
    r"""Return ``dnode_probs``, the gradient through the path products.

    1. Start with the value :math:`V` of every leaf: its entry of ``dreach``.
    2. Going up one level at a time, node n gets
       :math:`\partial L/\partial s_n = \mu_n (V_{2n+2} - V_{2n+1})`.
    3. Its own value is :math:`V_n = s_n V_{2n+2} + (1 - s_n) V_{2n+1} +`
       ``dreach[:, n]``, the last term being the gradient that reaches node n
       directly (from a penalty on :math:`\mu_n`).

    Hint: reshape a level's children values to ``(N, 2^level, 2)``; index 0
    is the left child and index 1 the right child.

    Parameters
    ----------
    dreach : ndarray of shape (N, 2^(D+1) - 1)
        Gradient of the loss with respect to ``reach``.
    cache : TreePathCache

    Returns
    -------
    dnode_probs : ndarray of shape (N, 2^D - 1)

    Notes
    -----
    A leaf's probability is a product, and the derivative of a product with
    respect to one factor is the product of the others. Dividing the path
    probability by :math:`s_n` would give that, but underflows to 0/0 on a
    hardened tree. The value recursion never divides: :math:`V_n` is the
    derivative of the loss with respect to :math:`\mu_n`, and

    .. math:: \frac{\partial L}{\partial s_n} = \mu_n \left(V_{2n+2} - V_{2n+1}\right),
              \qquad V_n = s_n V_{2n+2} + (1 - s_n) V_{2n+1} + \frac{\partial L}{\partial \mu_n}\Big|_{\text{direct}}
    """
    node_probs, reach = cache
    N, n_inner = node_probs.shape
    depth = depth_from_n_nodes(n_inner, "node_probs.shape[1]")
    ### BEGIN SOLUTION ex4_1
    dnode_probs = np.empty_like(node_probs)
    value = dreach[:, n_inner:]  # (N, 2^D) leaves
    for level in reversed(range(depth)):
        nodes = level_slice(level)
        s = node_probs[:, nodes]
        children = value.reshape(N, -1, 2)  # (N, 2^level, 2)
        v_left, v_right = children[..., 0], children[..., 1]
        dnode_probs[:, nodes] = reach[:, nodes] * (v_right - v_left)
        value = s * v_right + (1.0 - s) * v_left + dreach[:, nodes]  # (N, 2^level)
    return dnode_probs
    ### END SOLUTION


# The soft tree: node units, path products and the mixture of leaves


class SoftTreeCache(NamedTuple):
    x: np.ndarray  # (N, d_model)
    W_node: np.ndarray  # (2^D - 1, d_model)
    beta: float
    node_logits: np.ndarray  # (N, 2^D - 1), already multiplied by beta
    node_probs: np.ndarray  # (N, 2^D - 1)
    path: TreePathCache
    expert_out: np.ndarray  # (2^D, N, d_out)
    experts: L.MlpCache


def soft_tree_forward(x, W_node, b_node, W1, b1, W2, b2, *, beta=1.0, activation="relu"):
    r"""Run every leaf expert on every sample and mix them by leaf probability.

    Parameters
    ----------
    x : ndarray of shape (N, d_model)
    W_node : ndarray of shape (2^D - 1, d_model)
        One row per inner node, in heap order.
    b_node : ndarray of shape (2^D - 1,)
    W1 : ndarray of shape (2^D, d_model, d_hidden)
        Stacked first-layer weights of the leaf experts, leaf j in row j.
    b1 : ndarray of shape (2^D, d_hidden)
    W2 : ndarray of shape (2^D, d_hidden, d_out)
    b2 : ndarray of shape (2^D, d_out)
    beta : float
        Inverse temperature of the node sigmoids; larger is harder.
    activation : {"relu", "gelu", "sigmoid"}

    Returns
    -------
    y : ndarray of shape (N, d_out)
    cache : SoftTreeCache
        ``cache.path.reach[:, 2^D - 1:]`` contains the leaf probabilities, shape (N, 2^D).

    Notes
    -----
    .. math:: s_n = \sigma\bigl(\beta (x \cdot w_n + b_n)\bigr), \qquad
              P_\ell(x) = \prod_{n \in \mathrm{path}(\ell)} s_n^{[\text{right}]} (1 - s_n)^{[\text{left}]}, \qquad
              y = \sum_{\ell=1}^{2^D} P_\ell(x)\, f_\ell(x)

    NOTE: every leaf runs on every sample, so this pass keeps arrays of shape
    (2^D, N, d_hidden) and (2^D, N, d_out); past depth 8 or so, train in hard
    mode or with small batches.

    References
    ----------
    Frosst and Hinton (2017). Distilling a Neural Network Into a Soft Decision Tree.
    """
    n_inner = W_node.shape[0]
    node_logits = beta * (x @ W_node.T + b_node)  # (N, 2^D - 1)
    node_probs = F.sigmoid(node_logits)
    reach, path = tree_path_forward(node_probs)  # (N, 2^(D+1) - 1)
    leaf_probs = reach[:, n_inner:]  # (N, 2^D)
    expert_out, experts = L.mlp_forward(x, W1, b1, W2, b2, activation=activation)  # (2^D, N, d_out)
    y = np.einsum("nl,lno->no", leaf_probs, expert_out)  # (N, d_out)
    return y, SoftTreeCache(x, W_node, beta, node_logits, node_probs, path, expert_out, experts)


def soft_tree_backward(dy, cache: SoftTreeCache, *, dnode_logits=None, dreach=None):
    r"""Return ``(dx, dW_node, db_node, dW1, db1, dW2, db2)`` for the soft tree.

    1. Mixing step: ``dleaf_probs[n, l] = <dy[n], expert_out[l, n]>`` and
       ``dexpert_out[l, n] = leaf_probs[n, l] * dy[n]``; the experts go back
       through :func:`tinycond.layers.mlp_backward`.
    2. Start from the optional ``dreach`` argument (zeros of the shape of
       ``cache.path.reach`` if it is None, and a copy otherwise, so the
       argument is not changed), add ``dleaf_probs`` to its leaf columns
       ``[:, 2^D - 1:]`` and run :func:`tree_path_backward` on the sum to get
       ``dnode_probs``.
    3. Through the sigmoid, :math:`ds/dz = s (1 - s)`, gives ``dz``, the
       gradient on ``node_logits``. Add the optional ``dnode_logits`` to it.
    4. ``node_logits`` are :math:`z = \beta (x W_{node}^\top + b_{node})`,
       so ``dx`` gains :math:`\beta\, dz\, W_{node}` on top of the experts'
       gradient from step 1, ``dW_node`` is :math:`\beta\, dz^\top x` and
       ``db_node`` is :math:`\beta` times the column sums of ``dz``.

    Hint: ``dW_node`` has the shape of ``W_node``, (2^D - 1, d_model), so it
    is ``beta * dz.T @ x`` rather than ``x.T @ dz``.

    Parameters
    ----------
    dy : ndarray of shape (N, d_out)
    cache : SoftTreeCache
    dnode_logits : ndarray of shape (N, 2^D - 1), optional
        Extra gradient on ``cache.node_logits`` (a penalty on the decisions).
    dreach : ndarray of shape (N, 2^(D+1) - 1), optional
        Extra gradient on ``cache.path.reach`` (a penalty on the reach of nodes).

    Returns
    -------
    tuple of ndarray
        Gradients with the shapes of ``x, W_node, b_node, W1, b1, W2, b2``.
    """
    x, W_node, beta, node_logits, node_probs, path, expert_out, experts = cache
    n_inner = W_node.shape[0]
    ### BEGIN SOLUTION ex4_2
    leaf_probs = path.reach[:, n_inner:]  # (N, 2^D)
    dleaf_probs = np.einsum("no,lno->nl", dy, expert_out)  # (N, 2^D)
    dexpert_out = leaf_probs.T[:, :, None] * dy[None, :, :]  # (2^D, N, d_out)
    dx, dW1, db1, dW2, db2 = L.mlp_backward(dexpert_out, experts)

    dreach_total = np.zeros_like(path.reach) if dreach is None else dreach.copy()
    dreach_total[:, n_inner:] += dleaf_probs
    dnode_probs = tree_path_backward(dreach_total, path)

    dlogits = F.sigmoid_backward(dnode_probs, F.SigmoidCache(node_probs))
    if dnode_logits is not None:
        dlogits = dlogits + dnode_logits
    da = beta * dlogits  # gradient of the unscaled node pre-activation x . w + b
    dx = dx + da @ W_node
    return dx, da.T @ x, da.sum(axis=0), dW1, db1, dW2, db2
    ### END SOLUTION


def soft_tree_predict(x, W_node, b_node, W1, b1, W2, b2, *, beta=1.0, activation="relu"):
    """Return the soft tree's output without a cache, one leaf at a time.

    The same function as :func:`soft_tree_forward`, for evaluation: it still
    runs all :math:`2^D` leaves on every sample, but keeps only one leaf's
    activations at a time, so memory stays at O(N (d_hidden + d_out))
    instead of O(2^D N (d_hidden + d_out)).

    Parameters
    ----------
    x : ndarray of shape (N, d_model)
    W_node, b_node, W1, b1, W2, b2, beta, activation
        As in :func:`soft_tree_forward`.

    Returns
    -------
    y : ndarray of shape (N, d_out)
    leaf_probs : ndarray of shape (N, 2^D)
    """
    n_inner = W_node.shape[0]
    node_probs = F.sigmoid(beta * (x @ W_node.T + b_node))  # (N, 2^D - 1)
    reach, _ = tree_path_forward(node_probs)
    leaf_probs = reach[:, n_inner:]  # (N, 2^D)
    y = np.zeros((x.shape[0], W2.shape[2]), dtype=np.result_type(x, W2))
    for leaf in range(W1.shape[0]):
        out, _ = L.mlp_forward(x, W1[leaf], b1[leaf], W2[leaf], b2[leaf], activation=activation)  # (N, d_out)
        y += leaf_probs[:, leaf, None] * out
    return y, leaf_probs
