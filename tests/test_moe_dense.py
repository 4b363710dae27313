"""Dense mixture of experts: gradients, gates, batched experts and bad input."""

import numpy as np
import pytest

from tinycond import layers as L
from tinycond.gradcheck import check_function, check_module
from tinycond.moe import DenseMoE, dense_moe_forward
from tinycond.moe.dense import dense_moe_backward, init_expert_weights

pytestmark = pytest.mark.lesson2


def _inputs(N=6, d_model=3, d_hidden=5, d_out=2, E=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, d_model))
    W_gate = rng.standard_normal((d_model, E))
    W1, b1, W2, b2 = init_expert_weights(E, d_model, d_hidden, d_out, rng)
    b1 = b1 + 0.1 * rng.standard_normal(b1.shape)
    b2 = b2 + 0.1 * rng.standard_normal(b2.shape)
    return x, W_gate, W1, b1, W2, b2


def _relu_signs(out, cache):
    return getattr(cache.experts.activation, "positive", np.zeros(0))


@pytest.mark.ex2_2
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_dense_moe_pair_gradient(activation):
    report = check_function(
        dense_moe_forward, dense_moe_backward, *_inputs(), forward_kwargs={"activation": activation}, choices=_relu_signs
    )
    assert report.max_rel_error <= 1e-7, str(report)
    assert [t.name for t in report.tensors] == ["x", "W_gate", "W1", "b1", "W2", "b2"]
    assert all(t.n_checked > 0 for t in report.tensors), str(report)


@pytest.mark.ex2_2
def test_dense_moe_module_gradient():
    module = DenseMoE(3, 6, 4, d_out=2, rng=0)
    report = check_module(module, np.random.default_rng(1).standard_normal((7, 3)))
    assert report.max_rel_error <= 1e-7, str(report)
    assert {t.name for t in report.tensors} == {"x", "W_gate", "W1", "b1", "W2", "b2"}


@pytest.mark.ex2_1
def test_gates_sum_to_one():
    module = DenseMoE(3, 4, 5, rng=0)
    module.forward(np.random.default_rng(1).standard_normal((10, 3)) * 50)
    np.testing.assert_allclose(module.gates.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    assert np.all(module.gates >= 0), "gates must be non-negative"


@pytest.mark.ex2_1
def test_output_is_gate_weighted_sum_of_experts():
    x, W_gate, W1, b1, W2, b2 = _inputs()
    y, cache = dense_moe_forward(x, W_gate, W1, b1, W2, b2)
    expected = np.zeros_like(y)
    for e in range(W1.shape[0]):
        expert_y, _ = L.mlp_forward(x, W1[e], b1[e], W2[e], b2[e])
        expected += cache.gates[:, e : e + 1] * expert_y
    np.testing.assert_allclose(y, expected, rtol=1e-12, err_msg="batched experts differ from a loop over experts")


@pytest.mark.ex2_1
def test_one_expert_is_that_expert():
    x, _, W1, b1, W2, b2 = _inputs(E=1)
    y, _ = dense_moe_forward(x, np.zeros((3, 1)), W1, b1, W2, b2)
    alone, _ = L.mlp_forward(x, W1[0], b1[0], W2[0], b2[0])
    np.testing.assert_allclose(y, alone, rtol=1e-13, err_msg="with one expert the gate is 1 and the output is that expert's")


def test_rows_do_not_mix():
    x, *weights = _inputs(N=8)
    y_all, _ = dense_moe_forward(x, *weights)
    y_one, _ = dense_moe_forward(x[3:4], *weights)
    np.testing.assert_allclose(y_all[3:4], y_one, rtol=1e-13, err_msg="a token's output depends on other tokens")


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda: DenseMoE(3, 4, 0, rng=0), ValueError, "n_experts must be a positive integer.*got 0"),
        (lambda: DenseMoE(0, 4, 2, rng=0), ValueError, "d_model must be a positive integer.*got 0"),
        (lambda: DenseMoE(3, 4, 2, activation="elu", rng=0), ValueError, "activation must be one of.*got 'elu'"),
    ],
)
def test_bad_construction_rejected(make, error, match):
    with pytest.raises(error, match=match):
        make()


@pytest.mark.parametrize(
    "x, error, match",
    [
        (np.ones((4, 2)), ValueError, r"x must have last dimension 3, got shape \(4, 2\)"),
        (np.ones((2, 4, 3)), ValueError, r"x must have 2 dimensions, got shape \(2, 4, 3\)"),
        (np.ones((4, 3), dtype=np.int32), TypeError, "floating-point dtype, got int32"),
        (np.full((4, 3), np.inf), ValueError, "x contains 12 NaN or infinite entries"),
    ],
)
def test_bad_input_rejected(x, error, match):
    with pytest.raises(error, match=match):
        DenseMoE(3, 4, 2, rng=0).forward(x)


def test_same_seed_same_weights():
    a, b = DenseMoE(3, 4, 2, rng=7), DenseMoE(3, 4, 2, rng=7)
    for (name, pa), (_, pb) in zip(a.parameters(), b.parameters()):
        assert np.array_equal(pa, pb), f"{name} differs between two modules built with the same seed"
