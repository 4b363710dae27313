"""Training throughput of the tiny language model: ``python -m tinycond.bench.lm``.

Measures tokens per second of full training steps (forward, backward, Adam
update) at the tour's default size for four feed-forward layers:

* ``dense``: a dense MLP of the tour's active width (128 hidden units);
* ``topk``: the tour's default, 8 experts of 64 hidden units, top-2;
* ``tree``: a depth-3 tree over 8 leaves of 128 hidden units, hard-path training;
* ``dense_same_total``: a dense MLP of 8 x 64 = 512 hidden units, the same
  total feed-forward parameters as ``topk``.

The headline is ``topk`` throughput over ``dense_same_total`` throughput:
how much faster a model trains when each token uses k of E experts instead
of all of their weights. Attention, the embeddings and the output head cost
the same in every model, so the same ratios are also measured for the
feed-forward layers alone (forward and backward on the B * T rows of one
step). The candidates are timed interleaved in one run (see
:mod:`tinycond.bench.timing`), and each number is the median over repeats.

``python -m tinycond`` runs with one BLAS thread (see ``tinycond/__main__.py``);
run this module as ``OPENBLAS_NUM_THREADS=1 python -m tinycond.bench.lm`` to
measure the same setting.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from tinycond.bench.timing import time_interleaved
from tinycond.data.text import build_corpus, load_text, sample_windows
from tinycond.lm import LMConfig, TinyLM, ffn_flops_per_token, make_feedforward
from tinycond.lm.tour import BATCH_SIZE, CONTEXT, D_HIDDEN, D_MODEL, N_HEADS, N_LAYERS
from tinycond.nn import CrossEntropyLoss
from tinycond.optim import Adam

N_EXPERTS, TOP_K, DEPTH = 8, 2, 3


def configs(vocab_size: int) -> dict:
    """Return the four configurations, by name, at the tour's default size."""
    base = LMConfig(vocab_size=vocab_size, context=CONTEXT, d_model=D_MODEL, n_heads=N_HEADS, n_layers=N_LAYERS,
                    d_hidden=D_HIDDEN, n_experts=N_EXPERTS, top_k=TOP_K, depth=DEPTH)
    return {
        "dense": base.replace(router="dense"),
        "topk": base.replace(router="topk"),
        "tree": base.replace(router="tree", tree_mode="hard"),
        "dense_same_total": base.replace(router="dense", d_hidden=N_EXPERTS * D_HIDDEN // TOP_K),
    }


def _training_steps(model, x, y, n_steps):
    """Return a callable that runs ``n_steps`` training steps on the fixed batch (x, y)."""
    optimizer = Adam(model, lr=1e-3)
    loss_fn = CrossEntropyLoss()

    def steps():
        for _ in range(n_steps):
            model.zero_grad()
            loss_fn(model.forward(x), y)
            model.backward(loss_fn.backward())
            optimizer.step()

    return steps


def _layer_steps(layer, rows, n_steps):
    """Return a callable that runs ``n_steps`` forward and backward passes of one feed-forward layer."""
    dy = np.random.default_rng(1).standard_normal(rows.shape).astype(rows.dtype)

    def steps():
        for _ in range(n_steps):
            layer.forward(rows)
            layer.backward(dy)

    return steps


def _ratio(timings, fast, slow):
    a, b = timings[fast], timings[slow]
    return {"median": b.median / a.median, "low": b.low / a.high, "high": b.high / a.low}


def run(quick: bool = False) -> dict:
    """Measure training throughput of each configuration; return tokens per second and ratios.

    Returns
    -------
    dict
        ``"models"``: per name, ``tokens_per_second`` (median), ``low`` and
        ``high`` (from the slowest and fastest repeat), ``spread``
        ((max - min) / median of the step time), ``active_flops`` and
        ``dense_same_total_flops`` per token; ``"topk_over_dense_same_total"``
        and ``"topk_over_dense"``: throughput ratios with their ranges.
        ``"layers"``: the same ratios for the feed-forward layers alone,
        with each layer's ``seconds`` per forward and backward pass.
    """
    repeats, steps_per_call = (2, 1) if quick else (5, 4)
    corpus = build_corpus(load_text(), context=CONTEXT)
    x, y = sample_windows(corpus.train, BATCH_SIZE, CONTEXT, rng=0)
    tokens = steps_per_call * x.size
    candidates, flops = {}, {}
    for name, config in configs(corpus.vocab.size).items():
        model = TinyLM(config, rng=0, dtype=np.float32)
        candidates[name] = _training_steps(model, x, y, steps_per_call)
        flops[name] = ffn_flops_per_token(config)
    timings = time_interleaved(candidates, repeats=repeats, warmup=1)

    rows = np.random.default_rng(2).standard_normal((x.size, D_MODEL)).astype(np.float32)  # (B T, d_model)
    layer_candidates = {
        name: _layer_steps(make_feedforward(config, rng=0, dtype=np.float32), rows, steps_per_call)
        for name, config in configs(corpus.vocab.size).items()
    }
    layer_timings = time_interleaved(layer_candidates, repeats=repeats, warmup=1)

    models = {}
    for name, timing in timings.items():
        models[name] = {
            "tokens_per_second": tokens / timing.median,
            "low": tokens / timing.high,
            "high": tokens / timing.low,
            "spread": timing.spread,
            "active_flops": flops[name][0],
            "dense_same_total_flops": flops[name][1],
        }

    return {
        "context": CONTEXT,
        "batch_size": BATCH_SIZE,
        "repeats": repeats,
        "steps_per_repeat": steps_per_call,
        "models": models,
        "topk_over_dense_same_total": _ratio(timings, "topk", "dense_same_total"),
        "topk_over_dense": _ratio(timings, "topk", "dense"),
        "layers": {
            "seconds": {name: t.median / steps_per_call for name, t in layer_timings.items()},
            "spread": {name: t.spread for name, t in layer_timings.items()},
            "topk_over_dense_same_total": _ratio(layer_timings, "topk", "dense_same_total"),
            "topk_over_dense": _ratio(layer_timings, "topk", "dense"),
        },
    }


def print_table(results: dict) -> None:
    """Print the throughput table and the ratios."""
    print(f"training throughput, {results['batch_size']} windows x {results['context']} characters per step, "
          f"median of {results['repeats']} repeats of {results['steps_per_repeat']} steps")
    print(f"  {'model':<18}{'tokens/s':>10}{'range':>18}{'spread':>8}{'FFN FLOPs/token':>17}")
    for name, m in results["models"].items():
        span = f"{m['low']:,.0f}-{m['high']:,.0f}"
        print(f"  {name:<18}{m['tokens_per_second']:>10,.0f}{span:>18}{m['spread']:>8.0%}{m['active_flops']:>17,}")
    ratios = (("topk_over_dense_same_total", "top-k / dense of the same total parameters"),
              ("topk_over_dense", "top-k / dense of the same active width"))
    for key, label in ratios:
        r = results[key]
        print(f"  {label}: {r['median']:.2f}x (range {r['low']:.2f} to {r['high']:.2f})")
    layers = results["layers"]
    print("feed-forward layer alone, forward + backward on one step's rows")
    for name, seconds in layers["seconds"].items():
        print(f"  {name:<18}{1e3 * seconds:>8.1f} ms{layers['spread'][name]:>8.0%}")
    for key, label in ratios:
        r = layers[key]
        print(f"  {label}: {r['median']:.2f}x (range {r['low']:.2f} to {r['high']:.2f})")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tinycond.bench.lm", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="two repeats of one step each: a smoke run of a few seconds")
    parser.add_argument("--json", metavar="PATH", default=None, help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    results = run(quick=args.quick)
    print_table(results)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as file:
            json.dump(results, file, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
