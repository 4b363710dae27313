# %%
%load_ext autoreload
%autoreload 2

# %% [markdown]
# # Lesson 4: a decision-tree router
#
# **Assumes** lessons 1 to 3: the gradient checker, the two-layer MLP expert,
# the softmax gate of the dense mixture, and the dispatch of the sparse
# mixture (sort the tokens by expert, run each expert on its slice).
#
# **Builds** a router that reaches one of $E = 2^D$ experts with $D$ yes/no
# decisions. A flat router scores every expert for every token, so its cost
# grows with $E$; a binary tree of learned gates costs $D = \log_2 E$ gate
# evaluations. This is the hierarchical mixture of experts of Jordan and
# Jacobs (1994), the soft decision tree of Frosst and Hinton (2017,
# Distilling a Neural Network Into a Soft Decision Tree) and the fast
# feedforward network of Belcak and Wattenhofer (2023, Fast Feedforward
# Networks).
#
# | piece | where |
# |---|---|
# | heap numbering, depth limit | `tinycond.tree.heap` |
# | path probabilities, the soft tree (pairs) | `tinycond.tree.soft`: `tree_path_forward`/`_backward`, `soft_tree_forward`/`_backward` (ex4_1, ex4_2) |
# | hard descent, hard inference, hard-path training (pairs) | `tinycond.tree.hard`: `tree_descend`, `hard_tree_forward`/`_backward`, `hard_tree_predict` (ex4_3, ex4_4) |
# | balance and hardening penalties (pairs) | `tinycond.tree.penalties` (ex4_5) |
# | the layer | `tinycond.tree.TreeMoE` |
# | pictures of the partition | `tinycond.tree.figures` |
#
# Sections: 1. a tree of gates; 2. the soft tree; 3. its backward pass,
# derived and checked; 4. hard inference; 5. hard-path training;
# 6. penalties that balance and harden the tree; 7. training on a 2-D task:
# the learned partition and the soft-vs-hard gap; 8. routing cost against a
# flat gate.

# %%
import time

import numpy as np

from tinycond.bench.timing import time_interleaved
from tinycond.bench.tree import flat_top1_route, tree_route
from tinycond.data.toy import checkerboard
from tinycond.gradcheck import check_function, check_module
from tinycond.nn import CrossEntropyLoss
from tinycond.optim import Adam
from tinycond.plots import plt, save_figure
from tinycond.tree import (
    TreeMoE,
    balance_penalty_backward,
    balance_penalty_forward,
    hard_tree_backward,
    hard_tree_forward,
    hard_tree_predict,
    hardening_penalty_backward,
    hardening_penalty_forward,
    init_tree_weights,
    soft_tree_backward,
    soft_tree_forward,
    tree_descend,
    tree_path_backward,
    tree_path_forward,
)
from tinycond.tree.figures import plot_partition

rng = np.random.default_rng(0)

# %% [markdown]
# ## 1. A tree of gates
#
# A tree of depth $D$ has $2^D - 1$ inner nodes and $2^D$ leaves. We number
# the nodes level by level, as in a binary heap: the root is node 0 and the
# children of node $n$ are $2n + 1$ (left) and $2n + 2$ (right). Level $l$ is
# then the contiguous block of nodes $2^l - 1, \dots, 2^{l+1} - 2$, and leaf
# $j$ is heap node $2^D - 1 + j$. For $D = 2$:
#
# ```
#            0
#        1       2
#      3   4   5   6      <- leaves 0, 1, 2, 3
# ```
#
# Each inner node is one linear unit with a sigmoid: the probability that
# input $x$ goes right at node $n$ is
#
# $$s_n(x) = \sigma\bigl(\beta\,(x \cdot w_n + b_n)\bigr), \tag{1}$$
#
# where $\beta > 0$ is an inverse temperature: a large $\beta$ makes every
# decision sharper. Each leaf is an expert, a two-layer MLP as in lessons 2
# and 3. The node weights are stored as one matrix `W_node` of shape
# $(2^D - 1, d_{model})$, and the leaf weights are stacked like the experts of
# lesson 2.

