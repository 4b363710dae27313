r"""Heap numbering of a complete binary tree, and the depth limit.

A tree of depth D has :math:`2^D - 1` inner nodes and :math:`2^D` leaves,
numbered level by level from the root: the root is node 0 and the children of
node i are :math:`2i + 1` (left) and :math:`2i + 2` (right). Level l contains the
nodes :math:`2^l - 1, \dots, 2^{l+1} - 2`, so every level is one contiguous
slice of an array. Leaf j of a depth-D tree is heap node :math:`2^D - 1 + j`.
"""

from __future__ import annotations

import numbers

import numpy as np

from tinycond._checks import check_positive_int

# The leaf experts are stored as one stacked array per weight, so their memory
# doubles with every level of depth. The default 1 GiB allows depth 13 for
# d_model = d_out = 128 and leaves of width 32 in float64.
DEFAULT_MAX_LEAF_BYTES = 2**30


def level_slice(level: int) -> slice:
    """Return the slice of heap indices that contains the nodes of ``level``."""
    return slice(2**level - 1, 2 ** (level + 1) - 1)


def node_levels(n_nodes: int) -> np.ndarray:
    """Return the level of each of the first ``n_nodes`` heap nodes (root at level 0).

    ``n_nodes`` must be :math:`2^D - 1`; the result has shape ``(n_nodes,)``.
    """
    depth = depth_from_n_nodes(n_nodes, "n_nodes")
    return np.repeat(np.arange(depth), 2 ** np.arange(depth))


def depth_from_n_nodes(n_nodes: int, name: str = "W_node") -> int:
    """Return D for a tree with ``n_nodes`` = :math:`2^D - 1` inner nodes, or raise."""
    depth = int(n_nodes + 1).bit_length() - 1
    if n_nodes < 1 or 2**depth - 1 != n_nodes:
        raise ValueError(
            f"{name} must describe 2^D - 1 inner nodes (1, 3, 7, 15, ...) for a tree of depth D >= 1, got {n_nodes} nodes"
        )
    return depth


def leaf_parameter_bytes(depth, d_model, d_hidden, d_out, itemsize) -> int:
    """Return the bytes of the stacked leaf weights ``W1, b1, W2, b2`` of a depth-D tree."""
    per_leaf = d_model * d_hidden + d_hidden + d_hidden * d_out + d_out
    return 2**depth * per_leaf * itemsize


def check_depth(depth, *, d_model, d_hidden, d_out, itemsize=8, max_leaf_bytes=DEFAULT_MAX_LEAF_BYTES) -> int:
    """Return ``depth`` as an int, or raise if it is below 1 or its leaves exceed the memory limit.

    Parameters
    ----------
    depth : int
        Tree depth D; the tree has :math:`2^D` leaf experts.
    d_model, d_hidden, d_out : int
        Widths of each leaf expert.
    itemsize : int
        Bytes per parameter (8 for float64).
    max_leaf_bytes : int
        Largest memory the stacked leaf weights may take.

    Raises
    ------
    TypeError
        If ``depth`` is not an integer.
    ValueError
        If ``depth < 1``, or if :math:`2^D` leaves of these widths need more
        than ``max_leaf_bytes``; the message gives the largest allowed depth.
    """
    if isinstance(depth, bool) or not isinstance(depth, numbers.Integral):
        raise TypeError(f"depth must be an integer >= 1, got {depth!r} of type {type(depth).__name__}")
    if depth < 1:
        raise ValueError(f"depth must be an integer >= 1 (a tree with at least one decision), got {depth}")
    depth = int(depth)
    max_leaf_bytes = check_positive_int(max_leaf_bytes, "max_leaf_bytes")
    needed = leaf_parameter_bytes(depth, d_model, d_hidden, d_out, itemsize)
    if needed > max_leaf_bytes:
        one_leaf = leaf_parameter_bytes(0, d_model, d_hidden, d_out, itemsize)
        largest = max(0, (max_leaf_bytes // one_leaf).bit_length() - 1)
        allowed = f"depth must be at most {largest}" if largest >= 1 else "no depth fits"
        raise ValueError(
            f"depth={depth} gives 2^{depth} = {2**depth} leaf experts whose stacked weights need "
            f"{needed / 2**30:.2f} GiB (d_model={d_model}, d_hidden={d_hidden}, d_out={d_out}, "
            f"{itemsize} bytes per number), over the limit max_leaf_bytes={max_leaf_bytes / 2**30:.2f} GiB; "
            f"for these widths {allowed}, or pass a larger max_leaf_bytes"
        )
    return depth
