# %% [markdown]
# # Lesson 5: adaptive computation time
#
# **Assumes** lesson 1 (finite-difference gradient checks, the linear layer,
# softmax cross-entropy, Adam), the module convention of lesson 2, and
# lessons 3 and 4, where a layer adds its own auxiliary loss.
#
# **Builds** adaptive computation time (ACT) from Graves (2016), "Adaptive
# Computation Time for Recurrent Neural Networks": a recurrent cell that
# decides, input by input, how many steps of computation to spend. A mixture
# of experts chooses *which* parameters run; ACT chooses *how much* computation
# an input gets.
#
# **Code** you will read and write:
#
# * `tinycond.act.halting`: `halting_step` (the halting rule), `act_forward`
#   and `act_backward` (the pair over ponder steps and input steps), and
#   `halting_margin` (how far a sample is from changing its halting step);
# * `tinycond.act.module`: the `ACT` layer, which adds the ponder cost as its
#   auxiliary loss;
# * `tinycond.data.parity`: Graves's parity task.

# %%
%load_ext autoreload
%autoreload 2

# %%
import time

import numpy as np

from tinycond.act import ACT, act_backward, act_forward, halting_margin, halting_step
from tinycond.data.parity import parity
from tinycond.gradcheck import check_function, check_module
from tinycond.nn import CrossEntropyLoss
from tinycond.optim import Adam
from tinycond.plots import plt, save_figure

# %% [markdown]
# ## 1. Why a fixed depth wastes compute
#
# The parity task: a vector of `size` entries, a random number of them (1 to
# `size`, at random positions) set to +1 or -1 and the rest 0. The target is 1
# if the count of +1 entries is odd. Graves used 64 entries; we use **8**, so
# every training run below takes a few seconds on a laptop. The whole vector
# arrives at once, so a recurrent network can only gain computation by
# running more steps on the same input.
#
# An input with one non-zero entry is easy; one with eight needs the network
# to combine eight signs. A network with a fixed number of steps must be deep
# enough for the hardest input and then spends that depth on every input.
# That is the motivation for ACT; whether it pays on a given task is an
# empirical question, and section 5 tests it against fixed-depth networks.

# %%
SIZE = 8
x_demo, y_demo = parity(5, size=SIZE, rng=0)
for row, target in zip(x_demo, y_demo):
    print(row.astype(int), "-> parity", target)

# %% [markdown]
# ## 2. Halting and the remainder
#
# At input step $t$ the cell runs ponder steps $n = 1, 2, \dots$ on the same
# input, with a flag $\delta_{n,1}$ that is 1 only at the first step:
#
# $$s_t^n = \tanh\bigl([x_t, \delta_{n,1}]\, W_x + s_t^{n-1} W_s + b\bigr), \qquad s_t^0 = s_{t-1} \tag{1}$$
#
# After each step a halting unit gives a probability:
#
# $$h_t^n = \sigma(s_t^n \cdot w_h + b_h) \tag{2}$$
#
# The cell stops at the first step where the halting probabilities add up to
# at least $1 - \epsilon$ ($\epsilon = 0.01$), or at `max_steps` $= M$:
#
# $$N(t) = \min\Bigl\{M,\ \min\{n : \textstyle\sum_{m \le n} h_t^m \ge 1 - \epsilon\}\Bigr\} \tag{3}$$
#
# The last step gets whatever probability is left, the **remainder**, so the
# step weights form a distribution:
#
# $$R(t) = 1 - \sum_{m < N(t)} h_t^m, \qquad p_t^n = h_t^n \ (n < N(t)), \qquad p_t^{N(t)} = R(t) \tag{4}$$
#
# The state passed on, and the output, are the $p$-weighted means over the steps:
#
# $$s_t = \sum_{n=1}^{N(t)} p_t^n s_t^n, \qquad y_t = s_t W_y + b_y \tag{5}$$
#
# (the output layer is affine and the $p_t^n$ sum to one, so $y_t$ is also the
# weighted mean of the per-step outputs $s_t^n W_y + b_y$). Finally the
# **ponder cost** $\rho_t = N(t) + R(t)$ is added to the loss with a weight
# $\tau$:
#
# $$\hat L = L + \tau \sum_t \rho_t \tag{6}$$
#
# Three mistakes are easy to make here:
#
# * halting on "cumulative $>$ threshold" instead of "$\ge 1 - \epsilon$";
# * letting a sample that has halted keep adding later steps to its state;
# * updating the state as a running blend instead of the weighted sum (5).
#
# `halting_step` applies (3) and (4) to the rows still running:

