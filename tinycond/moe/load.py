r"""Shazeer's smooth load estimator and the standard normal CDF it needs.

The number of tokens an expert receives is a step function of the router
logits, so it has no useful gradient. Shazeer et al. (2017) balance instead
the expected number under the gate noise, a sum of normal CDFs. NumPy has
no ``erf``, and ``math.erf`` would be a Python loop over tokens, so
:func:`normal_cdf` evaluates it with two vectorised expansions.

References
----------
Shazeer et al. (2017). Outrageously Large Neural Networks: The
Sparsely-Gated Mixture-of-Experts Layer.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from tinycond.moe.balancing import CvSquaredCache, cv_squared_backward, cv_squared_forward
from tinycond.moe.gating import check_router_logits, check_top_k

# Standard normal CDF and density


def normal_cdf(z):
    r"""Return the standard normal CDF :math:`\Phi(z)` elementwise.

    The relative error is about 1e-13 (checked against ``math.erfc``) while
    the result is above the subnormal range, that is for :math:`z > -37`.

    NumPy has no ``erf``, so this evaluates :math:`\Phi(z) = \tfrac12 \mathrm{erfc}(-z/\sqrt2)`
    with two vectorised expansions of :math:`\mathrm{erfc}(a)` for :math:`a = |z|/\sqrt2`:
    for :math:`a < 2` the series :math:`\mathrm{erf}(a) = \frac{2}{\sqrt\pi} e^{-a^2}
    \sum_{n \ge 0} \frac{2^n a^{2n+1}}{1 \cdot 3 \cdots (2n+1)}` (all terms positive, 40 terms),
    and for :math:`a \ge 2` the continued fraction :math:`\mathrm{erfc}(a) =
    \frac{e^{-a^2}}{\sqrt\pi} \cfrac{1}{a + \cfrac{1/2}{a + \cfrac{1}{a + \cfrac{3/2}{a + \dots}}}}`
    (60 levels). The lower tail is computed directly, so :math:`\Phi(-30)` keeps full relative
    precision instead of rounding to zero through :math:`1 - \Phi(30)`.
    """
    z = np.asarray(z, dtype=np.float64)
    a = np.abs(z) / np.sqrt(2.0)
    erfc = np.empty_like(a)

    near = a < 2.0
    a_near = a[near]
    term = a_near.copy()
    total = a_near.copy()
    for n in range(1, 40):
        term = term * (2.0 * a_near**2 / (2 * n + 1))
        total += term
    erfc[near] = 1.0 - 2.0 / np.sqrt(np.pi) * np.exp(-(a_near**2)) * total

    a_far = a[~near]
    fraction = a_far.copy()
    for n in range(60, 0, -1):
        fraction = a_far + (n / 2.0) / fraction
    erfc[~near] = np.exp(-(a_far**2)) / (np.sqrt(np.pi) * fraction)

    # erfc(a) is the two-sided tail: Phi(-|z|) = erfc(a) / 2.
    lower_tail = 0.5 * erfc
    return np.where(z < 0, lower_tail, 1.0 - lower_tail)


def normal_pdf(z):
    r"""Return the standard normal density :math:`\phi(z) = e^{-z^2/2} / \sqrt{2\pi}`."""
    return np.exp(-0.5 * np.asarray(z) ** 2) / np.sqrt(2.0 * np.pi)


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

    1. Sort each row of ``noisy_logits`` in decreasing order (stable, as
       :func:`tinycond.moe.gating.select_top_k` does). Keep the columns
       ``kth`` and ``next_after_kth`` of the k-th and (k+1)-th largest, and
       the (N, E) mask ``selected`` of the top k.
    2. ``threshold`` of shape (N, E): the noisy logit in ``next_after_kth``
       where ``selected``, the one in ``kth`` elsewhere.
    3. ``z = (clean_logits - threshold) / noise_scale``; ``load`` of shape
       (E,) sums :func:`normal_cdf` of ``z`` over tokens.
    4. The loss is :func:`cv_squared_forward` of ``load``.

    Hint: ``np.where(selected, a[:, None], b[:, None])`` picks per entry.

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
    Shazeer et al. (2017). Outrageously Large Neural Networks: The
    Sparsely-Gated Mixture-of-Experts Layer.
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
    # normal_cdf works in float64; return gradients in the dtype of the logits.
    return tuple(g.astype(z.dtype, copy=False) for g in (dclean, dnoisy, dnoise_scale))
    ### END SOLUTION