# %% [markdown]
# ## 2. The soft tree
#
# In the soft tree, every input goes down *every* branch, split by the node
# probabilities. Write $\mu_n(x)$ for the probability of reaching node $n$:
#
# $$\mu_0 = 1, \qquad \mu_{2n+1} = \mu_n\,(1 - s_n), \qquad \mu_{2n+2} = \mu_n\, s_n. \tag{2}$$
#
# A leaf's probability is the product of the branch probabilities along its
# path, $P_\ell(x) = \mu_{2^D - 1 + \ell}(x)$, and the soft tree's output is
# the probability-weighted sum of all leaves:
#
# $$y(x) = \sum_{\ell=0}^{2^D - 1} P_\ell(x)\, f_\ell(x). \tag{3}$$
#
# Because each node splits its own reach into two parts that add up to it,
# the leaf probabilities of every input sum to one. `tree_path_forward`
# computes (2) one level at a time: the children of level $l$ are the whole of
# level $l + 1$, so one level is one vectorised step over all samples.

# %%
depth = 3
node_probs = rng.uniform(0, 1, size=(5, 2**depth - 1))
reach, _ = tree_path_forward(node_probs)
leaf_probs = reach[:, 2**depth - 1 :]
print("reach of the root:", reach[:, 0])
print("leaf probabilities of sample 0:", np.round(leaf_probs[0], 3))
print("sum over the leaves, per sample:", leaf_probs.sum(axis=1))

# %% [markdown]
# ## 3. The backward pass through the path products
#
# A leaf's probability is a product of $D$ factors. The derivative of a
# product with respect to one factor is the product of the others, and it
# is tempting to write it as $P_\ell / s_n$. Do not: on a confident tree
# $s_n$ underflows to 0, and $P_\ell / s_n$ becomes $0/0$. The soft decision
# tree has a recursion that never divides. Let $V_n = \partial L / \partial
# \mu_n$ be the *value* of node $n$: for a leaf it is $\langle dy, f_\ell(x)
# \rangle$, from (3). A node passes its reach to its children by (2), so by
# the chain rule
#
# $$V_n = s_n\, V_{2n+2} + (1 - s_n)\, V_{2n+1}, \tag{4}$$
#
# $$\frac{\partial L}{\partial s_n} = \mu_n \bigl(V_{2n+2} - V_{2n+1}\bigr). \tag{5}$$
#
# Read (5) as: moving a little probability from the left child to the right
# child changes the loss by the difference of their values, scaled by how
# much probability reaches the node. Equation (4) runs from the leaves up,
# one level at a time, mirroring (2). Then the sigmoid and the linear unit of
# (1) give
#
# $$\frac{\partial L}{\partial z_n} = \frac{\partial L}{\partial s_n}\, s_n (1 - s_n), \qquad
# \frac{\partial L}{\partial w_n} = \beta \sum_x \frac{\partial L}{\partial z_n(x)}\, x, \tag{6}$$
#
# with $z_n = \beta (x \cdot w_n + b_n)$. The input $x$ collects gradient
# from every node unit and from every leaf expert.
#
# `tree_path_backward` implements (4) and (5) (exercise ex4_1), and
# `soft_tree_backward` adds the mixing step (3), the experts and (6)
# (exercise ex4_2). Both pass the finite-difference check at 1e-7.

# %%
report = check_function(tree_path_forward, tree_path_backward, rng.uniform(0.05, 0.95, size=(4, 7)))
print(report, end="\n\n")

x = rng.standard_normal((6, 3))
W_node, b_node, W1, b1, W2, b2 = init_tree_weights(3, 3, 4, 2, rng)
b_node = 0.5 * rng.standard_normal(b_node.shape)
tree_weights = (W_node, b_node, W1, b1, W2, b2)
report = check_function(
    soft_tree_forward,
    soft_tree_backward,
    x,
    *tree_weights,
    forward_kwargs={"beta": 1.5},
    choices=lambda out, cache: cache.experts.activation.positive,  # ReLU signs of the leaf experts
)
print(report)