# %%
cumulative = np.array([0.0, 0.50, 0.90, 0.30])  # sum of h over earlier steps
h = np.array([0.60, 0.49, 0.095, 0.20])  # this step's halting probabilities
halted, step_weight = halting_step(cumulative, h, last=False, epsilon=0.01)
print("halted     ", halted)
print("step weight", step_weight, "(the remainder 1 - cumulative where halted)")

# %% [markdown]
# The second row shows the first mistake of the list above: $0.50 + 0.49 = 0.99$ is
# exactly $1 - \epsilon$, so the rule $\ge$ halts it, while the rule $>$
# would run it one more step.

# %% [markdown]
# `act_forward` runs all samples of a batch together. A sample that halts
# leaves the set of active rows, so ponder step $n$ computes only the samples
# still running: the work is proportional to the number of ponder steps
# taken, not to batch size times $M$. The cache keeps $N(t)$, $R(t)$ and the
# step weights for plots and tests.

# %%
rng = np.random.default_rng(0)
d_in, d_hidden, max_steps = 3, 6, 5
W_x = rng.standard_normal((d_in + 1, d_hidden)) / 2
W_s = rng.standard_normal((d_hidden, d_hidden)) / np.sqrt(d_hidden)
b = np.zeros(d_hidden)
w_h = 2.0 * rng.standard_normal(d_hidden)
b_h = np.array([0.0])
x = rng.standard_normal((6, 1, d_in))  # 6 samples, 1 input step

(states, ponder_cost), cache = act_forward(x, W_x, W_s, b, w_h, b_h, max_steps=max_steps)
print("N(t):        ", cache.n_steps[:, 0])
print("R(t):        ", cache.remainder[:, 0].round(3))
print("ponder cost: ", ponder_cost[:, 0].round(3))
print("step weights:\n", cache.step_weights[:, 0].round(3))
print("rows computed at each ponder step:", [step.rows.size for step in cache.steps[0]])
assert np.allclose(cache.step_weights.sum(axis=-1), 1.0), "step weights must sum to one"
assert np.allclose(ponder_cost, cache.n_steps + cache.remainder), "ponder cost must be N + R"

# %% [markdown]
# ## 3. The backward pass
#
# Let $g$ be the gradient of the loss with respect to $s_t$ (from the output
# layer, plus what input step $t + 1$ sends back through $s_t^0 = s_t$).
# Differentiating (5):
#
# $$\frac{\partial L}{\partial s_t^n} \mathrel{+}= p_t^n\, g, \qquad \frac{\partial L}{\partial p_t^n} = \langle g, s_t^n \rangle \tag{7}$$
#
# $N(t)$ is an integer: a small change of the parameters leaves it unchanged,
# so its gradient is zero almost everywhere. The ponder cost $N + R$ therefore
# reaches the parameters **only through the remainder** $R$. By (4), $h_t^n$
# for $n < N$ appears as $p_t^n$ and, with a minus sign, in $R$; $h_t^N$
# appears nowhere:
#
# $$\frac{\partial L}{\partial h_t^n} = \langle g, s_t^n - s_t^{N} \rangle - \tau \quad (n < N(t)), \qquad \frac{\partial L}{\partial h_t^{N(t)}} = 0 \tag{8}$$
#
# Then the chain rule runs through the sigmoid (2), $\partial h/\partial a = h(1-h)$,
# adding $\frac{\partial L}{\partial a}\, w_h$ to the gradient of $s_t^n$, and through
# the tanh (1), $\partial s/\partial(\text{pre-activation}) = 1 - s^2$, back to
# step $n - 1$ and, from step 1, to the previous input step: backpropagation
# through ponder steps and through time. `act_backward` walks the stored
# ponder steps in reverse. A sample's halting step is the first one it meets,
# so the gradient of $R$ is known before the earlier steps need it.
#
# Equation (8) makes a prediction we can test. Set $w_h = 0$, so every
# halting probability is $\sigma(b_h)$ and nothing else reaches the ponder
# cost; give only the ponder cost an upstream gradient $\tau$. Each sample
# then sends $-\tau\, h(1-h)$ to $b_h$ from each of its first $N - 1$ steps and
# nothing from step $N$:

