"""The tour behind ``python -m tinycond``: train a tiny conditional language model on real text.

It trains a character-level model whose feed-forward layers are a top-k
mixture of experts (or a decision-tree router, or a dense MLP) on the Python
Language Reference that ships with CPython. Then it prints validation bits
per character, active against total parameters, feed-forward FLOPs per token
against a dense model of the same total size, per-expert utilisation and a
generated sample, and writes its figures. Run ``python -m tinycond --help``
for the options.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import NamedTuple

import numpy as np

from tinycond.data.text import VAL_BLOCK_CHARS, build_corpus, load_text, min_text_chars
from tinycond.lm import (
    LMConfig,
    TinyLM,
    evaluate_bpc,
    expert_usage,
    ffn_flops_per_token,
    generate,
    load_checkpoint,
    save_checkpoint,
    train_lm,
)
from tinycond.lm.figures import plot_experts_by_class, plot_training
from tinycond.lm.train import TrainHistory
from tinycond.plots import figures_dir, plt, save_figure

# The default size: chosen so that the default run (800 steps of the top-k
# model) finishes in under 3 minutes on 2 cores.
CONTEXT = 64
BATCH_SIZE = 32
D_MODEL = 64
N_HEADS = 4
N_LAYERS = 2
D_HIDDEN = 128
LEARNING_RATE = 1e-2
VAL_FRACTION = 0.1
DEFAULT_STEPS = 800
EVAL_WINDOWS = 32  # validation windows per progress line; the final score uses the whole validation text
SAMPLE_PROMPT = "The "
SAMPLE_TEMPERATURE = 0.8
SAMPLE_TOP_K = 20


class TourInputError(Exception):
    """Error for a text file or checkpoint from the command line that cannot be used; the message explains why."""


class TourResult(NamedTuple):
    """Numbers the tour prints, for tests and scripts."""

    val_bpc: float
    active_params: int
    total_params: int
    active_flops: int
    dense_same_total_flops: int
    utilisation: np.ndarray | None  # (L, n_experts) share of routed tokens per expert
    sample: str
    history: TrainHistory | None
    figures: list


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tinycond",
        description=(
            "Train a tiny character-level language model with conditional feed-forward layers, "
            "then print validation bits per character, active and total parameters, feed-forward "
            "FLOPs per token, expert utilisation and a generated sample, and write figures."
        ),
    )
    parser.add_argument("--text", metavar="PATH", default=None,
                        help="UTF-8 text file to train on; by default the Python Language Reference bundled "
                             "with CPython (pydoc_data.topics, about 460 KB). Every tenth block of about "
                             f"{VAL_BLOCK_CHARS:,} characters is kept for validation.")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS, metavar="N",
                        help=f"training steps (optimizer updates), each on {BATCH_SIZE} windows of {CONTEXT} "
                             f"characters; 0 skips training (useful with --load). Default: %(default)s")
    parser.add_argument("--router", choices=("dense", "topk", "tree"), default="topk",
                        help="feed-forward layer: a dense MLP, a top-k mixture of experts, or a decision-tree "
                             "router. Default: %(default)s")
    parser.add_argument("--experts", type=int, default=8, metavar="E",
                        help="number of experts of the top-k mixture (count). Default: %(default)s")
    parser.add_argument("--top-k", type=int, default=2, metavar="K",
                        help=f"experts each character visits (count); each expert is {D_HIDDEN}/K hidden units "
                             f"wide, so every router spends the same feed-forward FLOPs per character. Default: %(default)s")
    parser.add_argument("--depth", type=int, default=3, metavar="D",
                        help=f"depth of the tree router (levels); it has 2**D leaf MLPs of {D_HIDDEN} hidden units. "
                             f"Default: %(default)s")
    parser.add_argument("--seed", type=int, default=0, metavar="S",
                        help="integer seed of the initial weights, the training windows and the sample; "
                             "the same seed gives the same numbers. Default: %(default)s")
    parser.add_argument("--save", metavar="PATH", default=None,
                        help="write the trained model to this .npz file (parameters, configuration, vocabulary)")
    parser.add_argument("--load", metavar="PATH", default=None,
                        help="start from a model written by --save (the optimizer state starts afresh); "
                             "--router, --experts, --top-k, --depth and --text must match the saved model")
    parser.add_argument("--out", metavar="DIR", default=None,
                        help="folder for the figures (PNG); default: $TINYCOND_FIGURES, else figures/ "
                             "at the repository root")
    parser.add_argument("--sample-chars", type=int, default=300, metavar="N",
                        help="characters to generate after training. Default: %(default)s")
    return parser


def _check_args(parser, args) -> None:
    for name in ("experts", "top_k", "depth", "sample_chars"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(args, name)}")
    if args.steps < 0:
        parser.error(f"--steps must be 0 or more, got {args.steps}")
    if args.router == "topk" and args.top_k > args.experts:
        parser.error(f"--top-k must be at most --experts, got --top-k {args.top_k} and --experts {args.experts}")
    if args.router == "topk" and D_HIDDEN % args.top_k:
        parser.error(f"--top-k must divide the active hidden width {D_HIDDEN}, got {args.top_k}")


def _describe_router(config: LMConfig) -> str:
    if config.router == "dense":
        return f"a dense MLP of {config.d_hidden} hidden units"
    if config.router == "topk":
        return (f"a top-{config.top_k} mixture of {config.n_experts} experts of {config.expert_hidden} "
                f"hidden units (Switch balancing loss x {config.balance_coef:g})")
    return (f"a depth-{config.depth} tree router over {2**config.depth} leaves of {config.expert_hidden} "
            f"hidden units ({config.tree_mode}-path training, hard inference)")


def run(args, log=print) -> TourResult:
    """Run the tour for parsed arguments; print with ``log`` and return the numbers."""
    init_seed, train_seed, sample_seed = np.random.SeedSequence(args.seed).spawn(3)
    try:
        text = load_text(args.text, min_chars=min_text_chars(CONTEXT, VAL_FRACTION))
        corpus = build_corpus(text, context=CONTEXT, val_fraction=VAL_FRACTION)
    except (FileNotFoundError, ValueError) as error:
        raise TourInputError(f"--text: {error}") from None
    source = "the Python Language Reference (pydoc_data.topics)" if args.text is None else repr(args.text)
    log(f"corpus: {source}, {len(text):,} characters, {corpus.vocab.size} ids (unknown included), "
        f"{corpus.train.size:,} train / {corpus.val.size:,} validation")

    config = LMConfig(
        vocab_size=corpus.vocab.size, context=CONTEXT, d_model=D_MODEL, n_heads=N_HEADS, n_layers=N_LAYERS,
        d_hidden=D_HIDDEN, router=args.router, n_experts=args.experts, top_k=args.top_k, depth=args.depth,
    )
    model = TinyLM(config, rng=np.random.default_rng(init_seed), dtype=np.float64)
    if args.load is not None:
        try:
            load_checkpoint(args.load, model, corpus.vocab)
        except (FileNotFoundError, ValueError) as error:
            raise TourInputError(f"--load: {error}") from None
        log(f"loaded {args.load}")
    model.astype(np.float32)  # float32 trains about twice as fast; the gradient checks use float64
    log(f"model: {config.n_layers} blocks, d_model {config.d_model}, {config.n_heads} heads, context "
        f"{config.context} characters; feed-forward: {_describe_router(config)}")

    history = None
    if args.steps > 0:
        log(f"training {args.steps} steps of {BATCH_SIZE} windows x {CONTEXT} characters (seed {args.seed}, float32); "
            f"progress lines score validation on {EVAL_WINDOWS} windows")
        history = train_lm(
            model, corpus, steps=args.steps, batch_size=BATCH_SIZE, lr=LEARNING_RATE,
            eval_windows_count=EVAL_WINDOWS, rng=np.random.default_rng(train_seed), log=log,
        )

    val_bpc = evaluate_bpc(model, corpus.val, max_windows=None)
    active_params, total_params = model.parameter_counts()
    active_flops, dense_flops = ffn_flops_per_token(config)
    counts = expert_usage(model, corpus.val, corpus.vocab.char_classes(), max_windows=256)
    utilisation = None if counts is None else counts.sum(axis=1) / counts.sum(axis=(1, 2))[:, None]  # (L, E)
    sample = generate(model, corpus.vocab, SAMPLE_PROMPT, args.sample_chars, temperature=SAMPLE_TEMPERATURE,
                      top_k=SAMPLE_TOP_K, rng=np.random.default_rng(sample_seed))

    log("")
    log("results")
    log(f"  validation bits per character   {val_bpc:.3f}   (all {corpus.val.size:,} validation characters; "
        f"uniform guess: {np.log2(config.vocab_size):.2f})")
    log(f"  parameters, active / total      {active_params:,} / {total_params:,}   ({active_params / total_params:.0%} active per token)")
    log(f"  feed-forward FLOPs per token    {active_flops:,} active / {dense_flops:,} for a dense model of the same "
        f"total size   ({active_flops / dense_flops:.2f}x)")
    if history is not None:
        log(f"  training throughput             {history.tokens_per_second:,.0f} tokens/s")
    if utilisation is None:
        log("  expert utilisation              none: the dense MLP has no experts")
    else:
        unit = "leaf" if config.router == "tree" else "expert"
        log(f"  {unit} utilisation (% of routed validation tokens; uniform = {100 / utilisation.shape[1]:.1f}%)")
        for layer, shares in enumerate(utilisation):
            log(f"    layer {layer + 1}: " + " ".join(f"{100 * s:5.1f}" for s in shares))
    log(f"sample (prompt {SAMPLE_PROMPT!r}, temperature {SAMPLE_TEMPERATURE}, top-k {SAMPLE_TOP_K}):")
    for line in sample.text.splitlines():
        log("  | " + line)

    figures = []
    out_dir = figures_dir(args.out)
    label = {"dense": "dense MLP", "topk": f"top-{config.top_k} of {config.n_experts} experts",
             "tree": f"tree of depth {config.depth}"}[config.router]
    if history is not None:
        fig = plot_training({label: history}, title=f"Tiny language model on {'pydoc_data.topics' if args.text is None else 'your text'}")
        figures.append(save_figure(fig, "tour_training", out_dir))
        plt.close(fig)
    if counts is not None:
        fig = plot_experts_by_class(
            counts, title=f"Which {'leaf' if config.router == 'tree' else 'expert'} each character class goes to ({label}, validation text)",
            expert_label="leaf" if config.router == "tree" else "expert",
        )
        figures.append(save_figure(fig, "tour_experts_by_character", out_dir))
        plt.close(fig)
    if figures:
        log("figures: " + ", ".join(str(path) for path in figures))
    if args.save is not None:
        log(f"saved {save_checkpoint(args.save, model, corpus.vocab)}")
    return TourResult(val_bpc, active_params, total_params, active_flops, dense_flops, utilisation, sample.text, history, figures)


def main(argv=None) -> int:
    """Parse ``argv``, run the tour and return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_args(parser, args)
    start = time.perf_counter()
    try:
        run(args)
    except TourInputError as error:
        print(f"python -m tinycond: error: {error}", file=sys.stderr)
        return 2
    print(f"done in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
