# %%
%load_ext autoreload
%autoreload 2

# %% [markdown]
# # Lesson 6: a tiny language model
#
# **Assumes** lesson 1 (the checker, Linear, LayerNorm, softmax and
# cross-entropy), lesson 3 (the sparse top-k mixture of experts and its
# balancing loss) and lesson 4 (the decision-tree router, soft and hard).
#
# **Builds** the job the earlier mechanisms exist for: a character-level
# language model on real English text and code, whose feed-forward layers
# are conditional. The only new mechanism is causal self-attention; the
# rest is assembled from the earlier lessons' pieces. The code lives in the
# package, where you write the exercises:
#
# | piece | module |
# |---|---|
# | corpus, character vocabulary, split, random windows | `tinycond.data.text` |
# | multi-head causal self-attention, forward and backward | `tinycond.attention` |
# | the model: embeddings, pre-norm blocks, output head | `tinycond.lm.model` |
# | sizes and per-token compute of a configuration | `tinycond.lm.config` |
# | training loop, bits per character, expert usage | `tinycond.lm.train` |
# | sampling with temperature and top-k | `tinycond.lm.generate` |
# | save and load as `.npz` | `tinycond.lm.checkpoint` |
#
# `python -m tinycond` (the tour) trains a larger version of the same model
# for a few minutes. This lesson uses smaller budgets, so it runs in well
# under a minute.

# %%
import os

# The model's matrices are small, so one BLAS thread is as fast as several
# and far faster on a busy machine. This must run before NumPy is imported.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

from tinycond.attention import CausalSelfAttention, causal_attention_backward, causal_attention_forward
from tinycond.data.text import CHAR_CLASSES, build_corpus, load_text, sample_windows
from tinycond.gradcheck import check_function, check_module
from tinycond.lm import LMConfig, TinyLM, evaluate_bpc, expert_usage, ffn_flops_per_token, generate, train_lm
from tinycond.lm.figures import plot_bpc_vs_flops, plot_experts_by_class, plot_training
from tinycond.plots import plt, save_figure

# %% [markdown]
# ## 1. Real text, one character at a time
#
# The corpus is the Python Language Reference that ships inside every
# CPython (`pydoc_data.topics`): English prose mixed with code, with nothing
# to download. Its exact content changes between Python versions, so no
# number below is fixed. The first 90% trains and the last 10% validates.
# The vocabulary is every character of the training part, plus id 0 for a
# character the model has never seen.

# %%
CONTEXT = 32
text = load_text()
corpus = build_corpus(text, context=CONTEXT)
print(f"{len(text):,} characters; vocabulary of {corpus.vocab.size} ids; "
      f"{corpus.train.size:,} train, {corpus.val.size:,} validation")
x, y = sample_windows(corpus.train, 2, CONTEXT, rng=0)
for row_x, row_y in zip(x, y):
    print("input :", repr(corpus.vocab.decode(row_x)))
    print("target:", repr(corpus.vocab.decode(row_y)))

# %% [markdown]
# The model reads a window of T characters and, at every position t,
# predicts character t + 1. Its loss is the cross-entropy of the next
# character; divided by $\ln 2$ it is in **bits per character**, the unit
# of this lesson. A model that guesses uniformly over V ids scores
# $\log_2 V$ bits, and a model that always predicts the next character with
# certainty, and correctly, scores 0.
#
# ## 2. Causal self-attention
#
# Attention lets position t read the earlier positions. With queries,
# keys and values $q_t, k_s, v_s \in \mathbb{R}^{d_{head}}$:
#
# $$S_{ts} = \frac{q_t \cdot k_s}{\sqrt{d_{head}}} \tag{1}$$
#
# $$A_{ts} = \frac{[s \le t]\, e^{S_{ts}}}{\sum_{s' \le t} e^{S_{ts'}}} \tag{2}$$
#
# $$o_t = \sum_{s} A_{ts}\, v_s \tag{3}$$
#
# The mask $[s \le t]$ in (2) is what makes the model a language model: if
# position t could read position t + 1, predicting it would be copying.
# The code sets masked scores to $-\infty$ before the softmax, so their
# weights are exactly zero. Going backward with an upstream gradient
# $dO$, equations (3), (2) and (1) in reverse give
#
# $$dV = A^\top dO, \qquad dA = dO\, V^\top \tag{4}$$
#
# $$dS_{ts} = A_{ts} \Bigl(dA_{ts} - \sum_{s'} A_{ts'}\, dA_{ts'}\Bigr) \tag{5}$$
#
# $$dQ = \frac{dS\, K}{\sqrt{d_{head}}}, \qquad dK = \frac{dS^\top Q}{\sqrt{d_{head}}} \tag{6}$$
#
# Equation (5) is the softmax backward of lesson 1, row by row; masked
# entries have $A_{ts} = 0$ and so get no gradient. Multi-head attention
# projects each position to H sets of queries, keys and values of width
# $d_{model} / H$, runs (1)–(3) on each, and projects the joined heads back
# (Vaswani et al. 2017). `causal_attention_forward` / `_backward` are
# (1)–(6); `causal_self_attention_forward` / `_backward` add the
# projections and the split into heads. Both pass the checker at 1e-7:

