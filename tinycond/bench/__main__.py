"""Measure what conditional computation saves on this machine: ``python -m tinycond.bench``.

Every number is a ratio of timings taken in the same run, with the
candidates interleaved, so a slow spell on a shared machine hits both sides
alike. Each timing is the median over repetitions, and the spread is
(max - min) / median. The sections:

1. the sparse top-k mixture against the dense mixture, for E = 4 to 64 at
   k = 2, with the peak memory (tracemalloc) of each;
2. the sparse layer's matrix-multiply throughput as a fraction of one plain
   matrix product with the same FLOPs;
3. the decision-tree router: hard inference against soft evaluation, and tree
   routing against a flat softmax router, for depth 2 to 10;
4. adaptive computation time against running every sample for max_steps,
   for several mean ponder counts.

The figures go to ``figures/`` (``--out`` to change), the results to
``--json PATH``. ``--quick`` is a smoke run of a few seconds.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time

import numpy as np

from tinycond.bench import act as act_bench
from tinycond.bench import sparse as sparse_bench
from tinycond.bench import tree as tree_bench

FULL = {
    "sparse": {"n_tokens": 4096, "d_model": 256, "d_hidden": 512, "top_k": 2, "experts": (4, 8, 16, 32, 64), "repeats": 3},
    "throughput": {"n_tokens": 4096, "d_model": 256, "d_hidden": 1024, "n_experts": 16, "top_k": 2, "repeats": 3},
    "tree_depths": tuple(range(2, 11)),
}
QUICK = {
    "sparse": {"n_tokens": 256, "d_model": 32, "d_hidden": 64, "top_k": 2, "experts": (4, 16), "repeats": 2},
    "throughput": {"n_tokens": 256, "d_model": 32, "d_hidden": 128, "n_experts": 4, "top_k": 2, "repeats": 2},
    "tree_depths": (2, 6),
}
SECTIONS = ("sparse", "throughput", "tree", "act")


class Progress:
    """Print one line per finished measurement, with the elapsed time, to stderr."""

    def __init__(self, total: int):
        self.total = total
        self.done = 0
        self.start = time.perf_counter()

    def step(self, label: str) -> None:
        self.done += 1
        elapsed = time.perf_counter() - self.start
        print(f"[{self.done}/{self.total}] {label} ({elapsed:.0f} s elapsed)", file=sys.stderr, flush=True)


def machine_info() -> dict:
    """Return the CPU, core count, Python, NumPy and BLAS of this machine."""
    info = {"python": platform.python_version(), "numpy": np.__version__, "cores": _core_count(), "cpu": _cpu_model()}
    try:
        config = np.show_config(mode="dicts")
        blas = config.get("Build Dependencies", {}).get("blas", {})
        info["blas"] = f"{blas.get('name', '?')} {blas.get('version', '')}".strip()
    except (TypeError, AttributeError):
        info["blas"] = "unknown"
    return info


def _core_count() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def run_sparse(config, progress) -> list:
    """Sweep E at fixed k: sparse and dense forward plus backward times and peak memory."""
    rows = []
    settings = dict(config)
    experts = settings.pop("experts")
    for n_experts in experts:
        rows.append(sparse_bench.compare_dense(n_experts=n_experts, **settings))
        progress.step(f"sparse vs dense, E={n_experts}: {rows[-1]['speedup']:.1f}x")
    return rows


def run_all(quick: bool, sections=SECTIONS) -> dict:
    """Run the chosen sections and return every result with the machine description."""
    config = QUICK if quick else FULL
    total = (
        ("sparse" in sections) * len(config["sparse"]["experts"])
        + ("throughput" in sections)
        + ("tree" in sections) * len(config["tree_depths"])
        + ("act" in sections)
    )
    progress = Progress(total)
    results = {"machine": machine_info(), "quick": quick}
    if "sparse" in sections:
        results["sparse"] = run_sparse(config["sparse"], progress)
    if "throughput" in sections:
        results["throughput"] = sparse_bench.matmul_fraction(**config["throughput"])
        progress.step(f"matmul throughput fraction: {results['throughput']['fraction_of_square']:.2f}")
    if "tree" in sections:
        # One depth a call, so the progress line moves while the deep trees run.
        for depth in config["tree_depths"]:
            part = tree_bench.run(quick=quick, depths=(depth,))
            results.setdefault("tree", {"config": part["config"], "rows": []})["rows"].extend(part["rows"])
            progress.step(f"tree depth {depth}: hard inference {part['rows'][0]['soft_over_hard']:.1f}x faster than soft")
        results["tree"]["config"]["depths"] = tuple(config["tree_depths"])
    if "act" in sections:
        results["act"] = act_bench.run(quick=quick)
        progress.step("adaptive computation time")
    return results


def format_report(results: dict) -> str:
    """Return the results as plain-text tables."""
    m = results["machine"]
    lines = [f"machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}, NumPy {m['numpy']}, BLAS {m['blas']}", ""]
    if "sparse" in results:
        s = results["sparse"][0]["sizes"]
        lines.append(
            f"sparse top-{s['top_k']} vs dense mixture, N={s['n_tokens']} d_model={s['d_model']} "
            f"d_hidden={s['d_hidden']}, forward + backward, float64"
        )
        lines.append(f"  {'E':>4}{'sparse s':>10}{'dense s':>10}{'speedup':>9}{'FLOP ratio':>12}{'sparse MiB':>12}{'dense MiB':>11}{'spread':>8}")
        for row in results["sparse"]:
            spread = max(row["sparse_spread"], row["dense_spread"])
            lines.append(
                f"  {row['sizes']['n_experts']:>4}{row['sparse_seconds']:>10.3f}{row['dense_seconds']:>10.3f}"
                f"{row['speedup']:>8.1f}x{row['flop_ratio']:>12.0f}{row['sparse_peak_bytes'] / 2**20:>12.1f}"
                f"{row['dense_peak_bytes'] / 2**20:>11.1f}{spread:>8.0%}"
            )
        lines.append("")
    if "throughput" in results:
        t = results["throughput"]
        s = t["sizes"]
        lines.append(f"sparse layer matmul throughput, d_model={s['d_model']} d_hidden={s['d_hidden']} E={s['n_experts']} k={s['top_k']}")
        lines.append(f"  sparse layer {t['sparse_gflops']:.1f} GFLOP/s, square matmul (n={t['square_size']}) {t['square_gflops']:.1f} GFLOP/s")
        lines.append(f"  fraction {t['fraction_of_square']:.2f} (of expert-shaped products: {t['fraction_of_expert_products']:.2f})")
        lines.append("")
    if "tree" in results:
        lines.append(tree_bench.format_table(results["tree"]))
        lines.append("")
    if "act" in results:
        lines.append(act_bench.format_table(results["act"]))
    return "\n".join(lines)


def plot_results(results: dict, out_dir=None) -> list:
    """Write the benchmark figures and return their paths."""
    from tinycond.plots import plt, save_figure

    paths = []
    if "sparse" in results:
        fig, ax = plt.subplots(figsize=(5.5, 3.8))
        experts = [row["sizes"]["n_experts"] for row in results["sparse"]]
        ax.plot(experts, [row["dense_seconds"] for row in results["sparse"]], "o-", label="dense mixture (all experts)")
        ax.plot(experts, [row["sparse_seconds"] for row in results["sparse"]], "s-", label=f"sparse top-{results['sparse'][0]['sizes']['top_k']}")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("number of experts E")
        ax.set_ylabel("forward + backward time (s)")
        ax.set_title("Mixture of experts: time against E")
        ax.legend()
        paths.append(save_figure(fig, "bench_moe_time_vs_experts", out_dir))
        plt.close(fig)
    if "tree" in results:
        rows = results["tree"]["rows"]
        depths = [row["depth"] for row in rows]
        fig, ax = plt.subplots(figsize=(5.5, 3.8))
        for key, label, style in (
            ("soft_seconds", "soft evaluation (all leaves)", "o-"),
            ("hard_seconds", "hard inference (one leaf)", "s-"),
            ("flat_route_seconds", "flat softmax router", "^--"),
            ("tree_route_seconds", "tree routing only", "v--"),
        ):
            ax.plot(depths, [row[key] for row in rows], style, label=label)
        ax.set_yscale("log")
        ax.set_xlabel("tree depth D (2^D leaves)")
        ax.set_ylabel("time per batch (s)")
        ax.set_title("Decision-tree router: time against depth")
        ax.legend(fontsize=8)
        paths.append(save_figure(fig, "bench_tree_time_vs_depth", out_dir))
        plt.close(fig)
    if "act" in results:
        rows = results["act"]["rows"]
        max_steps = results["act"]["config"]["max_steps"]
        fig, ax = plt.subplots(figsize=(5.5, 3.8))
        ponder = [row["mean_steps"] for row in rows]
        ax.plot(ponder, [row["ratio"] for row in rows], "o-", label="ACT / fixed max_steps (measured)")
        ax.plot([0, max_steps], [0, 1], "k:", label="ideal: mean ponder / max_steps")
        ax.set_xlabel(f"mean ponder steps (max_steps = {max_steps})")
        ax.set_ylabel("time ratio")
        ax.set_title("Adaptive computation time: time against mean ponder")
        ax.legend()
        paths.append(save_figure(fig, "bench_act_time_vs_ponder", out_dir))
        plt.close(fig)
    return paths


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tinycond.bench",
        description="Measure conditional against dense compute as ratios in one run.",
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes and few repetitions: a smoke run of a few seconds")
    parser.add_argument("--json", metavar="PATH", help="also write every result to this JSON file")
    parser.add_argument("--out", metavar="DIR", help="folder for the figures (default: figures/ at the repository root)")
    parser.add_argument(
        "--only", metavar="SECTIONS", default=",".join(SECTIONS),
        help=f"comma-separated sections to run, from {', '.join(SECTIONS)} (default: all)",
    )
    args = parser.parse_args(argv)
    sections = tuple(s.strip() for s in args.only.split(",") if s.strip())
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        parser.error(f"--only got unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")

    results = run_all(args.quick, sections)
    print(format_report(results))
    for path in plot_results(results, args.out):
        print(f"wrote {path}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
