"""Benchmark: adaptive computation time against running every sample for max_steps.

On one batch in float64, :func:`tinycond.act.act_forward` plus
:func:`tinycond.act.act_backward` runs three times per repetition:

* **ACT**: the halting bias is set (by bisection) so that the mean number
  of ponder steps N(t) is a chosen fraction of ``max_steps``, with a spread
  of halting steps across samples because the halting unit reads the state;
* **fixed**: the same layer with a halting bias of -1e4, so every halting
  probability is exactly 0, every sample runs ``max_steps`` steps and takes
  the last state with weight R = 1: a fixed-depth recurrent network;
* **fixed at the mean depth**: the same, with ``max_steps`` set to the mean
  N(t) of the ACT run rounded to an integer.

Compaction makes ACT's work proportional to the ponder steps taken, so the
time ratio ACT / fixed should be close to the ideal ``mean N / max_steps``.
The goal is a ratio at most 1.3 times the ideal at ``mean N = max_steps / 4``.
Costs that do not grow with the steps (the input projection, allocations)
push the ratio above the ideal at small fractions. ACT against the network
fixed at its mean depth isolates what compaction itself costs, which should
be close to 1. The passes alternate within each repetition, so all see the same
machine load; tables give the median ratio over repetitions and its range.

Run ``python -m tinycond.bench.act`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from tinycond.act import act_backward, act_forward

GOAL_OVER_IDEAL = 1.3
DEFAULTS = {"n_samples": 1024, "T": 1, "d_in": 64, "d_hidden": 256, "max_steps": 16, "fractions": (0.125, 0.25, 0.5, 1.0), "repeats": 7}
QUICK = {"n_samples": 512, "T": 1, "d_in": 32, "d_hidden": 128, "max_steps": 16, "fractions": (0.25,), "repeats": 3}
# Halting bias that makes every halting probability exactly 0 in float64.
NEVER_HALT = -1e4


def _layer(rng, *, d_in, d_hidden, **_):
    W_x = rng.standard_normal((d_in + 1, d_hidden)) / np.sqrt(d_in + 1)
    W_s = rng.standard_normal((d_hidden, d_hidden)) / np.sqrt(d_hidden)
    b = np.zeros(d_hidden)
    # The first halting logits spread with a standard deviation of about 1.8 across samples.
    w_h = 3.0 * rng.standard_normal(d_hidden) / np.sqrt(d_hidden)
    return W_x, W_s, b, w_h


def mean_steps(x, weights, halting_bias, max_steps):
    """Return the mean halting step N(t) over the batch for one halting bias."""
    _, cache = act_forward(x, *weights, np.array([halting_bias]), max_steps=max_steps)
    return float(cache.n_steps.mean())


def calibrate_halting_bias(x, weights, target, max_steps, iterations=20):
    """Return the halting bias whose mean N(t) on ``x`` is closest to ``target``, by bisection.

    A larger bias gives larger halting probabilities and fewer steps, so the
    mean N(t) falls as the bias grows. A target of ``max_steps`` returns
    the bias that never halts.
    """
    if target >= max_steps:
        return NEVER_HALT
    low, high = -20.0, 20.0  # mean N(t) is max_steps at low and 1 at high
    best, best_error = high, np.inf
    for _ in range(iterations):
        middle = 0.5 * (low + high)
        steps = mean_steps(x, weights, middle, max_steps)
        if abs(steps - target) < best_error:
            best, best_error = middle, abs(steps - target)
        if steps > target:
            low = middle
        else:
            high = middle
    return best


def _forward_backward(x, weights, b_h, max_steps, upstream):
    out, cache = act_forward(x, *weights, b_h, max_steps=max_steps)
    act_backward(upstream, cache)
    return cache


def measure_fraction(fraction, x, weights, *, max_steps, repeats, rng):
    """Time ACT at a mean ponder of ``fraction * max_steps`` against every sample running max_steps.

    Returns
    -------
    dict
        ``mean_steps`` (the mean N(t) reached), ``ideal`` (mean N(t) / max_steps),
        ``act_s`` and ``fixed_s`` (median seconds of forward plus backward),
        ``ratio`` (median over repetitions of ACT / fixed) with
        ``ratio_range`` (min, max), ``ratio_over_ideal``, and
        ``mean_depth``, ``mean_depth_s`` and ``act_over_mean_depth`` for the
        network fixed at the rounded mean depth.
    """
    target = fraction * max_steps
    bias = calibrate_halting_bias(x, weights, target, max_steps)
    act_bias, fixed_bias = np.array([bias]), np.array([NEVER_HALT])
    cache = _forward_backward(x, weights, act_bias, max_steps, _upstream(x, weights, rng))
    steps = float(cache.n_steps.mean())
    upstream = _upstream(x, weights, rng)

    depth = max(1, int(round(steps)))
    passes = {"act": (act_bias, max_steps), "fixed": (fixed_bias, max_steps), "mean_depth": (fixed_bias, depth)}
    times = {name: [] for name in passes}
    _forward_backward(x, weights, fixed_bias, max_steps, upstream)  # warm-up
    for _ in range(repeats):
        for name, (b_h, steps_allowed) in passes.items():
            start = time.perf_counter()
            _forward_backward(x, weights, b_h, steps_allowed, upstream)
            times[name].append(time.perf_counter() - start)
    act_times, fixed_times, depth_times = (np.array(times[name]) for name in passes)
    ratios = act_times / fixed_times
    ideal = steps / max_steps
    ratio = float(np.median(ratios))
    return {
        "target_fraction": fraction,
        "mean_steps": steps,
        "ideal": ideal,
        "act_s": float(np.median(act_times)),
        "fixed_s": float(np.median(fixed_times)),
        "ratio": ratio,
        "ratio_range": (float(ratios.min()), float(ratios.max())),
        "ratio_over_ideal": ratio / ideal,
        "mean_depth": depth,
        "mean_depth_s": float(np.median(depth_times)),
        "act_over_mean_depth": float(np.median(act_times / depth_times)),
    }


def _upstream(x, weights, rng):
    N, T, _ = x.shape
    d_hidden = weights[1].shape[0]
    return rng.standard_normal((N, T, d_hidden)), rng.standard_normal((N, T))


def run(quick=False, seed=0):
    """Run the benchmark and return its configuration and one row per mean ponder fraction.

    Parameters
    ----------
    quick : bool
        A smaller batch and layer, one fraction and 3 repetitions, for a smoke run.
    seed : int

    Returns
    -------
    dict
        ``config`` (sizes, repetitions, dtype, goal) and ``rows``, a list of
        the dicts of :func:`measure_fraction`.
    """
    config = dict(QUICK if quick else DEFAULTS)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((config["n_samples"], config["T"], config["d_in"]))
    weights = _layer(rng, **config)
    rows = [
        measure_fraction(f, x, weights, max_steps=config["max_steps"], repeats=config["repeats"], rng=rng)
        for f in config["fractions"]
    ]
    config.update(dtype="float64", goal_over_ideal=GOAL_OVER_IDEAL)
    return {"config": config, "rows": rows}


def format_table(results) -> str:
    """Return the results as a plain-text table."""
    c = results["config"]
    lines = [
        f"adaptive computation time: batch {c['n_samples']}, T {c['T']}, d_in {c['d_in']}, d_hidden {c['d_hidden']}, "
        f"max_steps {c['max_steps']}, {c['dtype']}, forward + backward, median of {c['repeats']} repetitions (range in brackets)",
        f"{'mean N':>7} {'ideal':>6} {'ACT ms':>8} {'fixed ms':>9} {'ACT/fixed':>9} {'range':>13} {'/ideal':>7} "
        f"{'depth':>6} {'depth ms':>9} {'ACT/depth':>9}",
    ]
    for r in results["rows"]:
        spread = "[{:.3f}-{:.3f}]".format(*r["ratio_range"])
        lines.append(
            f"{r['mean_steps']:>7.2f} {r['ideal']:>6.3f} {1e3 * r['act_s']:>8.1f} {1e3 * r['fixed_s']:>9.1f} "
            f"{r['ratio']:>9.3f} {spread:>13} {r['ratio_over_ideal']:>7.2f} "
            f"{r['mean_depth']:>6} {1e3 * r['mean_depth_s']:>9.1f} {r['act_over_mean_depth']:>9.2f}"
        )
    lines.append("depth: a fixed network with max_steps = the rounded mean N; ACT/depth is what compaction costs")
    lines.append(f"goal: ACT/fixed at most {c['goal_over_ideal']} x ideal at mean N = max_steps / 4")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tinycond.bench.act", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="batch 512, d_hidden 128, one fraction (1/4) and 3 repetitions")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random inputs and weights")
    parser.add_argument("--json", metavar="PATH", help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    results = run(quick=args.quick, seed=args.seed)
    print(format_table(results))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
