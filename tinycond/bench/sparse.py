"""Benchmark: the sparse top-k mixture against the dense mixture, and against plain matmul.

Three measurements, each a ratio of timings taken in the same run with the
candidates interleaved (see :mod:`tinycond.bench.timing`):

1. **Sparse against dense.** Forward plus backward of
   :class:`tinycond.moe.SparseMoE` and :class:`tinycond.moe.DenseMoE` with
   the same sizes (default N=4096 tokens, d_model=256, d_hidden=512, E=16,
   k=2, float64). The experts' FLOP ratio is E / k = 8.
2. **Peak memory** (tracemalloc) of one forward plus backward of each. The
   sparse layer keeps (N k, d_hidden) activations and the dense one
   (E, N, d_hidden). The parameter gradients, (E, d_model, d_hidden) each,
   are the same size in both.
3. **Matmul-throughput fraction** of the sparse layer at d_hidden=1024:
   its expert FLOPs divided by its time, over the FLOP rate of one square
   matrix product with the same FLOPs. The fraction against the experts'
   own matrix products is reported too: the same (N k / E, d_model) by
   (d_model, d_hidden) shapes, with no routing. The gap between the two
   fractions is what the routing costs. The rest is what BLAS loses on the
   experts' smaller shapes.

Run ``python -m tinycond.bench.sparse`` (``--quick`` for a smoke run of a
few seconds). No test asserts these timings. BLAS threading changes the
small per-expert products more than the large ones, so compare runs with
``OPENBLAS_NUM_THREADS=1`` (or your BLAS's variable) set before Python
starts against the default.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from tinycond.bench.timing import peak_memory, time_interleaved
from tinycond.moe import DenseMoE, SparseMoE

FULL = {"n_tokens": 4096, "d_model": 256, "d_hidden": 512, "n_experts": 16, "top_k": 2, "repeats": 3}
QUICK = {"n_tokens": 512, "d_model": 64, "d_hidden": 128, "n_experts": 16, "top_k": 2, "repeats": 2}
THROUGHPUT_D_HIDDEN = 1024


def expert_flops(n_assignments, d_model, d_hidden, d_out):
    """Return the multiply-add FLOPs (2 per multiply-add) of the experts' forward plus backward.

    Forward has two products per assignment (``x W1``, ``h W2``), backward
    four (``dy W2^T``, ``h^T dy``, ``da W1^T``, ``x^T da``).
    """
    first = 2 * n_assignments * d_model * d_hidden
    second = 2 * n_assignments * d_hidden * d_out
    return 3 * (first + second)


def _layers(n_tokens, d_model, d_hidden, n_experts, top_k, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n_tokens, d_model))
    dy = rng.standard_normal((n_tokens, d_model))
    sparse = SparseMoE(d_model, d_hidden, n_experts, top_k, rng=seed)
    dense = DenseMoE(d_model, d_hidden, n_experts, rng=seed)
    return x, dy, sparse, dense


def _step(layer, x, dy):
    def run():
        layer.forward(x)
        layer.backward(dy)

    return run


def compare_dense(n_tokens, d_model, d_hidden, n_experts, top_k, repeats=3):
    """Time forward plus backward of the sparse and the dense layer, and measure their peak memory."""
    x, dy, sparse, dense = _layers(n_tokens, d_model, d_hidden, n_experts, top_k)
    timings = time_interleaved({"sparse": _step(sparse, x, dy), "dense": _step(dense, x, dy)}, repeats=repeats)
    sparse_bytes = peak_memory(_step(sparse, x, dy))
    dense_bytes = peak_memory(_step(dense, x, dy))
    gradient_bytes = sum(g.nbytes for name, g in sparse.gradients() if name in ("W1", "b1", "W2", "b2"))
    return {
        "sizes": {"n_tokens": n_tokens, "d_model": d_model, "d_hidden": d_hidden, "n_experts": n_experts, "top_k": top_k},
        "sparse_seconds": timings["sparse"].median,
        "dense_seconds": timings["dense"].median,
        "speedup": timings["dense"].median / timings["sparse"].median,
        "speedup_range": (timings["dense"].low / timings["sparse"].high, timings["dense"].high / timings["sparse"].low),
        "flop_ratio": n_experts / top_k,
        "sparse_spread": timings["sparse"].spread,
        "dense_spread": timings["dense"].spread,
        "sparse_peak_bytes": sparse_bytes,
        "dense_peak_bytes": dense_bytes,
        "expert_gradient_bytes": gradient_bytes,
        "dropped": sparse.n_dropped,
    }


def matmul_fraction(n_tokens, d_model, d_hidden, n_experts, top_k, repeats=3):
    """Return the sparse layer's FLOP rate as a fraction of plain matrix products of the same FLOPs."""
    x, dy, sparse, _ = _layers(n_tokens, d_model, d_hidden, n_experts, top_k)
    sparse.forward(x)
    flops = expert_flops(n_tokens * top_k, d_model, d_hidden, d_model)

    # One square product with the same FLOPs: 2 n^3 = flops.
    n = int(round((flops / 2) ** (1 / 3)))
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((n, n)), rng.standard_normal((n, n))
    square_flops = 2 * n**3

    # The experts' own products on already-grouped rows, with no routing.
    rows = n_tokens * top_k // n_experts
    xs = rng.standard_normal((rows, d_model))
    hs = rng.standard_normal((rows, d_hidden))
    W1 = sparse.params["W1"]
    W2 = sparse.params["W2"]

    def expert_products():
        for e in range(n_experts):
            h = xs @ W1[e]
            y = h @ W2[e]
            dh = y @ W2[e].T
            dW2 = hs.T @ y
            dx = dh @ W1[e].T
            dW1 = xs.T @ dh
        return dx, dW1, dW2

    products_flops = expert_flops(rows * n_experts, d_model, d_hidden, d_model)
    timings = time_interleaved(
        {"sparse": _step(sparse, x, dy), "square": lambda: a @ b, "products": expert_products}, repeats=repeats
    )
    sparse_rate = flops / timings["sparse"].median
    square_rate = square_flops / timings["square"].median
    products_rate = products_flops / timings["products"].median
    return {
        "sizes": {"n_tokens": n_tokens, "d_model": d_model, "d_hidden": d_hidden, "n_experts": n_experts, "top_k": top_k},
        "sparse_gflops": sparse_rate / 1e9,
        "square_gflops": square_rate / 1e9,
        "square_size": n,
        "expert_products_gflops": products_rate / 1e9,
        "fraction_of_square": sparse_rate / square_rate,
        "fraction_of_expert_products": sparse_rate / products_rate,
        "sparse_spread": timings["sparse"].spread,
        "square_spread": timings["square"].spread,
    }


