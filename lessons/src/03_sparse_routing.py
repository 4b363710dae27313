# %%
%load_ext autoreload
%autoreload 2

# %% [markdown]
# # Lesson 3: sparse routing
#
# **Assumes** lesson 1 (the finite-difference checker, softmax and its
# backward) and lesson 2 (the dense mixture of experts, where every expert
# runs on every token).
#
# **Builds** the layer that large sparse language models use: each token
# runs only k of E experts, so the number of parameters can grow without
# the compute per token growing with it. The code lives in the package,
# where you write the exercises:
#
# | piece | module |
# |---|---|
# | top-k gating, both conventions, noisy logits | `tinycond.moe.gating` |
# | Switch, importance and z-losses | `tinycond.moe.balancing` |
# | Shazeer's smooth load loss | `tinycond.moe.load` |
# | capacity, grouping by expert, combining back | `tinycond.moe.dispatch` |
# | the `SparseMoE` layer and its pure pair | `tinycond.moe.sparse` |

# %%
import numpy as np

from tinycond import functional as F
from tinycond.data.toy import checkerboard
from tinycond.gradcheck import check_module
from tinycond.moe import SparseMoE
from tinycond.moe.balancing import switch_loss_forward
from tinycond.moe.dispatch import expert_capacity
from tinycond.moe.gating import topk_gating_backward, topk_gating_forward
from tinycond.nn import CrossEntropyLoss, Linear, Sequential
from tinycond.optim import Adam
from tinycond.plots import plt, save_figure

# %% [markdown]
# ## 1. From dense to top-k
#
# The dense mixture of lesson 2 computes, for a token x with router logits
# $z = x W_g$,
#
# $$y = \sum_{i=1}^{E} \mathrm{softmax}(z)_i\, f_i(x) \tag{1}$$
#
# and pays for all E experts. A sparse mixture keeps only the set $S(x)$ of
# the k largest logits and runs only those experts:
#
# $$y = \sum_{i \in S(x)} G_i(x)\, f_i(x), \qquad |S(x)| = k \tag{2}$$
#
# The gates $G_i$ can be made from the logits in two ways, and published
# models use both:
#
# $$\text{topk\_softmax:}\ G_i = \frac{e^{z_i}}{\sum_{j \in S} e^{z_j}} \tag{3}$$
#
# $$\text{softmax\_topk:}\ G_i = \frac{e^{z_i}}{\sum_{j=1}^{E} e^{z_j}} \tag{4}$$
#
# Equation (3) renormalises over the kept experts, so the k gates sum to one
# (Shazeer et al. 2017; Mixtral). GShard (Lepikhin et al. 2020) does the
# same for its top-2: it divides the two kept probabilities by their sum,
# $g_1 / (g_1 + g_2)$ and $g_2 / (g_1 + g_2)$, which is equation (3).
# Equation (4) keeps the full-softmax probabilities as they are (the Switch
# Transformer, with k = 1), so the gates sum to less than one.

# %%
rng = np.random.default_rng(0)
router_logits = rng.standard_normal((3, 6))
for gating in ("topk_softmax", "softmax_topk"):
    gates, cache = topk_gating_forward(router_logits, top_k=2, gating=gating)
    print(f"{gating}: experts {cache.expert_index.tolist()}")
    print(f"  gates {np.round(gates, 3).tolist()}, sums {np.round(gates.sum(axis=1), 3).tolist()}")

# %% [markdown]
# ### Why renormalisation matters
#
# Take k = 1. Under equation (3) the single gate is $e^{z_i} / e^{z_i} = 1$
# whatever the logits are, so the task loss sends **no gradient at all** to
# the router: it can never learn which expert is better for a token. Under
# equation (4) the gate is $p_i < 1$, which grows when the router trusts
# expert i more, so the router learns from the task. This is why the Switch
# Transformer, which routes to one expert, does not renormalise.
#
# With k >= 2 both conventions train the router, with different gradients:
# under (3) only the selected logits get gradient; under (4) every logit
# does, through the shared normaliser.

# %%
dgates = rng.standard_normal((3, 1))
for gating in ("topk_softmax", "softmax_topk"):
    gates, cache = topk_gating_forward(router_logits, top_k=1, gating=gating)
    dlogits = topk_gating_backward(dgates, cache)
    print(f"k=1, {gating}: largest |dlogits| = {np.abs(dlogits).max():.3f}")

