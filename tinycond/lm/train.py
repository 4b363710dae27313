r"""Training and evaluation of the tiny language model.

The training loss is the mean cross-entropy of the next character (in nats)
plus the feed-forward layers' auxiliary losses. Validation is reported in
bits per character, the cross-entropy divided by :math:`\ln 2`, on fixed
non-overlapping windows of the validation text.
"""

from __future__ import annotations

import time
from typing import Callable, NamedTuple

import numpy as np

from tinycond._checks import as_generator, check_positive_float, check_positive_int
from tinycond.data.text import CHAR_CLASSES, TextCorpus, eval_windows, sample_windows
from tinycond.nn import CrossEntropyLoss
from tinycond.optim import Adam

LN2 = float(np.log(2.0))


class TrainHistory(NamedTuple):
    """Measurements of one :func:`train_lm` run.

    Attributes
    ----------
    steps : int ndarray of shape (S,)
        Step numbers, 1 to S.
    train_loss : ndarray of shape (S,)
        Cross-entropy of each training batch in nats, auxiliary losses excluded.
    val_steps : int ndarray of shape (n_evals,)
        Steps at which validation ran.
    val_bpc : ndarray of shape (n_evals,)
        Validation bits per character at those steps.
    tokens_per_second : float
        Training throughput over the whole run, evaluation time excluded.
    """

    steps: np.ndarray
    train_loss: np.ndarray
    val_steps: np.ndarray
    val_bpc: np.ndarray
    tokens_per_second: float


def learning_rate(step: int, steps: int, lr: float, warmup: int) -> float:
    r"""Return the learning rate at ``step`` (1-based): linear warm-up, then cosine decay to ``lr / 10``.

    .. math:: \eta_t = \eta \min(1, t / w) \bigl(0.1 + 0.45 (1 + \cos(\pi\, t / S))\bigr)
    """
    ramp = min(1.0, step / warmup) if warmup else 1.0
    return lr * ramp * (0.1 + 0.45 * (1.0 + np.cos(np.pi * step / steps)))


def clip_gradients(model, max_norm: float) -> float:
    """Scale every gradient down so their global L2 norm is at most ``max_norm``; return the norm before."""
    grads = [g for _, g in model.gradients()]
    norm = float(np.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in grads)))
    if norm > max_norm:
        for g in grads:
            g *= max_norm / norm
    return norm


def evaluate_bpc(model, ids, *, max_windows: int | None = 64, batch_size: int = 32) -> float:
    """Return bits per character of ``model`` on ``ids``, in evaluation mode.

    The text is cut into consecutive windows of the model's context (at most
    ``max_windows``, spread over the text; None keeps every window), so the
    number is the same on every call.
    """
    x, y = eval_windows(ids, model.config.context, max_windows=max_windows)
    was_training = model.training
    model.eval()
    loss = CrossEntropyLoss()
    total = 0.0
    try:
        for start in range(0, len(x), batch_size):
            xb, yb = x[start : start + batch_size], y[start : start + batch_size]
            total += float(loss(model.forward(xb), yb)) * xb.size
    finally:
        model.train(was_training)
    return total / x.size / LN2