# %%
tau = 0.3
for bias in (6.0, 0.0, -1.0):
    (states, ponder_cost), cache = act_forward(x, W_x, W_s, b, np.zeros(d_hidden), np.array([bias]), max_steps=max_steps)
    grads = act_backward((np.zeros_like(states), np.full_like(ponder_cost, tau)), cache)
    h_const = 1.0 / (1.0 + np.exp(-bias))
    n = int(cache.n_steps[0, 0])
    predicted = -tau * x.shape[0] * (n - 1) * h_const * (1.0 - h_const) + 0.0  # + 0.0 prints -0.0 as 0.0
    print(f"b_h = {bias:4.1f}: N = {n}, db_h = {grads[5][0]: .6f}, predicted {predicted: .6f}")
    assert np.isclose(grads[5][0], predicted, rtol=1e-12, atol=0.0)

# %% [markdown]
# ### Checking the backward pass
#
# A finite-difference check is exact only where $N(t)$ does not change under
# the perturbation. So we redraw the samples whose cumulative sums come close
# to $1 - \epsilon$ (`halting_margin` measures the distance), and the checker's
# guard re-evaluates $N(t)$ at every perturbed point. The inputs have three
# input steps, so the check covers backpropagation through time too.

# %%
x = rng.standard_normal((8, 3, d_in))
for _ in range(100):
    _, cache = act_forward(x, W_x, W_s, b, w_h, b_h, max_steps=max_steps)
    close = halting_margin(cache) < 0.002
    if not close.any():
        break
    x[close] = rng.standard_normal((int(close.sum()), 3, d_in))
print("halting steps in the check:", np.unique(cache.n_steps))

report = check_function(
    act_forward, act_backward, x, W_x, W_s, b, w_h, b_h,
    forward_kwargs={"max_steps": max_steps}, choices=lambda out, cache: cache.n_steps, rng=0,
)
print(report)
assert report.max_rel_error < 1e-7 and all(t.n_checked > 0 for t in report.tensors)

# %% [markdown]
# The `ACT` layer wraps the pair, adds the output layer $W_y, b_y$ (`head`),
# sets `aux_loss` $= \tau \cdot$ mean over the batch of $\sum_t \rho_t$, and
# returns $N(t)$ from `own_choices()`, so `check_module` guards it with no
# extra argument.

# %%
layer = ACT(d_in, d_hidden, 2, max_steps=max_steps, tau=0.05, halting_bias=0.0, rng=1)
layer.params["w_h"][:] = w_h
layer_report = check_module(layer, x, rng=0)
print(layer_report)
assert layer_report.max_rel_error < 1e-7

# %% [markdown]
# ## 4. Training on parity
#
# The network: the ACT cell with 32 tanh units, at most `max_steps = 10`
# ponder steps, and a two-class output layer trained with cross-entropy. The
# halting bias starts at 1, as in Graves (2016): the first halting
# probabilities are about $\sigma(1) = 0.73$, so every sample starts by
# pondering two steps. Every run uses the same seed, so the runs differ only in
# what we change.

# %%
D_HIDDEN, MAX_STEPS, BATCH, TRAIN_STEPS = 32, 10, 128, 1500
x_test, y_test = parity(4000, size=SIZE, rng=123)
nonzero_test = np.count_nonzero(x_test, axis=1)


def train_parity(tau, *, halting_bias=1.0, max_steps=MAX_STEPS, steps=TRAIN_STEPS, seed=0):
    """Train an ACT network on parity; return it with its test accuracy and mean ponder steps."""
    rng = np.random.default_rng(seed)
    model = ACT(SIZE, D_HIDDEN, 2, max_steps=max_steps, tau=tau, halting_bias=halting_bias, rng=rng)
    optimizer = Adam(model, lr=1e-2)
    loss_fn = CrossEntropyLoss()
    for _ in range(steps):
        x, y = parity(BATCH, size=SIZE, rng=rng)
        logits = model.forward(x[:, None, :])[:, 0]  # one input step
        loss_fn(logits, y)  # the training loss is this plus model.aux_loss
        model.zero_grad()
        model.backward(loss_fn.backward()[:, None, :])  # also adds the ponder cost's gradient
        optimizer.step()
    logits = model.forward(x_test[:, None, :])[:, 0]
    accuracy = float(np.mean(logits.argmax(axis=1) == y_test))
    return model, accuracy, float(model.n_steps.mean())


