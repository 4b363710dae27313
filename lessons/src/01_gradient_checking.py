# %%
%load_ext autoreload
%autoreload 2

# %% [markdown]
# # Lesson 1: gradient checking
#
# **Assumes** NumPy and the chain rule: you know that a backward pass carries
# the gradient of a loss from a layer's output back to its inputs and
# parameters.
#
# **Builds** the tool that every later lesson relies on. tinycond writes every
# backward pass by hand, and a wrong backward pass does not crash: training
# just goes worse, and nothing tells you why. A *gradient check* compares the
# hand-written gradient with a numerical derivative of the forward pass, entry
# by entry, and names the entry that disagrees. This lesson builds the idea up
# from one scalar derivative to the checker that the tests use, then turns it
# on the basic layers.
#
# | piece | module |
# |---|---|
# | central differences, relative error, the checker | `tinycond.gradcheck` (`numerical_gradient`, `relative_error`, `check_function`, `check_module`) |
# | activations, softmax, cross-entropy (forward/backward pairs) | `tinycond.functional` |
# | linear map, MLP, layer normalisation, embedding (pairs) | `tinycond.layers` |
# | the same as modules that hold parameters | `tinycond.nn` |
#
# Sections: 1. a backward pass as a vector-Jacobian product;
# 2. the step size, truncation and round-off; 3. relative error, its floor,
# and float64; 4. a wrong backward pass caught and fixed; 5. the checker on
# every basic layer; 6. kinks and the guard. The exercises at the end are
# `numerical_gradient` and the backward passes of section 5, which you
# write yourself in the package.

# %%
from typing import NamedTuple

import numpy as np

from tinycond import functional as F
from tinycond import layers as L
from tinycond import nn
from tinycond.exercises import EXERCISES
from tinycond.gradcheck import (
    DEFAULT_STEP,
    DEFAULT_TOLERANCE,
    GradientCheckError,
    check_function,
    check_module,
    numerical_gradient,
    relative_error,
)
from tinycond.gradcheck.core import EPS, ROUNDOFF_FACTOR
from tinycond.plots import plt, save_figure

rng = np.random.default_rng(0)
print(f"checker defaults: step h = {DEFAULT_STEP:g}, tolerance = {DEFAULT_TOLERANCE:g}, float64 eps = {EPS:.3g}")

# %% [markdown]
# ## 1. A backward pass is a vector-Jacobian product
#
# A layer computes $y = f(x)$ with $x \in \mathbb{R}^n$ and
# $y \in \mathbb{R}^m$. Its backward pass receives the upstream gradient
# $dy = \partial L / \partial y$ and returns
#
# $$dx = J^\top dy, \qquad J_{ij} = \frac{\partial y_i}{\partial x_j} \tag{1}$$
#
# without ever building the $m \times n$ Jacobian $J$. To check it, fix a
# random $dy$ and define the scalar
#
# $$\ell(x) = \langle dy, f(x) \rangle = \sum_i dy_i\, f_i(x) \tag{2}$$
#
# Its gradient is $\nabla \ell(x) = J^\top dy$: exactly what backward must
# return. So checking a backward pass means checking the gradient of one
# scalar function, one input entry at a time. Use a random $dy$, not ones.
# With $dy = \mathbf{1}$ every row of $dy$ is the same, so a backward pass
# that mixes up the rows of $dy$ (one that reverses the batch, say) still
# gives the right result. For the softmax, whose outputs sum to one, $\ell$
# is even constant, and a backward pass that returns zeros would pass.
#
# Taylor's theorem gives $f(x \pm h) = f(x) \pm h f'(x) + \tfrac{h^2}{2}
# f''(x) \pm \tfrac{h^3}{6} f'''(x) + \dots$, so the forward difference and
# the central difference are
#
# $$\frac{f(x+h) - f(x)}{h} = f'(x) + \frac{h}{2} f''(x) + O(h^2) \tag{3}$$
#
# $$\frac{f(x+h) - f(x-h)}{2h} = f'(x) + \frac{h^2}{6} f'''(x) + O(h^4) \tag{4}$$
#
# In the central difference the even terms cancel, so its error shrinks as
# $h^2$ instead of $h$. `numerical_gradient` applies equation (4) to every
# entry of an array (you write it in exercise ex1_1). Here it checks the
# weight gradient of the linear map $y = xW + b$ from
# `tinycond.layers.linear_forward` / `linear_backward`.