# %% [markdown]
# ### Why the gradient through top-k exists almost everywhere
#
# The selection $S(x)$ is piecewise constant in the logits: it changes only
# where the k-th and (k+1)-th largest logits tie, a set of measure zero.
# Everywhere else a small change of the parameters leaves $S$ as it is, and
# equation (2) is a smooth function of the gates and the expert outputs.
# The derivative of the selection itself is zero, so the backward pass
# keeps $S$ fixed. Under (3) it is the backward of a softmax over the k kept
# logits, and the other logits get zero gradient. Under (4) it is the
# backward of the softmax over all E logits, read only at the kept outputs,
# so every logit gets gradient.
#
# The finite-difference check must respect this: the checker recomputes
# the layer's discrete choices (selected experts, dropped assignments, ReLU
# signs) at every perturbed point and skips an entry whose perturbation
# flips one. The layer exposes them through `own_choices()`.
#
# Below, the whole layer is checked with everything switched on: noisy
# gating, a capacity limit that drops assignments, Shazeer's load loss and
# the z-loss. The noise is drawn once and passed in, so every evaluation of
# the check uses the same draw.

# %%
layer = SparseMoE(
    4, 6, 5, top_k=2, d_out=3, noisy=True, capacity_factor=1.0, balance="load",
    balance_coef=0.3, z_loss_coef=1e-2, rng=1,
)
layer.params["W_noise"] += 0.3 * rng.standard_normal(layer.params["W_noise"].shape)
x_check = rng.standard_normal((12, 4))
noise = rng.standard_normal((12, 5))
report = check_module(layer, x_check, forward_kwargs={"noise": noise})
print(report)
print(f"dropped assignments: {layer.n_dropped} of {12 * 2}")
assert report.max_rel_error < 1e-7, report

# %% [markdown]
# ## 2. Noisy gating and balancing losses
#
# Shazeer et al. (2017) add Gaussian noise of learned scale to the logits
# before the top-k:
#
# $$H(x) = x W_g + \epsilon \odot \mathrm{softplus}(x W_{\text{noise}}), \qquad \epsilon \sim \mathcal N(0, 1) \tag{5}$$
#
# The noise lets near-tied experts share tokens, and it makes the smooth
# load estimator of equation (8) possible.
#
# A router trained only on the task loss tends to **collapse**: experts that
# win tokens early get trained on them, get better, and win more. Each
# balancing loss below is smallest when tokens spread evenly. With
# $f_i$ the fraction of the N k assignments that go to expert i and $P_i$ the
# mean full-softmax probability of expert i over the batch:
#
# $$L_{\text{switch}} = \alpha\, E \sum_{i=1}^{E} f_i P_i \tag{6}$$
#
# $f$ comes from counts and carries no gradient; $P$ does. A perfectly uniform
# router gives exactly $\alpha$, and a router that sends every token to one
# expert with probability one gives $\alpha E$ (Fedus, Zoph and Shazeer
# 2021). Shazeer et al. penalise the squared coefficient of variation
# (population variance over mean squared) of the summed gates and of a
# smooth expected load:
#
# $$L_{\text{importance}} = w\, CV^2\Bigl(\sum_x G(x)\Bigr) \tag{7}$$
#
# $$L_{\text{load}} = w\, CV^2\Bigl(\sum_x \Phi\bigl(\tfrac{(x W_g)_i - \mathrm{kth\_excluding}(H(x), k, i)}{\mathrm{softplus}((x W_{\text{noise}})_i)}\bigr)\Bigr) \tag{8}$$
#
# where the kth_excluding term is the k-th largest noisy logit once expert i
# is removed: the threshold expert i must beat. Equation (8) is a
# probability under the noise, so it is undefined without noise and the
# layer refuses `balance="load"` with `noisy=False`. Finally the router
# z-loss of ST-MoE (Zoph et al. 2022) keeps the logits small:
#
# $$L_z = \frac1N \sum_{t} \Bigl(\log \sum_i e^{z_{t,i}}\Bigr)^2 \tag{9}$$
#
# The two values that equation (6) promises, computed by the package (the
# layer multiplies by $\alpha$ = `balance_coef`):

# %%
n_tokens, n_experts = 64, 8
uniform_index = (np.arange(n_tokens) % n_experts)[:, None]
uniform, _ = switch_loss_forward(np.zeros((n_tokens, n_experts)), uniform_index)
collapsed_logits = np.zeros((n_tokens, n_experts))
collapsed_logits[:, 0] = 1e4
collapsed, _ = switch_loss_forward(collapsed_logits, np.zeros((n_tokens, 1), dtype=int))
print(f"uniform router: {uniform}, collapsed router: {collapsed} (E = {n_experts})")