# %% [markdown]
# ## 4. Hard inference
#
# At inference we want one leaf per input, reached in $D$ steps. Each input
# starts at the root, and at each level it evaluates only the node it is at
# and goes right where $z_n \ge 0$, that is where $s_n \ge 1/2$:
#
# $$n_0 = 0, \qquad n_{l+1} = 2 n_l + 1 + [\,z_{n_l}(x) \ge 0\,]. \tag{7}$$
#
# Vectorised over the batch, a level gathers each sample's node row
# `W_node[node]` and takes a row-wise dot product with `x`: $D$ dot products
# of length $d_{model}$ per sample, where the soft tree computes
# $2^D - 1$ of them. The output is the chosen leaf's output times its path
# probability $P_{\ell^*} = \prod_l \sigma(|z_{n_l}|)$, the probability of
# each branch taken. Then the samples are grouped by leaf with one sort, and
# each leaf runs once on its slice: the dispatch of lesson 3 with $k = 1$.
#
# Two facts link hard and soft. First, $P_{\ell^*}$ is exactly the soft
# tree's probability of leaf $\ell^*$. Second, when that probability is above
# $1/2$, all the other leaves share less than $1/2$, so $\ell^*$ is the most
# probable soft leaf. When decisions are close to $1/2$, the hard leaf can
# differ from the most probable one, and the hard output can differ a lot
# from the soft one: that gap is what section 6 and section 7 are about.

# %%
x = rng.standard_normal((2000, 3))
_, cache = soft_tree_forward(x, *tree_weights, beta=1.5)
soft_leaf_probs = cache.path.reach[:, 7:]
_, hard_leaf, path_prob = hard_tree_predict(x, *tree_weights, beta=1.5)
decided = path_prob > 0.5
same_leaf = hard_leaf == soft_leaf_probs.argmax(axis=1)
print(f"path probability equals the soft leaf probability: {np.allclose(path_prob, soft_leaf_probs[np.arange(2000), hard_leaf])}")
print(f"samples whose path probability is above 1/2: {decided.mean():.0%}")
print(f"hard leaf = most probable soft leaf, among them: {same_leaf[decided].mean():.0%}; among the others: {same_leaf[~decided].mean():.0%}")

# %% [markdown]
# ## 5. Hard-path training
#
# The soft tree trains every leaf on every sample, which costs as much as
# the dense mixture. A cheaper alternative trains along the hard path only:
# the forward pass is the hard inference above,
#
# $$y(x) = \mu_D\, f_{\ell^*}(x), \qquad \mu_{l+1} = \mu_l\, \sigma(|z_{n_l}|). \tag{8}$$
#
# The decisions (7) are piecewise constant, so the node units learn only
# through $\mu_D$, by the same value recursion as (4) along one path:
# $\partial L / \partial \pi_l = \mu_l V_{l+1}$, with $\pi_l = \sigma(|z_{n_l}|)$
# the branch probability at level $l$ and $V_D = \langle dy, f_{\ell^*}(x) \rangle$. A
# sample can make its branches more or less confident, but no gradient
# points it to another leaf that would fit it better. That is the price of the
# cheaper pass.
#
# The finite-difference check needs a guard: a perturbation that moves a
# node logit across 0 sends the sample to another leaf, a jump that no
# derivative describes. The checker re-runs the forward pass at each
# perturbed point and skips entries whose path changed, and it fails if it
# had to skip more than half of them.

# %%
x = rng.standard_normal((12, 3))


def hard_choices(out, cache):
    return [cache.node_index] + [e.activation.positive for e in cache.experts.experts if e is not None]


report = check_function(
    hard_tree_forward, hard_tree_backward, x, *tree_weights, forward_kwargs={"beta": 1.5}, choices=hard_choices
)
print(report)