# %%
x = rng.standard_normal((4, 3))  # (N, d_in)
W = rng.standard_normal((3, 2))  # (d_in, d_out)
b = rng.standard_normal(2)
dy = rng.standard_normal((4, 2))  # random upstream gradient, (N, d_out)

y, cache = L.linear_forward(x, W, b)
dx, dW, db = L.linear_backward(dy, cache)


def scalar_loss_of_W(W_perturbed):
    """Equation (2) as a function of W alone."""
    y, _ = L.linear_forward(x, W_perturbed, b)
    return np.sum(dy * y)


dW_numeric = numerical_gradient(scalar_loss_of_W, W)
print("analytic dW:\n", dW)
print("numeric dW:\n", dW_numeric)
print(f"largest absolute difference: {np.max(np.abs(dW - dW_numeric)):.1e}")

# %% [markdown]
# The two agree to about ten digits, not sixteen. The next section explains
# where the other digits go.
#
# ## 2. Choosing the step: truncation against round-off
#
# Equation (4) suggests taking $h$ as small as possible. Floating point
# forbids it. Each evaluation of $f$ carries a rounding error of about
# $\varepsilon |f|$, where $\varepsilon$ is machine epsilon ($2.2 \times
# 10^{-16}$ in float64). The difference $f(x+h) - f(x-h)$ cancels the
# leading digits but keeps these errors, and dividing by $2h$ magnifies
# them. The total error of the three-point stencil is therefore about
#
# $$E_3(h) \approx \underbrace{\frac{h^2}{6} |f'''|}_{\text{truncation}} +
# \underbrace{\frac{\varepsilon |f|}{h}}_{\text{round-off}} \tag{5}$$
#
# which is smallest near $h \sim \varepsilon^{1/3} \approx 6 \times 10^{-6}$,
# with an error of the order of $\varepsilon^{2/3} \approx 4 \times 10^{-11}$.
# Combining four points cancels the $h^2$ term as well. This is the
# five-point stencil that tinycond's checker uses:
#
# $$f'(x) \approx \frac{-f(x+2h) + 8 f(x+h) - 8 f(x-h) + f(x-2h)}{12 h},
# \qquad \text{error} \approx c\, h^4 |f^{(5)}| + \frac{\varepsilon |f|}{h} \tag{6}$$
#
# Its best step is near $\varepsilon^{1/5} \approx 7 \times 10^{-4}$ and its
# best error of the order of $\varepsilon^{4/5} \approx 3 \times 10^{-13}$.
# These are orders of magnitude: the constants depend on $f$, and the sweep
# below prints the measured optimum. The checker's default step
# $h = 10^{-4}$ sits inside the five-point stencil's good range.
#
# The sweep below differentiates the logistic sigmoid `F.sigmoid` at
# $x_0 = 1$, where the exact derivative $\sigma(1)(1 - \sigma(1))$ is known,
# for 131 steps from $10^{-13}$ to $1$. It also repeats the three-point
# stencil with $x_0$, $h$ and every operation in float32.

# %%
def central_difference(f, x0, h):
    """Equation (4)."""
    return (f(x0 + h) - f(x0 - h)) / (2 * h)


def five_point_difference(f, x0, h):
    """Equation (6)."""
    return (-f(x0 + 2 * h) + 8 * f(x0 + h) - 8 * f(x0 - h) + f(x0 - 2 * h)) / (12 * h)


x0 = 1.0
exact = F.sigmoid(x0) * (1.0 - F.sigmoid(x0))
steps = np.logspace(-13, 0, 131)

error_3 = relative_error(exact, central_difference(F.sigmoid, x0, steps))
error_5 = relative_error(exact, five_point_difference(F.sigmoid, x0, steps))
steps_32 = steps.astype(np.float32)
estimate_32 = central_difference(F.sigmoid, np.float32(x0), steps_32)
print(f"float32 estimate dtype: {estimate_32.dtype}")
error_32 = relative_error(exact, estimate_32.astype(np.float64))

for label, error in (("three-point, float64", error_3), ("five-point, float64", error_5), ("three-point, float32", error_32)):
    best = np.argmin(error)
    print(f"{label:<22} best step {steps[best]:.1e}, smallest relative error {error[best]:.1e}")