# %% [markdown]
# ## 3. Unused experts, and the Switch loss that spreads the tokens
#
# The task is a new one, `tinycond.data.toy.checkerboard`: points drawn
# uniformly in the square $[-1, 1]^2$, which is cut into a 4 x 4 board, and
# labelled 0 or 1 by the colour of the square they fall in. No straight line
# separates the classes, so the model must carve the square into pieces,
# which suits a mixture. The model is a linear embedding of
# the 2-D input into 16 features followed by a sparse layer of E = 8 experts
# routed Switch-style (k = 1, equation (4)), whose 2 outputs are class
# logits. We train two copies that differ only in the balancing loss and
# record, at every step, the fraction of the batch each expert receives.

# %%
x_all, y_all = checkerboard(2048, cells=4, rng=0)
N_EXPERTS, STEPS, BATCH = 8, 400, 256


def train(balance, seed=0):
    """Train embedding + sparse layer on the checkerboard; return the layer, model and utilisation per step."""
    rng = np.random.default_rng(seed)
    moe = SparseMoE(16, 16, N_EXPERTS, top_k=1, d_out=2, gating="softmax_topk", balance=balance, balance_coef=0.1, rng=rng)
    model = Sequential(Linear(2, 16, rng=rng), moe)
    loss_fn = CrossEntropyLoss()
    optimizer = Adam(model, lr=1e-2)
    utilisation = np.zeros((STEPS, N_EXPERTS))
    for step in range(STEPS):
        batch = rng.integers(0, len(x_all), BATCH)
        logits = model(x_all[batch])
        loss = loss_fn(logits, y_all[batch]) + model.total_aux_loss()
        model.zero_grad()
        model.backward(loss_fn.backward())
        optimizer.step()
        utilisation[step] = moe.expert_counts / moe.expert_counts.sum()
    model.eval()
    accuracy = np.mean(model(x_all).argmax(axis=1) == y_all)
    return moe, model, utilisation, accuracy


runs = {name: train(balance) for name, balance in (("no balancing loss", None), ("Switch loss, alpha = 0.1", "switch"))}
for name, (_, _, utilisation, accuracy) in runs.items():
    first, last = utilisation[:5].mean(axis=0), utilisation[-50:].mean(axis=0)
    print(f"{name}: experts with > 2% of tokens: {np.sum(first > 0.02)} in the first 5 steps, "
          f"{np.sum(last > 0.02)} in the last 50 (largest share {last.max():.2f}); accuracy {accuracy:.3f}")

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), sharey=True)
colors = plt.cm.tab10(np.arange(N_EXPERTS))
for ax, (name, (_, _, utilisation, _)) in zip(axes, runs.items()):
    ax.stackplot(np.arange(STEPS), utilisation.T, colors=colors, labels=[f"expert {i}" for i in range(N_EXPERTS)])
    ax.set_title(name)
    ax.set_xlabel("training step")
    ax.set_xlim(0, STEPS - 1)
    ax.set_ylim(0, 1)
axes[0].set_ylabel("fraction of tokens routed to each expert")
axes[1].legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=8)
fig.suptitle("Expert utilisation over training (E = 8, top-1, batch 256)")
save_figure(fig, "03_expert_utilisation")
plt.show()

# %% [markdown]
# Both copies start from the same weights, where a linear router on a 2-D
# input already favours some experts. Without a balancing term, in this run,
# half the experts lose their tokens within the first ten or so steps and
# never get any back, while the other four share the tokens about evenly
# (the largest share is printed above). This is not the rich-get-richer
# dynamic that section 2 describes: the split is steady, and the accuracy
# is as good as the balanced run's. The cost is the idle experts. An
# expert that receives no tokens receives no gradient either, so nothing
# brings it back and its parameters are wasted. With the Switch loss every
# expert keeps a share near 1/8. Over other seeds the unbalanced router
# ends with 3 to 5 experts in use and the balanced one with all 8. The
# accuracies differ by seed in both
# directions, so the robust effect here is the utilisation.
#
# ## 4. Capacity and dropped tokens
#
# On real hardware every expert gets a fixed-size buffer, its **capacity**
#
# $$C = \Bigl\lceil c\, \frac{N k}{E} \Bigr\rceil \tag{10}$$
#
# for a capacity factor c. Assignments beyond an expert's capacity are
# dropped: their output for that slot is zero. In a transformer block the
# residual connection around the layer then carries the token on unchanged.
# The model of section 3 has no residual connection, so there a token
# whose every assignment is dropped gets a zero output. The layer fills each
# expert's first choices before second choices, in token order
# (`priority="position"`) or by gate value (`priority="gate"`, batch
# prioritized routing of Riquelme et al. 2021). Computing C needs care: in
# floating point $1.1 \cdot 100 / 2$ is 55.000000000000007, whose ceiling is
# 56, so `expert_capacity` computes it exactly:

# %%
print("capacity(1.1, N=100, k=1, E=2) =", expert_capacity(1.1, 100, 1, 2))