# %% [markdown]
# ## 6. Penalties that balance and harden the tree
#
# Two things go wrong when a tree trains on its loss alone. Early on, a node
# can send nearly every sample one way, and the subtree on the other side
# never learns. Frosst and Hinton add a **balance penalty**: for each node,
# the reach-weighted mean of its right-branch probability over the batch,
#
# $$\alpha_n = \frac{\sum_x \mu_n(x)\, s_n(x)}{\sum_x \mu_n(x)}, \qquad
# C_{\text{balance}} = -\sum_n 2^{-d_n}\, \tfrac12 \bigl(\log \alpha_n + \log(1 - \alpha_n)\bigr), \tag{9}$$
#
# is pushed towards $1/2$, with weight $2^{-d_n}$ for a node at level $d_n$
# (deeper nodes see fewer samples, so their $\alpha_n$ is noisier). Its
# minimum, with every node at $1/2$, is $D \log 2$.
#
# Later, a soft tree can reach a low loss with decisions that are not
# decided at all, and then the hard tree that runs at inference computes a
# different function. Fast feedforward networks add a **hardening penalty**,
# the mean binary entropy of the decisions,
#
# $$C_{\text{hardening}} = \operatorname{mean}_{x, n}\, H\bigl(s_n(x)\bigr), \qquad
# H(s) = -s \log s - (1 - s) \log (1 - s), \tag{10}$$
#
# which is $\log 2$ for a coin flip and falls to 0 as decisions harden.
# Both are pairs with hand-written backward passes (exercise ex4_5), and
# they take different inputs. `balance_penalty_forward` takes the branch
# probabilities $s_n$ and the reach $\mu_n$ of equation (9).
# `hardening_penalty_forward` takes the node logits $\beta\,(x \cdot w_n + b_n)$
# and computes $s_n$ and the entropy (10) from them, which stays finite when a
# logit is large. The
# layer adds them to `aux_loss`, scaled by `balance_coef` and
# `hardening_coef`, and their gradients flow back through (4) to (6).

# %%
uniform = np.full((5, 7), 0.5)
uniform_reach, _ = tree_path_forward(uniform)
print(f"balance penalty of an even depth-3 tree: {balance_penalty_forward(uniform, uniform_reach[:, :7])[0]:.4f} (3 log 2 = {3 * np.log(2):.4f})")
print(f"hardening penalty at logits 0, 2, 10: {[round(hardening_penalty_forward(np.full((1, 1), z))[0], 4) for z in (0.0, 2.0, 10.0)]}")

probs = rng.uniform(0.1, 0.9, size=(6, 7))
probs_reach, _ = tree_path_forward(probs)
print(check_function(balance_penalty_forward, balance_penalty_backward, probs, probs_reach[:, :7]), end="\n\n")
print(check_function(hardening_penalty_forward, hardening_penalty_backward, rng.normal(0, 2, size=(6, 7))), end="\n\n")

module = TreeMoE(3, 4, 3, d_out=2, mode="soft", balance_coef=0.5, hardening_coef=0.5, beta=1.5, rng=1)
module.params["b_node"][:] = 0.5 * rng.standard_normal(7)
print(check_module(module, rng.standard_normal((10, 3))))

# %% [markdown]
# ## 7. Training on a 2-D task
#
# The task is a 4 x 4 checkerboard on $[-1, 1]^2$ (`tinycond.data.toy.checkerboard`),
# two classes. The model is one `TreeMoE` of depth 3 (8 leaves, each an MLP
# with 16 hidden units) whose two outputs are the class logits, trained
# soft with Adam. We train it three times: with no penalty, with the
# hardening penalty, and with both penalties. Every 100 steps we measure the
# test accuracy of the soft tree (all leaves, `soft_predict`) and of hard
# inference (`eval()` mode).

# %%
x_train, y_train = checkerboard(4000, cells=4, rng=0)
x_test, y_test = checkerboard(1000, cells=4, rng=1)


def train_tree(hardening_coef, balance_coef, steps=1000, batch=256, seed=0):
    """Train a depth-3 tree on the checkerboard; return it and its soft and hard test accuracy over training."""
    model = TreeMoE(2, 16, 3, d_out=2, hardening_coef=hardening_coef, balance_coef=balance_coef, rng=seed)
    optimizer = Adam(model, lr=0.03)
    loss_fn = CrossEntropyLoss()
    batches = np.random.default_rng(seed)
    history = {"step": [], "soft": [], "hard": [], "entropy": []}
    for step in range(steps + 1):
        if step % 100 == 0:
            history["step"].append(step)
            history["soft"].append(np.mean(model.soft_predict(x_test).argmax(axis=1) == y_test))
            history["hard"].append(np.mean(model.eval().forward(x_test).argmax(axis=1) == y_test))
            model.train()
        if step == steps:
            break
        rows = batches.integers(0, len(x_train), size=batch)
        logits = model.forward(x_train[rows])
        loss = loss_fn.forward(logits, y_train[rows])  # the training loss is this plus model.aux_loss
        model.zero_grad()
        model.backward(loss_fn.backward())  # also adds the gradients of the penalties in model.aux_loss
        optimizer.step()
        if step % 100 == 0:
            history["entropy"].append(model.penalties["hardening"])
    return model, history


