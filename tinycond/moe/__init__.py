"""Mixtures of experts: the dense baseline, gating, balancing losses, dispatch and the sparse layer."""

from tinycond.moe.dense import DenseMoE, dense_moe_backward, dense_moe_forward
from tinycond.moe.sparse import SparseMoE, sparse_moe_backward, sparse_moe_forward

__all__ = ["DenseMoE", "dense_moe_forward", "dense_moe_backward", "SparseMoE", "sparse_moe_forward", "sparse_moe_backward"]
