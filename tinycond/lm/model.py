r"""The tiny character-level language model: embeddings, pre-norm blocks and an output head.

Each block is

.. math::
    h = x + \mathrm{Attn}(\mathrm{LN}_1(x)), \qquad
    y = h + \mathrm{FFN}(\mathrm{LN}_2(h))

with causal multi-head self-attention (:mod:`tinycond.attention`) and a
feed-forward layer chosen by ``LMConfig.router``: a dense MLP
(:class:`tinycond.nn.MLP`), the top-k mixture of experts
(:class:`tinycond.moe.SparseMoE`) or the decision-tree router
(:class:`tinycond.tree.TreeMoE`). The feed-forward layers work on rows, so a
block flattens its (B, T, d_model) input to (B * T, d_model) rows for them.

References
----------
Radford et al. (2019). Language Models are Unsupervised Multitask Learners
(the pre-norm block layout).
Fedus, Zoph and Shazeer (2021). Switch Transformers (a mixture of experts in
place of the feed-forward layer).
"""

from __future__ import annotations

import numpy as np

from tinycond._checks import as_generator
from tinycond.attention import CausalSelfAttention
from tinycond.lm.config import LMConfig
from tinycond.nn import MLP, Embedding, LayerNorm, Linear, Module

# Standard deviation of the initial token and position embeddings. Small
# embeddings keep the first LayerNorm's input dominated by the token, not by
# noise, and let the residual stream grow as the blocks learn.
EMBEDDING_SCALE = 0.3


def make_feedforward(config: LMConfig, *, rng, dtype=np.float64) -> Module:
    """Return the feed-forward layer that ``config.router`` selects, mapping (N, d_model) to (N, d_model)."""
    d, h = config.d_model, config.expert_hidden
    if config.router == "dense":
        return MLP(d, h, d, activation=config.activation, rng=rng, dtype=dtype)
    if config.router == "topk":
        from tinycond.moe import SparseMoE

        layer = SparseMoE(
            d, h, config.n_experts, config.top_k, activation=config.activation,
            gating="topk_softmax", balance="switch", balance_coef=config.balance_coef, rng=rng, dtype=dtype,
        )
    else:
        from tinycond.tree import TreeMoE

        layer = TreeMoE(
            d, h, config.depth, activation=config.activation, mode=config.tree_mode,
            balance_coef=config.tree_balance_coef, hardening_coef=config.tree_hardening_coef, rng=rng, dtype=dtype,
        )
    return layer


class Block(Module):
    """One pre-norm transformer block: causal attention, then the feed-forward layer, each residual.

    Parameters
    ----------
    config : LMConfig
    rng : Generator or int
    dtype : numpy dtype
    """

    def __init__(self, config: LMConfig, *, rng, dtype=np.float64):
        super().__init__()
        rng = as_generator(rng)
        # Scale the attention output down by sqrt(2 L), one residual branch
        # of 2 L, so the stream's variance at initialisation does not grow with depth.
        out_scale = 1.0 / np.sqrt(2 * config.n_layers)
        self.ln1 = LayerNorm(config.d_model, dtype=dtype)
        self.attn = CausalSelfAttention(config.d_model, config.n_heads, rng=rng, out_scale=out_scale, dtype=dtype)
        self.ln2 = LayerNorm(config.d_model, dtype=dtype)
        self.ffn = make_feedforward(config, rng=rng, dtype=dtype)

    def forward(self, x):
        """Map x of shape (B, T, d_model) to the block output of the same shape."""
        B, T, d_model = x.shape
        h = x + self.attn.forward(self.ln1.forward(x))
        rows = self.ln2.forward(h).reshape(B * T, d_model)  # (B T, d_model)
        return h + self.ffn.forward(rows).reshape(B, T, d_model)  # (B, T, d_model)

    def backward(self, dy):
        """Return dx for dy of shape (B, T, d_model); each residual adds its branch's gradient."""
        B, T, d_model = dy.shape
        drows = self.ffn.backward(dy.reshape(B * T, d_model))  # (B T, d_model)
        dh = dy + self.ln2.backward(drows.reshape(B, T, d_model))
        return dh + self.ln1.backward(self.attn.backward(dh))

    def routing(self):
        """Return the feed-forward layer's choice per row of the last forward: (B T, k) expert ids, or None.

        The top-k mixture gives ``expert_index`` (B T, k); the tree gives its
        ``leaf_index`` as (B T, 1); the dense MLP has no choice.
        """
        if hasattr(self.ffn, "expert_index"):
            return None if self.ffn.expert_index is None else np.asarray(self.ffn.expert_index)
        if hasattr(self.ffn, "leaf_index"):
            return None if self.ffn.leaf_index is None else np.asarray(self.ffn.leaf_index)[:, None]
        return None


