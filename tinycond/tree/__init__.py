"""Decision-tree routers: a learned binary tree of gates chooses one of 2^D leaf experts.

* :mod:`.heap`: heap numbering of the nodes and the depth limit.
* :mod:`.soft`: the soft tree (path products, probability-weighted leaves).
* :mod:`.hard`: hard O(D) inference and hard-path training.
* :mod:`.penalties`: the balance and hardening penalties.
* :mod:`.module`: :class:`TreeMoE`, the layer that wraps them.
"""

from tinycond.tree.hard import (
    branch_probabilities,
    hard_tree_backward,
    hard_tree_forward,
    hard_tree_predict,
    tree_descend,
)
from tinycond.tree.heap import check_depth, level_slice, node_levels
from tinycond.tree.module import TreeMoE, init_tree_weights
from tinycond.tree.penalties import (
    balance_penalty_backward,
    balance_penalty_forward,
    hardening_penalty_backward,
    hardening_penalty_forward,
)
from tinycond.tree.soft import soft_tree_backward, soft_tree_forward, soft_tree_predict, tree_path_backward, tree_path_forward

__all__ = [
    "TreeMoE",
    "balance_penalty_backward",
    "balance_penalty_forward",
    "branch_probabilities",
    "check_depth",
    "hard_tree_backward",
    "hard_tree_forward",
    "hard_tree_predict",
    "hardening_penalty_backward",
    "hardening_penalty_forward",
    "init_tree_weights",
    "level_slice",
    "node_levels",
    "soft_tree_backward",
    "soft_tree_forward",
    "soft_tree_predict",
    "tree_descend",
    "tree_path_backward",
    "tree_path_forward",
]