SETTINGS = {
    "no penalty": {"hardening_coef": 0.0, "balance_coef": 0.0},
    "hardening": {"hardening_coef": 1.0, "balance_coef": 0.0},
    "hardening + balance": {"hardening_coef": 1.0, "balance_coef": 0.5},
}
start = time.perf_counter()
runs = {name: train_tree(**options) for name, options in SETTINGS.items()}
print(f"trained {len(runs)} trees in {time.perf_counter() - start:.1f} s")
for name, (model, history) in runs.items():
    model.eval().forward(x_test)
    leaves_used = np.unique(model.leaf_index).size
    print(f"{name:>20}: soft accuracy {history['soft'][-1]:.1%}, hard accuracy {history['hard'][-1]:.1%}, "
          f"decision entropy {history['entropy'][-1]:.3f} nats, leaves used {leaves_used} of 8")

# %% [markdown]
# The soft tree fits the board in every run, but hard inference differs
# in three ways.
#
# * **No penalty.** The decisions stay soft (entropy near 0.4 nats, against
#   0.69 for a coin flip), and the soft model leans on leaves that a sample
#   reaches with small probability. Hard inference, which keeps only one
#   path, loses about 30 points.
# * **Hardening.** The entropy falls and hard accuracy rises, but look at
#   the partition below: the cheapest way to make every decision certain is
#   to move the lines of the deeper nodes out of the square, so the whole
#   board lands in two leaves. The tree has collapsed to one split.
# * **Hardening and balance.** The balance penalty (9) keeps each node
#   splitting its samples, so all 8 leaves stay in use, and hard inference
#   comes within about 10 points of the soft tree.
#
# Compare the last two lines of the table. In this run hard accuracy is
# 86.7% with hardening alone and 88.4% with balance added: on this task,
# with leaves that are MLPs of 16 hidden units, two leaves can fit the
# board almost as well as eight. What the balance penalty buys here is not
# accuracy but the partition: 8 leaves in use instead of 2, so each sample
# runs one of eight small experts, which is the point of conditional
# computation.

# %%
fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), sharey=True)
for ax, (name, (model, history)) in zip(axes, runs.items()):
    soft, hard = 100 * np.array(history["soft"]), 100 * np.array(history["hard"])
    ax.plot(history["step"], soft, label="soft tree (all leaves)")
    ax.plot(history["step"], hard, label="hard inference (one leaf)")
    ax.fill_between(history["step"], hard, soft, alpha=0.15, color="gray", label="soft - hard gap")
    ax.set_title(name)
    ax.set_xlabel("training step")
    ax.grid(alpha=0.3)
axes[0].set_ylabel("test accuracy (%)")
axes[0].legend(loc="lower right")
fig.suptitle("Soft against hard test accuracy of a depth-3 tree on the 4 x 4 checkerboard")
fig.tight_layout()
save_figure(fig, "04_tree_soft_vs_hard")

# %% [markdown]
# The learned partitions: each colour is the region of one leaf under hard
# inference, and each black segment is the part of a node's line
# $x \cdot w_n + b_n = 0$ inside that node's own region (thicker near the
# root, labelled with the heap index). The dotted grid is the checkerboard.

# %%
fig, axes = plt.subplots(1, 3, figsize=(14, 4.9))
for ax, (name, (model, history)) in zip(axes, runs.items()):
    plot_partition(ax, model.params["W_node"], model.params["b_node"])
    for edge in (-0.5, 0.0, 0.5):
        ax.axvline(edge, color="gray", linestyle=":", linewidth=0.8)
        ax.axhline(edge, color="gray", linestyle=":", linewidth=0.8)
    ax.set_title(f"{name}: hard accuracy {history['hard'][-1]:.0%}")
    ax.set_xlabel("input $x_1$")
    ax.set_ylabel("input $x_2$")
fig.suptitle("Leaf regions (colours) and node hyperplanes (black) of the trained trees")
fig.tight_layout()
save_figure(fig, "04_tree_partition")