class TinyLM(Module):
    """Character-level language model with conditional feed-forward layers.

    Parameters
    ----------
    config : LMConfig
    rng : Generator or int
        Draws the initial weights.
    dtype : numpy dtype
        float64 for gradient checks; float32 trains about twice as fast.

    Notes
    -----
    ``forward(ids)`` maps token ids (B, T), T at most ``config.context``, to
    next-character logits (B, T, V). ``backward(dlogits)`` fills every
    gradient (the feed-forward layers add their auxiliary losses' gradients
    themselves) and returns None, because integer ids have no gradient.
    """

    def __init__(self, config: LMConfig, *, rng, dtype=np.float64):
        super().__init__()
        if not isinstance(config, LMConfig):
            raise TypeError(f"config must be an LMConfig, got {type(config).__name__}")
        self.config = config
        rng = as_generator(rng)
        d = config.d_model
        self.token_embedding = Embedding(config.vocab_size, d, rng=rng, init_scale=EMBEDDING_SCALE, dtype=dtype)
        self.position_embedding = Embedding(config.context, d, rng=rng, init_scale=EMBEDDING_SCALE, dtype=dtype)
        self.blocks = []
        for i in range(config.n_layers):
            block = Block(config, rng=rng, dtype=dtype)
            setattr(self, f"block{i}", block)
            self.blocks.append(block)
        self.ln_f = LayerNorm(d, dtype=dtype)
        self.head = Linear(d, config.vocab_size, rng=rng, dtype=dtype)

    @property
    def dtype(self):
        return self.head.params["W"].dtype

    def forward(self, ids):
        """Return next-character logits of shape (B, T, V) for integer ids of shape (B, T)."""
        ids = np.asarray(ids)
        if ids.ndim != 2:
            raise ValueError(f"ids must have shape (B, T), got shape {ids.shape}")
        B, T = ids.shape
        if T > self.config.context:
            raise ValueError(f"ids has {T} positions, more than the model's context of {self.config.context}")
        x = self.token_embedding.forward(ids) + self.position_embedding.forward(np.arange(T))  # (B, T, d_model)
        for block in self.blocks:
            x = block.forward(x)
        return self.head.forward(self.ln_f.forward(x))  # (B, T, V)

    def backward(self, dlogits):
        """Fill every parameter's gradient from dlogits of shape (B, T, V); return None."""
        dx = self.ln_f.backward(self.head.backward(dlogits))
        for block in reversed(self.blocks):
            dx = block.backward(dx)
        self.token_embedding.backward(dx)
        self.position_embedding.backward(dx.sum(axis=0))  # (T, d_model): every sequence shares the positions
        return None

    def routing(self):
        """Return one (B T, k) array of expert ids per layer from the last forward, or None for a dense model."""
        choices = [block.routing() for block in self.blocks]
        return None if any(c is None for c in choices) else choices

    def parameter_counts(self) -> tuple[int, int]:
        """Return ``(active, total)`` parameters, where active ones are those one token uses at inference.

        Everything outside the feed-forward layers counts as active (an
        embedding table counts whole, as is usual). In a top-k layer the
        router and k of the E experts are active; in a tree layer the D nodes
        on one path and one of the ``2 ** D`` leaves.
        """
        total = self.num_parameters()
        inactive = 0
        config = self.config
        for ffn in self.ffn_layers():
            expert_params = sum(ffn.params[name].size for name in ("W1", "b1", "W2", "b2") if name in ffn.params)
            if config.router == "topk":
                inactive += expert_params * (config.n_experts - config.top_k) // config.n_experts
            elif config.router == "tree":
                n_leaves = 2**config.depth
                node_params = ffn.params["W_node"].size + ffn.params["b_node"].size
                inactive += expert_params * (n_leaves - 1) // n_leaves
                inactive += node_params * (n_leaves - 1 - config.depth) // (n_leaves - 1)
        return total - inactive, total

    def ffn_layers(self):
        """Return the feed-forward layer of every block, first to last."""
        return [block.ffn for block in self.blocks]


__all__ = ["Block", "TinyLM", "make_feedforward"]
