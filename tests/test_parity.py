"""Graves's parity task: shapes, values, targets, reproducibility and bad input."""

import numpy as np
import pytest

from tinycond.data.parity import parity

pytestmark = pytest.mark.lesson5


@pytest.mark.parametrize("size", [1, 8, 16])
def test_parity_shapes_and_values(size):
    x, y = parity(500, size=size, rng=0)
    assert x.shape == (500, size), f"x has shape {x.shape}, expected (500, {size})"
    assert x.dtype == np.float64, f"x has dtype {x.dtype}, expected float64"
    assert y.shape == (500,), f"y has shape {y.shape}, expected (500,)"
    assert y.dtype.kind == "i", f"y has dtype {y.dtype}, expected an integer dtype"
    assert set(np.unique(x).tolist()) <= {-1.0, 0.0, 1.0}, f"x has values {np.unique(x)}"


def test_parity_target_counts_plus_ones():
    x, y = parity(1000, size=8, rng=1)
    for row, target in zip(x, y):
        plus_ones = sum(1 for value in row if value == 1.0)
        assert target == plus_ones % 2, f"input {row} has {plus_ones} entries of +1 but target {target}"


def test_parity_nonzero_count_covers_range():
    x, _ = parity(5000, size=8, rng=2)
    counts = np.count_nonzero(x, axis=1)
    assert counts.min() == 1, f"the fewest non-zero entries is {counts.min()}, expected 1"
    assert counts.max() == 8, f"the most non-zero entries is {counts.max()}, expected 8"
    assert len(np.unique(counts)) == 8, f"non-zero counts seen: {np.unique(counts)}"


def test_parity_positions_and_signs_vary():
    x, y = parity(5000, size=8, rng=3)
    used = np.count_nonzero(x, axis=0)
    assert used.min() > 0.4 * used.max(), f"non-zero entries per position are uneven: {used}"
    plus = np.count_nonzero(x > 0) / np.count_nonzero(x)
    assert 0.45 < plus < 0.55, f"fraction of +1 among non-zero entries is {plus:.3f}, expected about 0.5"
    assert 0.45 < y.mean() < 0.55, f"fraction of odd targets is {y.mean():.3f}, expected about 0.5"


def test_parity_same_seed_same_data():
    first = parity(50, size=8, rng=7)
    second = parity(50, size=8, rng=np.random.default_rng(7))
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])


@pytest.mark.parametrize(
    "arguments, error, words",
    [
        pytest.param({"n": 0, "size": 8, "rng": 0}, ValueError, ["n", "0"], id="no-samples"),
        pytest.param({"n": 10, "size": 0, "rng": 0}, ValueError, ["size", "0"], id="empty-vector"),
        pytest.param({"n": 10, "size": 8.0, "rng": 0}, TypeError, ["size", "8.0"], id="float-size"),
        pytest.param({"n": 10, "size": 8, "rng": None}, TypeError, ["rng", "None"], id="missing-rng"),
    ],
)
def test_parity_rejects_bad_arguments(arguments, error, words):
    n = arguments.pop("n")
    with pytest.raises(error) as caught:
        parity(n, **arguments)
    for word in words:
        assert word in str(caught.value), f"message {str(caught.value)!r} does not mention {word!r}"