# %% [markdown]
# First the fixed-depth baseline. A halting bias of $10^4$ makes every
# $h = 1$, so every sample halts after one step with $R = 1$: a plain network
# with one tanh layer. Its halting unit never learns, because
# $h(1 - h) = 0$.

# %%
start = time.perf_counter()
_, one_step_accuracy, _ = train_parity(0.0, halting_bias=1e4)
print(f"one ponder step: test accuracy {one_step_accuracy:.3f} ({time.perf_counter() - start:.1f} s)")

# %% [markdown]
# Now ACT, with the ponder cost weighted by $\tau = 0.003$:

# %%
start = time.perf_counter()
model, accuracy, mean_ponder = train_parity(0.003)
print(f"ACT, tau = 0.003: test accuracy {accuracy:.3f}, mean ponder steps {mean_ponder:.2f} ({time.perf_counter() - start:.1f} s)")
steps_by_count = {0.003: [model.n_steps[nonzero_test == k].mean() for k in range(1, SIZE + 1)]}

# %% [markdown]
# ## 5. The ponder cost trades accuracy for computation
#
# A larger $\tau$ makes each step more expensive. We train two more networks
# and compare accuracy with the mean number of ponder steps.

# %%
results = {0.003: (accuracy, mean_ponder)}
for tau in (0.03, 0.1):
    start = time.perf_counter()
    trained, acc, ponder = train_parity(tau)
    results[tau] = (acc, ponder)
    steps_by_count[tau] = [trained.n_steps[nonzero_test == k].mean() for k in range(1, SIZE + 1)]
    print(f"tau = {tau}: test accuracy {acc:.3f}, mean ponder steps {ponder:.2f} ({time.perf_counter() - start:.1f} s)")

# %% [markdown]
# ACT spends between two and three steps on average. Is the gain over the
# one-step network due to halting, or only to the extra depth? A network
# with a fixed depth of 2 or 3 steps settles that. A halting bias of
# $-10^4$ makes every $h = 0$, so every sample runs all `max_steps` steps
# and the last one gets $R = 1$: the same cell, unrolled to a fixed depth.

# %%
fixed_accuracy = {1: one_step_accuracy}
for depth in (2, 3):
    start = time.perf_counter()
    _, fixed_accuracy[depth], _ = train_parity(0.0, halting_bias=-1e4, max_steps=depth)
    print(f"fixed {depth} steps: test accuracy {fixed_accuracy[depth]:.3f} ({time.perf_counter() - start:.1f} s)")

# %% [markdown]
# Does ACT spend more steps on harder inputs? Each model's `n_steps` still
# contains $N(t)$ from its test pass, grouped above by the number of non-zero
# entries of the input.

# %%
fig, ax = plt.subplots(figsize=(6, 4))
counts = np.arange(1, SIZE + 1)
for tau, steps in steps_by_count.items():
    ax.plot(counts, steps, marker="o", label=f"ACT, tau = {tau}")
ax.set_xlabel("non-zero entries in the input vector")
ax.set_ylabel("mean ponder steps N(t)")
ax.set_title(f"Parity of {SIZE} entries: ponder steps against difficulty")
ax.set_xticks(counts)
ax.legend()
ax.grid(alpha=0.3)
save_figure(fig, "05_ponder_vs_difficulty")
plt.show()

# %% [markdown]
# **What to look for.** Every curve rises from left to right: each model
# spends more steps on inputs with more non-zero entries, although nothing
# in the loss marks which inputs are hard. In this run the $\tau = 0.003$
# model goes from about 2 steps on one entry to about 2.7 on eight. The
# differences are fractions of a step, because most samples halt after step
# 2 or 3 and only some go further. A larger $\tau$ moves the whole curve
# down; at $\tau = 0.1$ most samples stop after a single step.

# %% [markdown]
# And the trade-off that $\tau$ controls: test accuracy against the mean
# number of ponder steps, with the fixed-depth networks for reference.

