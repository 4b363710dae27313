"""Soft decision tree: path probabilities, the mixture of leaves and their gradients."""

import numpy as np
import pytest

from tinycond import layers as L
from tinycond.gradcheck import check_function
from tinycond.tree import (
    init_tree_weights,
    soft_tree_backward,
    soft_tree_forward,
    soft_tree_predict,
    tree_path_backward,
    tree_path_forward,
)

pytestmark = pytest.mark.lesson4


def _tree(depth, N=6, d_model=3, d_hidden=4, d_out=2, seed=0):
    """Return ``x`` and the six tree weights, with non-zero biases everywhere."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, d_model))
    W_node, b_node, W1, b1, W2, b2 = init_tree_weights(depth, d_model, d_hidden, d_out, rng)
    b_node = 0.5 * rng.standard_normal(b_node.shape)
    b1 = b1 + 0.1 * rng.standard_normal(b1.shape)
    b2 = b2 + 0.1 * rng.standard_normal(b2.shape)
    return x, W_node, b_node, W1, b1, W2, b2


def _relu_signs(out, cache):
    return getattr(cache.experts.activation, "positive", np.zeros(0))


def _node_probs(depth, N=5, seed=0, low=0.05, high=0.95):
    return np.random.default_rng(seed).uniform(low, high, size=(N, 2**depth - 1))


@pytest.mark.ex4_1
@pytest.mark.parametrize("depth", [1, 2, 3, 4])
def test_tree_path_gradient(depth):
    report = check_function(tree_path_forward, tree_path_backward, _node_probs(depth))
    assert report.max_rel_error <= 1e-7, str(report)
    assert report["node_probs"].n_checked == 5 * (2**depth - 1), str(report)


@pytest.mark.ex4_1
@pytest.mark.parametrize("depth", [1, 2, 5])
@pytest.mark.parametrize("low, high", [(0.05, 0.95), (0.0, 1.0)])
def test_tree_path_leaf_probs_sum_to_one(depth, low, high):
    node_probs = _node_probs(depth, low=low, high=high)
    node_probs[0, :] = np.where(np.arange(node_probs.shape[1]) % 2 == 0, 0.0, 1.0)  # exactly decided nodes
    reach, _ = tree_path_forward(node_probs)
    leaf_sums = reach[:, 2**depth - 1 :].sum(axis=1)
    worst = np.abs(leaf_sums - 1.0).max()
    assert worst <= 1e-14, f"leaf probabilities sum to 1 within {worst:.1e}, expected 1e-14"


@pytest.mark.ex4_1
def test_tree_path_children_split_parent():
    depth = 3
    node_probs = _node_probs(depth)
    reach, _ = tree_path_forward(node_probs)
    assert np.all(reach[:, 0] == 1.0), "the root must be reached with probability 1"
    parents = np.arange(2**depth - 1)
    np.testing.assert_allclose(reach[:, 2 * parents + 2], reach[:, parents] * node_probs, rtol=1e-15, err_msg="right child")
    np.testing.assert_allclose(reach[:, 2 * parents + 1], reach[:, parents] * (1 - node_probs), rtol=1e-15, err_msg="left child")


@pytest.mark.ex4_1
def test_tree_path_depth_one():
    node_probs = np.array([[0.2], [0.7]])
    reach, _ = tree_path_forward(node_probs)
    np.testing.assert_allclose(reach, [[1.0, 0.8, 0.2], [1.0, 0.3, 0.7]], rtol=1e-15, err_msg="reach of root, left, right")


@pytest.mark.ex4_1
def test_tree_path_backward_keeps_inputs():
    node_probs = _node_probs(3)
    reach, cache = tree_path_forward(node_probs)
    dreach = np.random.default_rng(1).standard_normal(reach.shape)
    saved = (dreach.copy(), node_probs.copy(), reach.copy())
    tree_path_backward(dreach, cache)
    for before, after, name in zip(saved, (dreach, node_probs, reach), ("dreach", "node_probs", "reach")):
        np.testing.assert_array_equal(after, before, err_msg=f"backward modified {name}")


@pytest.mark.parametrize("width", [2, 4, 6])
def test_tree_path_rejects_bad_width(width):
    with pytest.raises(ValueError, match=rf"2\^D - 1 inner nodes.*got {width} nodes"):
        tree_path_forward(np.full((3, width), 0.5))


@pytest.mark.ex4_2
@pytest.mark.parametrize("depth", [1, 2, 3])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_soft_tree_pair_gradient(depth, activation):
    report = check_function(
        soft_tree_forward,
        soft_tree_backward,
        *_tree(depth),
        forward_kwargs={"beta": 1.7, "activation": activation},
        choices=_relu_signs,
    )
    assert report.max_rel_error <= 1e-7, str(report)
    assert [t.name for t in report.tensors] == ["x", "W_node", "b_node", "W1", "b1", "W2", "b2"]
    assert all(t.n_checked > 0 for t in report.tensors), str(report)


def _soft_tree_with_routing_outputs(x, W_node, b_node, W1, b1, W2, b2):
    """Expose the node logits and the reach as outputs, so their extra gradients are checked."""
    y, cache = soft_tree_forward(x, W_node, b_node, W1, b1, W2, b2, beta=0.8, activation="gelu")
    return (y, cache.node_logits, cache.path.reach), cache


def _soft_tree_with_routing_outputs_backward(upstream, cache):
    dy, dnode_logits, dreach = upstream
    return soft_tree_backward(dy, cache, dnode_logits=dnode_logits, dreach=dreach)


@pytest.mark.ex4_2
def test_soft_tree_extra_gradients():
    report = check_function(_soft_tree_with_routing_outputs, _soft_tree_with_routing_outputs_backward, *_tree(3))
    assert report.max_rel_error <= 1e-7, str(report)


def test_soft_tree_weights_leaves_by_probability():
    x, W_node, b_node, W1, b1, W2, b2 = _tree(2)
    y, cache = soft_tree_forward(x, W_node, b_node, W1, b1, W2, b2, beta=1.3)
    leaf_probs = cache.path.reach[:, 3:]
    expected = np.zeros_like(y)
    for leaf in range(4):
        out, _ = L.mlp_forward(x, W1[leaf], b1[leaf], W2[leaf], b2[leaf])
        expected += leaf_probs[:, leaf, None] * out
    np.testing.assert_allclose(y, expected, rtol=1e-12, err_msg="soft tree output differs from a loop over leaves")


def test_soft_tree_predict_matches_forward():
    x, *weights = _tree(3, N=9)
    y, cache = soft_tree_forward(x, *weights, beta=2.0, activation="gelu")
    y_predict, leaf_probs = soft_tree_predict(x, *weights, beta=2.0, activation="gelu")
    np.testing.assert_allclose(y_predict, y, rtol=1e-12, err_msg="leaf-at-a-time evaluation differs from the batched forward")
    np.testing.assert_array_equal(leaf_probs, cache.path.reach[:, 7:])


def test_soft_tree_rows_do_not_mix():
    x, *weights = _tree(3, N=8)
    y_all, _ = soft_tree_forward(x, *weights)
    y_one, _ = soft_tree_forward(x[5:6], *weights)
    np.testing.assert_allclose(y_all[5:6], y_one, rtol=1e-13, err_msg="a sample's output depends on other samples")


@pytest.mark.ex4_2
def test_soft_tree_backward_keeps_inputs():
    x, *weights = _tree(2)
    y, cache = soft_tree_forward(x, *weights)
    dy = np.random.default_rng(2).standard_normal(y.shape)
    dreach = np.random.default_rng(3).standard_normal(cache.path.reach.shape)
    saved = (dy.copy(), dreach.copy(), cache.path.reach.copy(), cache.node_probs.copy(), cache.expert_out.copy())
    soft_tree_backward(dy, cache, dreach=dreach)
    current = (dy, dreach, cache.path.reach, cache.node_probs, cache.expert_out)
    for before, after, name in zip(saved, current, ("dy", "dreach", "reach", "node_probs", "expert_out")):
        np.testing.assert_array_equal(after, before, err_msg=f"backward modified {name}")


@pytest.mark.ex4_2
def test_soft_tree_finite_at_extreme_logits():
    x, W_node, *rest = _tree(3)
    y, cache = soft_tree_forward(x, W_node * 1e4, *rest)
    assert np.abs(cache.node_logits).max() > 1e3, "the node logits should be extreme in this test"
    grads = soft_tree_backward(np.ones_like(y), cache)
    assert np.all(np.isfinite(y)), "soft tree output is not finite at logits of 1e4"
    for grad, name in zip(grads, ("dx", "dW_node", "db_node", "dW1", "db1", "dW2", "db2")):
        assert np.all(np.isfinite(grad)), f"{name} is not finite at logits of 1e4"
