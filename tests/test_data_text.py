"""Text corpus, character vocabulary, split and windows."""

import numpy as np
import pytest

from tinycond.data.text import (
    CHAR_CLASSES,
    UNKNOWN_CHAR,
    CharVocab,
    build_corpus,
    default_text,
    eval_windows,
    load_text,
    min_text_chars,
    sample_windows,
    split_blocks,
)

pytestmark = pytest.mark.lesson6

SAMPLE = "The quick brown fox, 42 times.\n" * 40


def test_default_text_is_long_prose():
    text = default_text()
    assert len(text) > 100_000, f"bundled corpus has only {len(text)} characters"
    letters = sum(c.isalpha() for c in text[:10_000])
    assert letters > 5_000, f"only {letters} of the first 10000 characters are letters"


def test_load_text_default_matches_bundled():
    assert load_text() == default_text()


def test_load_text_reads_utf8(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("héllo wörld ∑", encoding="utf-8")
    assert load_text(path) == "héllo wörld ∑"


def test_load_text_missing_file(tmp_path):
    path = tmp_path / "nope.txt"
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        load_text(path)


def test_load_text_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="is a folder"):
        load_text(tmp_path)


def test_load_text_empty_file(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match="empty.txt.*is empty"):
        load_text(path)


@pytest.mark.parametrize("content", [b"abc\x00def", b"\xff\xfe\x89PNG not text"])
def test_load_text_binary_file(tmp_path, content):
    path = tmp_path / "blob.bin"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="blob.bin"):
        load_text(path)


def test_load_text_too_short(tmp_path):
    path = tmp_path / "short.txt"
    path.write_text("tiny", encoding="utf-8")
    with pytest.raises(ValueError, match="short.txt.*4 characters.*minimum of 100"):
        load_text(path, min_chars=100)


def test_vocab_round_trip():
    vocab = CharVocab.from_text(SAMPLE)
    ids = vocab.encode(SAMPLE)
    assert vocab.decode(ids) == SAMPLE


def test_vocab_unknown_id():
    vocab = CharVocab.from_text("abc")
    ids = vocab.encode("abz")
    assert ids.tolist() == [1, 2, 0], f"expected [1, 2, 0], got {ids.tolist()}"
    assert vocab.decode(ids) == "ab" + UNKNOWN_CHAR


def test_vocab_size_counts_unknown():
    vocab = CharVocab.from_text("hello")
    assert vocab.size == 5, f"4 distinct characters plus unknown should give 5, got {vocab.size}"


def test_vocab_char_classes():
    vocab = CharVocab.from_text("a1 .\n")
    classes = vocab.char_classes()
    got = {char: CHAR_CLASSES[classes[vocab.encode(char)[0]]] for char in "a1 .\n"}
    assert got == {"a": "letter", "1": "digit", " ": "space", ".": "punctuation", "\n": "space"}, got


def test_vocab_decode_rejects_out_of_range():
    vocab = CharVocab.from_text("abc")
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        vocab.decode(np.array([5]))


def test_corpus_split_is_deterministic():
    first = build_corpus(SAMPLE, context=16)
    second = build_corpus(SAMPLE, context=16)
    assert np.array_equal(first.train, second.train)
    assert np.array_equal(first.val, second.val)


def test_corpus_split_sizes():
    corpus = build_corpus(SAMPLE, context=16, val_fraction=0.25)
    total = len(SAMPLE)
    assert corpus.train.size + corpus.val.size == total, f"{corpus.train.size} + {corpus.val.size} != {total}"
    assert abs(corpus.val.size - 0.25 * total) <= 1, f"validation has {corpus.val.size} of {total} characters"


@pytest.mark.parametrize("n_chars, val_fraction", [(100_000, 0.1), (1_000, 0.1), (50_000, 0.3), (10, 0.5)])
def test_split_blocks_tile_the_text(n_chars, val_fraction):
    blocks = split_blocks(n_chars, val_fraction)
    starts = [a for a, _, _ in blocks]
    stops = [b for _, b, _ in blocks]
    assert starts[0] == 0, f"first block starts at {starts[0]}"
    assert stops[-1] == n_chars, f"last block stops at {stops[-1]}, expected {n_chars}"
    assert starts[1:] == stops[:-1], "blocks must be contiguous and not overlap"
    val_chars = sum(b - a for a, b, is_val in blocks if is_val)
    block = max(b - a for a, b, _ in blocks)
    assert abs(val_chars - val_fraction * n_chars) <= block, f"{val_chars} validation characters of {n_chars}"


def test_split_blocks_spread_validation():
    blocks = split_blocks(400_000, 0.1)
    val_starts = [a for a, _, is_val in blocks if is_val]
    assert len(val_starts) >= 9, f"only {len(val_starts)} validation blocks"
    assert val_starts[0] < 50_000, f"first validation block starts at {val_starts[0]}; validation should span the text"


def test_corpus_vocab_from_training_part():
    text = "ab" * 400 + "z" * 50  # validation is the last 85 characters
    corpus = build_corpus(text, context=8, val_fraction=0.1)
    assert "z" not in corpus.vocab.chars, f"vocabulary {corpus.vocab.chars!r} includes a validation-only character"
    assert np.all(corpus.val[-50:] == 0), "validation-only characters should encode to the unknown id"


def test_corpus_too_short_names_minimum():
    needed = min_text_chars(32, 0.1)
    with pytest.raises(ValueError, match=f"minimum of {needed}"):
        build_corpus("x" * (needed - 1), context=32)


def test_corpus_minimum_is_enough():
    corpus = build_corpus("xy" * min_text_chars(32, 0.1), context=32)
    assert corpus.val.size >= 33, f"validation part has {corpus.val.size} characters, needs 33"


def test_windows_are_shifted_by_one():
    ids = np.arange(1000)
    x, y = sample_windows(ids, 8, 16, rng=0)
    assert x.shape == (8, 16), f"x has shape {x.shape}"
    assert np.array_equal(y, x + 1), "targets must be the inputs shifted by one position"
    assert np.all(np.diff(x, axis=1) == 1), "each window must be a contiguous slice"


def test_windows_stay_in_range():
    ids = np.arange(20)
    x, y = sample_windows(ids, 500, 19, rng=0)
    assert x.min() == 0, f"smallest input id {x.min()}, expected 0"
    assert y.max() == 19, f"largest target id {y.max()}, expected 19"


def test_windows_same_seed_same_batch():
    ids = np.arange(1000)
    first = sample_windows(ids, 4, 8, rng=np.random.default_rng(3))
    second = sample_windows(ids, 4, 8, rng=np.random.default_rng(3))
    assert np.array_equal(first[0], second[0])


def test_windows_reject_short_ids():
    with pytest.raises(ValueError, match="context \\+ 1 = 11"):
        sample_windows(np.arange(10), 2, 10, rng=0)


def test_eval_windows_cover_text_in_order():
    x, y = eval_windows(np.arange(101), 10)
    assert x.shape == (10, 10), f"expected 10 windows of 10, got {x.shape}"
    assert np.array_equal(x.reshape(-1), np.arange(100))
    assert np.array_equal(y.reshape(-1), np.arange(1, 101))


def test_eval_windows_max_windows():
    x, _ = eval_windows(np.arange(1001), 10, max_windows=7)
    assert x.shape == (7, 10), f"expected 7 windows, got {x.shape}"
    assert x[0, 0] == 0, f"first window starts at {x[0, 0]}"
    assert x[-1, 0] == 990, f"last window starts at {x[-1, 0]}, expected 990"
