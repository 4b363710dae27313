r"""Adaptive computation time over a recurrent tanh cell, as a forward/backward pair.

At every input step t the cell runs ponder steps n = 1, 2, ... on the same
input, until its halting probabilities add up to ``1 - epsilon`` (or
``max_steps`` is reached). The output state is the mean of the per-step
states weighted by the halting distribution, and the ponder cost N(t) + R(t)
counts the steps taken plus the remainder.

All samples of a batch advance together. A sample that halts leaves the
active set, so step n computes only the rows still running and the work is
proportional to the total number of ponder steps taken, not to
``N * max_steps``.

References
----------
Graves (2016). Adaptive Computation Time for Recurrent Neural Networks.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from tinycond import functional as F
from tinycond._checks import check_float_array, check_positive_int

DEFAULT_EPSILON = 0.01


def check_epsilon(epsilon) -> float:
    """Return ``epsilon`` as a float, or raise unless it lies in the open interval (0, 1)."""
    if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float, np.floating)):
        raise TypeError(f"epsilon must be a float in (0, 1), got {epsilon!r} of type {type(epsilon).__name__}")
    epsilon = float(epsilon)
    if not 0.0 < epsilon < 1.0:
        raise ValueError(f"epsilon must be in the open interval (0, 1), got {epsilon}; Graves (2016) uses 0.01")
    return epsilon


# The halting rule


def halting_step(cumulative, halting_probability, *, last, epsilon=DEFAULT_EPSILON):
    r"""Decide which active rows halt at this ponder step, and give each row its step weight.

    Parameters
    ----------
    cumulative : ndarray of shape (n,)
        Sum of the halting probabilities of the earlier ponder steps of each
        active row, :math:`\sum_{m<n} h^m`.
    halting_probability : ndarray of shape (n,)
        This step's halting probability :math:`h^n` of each active row.
    last : bool
        True at step ``max_steps``, where every row halts.
    epsilon : float
        Rows halt once the cumulative sum reaches ``1 - epsilon``.

    Returns
    -------
    halted : bool ndarray of shape (n,)
        True where this step is the row's last, :math:`n = N(t)`.
    step_weight : ndarray of shape (n,)
        :math:`p^n`: the remainder :math:`R = 1 - \sum_{m<n} h^m` where the
        row halts, :math:`h^n` where it continues.

    Notes
    -----
    Compute, for each row:

    1. ``halted`` is true when ``cumulative + halting_probability >= 1 - epsilon``
       (greater or equal, so a row that reaches the threshold exactly halts),
       and for every row when ``last`` is true.
    2. ``step_weight`` is ``1 - cumulative`` where ``halted``, else
       ``halting_probability``.

    Hint: the remainder uses the sum *before* this step, so the weights of a
    row add up to one.

    .. math:: N(t) = \min\Bigl\{M,\ \min\{n : \textstyle\sum_{m\le n} h^m \ge 1 - \epsilon\}\Bigr\},
              \qquad R(t) = 1 - \sum_{m<N(t)} h^m
    """
    ### BEGIN SOLUTION ex5_1
    if last:
        halted = np.ones(cumulative.shape, dtype=bool)
    else:
        halted = cumulative + halting_probability >= 1.0 - epsilon
    step_weight = np.where(halted, 1.0 - cumulative, halting_probability)
    return halted, step_weight
    ### END SOLUTION


# Forward and backward over ponder steps and time steps


class PonderStep(NamedTuple):
    """Arrays of one ponder step, for the rows still active at that step."""

    rows: np.ndarray  # (n,) batch indices of the active rows
    state: np.ndarray  # (n, d_hidden) s^n
    halting_probability: np.ndarray  # (n,) h^n
    step_weight: np.ndarray  # (n,) p^n
    halted: np.ndarray  # (n,) bool, true where n = N(t)


class ActCache(NamedTuple):
    x: np.ndarray  # (N, T, d_in)
    W_x: np.ndarray  # (d_in + 1, d_hidden)
    W_s: np.ndarray  # (d_hidden, d_hidden)
    w_h: np.ndarray  # (d_hidden,)
    states: np.ndarray  # (N, T, d_hidden) the p-weighted states passed on
    steps: tuple  # steps[t][n] is the PonderStep of ponder step n + 1 at input step t
    n_steps: np.ndarray  # (N, T) int, N(t)
    remainder: np.ndarray  # (N, T) R(t)
    step_weights: np.ndarray  # (N, T, max_steps) p^n, zero after N(t)
    halting_probability: np.ndarray  # (N, T, max_steps) h^n, zero after N(t)
    epsilon: float


def _check_shapes(x, W_x, W_s, b, w_h, b_h):
    """Raise unless the inputs and weights of :func:`act_forward` have matching shapes."""
    check_float_array(x, "x", ndim=3)
    check_float_array(W_x, "W_x", ndim=2)
    d_in = x.shape[-1]
    if W_x.shape[0] != d_in + 1:
        raise ValueError(
            f"W_x must have d_in + 1 = {d_in + 1} rows (the input features plus the first-step flag) "
            f"for x of shape {x.shape}, got shape {W_x.shape}"
        )
    d_hidden = W_x.shape[1]
    expected = {"W_s": (d_hidden, d_hidden), "b": (d_hidden,), "w_h": (d_hidden,), "b_h": (1,)}
    for name, array in (("W_s", W_s), ("b", b), ("w_h", w_h), ("b_h", b_h)):
        check_float_array(array, name)
        if array.shape != expected[name]:
            raise ValueError(f"{name} must have shape {expected[name]} to match W_x of shape {W_x.shape}, got {array.shape}")


def act_forward(x, W_x, W_s, b, w_h, b_h, *, max_steps, epsilon=DEFAULT_EPSILON):
    r"""Run a tanh recurrent cell with adaptive computation time over T input steps.

    Parameters
    ----------
    x : ndarray of shape (N, T, d_in)
        N sequences of T input vectors.
    W_x : ndarray of shape (d_in + 1, d_hidden)
        Input weights; the last row multiplies the first-step flag.
    W_s : ndarray of shape (d_hidden, d_hidden)
        Recurrent weights.
    b : ndarray of shape (d_hidden,)
        Cell bias.
    w_h : ndarray of shape (d_hidden,)
        Halting unit weights.
    b_h : ndarray of shape (1,)
        Halting unit bias.
    max_steps : int
        Largest number of ponder steps M per input step.
    epsilon : float
        Halting threshold: a sample halts once its halting probabilities sum
        to at least ``1 - epsilon``. Graves (2016) uses 0.01.

    Returns
    -------
    out : tuple of two ndarrays
        ``states`` of shape (N, T, d_hidden), the p-weighted mean of the
        per-step states of each input step, and ``ponder_cost`` of shape
        (N, T), :math:`\rho_t = N(t) + R(t)`.
    cache : ActCache
        Also contains the halting steps ``n_steps`` (N, T), the ``remainder``
        (N, T) and the dense ``step_weights`` and ``halting_probability``
        (N, T, max_steps), for plots and tests.

    Notes
    -----
    With :math:`s_0 = 0`, :math:`s_t^0 = s_{t-1}` and the flag :math:`\delta_{n,1}`
    appended to the input (Graves 2016):

    .. math::
        s_t^n = \tanh\bigl([x_t, \delta_{n,1}]\, W_x + s_t^{n-1} W_s + b\bigr), \qquad
        h_t^n = \sigma(s_t^n \cdot w_h + b_h),

        p_t^n = h_t^n \ (n < N(t)), \qquad p_t^{N(t)} = R(t), \qquad
        s_t = \sum_{n=1}^{N(t)} p_t^n s_t^n.

    To compute, for each input step t:

    1. Project the input once, ``x_t W_x[:d_in] + b``: it is the same at every ponder step.
    2. Start with every row active and ``cumulative = 0``. At ponder step n,
       compute the state of the active rows from their previous state (add the
       flag row ``W_x[d_in]`` at n = 1), then the halting probability.
    3. Call :func:`halting_step`, add ``step_weight * state`` into the rows'
       output state, store a :class:`PonderStep`, and keep only the rows that
       did not halt (their states, rows and cumulative sums).
    4. Stop when no row is active; the output state is the next input step's
       starting state.

    Hint: index the active rows with an integer array that shrinks, so a
    halted sample is never computed again (the pitfall of letting it
    accumulate later steps disappears with it).

    References
    ----------
    Graves (2016). Adaptive Computation Time for Recurrent Neural Networks.
    """
    max_steps = check_positive_int(max_steps, "max_steps")
    epsilon = check_epsilon(epsilon)
    _check_shapes(x, W_x, W_s, b, w_h, b_h)
    ### BEGIN SOLUTION ex5_2
    N, T, d_in = x.shape
    d_hidden = W_s.shape[0]
    # One 2-D product for all input steps; it is the same at every ponder step.
    x_proj = (x.reshape(N * T, d_in) @ W_x[:d_in] + b).reshape(N, T, d_hidden)  # (N, T, d_hidden)
    flag = W_x[d_in]  # (d_hidden,) added at the first ponder step only

    states = np.zeros((N, T, d_hidden))
    n_steps = np.zeros((N, T), dtype=np.int64)
    remainder = np.zeros((N, T))
    step_weights = np.zeros((N, T, max_steps))
    halting_probability = np.zeros((N, T, max_steps))
    all_steps = []
    state = np.zeros((N, d_hidden))  # s_{t-1}, zero before the first input
    for t in range(T):
        rows = np.arange(N)
        previous = state
        cumulative = np.zeros(N)
        mixed = np.zeros((N, d_hidden))
        steps = []
        for n in range(max_steps):
            pre = x_proj[rows, t] + previous @ W_s  # (n_active, d_hidden)
            if n == 0:
                pre += flag
            s = np.tanh(pre)
            h = F.sigmoid(s @ w_h + b_h[0])  # (n_active,)
            halted, p = halting_step(cumulative, h, last=n == max_steps - 1, epsilon=epsilon)

            mixed[rows] += p[:, None] * s
            steps.append(PonderStep(rows, s, h, p, halted))
            step_weights[rows, t, n] = p
            halting_probability[rows, t, n] = h
            done = rows[halted]
            n_steps[done, t] = n + 1
            remainder[done, t] = p[halted]

            # Halted rows leave the active set: later steps never compute them.
            running = ~halted
            rows = rows[running]  # (n_running,)
            cumulative = cumulative[running] + h[running]
            previous = s[running]  # (n_running, d_hidden)
            if rows.size == 0:
                break
        state = mixed
        states[:, t] = mixed
        all_steps.append(tuple(steps))

    ponder_cost = n_steps + remainder  # (N, T)
    cache = ActCache(
        x, W_x, W_s, w_h, states, tuple(all_steps), n_steps, remainder, step_weights, halting_probability, epsilon
    )
    return (states, ponder_cost), cache
    ### END SOLUTION


def act_backward(dy, cache: ActCache):
    r"""Return ``(dx, dW_x, dW_s, db, dw_h, db_h)`` by backpropagation through ponder and time steps.

    Parameters
    ----------
    dy : tuple of two ndarrays
        ``dstates`` of shape (N, T, d_hidden) and ``dponder_cost`` of shape (N, T).
    cache : ActCache

    Returns
    -------
    dx : ndarray of shape (N, T, d_in)
    dW_x : ndarray of shape (d_in + 1, d_hidden)
    dW_s : ndarray of shape (d_hidden, d_hidden)
    db : ndarray of shape (d_hidden,)
    dw_h : ndarray of shape (d_hidden,)
    db_h : ndarray of shape (1,)

    Notes
    -----
    Let :math:`g` be the gradient of the output state :math:`s_t` (the upstream
    ``dstates`` plus what the next input step sends back). The weighted sum
    gives :math:`\partial L/\partial s_t^n = p_t^n g` and
    :math:`\partial L/\partial p_t^n = \langle g, s_t^n \rangle`. The step
    weights depend on the halting probabilities only through
    :math:`p^n = h^n` for :math:`n < N` and :math:`R = 1 - \sum_{n<N} h^n`,
    and the ponder cost :math:`\rho = N + R` only through :math:`R`, because
    :math:`N(t)` is piecewise constant (its gradient is zero). So

    .. math::
        \frac{\partial L}{\partial h_t^n} =
        \langle g, s_t^n - s_t^{N} \rangle - \frac{\partial L}{\partial \rho_t}
        \quad (n < N(t)), \qquad
        \frac{\partial L}{\partial h_t^{N(t)}} = 0.

    To compute, for each input step t from last to first and each ponder step n
    from last to first, on that step's active rows (``steps[t][n - 1]``):

    1. ``dweight = <g, s^n>``. Where the row halts here, store
       ``dremainder = dweight + dponder_cost``; elsewhere
       ``dh = dweight - dremainder`` (zero where it halts).
    2. Through the sigmoid: ``da = dh * h * (1 - h)``; add to ``dw_h`` and
       ``db_h``. The state gradient ``dstate`` is ``p * g + da * w_h`` plus
       what step n + 1 sent back to the rows that continued. Step n + 1's
       active rows are step n's rows where ``halted`` is false, in the same
       order, so ``dstate[~halted] += dstate_from_next``.
    3. Through the tanh: ``dpre = dstate * (1 - s^2)``. Add ``dpre`` into
       ``dx_proj[rows, t]``, an (N, T, d_hidden) array of zeros that stores
       the gradient on the input projection ``x_t W_x[:d_in] + b``. Add
       ``s^{n-1}.T @ dpre`` into ``dW_s`` and, at n = 1, ``dpre`` summed over
       rows into the flag row ``dW_x[d_in]``. Here :math:`s^{n-1}` is, for
       n > 1, step n - 1's ``state`` at the rows that continued
       (``state[~halted]``), and at n = 1 the previous input step's output
       state ``states[:, t - 1]`` for every row, or zeros at t = 0.
    4. Send ``dpre @ W_s.T`` back: for n > 1 to step n - 1 as its
       ``dstate_from_next``. At n = 1 step 1 runs every row in batch order,
       so it is the gradient of :math:`s_{t-1}`, added into g at input step
       t - 1.
    5. After the loops, with ``dx_proj`` reshaped to (N * T, d_hidden):
       ``dx = dx_proj @ W_x[:d_in].T`` reshaped to (N, T, d_in),
       ``dW_x[:d_in] = x.T @ dx_proj`` with ``x`` reshaped to (N * T, d_in),
       and ``db`` is ``dx_proj`` summed over its rows.

    Hint: a row's halting step is the first step met going backwards, so its
    ``dremainder`` is known before the earlier steps that need it.
    """
    ### BEGIN SOLUTION ex5_3
    dstates, dponder_cost = dy
    x, W_x, W_s, w_h, states = cache.x, cache.W_x, cache.W_s, cache.w_h, cache.states
    N, T, d_in = x.shape
    d_hidden = W_s.shape[0]

    dx_proj = np.zeros((N, T, d_hidden))
    dW_s = np.zeros_like(W_s)
    dflag = np.zeros(d_hidden)
    dw_h = np.zeros_like(w_h)
    db_h = np.zeros(1)
    dstate_next_input = np.zeros((N, d_hidden))  # gradient of s_t from input step t + 1
    for t in reversed(range(T)):
        g = dstates[:, t] + dstate_next_input  # (N, d_hidden)
        start = states[:, t - 1] if t > 0 else np.zeros((N, d_hidden))
        steps = cache.steps[t]
        dremainder = np.zeros(N)
        dstate_from_next = None  # gradient of s^n sent back by step n + 1
        for n in reversed(range(len(steps))):
            rows, s, h, p, halted = steps[n]
            g_rows = g[rows]  # (n_active, d_hidden)

            # The weighted sum s_t = sum_n p^n s^n.
            dstate = p[:, None] * g_rows
            dweight = np.sum(g_rows * s, axis=1)  # (n_active,)

            # p^N = R, and the ponder cost N + R reaches the parameters only
            # through R: N(t) is piecewise constant, so its gradient is zero.
            dremainder[rows[halted]] = dweight[halted] + dponder_cost[rows[halted], t]
            # For n < N, h^n appears as p^n and with a minus sign in R; h^N appears nowhere.
            dh = np.where(halted, 0.0, dweight - dremainder[rows])

            da = dh * h * (1.0 - h)
            dw_h += s.T @ da
            db_h += da.sum()
            dstate += da[:, None] * w_h
            if dstate_from_next is not None:
                dstate[~halted] += dstate_from_next

            dpre = dstate * (1.0 - s**2)  # tanh'
            dx_proj[rows, t] += dpre
            if n == 0:
                dflag += dpre.sum(axis=0)
                previous = start
            else:
                before = steps[n - 1]
                previous = before.state[~before.halted]  # (n_active, d_hidden) s^{n-1} of these rows
            dW_s += previous.T @ dpre
            dprevious = dpre @ W_s.T
            if n == 0:
                dstate_next_input = dprevious  # step 1 runs every row, in batch order
            else:
                dstate_from_next = dprevious

    dx_proj = dx_proj.reshape(N * T, d_hidden)  # (N * T, d_hidden)
    dx = (dx_proj @ W_x[:d_in].T).reshape(N, T, d_in)  # (N, T, d_in)
    dW_x = np.empty_like(W_x)
    dW_x[:d_in] = x.reshape(N * T, d_in).T @ dx_proj
    dW_x[d_in] = dflag
    db = dx_proj.sum(axis=0)
    return dx, dW_x, dW_s, db, dw_h, db_h
    ### END SOLUTION


def halting_margin(cache: ActCache):
    r"""Return how far each sample's cumulative halting sums stay from the threshold ``1 - epsilon``.

    A finite-difference check is exact only if no perturbation changes a
    halting step N(t). That holds when every cumulative sum
    :math:`\sum_{m\le n} h^m` that the halting rule compared, for
    :math:`n \le N(t)` and :math:`n < M`, is farther from :math:`1 - \epsilon`
    than the perturbation can move it.

    Parameters
    ----------
    cache : ActCache

    Returns
    -------
    margin : ndarray of shape (N,)
        The smallest distance over input steps and compared ponder steps
        (``inf`` where no comparison was made, as when ``max_steps`` is 1).
    """
    N, T, max_steps = cache.halting_probability.shape
    cumulative = np.cumsum(cache.halting_probability, axis=-1)  # (N, T, max_steps)
    step = np.arange(1, max_steps + 1)
    compared = (step <= cache.n_steps[..., None]) & (step < max_steps)  # (N, T, max_steps)
    distance = np.where(compared, np.abs(cumulative - (1.0 - cache.epsilon)), np.inf)
    return distance.reshape(N, -1).min(axis=1)
