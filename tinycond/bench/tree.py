"""Benchmark: hard tree inference against soft evaluation and against a flat softmax router.

For each depth D, on the same batch in float64:

* **hard inference**: :func:`tinycond.tree.hard_tree_predict`, D node
  evaluations and one leaf expert per sample;
* **soft evaluation**: :func:`tinycond.tree.soft_tree_predict`, all 2^D
  leaves on every sample, weighted by their path probabilities;
* **tree routing**: :func:`tinycond.tree.tree_descend` plus the path
  probability, which picks each sample's leaf and its weight;
* **flat routing**: logits over 2^D experts, a full softmax and the top-1
  expert with its gate, the router of a Switch-style layer of the same size.

The four are timed interleaved (see :mod:`tinycond.bench.timing`), so a slow
spell on a shared machine hits all of them alike. The ratios are soft / hard
and flat / tree routing, each a ratio of median times. The spread of each
timing is (max - min) / median over the repetitions.

Run ``python -m tinycond.bench.tree`` (``--quick`` for a smoke run,
``--depths 2 4 8`` for other depths).
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

from tinycond import functional as F
from tinycond.bench.timing import time_interleaved
from tinycond.tree import hard_tree_predict, init_tree_weights, soft_tree_predict, tree_descend
from tinycond.tree.hard import branch_probabilities

# The goals at depth 8, batch 4096, d_model 128: hard inference at least 30x
# faster than soft evaluation, tree routing at least 10x faster than flat.
# NOTE: the routing goal is not met. On a shared 2-core AMD EPYC VM (NumPy 2.4,
# OpenBLAS 0.3.31, load average 2-3) this script measured 4.8-5.8x. Warm, the
# tree's 8 levels take about 2.2-2.7 ms: per level about 0.12 ms to gather one
# node row per sample and 0.15 ms for the row-wise dot products, both bound by
# memory bandwidth. The flat router takes 20-30 ms: 4-7 ms for x @ W_router,
# about 5 ms for the exp of N * 256 logits, and 2000-2500 page faults on its
# (N, 256) temporaries. Here each call follows another candidate whose freed
# memory glibc returned to the system, so the tree's gather buffer costs
# 600-1100 new page faults, or 2-4 ms.
DEFAULTS = {"n_tokens": 4096, "d_model": 128, "d_hidden": 32, "depths": (8,), "repeats": 7}
QUICK = {"n_tokens": 512, "d_model": 128, "d_hidden": 32, "depths": (6,), "repeats": 2}


def load_average():
    """Return the system's 1-minute load average, or None where the OS has none (Windows)."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def _format_load(value):
    return "n/a" if value is None else f"{value:.2f}"


def flat_top1_route(x, W_router):
    """Return ``(expert_index, gate)`` of a flat softmax router over E experts.

    Parameters
    ----------
    x : ndarray of shape (N, d_model)
    W_router : ndarray of shape (d_model, E)

    Returns
    -------
    expert_index : int ndarray of shape (N,)
    gate : ndarray of shape (N,)
        Softmax probability of the chosen expert.
    """
    router_logits = x @ W_router  # (N, E)
    gates = F.softmax(router_logits)
    expert_index = np.argmax(router_logits, axis=1)
    return expert_index, np.take_along_axis(gates, expert_index[:, None], axis=1)[:, 0]


def tree_route(x, W_node, b_node):
    """Return ``(leaf_index, path_prob)``: the tree's counterpart of :func:`flat_top1_route`."""
    _, node_logits, leaf_index = tree_descend(x, W_node, b_node)
    return leaf_index, np.prod(branch_probabilities(node_logits), axis=1)