at_default = np.argmin(np.abs(steps - DEFAULT_STEP))
good_range = (steps > 0.9e-5) & (steps < 1.1e-3)  # h from 1e-5 to 1e-3
print(f"at the checker step h = {DEFAULT_STEP:g}: three-point {error_3[at_default]:.1e}, five-point {error_5[at_default]:.1e}")
print(f"five-point, largest error for h from 1e-5 to 1e-3: {error_5[good_range].max():.1e}")
print(f"float32, second smallest error: {np.sort(error_32)[1]:.1e}")
print(f"at h = {steps[0]:.0e}: three-point {error_3[0]:.1e}, five-point {error_5[0]:.1e}, float32 {error_32[0]:.1e}")

# %%
fig, ax = plt.subplots(figsize=(7.5, 5))
floor = 1e-17  # zero errors (exact cancellations) are drawn at this level
ax.loglog(steps, np.maximum(error_3, floor), color="C0", label="three-point stencil (4), float64")
ax.loglog(steps, np.maximum(error_5, floor), color="C1", label="five-point stencil (6), float64")
ax.loglog(steps, np.maximum(error_32, floor), color="C2", alpha=0.8, label="three-point stencil (4), float32")

# Reference slopes, drawn a decade beside the curves so both stay visible.
guide = np.logspace(-3.5, -1.5, 10)
ax.loglog(guide, 3e-3 * guide**2, "k:", lw=1)
ax.text(2e-3, 3e-3 * 2e-3**2 * 0.05, r"slope 2: $\propto h^2$")
guide = np.logspace(-1.7, 0, 10)
ax.loglog(guide, 3e-4 * guide**4, "k:", lw=1)
ax.text(guide[0] * 0.9, 3e-4 * guide[0] ** 4 * 0.1, r"slope 4: $\propto h^4$")
guide = np.logspace(-13, -8, 10)
ax.loglog(guide, 2e-15 / guide, "k:", lw=1)
ax.text(3e-11, 2e-15 / 3e-11 * 3, r"slope $-1$: $\propto \varepsilon / h$")

ax.axhline(DEFAULT_TOLERANCE, color="0.4", ls="--", lw=1)
ax.text(1e-7, DEFAULT_TOLERANCE * 0.2, f"checker tolerance {DEFAULT_TOLERANCE:g}", color="0.3")
ax.axvline(DEFAULT_STEP, color="0.4", ls="-.", lw=1)
ax.text(DEFAULT_STEP * 1.3, 3e-16, f"checker step\nh = {DEFAULT_STEP:g}", color="0.3")
ax.set_xlabel("step size h (input units)")
ax.set_ylabel("relative error of the derivative")
ax.set_ylim(1e-17, 3)
ax.set_title(r"Central differences of the sigmoid at $x = 1$: truncation against round-off")
ax.legend(loc="lower left", fontsize=9)
ax.grid(True, which="major", alpha=0.3)
save_figure(fig, "01_step_size_error")
plt.show()

# %% [markdown]
# **What to look for.** Each float64 curve is a V. On the right, truncation
# dominates and the curves fall with slopes 2 and 4, as equations (4) and (6)
# predict. On the left, round-off dominates and both curves rise with slope
# -1, the same for both stencils, because round-off does not depend on how
# many points the stencil uses. The five-point stencil reaches a lower
# minimum at a larger step. The printed values give the numbers of this run:
# between $h = 10^{-5}$ and $10^{-3}$ the five-point error stays near
# $2 \times 10^{-11}$ or below, more than three orders of magnitude below the
# tolerance, and at the checker step $h = 10^{-4}$ it is below $10^{-14}$,
# where the three-point stencil gives about $1.5 \times 10^{-10}$.
#
# The float32 curve lies above the tolerance line almost everywhere. Its
# printed minimum, $1.3 \times 10^{-7}$ at $h = 10^{-2}$, is one step where
# truncation and round-off happen to cancel; its next best step is ten times
# worse. The dip that touches the tolerance line in the figure is this lucky
# cancellation, and no step makes float32 checks pass reliably at $10^{-7}$.
# At the far left of the float32 curve, below $h \approx 10^{-7}$,
# $x_0 + h$ rounds to $x_0$ in float32, the difference is zero and the
# relative error is 1. The float64 curves do not reach 1: in float64,
# $1 + 10^{-13} \ne 1$, and their error at $h = 10^{-13}$ is about
# $10^{-3}$.
#
# ## 3. Relative error, its floor, and why float64
#
# An absolute difference $|a - n|$ between the analytic value $a$ and the
# numeric value $n$ means nothing without a scale: multiply the loss by
# $10^6$ and every absolute error grows by $10^6$ while the gradient is just
# as right. The checker therefore compares
#
# $$r = \frac{|a - n|}{\max\bigl(|a| + |n|,\ \text{floor}\bigr)} \tag{7}$$
#
# and passes when $r \le 10^{-7}$.
#
# Without the floor, equation (7) breaks for gradients that are exactly
# zero: an unused expert's bias, a weight behind a dead ReLU. The analytic
# value is 0, the numeric value is round-off noise such as $10^{-11}$, and
# $r = 1$. The floor is set from the round-off level of the stencil itself:
#
# $$\delta = \frac{16\, \varepsilon \max|\ell|}{h}, \qquad
# \text{floor} = \frac{\delta}{10^{-7}} \tag{8}$$
#
# where $\max|\ell|$ is the largest loss value seen on the stencil, and 16 is
# a safety factor for a loss summed over many terms. With this floor an
# absolute difference below $\delta$ always passes, and any larger
# difference is judged relative to the size of the gradient. A small
# gradient that is genuinely wrong is still caught as long as its error is
# larger than $\delta$, the stencil's own noise, as the last line below
# shows.

