r"""Sampling text from the tiny language model, with the router's choices recorded."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from tinycond import functional as F
from tinycond._checks import as_generator, check_float_array, check_positive_float, check_positive_int


def sample_next(logits, *, temperature: float = 1.0, top_k: int | None = None, rng):
    r"""Draw one token id per row from softmax(logits / temperature), restricted to the top-k logits.

    Steps, with ``logits`` of shape (B, V):

    1. ``temperature == 0`` means greedy: return the argmax of each row.
    2. Divide the logits by the temperature.
    3. If ``top_k`` is set, set every logit below the row's k-th largest to
       ``-inf``, so only the k most likely ids can be drawn (ties with the
       k-th are kept).
    4. Softmax each row and draw one id per row by inverse-CDF sampling:
       the first id whose cumulative probability exceeds a uniform draw
       ``u`` in [0, 1), which is the number of cumulative values ``<= u``.
       If round-off leaves the last cumulative value at or below ``u``, that
       number is V, and the id is clipped to the last id, V - 1.
       NOTE: with ``top_k`` that id can lie outside the top k. It takes a
       draw within round-off of 1, about 1e-16 per row.

    Hint: ``np.partition(z, -top_k, axis=-1)[:, -top_k]`` is the k-th
    largest entry of each row.

    Parameters
    ----------
    logits : ndarray of shape (B, V)
    temperature : float
        0 is greedy; below 1 sharpens, above 1 flattens.
    top_k : int, optional
    rng : Generator or int

    Returns
    -------
    ids : int ndarray of shape (B,)

    Notes
    -----
    .. math:: P(i) = \frac{[z_i \ge z_{(k)}]\, e^{z_i / \tau}}{\sum_j [z_j \ge z_{(k)}]\, e^{z_j / \tau}}

    References
    ----------
    Fan, Lewis and Dauphin (2018). Hierarchical Neural Story Generation (top-k sampling).
    """
    check_float_array(logits, "logits", ndim=2)
    temperature = check_positive_float(temperature, "temperature", allow_zero=True)
    if top_k is not None:
        top_k = min(check_positive_int(top_k, "top_k"), logits.shape[-1])
    rng = as_generator(rng)
    ### BEGIN SOLUTION ex6_3
    if temperature == 0.0:
        return np.argmax(logits, axis=-1)
    z = logits.astype(np.float64) / temperature
    if top_k is not None:
        kth = np.partition(z, -top_k, axis=-1)[:, -top_k][:, None]  # (B, 1)
        z = np.where(z >= kth, z, -np.inf)
    p = F.softmax(z)  # (B, V)
    u = rng.random((len(p), 1))  # (B, 1)
    ids = np.sum(np.cumsum(p, axis=-1) <= u, axis=-1)  # (B,)
    return np.minimum(ids, p.shape[-1] - 1)
    ### END SOLUTION


class Sample(NamedTuple):
    """Generated text and the router's choice for each generated character.

    Attributes
    ----------
    text : str
        The prompt followed by the generated characters.
    ids : int ndarray of shape (n_chars,)
        The generated ids (prompt excluded).
    experts : int ndarray of shape (n_chars, L, k), or None
        For generated character i and layer l, the expert ids (top-k) or the
        leaf id (tree, k = 1) that processed the position that predicted it.
        None for a dense model or when not recorded.
    """

    text: str
    ids: np.ndarray
    experts: np.ndarray | None


def generate(model, vocab, prompt: str, n_chars: int, *, temperature: float = 0.8, top_k: int | None = None,
             rng, record_choices: bool = True) -> Sample:
    """Continue ``prompt`` by ``n_chars`` characters, one at a time, in evaluation mode.

    Each step runs the model on the last ``config.context`` characters and
    samples the next one with :func:`sample_next`. There is no key-value
    cache: generation repeats the whole window's forward pass per character,
    which keeps the model code short at a cost that is small for short samples.

    Parameters
    ----------
    model : TinyLM
    vocab : CharVocab
    prompt : str
        At least one character; characters outside the vocabulary become the unknown id.
    n_chars : int
        Characters to generate.
    temperature, top_k
        See :func:`sample_next`.
    rng : Generator or int
    record_choices : bool
        Keep each layer's routing of the last position (see :class:`Sample`).

    Returns
    -------
    Sample
    """
    if not isinstance(prompt, str) or not prompt:
        raise ValueError(f"prompt must be a non-empty str, got {prompt!r}")
    n_chars = check_positive_int(n_chars, "n_chars")
    rng = as_generator(rng)
    context = model.config.context
    ids = list(vocab.encode(prompt))
    generated, experts = [], []
    was_training = model.training
    model.eval()
    try:
        for _ in range(n_chars):
            window = np.array(ids[-context:], dtype=np.int64)[None, :]  # (1, T)
            logits = model.forward(window)[:, -1, :]  # (1, V)
            next_id = int(sample_next(logits, temperature=temperature, top_k=top_k, rng=rng)[0])
            routing = model.routing() if record_choices else None
            if routing is not None:
                experts.append(np.stack([index[-1] for index in routing]))  # (L, k)
            generated.append(next_id)
            ids.append(next_id)
    finally:
        model.train(was_training)
    generated = np.array(generated, dtype=np.int64)
    return Sample(prompt + vocab.decode(generated), generated, np.stack(experts) if experts else None)


__all__ = ["Sample", "generate", "sample_next"]
