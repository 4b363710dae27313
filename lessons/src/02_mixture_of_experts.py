# %%
%load_ext autoreload
%autoreload 2

# %% [markdown]
# # Lesson 2: mixture of experts
#
# **Assumes** lesson 1: the finite-difference checker, and the backward
# passes of the linear map, the two-layer MLP and the softmax.
#
# **Builds** the dense mixture of experts of Jacobs, Jordan, Nowlan and
# Hinton (1991, Adaptive Mixtures of Local Experts): several small networks
# (the *experts*) and a *gate* that decides, for each input, how much each
# expert's output counts. It is the first piece of conditional computation
# in this course. Every expert still runs on every input here; lesson 3 makes
# the gate sparse, so that only the chosen experts run.
#
# | piece | where |
# |---|---|
# | forward and backward pair | `tinycond.moe.dense_moe_forward`, `dense_moe_backward` (exercises ex2_1, ex2_2) |
# | the module with the weights | `tinycond.moe.DenseMoE` |
# | the expert (two-layer MLP) | `tinycond.layers.mlp_forward` / `mlp_backward`, `tinycond.nn.MLP` |
# | the 2-D task | `tinycond.data.toy.piecewise_regression` |
#
# Sections: 1. why local experts; 2. the forward pass; 3. the backward pass,
# derived and checked; 4. training on a task that one small expert cannot
# fit; 5. which expert wins where; 6. a dense MLP of the same size.

# %%
import time

import numpy as np

from tinycond import functional as F
from tinycond.data.toy import piecewise_regression
from tinycond.exercises import EXERCISES
from tinycond.gradcheck import check_function, check_module, numerical_gradient
from tinycond.moe import DenseMoE, dense_moe_backward, dense_moe_forward
from tinycond.moe.dense import init_expert_weights
from tinycond.nn import MLP, MSELoss
from tinycond.optim import Adam
from tinycond.plots import plt, save_figure

rng = np.random.default_rng(0)

# %% [markdown]
# ## 1. Why local experts
#
# Suppose one target follows different rules in different parts of the
# input space. A single network must fit all of them with the same weights,
# so an update that reduces the error in one region changes the output in
# the others too; Jacobs et al. call this *interference*. Their remedy is to
# give each region its own small network, and to learn, with a gating
# network, which region an input belongs to. If the gate learns the regions,
# each expert only ever has to fit one simple rule.
#
# The task of this lesson, `piecewise_regression`, is built that way: the
# input $x = (x_1, x_2)$ is uniform in $[-1, 1]^2$, and each quadrant has its
# own rule, plus noise of standard deviation 0.05:
#
# | quadrant | rule |
# |---|---|
# | $x_1 < 0,\ x_2 < 0$ | plane $1.5 x_1 - x_2$ |
# | $x_1 \ge 0,\ x_2 < 0$ | ridge $\sin(4 \pi x_1)$ |
# | $x_1 < 0,\ x_2 \ge 0$ | bowl $4(x_1^2 + x_2^2) - 2$ |
# | $x_1 \ge 0,\ x_2 \ge 0$ | constant $-1$ |
#
# The target jumps at the quadrant borders. We will compare a single small
# MLP (one expert alone), a mixture of four such experts, and one larger MLP
# with as many parameters as the mixture.

# %%
x_train, y_train = piecewise_regression(1000, rng=0)  # (N, 2), (N, 1)
x_test, y_test = piecewise_regression(2000, rng=1)
print(f"train {x_train.shape} -> {y_train.shape}, test {x_test.shape}; targets from {y_train.min():.2f} to {y_train.max():.2f}")

