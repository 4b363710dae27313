"""The gradient checker passes correct backward passes and catches wrong ones."""

import re

import numpy as np
import pytest

from tinycond import functional as F
from tinycond import layers as L
from tinycond.gradcheck import (
    GradientCheckError,
    check_function,
    check_gradients,
    numerical_gradient,
    relative_error,
)

pytestmark = pytest.mark.lesson1


def _linear_data(seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((4, 3)), rng.standard_normal((3, 5)), rng.standard_normal(5)


def _sign_error(dy, cache):
    dx, dW, db = L.linear_backward(dy, cache)
    return dx, -dW, db


def _missing_term(dy, cache):
    # A layer-norm backward that leaves out the term through the variance.
    x_hat, inv_std, gamma = cache
    g = dy * gamma
    dx = inv_std * (g - g.mean(axis=-1, keepdims=True))
    d = x_hat.shape[-1]
    return dx, (dy * x_hat).reshape(-1, d).sum(0), dy.reshape(-1, d).sum(0)


def _transposed(dy, cache):
    # Square weights so the transposed gradient still has the right shape.
    x, W = cache
    return dy @ W, x.T @ dy, dy.sum(axis=0)


def _factor_two(dy, cache):
    dx, dW, db = L.linear_backward(dy, cache)
    return dx, dW, 2 * db


@pytest.mark.ex1_1
def test_numerical_gradient_matches_quadratic():
    rng = np.random.default_rng(1)
    A = rng.standard_normal((3, 3))
    x = rng.standard_normal(3)
    numeric = numerical_gradient(lambda v: float(v @ A @ v), x, h=1e-5)
    exact = (A + A.T) @ x
    assert np.max(np.abs(numeric - exact)) < 1e-8, f"central difference off by {np.max(np.abs(numeric - exact)):.2e}"


@pytest.mark.ex1_1
def test_numerical_gradient_leaves_input_unchanged():
    x = np.array([1.0, -2.0, 3.0])
    numerical_gradient(lambda v: float(np.sum(v**3)), x)
    assert np.array_equal(x, [1.0, -2.0, 3.0]), "numerical_gradient modified its input"


def test_check_passes_correct_linear():
    report = check_function(L.linear_forward, L.linear_backward, *_linear_data())
    assert report.max_rel_error < 1e-7, str(report)
    assert [t.name for t in report.tensors] == ["x", "W", "b"], "tensors are named after the forward arguments"


@pytest.mark.parametrize(
    "backward, forward, make_inputs",
    [
        (_sign_error, L.linear_forward, _linear_data),
        (_factor_two, L.linear_forward, _linear_data),
        (
            _transposed,
            L.linear_forward,
            lambda: (np.random.default_rng(2).standard_normal((4, 3)), np.random.default_rng(3).standard_normal((3, 3)), np.zeros(3)),
        ),
        (
            _missing_term,
            L.layer_norm_forward,
            lambda: (np.random.default_rng(4).standard_normal((3, 6)), np.random.default_rng(5).standard_normal(6), np.zeros(6)),
        ),
    ],
    ids=["sign error", "factor of 2", "transposed matrix", "missing term"],
)
def test_check_catches_wrong_backward(backward, forward, make_inputs):
    with pytest.raises(GradientCheckError):
        check_function(forward, backward, *make_inputs())


def test_failure_report_names_tensor_index_values():
    with pytest.raises(GradientCheckError) as info:
        check_function(L.linear_forward, _factor_two, *_linear_data(), name="linear")
    message = str(info.value)
    assert "gradient check of linear failed" in message, message
    assert re.search(r"b\[\d\]: analytic -?\d\.\d+e[+-]\d+, numeric -?\d\.\d+e[+-]\d+, relative error \d\.\d+e[+-]\d+", message), message
    assert "W[" not in message, "only the wrong tensor should be reported"


def test_zero_gradient_passes_on_roundoff():
    # A parameter with no effect has gradient exactly 0; the numeric value is round-off.
    rng = np.random.default_rng(6)
    x = rng.standard_normal(50) * 100.0
    unused = rng.standard_normal(3)
    report = check_gradients(lambda: float(np.sum(x**2)), {"x": x, "unused": unused}, {"x": 2 * x, "unused": np.zeros(3)})
    assert report["unused"].max_rel_error <= 1e-7, str(report)


def test_wrong_small_gradient_still_fails():
    # The whole true gradient is 2e-6 * x, far below 1; a backward that returns 0 must fail.
    rng = np.random.default_rng(7)
    x = rng.standard_normal(5)
    with pytest.raises(GradientCheckError):
        check_gradients(lambda: float(1e-6 * np.sum(x**2) + 1.0), {"x": x}, {"x": np.zeros(5)})


def test_correct_small_gradient_passes():
    rng = np.random.default_rng(7)
    x = rng.standard_normal(5)
    report = check_gradients(lambda: float(1e-6 * np.sum(x**2) + 1.0), {"x": x}, {"x": 2e-6 * x})
    assert report.max_rel_error <= 1e-7, str(report)


def test_relative_error_floor():
    assert relative_error(0.0, 0.0) == 0.0, "two exact zeros have relative error 0"
    assert relative_error(1.0, -1.0) == pytest.approx(1.0), "opposite signs give the maximum relative error"
    assert relative_error(0.0, 1e-12, floor=1e-3) == pytest.approx(1e-9), "the floor bounds the denominator from below"


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_low_precision_rejected(dtype):
    x = np.ones(3, dtype=dtype)
    with pytest.raises(TypeError, match="float64"):
        check_gradients(lambda: float(np.sum(x)), {"x": x}, {"x": np.ones(3, dtype=dtype)})


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_input_rejected(bad):
    x = np.array([1.0, bad])
    with pytest.raises(ValueError, match="NaN or infinite"):
        check_gradients(lambda: float(np.sum(x)), {"x": x}, {"x": np.ones(2)})


def test_gradient_shape_mismatch_rejected():
    x = np.ones(3)
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        check_gradients(lambda: float(np.sum(x)), {"x": x}, {"x": np.ones(4)})


def test_backward_count_mismatch_rejected():
    with pytest.raises(ValueError, match="expected 3"):
        check_function(L.linear_forward, lambda dy, cache: L.linear_backward(dy, cache)[:2], *_linear_data())


def test_relu_kink_is_skipped_not_failed():
    x = np.array([0.5, -0.7, 2e-5, 1.3])
    report = check_function(F.relu_forward, F.relu_backward, x, choices=lambda out, cache: cache.positive)
    assert report["x"].skipped == [(2,)], f"entry 2 sits within 2h of the kink, got skipped {report['x'].skipped}"
    assert report["x"].n_checked == 3, str(report)


def test_relu_kink_without_guard_fails():
    x = np.array([0.5, -0.7, 2e-5, 1.3])
    with pytest.raises(GradientCheckError, match=r"x\[2\]"):
        check_function(F.relu_forward, F.relu_backward, x)


def test_mostly_skipped_check_fails():
    x = np.array([1e-5, -2e-5, 3e-5, 0.9])
    with pytest.raises(GradientCheckError, match="proves nothing"):
        check_function(F.relu_forward, F.relu_backward, x, choices=lambda out, cache: cache.positive)


def test_large_tensor_sampled_with_direction():
    rng = np.random.default_rng(8)
    x, W, b = rng.standard_normal((20, 30)), rng.standard_normal((30, 40)), rng.standard_normal(40)
    report = check_function(L.linear_forward, L.linear_backward, x, W, b, max_entries=50)
    assert report["W"].n_checked == 50, "a sampled tensor checks max_entries entries"
    assert report["W"].direction_rel_error is not None, "a sampled tensor gets a random-direction check"
    assert report["W"].direction_rel_error < 1e-7, str(report)


def test_direction_check_catches_unsampled_error():
    # Only one entry of W is wrong; the sample may miss it but the direction check must not.
    rng = np.random.default_rng(9)
    x, W, b = rng.standard_normal((20, 30)), rng.standard_normal((30, 40)), rng.standard_normal(40)

    def one_wrong_entry(dy, cache):
        dx, dW, db = L.linear_backward(dy, cache)
        dW = dW.copy()
        dW[0, 0] += 1.0
        return dx, dW, db

    with pytest.raises(GradientCheckError, match="random direction"):
        check_function(L.linear_forward, one_wrong_entry, x, W, b, max_entries=5, rng=10)


def test_checker_restores_inputs():
    x, W, b = _linear_data()
    before = [a.copy() for a in (x, W, b)]
    check_function(L.linear_forward, L.linear_backward, x, W, b)
    for name, a, original in zip("xWb", (x, W, b), before):
        assert np.array_equal(a, original), f"{name} changed during the check"


@pytest.mark.parametrize("options, match", [({"h": 0.0}, "h must"), ({"tol": -1.0}, "tol must"), ({"stencil": 4}, "stencil must"), ({"max_entries": 0}, "max_entries")])
def test_bad_checker_options_rejected(options, match):
    x = np.ones(2)
    with pytest.raises(ValueError, match=match):
        check_gradients(lambda: float(np.sum(x)), {"x": x}, {"x": np.ones(2)}, **options)


def test_three_point_stencil_passes():
    report = check_function(L.linear_forward, L.linear_backward, *_linear_data(), stencil=3, h=1e-5)
    assert report.max_rel_error < 1e-7, str(report)
