r"""Configuration of the tiny language model, and what it costs per token.

One :class:`LMConfig` fixes every size and option of a model, so a saved
checkpoint can store it beside the arrays and a load can name the setting
that differs. ``d_hidden`` is the *active* hidden width: the number of hidden
units each token passes through in a feed-forward layer, whatever the router.
Models that differ only in ``router`` therefore spend the same feed-forward
compute per token, which is the comparison conditional computation is about.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from tinycond import functional as F
from tinycond._checks import check_choice, check_positive_float, check_positive_int

ROUTERS = ("dense", "topk", "tree")
TREE_MODES = ("soft", "hard")


@dataclass(frozen=True)
class LMConfig:
    """Sizes and options of :class:`tinycond.lm.TinyLM`.

    Attributes
    ----------
    vocab_size : int
        Number of token ids V, the unknown id included.
    context : int
        Longest input window T in characters; also the number of position embeddings.
    d_model : int
        Width of the residual stream.
    n_heads : int
        Attention heads per layer; must divide ``d_model``.
    n_layers : int
        Number of blocks L.
    d_hidden : int
        Active hidden width of each feed-forward layer: the dense MLP's width,
        ``top_k`` times one expert's width, or one tree leaf's width.
    router : {"dense", "topk", "tree"}
        Feed-forward layer: a dense MLP, a top-k mixture of experts, or a
        decision-tree router over ``2 ** depth`` leaf MLPs.
    n_experts : int
        Experts E of the top-k mixture.
    top_k : int
        Experts k each token visits; must divide ``d_hidden``.
    depth : int
        Depth D of the tree router.
    activation : {"relu", "gelu", "sigmoid"}
        Hidden activation of every feed-forward network.
    balance_coef : float
        Coefficient of the Switch load-balancing loss of the top-k mixture.
    tree_mode : {"soft", "hard"}
        How the tree trains: every leaf weighted by its path probability
        (soft) or along the single hard path. Evaluation is always hard.
    tree_balance_coef, tree_hardening_coef : float
        Coefficients of the tree's balance and hardening penalties.
    """

    vocab_size: int
    context: int = 64
    d_model: int = 64
    n_heads: int = 4
    n_layers: int = 2
    d_hidden: int = 128
    router: str = "topk"
    n_experts: int = 8
    top_k: int = 2
    depth: int = 3
    activation: str = "relu"
    balance_coef: float = 1e-2
    tree_mode: str = "hard"
    tree_balance_coef: float = 1e-2
    tree_hardening_coef: float = 0.0

    def __post_init__(self):
        for name in ("vocab_size", "context", "d_model", "n_heads", "n_layers", "d_hidden", "n_experts", "top_k", "depth"):
            check_positive_int(getattr(self, name), name)
        check_choice(self.router, "router", ROUTERS)
        check_choice(self.activation, "activation", tuple(F.ACTIVATIONS))
        check_choice(self.tree_mode, "tree_mode", TREE_MODES)
        for name in ("balance_coef", "tree_balance_coef", "tree_hardening_coef"):
            check_positive_float(getattr(self, name), name, allow_zero=True)
        if self.d_model % self.n_heads:
            raise ValueError(f"n_heads must divide d_model, got d_model={self.d_model} and n_heads={self.n_heads}")
        if self.router == "topk":
            if self.top_k > self.n_experts:
                raise ValueError(f"top_k must be at most n_experts, got top_k={self.top_k} and n_experts={self.n_experts}")
            if self.d_hidden % self.top_k:
                raise ValueError(
                    f"top_k must divide d_hidden so that k experts of width d_hidden / k match the dense "
                    f"width, got d_hidden={self.d_hidden} and top_k={self.top_k}"
                )

    @property
    def expert_hidden(self) -> int:
        """Hidden width of one expert (top-k), one leaf (tree) or the whole MLP (dense)."""
        return self.d_hidden // self.top_k if self.router == "topk" else self.d_hidden

    @property
    def n_ffn_experts(self) -> int:
        """Number of feed-forward networks in one layer: 1, E, or ``2 ** depth`` leaves."""
        return {"dense": 1, "topk": self.n_experts, "tree": 2**self.depth}[self.router]

    def to_dict(self) -> dict:
        """Return the settings as a plain dict (JSON-serialisable)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, settings: dict) -> "LMConfig":
        """Build a config from :meth:`to_dict` output, rejecting unknown keys by name."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(settings) - known)
        if unknown:
            raise ValueError(f"unknown LMConfig settings {unknown}; known settings: {sorted(known)}")
        return cls(**settings)

    def replace(self, **changes) -> "LMConfig":
        """Return a copy with some settings changed (validated again)."""
        return dataclasses.replace(self, **changes)


def ffn_weights(config: LMConfig) -> tuple[int, int]:
    r"""Return ``(active, total)`` weight-matrix entries of one feed-forward layer.

    Only multiply-add weights count (biases are left out). Active weights are
    the ones one token multiplies at inference:

    * dense: :math:`2\, d_{model} H`;
    * top-k: the router :math:`d_{model} E` plus k experts of width H/k;
    * tree (hard path): D node vectors of :math:`d_{model}` plus one leaf of width H.

    Total weights are every expert's or leaf's and every node's.
    """
    d, h = config.d_model, config.expert_hidden
    expert = 2 * d * h
    if config.router == "dense":
        return expert, expert
    if config.router == "topk":
        router = d * config.n_experts
        return router + config.top_k * expert, router + config.n_experts * expert
    n_nodes = 2**config.depth - 1
    return config.depth * d + expert, n_nodes * d + 2**config.depth * expert


def ffn_flops_per_token(config: LMConfig) -> tuple[int, int]:
    """Return ``(active, dense_same_total)`` feed-forward FLOPs per token, all layers.

    A multiply-add counts as 2 FLOPs. ``active`` is what the configured
    router spends on one token at inference; ``dense_same_total`` is what a
    dense layer with the same total number of weights would spend, because a
    dense layer multiplies every weight for every token. Training a soft tree
    runs every leaf, so its training cost is the dense one, not ``active``.
    """
    active, total = ffn_weights(config)
    return 2 * active * config.n_layers, 2 * total * config.n_layers


__all__ = ["LMConfig", "ROUTERS", "TREE_MODES", "ffn_flops_per_token", "ffn_weights"]