# %% [markdown]
# ## 2. The forward pass
#
# For a batch of $N$ inputs $x_n \in \mathbb{R}^{d_\text{model}}$ and $E$
# experts, the gate computes router logits and turns them into weights that
# are positive and sum to one over the experts:
#
# $$z_n = x_n W_g, \qquad W_g \in \mathbb{R}^{d_\text{model} \times E} \tag{1}$$
#
# $$g_{ne} = \mathrm{softmax}(z_n)_e = \frac{e^{z_{ne}}}{\sum_{j=1}^{E} e^{z_{nj}}} \tag{2}$$
#
# Each expert $e$ is a two-layer MLP with its own weights:
#
# $$f_e(x_n) = \mathrm{relu}(x_n W_1^{(e)} + b_1^{(e)})\, W_2^{(e)} + b_2^{(e)} \tag{3}$$
#
# and the output mixes the experts by their gates:
#
# $$y_n = \sum_{e=1}^{E} g_{ne}\, f_e(x_n) \tag{4}$$
#
# `dense_moe_forward` runs equation (3) for all experts at once: the expert
# weights are stacked along a first axis of size $E$ (for example
# $W_1$ has shape $(E, d_\text{model}, d_\text{hidden})$), and one batched
# matrix product computes every expert on every token, with no Python loop.
# The cache keeps what the backward pass needs, including the gates and
# every expert's output.
#
# tinycond's gate has no bias, so the logits (1) are linear in $x$. In two
# dimensions, the region where one expert has the largest gate is then a
# wedge with its tip at the origin. The quadrants of our task are such
# wedges, so a gate of this form can represent them exactly.

# %%
N, d_model, d_hidden, d_out, n_experts = 5, 3, 6, 2, 4
x = rng.standard_normal((N, d_model))
W_gate = rng.standard_normal((d_model, n_experts))
W1, b1, W2, b2 = init_expert_weights(n_experts, d_model, d_hidden, d_out, rng)
print(f"W1 {W1.shape}, b1 {b1.shape}, W2 {W2.shape}, b2 {b2.shape}")

y, cache = dense_moe_forward(x, W_gate, W1, b1, W2, b2)
print(f"y {y.shape}, gates {cache.gates.shape}, expert outputs {cache.expert_out.shape}")
print("gates:\n", np.round(cache.gates, 3))
print("gate sums per token:", np.round(cache.gates.sum(axis=1), 12))

# %% [markdown]
# ## 3. The backward pass, step by step
#
# The backward pass receives $dy_n = \partial L / \partial y_n$ and must
# return the gradient of every input and weight. Go back through equations
# (4), (2), (1) and (3) in turn.
#
# **Mixing (4).** $y_n$ is linear in each gate and in each expert output, so
#
# $$\frac{\partial L}{\partial g_{ne}} = \langle dy_n, f_e(x_n) \rangle,
# \qquad \frac{\partial L}{\partial f_e(x_n)} = g_{ne}\, dy_n \tag{5}$$
#
# The first is an array `dgates` of shape $(N, E)$, the second an array
# `dexpert_out` of shape $(E, N, d_\text{out})$.
#
# **Softmax gate (2).** Differentiating (2) gives the softmax Jacobian
#
# $$\frac{\partial g_{ni}}{\partial z_{nj}} = g_{ni}\,(\delta_{ij} - g_{nj}) \tag{6}$$
#
# so, with $dg = \partial L / \partial g$,
#
# $$dz_{nj} = \sum_i dg_{ni}\, g_{ni} (\delta_{ij} - g_{nj})
# = g_{nj} \Bigl( dg_{nj} - \sum_i g_{ni}\, dg_{ni} \Bigr) \tag{7}$$
#
# Substituting (5) and using $\sum_i g_{ni} f_i(x_n) = y_n$ gives the
# gradient of the gate in a form that explains what the gate learns:
#
# $$dz_{ne} = g_{ne}\, \langle dy_n,\ f_e(x_n) - y_n \rangle \tag{8}$$
#
# A gradient descent step changes $z_{ne}$ by $-\eta\, dz_{ne}$: the gate
# moves weight towards expert $e$ when $f_e(x_n)$ lies further than the
# mixture $y_n$ in the direction that lowers the loss, $-dy_n$, and away
# from it otherwise. The gate learns to trust, input by input, the experts
# that do better than the current mixture.
#
# **Linear gate (1).** $dW_g = x^\top dz$, and the gate's share of the input
# gradient is $dz\, W_g^\top$.
#
# **Experts (3).** Each expert is an MLP whose upstream gradient is
# $g_{ne}\, dy_n$ from (5); `mlp_backward` from lesson 1 returns its input
# and weight gradients, for all experts at once.
#
# **Input.** $x$ feeds the gate and every expert, so
#
# $$dx = dz\, W_g^\top + \sum_{e=1}^{E} dx^{(e)} \tag{9}$$
#
# Before checking the whole pair, check equation (6) itself on one token.
# The cell below builds the Jacobian from the formula and compares it with
# finite differences of the softmax, one output at a time. It then confirms
# that the vector-Jacobian product of lesson 1's `softmax_backward` equals
# $J^\top dg$. Building $J$ costs $E^2$ per token, so the backward pass never
# does it.

