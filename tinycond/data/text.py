r"""Character-level text data: the bundled corpus, a vocabulary and random windows.

The default corpus is the Python Language Reference text that ships inside
every CPython as ``pydoc_data.topics`` (about 460 KB of English prose and
code), so nothing is downloaded. Any UTF-8 text file can replace it. Its exact
content changes between Python versions, so nothing here depends on it.

The pipeline is::

    text = load_text(path)                      # str
    corpus = build_corpus(text, context=64)     # vocabulary + train/validation ids
    x, y = sample_windows(corpus.train, 32, 64, rng=rng)   # (B, T) inputs and next-character targets
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np

from tinycond._checks import as_generator, check_positive_float, check_positive_int

# Character classes for the routing figures. "punctuation" covers every
# character that is not a letter, a digit or whitespace (symbols included).
CHAR_CLASSES = ("letter", "digit", "space", "punctuation")

UNKNOWN_CHAR = "\ufffd"  # what the unknown id decodes to: the Unicode replacement character


def default_text() -> str:
    """Return the Python Language Reference text bundled with CPython (``pydoc_data.topics``).

    The topics are joined in sorted key order with a blank line between them,
    so the text is the same on every run of one Python version.
    """
    from pydoc_data.topics import topics

    return "\n\n".join(topics[key].strip("\n") for key in sorted(topics))


def load_text(path=None, *, min_chars: int = 1) -> str:
    """Read a UTF-8 text file, or return the bundled corpus when ``path`` is None.

    Parameters
    ----------
    path : str or Path, optional
        A UTF-8 text file. ``None`` selects :func:`default_text`.
    min_chars : int
        Minimum number of characters accepted.

    Returns
    -------
    text : str

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist or is a folder.
    ValueError
        If the file is empty, binary (contains NUL bytes or is not valid
        UTF-8) or shorter than ``min_chars`` characters.
    """
    min_chars = check_positive_int(min_chars, "min_chars")
    if path is None:
        text, where = default_text(), "the bundled corpus (pydoc_data.topics)"
    else:
        file = Path(path)
        if not file.is_file():
            reason = "is a folder" if file.is_dir() else "does not exist"
            raise FileNotFoundError(f"text file {str(file)!r} {reason}; pass the path of a UTF-8 text file")
        raw = file.read_bytes()
        if not raw:
            raise ValueError(f"text file {str(file)!r} is empty; it needs at least {min_chars} characters of UTF-8 text")
        if b"\x00" in raw:
            raise ValueError(f"text file {str(file)!r} looks binary (it contains NUL bytes); pass a UTF-8 text file")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise ValueError(
                f"text file {str(file)!r} is not valid UTF-8 (byte {error.start}: {error.reason}); "
                f"pass a UTF-8 text file"
            ) from None
        where = f"text file {str(file)!r}"
    if len(text) < min_chars:
        raise ValueError(f"{where} has {len(text)} characters, fewer than the minimum of {min_chars}; pass a longer text")
    return text


def _code_points(text: str) -> np.ndarray:
    """Return the Unicode code points of ``text`` as an int64 array, without a Python loop."""
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)


class CharVocab:
    """Character vocabulary with an unknown-character id.

    Id 0 is the unknown character; ids 1, 2, ... are the distinct characters
    of the text it was built from, in code-point order. A character outside
    the vocabulary (for example one that occurs only in the validation text)
    encodes to 0 and decodes to ``UNKNOWN_CHAR``.

    Parameters
    ----------
    chars : str
        The known characters; duplicates are removed and the rest sorted.
    """

    unknown_id = 0

    def __init__(self, chars: str):
        if not isinstance(chars, str):
            raise TypeError(f"chars must be a str, got {type(chars).__name__}")
        self.code_points = np.unique(_code_points(chars))  # (V - 1,) sorted
        self.chars = "".join(chr(c) for c in self.code_points)

    @classmethod
    def from_text(cls, text: str) -> "CharVocab":
        """Build the vocabulary of every distinct character in ``text``."""
        return cls(text)

    @property
    def size(self) -> int:
        """Number of ids V, the unknown id included."""
        return len(self.chars) + 1

    def __len__(self) -> int:
        return self.size

    def __eq__(self, other) -> bool:
        return isinstance(other, CharVocab) and self.chars == other.chars

    def encode(self, text: str) -> np.ndarray:
        """Return the ids of ``text``, shape ``(len(text),)``; unknown characters get id 0."""
        points = _code_points(text)
        if self.code_points.size == 0:
            return np.zeros(points.size, dtype=np.int64)
        position = np.searchsorted(self.code_points, points)  # (n,)
        position = np.minimum(position, len(self.code_points) - 1)
        known = self.code_points[position] == points
        return np.where(known, position + 1, self.unknown_id).astype(np.int64)

    def decode(self, ids) -> str:
        """Return the text of an integer id array; id 0 becomes ``UNKNOWN_CHAR``."""
        ids = np.asarray(ids)
        if ids.dtype.kind not in "iu":
            raise TypeError(f"ids must be an integer array, got dtype {ids.dtype}")
        if ids.size and (ids.min() < 0 or ids.max() >= self.size):
            raise ValueError(f"ids must be in [0, {self.size}), got values from {ids.min()} to {ids.max()}")
        table = UNKNOWN_CHAR + self.chars
        return "".join(table[i] for i in ids.reshape(-1))

    def char_classes(self) -> np.ndarray:
        """Return the index into ``CHAR_CLASSES`` of every id, shape ``(V,)``.

        The unknown id counts as punctuation.
        """
        classes = np.full(self.size, CHAR_CLASSES.index("punctuation"), dtype=np.int64)
        for i, char in enumerate(self.chars, start=1):
            if char.isalpha():
                classes[i] = CHAR_CLASSES.index("letter")
            elif char.isdigit():
                classes[i] = CHAR_CLASSES.index("digit")
            elif char.isspace():
                classes[i] = CHAR_CLASSES.index("space")
        return classes


class TextCorpus(NamedTuple):
    """Encoded text ready for training.

    Attributes
    ----------
    vocab : CharVocab
        Built from the training part only.
    train : int ndarray of shape (n_train,)
    val : int ndarray of shape (n_val,)
    """

    vocab: CharVocab
    train: np.ndarray
    val: np.ndarray


VAL_BLOCK_CHARS = 4096  # length of the blocks the split deals out; see build_corpus


def min_text_chars(context: int, val_fraction: float) -> int:
    """Return the minimum number of characters a text needs so that each part fits one window.

    A window of ``context`` inputs needs ``context + 1`` characters (the
    targets are shifted by one). The bound adds one block's rounding to
    ``(context + 1) / share``, where share is the smaller part's fraction.
    """
    context = check_positive_int(context, "context")
    val_fraction = check_positive_float(val_fraction, "val_fraction")
    share = min(val_fraction, 1.0 - val_fraction)
    return int(np.ceil((context + 1) / share + 1.0 / share)) + 1


def split_blocks(n_chars: int, val_fraction: float):
    """Return the ``(start, stop, is_val)`` character ranges of the deterministic split.

    The text is cut into ``max(ceil(1 / val_fraction), n_chars // VAL_BLOCK_CHARS)``
    nearly equal blocks, and block i validates when
    ``floor((i + 1) f) > floor(i f)``, so every ``1 / f``-th block validates
    and the validation blocks are spread over the whole text.
    """
    n_blocks = max(int(np.ceil(1.0 / val_fraction)), n_chars // VAL_BLOCK_CHARS)
    bounds = np.round(np.linspace(0, n_chars, n_blocks + 1)).astype(int)
    index = np.arange(n_blocks)
    is_val = np.floor((index + 1) * val_fraction + 1e-9) > np.floor(index * val_fraction + 1e-9)
    return [(int(a), int(b), bool(v)) for a, b, v in zip(bounds[:-1], bounds[1:], is_val)]


def build_corpus(text: str, *, context: int, val_fraction: float = 0.1) -> TextCorpus:
    """Split ``text`` into training and validation parts and encode both.

    The split is deterministic and interleaved: the text is cut into blocks
    of about ``VAL_BLOCK_CHARS`` characters (at least ``1 / val_fraction``
    blocks) and every ``1 / val_fraction``-th block validates
    (:func:`split_blocks`). A plain "last 10%" split would validate on a few
    topics only, because the bundled corpus is sorted by topic name. The
    blocks of each part are joined, so a window that crosses a seam (about
    ``context / VAL_BLOCK_CHARS`` of them) spans two distant places of the
    text. The vocabulary comes from the training part, so a character seen
    only in validation is unknown.

    Parameters
    ----------
    text : str
    context : int
        Window length T the model will see; each part must hold ``T + 1`` characters.
    val_fraction : float
        Share of the text kept for validation, in (0, 1).

    Returns
    -------
    TextCorpus
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    val_fraction = check_positive_float(val_fraction, "val_fraction")
    if val_fraction >= 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    needed = min_text_chars(context, val_fraction)
    if len(text) < needed:
        raise ValueError(
            f"text has {len(text)} characters, fewer than the minimum of {needed} for context {context} "
            f"and val_fraction {val_fraction}: each part needs at least {context + 1} characters"
        )
    blocks = split_blocks(len(text), val_fraction)
    train_text = "".join(text[a:b] for a, b, is_val in blocks if not is_val)
    val_text = "".join(text[a:b] for a, b, is_val in blocks if is_val)
    vocab = CharVocab.from_text(train_text)
    return TextCorpus(vocab, vocab.encode(train_text), vocab.encode(val_text))


def sample_windows(ids, batch_size: int, context: int, *, rng):
    """Draw ``batch_size`` random windows of ``context`` characters and their next characters.

    Parameters
    ----------
    ids : int ndarray of shape (n,)
    batch_size : int
        Number of windows B.
    context : int
        Window length T.
    rng : Generator or int

    Returns
    -------
    x : int ndarray of shape (B, T)
        ``ids[s : s + T]`` for uniformly random starts ``s``.
    y : int ndarray of shape (B, T)
        ``ids[s + 1 : s + T + 1]``, the character after each input.
    """
    ids = np.asarray(ids)
    batch_size = check_positive_int(batch_size, "batch_size")
    context = check_positive_int(context, "context")
    rng = as_generator(rng)
    if ids.ndim != 1 or ids.dtype.kind not in "iu":
        raise TypeError(f"ids must be a 1-D integer array, got shape {ids.shape} and dtype {ids.dtype}")
    if ids.size < context + 1:
        raise ValueError(f"ids has {ids.size} entries, fewer than context + 1 = {context + 1}")
    starts = rng.integers(0, ids.size - context, size=batch_size)  # (B,)
    index = starts[:, None] + np.arange(context)  # (B, T)
    return ids[index], ids[index + 1]


def eval_windows(ids, context: int, *, max_windows=None):
    """Cut ``ids`` into consecutive non-overlapping windows for evaluation.

    Parameters
    ----------
    ids : int ndarray of shape (n,)
    context : int
        Window length T.
    max_windows : int, optional
        Keep at most this many windows, spread evenly over the text.

    Returns
    -------
    x, y : int ndarrays of shape (n_windows, T)
    """
    ids = np.asarray(ids)
    context = check_positive_int(context, "context")
    n_windows = (ids.size - 1) // context
    if n_windows < 1:
        raise ValueError(f"ids has {ids.size} entries, fewer than context + 1 = {context + 1}")
    starts = np.arange(n_windows) * context  # (n_windows,)
    if max_windows is not None and n_windows > check_positive_int(max_windows, "max_windows"):
        starts = starts[np.linspace(0, n_windows - 1, max_windows).round().astype(int)]
    index = starts[:, None] + np.arange(context)  # (n_windows, T)
    return ids[index], ids[index + 1]


__all__ = [
    "CHAR_CLASSES",
    "UNKNOWN_CHAR",
    "CharVocab",
    "TextCorpus",
    "build_corpus",
    "default_text",
    "eval_windows",
    "load_text",
    "min_text_chars",
    "sample_windows",
    "split_blocks",
]