# %%
loss_value = 12.0  # a typical size of the scalar (2)
roundoff = ROUNDOFF_FACTOR * EPS * loss_value / DEFAULT_STEP
floor = roundoff / DEFAULT_TOLERANCE
print(f"round-off level delta = {roundoff:.1e}, floor = {floor:.1e}   (equation 8, |loss| = {loss_value})")

cases = (
    ("gradient exactly 0, numeric noise", 0.0, 3e-11),
    ("gradient 2.0, numeric 2.0 + 1e-9", 2.0, 2.0 + 1e-9),
    ("gradient 0, numeric 1e-6 (a real bug)", 0.0, 1e-6),
)
print(f"{'case':<40}{'no floor':>12}{'with floor':>12}{'passes':>8}")
for label, analytic, numeric in cases:
    plain = float(relative_error(analytic, numeric))
    floored = float(relative_error(analytic, numeric, floor))
    print(f"{label:<40}{plain:>12.1e}{floored:>12.1e}{str(floored <= DEFAULT_TOLERANCE):>8}")

# %% [markdown]
# The same arithmetic explains why the checker accepts only float64. In
# float32, $\varepsilon \approx 1.2 \times 10^{-7}$ is as large as the
# tolerance, so the round-off term of equation (5) alone exceeds it at any
# step (the green curve above). A float32 check could only pass by
# loosening the tolerance until it also passes real bugs. The checker
# therefore rejects float32 and float16 tensors, and its message names the
# fix:

# %%
x32 = rng.standard_normal((4, 3)).astype(np.float32)
try:
    check_function(F.sigmoid_forward, F.sigmoid_backward, x32)
except TypeError as error:
    print(f"TypeError: {error}")

# %% [markdown]
# ## 4. A wrong backward pass, caught and fixed
#
# Here is a layer that is not in the package: a *gated linear unit*
# (Dauphin, Fan, Auli and Grangier (2017). Language Modeling with Gated
# Convolutional Networks), a small piece of conditional computation in which
# a sigmoid gate decides how much of each output unit passes:
#
# $$a = xW, \qquad s = \sigma(xV), \qquad y = a \odot s \tag{9}$$
#
# Going backward through (9) step by step, with $\sigma' = s(1-s)$:
#
# $$da = dy \odot s, \quad du = dy \odot a \odot s \odot (1-s), \quad
# dW = x^\top da, \quad dV = x^\top du, \quad dx = da\, W^\top + du\, V^\top \tag{10}$$
#
# where $u = xV$ is the gate's pre-activation. The input $x$ feeds both
# branches, so $dx$ has two terms. Forgetting one of them is a common bug in
# hand-written backward passes. The version below makes exactly that
# mistake.

# %%
class GluCache(NamedTuple):
    x: np.ndarray  # (N, d_in)
    W: np.ndarray  # (d_in, d_out)
    V: np.ndarray  # (d_in, d_out)
    a: np.ndarray  # (N, d_out)
    s: np.ndarray  # (N, d_out)


def glu_forward(x, W, V):
    """Equation (9): a linear map gated elementwise by a sigmoid."""
    a = x @ W
    s = F.sigmoid(x @ V)
    return a * s, GluCache(x, W, V, a, s)


def glu_backward_buggy(dy, cache):
    """Equation (10) with the gate's contribution to dx left out."""
    x, W, V, a, s = cache
    da = dy * s
    du = dy * a * s * (1.0 - s)
    dx = da @ W.T  # BUG: the term du @ V.T is missing
    return dx, x.T @ da, x.T @ du


