"""Linear, MLP, layer norm and embedding pairs: gradients and shapes."""

import numpy as np
import pytest

from tinycond import layers as L
from tinycond.gradcheck import check_function

pytestmark = pytest.mark.lesson1


def _relu_signs(out, cache):
    return cache.activation.positive if hasattr(cache.activation, "positive") else np.zeros(0)


@pytest.mark.ex1_2
@pytest.mark.parametrize("x_shape", [(5, 3), (2, 4, 3)])
def test_linear_gradient(x_shape):
    rng = np.random.default_rng(0)
    report = check_function(L.linear_forward, L.linear_backward, rng.standard_normal(x_shape), rng.standard_normal((3, 4)), rng.standard_normal(4))
    assert report.max_rel_error <= 1e-7, str(report)


@pytest.mark.ex1_2
@pytest.mark.parametrize("x_shape", [(5, 3), (2, 5, 3)], ids=["shared x", "per-expert x"])
def test_linear_stacked_gradient(x_shape):
    rng = np.random.default_rng(1)
    report = check_function(L.linear_forward, L.linear_backward, rng.standard_normal(x_shape), rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 4)))
    assert report.max_rel_error <= 1e-7, str(report)


def test_linear_stacked_equals_loop():
    rng = np.random.default_rng(2)
    x, W, b = rng.standard_normal((5, 3)), rng.standard_normal((4, 3, 2)), rng.standard_normal((4, 2))
    y, _ = L.linear_forward(x, W, b)
    for e in range(4):
        np.testing.assert_allclose(y[e], x @ W[e] + b[e], rtol=1e-13, err_msg=f"expert {e} differs from its own matmul")


@pytest.mark.ex1_6
@pytest.mark.parametrize("activation", ["relu", "gelu", "sigmoid"])
@pytest.mark.parametrize("stacked", [False, True])
def test_mlp_gradient(activation, stacked):
    rng = np.random.default_rng(3)
    E = (2,) if stacked else ()
    args = (
        rng.standard_normal((6, 3)),
        rng.standard_normal(E + (3, 5)),
        rng.standard_normal(E + (5,)),
        rng.standard_normal(E + (5, 2)),
        rng.standard_normal(E + (2,)),
    )
    report = check_function(L.mlp_forward, L.mlp_backward, *args, forward_kwargs={"activation": activation}, choices=_relu_signs)
    assert report.max_rel_error <= 1e-7, str(report)
    assert all(t.n_checked > 0 for t in report.tensors), str(report)


@pytest.mark.ex1_5
@pytest.mark.parametrize("shape", [(4, 6), (2, 3, 5)])
def test_layer_norm_gradient(shape):
    rng = np.random.default_rng(4)
    d = shape[-1]
    report = check_function(L.layer_norm_forward, L.layer_norm_backward, rng.standard_normal(shape) * 3 + 1, rng.standard_normal(d), rng.standard_normal(d))
    assert report.max_rel_error <= 1e-7, str(report)


def test_layer_norm_normalises():
    rng = np.random.default_rng(5)
    y, _ = L.layer_norm_forward(rng.standard_normal((3, 8)) * 5 + 2, np.ones(8), np.zeros(8))
    np.testing.assert_allclose(y.mean(axis=-1), 0.0, atol=1e-12)
    np.testing.assert_allclose(y.var(axis=-1), 1.0, rtol=1e-5)


@pytest.mark.ex1_6
def test_embedding_gradient_repeated_ids():
    rng = np.random.default_rng(6)
    ids = np.array([[0, 2, 2], [1, 2, 0]])
    report = check_function(L.embedding_forward, L.embedding_backward, ids, rng.standard_normal((4, 3)))
    assert report.max_rel_error <= 1e-7, str(report)


@pytest.mark.ex1_6
def test_embedding_unused_row_zero():
    dW = L.embedding_backward(np.ones((2, 3)), L.EmbeddingCache(np.array([0, 0]), 3))
    np.testing.assert_array_equal(dW[0], [2.0, 2.0, 2.0], err_msg="a repeated id accumulates both gradients")
    np.testing.assert_array_equal(dW[1:], 0.0, err_msg="unused rows get zero gradient")