# %%
z = x[0] @ W_gate  # router logits of one token, (E,)
g = F.softmax(z)
J_formula = np.diag(g) - np.outer(g, g)  # equation (6), (E, E)
J_numeric = np.stack([numerical_gradient(lambda z_: F.softmax(z_)[i], z) for i in range(n_experts)])
dg = rng.standard_normal(n_experts)
vjp = F.softmax_backward(dg, F.SoftmaxCache(g))

print(f"largest |J_formula - J_numeric|: {np.max(np.abs(J_formula - J_numeric)):.1e}")
print(f"largest |J^T dg - softmax_backward(dg)|: {np.max(np.abs(J_formula.T @ dg - vjp)):.1e}")
print(f"largest |column sum of J|: {np.max(np.abs(J_formula.sum(axis=0))):.1e} (the gates always sum to one)")

# %% [markdown]
# Now the whole pair, with lesson 1's checker: every float input and weight
# gets a finite-difference check against a random upstream gradient. The
# experts' ReLUs are kinks, so the `choices` callable returns their sign
# pattern and the checker skips any entry whose perturbation flips a sign.

# %%
def relu_signs(out, cache):
    """Return the experts' ReLU sign pattern, the discrete choices of one forward pass."""
    return cache.experts.activation.positive


report = check_function(dense_moe_forward, dense_moe_backward, x, W_gate, W1, b1, W2, b2, choices=relu_signs)
print(report)

# %% [markdown]
# The module `DenseMoE` wraps the pair and keeps the weights. Its ReLU signs
# are its `own_choices()`, so `check_module` guards them without being asked.
# The input width, hidden width and number of experts below are those of the
# training run that follows.

# %%
module = DenseMoE(2, 8, 4, d_out=1, rng=0, gate_scale=6.0)
report = check_module(module, x_train[:20])
print(report)
print(f"largest relative error over all tensors: {report.max_rel_error:.1e}")

# %% [markdown]
# ## 4. Training on the piecewise task
#
# Three models, trained the same way:
#
# * **one expert**: an MLP with 8 hidden units, alone;
# * **the mixture**: four such experts under a softmax gate (`DenseMoE`);
# * **a dense MLP** whose hidden width is chosen so that it has as many
#   parameters as the mixture.
#
# Each is trained on the mean squared error of its output, with Adam, on the
# full training set for 2000 steps, the learning rate decaying along a
# cosine from its initial value to 5% of it. The initial learning rate is
# 0.05 for the mixture and 0.02 for the MLPs. For each model this is the
# best of 0.01, 0.02 and 0.05 by median test error over seeds 0 to 4, in a
# sweep run with this same loop outside the notebook.
#
# The gate starts with `gate_scale=6.0` (the default is 1.0): the initial
# logits are large, so each expert starts out owning a random wedge of the
# input instead of an even share of every input. The loss is that of the
# mixed output (4), so nothing in it requires the experts to specialise, and
# a decisive gate at the start pushes them that way. The same loop with the
# default scale (learning rate 0.05) gave a similar test error, 0.050 to
# 0.061 over seeds 0 to 4 against 0.047 to 0.057 with 6.0, but a softer gate
# whose regions are harder to read.

# %%
def train(model, lr, steps=2000):
    """Train ``model`` on the full training set; return the loss of every step."""
    optimizer = Adam(model, lr=lr)
    loss_fn = MSELoss()
    losses = np.empty(steps)
    for step in range(steps):
        optimizer.lr = lr * (0.05 + 0.95 * 0.5 * (1.0 + np.cos(np.pi * step / steps)))
        losses[step] = loss_fn(model.forward(x_train), y_train)
        optimizer.zero_grad()
        model.backward(loss_fn.backward())
        optimizer.step()
    return losses


