r"""Penalties on a tree's decisions: balance (Frosst and Hinton) and hardening (fast feedforward).

Both are pure forward/backward pairs on routing quantities, so the same code
serves the soft tree (every node of every sample) and hard-path training (the
D nodes each sample visits). The soft tree passes arrays of shape
(N, 2^D - 1) with columns in heap order. Hard training passes arrays of
shape (N, D) and gives the heap index of each entry in ``node_index``.

References
----------
Frosst and Hinton (2017). Distilling a Neural Network Into a Soft Decision Tree.
Belcak and Wattenhofer (2023). Fast Feedforward Networks.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from tinycond import functional as F
from tinycond.tree.heap import node_levels

# alpha is clipped to [ALPHA_FLOOR, 1 - ALPHA_FLOOR] so that log(alpha) stays
# finite when every sample at a node goes the same way with a saturated
# sigmoid (logits of 1e4 give alpha exactly 0 or 1). Inside the interval the
# penalty is exact; outside it is constant and passes no gradient.
ALPHA_FLOOR = 1e-12

# Balance penalty


class BalancePenaltyCache(NamedTuple):
    node_probs: np.ndarray  # (N, K)
    reach: np.ndarray  # (N, K)
    ids: np.ndarray  # (N, K) heap index of each entry
    alpha: np.ndarray  # (n_nodes,) unclipped
    total_reach: np.ndarray  # (n_nodes,)
    dpenalty_dalpha: np.ndarray  # (n_nodes,) zero for unreached or clipped nodes


def _entry_ids(node_index, shape, n_nodes):
    """Return the heap index of every entry and the number of nodes."""
    if node_index is None:
        return np.broadcast_to(np.arange(shape[1]), shape), shape[1]
    if node_index.shape != shape:
        raise ValueError(f"node_index must have the shape of node_probs {shape}, got {node_index.shape}")
    if n_nodes is None:
        raise ValueError("n_nodes is required with node_index: pass the number of inner nodes, 2^D - 1")
    return node_index, n_nodes


def balance_penalty_forward(node_probs, reach, *, node_index=None, n_nodes=None):
    r"""Compute the Frosst-Hinton penalty that pushes every node towards a 50/50 split.

    Parameters
    ----------
    node_probs : ndarray of shape (N, K)
        Right-branch probability :math:`s` of each evaluated node.
    reach : ndarray of shape (N, K)
        Probability :math:`\mu` of reaching that node.
    node_index : int ndarray of shape (N, K), optional
        Heap index of each entry. Omit it when the K columns are the heap
        nodes 0 to K - 1 (the soft tree).
    n_nodes : int, optional
        Number of inner nodes, :math:`2^D - 1`; required with ``node_index``.

    Returns
    -------
    penalty : float
        :math:`D \log 2` when every reached node splits its samples evenly; larger otherwise.
    cache : BalancePenaltyCache

    Notes
    -----
    With :math:`d_n` the level of node n (root 0), sums over the batch:

    .. math:: \alpha_n = \frac{\sum_x \mu_n(x)\, s_n(x)}{\sum_x \mu_n(x)}, \qquad
              C = -\sum_n 2^{-d_n}\, \tfrac12 \bigl(\log \alpha_n + \log(1 - \alpha_n)\bigr)

    Frosst and Hinton scale the weight of a node as :math:`2^{-d_n}`, because
    deeper nodes see fewer samples and their :math:`\alpha_n` is noisier.
    A node that no sample reaches (:math:`\sum_x \mu_n = 0`, common in hard
    training) has no :math:`\alpha_n` and adds nothing. ``alpha`` is clipped
    to ``[ALPHA_FLOOR, 1 - ALPHA_FLOOR]`` so the logarithms stay finite.

    References
    ----------
    Frosst and Hinton (2017). Distilling a Neural Network Into a Soft Decision Tree.
    """
    ids, n_nodes = _entry_ids(node_index, node_probs.shape, n_nodes)
    flat_ids = ids.ravel()
    total_reach = np.bincount(flat_ids, weights=reach.ravel(), minlength=n_nodes)  # (n_nodes,)
    right_reach = np.bincount(flat_ids, weights=(reach * node_probs).ravel(), minlength=n_nodes)
    reached = total_reach > 0
    alpha = np.where(reached, right_reach / np.where(reached, total_reach, 1.0), 0.5)
    clipped = np.clip(alpha, ALPHA_FLOOR, 1.0 - ALPHA_FLOOR)
    weight = np.where(reached, 2.0 ** -node_levels(n_nodes), 0.0)

    penalty = -np.sum(weight * 0.5 * (np.log(clipped) + np.log1p(-clipped)))
    inside = (alpha >= ALPHA_FLOOR) & (alpha <= 1.0 - ALPHA_FLOOR)
    dpenalty_dalpha = np.where(inside, -0.5 * weight * (1.0 / clipped - 1.0 / (1.0 - clipped)), 0.0)
    return float(penalty), BalancePenaltyCache(node_probs, reach, ids, alpha, total_reach, dpenalty_dalpha)


def balance_penalty_backward(dpenalty, cache: BalancePenaltyCache):
    r"""Return ``(dnode_probs, dreach)``, each of shape (N, K).

    1. ``dalpha`` is ``dpenalty`` times the stored :math:`\partial C / \partial \alpha_n`.
    2. :math:`\alpha_n` is a ratio of batch sums, so each entry (sample x at
       node n) gets :math:`\partial \alpha_n / \partial s_n(x) = \mu_n(x) / \sum_x \mu_n`
       and :math:`\partial \alpha_n / \partial \mu_n(x) = (s_n(x) - \alpha_n) / \sum_x \mu_n`.

    Hint: index the per-node arrays with ``cache.ids`` to get one value per entry.
    """
    node_probs, reach, ids, alpha, total_reach, dpenalty_dalpha = cache
    ### BEGIN SOLUTION ex4_5
    dalpha = dpenalty * dpenalty_dalpha
    share = np.where(total_reach > 0, dalpha / np.where(total_reach > 0, total_reach, 1.0), 0.0)  # (n_nodes,)
    share = share.astype(node_probs.dtype, copy=False)  # the batch sums are float64; keep float32 models in float32
    dnode_probs = share[ids] * reach  # (N, K)
    dreach = share[ids] * (node_probs - alpha.astype(node_probs.dtype, copy=False)[ids])  # (N, K)
    return dnode_probs, dreach
    ### END SOLUTION


# Hardening penalty


class HardeningPenaltyCache(NamedTuple):
    node_logits: np.ndarray  # (N, K)
    slope: np.ndarray  # (N, K) sigma(z) (1 - sigma(z))


def hardening_penalty_forward(node_logits):
    r"""Compute the mean binary entropy of the node decisions.

    Parameters
    ----------
    node_logits : ndarray of shape (N, K)
        Logits :math:`z` of the evaluated nodes (already multiplied by beta).

    Returns
    -------
    penalty : float
        :math:`\log 2` when every decision is a coin flip (z = 0), towards 0
        as the decisions harden.
    cache : HardeningPenaltyCache

    Notes
    -----
    With :math:`s = \sigma(z)`, the entropy of one decision is

    .. math:: H(z) = -s \log s - (1 - s) \log(1 - s) = \log(1 + e^{-|z|}) + |z|\, \sigma(-|z|)

    The second form never takes the log of 0, so it stays finite and exact
    for logits of any size. The penalty is the mean of H over all N K entries.
    Fast feedforward networks add it to the loss so that the soft tree that
    is trained ends up close to the hard tree that runs at inference.

    References
    ----------
    Belcak and Wattenhofer (2023). Fast Feedforward Networks.
    """
    magnitude = np.abs(node_logits)
    entropy = F.softplus(-magnitude) + magnitude * F.sigmoid(-magnitude)
    slope = F.sigmoid(magnitude) * F.sigmoid(-magnitude)
    return float(np.mean(entropy)), HardeningPenaltyCache(node_logits, slope)


def hardening_penalty_backward(dpenalty, cache: HardeningPenaltyCache):
    r"""Return ``dnode_logits`` of shape (N, K).

    :math:`dH/ds = \log((1 - s)/s) = -z` and :math:`ds/dz = s(1 - s)`, so
    :math:`dH/dz = -z\, s (1 - s)`; the mean divides by the number of entries.
    """
    node_logits, slope = cache
    ### BEGIN SOLUTION ex4_5
    return -dpenalty * node_logits * slope / node_logits.size
    ### END SOLUTION