def train_lm(
    model,
    corpus: TextCorpus,
    *,
    steps: int,
    batch_size: int = 32,
    lr: float = 1e-2,
    warmup: int = 20,
    max_grad_norm: float = 1.0,
    eval_every: int | None = None,
    eval_windows_count: int = 32,
    rng,
    log: Callable[[str], None] | None = print,
) -> TrainHistory:
    """Train ``model`` on random windows of ``corpus.train`` with Adam.

    Parameters
    ----------
    model : TinyLM
    corpus : TextCorpus
    steps : int
        Optimiser steps S.
    batch_size : int
        Windows per step B, each of ``model.config.context`` characters.
    lr : float
        Peak learning rate (see :func:`learning_rate`).
    warmup : int
        Steps of linear warm-up.
    max_grad_norm : float
        Global gradient-norm clip.
    eval_every : int, optional
        Steps between validation runs and progress lines; about a tenth of
        ``steps`` by default. Validation also runs after the last step.
    eval_windows_count : int
        Validation windows per evaluation.
    rng : Generator or int
        Draws the training windows.
    log : callable or None
        Receives each progress line (step, mean training loss since the
        last line and validation loss, both in bits per character, and
        tokens per second); None prints nothing.

    Returns
    -------
    TrainHistory
    """
    steps = check_positive_int(steps, "steps")
    batch_size = check_positive_int(batch_size, "batch_size")
    lr = check_positive_float(lr, "lr")
    eval_every = max(1, steps // 10) if eval_every is None else check_positive_int(eval_every, "eval_every")
    rng = as_generator(rng)
    context = model.config.context
    optimizer = Adam(model, lr=lr)
    loss_fn = CrossEntropyLoss()
    model.train()

    train_loss = np.zeros(steps)
    val_steps, val_bpc = [], []
    train_seconds, tokens_since, seconds_since = 0.0, 0, 0.0
    for step in range(1, steps + 1):
        start = time.perf_counter()
        x, y = sample_windows(corpus.train, batch_size, context, rng=rng)
        model.zero_grad()
        loss = loss_fn(model.forward(x), y)
        model.backward(loss_fn.backward())
        clip_gradients(model, max_grad_norm)
        optimizer.lr = learning_rate(step, steps, lr, warmup)
        optimizer.step()
        elapsed = time.perf_counter() - start
        train_seconds += elapsed
        seconds_since += elapsed
        tokens_since += x.size
        train_loss[step - 1] = float(loss)

        if step % eval_every == 0 or step == steps:
            bpc = evaluate_bpc(model, corpus.val, max_windows=eval_windows_count)
            val_steps.append(step)
            val_bpc.append(bpc)
            if log is not None:
                recent = train_loss[max(0, step - eval_every) : step].mean() / LN2
                log(
                    f"step {step:>5}/{steps}  train loss {recent:.3f} bits/char  "
                    f"val {bpc:.3f} bits/char  {tokens_since / seconds_since:>8,.0f} tokens/s"
                )
            tokens_since, seconds_since = 0, 0.0

    return TrainHistory(
        np.arange(1, steps + 1), train_loss, np.array(val_steps), np.array(val_bpc),
        steps * batch_size * context / train_seconds,
    )


def expert_usage(model, ids, char_classes, *, max_windows: int = 64):
    """Count, per layer, which expert each character of ``ids`` goes to, by character class.

    Runs the model in evaluation mode on validation windows and counts
    every (token, selected expert) pair, so with top-k routing each token
    counts k times. The character class is the class of the *input*
    character at that position.

    Parameters
    ----------
    model : TinyLM
        A top-k or tree model (a dense model has no routing; returns None).
    ids : int ndarray of shape (n,)
    char_classes : int ndarray of shape (V,)
        Index into ``CHAR_CLASSES`` of every id (``CharVocab.char_classes()``).

    Returns
    -------
    counts : int ndarray of shape (L, len(CHAR_CLASSES), n_experts), or None
    """
    x, _ = eval_windows(ids, model.config.context, max_windows=max_windows)
    was_training = model.training
    model.eval()
    try:
        model.forward(x)
        routing = model.routing()
    finally:
        model.train(was_training)
    if routing is None:
        return None
    n_experts = model.config.n_ffn_experts
    token_class = char_classes[x.reshape(-1)]  # (B T,)
    counts = np.zeros((len(routing), len(CHAR_CLASSES), n_experts), dtype=np.int64)
    for layer, index in enumerate(routing):
        k = index.shape[1]
        np.add.at(counts[layer], (np.repeat(token_class, k), index.reshape(-1)), 1)
    return counts


__all__ = ["LN2", "TrainHistory", "clip_gradients", "evaluate_bpc", "expert_usage", "learning_rate", "train_lm"]
