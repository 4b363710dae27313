r"""Hard decision tree: O(D) descent, one leaf per sample, and hard-path training.

Each sample starts at the root and, at every level, evaluates only the node
it is at and goes right when the node's logit is at least 0 (its sigmoid at
least one half). After D decisions it reaches one leaf. Samples are then
grouped by leaf with one stable sort, so each leaf expert runs once on a
contiguous batch of its samples: this is the dispatch of the sparse mixture
(:mod:`tinycond.moe.dispatch`) with one expert per sample and no capacity. Routing costs D * d_model multiply-adds per
sample instead of the (2^D - 1) * d_model of the soft tree or the
2^D * d_model of a flat gate over the same experts.

The chosen leaf's output is weighted by its path probability, the product of
the branch probabilities taken. In hard training that product is the only
path through which the node units learn.

References
----------
Frosst and Hinton (2017). Distilling a Neural Network Into a Soft Decision Tree.
Belcak and Wattenhofer (2023). Fast Feedforward Networks.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from tinycond.moe.dispatch import GroupedMlpCache, grouped_mlp_backward, grouped_mlp_forward, plan_dispatch
from tinycond.tree.heap import depth_from_n_nodes


def tree_descend(x, W_node, b_node, *, beta=1.0):
    r"""Send every sample from the root to a leaf, evaluating one node per level.

    1. Every sample starts at node 0.
    2. At each level, gather the weight row and bias of each sample's current
       node and take the row-wise dot product with ``x``: the node logit
       :math:`z = \beta (x \cdot w_n + b_n)`.
    3. Go to child :math:`2n + 2` (right) where :math:`z \ge 0`, else to :math:`2n + 1`.

    Hint: ``(x[:, None, :] @ W_rows[:, :, None])[:, 0, 0]`` is the row-wise
    dot product of ``x`` and the gathered rows ``W_rows`` of shape
    (N, d_model). Never compute ``x @ W_node.T``, which evaluates every node.

    Parameters
    ----------
    x : ndarray of shape (N, d_model)
    W_node : ndarray of shape (2^D - 1, d_model)
    b_node : ndarray of shape (2^D - 1,)
    beta : float
        Inverse temperature; it scales the logits but never changes a decision.

    Returns
    -------
    node_index : int ndarray of shape (N, D)
        Heap index of the node visited at each level.
    node_logits : ndarray of shape (N, D)
        Logit :math:`z` of each visited node, already multiplied by ``beta``.
    leaf_index : int ndarray of shape (N,)
        Leaf reached, in ``[0, 2^D)``.
    """
    N = x.shape[0]
    n_inner = W_node.shape[0]
    depth = depth_from_n_nodes(n_inner)
    ### BEGIN SOLUTION ex4_3
    node_index = np.empty((N, depth), dtype=np.intp)
    node_logits = np.empty((N, depth), dtype=np.result_type(x, W_node))
    node = np.zeros(N, dtype=np.intp)
    for level in range(depth):
        node_index[:, level] = node
        # np.take is W_node[node] without the general fancy-indexing machinery, and faster.
        W_rows = np.take(W_node, node, axis=0)  # (N, d_model)
        # N products (1, d_model) @ (d_model, 1): about 1.3x faster than np.einsum("nd,nd->n") in NumPy 2.4.
        a = (x[:, None, :] @ W_rows[:, :, None])[:, 0, 0] + np.take(b_node, node)  # (N,)
        # Free the rows now, so the next level's gather reuses their memory instead of mapping new pages.
        del W_rows
        z = beta * a
        node_logits[:, level] = z
        node = 2 * node + 1 + (z >= 0)
    return node_index, node_logits, node - n_inner
    ### END SOLUTION


def branch_probabilities(node_logits):
    r"""Return the probability of the branch taken at each visited node, shape like ``node_logits``.

    The branch taken is the more probable one, so its probability is
    :math:`\sigma(|z|) \ge 1/2`: :math:`\sigma(z)` going right, and
    :math:`1 - \sigma(z) = \sigma(-z)` going left. Writing it as
    :math:`\sigma(|z|)` avoids the cancellation in ``1 - sigmoid(z)``.
    """
    # The sigmoid of t = |z| >= 0 needs only the branch 1 / (1 + exp(-t)), where exp(-t) <= 1 cannot overflow.
    return 1.0 / (1.0 + np.exp(-np.abs(node_logits)))


class HardTreeCache(NamedTuple):
    x: np.ndarray  # (N, d_model)
    W_node: np.ndarray  # (2^D - 1, d_model)
    beta: float
    node_index: np.ndarray  # (N, D) heap index of the visited nodes
    node_logits: np.ndarray  # (N, D)
    branch: np.ndarray  # (N, D) probability of the branch taken
    reach: np.ndarray  # (N, D + 1) path probability before each decision; last column the leaf's
    leaf_index: np.ndarray  # (N,)
    order: np.ndarray  # (N,) samples sorted by leaf
    leaf_out: np.ndarray  # (N, d_out) leaf outputs, in sorted order
    experts: GroupedMlpCache


def hard_tree_forward(x, W_node, b_node, W1, b1, W2, b2, *, beta=1.0, activation="relu"):
    r"""Follow each sample's hard path and weight its one leaf by the path probability.

    1. :func:`tree_descend` gives each sample's visited nodes, their logits and its leaf.
    2. The probability of each branch taken is :func:`branch_probabilities`,
       and ``reach[:, l]`` is the product of the first l of them (a column of
       ones, then their running product).
    3. :func:`tinycond.moe.dispatch.plan_dispatch` sorts the samples by leaf,
       and :func:`tinycond.moe.dispatch.grouped_mlp_forward` runs each leaf
       expert once on its slice.
    4. Each output is the leaf's output times the path probability
       ``reach[:, D]``, put back in the original sample order.

    Hint: with ``order = plan.token``, ``y[order] = ...`` scatters rows
    computed in sorted order back to their samples.

    Parameters
    ----------
    x : ndarray of shape (N, d_model)
    W_node, b_node, W1, b1, W2, b2, beta, activation
        As in :func:`tinycond.tree.soft.soft_tree_forward`.

    Returns
    -------
    y : ndarray of shape (N, d_out)
    cache : HardTreeCache

    Notes
    -----
    With :math:`b_l = \sigma(|z_l|)` the probability of the branch taken at level l,

    .. math:: \mu_0 = 1, \qquad \mu_{l+1} = \mu_l\, b_l, \qquad y = \mu_D\, f_{\ell^*}(x)

    where :math:`\ell^*` is the leaf that the signs of the visited node
    logits :math:`z_l` lead to. :math:`\mu_D` equals the soft tree's
    probability of that leaf. The decisions themselves are piecewise
    constant, so in training the node units learn only through
    :math:`\mu_D`: a sample pulls its path's branches towards more or less
    confidence, never towards another leaf.
    """
    N = x.shape[0]
    n_leaves = W1.shape[0]
    ### BEGIN SOLUTION ex4_3
    node_index, node_logits, leaf_index = tree_descend(x, W_node, b_node, beta=beta)
    branch = branch_probabilities(node_logits)  # (N, D)
    reach = np.concatenate([np.ones((N, 1), dtype=branch.dtype), np.cumprod(branch, axis=1)], axis=1)  # (N, D + 1)

    plan = plan_dispatch(leaf_index[:, None], n_leaves)
    order = plan.token  # (N,) samples sorted by leaf
    leaf_out, experts = grouped_mlp_forward(x[order], W1, b1, W2, b2, group_offsets=plan.group_offsets, activation=activation)
    y = np.empty_like(leaf_out)
    y[order] = leaf_out * reach[order, -1:]  # (N, d_out), back in sample order
    return y, HardTreeCache(x, W_node, beta, node_index, node_logits, branch, reach, leaf_index, order, leaf_out, experts)
    ### END SOLUTION


def hard_tree_predict(x, W_node, b_node, W1, b1, W2, b2, *, beta=1.0, activation="relu"):
    """Compute hard inference: D node evaluations and one leaf expert per sample, with no cache kept.

    The same computation as :func:`hard_tree_forward`; the cache is dropped
    on return, so nothing of the pass outlives the call.

    Parameters
    ----------
    x : ndarray of shape (N, d_model)
    W_node, b_node, W1, b1, W2, b2, beta, activation
        As in :func:`tinycond.tree.soft.soft_tree_forward`.

    Returns
    -------
    y : ndarray of shape (N, d_out)
    leaf_index : int ndarray of shape (N,)
    path_prob : ndarray of shape (N,)
        Probability of the path each sample took.
    """
    y, cache = hard_tree_forward(x, W_node, b_node, W1, b1, W2, b2, beta=beta, activation=activation)
    return y, cache.leaf_index, cache.reach[:, -1]


def hard_tree_backward(dy, cache: HardTreeCache, *, dnode_logits=None, dreach=None):
    r"""Return ``(dx, dW_node, db_node, dW1, db1, dW2, db2)`` for hard-path training.

    1. In sorted order: ``dpath = <dy, leaf_out>`` per sample (the gradient
       on the path probability ``reach[:, D]``), and the experts get
       ``reach[:, D] * dy``, which
       :func:`tinycond.moe.dispatch.grouped_mlp_backward` takes back through
       each leaf's slice.
    2. Value recursion up the path: with :math:`V_D` = ``dpath + dreach[:, D]``
       (just ``dpath`` if ``dreach`` is None), level l gets
       :math:`\partial L/\partial b_l = \mu_l V_{l+1}` with
       :math:`\mu_l` = ``reach[:, l]``, and passes up
       :math:`V_l = b_l V_{l+1} +` ``dreach[:, l]``.
    3. Since :math:`d\sigma(|z|)/dz = \pm b (1 - b)`, plus for right and
       minus for left, the gradient on ``node_logits`` is
       :math:`\pm b_l (1 - b_l)\, \partial L/\partial b_l`. The optional
       ``dnode_logits`` is added to it here, after the sign.
    4. Each visited node's unit :math:`z = \beta (x \cdot w_n + b_n)`, with
       ``dz`` the gradient on it from step 3, sends :math:`\beta\, dz\, w_n`
       to ``dx``, adds :math:`\beta\, dz\, x` into row n of ``dW_node``
       and adds :math:`\beta\, dz` into entry n of ``db_node``.

    Hint: several samples visit the same node. In the leaf order ``order``
    the samples of each node form one contiguous run at every level, so
    ``np.add.reduceat`` over the runs' starts sums each node's rows.

    Parameters
    ----------
    dy : ndarray of shape (N, d_out)
    cache : HardTreeCache
    dnode_logits : ndarray of shape (N, D), optional
        Extra gradient on ``cache.node_logits``.
    dreach : ndarray of shape (N, D + 1), optional
        Extra gradient on ``cache.reach``.

    Returns
    -------
    tuple of ndarray
        Gradients with the shapes of ``x, W_node, b_node, W1, b1, W2, b2``.
        Leaves that no sample reached get zero gradient.
    """
    x, W_node, beta, node_index, node_logits, branch, reach, _, order, leaf_out, experts = cache
    N, depth = node_index.shape
    ### BEGIN SOLUTION ex4_4
    dy_sorted = dy[order]  # (N, d_out)
    dpath = np.empty(N, dtype=dy.dtype)
    dpath[order] = np.sum(dy_sorted * leaf_out, axis=1)
    dx_sorted, dW1, db1, dW2, db2 = grouped_mlp_backward(dy_sorted * reach[order, -1:], experts)
    dx = np.empty_like(dx_sorted)
    dx[order] = dx_sorted  # (N, d_model)

    value = dpath if dreach is None else dpath + dreach[:, depth]
    dbranch = np.empty_like(branch)
    for level in reversed(range(depth)):
        dbranch[:, level] = reach[:, level] * value
        value = branch[:, level] * value
        if dreach is not None:
            value = value + dreach[:, level]
    dlogits = dbranch * branch * (1.0 - branch)
    # Negate where the sample went left. A float64 array of signs would promote float32 gradients to float64.
    dlogits = np.where(node_logits >= 0, dlogits, -dlogits)
    if dnode_logits is not None:
        dlogits = dlogits + dnode_logits

    da = beta * dlogits  # (N, D), gradient of the unscaled node pre-activation
    dx += np.einsum("nl,nld->nd", da, W_node[node_index])  # (N, d_model)

    # A node's subtree is a contiguous range of leaves, so in the leaf order
    # the samples that visit a node form one run at every level. One
    # np.add.reduceat per level sums all runs. np.add.at would add the rows
    # one at a time, 3-5x slower at depth 8.
    x_sorted = x[order]  # (N, d_model)
    da_sorted = da[order]  # (N, D)
    node_sorted = node_index[order]  # (N, D), each column non-decreasing
    dW_node = np.zeros_like(W_node)
    db_node = np.zeros_like(W_node[:, 0])
    for level in range(depth):
        nodes = node_sorted[:, level]
        starts = np.flatnonzero(np.diff(nodes, prepend=-1))  # (n_visited,) first row of each node's run
        dW_node[nodes[starts]] = np.add.reduceat(da_sorted[:, level, None] * x_sorted, starts, axis=0)  # (n_visited, d_model)
        db_node[nodes[starts]] = np.add.reduceat(da_sorted[:, level], starts)  # (n_visited,)
    return dx, dW_node, db_node, dW1, db1, dW2, db2
    ### END SOLUTION
