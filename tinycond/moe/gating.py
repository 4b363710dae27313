r"""Top-k gating and noisy top-k router logits, as forward/backward pairs.

A sparse router scores every expert for every token, keeps the ``top_k``
largest scores and turns them into gate values. Two conventions exist:

* ``"topk_softmax"``: softmax over the kept logits only, so the k gates of a
  token sum to one (Shazeer et al. 2017; GShard's top-2, which divides each
  kept probability by their sum, g1 / (g1 + g2); Mixtral). Unselected logits
  get exactly zero gradient.
* ``"softmax_topk"``: softmax over all E logits, then keep the k largest
  probabilities without renormalising (Switch Transformer, k = 1). The kept
  gates sum to less than one, and every logit, selected or not, gets a
  gradient through the shared normaliser.

Top-k selection is piecewise constant in the logits, so its derivative is
zero almost everywhere and undefined only where two logits tie at the k-th
place. The gradient of the gates is therefore the gradient of a softmax with
the selected set held fixed.

References
----------
Shazeer, Mirhoseini, Maziarz, Davis, Le, Hinton and Dean (2017). Outrageously
Large Neural Networks: The Sparsely-Gated Mixture-of-Experts Layer.

Fedus, Zoph and Shazeer (2021). Switch Transformers: Scaling to Trillion
Parameter Models with Simple and Efficient Sparsity.

Lepikhin et al. (2020). GShard: Scaling Giant Models with Conditional
Computation and Automatic Sharding.

Jiang et al. (2024). Mixtral of Experts.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from tinycond import functional as F
from tinycond._checks import check_choice, check_float_array, check_positive_float, check_positive_int

GATINGS = ("topk_softmax", "softmax_topk")


def check_top_k(top_k, n_experts) -> int:
    """Return ``top_k`` as an int, or raise unless ``1 <= top_k <= n_experts``."""
    top_k = check_positive_int(top_k, "top_k")
    if top_k > n_experts:
        raise ValueError(f"top_k must be between 1 and n_experts={n_experts}, got {top_k}")
    return top_k


def check_router_logits(router_logits, name: str = "router_logits") -> np.ndarray:
    """Raise unless ``router_logits`` is a finite float array of shape (N, E)."""
    if isinstance(router_logits, np.ndarray) and router_logits.ndim == 2 and not np.all(np.isfinite(router_logits)):
        bad = int(router_logits.size - np.count_nonzero(np.isfinite(router_logits)))
        raise ValueError(
            f"{name} contains {bad} NaN or infinite entries; every router logit must be finite "
            f"(an input or router weight of huge magnitude overflows x @ W_gate)"
        )
    return check_float_array(router_logits, name, ndim=2)


def select_top_k(router_logits, top_k):
    """Return the indices of the ``top_k`` largest logits of each row, largest first.

    Ties go to the lower expert index, because a stable sort of the negated
    logits keeps equal entries in index order. Selection is deterministic,
    so routing a batch equals routing each token alone.

    Parameters
    ----------
    router_logits : ndarray of shape (N, E)
    top_k : int

    Returns
    -------
    expert_index : int ndarray of shape (N, k)
    """
    order = np.argsort(-router_logits, axis=1, kind="stable")  # (N, E)
    return order[:, :top_k]  # (N, k)


class TopkGatingCache(NamedTuple):
    expert_index: np.ndarray  # (N, k) selected experts, largest logit first
    gates: np.ndarray  # (N, k) gate values
    probs: np.ndarray | None  # (N, E) full softmax for "softmax_topk", else None
    gating: str
    n_experts: int


def topk_gating_forward(router_logits, *, top_k, gating="topk_softmax"):
    r"""Select the ``top_k`` experts of each token and compute their gate values.

    1. ``expert_index`` of shape (N, k): :func:`select_top_k` of the logits.
    2. ``"topk_softmax"``: gather the k kept logits, shape (N, k), and take
       their softmax.
    3. ``"softmax_topk"``: take the softmax of all E logits, shape (N, E),
       and gather the k kept probabilities.
    4. Return the gates and a :class:`TopkGatingCache` (``probs`` is the
       (N, E) softmax for ``"softmax_topk"`` and ``None`` otherwise).

    Hint: ``np.take_along_axis(a, expert_index, axis=1)`` gathers (N, k) entries.

    Parameters
    ----------
    router_logits : ndarray of shape (N, E)
        Router scores, for example ``x @ W_gate``.
    top_k : int
        Experts kept per token, ``1 <= top_k <= E``.
    gating : {"topk_softmax", "softmax_topk"}
        ``"topk_softmax"`` normalises over the kept logits only;
        ``"softmax_topk"`` normalises over all E logits and keeps the top k
        probabilities as they are.

    Returns
    -------
    gates : ndarray of shape (N, k)
        Gate of each selected expert, in the order of ``cache.expert_index``.
    cache : TopkGatingCache
        ``cache.expert_index`` of shape (N, k) contains the selected experts.

    Notes
    -----
    With :math:`S` the selected set of a token and :math:`z` its logits,

    .. math::
        \text{topk\_softmax:}\quad G_i = \frac{e^{z_i}}{\sum_{j \in S} e^{z_j}}, \qquad
        \text{softmax\_topk:}\quad G_i = \frac{e^{z_i}}{\sum_{j=1}^{E} e^{z_j}}, \qquad i \in S.

    The first equals the full softmax renormalised over :math:`S`, which is
    also how GShard normalises its top-2 gates.

    References
    ----------
    Shazeer et al. (2017). Outrageously Large Neural Networks.
    Lepikhin et al. (2020). GShard: Scaling Giant Models with Conditional
    Computation and Automatic Sharding.
    Fedus, Zoph and Shazeer (2021). Switch Transformers.
    """
    router_logits = check_router_logits(router_logits)
    top_k = check_top_k(top_k, router_logits.shape[1])
    gating = check_choice(gating, "gating", GATINGS)

    ### BEGIN SOLUTION ex3_1
    expert_index = select_top_k(router_logits, top_k)  # (N, k)
    if gating == "topk_softmax":
        kept_logits = np.take_along_axis(router_logits, expert_index, axis=1)  # (N, k)
        gates = F.softmax(kept_logits)
        probs = None
    else:
        probs = F.softmax(router_logits)  # (N, E)
        gates = np.take_along_axis(probs, expert_index, axis=1)  # (N, k)
    return gates, TopkGatingCache(expert_index, gates, probs, gating, router_logits.shape[1])
    ### END SOLUTION


def topk_gating_backward(dgates, cache: TopkGatingCache):
    r"""Return ``dlogits`` of shape (N, E) from ``dgates`` of shape (N, k).

    Steps:

    1. For ``"topk_softmax"``, apply the softmax vector-Jacobian product to
       the k kept gates, then place the k results at the selected columns of
       an all-zero (N, E) array.
    2. For ``"softmax_topk"``, place ``dgates`` at the selected columns of an
       all-zero (N, E) ``dprobs``, then apply the softmax vector-Jacobian
       product over all E probabilities.

    Hint: ``np.put_along_axis`` writes (N, k) values into (N, E) columns.

    Notes
    -----
    With :math:`g = \partial L / \partial G` and the selected set :math:`S`,

    .. math::
        \text{topk\_softmax:}\quad \frac{\partial L}{\partial z_i} =
            G_i \Bigl(g_i - \sum_{j \in S} G_j g_j\Bigr) \ (i \in S), \quad 0 \ (i \notin S);
        \qquad
        \text{softmax\_topk:}\quad \frac{\partial L}{\partial z_i} =
            p_i \Bigl([i \in S]\, g_i - \sum_{j \in S} p_j g_j\Bigr).
    """
    ### BEGIN SOLUTION ex3_1
    expert_index, gates, probs, gating, n_experts = cache
    if gating == "topk_softmax":
        dkept = F.softmax_backward(dgates, F.SoftmaxCache(gates))  # (N, k)
        dlogits = np.zeros((len(gates), n_experts), dtype=dgates.dtype)  # (N, E)
        np.put_along_axis(dlogits, expert_index, dkept, axis=1)
        return dlogits
    dprobs = np.zeros_like(probs)  # (N, E)
    np.put_along_axis(dprobs, expert_index, dgates, axis=1)
    return F.softmax_backward(dprobs, F.SoftmaxCache(probs))
    ### END SOLUTION



class NoisyLogitsCache(NamedTuple):
    x: np.ndarray  # (N, d_model)
    W_gate: np.ndarray  # (d_model, E)
    W_noise: np.ndarray  # (d_model, E)
    noise: np.ndarray  # (N, E) standard normal draw
    noise_std: float
    noise_logits: np.ndarray  # (N, E) x @ W_noise, before the softplus


def noisy_logits_forward(x, W_gate, W_noise, *, noise, noise_std=1.0):
    r"""Compute noisy router logits: clean logits plus Gaussian noise of learned scale.

    Parameters
    ----------
    x : ndarray of shape (N, d_model)
    W_gate : ndarray of shape (d_model, E)
        Router weights; the clean logits are ``x @ W_gate``.
    W_noise : ndarray of shape (d_model, E)
        Noise weights; the noise scale is ``noise_std * softplus(x @ W_noise)``.
    noise : ndarray of shape (N, E)
        A standard normal draw, fixed by the caller so that a forward pass can
        be repeated exactly (the finite-difference check reuses one draw).
    noise_std : float
        Standard deviation of the Gaussian before the learned scale; 1.0 is
        the formula of Shazeer et al. (2017), 0.0 turns the noise off.

    Returns
    -------
    out : tuple of three ndarrays of shape (N, E)
        ``(noisy_logits, clean_logits, noise_scale)``. The smooth load
        estimator of :mod:`tinycond.moe.balancing` needs all three.
    cache : NoisyLogitsCache

    Notes
    -----
    .. math::
        H(x) = x W_g + \epsilon \odot s(x), \qquad
        s(x) = \sigma_0\, \mathrm{softplus}(x W_{\text{noise}}), \qquad
        \epsilon \sim \mathcal N(0, 1)

    with :math:`\sigma_0` = ``noise_std``.

    References
    ----------
    Shazeer et al. (2017). Outrageously Large Neural Networks: The
    Sparsely-Gated Mixture-of-Experts Layer.
    """
    x = check_float_array(x, "x", ndim=2)
    N, d_model = x.shape
    W_gate = check_float_array(W_gate, "W_gate", ndim=2)
    W_noise = check_float_array(W_noise, "W_noise", ndim=2)
    if W_gate.shape[0] != d_model or W_noise.shape != W_gate.shape:
        raise ValueError(
            f"W_gate and W_noise must both have shape ({d_model}, E) to match x of shape {x.shape}, "
            f"got {W_gate.shape} and {W_noise.shape}"
        )
    noise = check_float_array(noise, "noise", ndim=2)
    if noise.shape != (N, W_gate.shape[1]):
        raise ValueError(f"noise must have shape (N, E) = {(N, W_gate.shape[1])}, got {noise.shape}")
    noise_std = check_positive_float(noise_std, "noise_std", allow_zero=True)

    clean_logits = x @ W_gate  # (N, E)
    noise_logits = x @ W_noise  # (N, E)
    noise_scale = noise_std * F.softplus(noise_logits)
    noisy_logits = clean_logits + noise * noise_scale
    cache = NoisyLogitsCache(x, W_gate, W_noise, noise, noise_std, noise_logits)
    return (noisy_logits, clean_logits, noise_scale), cache


def noisy_logits_backward(dout, cache: NoisyLogitsCache):
    r"""Return ``(dx, dW_gate, dW_noise)`` from the gradients of the three outputs.

    ``dout`` is ``(dnoisy_logits, dclean_logits, dnoise_scale)``, each of
    shape (N, E); the last two may be ``None`` when nothing downstream uses
    them (only the load-balancing estimator does).

    Steps:

    1. The clean logits reach the loss directly and through the noisy ones:
       ``dclean = dnoisy + dclean``.
    2. The scale reaches it directly and through the noise term:
       ``dscale = dnoisy * noise + dscale``.
    3. Through ``noise_std * softplus``, whose derivative is
       ``noise_std * sigmoid(x @ W_noise)``, to ``dnoise_logits``.
    4. Both linear maps give ``dW = x.T @ dlogits``, and ``dx`` sums both
       ``dlogits @ W.T``.

    Hint: :func:`tinycond.functional.sigmoid` is the softplus derivative.
    """
    ### BEGIN SOLUTION ex3_2
    dnoisy, dclean, dscale = dout
    x, W_gate, W_noise, noise, noise_std, noise_logits = cache
    dclean_total = dnoisy if dclean is None else dnoisy + dclean
    dscale_total = dnoisy * noise if dscale is None else dnoisy * noise + dscale
    dnoise_logits = dscale_total * (noise_std * F.sigmoid(noise_logits))  # (N, E)
    dW_gate = x.T @ dclean_total  # (d_model, E)
    dW_noise = x.T @ dnoise_logits  # (d_model, E)
    dx = dclean_total @ W_gate.T + dnoise_logits @ W_noise.T  # (N, d_model)
    return dx, dW_gate, dW_noise
    ### END SOLUTION