x = rng.standard_normal((5, 3))
W = rng.standard_normal((3, 4))
V = rng.standard_normal((3, 4))
report = check_function(glu_forward, glu_backward_buggy, x, W, V, raise_on_failure=False)
print(report)

# %% [markdown]
# The report names the tensor: `x` fails while `W` and `V` pass, so the bug
# sits on a path that reaches `x` but neither weight. By default the checker
# raises `GradientCheckError`, and its message lists each failing entry with
# both values and the relative error (at most ten lines):

# %%
try:
    check_function(glu_forward, glu_backward_buggy, x, W, V)
except GradientCheckError as error:
    print(error)

# %% [markdown]
# The relative errors of `x` differ from entry to entry. A sign error would
# give exactly 1 at every entry ($|a - (-a)| / 2|a|$) and a factor of two
# exactly 1/3 ($|2n - n| / 3|n|$), so a spread like this one points to a
# missing or wrong term. The fix adds the gate's term:

# %%
def glu_backward(dy, cache):
    """Equation (10)."""
    x, W, V, a, s = cache
    da = dy * s
    du = dy * a * s * (1.0 - s)
    dx = da @ W.T + du @ V.T
    return dx, x.T @ da, x.T @ du


print(check_function(glu_forward, glu_backward, x, W, V))

# %% [markdown]
# ## 5. The checker on every basic layer
#
# `check_module` does the same for a `tinycond.nn.Module`: it runs forward,
# calls `backward` with a random $dy$, and checks the gradient of the input
# and of every parameter (the tensor names are the parameters' dotted
# names). `check_function` checks a pure pair such as the cross-entropy
# loss, whose integer targets get no gradient. The backward passes checked
# below are the exercises of this lesson.

# %%
x = rng.standard_normal((4, 6))  # (N, d_model)
cases = {
    "Linear": (nn.Linear(6, 5, rng=1), x),
    "ReLU": (nn.ReLU(), x),
    "GELU": (nn.GELU(), x),
    "Sigmoid": (nn.Sigmoid(), x),
    "Softmax": (nn.Softmax(), x),
    "LogSoftmax": (nn.LogSoftmax(), x),
    "MLP": (nn.MLP(6, 8, 3, rng=2), x),
    "LayerNorm": (nn.LayerNorm(6), x),
    "Embedding": (nn.Embedding(10, 4, rng=3), np.array([1, 3, 3, 7])),
    "Sequential": (nn.Sequential(nn.Linear(6, 8, rng=4), nn.GELU(), nn.LayerNorm(8), nn.Linear(8, 2, rng=5)), x),
}
largest = {}
for name, (module, inputs) in cases.items():
    report = check_module(module, inputs, name=name)
    largest[name] = report.max_rel_error
    print(report, end="\n\n")

logits = 3.0 * rng.standard_normal((4, 5))  # (N, C)
targets = np.array([0, 4, 2, 2])
report = check_function(F.cross_entropy_forward, F.cross_entropy_backward, logits, targets, name="cross_entropy")
largest["cross-entropy"] = report.max_rel_error
print(report, end="\n\n")

print(f"{'layer':<14}{'largest relative error':>24}")
for name, error in largest.items():
    print(f"{name:<14}{error:>24.1e}")

# %% [markdown]
# All of them sit at least an order of magnitude below the tolerance
# $10^{-7}$. The `Embedding` has no `x` row: its input is an integer array
# of ids, which has no gradient.
#
# A large tensor is not checked entry by entry. Above `max_entries` entries
# (200 by default), the checker picks a random sample of 200 entries and adds
# one check along a random unit direction $v$ of the whole tensor, comparing
# $\langle \nabla \ell, v \rangle$ with the finite difference of
# $\ell(\theta + t v)$. The sample catches errors in single entries, and the
# direction catches errors spread thinly over all entries.

# %%
layer = nn.Linear(64, 32, rng=6)
x_large = rng.standard_normal((16, 64))
report = check_module(layer, x_large)
sizes = {"x": x_large.size, **{name: value.size for name, value in layer.parameters()}}
for tensor in report.tensors:
    direction = "not needed" if tensor.direction_rel_error is None else f"relative error {tensor.direction_rel_error:.1e}"
    print(f"{tensor.name}: {tensor.n_checked} of {sizes[tensor.name]} entries checked, random direction: {direction}")