# %% [markdown]
# A balanced router needs a smaller capacity factor to drop the same
# fraction. Sweeping the factor on the two trained routers, over the whole
# data set:

# %%
factors = np.linspace(0.25, 3.0, 23)
fig, ax = plt.subplots(figsize=(6.4, 4))
for name, (moe, model, _, _) in runs.items():
    dropped = []
    for factor in factors:
        moe.capacity_factor = factor
        model(x_all)
        dropped.append(moe.n_dropped / (len(x_all) * moe.top_k))
    moe.capacity_factor = None
    ax.plot(factors, dropped, marker="o", markersize=3, label=name)
ax.plot(factors, np.maximum(0.0, 1.0 - factors), "k--", linewidth=1, label="perfectly even router")
ax.set_xlabel("capacity factor c (capacity = ceil(c N k / E))")
ax.set_ylabel("fraction of assignments dropped")
ax.set_title("Dropped assignments against capacity factor (N = 2048, E = 8, k = 1)")
ax.legend()
save_figure(fig, "03_capacity_dropping")
plt.show()

# %% [markdown]
# ## 5. Active against total parameters and FLOPs
#
# Per token, the sparse layer runs the router and k experts; the dense
# mixture runs all E. Counting a multiply-add as 2 FLOPs, for experts with
# `d_model = 256`, `d_hidden = 512` and k = 2:

# %%
d_model, d_hidden, top_k = 256, 512, 2
expert_params = 2 * d_model * d_hidden + d_hidden + d_model
expert_flops = 2 * 2 * d_model * d_hidden
print(f"{'E':>4}{'total params':>14}{'active params':>15}{'sparse FLOPs/token':>20}{'dense FLOPs/token':>19}")
for E in (4, 16, 64):
    router_params, router_flops = d_model * E, 2 * d_model * E
    total = router_params + E * expert_params
    active = router_params + top_k * expert_params
    print(f"{E:>4}{total:>14,}{active:>15,}{router_flops + top_k * expert_flops:>20,}{router_flops + E * expert_flops:>19,}")
check_layer = SparseMoE(d_model, d_hidden, 16, top_k, rng=0)
print(f"SparseMoE(256, 512, 16).num_parameters() = {check_layer.num_parameters():,}")

# %% [markdown]
# Only the router grows with E; the active expert compute is fixed by k.
# How close the NumPy layer gets to that FLOP ratio on this machine is
# measured by `python -m tinycond.bench.sparse` (forward plus backward at
# N = 4096, E = 16, k = 2, where the FLOP ratio against the dense mixture
# is 8).
#
# ## Summary
#
# * Top-k routing runs k of E experts per token. The gates are a softmax
#   over the kept logits (3) or the kept full-softmax probabilities (4).
#   With k = 1 only (4) trains the router.
# * Selection is piecewise constant, so the backward pass is a softmax
#   backward over a fixed set; the gradient checker guards the selection.
# * Without a balancing loss, half the experts of section 3 never get tokens;
#   the Switch loss (6) keeps them all in use. Equations (7) and (8) are
#   Shazeer's alternatives, and (9) keeps logits small.
# * Capacity (10) bounds each expert's work; a balanced router drops fewer
#   assignments at the same capacity factor.
#
# ## Exercises
#
# Write the marked regions of these functions, then run the command to
# check them (`pytest -m lesson3` runs all of them):
#
# | id | write | check |
# |---|---|---|
# | ex3_1 | `tinycond.moe.gating`: `topk_gating_forward`, `topk_gating_backward` | `pytest -m ex3_1` |
# | ex3_2 | `tinycond.moe.gating`: `noisy_logits_backward` | `pytest -m ex3_2` |
# | ex3_3 | `tinycond.moe.balancing`: `switch_loss_forward`/`_backward`, `z_loss_forward`/`_backward` | `pytest -m ex3_3` |
# | ex3_4 | `tinycond.moe.balancing`: `importance_loss_forward`/`_backward`; `tinycond.moe.load`: `load_loss_forward`/`_backward` | `pytest -m ex3_4` |
# | ex3_5 | `tinycond.moe.dispatch`: `expert_capacity`, `plan_dispatch`, `combine_slots` | `pytest -m ex3_5` |
# | ex3_6 | `tinycond.moe.dispatch`: `grouped_mlp_forward`/`_backward`; `tinycond.moe.sparse`: `sparse_moe_backward` | `pytest -m ex3_6` |
#
# Open questions:
#
# 1. What gradient does a dropped assignment send to its gate, to its
#    expert and to the token's input? What would change if the layer
#    returned the input unchanged for a dropped token instead of zero?
# 2. Train the checkerboard model with `gating="topk_softmax"` and k = 1.
#    What happens to the router weights, and why?