# %%
rng = np.random.default_rng(0)
q, k, v = (rng.standard_normal((2, 3, 6, 4)) for _ in range(3))  # (B, H, T, d_head)
report = check_function(causal_attention_forward, causal_attention_backward, q, k, v)
print(report)
assert report.max_rel_error <= 1e-7

attention = CausalSelfAttention(d_model=8, n_heads=2, rng=1)
x_float = rng.standard_normal((2, 5, 8))  # (B, T, d_model)
report = check_module(attention, x_float)
print(report)
assert report.max_rel_error <= 1e-7

# %% [markdown]
# And the mask does its job: changing the last two positions of the input
# leaves the outputs of the first three exactly as they were.

# %%
changed = x_float.copy()
changed[:, 3:] += rng.standard_normal(changed[:, 3:].shape)
moved = np.abs(attention.forward(x_float)[:, :3] - attention.forward(changed)[:, :3]).max()
print(f"largest change of positions 0-2 when positions 3-4 change: {moved}")
assert moved == 0.0

# %% [markdown]
# ## 3. The model
#
# Token and position embeddings are added, then L pre-norm blocks, then a
# final LayerNorm and a linear head that gives V logits per position:
#
# $$h = x + \mathrm{Attn}(\mathrm{LN}_1(x)) \tag{7}$$
#
# $$x' = h + \mathrm{FFN}(\mathrm{LN}_2(h)) \tag{8}$$
#
# The feed-forward layer FFN in (8) is where conditional computation goes.
# `LMConfig.router` picks one of three, all working on the (B·T, d_model)
# rows of the block:
#
# * `"dense"`: one MLP of H hidden units, `tinycond.nn.MLP`;
# * `"topk"`: E experts of H/k hidden units, each token visits k of them
#   (lesson 3's `SparseMoE`, with the Switch balancing loss);
# * `"tree"`: $2^D$ leaf MLPs of H hidden units behind a tree of depth D
#   (lesson 4's `TreeMoE`), trained along the hard path and run hard at
#   inference.
#
# `d_hidden` = H is the **active** width, so the three spend nearly the
# same feed-forward FLOPs on a token (the router or the D tree nodes add a
# little), while top-k and the tree hold E/k or $2^D$ times more weights.
# `ffn_flops_per_token` counts 2 FLOPs per multiply-add:

# %%
small = dict(vocab_size=corpus.vocab.size, context=CONTEXT, d_model=32, n_heads=2, n_layers=1)
configs = {
    "dense 64": LMConfig(**small, router="dense", d_hidden=64),
    "dense 256": LMConfig(**small, router="dense", d_hidden=256),
    "top-2 of 8": LMConfig(**small, router="topk", d_hidden=64, n_experts=8, top_k=2),
    "tree, depth 2": LMConfig(**small, router="tree", d_hidden=64, depth=2),
}
print(f"{'model':<15}{'active FLOPs/token':>20}{'dense FLOPs, same weights':>28}")
for name, config in configs.items():
    active, total = ffn_flops_per_token(config)
    print(f"{name:<15}{active:>20,}{total:>28,}")

