"""Figures of the tiny language model: loss curves, routing by character class, bits per character against compute."""

from __future__ import annotations

import numpy as np

from tinycond.data.text import CHAR_CLASSES
from tinycond.lm.train import LN2
from tinycond.plots import plt


def _moving_average(values, window):
    window = max(1, min(window, len(values)))
    kernel = np.ones(window) / window
    return np.convolve(values, kernel, mode="valid"), np.arange(window, len(values) + 1)


def plot_training(histories: dict, *, title: str):
    """Plot training loss and validation bits per character against step, one colour per run.

    Parameters
    ----------
    histories : dict of str to TrainHistory
        Run label to its history.
    title : str

    Returns
    -------
    matplotlib Figure
    """
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for i, (label, history) in enumerate(histories.items()):
        colour = f"C{i}"
        window = max(1, len(history.train_loss) // 20)
        smooth, steps = _moving_average(history.train_loss / LN2, window)
        ax.plot(steps, smooth, color=colour, alpha=0.6, label=f"{label}: training (mean of {window} steps)")
        ax.plot(history.val_steps, history.val_bpc, "o-", color=colour, label=f"{label}: validation")
    ax.set_xlabel("training step")
    ax.set_ylabel("cross-entropy (bits per character)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_experts_by_class(counts, *, title: str, expert_label: str = "expert"):
    """Plot, per layer, the share of each character class's assignments that each expert receives.

    An assignment is one (token, selected expert) pair, so with top-k routing
    each token gives k assignments and a row's count is k times its tokens.

    Parameters
    ----------
    counts : int ndarray of shape (L, len(CHAR_CLASSES), n_experts)
        From :func:`tinycond.lm.train.expert_usage`.
    title : str
    expert_label : str
        "expert" or "leaf", for the axis label.

    Returns
    -------
    matplotlib Figure
    """
    n_layers, n_classes, n_experts = counts.shape
    totals = counts.sum(axis=2, keepdims=True)
    share = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)  # (L, classes, E)
    fig, axes = plt.subplots(1, n_layers, figsize=(2.5 + 0.55 * n_experts * n_layers, 3.4), squeeze=False,
                             layout="constrained")
    image = None
    for layer, ax in enumerate(axes[0]):
        image = ax.imshow(share[layer], cmap="viridis", vmin=0.0, vmax=max(0.5, float(share.max())), aspect="auto")
        for c in range(n_classes):
            for e in range(n_experts):
                value = share[layer, c, e]
                ax.text(e, c, f"{100 * value:.0f}", ha="center", va="center", fontsize=7,
                        color="white" if value < 0.6 * max(0.5, share.max()) else "black")
        ax.set_xticks(range(n_experts))
        ax.set_yticks(range(n_classes))
        labels = [f"{name} ({totals[layer, c, 0]:,})" for c, name in enumerate(CHAR_CLASSES)]
        ax.set_yticklabels(labels if layer == 0 else [])
        if layer == 0:
            ax.set_ylabel("character class (assignments)")
        ax.set_xlabel(f"{expert_label} id")
        ax.set_title(f"layer {layer + 1}")
    fig.colorbar(image, ax=axes[0].tolist(), label="share of the class's assignments\n(numbers in the cells: %)")
    fig.suptitle(title, fontsize=10)
    return fig


def plot_bpc_vs_flops(points, *, title: str):
    """Plot validation bits per character against active feed-forward FLOPs per token.

    Parameters
    ----------
    points : list of dict
        Each with ``"label"``, ``"router"``, ``"active_flops"``, ``"val_bpc"``
        and optionally ``"total_flops"``; points of one router are joined by a line.
    title : str

    Returns
    -------
    matplotlib Figure
    """
    markers = {"dense": "o", "topk": "s", "tree": "^"}
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for i, router in enumerate(dict.fromkeys(p["router"] for p in points)):
        mine = sorted((p for p in points if p["router"] == router), key=lambda p: p["active_flops"])
        x = [p["active_flops"] for p in mine]
        y = [p["val_bpc"] for p in mine]
        ax.plot(x, y, marker=markers.get(router, "o"), color=f"C{i}", label=router)
        for p in mine:
            ax.annotate(p["label"], (p["active_flops"], p["val_bpc"]), textcoords="offset points", xytext=(5, 4), fontsize=7)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("active feed-forward FLOPs per token (all layers, log scale)")
    ax.set_ylabel("validation bits per character")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(title="feed-forward layer")
    fig.tight_layout()
    return fig


__all__ = ["plot_bpc_vs_flops", "plot_experts_by_class", "plot_training"]