# %% [markdown]
# ## 6. Kinks: ReLU and the guard
#
# $\mathrm{relu}(x) = \max(x, 0)$ has no derivative at 0; tinycond takes it
# as 0 there. Away from 0 the finite difference is exact. But if an entry
# lies within $2h$ of 0 (the reach of the five-point stencil), the stencil
# evaluates both branches, and the result blends the slopes 0 and 1 into a
# value that is the derivative of neither. The analytic gradient is right, and the check fails
# anyway. One entry below sits at $5 \times 10^{-5}$, inside the reach
# $2h = 2 \times 10^{-4}$:

# %%
x_kink = np.array([[-1.3, 5e-5, 0.8], [2.0, -0.5, 1.1]])
report = check_function(F.relu_forward, F.relu_backward, x_kink, raise_on_failure=False)
print(report)
print("\n".join(report["x"].failures))

# %% [markdown]
# This is a false alarm, and in the later lessons the same thing happens at
# every discrete choice: which experts a token selects, which branch a tree
# takes, at which step a unit halts. The checker's guard handles all of them
# the same way. A `choices` callable returns the discrete decisions of the
# last forward pass, and the checker recomputes them at every stencil point.
# An entry whose perturbation changes a decision is *skipped* and reported,
# not compared. A module lists its decisions in `own_choices()` (for ReLU,
# the sign pattern of its input), so `check_module` uses the guard without
# being asked:

# %%
relu = nn.ReLU()
report = check_module(relu, x_kink, name="ReLU")
print(report)
print(f"skipped entries (kinks): {report['x'].skipped}")

# %% [markdown]
# The guard cannot be used to hide a bug. If more than half of a tensor's
# entries are skipped, the check fails, because it compared too little to
# prove anything. Inputs for a check should be drawn away from the kinks (or
# resampled), never the tolerance loosened:

# %%
x_near_zero = 1e-5 * rng.standard_normal((2, 3))
try:
    check_module(nn.ReLU(), x_near_zero, name="ReLU")
except GradientCheckError as error:
    print(error)

# %% [markdown]
# ## Summary
#
# * A backward pass returns $J^\top dy$. Checking it means checking the
#   gradient of the scalar $\langle dy, f(x) \rangle$ for a random $dy$,
#   equations (1) and (2).
# * The error of a finite difference is truncation plus round-off, equation
#   (5). The five-point stencil (6) at $h = 10^{-4}$ keeps the sum far below
#   the tolerance in float64: about $10^{-14}$ for the sigmoid, and at most a
#   few times $10^{-9}$ for the layers of section 5. float32 cannot get below
#   $10^{-7}$, so the checker rejects it.
# * The relative error (7) has a floor set by the stencil's own round-off
#   (8), so exact zeros pass and real bugs, even small ones, fail.
# * A failing report names the tensor and the entries. Which tensors fail,
#   and by how much, usually points to the bug.
# * Discrete choices (ReLU signs here, experts and tree paths later) are
#   guarded: flipped entries are skipped and reported, and a check that skips
#   most entries fails.
#
# ## Exercises
#
# Each exercise is a solution region, between `### BEGIN SOLUTION exN_M` and
# `### END SOLUTION`, inside the functions listed below. The docstring of
# each function lists what to compute. To work on one, blank it in your
# checkout, for example `python -m tinycond.exercises reset ex1_2` (and
# `git restore tinycond` to get the solutions back), then write the region
# yourself.

# %%
for exercise in EXERCISES:
    if exercise.lesson == 1:
        functions = ", ".join(name.split(":")[1] for name in exercise.functions)
        print(f"{exercise.id}  {exercise.title:<36} {functions}")

# %% [markdown]
# Check one exercise with `pytest -m ex1_2`, and the whole lesson with
# `pytest -m lesson1`. Until you have written an exercise, the parts of this
# notebook that call it raise `NotImplementedError`.
#
# **Open questions.**
#
# 1. The floor (8) grows with the size of the loss $\ell$, not with the size
#    of the gradient. Add a large constant to $\ell$ (for example, check
#    $\langle dy, f(x) \rangle + 10^6$): what happens to the floor, and can
#    a wrong gradient now pass? Why is it right that round-off scales with
#    $|\ell|$, and how would you write a check that avoids the problem?
# 2. For a tensor of $10^6$ entries the checker compares 200 sampled entries
#    and one random direction. Construct a wrong gradient that the sample
#    misses but the direction catches, and one that the direction misses but
#    the sample catches. Would two random directions be better than one?