# %% [markdown]
# ## 8. Routing cost against a flat gate
#
# A flat top-1 gate over $E$ experts computes $E$ logits of $d_{model}$
# multiply-adds each, a softmax over them, and the top one. The tree computes
# $D = \log_2 E$ node logits and $D$ sigmoids. Per token:
#
# | depth D | experts E = 2^D | tree: D d_model | flat: E d_model | ratio E / D |
# |---|---|---|---|---|
# | 2 | 4 | 2 d_model | 4 d_model | 2 |
# | 4 | 16 | 4 d_model | 16 d_model | 4 |
# | 6 | 64 | 6 d_model | 64 d_model | 11 |
# | 8 | 256 | 8 d_model | 256 d_model | 32 |
# | 10 | 1024 | 10 d_model | 1024 d_model | 102 |
#
# In NumPy the tree does not get the whole ratio. The flat gate is one
# matrix product, which BLAS runs near the machine's peak. Each level of
# the tree gathers one weight row per sample and takes row-wise dot
# products, and those are limited by memory bandwidth. At small E this
# overhead can outweigh the saved multiply-adds, so the tree may be slower
# than the flat gate (flat / tree below 1). The tree pulls ahead as E grows. The cell below times the
# two routers on this machine (the full benchmark, with hard inference
# against soft evaluation, is `python -m tinycond.bench.tree`).

# %%
x = rng.standard_normal((2048, 128))
for depth in (4, 6, 8):
    W_node, b_node, *_ = init_tree_weights(depth, 128, 1, 1, rng)
    W_router = rng.standard_normal((128, 2**depth)) / np.sqrt(128)
    timings = time_interleaved(
        {"tree": lambda: tree_route(x, W_node, b_node), "flat": lambda: flat_top1_route(x, W_router)}, repeats=5
    )
    tree_ms, flat_ms = 1e3 * timings["tree"].median, 1e3 * timings["flat"].median
    print(f"D={depth}, E={2**depth:4d}: tree {tree_ms:6.2f} ms, flat {flat_ms:6.2f} ms, "
          f"flat / tree = {flat_ms / tree_ms:.1f} (multiply-add ratio {2**depth / depth:.0f})")

# %% [markdown]
# ## Summary
#
# * A tree of $D$ sigmoid gates routes to $2^D$ experts. Trained soft, it is
#   a mixture whose gate is a product of branch probabilities (2, 3); the
#   leaf probabilities sum to one.
# * The backward pass through the products is a value recursion from the
#   leaves up (4, 5): no division by a probability, one level at a time.
# * Hard inference follows the signs of $D$ node logits (7) and runs one leaf
#   per sample, grouped by leaf as in lesson 3. Its path probability is the
#   soft tree's probability of that leaf.
# * The soft tree and the hard tree compute different functions until the
#   decisions harden. The hardening penalty (10) narrows the gap; the balance
#   penalty (9) keeps every subtree in use.
#
# ## Exercises
#
# Write the marked regions of these functions, then run the command to
# check them (`pytest -m lesson4` runs all of them):
#
# | id | write | check |
# |---|---|---|
# | ex4_1 | `tinycond.tree.soft`: `tree_path_forward`, `tree_path_backward` | `pytest -m ex4_1` |
# | ex4_2 | `tinycond.tree.soft`: `soft_tree_backward` | `pytest -m ex4_2` |
# | ex4_3 | `tinycond.tree.hard`: `tree_descend`, `hard_tree_forward` | `pytest -m ex4_3` |
# | ex4_4 | `tinycond.tree.hard`: `hard_tree_backward` | `pytest -m ex4_4` |
# | ex4_5 | `tinycond.tree.penalties`: `balance_penalty_backward`, `hardening_penalty_backward` | `pytest -m ex4_5` |
#
# Open questions:
#
# 1. Train the checkerboard tree with `mode="hard"`. Its training output
#    and its inference output are the same function, so there is no gap;
#    how good is the partition it finds, and why? (Look at what gradient a
#    node gets in (8).)
# 2. The soft tree without the penalty reached a low loss with soft
#    decisions. Find a test point where soft and hard disagree and print
#    every leaf's probability and output there: which leaves carry the soft
#    answer?