mixture = DenseMoE(2, 8, 4, d_out=1, rng=0, gate_scale=6.0)
n_mixture = mixture.num_parameters()
d_hidden_dense = round((n_mixture - 1) / 4)  # an MLP 2 -> H -> 1 has 4H + 1 parameters
models = {
    "one expert": (MLP(2, 8, 1, rng=0), 0.02),
    "mixture of 4": (mixture, 0.05),
    f"dense MLP, {d_hidden_dense} hidden": (MLP(2, d_hidden_dense, 1, rng=0), 0.02),
}

history = {}
for name, (model, lr) in models.items():
    start = time.perf_counter()
    history[name] = train(model, lr)
    print(f"{name:<24} {model.num_parameters():>4} parameters, trained in {time.perf_counter() - start:.1f} s")

# %% [markdown]
# ## 5. Which expert wins where
#
# After training, evaluate the gate on a grid over the input square. The
# left panel colours each point by the expert with the largest gate,
# $\arg\max_e g_e(x)$, with the training points on top and the true quadrant
# borders dashed. The four panels on the right show each gate $g_e(x)$
# itself, from 0 to 1.

# %%
resolution = 150
axis = np.linspace(-1.0, 1.0, resolution)
grid = np.stack(np.meshgrid(axis, axis), axis=-1).reshape(-1, 2)  # (resolution**2, 2)
mixture.forward(grid)
gates_grid = mixture.gates.reshape(resolution, resolution, -1)  # (rows, cols, E)
winner = gates_grid.argmax(axis=-1)

colors = plt.get_cmap("tab10").colors[:4]
fig = plt.figure(figsize=(12, 5.2))
grid_spec = fig.add_gridspec(2, 4, width_ratios=[2.2, 1, 1, 0.08], wspace=0.3, hspace=0.35)
ax = fig.add_subplot(grid_spec[:, 0])
ax.contourf(axis, axis, winner, levels=np.arange(-0.5, 4.5), colors=colors, alpha=0.35)
ax.scatter(x_train[:, 0], x_train[:, 1], s=3, color="0.2", label="training points")
ax.axhline(0.0, color="k", ls="--", lw=1)
ax.axvline(0.0, color="k", ls="--", lw=1)
for (cx, cy), rule in zip([(-0.5, -0.5), (0.5, -0.5), (-0.5, 0.5), (0.5, 0.5)], ["plane", "ridge", "bowl", "constant"]):
    ax.text(cx, cy, rule, ha="center", va="center", fontsize=11, bbox=dict(facecolor="white", alpha=0.8, lw=0))
handles = [plt.Rectangle((0, 0), 1, 1, color=c, alpha=0.5) for c in colors]
ax.legend(handles, [f"expert {e}" for e in range(4)], loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=4, fontsize=9)
ax.set_xlabel("$x_1$")
ax.set_ylabel("$x_2$")
ax.set_aspect("equal")
ax.set_title("expert with the largest gate, argmax$_e\\, g_e(x)$")

