"""The tiny character-level language model with conditional feed-forward layers.

* :mod:`.config`: :class:`LMConfig` and the per-token compute of a configuration.
* :mod:`.model`: :class:`TinyLM` and its pre-norm :class:`Block`.
* :mod:`.train`: the training loop, bits per character and expert usage.
* :mod:`.generate`: temperature and top-k sampling with the router's choices.
* :mod:`.checkpoint`: save and load as ``.npz`` with the configuration beside the arrays.
"""

from tinycond.lm.checkpoint import load_checkpoint, save_checkpoint
from tinycond.lm.config import ROUTERS, LMConfig, ffn_flops_per_token, ffn_weights
from tinycond.lm.generate import Sample, generate, sample_next
from tinycond.lm.model import Block, TinyLM, make_feedforward
from tinycond.lm.train import TrainHistory, evaluate_bpc, expert_usage, train_lm

__all__ = [
    "Block",
    "LMConfig",
    "ROUTERS",
    "Sample",
    "TinyLM",
    "TrainHistory",
    "evaluate_bpc",
    "expert_usage",
    "ffn_flops_per_token",
    "ffn_weights",
    "generate",
    "load_checkpoint",
    "make_feedforward",
    "sample_next",
    "save_checkpoint",
    "train_lm",
]