# %% [markdown]
# The last column gives the FLOPs per token of a dense layer with the same
# total feed-forward weights as the model, that is, what every token would
# cost if no routing skipped any weights.
#
# "dense 64" has the same active width as the top-k and tree models;
# "dense 256" has the same *total* feed-forward weights as both (8 experts
# of 32 units, or 4 leaves of 64 units) and spends four times the compute.
#
# Before training, the whole model's backward pass is checked at once:
# every parameter tensor, from the head back through the experts and the
# attention to the embeddings, on two tiny float64 models, one with top-k
# experts and one with a tree router. To keep the check fast it samples:
# with `max_entries=8`, a tensor of more than 8 entries is checked at 8
# random entries plus one random direction (the `direction` column).
# The checker reruns the forward pass at every perturbed point and skips an
# entry if any layer's discrete choice changes (`own_choices()`: the
# selected experts, the tree path, the ReLU signs), because a derivative
# across a switch means nothing.

# %%
tiny = dict(vocab_size=7, context=5, d_model=8, n_heads=2, n_layers=1, d_hidden=8)
for router_options in ({"router": "topk", "n_experts": 4}, {"router": "tree", "depth": 2}):
    tiny_model = TinyLM(LMConfig(**tiny, **router_options), rng=1)
    ids = rng.integers(0, 7, size=(2, 5))
    report = check_module(tiny_model, ids, max_entries=8)
    print(f"router {router_options['router']}:\n{report}\n")
    assert report.max_rel_error <= 1e-7
    assert sum(t.n_checked for t in report.tensors) > 100

# %% [markdown]
# ## 4. Dense, top-k and tree at equal active compute
#
# Each of the four models trains for 250 steps of 16 windows of 32
# characters (128,000 characters, about a third of the training text) with
# Adam. The budget is small, so the lesson stays under a minute. The tour
# trains a 2-block model with 64-wide vectors on 64-character windows for
# 800 steps of 32 windows, and reaches lower numbers. Training runs in
# float32, twice as fast as float64; the checks above used float64.

# %%
histories, models = {}, {}
for name, config in configs.items():
    models[name] = TinyLM(config, rng=0, dtype=np.float32)
    histories[name] = train_lm(models[name], corpus, steps=250, batch_size=16, lr=1e-2, eval_every=25, rng=1, log=None)
    print(f"{name:<15} trained at {histories[name].tokens_per_second:,.0f} tokens/s")

fig = plot_training(histories, title="Four tiny language models, 250 steps each")
save_figure(fig, "06_training")
plt.show()

# %% [markdown]
# The validation points in that figure use 32 windows each, to keep
# training fast. Below, each model is scored once more on 128 windows
# spread over the validation text, for the figure this project exists for:
# validation bits per character against the feed-forward compute each
# token costs.
#
# Conditional computation pays off where a point lies *below* the dense
# line at the same active FLOPs: more weights, not more work per token.
# "dense 256" marks how far more weights can take this model if every
# token pays for all of them. With budgets this small, differences of a few
# hundredths of a bit can be run-to-run noise: change the seeds (`rng=0`
# and `rng=1` in the training cell) and see which gaps hold.
#
# **What this run shows.** Read the printed values below. In this run the
# top-k and tree models end within a few hundredths of a bit of "dense 64",
# the dense model of the same active width, which is within that noise.
# Only "dense 256", at four times the compute, is clearly lower. So at this
# budget the lesson does not show that conditional computation helps: the
# figure shows how to read the comparison, and measuring the gap needs
# longer training and several seeds.

# %%
points = []
for name, config in configs.items():
    bpc = evaluate_bpc(models[name], corpus.val, max_windows=128)
    points.append({"label": name, "router": config.router, "active_flops": ffn_flops_per_token(config)[0], "val_bpc": bpc})
    print(f"{name:<15} {bpc:.3f} bits/char on 128 validation windows")

fig = plot_bpc_vs_flops(points, title="Validation bits per character against active compute")
save_figure(fig, "06_bpc_vs_flops")
plt.show()

# %% [markdown]
# ## 5. What the experts specialise in
#
# `expert_usage` runs the top-k model on validation windows and counts which
# experts each character class (letters, digits, whitespace, punctuation)
# is routed to. Each row of the figure is one class; a uniform router would
# give every expert 12.5% of every row. The counts are **assignments**, not
# tokens: with top-2 routing every token goes to two experts and is counted
# twice, so each row's count (in brackets) is twice its number of tokens.

