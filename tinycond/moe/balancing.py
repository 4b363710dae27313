r"""Load-balancing losses for a sparse router, as forward/backward pairs.

Without a balancing term a router trained by gradient descent tends to
collapse: the experts that win early get trained, get better, and win more.
Each loss here is small when tokens spread evenly over the experts. The
layer multiplies each by its coefficient; the values returned here are
unscaled.

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
from tinycond.moe.normal import normal_cdf, normal_pdf

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
    convention picks the gates, so the loss always sees the whole router.

    References
    ----------
    Fedus, Zoph and Shazeer (2021). Switch Transformers, equations 4 to 6.
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

    1. :math:`f` is a count, so only :math:`P` carries gradient:
       :math:`\partial L / \partial p_{t,i} = E f_i / N` for every token t.
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

    The mean of squares, not the square of the mean; the log-sum-exp is
    shifted by the row maximum, so logits of 1e4 give a finite 1e8.

    References
    ----------
    Zoph et al. (2022). ST-MoE: Designing Stable and Transferable Sparse
    Expert Models, equation 5.
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
    Shazeer et al. (2017). Outrageously Large Neural Networks, equations 6 and 7.
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


# Shazeer's smooth load estimator


class LoadLossCache(NamedTuple):
    z: np.ndarray  # (N, E) standardised margin to the threshold
    noise_scale: np.ndarray  # (N, E)
    selected: np.ndarray  # (N, E) bool, expert i among the top k of the noisy logits
    kth: np.ndarray  # (N,) column of the k-th largest noisy logit
    next_after_kth: np.ndarray  # (N,) column of the (k+1)-th largest noisy logit
    cv: CvSquaredCache


def load_loss_forward(clean_logits, noisy_logits, noise_scale, *, top_k):
    r"""Compute Shazeer's load loss: the squared CV of each expert's expected token count.

    The count of tokens an expert receives is a step function of the logits,
    so it has no useful gradient. Shazeer et al. replace it by its
    expectation under the noise: the probability that expert i would still
    be selected if only its own noise were drawn again.

    Parameters
    ----------
    clean_logits : ndarray of shape (N, E)
        Router logits before noise, ``x @ W_gate``.
    noisy_logits : ndarray of shape (N, E)
        The logits the router selected with, ``clean + noise * noise_scale``.
    noise_scale : ndarray of shape (N, E)
        Standard deviation of each logit's noise; every entry must be > 0.
    top_k : int
        Experts selected per token, ``1 <= top_k < E``.

    Returns
    -------
    loss : float
    cache : LoadLossCache

    Notes
    -----
    .. math::
        P(x, i) = \Phi\Bigl(\frac{(x W_g)_i - \mathrm{kth\_excluding}(H(x), k, i)}{s_i(x)}\Bigr),
        \qquad \mathrm{Load}_i = \sum_x P(x, i), \qquad L = CV^2(\mathrm{Load})

    ``kth_excluding(H, k, i)`` is the k-th largest noisy logit once entry i is
    removed: the (k+1)-th largest of H if i is selected, the k-th largest if
    not. It is the threshold that expert i must beat, and gradient flows into
    the noisy logit that sets it. The estimator is undefined without noise
    (:math:`s = 0`), and with ``top_k = E`` every expert is always selected.

    References
    ----------
    Shazeer et al. (2017). Outrageously Large Neural Networks, appendix A,
    equations 8 to 11.
    """
    clean_logits = check_router_logits(clean_logits, "clean_logits")
    noisy_logits = check_router_logits(noisy_logits, "noisy_logits")
    N, E = clean_logits.shape
    if noisy_logits.shape != (N, E) or noise_scale.shape != (N, E):
        raise ValueError(
            f"clean_logits, noisy_logits and noise_scale must share one shape (N, E), got "
            f"{clean_logits.shape}, {noisy_logits.shape} and {noise_scale.shape}"
        )
    top_k = check_top_k(top_k, E)
    if top_k == E:
        raise ValueError(f"the load loss needs top_k < n_experts, got top_k = n_experts = {E}: every expert is always selected")
    if not np.all(noise_scale > 0):
        raise ValueError(
            f"the load loss needs noise: noise_scale must be > 0 everywhere, got minimum {noise_scale.min()}; "
            f"route with noisy logits (noisy=True, noise_std > 0)"
        )

    ### BEGIN SOLUTION ex3_4
    order = np.argsort(-noisy_logits, axis=1, kind="stable")  # (N, E), the tie-break of select_top_k
    rows = np.arange(N)
    kth, next_after_kth = order[:, top_k - 1], order[:, top_k]  # (N,)
    selected = np.zeros((N, E), dtype=bool)
    np.put_along_axis(selected, order[:, :top_k], True, axis=1)
    threshold = np.where(selected, noisy_logits[rows, next_after_kth][:, None], noisy_logits[rows, kth][:, None])  # (N, E)
    z = (clean_logits - threshold) / noise_scale
    load = normal_cdf(z).sum(axis=0)  # (E,)
    loss, cv_cache = cv_squared_forward(load)
    return loss, LoadLossCache(z, noise_scale, selected, kth, next_after_kth, cv_cache)
    ### END SOLUTION


def load_loss_backward(dloss, cache: LoadLossCache):
    r"""Return ``(dclean_logits, dnoisy_logits, dnoise_scale)``, each of shape (N, E).

    Steps:

    1. ``dload`` of shape (E,) from :func:`cv_squared_backward`; every
       token's :math:`P(x, i)` receives ``dload[i]``.
    2. Through :math:`\Phi`: ``dz = dP * normal_pdf(z)``.
    3. :math:`z = (c - \tau) / s` gives ``dclean = dz / s``,
       ``dthreshold = -dz / s`` and ``dnoise_scale = -dz * z / s``.
    4. The threshold of a selected expert is the noisy logit in column
       ``next_after_kth``; that of an unselected expert is the one in column
       ``kth``. Sum ``dthreshold`` over each group of a row into its column.

    Hint: the two columns differ in every row, so plain assignment
    ``dnoisy[rows, column] = row_sum`` needs no ``np.add.at``.
    """
    ### BEGIN SOLUTION ex3_4
    z, noise_scale, selected, kth, next_after_kth, cv_cache = cache
    N, E = z.shape
    dload = cv_squared_backward(dloss, cv_cache)  # (E,)
    dz = dload[None, :] * normal_pdf(z)  # (N, E)
    dclean = dz / noise_scale
    dthreshold = -dclean
    dnoise_scale = -dz * z / noise_scale

    rows = np.arange(N)
    dnoisy = np.zeros((N, E), dtype=z.dtype)
    dnoisy[rows, next_after_kth] = np.sum(dthreshold, axis=1, where=selected)
    dnoisy[rows, kth] = np.sum(dthreshold, axis=1, where=~selected)
    return dclean, dnoisy, dnoise_scale
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

