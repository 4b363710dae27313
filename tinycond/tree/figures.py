"""Pictures of a tree router on 2-D inputs: the leaf regions and the node hyperplanes."""

from __future__ import annotations

import numpy as np

from tinycond.plots import plt
from tinycond.tree.hard import tree_descend
from tinycond.tree.heap import node_levels


def hyperplane_segments(W_node, b_node, *, extent=(-1.0, 1.0, -1.0, 1.0), n_points=600):
    r"""Return the part of each node's line :math:`x \cdot w_n + b_n = 0` that the node decides.

    A node decides only for the samples that its ancestors send to it, so
    only the part of its line inside its own region bounds the partition.

    Parameters
    ----------
    W_node : ndarray of shape (2^D - 1, 2)
        Node weights of a tree on 2-D inputs.
    b_node : ndarray of shape (2^D - 1,)
    extent : tuple of float
        ``(x_min, x_max, y_min, y_max)`` of the picture.
    n_points : int
        Points sampled along each line.

    Returns
    -------
    list of ndarray of shape (n_points, 2)
        One array per node in heap order: points on the line, with NaN rows
        where the point is outside ``extent`` or outside the node's region,
        so ``plt.plot`` draws only the node's own segments.
    """
    if W_node.shape[1] != 2:
        raise ValueError(f"W_node must have 2 columns to draw lines in the plane, got shape {W_node.shape}")
    x_min, x_max, y_min, y_max = extent
    levels = node_levels(W_node.shape[0])
    radius = np.hypot(x_max - x_min, y_max - y_min)
    segments = []
    for node, (w, b) in enumerate(zip(W_node, b_node)):
        norm = np.linalg.norm(w)
        points = np.full((n_points, 2), np.nan)
        if norm == 0:
            segments.append(points)  # a node with zero weights has no line
            continue
        foot = -b * w / norm**2  # the point of the line closest to the origin
        direction = np.array([-w[1], w[0]]) / norm
        t = np.linspace(-radius - np.linalg.norm(foot), radius + np.linalg.norm(foot), n_points)
        line = foot + t[:, None] * direction  # (n_points, 2)
        inside = (line[:, 0] >= x_min) & (line[:, 0] <= x_max) & (line[:, 1] >= y_min) & (line[:, 1] <= y_max)
        node_index, _, _ = tree_descend(line, W_node, b_node)
        owned = inside & (node_index[:, levels[node]] == node)
        points[owned] = line[owned]
        segments.append(points)
    return segments


def plot_partition(
    ax, W_node, b_node, *, extent=(-1.0, 1.0, -1.0, 1.0), resolution=300, label_nodes=True, label_leaves=True
):
    """Colour the plane by the leaf each point reaches and draw every node's boundary.

    Parameters
    ----------
    ax : matplotlib Axes
    W_node : ndarray of shape (2^D - 1, 2)
    b_node : ndarray of shape (2^D - 1,)
    extent : tuple of float
        ``(x_min, x_max, y_min, y_max)``.
    resolution : int
        Grid points per side.
    label_nodes : bool
        Write each node's heap index at the middle of its segment.
    label_leaves : bool
        Write "leaf k" at the centre of each leaf's region. A leaf region is
        an intersection of half-planes, so it is convex and its centre lies
        inside it. Regions smaller than 0.5% of the picture get no label.

    Returns
    -------
    leaf_index : int ndarray of shape (resolution, resolution)
        The leaf of every grid point (rows are y, columns x).
    """
    x_min, x_max, y_min, y_max = extent
    gx, gy = np.meshgrid(np.linspace(x_min, x_max, resolution), np.linspace(y_min, y_max, resolution))
    grid = np.column_stack([gx.ravel(), gy.ravel()])  # (resolution^2, 2)
    _, _, leaf_index = tree_descend(grid, W_node, b_node)
    leaf_index = leaf_index.reshape(resolution, resolution)
    # NOTE: tab20 has 20 colours, so in trees of more than 20 leaves some leaves share a colour.
    ax.imshow(
        leaf_index % 20, origin="lower", extent=extent, cmap="tab20", vmin=-0.5, vmax=19.5, alpha=0.55, interpolation="nearest"
    )
    if label_leaves:
        for leaf in np.unique(leaf_index):
            rows, cols = np.nonzero(leaf_index == leaf)
            if rows.size < 0.005 * leaf_index.size:
                continue
            centre = (gx[rows, cols].mean(), gy[rows, cols].mean())
            ax.annotate(f"leaf {leaf}", centre, fontsize=8, fontstyle="italic", ha="center", va="center")
    levels = node_levels(W_node.shape[0])
    for node, points in enumerate(hyperplane_segments(W_node, b_node, extent=extent)):
        width = 3.0 / (1 + levels[node])
        ax.plot(points[:, 0], points[:, 1], color="black", linewidth=width)
        drawn = points[~np.isnan(points[:, 0])]
        if label_nodes and len(drawn):
            mid = drawn[len(drawn) // 2]
            ax.annotate(str(node), mid, fontsize=8, ha="center", va="center", bbox={"boxstyle": "round,pad=0.15", "fc": "white", "lw": 0.5})
    ax.set_xlim(x_min, x_max)
    ax.set_ylim(y_min, y_max)
    ax.set_aspect("equal")
    return leaf_index


__all__ = ["hyperplane_segments", "plot_partition", "plt"]