for e in range(4):
    panel = fig.add_subplot(grid_spec[e // 2, 1 + e % 2])
    image = panel.imshow(gates_grid[:, :, e], origin="lower", extent=(-1, 1, -1, 1), vmin=0, vmax=1, cmap="viridis")
    panel.set_title(f"gate of expert {e}", color=colors[e], fontsize=10)
    panel.set_xticks([-1, 0, 1])
    panel.set_yticks([-1, 0, 1])
    if e >= 2:
        panel.set_xlabel("$x_1$")
    if e % 2 == 0:
        panel.set_ylabel("$x_2$")
colorbar_axes = fig.add_subplot(grid_spec[:, 3])
fig.colorbar(image, cax=colorbar_axes, label="gate value $g_e(x)$")
fig.suptitle("Learned gate of the mixture of 4 experts on the piecewise task")
save_figure(fig, "02_expert_regions")
plt.show()

# %% [markdown]
# **What to look for.** Where a coloured wedge lines up with the dashed
# quadrant borders, one expert has taken one rule. Where a wedge spans two
# quadrants, one expert fits two rules; where a quadrant is split, several
# experts blend there. The right panels show how sharp the gate is: a gate
# near 1 inside its wedge means one expert alone produces the output.
#
# In the run behind the committed figure (`figures/02_expert_regions.png`),
# expert 0 owns the whole lower half, plane and ridge together: its 8 hidden
# units are enough for both, and nothing in the loss requires one rule
# per expert. Expert 1 has the largest gate across the bowl, but that gate
# is soft too (a mean largest gate near 0.6 in the table below), so the
# other experts still add to the output there. The constant quadrant goes
# mostly to expert 3, with a soft gate shared with experts 1 and 2. The table below
# counts, for the test points of each quadrant, which expert has the largest
# gate, and how large the largest gate is on average.

# %%
mixture.forward(x_test)
test_gates = mixture.gates  # (N_test, E)
quadrant = (x_test[:, 0] >= 0).astype(int) + 2 * (x_test[:, 1] >= 0).astype(int)
print(f"{'quadrant':<10}" + "".join(f"{f'expert {e}':>10}" for e in range(4)) + f"{'mean max gate':>16}")
for q, rule in enumerate(["plane", "ridge", "bowl", "constant"]):
    counts = np.bincount(test_gates[quadrant == q].argmax(axis=1), minlength=4)
    mean_max = test_gates[quadrant == q].max(axis=1).mean()
    print(f"{rule:<10}" + "".join(f"{c:>10}" for c in counts) + f"{mean_max:>16.2f}")

# %% [markdown]
# ## 6. The mixture against a dense MLP of the same size
#
# The same number of parameters can be spent on one wider MLP instead. The
# table gives the final training loss and the error on 2000 fresh test points;
# the noise alone contributes $0.05^2 = 0.0025$ to both.

# %%
loss_fn = MSELoss()
print(f"{'model':<24}{'parameters':>12}{'train MSE':>12}{'test MSE':>12}")
test_error = {}
for name, (model, _) in models.items():
    test_error[name] = loss_fn(model.forward(x_test), y_test)
    print(f"{name:<24}{model.num_parameters():>12}{history[name][-1]:>12.4f}{test_error[name]:>12.4f}")
mixture_name, dense_name = list(models)[1:]
print(f"test MSE of the dense MLP over that of the mixture: {test_error[dense_name] / test_error[mixture_name]:.2f}")

# %%
fig, (ax_loss, ax_pred) = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw={"width_ratios": [1, 1.4]})
for name, losses in history.items():
    ax_loss.semilogy(losses, label=f"{name} (test MSE {test_error[name]:.3f})")
ax_loss.axhline(0.05**2, color="0.5", ls=":", lw=1, label="noise level 0.0025")
ax_loss.set_xlabel("training step (full batch)")
ax_loss.set_ylabel("training MSE")
ax_loss.set_title("Training loss")
ax_loss.legend(fontsize=9)
ax_loss.grid(True, which="both", alpha=0.3)

# Predictions along the horizontal line x2 = -0.5, which crosses the plane
# quadrant (x1 < 0) and the ridge quadrant (x1 >= 0).
line = np.stack([axis, np.full_like(axis, -0.5)], axis=1)  # (resolution, 2)
left = axis < 0
ax_pred.plot(axis[left], 1.5 * axis[left] + 0.5, color="k", lw=2, label="noise-free target")
ax_pred.plot(axis[~left], np.sin(4 * np.pi * axis[~left]), color="k", lw=2)
for name, (model, _) in models.items():
    ax_pred.plot(axis, model.forward(line)[:, 0], lw=1.3, label=name)
ax_pred.axvline(0.0, color="k", ls="--", lw=1)
ax_pred.set_xlabel("$x_1$ (with $x_2 = -0.5$)")
ax_pred.set_ylabel("output $y$")
ax_pred.set_title("Predictions across the plane/ridge border")
ax_pred.legend(fontsize=9, loc="upper left")
save_figure(fig, "02_mixture_vs_dense")
plt.show()

# %% [markdown]
# **What to look for.** On the left, the single expert stops improving after
# a few hundred steps: 8 hidden units cannot bend into four different rules.
# The mixture's loss drops sharply between steps 600 and 900; in the
# committed run, that is when the gate hands most of the constant quadrant
# to expert 3, which until then had only a sliver of it. The right panel is
# one slice through the plane and the ridge. In the committed run one expert
# serves both sides of the border, so the mixture, like the dense MLP,
# smooths the jump at $x_1 = 0$. Beyond it the mixture follows most of the
# ridge and flattens only its last trough, the dense MLP rounds off the
# ridge's peaks, and the single expert hardly departs from a straight line.
#
# Two caveats keep the comparison honest. First, it is one seed. Over seeds
# 0 to 4 (the learning-rate sweep above), the mixture's test error ranged
# from 0.047 to 0.057 and the dense MLP's from 0.074 to 0.147. The partition
# changed from seed to seed, and it never matched the four quadrants
# exactly. Second, the size of the gap depends on the seed. The dense MLP's
# test error divided by the mixture's, printed above for this run, was 1.7,
# 2.9, 1.5, 1.5 and 1.4 for seeds 0 to 4 of that sweep: most seeds give a
# gap of less than a factor of two, one seed almost three. This lesson does
# not measure how the gap changes with more units or more steps. The
# mixture's advantage is structural: each input needs only the
# experts whose gates are large, which lesson 3 turns into saved
# computation.
#
# ## Summary
#
# * A dense mixture of experts computes gates $g = \mathrm{softmax}(x W_g)$
#   and mixes expert outputs, $y = \sum_e g_e f_e(x)$, equations (1) to (4).
# * Its backward pass splits at the mixing step (5): the gates get
#   $\langle dy, f_e \rangle$ and the experts $g_e\, dy$. Through the softmax
#   Jacobian (6, 7), the gate's logit gradient is
#   $g_e \langle dy, f_e - y \rangle$ (8): the gate moves towards experts that
#   beat the current mixture. The input collects gradient from the gate and
#   every expert (9).
# * The hand-written backward pass passes the finite-difference check for the
#   input and every weight, with the experts' ReLU signs guarded.
# * On a task with four regions and four rules, a mixture of four small
#   experts learns a gate that divides the input among them, and fits the
#   task far better than one expert alone.
#
# ## Exercises
#
# Write the two functions below in `tinycond/moe/dense.py`; their
# docstrings list the steps. In a copy made with
# `python -m tinycond.exercises build` they are already blank. In a git
# clone of tinycond, blank them with
# `python -m tinycond.exercises reset ex2_1 ex2_2`, and
# `git restore tinycond` brings the solutions back. A copy made with
# `build` has no git history, so this restore step does not apply there.
#
# ex2_2's tests call code from earlier exercises, which must be written
# first: ex2_1 (`dense_moe_forward`), ex1_4 (`softmax_backward` and the
# other softmax and cross-entropy backward passes), ex1_6 (`mlp_backward`)
# and, through `mlp_backward`, ex1_2 (`linear_backward`) and ex1_3 (the
# activation backward passes). `python -m tinycond.exercises list` shows
# which exercises are still blank.

# %%
for exercise in EXERCISES:
    if exercise.lesson == 2:
        functions = ", ".join(name.split(":")[1] for name in exercise.functions)
        print(f"{exercise.id}  {exercise.title:<28} {functions}")

# %% [markdown]
# Check them with `pytest -m ex2_1`, `pytest -m ex2_2`, or the whole lesson
# with `pytest -m lesson2`.
#
# **Open questions.**
#
# 1. The loss here is the error of the blended output, so an expert is
#    rewarded for fixing what the other experts get wrong: the experts
#    cooperate. Jacobs et al. (1991) argue that this couples the experts and
#    propose losses in which each expert is compared with the target on its
#    own, such as $\sum_e g_e \lVert d - f_e(x) \rVert^2$ or
#    $-\log \sum_e g_e \exp(-\tfrac12 \lVert d - f_e(x) \rVert^2)$, for a
#    target $d$. Derive the gradient of the second loss with respect to the
#    logits $z$. What plays the role of $g_e$ in equation (8)? Would you
#    expect the regions in the figure above to become sharper?
# 2. Rerun the training with seeds 1 to 4 (the `rng` of the three models).
#    How often does an expert end up with almost no region, and does the
#    mixture stay ahead of the dense MLP? What does `gate_scale=1.0` change?
