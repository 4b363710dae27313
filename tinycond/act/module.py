r"""The adaptive computation time layer: a recurrent cell that decides how long to ponder.

References
----------
Graves (2016). Adaptive Computation Time for Recurrent Neural Networks.
"""

from __future__ import annotations

import numbers

import numpy as np

from tinycond._checks import as_generator, check_float_array, check_positive_float, check_positive_int
from tinycond.act.halting import DEFAULT_EPSILON, act_backward, act_forward, check_epsilon
from tinycond.nn import Linear, Module

# Graves (2016) starts the halting bias at 1, so the first halting
# probabilities are about sigmoid(1) = 0.73 and a sample begins by pondering
# for two steps: enough to learn from, without the remainder of a long run.
DEFAULT_HALTING_BIAS = 1.0


class ACT(Module):
    r"""Recurrent tanh cell with adaptive computation time and a linear output layer.

    Parameters
    ----------
    d_in : int
        Input features per step (the first-step flag is added inside).
    d_hidden : int
        Width of the recurrent state.
    d_out : int
        Output width, for example the number of classes.
    max_steps : int
        Largest number of ponder steps M per input step.
    tau : float
        Ponder cost coefficient, >= 0. ``aux_loss`` is ``tau`` times the
        ponder cost summed over input steps and averaged over the batch.
    epsilon : float
        Halting threshold in (0, 1); Graves (2016) uses 0.01.
    halting_bias : float
        Initial halting unit bias; 1.0 as in Graves (2016).
    rng : Generator or int

    Attributes
    ----------
    n_steps : int ndarray of shape (N, T)
        Halting step N(t) of each sample in the last forward pass.
    remainder : ndarray of shape (N, T)
    ponder_cost : ndarray of shape (N, T)
        :math:`N(t) + R(t)`.
    step_weights, halting_probability : ndarray of shape (N, T, max_steps)
        :math:`p^n` and :math:`h^n`, zero after N(t).

    Notes
    -----
    The output layer is affine and the step weights sum to one, so applying
    it to the p-weighted state equals the p-weighted mean of the per-step
    outputs, :math:`\sum_n p^n (s^n W_y + b_y) = (\sum_n p^n s^n) W_y + b_y`.
    The layer uses the left-hand side's cheaper right-hand form.

    References
    ----------
    Graves (2016). Adaptive Computation Time for Recurrent Neural Networks.
    """

    def __init__(
        self,
        d_in,
        d_hidden,
        d_out,
        *,
        max_steps,
        tau,
        epsilon=DEFAULT_EPSILON,
        halting_bias=DEFAULT_HALTING_BIAS,
        rng,
    ):
        super().__init__()
        self.d_in = check_positive_int(d_in, "d_in")
        self.d_hidden = check_positive_int(d_hidden, "d_hidden")
        self.d_out = check_positive_int(d_out, "d_out")
        self.max_steps = check_positive_int(max_steps, "max_steps")
        self.tau = check_positive_float(tau, "tau", allow_zero=True)
        self.epsilon = check_epsilon(epsilon)
        if isinstance(halting_bias, bool) or not isinstance(halting_bias, numbers.Real) or not np.isfinite(halting_bias):
            raise ValueError(f"halting_bias must be a finite number, got {halting_bias!r}")
        rng = as_generator(rng)

        self.add_parameter("W_x", rng.standard_normal((d_in + 1, d_hidden)) / np.sqrt(d_in + 1))
        self.add_parameter("W_s", rng.standard_normal((d_hidden, d_hidden)) / np.sqrt(d_hidden))
        self.add_parameter("b", np.zeros(d_hidden))
        self.add_parameter("w_h", rng.standard_normal(d_hidden) / np.sqrt(d_hidden))
        self.add_parameter("b_h", np.full(1, float(halting_bias)))
        self.head = Linear(d_hidden, d_out, rng=rng)
        self.cache = None

    def forward(self, x):
        """Return the outputs of shape (N, T, d_out) for inputs of shape (N, T, d_in)."""
        check_float_array(x, "x", ndim=3, last_dim=self.d_in)
        p = self.params
        (states, ponder_cost), self.cache = act_forward(
            x, p["W_x"], p["W_s"], p["b"], p["w_h"], p["b_h"], max_steps=self.max_steps, epsilon=self.epsilon
        )
        self.aux_loss = self.tau * float(ponder_cost.sum()) / x.shape[0]
        return self.head.forward(states)  # (N, T, d_out)

    def backward(self, dy):
        """Return ``dx`` and add the gradients of the output and of ``aux_loss`` into ``grads``."""
        dstates = self.head.backward(dy)  # (N, T, d_hidden)
        N, T = self.cache.n_steps.shape
        dponder_cost = np.full((N, T), self.tau / N)
        dx, *dparams = act_backward((dstates, dponder_cost), self.cache)
        for name, grad in zip(("W_x", "W_s", "b", "w_h", "b_h"), dparams):
            self.grads[name] += grad
        return dx

    def own_choices(self):
        if self.cache is None:
            return {}
        return {"n_steps": self.cache.n_steps}

    @property
    def n_steps(self):
        return None if self.cache is None else self.cache.n_steps

    @property
    def remainder(self):
        return None if self.cache is None else self.cache.remainder

    @property
    def ponder_cost(self):
        return None if self.cache is None else self.cache.n_steps + self.cache.remainder

    @property
    def step_weights(self):
        return None if self.cache is None else self.cache.step_weights

    @property
    def halting_probability(self):
        return None if self.cache is None else self.cache.halting_probability