def run(quick=False):
    """Run the sparse-against-dense comparison and the throughput fraction; return the results."""
    config = dict(QUICK if quick else FULL)
    repeats = config.pop("repeats")
    results = {"compare_dense": compare_dense(**config, repeats=repeats)}
    config["d_hidden"] = config["d_hidden"] * 2 if quick else THROUGHPUT_D_HIDDEN
    results["matmul_fraction"] = matmul_fraction(**config, repeats=repeats)
    return results


def _print_table(results):
    c = results["compare_dense"]
    s = c["sizes"]
    print(
        f"sparse vs dense, N={s['n_tokens']} d_model={s['d_model']} d_hidden={s['d_hidden']} "
        f"E={s['n_experts']} k={s['top_k']}, float64, forward + backward"
    )
    print(f"  {'layer':<8}{'seconds':>10}{'spread':>9}{'peak MiB':>11}")
    for name in ("sparse", "dense"):
        print(f"  {name:<8}{c[name + '_seconds']:>10.3f}{c[name + '_spread']:>9.0%}{c[name + '_peak_bytes'] / 2**20:>11.1f}")
    low, high = c["speedup_range"]
    print(f"  speedup {c['speedup']:.2f}x (range {low:.2f} to {high:.2f}), FLOP ratio {c['flop_ratio']:.0f}")
    print(f"  expert weight gradients, the same in both: {c['expert_gradient_bytes'] / 2**20:.1f} MiB")

    m = results["matmul_fraction"]
    s = m["sizes"]
    print(f"matmul throughput, d_model={s['d_model']} d_hidden={s['d_hidden']} E={s['n_experts']} k={s['top_k']}")
    print(f"  sparse layer            {m['sparse_gflops']:7.1f} GFLOP/s")
    print(f"  square matmul n={m['square_size']:<6}  {m['square_gflops']:7.1f} GFLOP/s")
    print(f"  expert-shaped products  {m['expert_products_gflops']:7.1f} GFLOP/s")
    print(f"  fraction of square {m['fraction_of_square']:.2f}, of expert-shaped products {m['fraction_of_expert_products']:.2f}")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tinycond.bench.sparse", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, a few seconds in all")
    parser.add_argument("--json", metavar="PATH", help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    results = run(quick=args.quick)
    _print_table(results)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
