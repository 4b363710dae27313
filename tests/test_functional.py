"""Activations, softmax family and losses: gradients, extreme inputs, no mutation."""

import numpy as np
import pytest

from tinycond import functional as F
from tinycond.gradcheck import check_function

pytestmark = pytest.mark.lesson1

PAIRS = {
    "relu": (F.relu_forward, F.relu_backward, pytest.mark.ex1_3),
    "sigmoid": (F.sigmoid_forward, F.sigmoid_backward, pytest.mark.ex1_3),
    "gelu": (F.gelu_forward, F.gelu_backward, pytest.mark.ex1_3),
    "softplus": (F.softplus_forward, F.softplus_backward, pytest.mark.lesson1),
    "softmax": (F.softmax_forward, F.softmax_backward, pytest.mark.ex1_4),
    "log_softmax": (F.log_softmax_forward, F.log_softmax_backward, pytest.mark.ex1_4),
}


def _away_from_zero(shape, seed):
    """Normal entries with |x| >= 0.05, so ReLU has no kink within the stencil."""
    x = np.random.default_rng(seed).standard_normal(shape)
    return np.where(np.abs(x) < 0.05, 0.5, x)


@pytest.mark.parametrize("name", [pytest.param(n, marks=m) for n, (_, _, m) in PAIRS.items()])
@pytest.mark.parametrize("shape", [(7,), (4, 6), (2, 3, 5)])
def test_pair_gradient(name, shape):
    forward, backward, _ = PAIRS[name]
    report = check_function(forward, backward, _away_from_zero(shape, 0), rng=1)
    assert report.max_rel_error <= 1e-7, str(report)
    assert report.tensors[0].n_checked == int(np.prod(shape)), "every entry must be checked"


@pytest.mark.parametrize("name", [pytest.param(n, marks=m) for n, (_, _, m) in PAIRS.items()])
def test_backward_leaves_inputs_unchanged(name):
    forward, backward, _ = PAIRS[name]
    x = _away_from_zero((3, 4), 2)
    out, cache = forward(x)
    dy = np.random.default_rng(3).standard_normal(out.shape)
    dy_before = dy.copy()
    cache_before = [np.copy(c) for c in cache]
    backward(dy, cache)
    assert np.array_equal(dy, dy_before), f"{name}_backward modified dy"
    for field, before, after in zip(cache._fields, cache_before, cache):
        assert np.array_equal(before, after), f"{name}_backward modified cache.{field}"


@pytest.mark.ex1_4
@pytest.mark.parametrize("scale", [1.0, 1e2, 1e4])
def test_cross_entropy_gradient(scale):
    rng = np.random.default_rng(4)
    logits = rng.standard_normal((6, 5)) * min(scale, 3.0)
    targets = rng.integers(0, 5, size=6)
    report = check_function(F.cross_entropy_forward, F.cross_entropy_backward, logits, targets)
    assert report.max_rel_error <= 1e-7, str(report)


@pytest.mark.ex1_4
def test_cross_entropy_gradient_3d():
    rng = np.random.default_rng(5)
    report = check_function(F.cross_entropy_forward, F.cross_entropy_backward, rng.standard_normal((2, 3, 4)), rng.integers(0, 4, size=(2, 3)))
    assert report.max_rel_error <= 1e-7, str(report)


def test_mse_gradient():
    rng = np.random.default_rng(6)
    report = check_function(F.mse_forward, F.mse_backward, rng.standard_normal((4, 2)), rng.standard_normal((4, 2)))
    assert report.max_rel_error <= 1e-7, str(report)


EXTREME = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4], [1e4, 1e4 - 1.0, 3.0]])


def test_softmax_extreme_logits():
    p = F.softmax(EXTREME)
    assert np.all(np.isfinite(p)), f"softmax overflowed: {p}"
    np.testing.assert_allclose(p.sum(axis=-1), 1.0, rtol=0, atol=1e-15)
    np.testing.assert_allclose(p[0], [1.0, 0.0, 0.0], atol=1e-300)
    np.testing.assert_allclose(p[1], [1 / 3] * 3, rtol=1e-15)
    np.testing.assert_allclose(p[2, :2], [1 / (1 + np.exp(-1.0)), np.exp(-1.0) / (1 + np.exp(-1.0))], rtol=1e-14)


def test_log_softmax_extreme_logits():
    out, _ = F.log_softmax_forward(EXTREME)
    assert np.all(np.isfinite(out)), f"log-softmax is not finite: {out}"
    assert out[0, 1] == pytest.approx(-2e4), "log p of a logit 2e4 below the max is -2e4"
    assert out[1, 0] == pytest.approx(-np.log(3.0)), "equal logits give log(1/3)"


def test_cross_entropy_extreme_logits():
    loss, cache = F.cross_entropy_forward(EXTREME, np.array([1, 0, 2]))
    expected = (2e4 + np.log(3.0) + (1e4 - 3.0 + np.log1p(np.exp(-1.0) + np.exp(3.0 - 1e4)))) / 3
    assert loss == pytest.approx(expected, rel=1e-12), f"loss {loss}, expected {expected}"
    dlogits = F.cross_entropy_backward(1.0, cache)
    assert np.all(np.isfinite(dlogits)), "cross-entropy gradient is not finite"


def test_sigmoid_softplus_extreme():
    x = np.array([-1e4, -50.0, 0.0, 50.0, 1e4])
    s = F.sigmoid(x)
    assert np.all(np.isfinite(s)), f"sigmoid is not finite: {s}"
    np.testing.assert_allclose(s, [0.0, np.exp(-50.0) / (1 + np.exp(-50.0)), 0.5, 1 / (1 + np.exp(-50.0)), 1.0], rtol=1e-15, atol=0)
    sp = F.softplus(x)
    np.testing.assert_allclose(sp, [0.0, np.log1p(np.exp(-50.0)), np.log(2.0), 50.0, 1e4], rtol=1e-15, atol=1e-300)


def test_gelu_extreme_and_values():
    out, _ = F.gelu_forward(np.array([-1e4, 0.0, 1.0, 1e4]))
    assert np.all(np.isfinite(out)), f"gelu is not finite: {out}"
    assert out[1] == 0.0, "gelu(0) is 0"
    assert out[3] == 1e4, "gelu(x) is x for large x"
    assert out[2] == pytest.approx(0.8411919906, rel=1e-9), "tanh-approximate gelu(1)"


def test_unknown_activation_rejected():
    with pytest.raises(ValueError, match=r"activation must be one of .*'relu'.*got 'swish'"):
        F.get_activation("swish")


@pytest.mark.parametrize(
    "targets, error, match",
    [
        (np.array([0, 5]), ValueError, r"\[0, 3\)"),
        (np.array([0.0, 1.0]), TypeError, "integer"),
        (np.array([0, 1, 2]), ValueError, "shape"),
    ],
)
def test_cross_entropy_bad_targets(targets, error, match):
    with pytest.raises(error, match=match):
        F.cross_entropy_forward(np.zeros((2, 3)), targets)
