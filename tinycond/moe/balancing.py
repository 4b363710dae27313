r"""Load-balancing losses for a sparse router, as forward/backward pairs.

Without a balancing term a router trained by gradient descent tends to
collapse: the experts that win early get trained, get better, and win more.
Each loss here is small when tokens spread evenly over the experts. The
layer multiplies each by its coefficient; the values returned here are
unscaled. Shazeer's smooth load loss, which needs gate noise, is in
:mod:`tinycond.moe.load` and uses the same squared coefficient of variation.

Conventions (stated because published code differs):

* Every coefficient of variation uses the **population** variance (divide
  by E, not E - 1): :math:`CV^2(v) = \mathrm{Var}(v) / \mathrm{mean}(v)^2`.
* In the Switch loss, :math:`f_i` divides expert i's assignment count by
  :math:`N k`, the number of assignments, so :math:`\sum_i f_i = 1` for any
  ``top_k`` and a perfectly uniform router gives exactly 1 (times the
  coefficient). Dividing by N instead would give k.
* The Switch loss counts the router's choices before any capacity limit,
  so the loss does not depend on the capacity factor.
* Each loss is a per-layer quantity: computed from one layer's router only,
  never from several layers' outputs concatenated (opposite imbalances in
  two layers would cancel).

References
----------
Shazeer et al. (2017). Outrageously Large Neural Networks: The
Sparsely-Gated Mixture-of-Experts Layer.

Fedus, Zoph and Shazeer (2021). Switch Transformers: Scaling to Trillion
Parameter Models with Simple and Efficient Sparsity.

Zoph et al. (2022). ST-MoE: Designing Stable and Transferable Sparse Expert
Models.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from tinycond import functional as F
from tinycond._checks import check_positive_int
from tinycond.moe.gating import check_router_logits, check_top_k

BALANCES = ("switch", "importance", "load")

# Squared coefficient of variation


class CvSquaredCache(NamedTuple):
    values: np.ndarray  # (E,)
    mean: float
    variance: float


def cv_squared_forward(values):
    r"""Compute the squared coefficient of variation of a vector, with the population variance.

    Parameters
    ----------
    values : ndarray of shape (E,)
        Non-negative per-expert totals with a positive mean.

    Returns
    -------
    cv2 : float
    cache : CvSquaredCache

    Notes
    -----
    .. math:: CV^2(v) = \frac{\frac1E \sum_i (v_i - m)^2}{m^2}, \qquad m = \frac1E \sum_i v_i
    """
    mean = float(np.mean(values))
    if not mean > 0:
        raise ValueError(
            f"values must have a positive mean for the coefficient of variation, got mean {mean}; "
            f"every expert total is zero or negative"
        )
    variance = float(np.mean((values - mean) ** 2))
    return variance / mean**2, CvSquaredCache(values, mean, variance)


def cv_squared_backward(dcv2, cache: CvSquaredCache):
    r"""Return ``dvalues`` of shape (E,).

    Notes
    -----
    .. math:: \frac{\partial CV^2}{\partial v_i} = \frac{2}{E m^2} \Bigl((v_i - m) - \frac{\mathrm{Var}(v)}{m}\Bigr)
    """
    values, mean, variance = cache
    return dcv2 * 2.0 / (values.size * mean**2) * ((values - mean) - variance / mean)


# Switch Transformer auxiliary loss


class SwitchLossCache(NamedTuple):
    probs: np.ndarray  # (N, E) full softmax of the router logits
    fraction: np.ndarray  # (E,) f_i, a constant of the loss


def switch_loss_forward(router_logits, expert_index):
    r"""Compute the Switch Transformer load-balancing loss :math:`E \sum_i f_i P_i`.

    1. ``probs``: the softmax of all E logits, shape (N, E).
    2. ``fraction``: each expert's count in ``expert_index`` divided by
       N k, shape (E,).
    3. The loss is E times the sum over experts of ``fraction`` times the
       mean of ``probs`` over tokens.

    Hint: ``np.bincount(ids, minlength=E)`` counts every expert, unused ones too.

    Parameters
    ----------
    router_logits : ndarray of shape (N, E)
    expert_index : int ndarray of shape (N, k)
        The router's choices. They fix :math:`f`, which carries no gradient.

    Returns
    -------
    loss : float
        1 for a perfectly uniform router, E when every token goes to one
        expert with probability 1.
    cache : SwitchLossCache

    Notes
    -----
    .. math::
        L = E \sum_{i=1}^{E} f_i P_i, \qquad
        f_i = \frac{1}{N k} \sum_{t, s} [e_{t,s} = i], \qquad
        P_i = \frac1N \sum_t \mathrm{softmax}(z_t)_i

    :math:`P` uses the full softmax over all E logits, whatever gating
    convention picks the gates, so every router logit enters the loss.

    References
    ----------
    Fedus, Zoph and Shazeer (2021). Switch Transformers: Scaling to Trillion
    Parameter Models with Simple and Efficient Sparsity.
    """
    router_logits = check_router_logits(router_logits)
    N, E = router_logits.shape
    expert_index = _check_expert_index(expert_index, N, E)

    ### BEGIN SOLUTION ex3_3
    probs = F.softmax(router_logits)  # (N, E)
    fraction = np.bincount(expert_index.reshape(-1), minlength=E) / expert_index.size  # (E,)
    loss = E * float(np.sum(fraction * probs.mean(axis=0)))
    return loss, SwitchLossCache(probs, fraction)
    ### END SOLUTION


def switch_loss_backward(dloss, cache: SwitchLossCache):
    r"""Return ``dlogits`` of shape (N, E).

    Steps:

    1. :math:`f` is a count, so only :math:`P` carries gradient. With
       ``dloss`` the upstream gradient on the loss (a float),
       :math:`\partial L / \partial p_{t,i} = \mathrm{dloss}\, E f_i / N`
       for every token t. The loss carries no coefficient of its own: a
       caller that weights it by alpha passes ``dloss`` already multiplied.
    2. Apply the softmax vector-Jacobian product to that (N, E) array.

    Hint: reuse :func:`tinycond.functional.softmax_backward`.
    """
    ### BEGIN SOLUTION ex3_3
    probs, fraction = cache
    N, E = probs.shape
    dprobs = np.broadcast_to(dloss * E * fraction / N, probs.shape)  # (N, E)
    return F.softmax_backward(dprobs, F.SoftmaxCache(probs))
    ### END SOLUTION


# Router z-loss


class ZLossCache(NamedTuple):
    lse: np.ndarray  # (N,) log-sum-exp of each row of logits
    probs: np.ndarray  # (N, E)


def z_loss_forward(router_logits):
    r"""Compute the router z-loss, the mean over tokens of the squared log-sum-exp of the logits.

    It keeps router logits small, which keeps the router's softmax away from
    the round-off of large exponents.

    1. ``lse``: the log-sum-exp of each row, shape (N,).
    2. The loss is the mean of ``lse ** 2``; the cache keeps ``lse`` and the
       row softmax for backward.

    Hint: :func:`tinycond.functional.logsumexp` is shifted by the row maximum.

    Parameters
    ----------
    router_logits : ndarray of shape (N, E)

    Returns
    -------
    loss : float
    cache : ZLossCache

    Notes
    -----
    .. math:: L_z = \frac1N \sum_{t=1}^{N} \Bigl(\log \sum_{i=1}^{E} e^{z_{t,i}}\Bigr)^2

    The loss is the mean of squares, not the square of the mean. The
    log-sum-exp is shifted by the row maximum, so logits of 1e4 give a
    finite 1e8.

    References
    ----------
    Zoph et al. (2022). ST-MoE: Designing Stable and Transferable Sparse
    Expert Models.
    """
    router_logits = check_router_logits(router_logits)
    ### BEGIN SOLUTION ex3_3
    lse = F.logsumexp(router_logits)  # (N,)
    return float(np.mean(lse**2)), ZLossCache(lse, F.softmax(router_logits))
    ### END SOLUTION


def z_loss_backward(dloss, cache: ZLossCache):
    r"""Return ``dlogits`` of shape (N, E): :math:`\frac{2}{N} \mathrm{lse}(z_t)\, \mathrm{softmax}(z_t)`.

    Steps: the derivative of the log-sum-exp is the softmax, so each row
    gets ``2 * lse / N`` times its softmax, times ``dloss``.

    Hint: ``cache.lse[:, None]`` broadcasts one value per row.
    """
    ### BEGIN SOLUTION ex3_3
    lse, probs = cache
    return (dloss * 2.0 / lse.size) * lse[:, None] * probs
    ### END SOLUTION


# Shazeer's importance loss


class ImportanceLossCache(NamedTuple):
    expert_index: np.ndarray  # (N, k)
    cv: CvSquaredCache


def importance_loss_forward(gates, expert_index, *, n_experts):
    r"""Compute Shazeer's importance loss, the squared CV of each expert's summed gates.

    1. ``importance``: for each expert, the sum of the gates assigned to it,
       shape (E,).
    2. The loss is :func:`cv_squared_forward` of ``importance``.

    Hint: ``np.bincount`` takes ``weights=`` to sum gates instead of counting.

    Parameters
    ----------
    gates : ndarray of shape (N, k)
    expert_index : int ndarray of shape (N, k)
    n_experts : int

    Returns
    -------
    loss : float
        0 when every expert receives the same total gate.
    cache : ImportanceLossCache

    Notes
    -----
    .. math:: \mathrm{Importance}_i = \sum_{t} G_i(x_t), \qquad L = CV^2(\mathrm{Importance})

    where :math:`G_i(x_t)` is zero for experts not selected by token t.

    References
    ----------
    Shazeer et al. (2017). Outrageously Large Neural Networks: The
    Sparsely-Gated Mixture-of-Experts Layer.
    """
    n_experts = check_positive_int(n_experts, "n_experts")
    expert_index = _check_expert_index(expert_index, gates.shape[0], n_experts)
    if gates.shape != expert_index.shape:
        raise ValueError(f"gates must have the shape of expert_index {expert_index.shape}, got {gates.shape}")
    ### BEGIN SOLUTION ex3_4
    importance = np.bincount(expert_index.reshape(-1), weights=gates.reshape(-1), minlength=n_experts)  # (E,)
    loss, cv_cache = cv_squared_forward(importance)
    return loss, ImportanceLossCache(expert_index, cv_cache)
    ### END SOLUTION


def importance_loss_backward(dloss, cache: ImportanceLossCache):
    """Return ``dgates`` of shape (N, k).

    Steps: get ``dimportance`` of shape (E,) from
    :func:`cv_squared_backward`; each gate then receives the entry of the
    expert it belongs to.

    Hint: ``dimportance[expert_index]`` has shape (N, k).
    """
    ### BEGIN SOLUTION ex3_4
    dimportance = cv_squared_backward(dloss, cache.cv)  # (E,)
    return dimportance[cache.expert_index]  # (N, k)
    ### END SOLUTION


def _check_expert_index(expert_index, n_tokens, n_experts):
    if not isinstance(expert_index, np.ndarray) or expert_index.dtype.kind not in "iu":
        raise TypeError(f"expert_index must be an integer ndarray of shape (N, k), got {type(expert_index).__name__}")
    if expert_index.ndim != 2 or expert_index.shape[0] != n_tokens:
        raise ValueError(f"expert_index must have shape ({n_tokens}, k), got {expert_index.shape}")
    if expert_index.size and (expert_index.min() < 0 or expert_index.max() >= n_experts):
        raise ValueError(
            f"expert_index must hold expert ids in [0, {n_experts}), got values from "
            f"{expert_index.min()} to {expert_index.max()}"
        )
    return expert_index

