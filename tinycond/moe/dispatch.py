r"""Dispatch: expert capacity, priority, grouping by expert, and combining back.

After top-k gating every token has k (expert, gate) assignments. Running
each expert only on its own tokens takes three steps:

1. **Group** the N k assignments by expert with one stable sort of their
   expert ids, so each expert's tokens form one contiguous slice.
2. **Cap** each expert at ``capacity`` assignments. The rest are dropped for
   that expert: their output for that slot is zero, and a residual
   connection around the layer carries the token on unchanged.
3. **Combine**: each expert output, times its gate, goes back to its
   (token, slot) place in an (N, k, d) array, and the k slots are summed.
   Every (token, slot) place is written at most once, so plain fancy
   assignment replaces ``np.add.at``.

Only (N k, d) arrays are built, never (N, E, d): memory grows with k, not
with E.

References
----------
Lepikhin et al. (2020). GShard: Scaling Giant Models with Conditional
Computation and Automatic Sharding.

Fedus, Zoph and Shazeer (2021). Switch Transformers: Scaling to Trillion
Parameter Models with Simple and Efficient Sparsity.

Riquelme et al. (2021). Scaling Vision with Sparse Mixture of Experts.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import NamedTuple

import numpy as np

from tinycond import layers as L
from tinycond._checks import check_choice, check_positive_float, check_positive_int

PRIORITIES = ("position", "gate")


def expert_capacity(capacity_factor, n_tokens, top_k, n_experts):
    r"""Return how many assignments one expert may take, or ``None`` for no limit.

    1. Read the factor as an exact fraction, ``Fraction(repr(capacity_factor))``,
       and multiply by N k / E.
    2. Take the ceiling and clamp it to N.

    Hint: ``math.ceil`` of a ``Fraction`` is exact.

    Parameters
    ----------
    capacity_factor : float or None
        Slack over a perfectly even split; ``None`` means no dropping.
    n_tokens, top_k, n_experts : int
        N, k and E.

    Returns
    -------
    capacity : int or None
        :math:`\min(N, \lceil c N k / E \rceil)`, at least 1.

    Notes
    -----
    The factor is read as the decimal it prints as (``repr``) and the
    ceiling is taken in exact rational arithmetic. In floating point
    ``1.1 * 100 * 1 / 2`` is 55.000000000000007, whose ceiling is 56 rather
    than 55. The result is clamped to N because an expert can take each
    token at most once (a token's k experts are distinct).
    """
    if capacity_factor is None:
        return None
    capacity_factor = check_positive_float(capacity_factor, "capacity_factor")
    n_tokens = check_positive_int(n_tokens, "n_tokens")
    top_k = check_positive_int(top_k, "top_k")
    n_experts = check_positive_int(n_experts, "n_experts")
    ### BEGIN SOLUTION ex3_5
    exact = Fraction(repr(capacity_factor)) * n_tokens * top_k / n_experts
    return min(n_tokens, math.ceil(exact))
    ### END SOLUTION


class DispatchPlan(NamedTuple):
    """Destination of every kept token-expert assignment, grouped by expert.

    Attributes
    ----------
    token : int ndarray of shape (M,)
        Token of each kept assignment; expert e's are rows
        ``group_offsets[e]:group_offsets[e + 1]``.
    slot : int ndarray of shape (M,)
        Which of the token's k choices the assignment is.
    flat_position : int ndarray of shape (M,)
        ``token * k + slot``, the assignment's place in a flattened (N, k) array.
    group_offsets : int ndarray of shape (E + 1,)
        Start of each expert's slice; the last entry is M.
    expert_counts : int ndarray of shape (E,)
        Assignments routed to each expert, before the capacity limit.
    kept : bool ndarray of shape (N, k)
        False where the assignment was dropped.
    n_dropped : int
        Number of dropped assignments, ``N * k - M``.
    """

    token: np.ndarray
    slot: np.ndarray
    flat_position: np.ndarray
    group_offsets: np.ndarray
    expert_counts: np.ndarray
    kept: np.ndarray
    n_dropped: int


def plan_dispatch(expert_index, n_experts, *, capacity=None, priority="position", gates=None):
    r"""Group the token-expert assignments by expert and drop those over capacity.

    1. Flatten ``expert_index`` choice rank first: ``ids`` of shape (k N,).
    2. One stable sort of ``ids`` gives ``order``, each expert's queue in
       priority order. For ``"position"`` it is ``np.argsort(ids,
       kind="stable")``. For ``"gate"`` it is ``np.lexsort((position,
       -top_gate, choice_rank, ids))``: lexsort sorts by its last key first,
       so by expert, then choice rank s, then the token's largest gate
       ``gates[t].max()`` in decreasing order, then the flat position
       ``s N + t``. All four keys have shape (k N,).
    3. ``expert_counts`` of shape (E,); each sorted assignment's rank in its
       queue is its sorted position minus the queue's start.
    4. Keep the assignments whose rank is below ``capacity``; their flat
       index gives ``token`` and ``slot``.
    5. Fill a :class:`DispatchPlan` (``kept`` as an (N, k) mask).

    Hint: flat index ``s N + t`` gives ``t = i % N`` and ``s = i // N``.

    Parameters
    ----------
    expert_index : int ndarray of shape (N, k)
        Selected experts, largest gate first.
    n_experts : int
    capacity : int or None
        Largest number of assignments per expert (see :func:`expert_capacity`);
        ``None`` keeps all.
    priority : {"position", "gate"}
        Which assignments an expert keeps when it is over capacity. Both
        fill every token's first choice before any second choice, as GShard
        does, so one token's second choice never displaces another token's
        first. Within a choice rank, ``"position"`` keeps earlier tokens
        first, in token order of the batch. ``"gate"`` ranks every assignment of
        token t, at any choice rank s, by the token's largest gate
        ``gates[t].max()`` (``gates[t, 0]`` when the gates are sorted),
        larger first, and not by the assignment's own gate ``gates[t, s]``.
        Ties go in token order (batch prioritized routing, Riquelme et al.
        2021).
    gates : ndarray of shape (N, k), optional
        Required for ``priority="gate"``.

    Returns
    -------
    plan : DispatchPlan
        Where each kept assignment goes, grouped by expert, and which
        assignments were dropped.

    Notes
    -----
    One sort does all the grouping: the assignments are flattened choice
    rank first (entry :math:`s N + t` is token t's choice s), and a stable
    sort by expert id (with the priority as secondary keys) lists each
    expert's queue in priority order. An assignment's rank in its queue is
    its sorted position minus the queue's start, and it is kept when the
    rank is below the capacity.
    """
    n_experts = check_positive_int(n_experts, "n_experts")
    priority = check_choice(priority, "priority", PRIORITIES)
    if priority == "gate" and gates is None:
        raise ValueError("priority='gate' needs the gates of shape (N, k); pass gates=")
    N, k = expert_index.shape

    ### BEGIN SOLUTION ex3_5
    ids = expert_index.T.reshape(-1)  # (k N,) entry s N + t is token t's choice s
    if priority == "position":
        order = np.argsort(ids, kind="stable")  # (k N,)
    else:
        top_gate = np.tile(gates.max(axis=1), k)  # (k N,) each token's largest gate, once per choice
        choice_rank = np.repeat(np.arange(k), N)  # (k N,)
        # np.lexsort sorts by the last key first: expert, then choice rank, then larger gate, then position.
        order = np.lexsort((np.arange(k * N), -top_gate, choice_rank, ids))  # (k N,)

    expert_counts = np.bincount(ids, minlength=n_experts)  # (E,)
    queue_start = np.cumsum(expert_counts) - expert_counts  # (E,)
    rank_in_queue = np.arange(k * N) - queue_start[ids[order]]  # (k N,)
    if capacity is None:
        kept_order, kept_counts = order, expert_counts
    else:
        kept_order = order[rank_in_queue < capacity]  # (M,)
        kept_counts = np.minimum(expert_counts, capacity)

    token, slot = kept_order % N, kept_order // N  # (M,), (M,)
    kept = np.zeros(k * N, dtype=bool)
    kept[kept_order] = True
    group_offsets = np.concatenate(([0], np.cumsum(kept_counts)))  # (E + 1,)
    return DispatchPlan(
        token=token,
        slot=slot,
        flat_position=token * k + slot,
        group_offsets=group_offsets,
        expert_counts=expert_counts,
        kept=kept.reshape(k, N).T,  # (N, k)
        n_dropped=int(k * N - kept_order.size),
    )
    ### END SOLUTION


def combine_slots(values, plan: DispatchPlan, n_tokens):
    """Sum per-assignment rows back into one row per token.

    1. Write each row at ``plan.flat_position`` of an all-zero (N k, d) array.
    2. Reshape to (N, k, d) and sum over the k slots.

    Hint: dropped assignments have no row, so their places stay zero.

    Parameters
    ----------
    values : ndarray of shape (M, d)
        One row per kept assignment, in the plan's grouped order.
    plan : DispatchPlan
    n_tokens : int

    Returns
    -------
    token_rows : ndarray of shape (N, d)
        Row t is the sum of the rows of token t's kept assignments; a token
        whose assignments were all dropped gets a zero row.

    Notes
    -----
    Each row goes to its own (token, slot) place of an (N, k, d) array, so
    plain assignment is enough, and summing over k does the accumulation
    that ``np.add.at`` would do one row at a time.
    """
    ### BEGIN SOLUTION ex3_5
    k = plan.kept.shape[1]
    slots = np.zeros((n_tokens * k, values.shape[1]), dtype=values.dtype)  # (N k, d)
    slots[plan.flat_position] = values
    return slots.reshape(n_tokens, k, -1).sum(axis=1)  # (N, d)
    ### END SOLUTION


class GroupedMlpCache(NamedTuple):
    experts: tuple  # one MlpCache per expert, None for an expert with no tokens
    group_offsets: np.ndarray  # (E + 1,)
    d_model: int
    weight_shapes: tuple  # shapes of W1, b1, W2, b2


def grouped_mlp_forward(x_sorted, W1, b1, W2, b2, *, group_offsets, activation="relu"):
    r"""Run expert e's MLP on its contiguous slice of rows, for every expert.

    1. For each expert e, take rows ``group_offsets[e]:group_offsets[e + 1]``.
    2. Run :func:`tinycond.layers.mlp_forward` on them with ``W1[e]``,
       ``b1[e]``, ``W2[e]``, ``b2[e]`` and write the result into the same
       rows of ``y_sorted``, shape (M, d_out).
    3. Keep each expert's cache (``None`` for an expert with no rows).

    Hint: skip experts with no rows, their gradients are zero.

    Parameters
    ----------
    x_sorted : ndarray of shape (M, d_model)
        Token rows grouped by expert, as :func:`plan_dispatch` orders them.
    W1 : ndarray of shape (E, d_model, d_hidden)
    b1 : ndarray of shape (E, d_hidden)
    W2 : ndarray of shape (E, d_hidden, d_out)
    b2 : ndarray of shape (E, d_out)
    group_offsets : int ndarray of shape (E + 1,)
        Expert e owns rows ``group_offsets[e]:group_offsets[e + 1]``.
    activation : {"relu", "gelu", "sigmoid"}

    Returns
    -------
    y_sorted : ndarray of shape (M, d_out)
    cache : GroupedMlpCache

    Notes
    -----
    A Python loop over experts (not tokens): each expert is one plain 2-D
    matrix product on its own rows.

    NOTE: each expert's products have only about N k / E rows, and BLAS runs
    such shapes at a lower FLOP rate than one large product of the same
    FLOPs. That bounds the layer's matmul-throughput fraction;
    ``python -m tinycond.bench.sparse`` reports both rates.
    """
    ### BEGIN SOLUTION ex3_6
    M, d_model = x_sorted.shape
    E, _, d_out = W2.shape
    y_sorted = np.empty((M, d_out), dtype=x_sorted.dtype)
    experts = []
    for e in range(E):
        start, stop = group_offsets[e], group_offsets[e + 1]
        if start == stop:
            experts.append(None)
            continue
        y_sorted[start:stop], expert_cache = L.mlp_forward(
            x_sorted[start:stop], W1[e], b1[e], W2[e], b2[e], activation=activation
        )
        experts.append(expert_cache)
    shapes = (W1.shape, b1.shape, W2.shape, b2.shape)
    return y_sorted, GroupedMlpCache(tuple(experts), group_offsets, d_model, shapes)
    ### END SOLUTION


def grouped_mlp_backward(dy_sorted, cache: GroupedMlpCache):
    """Return ``(dx_sorted, dW1, db1, dW2, db2)``.

    Steps: for each expert with tokens, run :func:`tinycond.layers.mlp_backward`
    on its slice of ``dy_sorted`` and write the results into its slice of
    ``dx_sorted`` and its entry of each stacked weight gradient. An expert
    with no tokens gets zero gradients.

    Hint: allocate ``dW1 = np.zeros(W1_shape)`` and fill ``dW1[e]``.
    """
    ### BEGIN SOLUTION ex3_6
    experts, group_offsets, d_model, shapes = cache
    dx_sorted = np.empty((dy_sorted.shape[0], d_model), dtype=dy_sorted.dtype)  # (M, d_model)
    dW1, db1, dW2, db2 = (np.zeros(shape, dtype=dy_sorted.dtype) for shape in shapes)
    for e, expert_cache in enumerate(experts):
        if expert_cache is None:
            continue
        start, stop = group_offsets[e], group_offsets[e + 1]
        dx_sorted[start:stop], dW1[e], db1[e], dW2[e], db2[e] = L.mlp_backward(dy_sorted[start:stop], expert_cache)
    return dx_sorted, dW1, db1, dW2, db2
    ### END SOLUTION
