r"""Sparse mixture of experts: each token runs only its top-k experts.

The layer chains the pieces of this subpackage:

1. router logits ``x @ W_gate``, plus learned Gaussian noise when noisy
   (:mod:`tinycond.moe.gating`);
2. top-k selection and gate values (:mod:`tinycond.moe.gating`);
3. grouping by expert, capacity and dropping (:mod:`tinycond.moe.dispatch`);
4. each expert's MLP on its own rows, and the gate-weighted sum back
   per token (:mod:`tinycond.moe.dispatch`);
5. the load-balancing loss and the router z-loss
   (:mod:`tinycond.moe.balancing`).

The cost of step 4 grows with k, not with E: a token visits k experts
whatever the number of experts, so parameters can grow without compute
growing with them.

References
----------
Shazeer et al. (2017). Outrageously Large Neural Networks: The
Sparsely-Gated Mixture-of-Experts Layer.

Fedus, Zoph and Shazeer (2021). Switch Transformers: Scaling to Trillion
Parameter Models with Simple and Efficient Sparsity.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from tinycond import functional as F
from tinycond._checks import as_generator, check_choice, check_float_array, check_positive_float, check_positive_int
from tinycond.moe import balancing as B
from tinycond.moe.load import load_loss_backward, load_loss_forward
from tinycond.moe.dense import init_expert_weights
from tinycond.moe.dispatch import (
    PRIORITIES,
    DispatchPlan,
    GroupedMlpCache,
    combine_slots,
    expert_capacity,
    grouped_mlp_backward,
    grouped_mlp_forward,
    plan_dispatch,
)
from tinycond.moe.gating import (
    GATINGS,
    NoisyLogitsCache,
    TopkGatingCache,
    check_router_logits,
    check_top_k,
    noisy_logits_backward,
    noisy_logits_forward,
    topk_gating_backward,
    topk_gating_forward,
)
from tinycond.nn import Module


class SparseMoECache(NamedTuple):
    x: np.ndarray  # (N, d_model)
    W_gate: np.ndarray  # (d_model, E)
    W_noise: np.ndarray | None  # (d_model, E), None for a router without noise weights
    router_logits: np.ndarray  # (N, E) the logits the router selected with
    noisy: NoisyLogitsCache | None  # None when routing used no noise
    gating: TopkGatingCache
    plan: DispatchPlan
    gates_sorted: np.ndarray  # (M,) gate of each kept assignment, grouped by expert
    expert_out: np.ndarray  # (M, d_out) expert outputs before the gate
    experts: GroupedMlpCache
    balance: str | None
    balance_cache: tuple | None
    balance_coef: float
    balance_loss: float
    z_cache: B.ZLossCache
    z_loss_coef: float
    z_loss: float


def sparse_moe_forward(
    x,
    W_gate,
    W1,
    b1,
    W2,
    b2,
    W_noise=None,
    *,
    top_k,
    gating="topk_softmax",
    noise=None,
    noise_std=1.0,
    capacity_factor=None,
    priority="position",
    balance=None,
    balance_coef=1e-2,
    z_loss_coef=0.0,
    activation="relu",
):
    r"""Route each token to its top-k experts, run them, and mix their outputs by the gates.

    Parameters
    ----------
    x : ndarray of shape (N, d_model)
    W_gate : ndarray of shape (d_model, E)
    W1 : ndarray of shape (E, d_model, d_hidden)
    b1 : ndarray of shape (E, d_hidden)
    W2 : ndarray of shape (E, d_hidden, d_out)
    b2 : ndarray of shape (E, d_out)
    W_noise : ndarray of shape (d_model, E), optional
        Noise weights of noisy top-k gating. Routing is noisy when both
        ``W_noise`` and ``noise`` are given.
    top_k : int
    gating : {"topk_softmax", "softmax_topk"}
        See :func:`tinycond.moe.gating.topk_gating_forward`.
    noise : ndarray of shape (N, E), optional
        Standard normal draw for noisy gating, fixed by the caller.
    noise_std : float
        Standard deviation of the noise before its learned scale.
    capacity_factor : float, optional
        Each expert takes at most ``ceil(capacity_factor * N * k / E)``
        assignments; ``None`` drops nothing.
    priority : {"position", "gate"}
        Which assignments an over-full expert keeps; see
        :func:`tinycond.moe.dispatch.plan_dispatch`.
    balance : {None, "switch", "importance", "load"}
        Load-balancing loss; ``"load"`` needs noisy routing.
    balance_coef, z_loss_coef : float
        Coefficients of the balancing loss and the router z-loss.
    activation : {"relu", "gelu", "sigmoid"}

    Returns
    -------
    out : tuple
        ``(y, aux_loss)``: ``y`` of shape (N, d_out) and the float
        ``balance_coef * balance_loss + z_loss_coef * z_loss``.
    cache : SparseMoECache

    Notes
    -----
    With :math:`S(x)` the kept experts of token x and :math:`G_i(x)` their gates,

    .. math:: y(x) = \sum_{i \in S(x)} G_i(x)\, f_i(x)

    An assignment dropped by the capacity limit contributes zero. The
    balancing loss and the z-loss use the logits the router selected with
    (the noisy ones when routing is noisy).
    """
    x = check_float_array(x, "x", ndim=2)
    N, d_model = x.shape
    E = W_gate.shape[1]
    if W_gate.shape[0] != d_model or W1.shape[:2] != (E, d_model):
        raise ValueError(
            f"W_gate must have shape (d_model, E) and W1 (E, d_model, d_hidden) for x of shape {x.shape}, "
            f"got W_gate {W_gate.shape} and W1 {W1.shape}"
        )
    top_k = check_top_k(top_k, E)
    balance = check_choice(balance, "balance", (None,) + B.BALANCES)
    balance_coef = check_positive_float(balance_coef, "balance_coef", allow_zero=True)
    z_loss_coef = check_positive_float(z_loss_coef, "z_loss_coef", allow_zero=True)
    if noise is not None and W_noise is None:
        raise ValueError("noise was given but W_noise is None; noisy gating needs both the noise weights and the draw")
    noisy = W_noise is not None and noise is not None
    if balance == "load" and not noisy:
        raise ValueError(
            "balance='load' needs noisy routing: Shazeer's load estimator is a probability under the "
            "gate noise and is undefined without it; pass W_noise and noise, or use balance='switch'"
        )
    capacity = expert_capacity(capacity_factor, N, top_k, E)

    # 1. Router logits, with learned-scale Gaussian noise when noisy (Shazeer et al. 2017).
    noisy_cache = None
    if noisy:
        (router_logits, clean_logits, noise_scale), noisy_cache = noisy_logits_forward(
            x, W_gate, W_noise, noise=noise, noise_std=noise_std
        )
    else:
        router_logits = x @ W_gate  # (N, E)
    router_logits = check_router_logits(router_logits)

    # 2. Top-k selection and gates.
    gates, gating_cache = topk_gating_forward(router_logits, top_k=top_k, gating=gating)  # (N, k)

    # 3. Group the assignments by expert, dropping those over capacity.
    plan = plan_dispatch(gating_cache.expert_index, E, capacity=capacity, priority=priority, gates=gates)

    # 4. Every expert on its own rows, then the gate-weighted sum per token.
    x_sorted = x[plan.token]  # (M, d_model)
    expert_out, experts_cache = grouped_mlp_forward(
        x_sorted, W1, b1, W2, b2, group_offsets=plan.group_offsets, activation=activation
    )  # (M, d_out)
    gates_sorted = gates.reshape(-1)[plan.flat_position]  # (M,)
    y = combine_slots(expert_out * gates_sorted[:, None], plan, N)  # (N, d_out)

    # 5. Auxiliary losses, each unscaled here and scaled in aux_loss.
    balance_loss, balance_cache = 0.0, None
    if balance == "switch":
        balance_loss, balance_cache = B.switch_loss_forward(router_logits, gating_cache.expert_index)
    elif balance == "importance":
        balance_loss, balance_cache = B.importance_loss_forward(gates, gating_cache.expert_index, n_experts=E)
    elif balance == "load":
        balance_loss, balance_cache = load_loss_forward(clean_logits, router_logits, noise_scale, top_k=top_k)
    z_loss, z_cache = B.z_loss_forward(router_logits)
    aux_loss = balance_coef * balance_loss + z_loss_coef * z_loss

    cache = SparseMoECache(
        x, W_gate, W_noise, router_logits, noisy_cache, gating_cache, plan, gates_sorted, expert_out,
        experts_cache, balance, balance_cache, balance_coef, balance_loss, z_cache, z_loss_coef, z_loss,
    )
    return (y, aux_loss), cache


def sparse_moe_backward(dout, cache: SparseMoECache):
    r"""Return ``(dx, dW_gate, dW1, db1, dW2, db2)``, plus ``dW_noise`` when ``W_noise`` was given.

    ``dout`` is ``(dy, daux)``: ``dy`` of shape (N, d_out) and the scalar
    gradient of the auxiliary loss (1.0 when the loss is added as it is).

    Steps, the forward steps in reverse:

    5. The auxiliary losses give ``dlogits`` (Switch loss, z-loss, the noisy
       logits of the load loss), ``dgates`` (importance loss) and, for the
       load loss, the clean logits and the noise scale.
    4. Gather ``dy`` into the grouped order with the forward plan. Each kept
       gate gets :math:`\langle dy_t, f_i(x_t) \rangle`; each expert output
       gets ``gate * dy``; the experts' backward gives ``dx_sorted`` and the
       weight gradients; :func:`combine_slots` sums ``dx_sorted`` per token.
    2. ``topk_gating_backward`` turns ``dgates`` into ``dlogits``.
    1. The router: ``dW_gate = x.T @ dlogits`` and ``dx += dlogits @ W_gate.T``,
       or :func:`noisy_logits_backward` when routing was noisy.

    Hint: a dropped assignment is not in the plan, so its gate and its
    expert get no gradient from ``dy``.

    Returns
    -------
    dx : ndarray of shape (N, d_model)
    dW_gate : ndarray of shape (d_model, E)
    dW1, db1, dW2, db2 : ndarray, shapes of the expert weights
    dW_noise : ndarray of shape (d_model, E)
        Only when ``W_noise`` was given; zero when the forward pass drew no noise.
    """
    ### BEGIN SOLUTION ex3_6
    dy, daux = dout
    daux = 0.0 if daux is None else float(daux)
    N, E = cache.router_logits.shape
    plan = cache.plan
    dlogits = np.zeros((N, E), dtype=dy.dtype)
    dgates = np.zeros(cache.gating.gates.shape, dtype=dy.dtype)  # (N, k)
    dclean = dnoise_scale = None

    # 5. Auxiliary losses.
    dbalance = daux * cache.balance_coef
    if cache.balance == "switch":
        dlogits += B.switch_loss_backward(dbalance, cache.balance_cache)
    elif cache.balance == "importance":
        dgates += B.importance_loss_backward(dbalance, cache.balance_cache)
    elif cache.balance == "load":
        dclean, dnoisy, dnoise_scale = load_loss_backward(dbalance, cache.balance_cache)
        dlogits += dnoisy
    if cache.z_loss_coef:
        dlogits += B.z_loss_backward(daux * cache.z_loss_coef, cache.z_cache)

    # 4. Experts and the weighted sum, with the forward grouping.
    dy_sorted = dy[plan.token]  # (M, d_out)
    dgates.reshape(-1)[plan.flat_position] += np.einsum("md,md->m", dy_sorted, cache.expert_out)
    dexpert_out = dy_sorted * cache.gates_sorted[:, None]  # (M, d_out)
    dx_sorted, dW1, db1, dW2, db2 = grouped_mlp_backward(dexpert_out, cache.experts)
    dx = combine_slots(dx_sorted, plan, N)  # (N, d_model)

    # 2. Gating.
    dlogits += topk_gating_backward(dgates, cache.gating)

    # 1. Router.
    if cache.noisy is not None:
        dx_router, dW_gate, dW_noise = noisy_logits_backward((dlogits, dclean, dnoise_scale), cache.noisy)
    else:
        dx_router = dlogits @ cache.W_gate.T  # (N, d_model)
        dW_gate = cache.x.T @ dlogits  # (d_model, E)
        dW_noise = None if cache.W_noise is None else np.zeros_like(cache.W_noise)
    dx += dx_router

    grads = (dx, dW_gate, dW1, db1, dW2, db2)
    return grads if cache.W_noise is None else grads + (dW_noise,)
    ### END SOLUTION


class SparseMoE(Module):
    r"""Sparse mixture of E two-layer MLP experts: each token runs its top-k experts.

    Parameters
    ----------
    d_model, d_hidden, n_experts : int
        Input width, hidden width of each expert, number of experts E.
    top_k : int
        Experts per token, ``1 <= top_k <= n_experts``.
    d_out : int, optional
        Output width; defaults to ``d_model``.
    activation : {"relu", "gelu", "sigmoid"}
    gating : {"topk_softmax", "softmax_topk"}
        Renormalise over the kept logits (Shazeer et al.; Mixtral), or keep
        the full-softmax probabilities (Switch; GShard).
    noisy : bool
        Noisy top-k gating with learned noise weights ``W_noise``.
    noise_std : float
        Standard deviation of the noise draw before its learned scale.
    capacity_factor : float, optional
        Expert capacity is ``ceil(capacity_factor * N * k / E)``; ``None``
        drops nothing.
    priority : {"position", "gate"}
        Which assignments an over-full expert keeps.
    balance : {None, "switch", "importance", "load"}
        Load-balancing loss added to ``aux_loss``; ``"load"`` needs ``noisy=True``
        and ``top_k < n_experts``.
    balance_coef, z_loss_coef : float
        Coefficients of the balancing loss and the router z-loss.
    rng : Generator or int
        Initialises the weights; the same Generator later draws the noise.
    gate_scale : float
        ``W_gate`` starts as normal noise of standard deviation
        ``gate_scale / sqrt(d_model)``. Shazeer et al. start it at zero,
        which makes every logit tie until noise breaks the ties. A small
        random start sends different tokens to different experts from the
        first step, with or without noise. ``W_noise`` starts at zero, as
        Shazeer et al. start it.

    Attributes
    ----------
    expert_index : int ndarray of shape (N, k)
        Selected experts of the last forward, largest gate first.
    gates : ndarray of shape (N, k)
    router_probs : ndarray of shape (N, E)
        Softmax over all E routing logits.
    kept : bool ndarray of shape (N, k)
        False where an assignment was dropped for capacity.
    n_dropped : int
    expert_counts : int ndarray of shape (E,)
        Assignments routed to each expert, before capacity.
    balance_loss, z_loss : float
        Unscaled auxiliary losses; ``aux_loss`` is their scaled sum.
        ``balance_loss`` is NaN when no balancing loss was computed.

    Notes
    -----
    ``forward(x, noise=None)``: with ``noisy=True`` the noise is ``noise`` if
    given, otherwise a fresh draw from the Generator in training mode and
    none at all in evaluation mode. Without noise the ``"load"`` loss is
    undefined, so in evaluation mode it is left out of ``aux_loss`` (its
    value reads as NaN).
    """

    def __init__(
        self, d_model, d_hidden, n_experts, top_k=2, *, d_out=None, activation="relu", gating="topk_softmax",
        noisy=False, noise_std=1.0, capacity_factor=None, priority="position", balance=None, balance_coef=1e-2,
        z_loss_coef=0.0, rng, gate_scale=1.0, dtype=np.float64,
    ):
        super().__init__()
        self.d_model = check_positive_int(d_model, "d_model")
        self.d_hidden = check_positive_int(d_hidden, "d_hidden")
        self.n_experts = check_positive_int(n_experts, "n_experts")
        self.top_k = check_top_k(top_k, self.n_experts)
        self.d_out = self.d_model if d_out is None else check_positive_int(d_out, "d_out")
        self.activation = check_choice(activation, "activation", tuple(F.ACTIVATIONS))
        self.gating = check_choice(gating, "gating", GATINGS)
        self.noisy = bool(noisy)
        self.noise_std = check_positive_float(noise_std, "noise_std", allow_zero=True)
        self.capacity_factor = None if capacity_factor is None else check_positive_float(capacity_factor, "capacity_factor")
        self.priority = check_choice(priority, "priority", PRIORITIES)
        self.balance = check_choice(balance, "balance", (None,) + B.BALANCES)
        self.balance_coef = check_positive_float(balance_coef, "balance_coef", allow_zero=True)
        self.z_loss_coef = check_positive_float(z_loss_coef, "z_loss_coef", allow_zero=True)
        if self.balance == "load" and not (self.noisy and self.noise_std > 0):
            raise ValueError(
                f"balance='load' needs noisy gating (noisy=True, noise_std > 0), got noisy={noisy}, noise_std={noise_std}: "
                f"Shazeer's load estimator is a probability under the gate noise; use balance='switch' without noise"
            )
        if self.balance == "load" and self.top_k == self.n_experts:
            raise ValueError(f"balance='load' needs top_k < n_experts, got top_k = n_experts = {self.n_experts}")
        self.rng = as_generator(rng)

        scale = gate_scale / np.sqrt(self.d_model)
        self.add_parameter("W_gate", (self.rng.standard_normal((self.d_model, self.n_experts)) * scale).astype(dtype))
        if self.noisy:
            self.add_parameter("W_noise", np.zeros((self.d_model, self.n_experts), dtype=dtype))
        weights = init_expert_weights(self.n_experts, self.d_model, self.d_hidden, self.d_out, self.rng, activation, dtype)
        for name, value in zip(("W1", "b1", "W2", "b2"), weights):
            self.add_parameter(name, value)
        self.cache = None
        self.expert_index = self.gates = self.router_logits = self.router_probs = self.kept = None
        self.n_dropped, self.expert_counts = 0, None
        self.balance_loss = self.z_loss = float("nan")

    def forward(self, x, noise=None):
        """Return the layer output of shape (N, d_out) and set ``aux_loss``; see the class notes for ``noise``."""
        check_float_array(x, "x", ndim=2, last_dim=self.d_model)
        N = x.shape[0]
        if noise is not None and not self.noisy:
            raise ValueError("noise was given but this layer was built with noisy=False")
        if noise is not None:
            check_float_array(noise, "noise", ndim=2)
            if noise.shape != (N, self.n_experts):
                raise ValueError(f"noise must have shape (N, E) = {(N, self.n_experts)}, got {noise.shape}")
            noise = noise.astype(x.dtype, copy=False)
        elif self.noisy and self.training:
            noise = self.rng.standard_normal((N, self.n_experts)).astype(x.dtype, copy=False)
        balance = self.balance if (self.balance != "load" or noise is not None) else None

        p = self.params
        (y, aux_loss), self.cache = sparse_moe_forward(
            x, p["W_gate"], p["W1"], p["b1"], p["W2"], p["b2"], p.get("W_noise"),
            top_k=self.top_k, gating=self.gating, noise=noise, noise_std=self.noise_std,
            capacity_factor=self.capacity_factor, priority=self.priority, balance=balance,
            balance_coef=self.balance_coef, z_loss_coef=self.z_loss_coef, activation=self.activation,
        )
        self.aux_loss = float(aux_loss)

        cache = self.cache
        self.expert_index, self.gates = cache.gating.expert_index, cache.gating.gates
        self.router_logits, self.router_probs = cache.router_logits, F.softmax(cache.router_logits)
        self.kept, self.n_dropped, self.expert_counts = cache.plan.kept, cache.plan.n_dropped, cache.plan.expert_counts
        self.balance_loss = cache.balance_loss if cache.balance else float("nan")
        self.z_loss = cache.z_loss
        return y

    def backward(self, dy):
        """Return ``dx`` of shape (N, d_model); add every parameter gradient, the auxiliary losses' included."""
        if self.cache is None:
            raise RuntimeError("backward called before forward")
        dx, *dparams = sparse_moe_backward((dy, 1.0), self.cache)
        names = ("W_gate", "W1", "b1", "W2", "b2") + (("W_noise",) if self.noisy else ())
        for name, grad in zip(names, dparams):
            self.grads[name] += grad
        return dx

    def own_choices(self):
        """Return the selected experts, the kept mask and, for ReLU experts, the hidden sign pattern."""
        if self.cache is None:
            return {}
        choices = {"expert_index": self.expert_index, "kept": self.kept}
        if self.activation == "relu":
            choices["positive"] = [c.activation.positive for c in self.cache.experts.experts if c is not None]
        return choices