# %%
topk_model = models["top-2 of 8"]
counts = expert_usage(topk_model, corpus.val, corpus.vocab.char_classes(), max_windows=128)
fig = plot_experts_by_class(counts, title="Share of each character class's assignments per expert (top-2 of 8, two per token)")
save_figure(fig, "06_experts_by_character")
plt.show()
for c, name in enumerate(CHAR_CLASSES):
    favourite = counts[0, c].argmax()
    print(f"{name:<12} {counts[0, c].sum():>6,} assignments, most often expert {favourite} "
          f"({counts[0, c, favourite] / counts[0, c].sum():.0%} of them)")

# %% [markdown]
# **What to look for.** A row with one bright cell is a class that the
# router sends mostly to one expert; a row of similar cells is a class
# spread over many. In this run letters, most of the text, spread over
# several experts with none above about a quarter. Spaces send
# nearly half their assignments to one expert and punctuation most of its
# assignments to two. Watch the row counts before
# reading a row: the digit row has only a few dozen assignments or fewer
# (this text has few digits), so its percentages rest on a handful of
# tokens and can change completely with the seed.

# %% [markdown]
# ## 6. Samples
#
# `generate` feeds the model its own output, one character at a time, with
# temperature 0.8 and top-k sampling over the 20 most likely characters.
# It records which experts handled the position that produced each
# character, so we can print the first-choice expert under each character.
#
# Set your expectations first. At about 3.5 bits per character the model
# is, on average, about as unsure as a uniform choice among
# $2^{3.5} \approx 11$ characters. That is enough to learn which letters
# are common, where spaces fall and a few frequent pieces such as "the",
# but not to spell words: expect text with the rhythm of English words and
# almost none of the words.

# %%
sample = generate(topk_model, corpus.vocab, "The ", 60, temperature=0.8, top_k=20, rng=3)
generated = sample.text[len("The "):]
print(repr(generated))
print("".join(ch if ch.isprintable() else "~" for ch in generated))
print("".join(str(e) for e in sample.experts[:, 0, 0]), "<- first-choice expert, layer 1")

for name, model in models.items():
    text_out = generate(model, corpus.vocab, "The ", 80, temperature=0.8, top_k=20, rng=4).text
    print(f"--- {name}\n{text_out}")

# %% [markdown]
# ## Summary
#
# * Causal self-attention is a masked softmax over scaled dot products
#   (1)–(3). Its backward (4)–(6) is the softmax backward of lesson 1
#   between batched matmuls. The mask costs nothing in the backward,
#   because masked weights are exactly zero.
# * The model is embeddings, pre-norm blocks (7)–(8) and a head. Swapping the
#   feed-forward layer for a top-k mixture or a tree router keeps the
#   active compute per token and multiplies the weights.
# * The whole model's backward passes the finite-difference check with the
#   routing guard, so the conditional layers train inside it like any other.
# * At equal active compute, compare the conditional models against the
#   dense line in the figure: that gap is what conditional computation buys.
#   At this lesson's small budget, the top-k and tree models end within
#   noise of the dense model of the same active width, so the gap is not
#   shown here. Measuring it needs longer training and several seeds.
#
# ## Exercises
#
# Write the marked regions of these functions, then run the command to
# check them (`pytest -m lesson6` runs all of this lesson's tests):
#
# | id | write | check |
# |---|---|---|
# | ex6_1 | `tinycond.attention`: `causal_attention_backward`, equations (4)–(6) | `pytest -m ex6_1` |
# | ex6_2 | `tinycond.attention`: `causal_self_attention_backward` (projections and heads) | `pytest -m ex6_2` |
# | ex6_3 | `tinycond.lm.generate`: `sample_next` (temperature and top-k) | `pytest -m ex6_3` |
#
# Open questions:
#
# 1. The tree model trains along its hard path, so a token's gradient
#    reaches only D of the $2^D - 1$ nodes. What does the soft mode
#    (`LMConfig(tree_mode="soft")`) cost per step, and does it learn better
#    in the same time?
# 2. Generation here reruns the whole window for every new character. Which
#    arrays of the attention layer could be kept between steps (a key-value
#    cache), and how would the routing of the feed-forward layer change?