def measure_depth(depth, *, n_tokens, d_model, d_hidden, repeats, rng):
    """Time the four passes at one depth and return their medians, spreads and ratios.

    Returns
    -------
    dict
        ``<pass>_seconds`` and ``<pass>_spread`` for ``hard``, ``soft``,
        ``tree_route`` and ``flat_route``; ``soft_over_hard`` and
        ``flat_over_tree``, ratios of median times; the routing multiply-adds
        per token of the tree (D d_model) and of the flat router (2^D d_model).
    """
    n_leaves = 2**depth
    x = rng.standard_normal((n_tokens, d_model))
    W_node, b_node, *experts = init_tree_weights(depth, d_model, d_hidden, d_model, rng)
    b_node = 0.1 * rng.standard_normal(b_node.shape)  # biases away from zero, as after training
    W_router = rng.standard_normal((d_model, n_leaves)) / np.sqrt(d_model)

    timings = time_interleaved(
        {
            "hard": lambda: hard_tree_predict(x, W_node, b_node, *experts),
            "soft": lambda: soft_tree_predict(x, W_node, b_node, *experts),
            "tree_route": lambda: tree_route(x, W_node, b_node),
            "flat_route": lambda: flat_top1_route(x, W_router),
        },
        repeats=repeats,
    )
    result = {"depth": depth, "n_leaves": n_leaves}
    for name, timing in timings.items():
        result[f"{name}_seconds"] = timing.median
        result[f"{name}_spread"] = timing.spread
    result["soft_over_hard"] = timings["soft"].median / timings["hard"].median
    result["flat_over_tree"] = timings["flat_route"].median / timings["tree_route"].median
    result["tree_route_madds"] = depth * d_model
    result["flat_route_madds"] = n_leaves * d_model
    return result


def run(quick=False, depths=None, seed=0):
    """Run the benchmark and return its configuration and one row per depth.

    Parameters
    ----------
    quick : bool
        A smaller batch and fewer repetitions, for a smoke run of a few seconds.
    depths : sequence of int, optional
        Tree depths to measure; defaults to (8,).
    seed : int

    Returns
    -------
    dict
        ``config`` (batch, widths, repetitions, dtype, ``OPENBLAS_NUM_THREADS``
        and the 1-minute load average before and after) and ``rows``, a list
        of the dicts of :func:`measure_depth`.
    """
    config = dict(QUICK if quick else DEFAULTS)
    if depths is not None:
        config["depths"] = tuple(int(d) for d in depths)
    # The machine may be shared, so record the BLAS thread setting and the 1-minute load average.
    config["openblas_num_threads"] = os.environ.get("OPENBLAS_NUM_THREADS", "unset")
    config["logical_cpus"] = os.cpu_count()
    config["load_average_before"] = load_average()
    rng = np.random.default_rng(seed)
    rows = []
    for depth in config["depths"]:
        rows.append(
            measure_depth(
                depth, n_tokens=config["n_tokens"], d_model=config["d_model"], d_hidden=config["d_hidden"], repeats=config["repeats"], rng=rng
            )
        )
    config["dtype"] = "float64"
    config["load_average_after"] = load_average()
    return {"config": config, "rows": rows}


def format_table(results) -> str:
    """Return the results as a plain-text table."""
    c = results["config"]
    lines = [
        f"decision-tree router: batch {c['n_tokens']}, d_model {c['d_model']}, leaf d_hidden {c['d_hidden']}, "
        f"{c['dtype']}, median of {c['repeats']} interleaved repetitions (spread in brackets)",
        f"OPENBLAS_NUM_THREADS {c['openblas_num_threads']}, 1-minute load average {_format_load(c['load_average_before'])} "
        f"before and {_format_load(c['load_average_after'])} after, on {c['logical_cpus']} logical CPUs",
        f"{'depth':>5} {'leaves':>6} {'hard ms':>14} {'soft ms':>16} {'soft/hard':>10} "
        f"{'tree route ms':>16} {'flat route ms':>16} {'flat/tree':>10}",
    ]
    for r in results["rows"]:
        cells = []
        for name, scale in (("hard", "9.2f"), ("soft", "10.1f"), ("tree_route", "9.2f"), ("flat_route", "9.2f")):
            cells.append(f"{1e3 * r[name + '_seconds']:{scale}} [{r[name + '_spread']:>3.0%}]")
        lines.append(
            f"{r['depth']:>5} {r['n_leaves']:>6} {cells[0]:>14} {cells[1]:>16} {r['soft_over_hard']:>9.1f}x "
            f"{cells[2]:>16} {cells[3]:>16} {r['flat_over_tree']:>9.1f}x"
        )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tinycond.bench.tree", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="depth 6, a batch of 512 tokens and 2 repetitions, for a smoke run")
    parser.add_argument("--depths", type=int, nargs="+", help="tree depths to measure (default: 8)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random inputs and weights")
    parser.add_argument("--json", metavar="PATH", help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    results = run(quick=args.quick, depths=args.depths, seed=args.seed)
    print(format_table(results))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