# %%
fig, ax = plt.subplots(figsize=(6, 4))
fixed_depths = sorted(fixed_accuracy)
ax.plot(fixed_depths, [100 * fixed_accuracy[n] for n in fixed_depths], marker="s", color="gray", label="fixed depth: 1, 2, 3 steps")
for tau, (acc, ponder) in results.items():
    ax.scatter([ponder], [100 * acc], label=f"ACT, tau = {tau}")
ax.set_xlabel("mean ponder steps per input (test set)")
ax.set_ylabel("test accuracy (%)")
ax.set_title(f"Parity of {SIZE} entries: accuracy against computation")
ax.set_ylim(40, 102)
ax.axhline(50, color="black", linewidth=0.8, linestyle=":", label="chance")
ax.legend(loc="lower right")
ax.grid(alpha=0.3)
save_figure(fig, "05_accuracy_vs_ponder")
plt.show()

# %% [markdown]
# **What to look for.** Compare each ACT point with the grey fixed-depth
# line. In this run one fixed step reaches about 66%, while two fixed steps
# already solve this 8-entry task (the printed accuracy is 1.000, and seeds
# 1 and 2 gave the same). ACT with $\tau = 0.003$ or $0.03$ reaches about
# 99% with 2.2 to 2.4 steps on average, and $\tau = 0.1$ saves steps at a
# large cost in accuracy. So the gain over the one-step network comes from
# the extra depth, not from halting: on this small task ACT does not beat
# the best fixed depth. What it does show is that ACT finds a depth close to
# the best one on its own, from a budget of `max_steps = 10`, and spends
# more of it on harder inputs (previous figure). A fixed network needs its
# depth chosen in advance, for example by training several depths as here.

# %% [markdown]
# ## 6. Computation saved
#
# Because halted samples leave the active set, a batch with a mean of
# $\bar N$ ponder steps costs about $\bar N / M$ of running every sample for
# $M$ steps. The cache of the $\tau = 0.003$ model's test pass shows how many
# rows each ponder step computed:

# %%
rows_per_step = [step.rows.size for step in model.cache.steps[0]]
print("rows computed at ponder steps 1, 2, ...:", rows_per_step)
print(f"total {sum(rows_per_step)} cell evaluations; a fixed {MAX_STEPS}-step network computes {MAX_STEPS * len(x_test)}")

# %% [markdown]
# `python -m tinycond.bench.act` measures the time ratio against the same
# layer with halting switched off (halting bias $-10^4$, so every sample runs
# `max_steps`), for several mean ponder counts.
#
# ## Summary
#
# * ACT adds a halting unit (2) to a recurrent cell. A sample stops at the
#   first step where its halting probabilities reach $1 - \epsilon$ (3).
#   The last step gets the remainder (4), and the state and output are
#   weighted means over the steps (5).
# * The ponder cost $N + R$ (6) has a gradient only through $R$, because
#   $N$ is piecewise constant; the last step's halting unit gets no gradient (8).
# * On parity, a one-step network stays far from perfect while ACT reaches
#   high accuracy with a few ponder steps, and spends more steps on inputs
#   with more non-zero entries. A larger $\tau$ buys fewer steps with accuracy.
# * On this 8-entry task a network fixed at two steps does as well as ACT or
#   better. ACT finds a good depth without being given it, but it does not
#   beat the best fixed depth here.
#
# ## Exercises
#
# Write these functions in `tinycond/act/halting.py`; each docstring lists
# the steps. Check one with `pytest -m ex5_1` (and so on) and the whole
# lesson with `pytest -m lesson5`.
#
# * **ex5_1**: `halting_step`, the halting rule (3) and the step weights (4).
# * **ex5_2**: `act_forward`, the forward pass with compaction.
# * **ex5_3**: `act_backward`, equations (7) and (8) through ponder steps and
#   input steps.
#
# Open questions:
#
# 1. With $\tau = 0$ nothing pushes the ponder count down. What does push it
#    up, and what happens to $N(t)$ if a sample's halting unit saturates at
#    $h = 0$?
# 2. The remainder's gradient makes the network prefer to halt with a small
#    $R$. Why can it not lower the ponder cost by shrinking $N(t)$ through
#    the gradient, and how does $N(t)$ still fall during training?
