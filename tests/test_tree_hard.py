"""Hard decision tree: O(D) descent, leaf-grouped inference and hard-path training."""

import numpy as np
import pytest

from tinycond import functional as F
from tinycond import layers as L
from tinycond.gradcheck import check_function
from tinycond.tree import (
    hard_tree_backward,
    hard_tree_forward,
    hard_tree_predict,
    init_tree_weights,
    soft_tree_forward,
    tree_descend,
)

pytestmark = pytest.mark.lesson4


def _tree(depth, N=10, d_model=3, d_hidden=4, d_out=2, seed=0, bias_scale=0.5):
    """Return ``x`` and the six tree weights, with non-zero biases everywhere."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, d_model))
    W_node, b_node, W1, b1, W2, b2 = init_tree_weights(depth, d_model, d_hidden, d_out, rng)
    b_node = bias_scale * rng.standard_normal(b_node.shape)
    b1 = b1 + 0.1 * rng.standard_normal(b1.shape)
    b2 = b2 + 0.1 * rng.standard_normal(b2.shape)
    return x, W_node, b_node, W1, b1, W2, b2


def _hard_choices(out, cache):
    """The visited nodes, then the leaf experts' ReLU signs in sorted order."""
    signs = [getattr(e.activation, "positive", np.zeros(0)) for e in cache.experts.experts if e is not None]
    return [cache.node_index] + signs


def _descend_by_evaluating_every_node(x, W_node, b_node, depth):
    """Reference descent: evaluate all nodes, then follow the signs level by level."""
    logits = x @ W_node.T + b_node  # (N, 2^D - 1)
    node = np.zeros(x.shape[0], dtype=int)
    for _ in range(depth):
        node = 2 * node + 1 + (logits[np.arange(x.shape[0]), node] >= 0)
    return node - (2**depth - 1)


@pytest.mark.ex4_3
@pytest.mark.parametrize("depth", [1, 2, 4])
def test_descend_matches_full_evaluation(depth):
    x, W_node, b_node, *_ = _tree(depth, N=40)
    _, _, leaf_index = tree_descend(x, W_node, b_node)
    expected = _descend_by_evaluating_every_node(x, W_node, b_node, depth)
    np.testing.assert_array_equal(leaf_index, expected, err_msg="leaf reached by the O(D) descent")


@pytest.mark.ex4_3
def test_descend_follows_one_path():
    depth = 4
    x, W_node, b_node, *_ = _tree(depth, N=30)
    node_index, node_logits, leaf_index = tree_descend(x, W_node, b_node, beta=2.0)
    assert np.all(node_index[:, 0] == 0), "every path starts at the root"
    children = 2 * node_index + 1 + (node_logits >= 0)  # (N, D)
    np.testing.assert_array_equal(node_index[:, 1:], children[:, :-1], err_msg="each visited node is a child of the one before")
    np.testing.assert_array_equal(leaf_index, children[:, -1] - (2**depth - 1), err_msg="the leaf is the last child")
    expected_logits = 2.0 * (np.einsum("nd,nld->nl", x, W_node[node_index]) + b_node[node_index])
    np.testing.assert_allclose(node_logits, expected_logits, rtol=1e-13, err_msg="logits of the visited nodes")


@pytest.mark.ex4_3
def test_beta_does_not_change_decisions():
    x, W_node, b_node, *_ = _tree(3, N=40)
    _, _, cold = tree_descend(x, W_node, b_node, beta=0.1)
    _, _, hot = tree_descend(x, W_node, b_node, beta=50.0)
    np.testing.assert_array_equal(cold, hot, err_msg="beta scales the logits and must not move a sample to another leaf")


@pytest.mark.ex4_3
@pytest.mark.parametrize("depth", [1, 3, 5])
def test_hard_path_prob_equals_soft(depth):
    x, *weights = _tree(depth, N=50)
    _, leaf_index, path_prob = hard_tree_predict(x, *weights, beta=1.5)
    _, cache = soft_tree_forward(x, *weights, beta=1.5)
    soft_prob = cache.path.reach[np.arange(50), 2**depth - 1 + leaf_index]
    np.testing.assert_allclose(path_prob, soft_prob, rtol=1e-12, err_msg="the hard path's probability in the soft tree")


@pytest.mark.ex4_3
@pytest.mark.parametrize("depth", [1, 3, 5])
def test_hard_path_is_most_probable_leaf(depth):
    x, *weights = _tree(depth, N=200)
    _, leaf_index, path_prob = hard_tree_predict(x, *weights, beta=20.0)
    _, cache = soft_tree_forward(x, *weights, beta=20.0)
    most_probable = np.argmax(cache.path.reach[:, 2**depth - 1 :], axis=1)
    # A path of probability above 1/2 leaves less than 1/2 to all other leaves together.
    decided = path_prob > 0.5
    assert decided.sum() >= 150, f"only {decided.sum()} of 200 samples have a decided path; the test needs most of them"
    np.testing.assert_array_equal(leaf_index[decided], most_probable[decided], err_msg="hard leaf against most probable soft leaf")


@pytest.mark.ex4_3
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_hard_predict_matches_dense(activation):
    depth, N = 3, 40
    x, W_node, b_node, W1, b1, W2, b2 = _tree(depth, N=N)
    y, leaf_index, path_prob = hard_tree_predict(x, W_node, b_node, W1, b1, W2, b2, beta=1.2, activation=activation)
    every_leaf, _ = L.mlp_forward(x, W1, b1, W2, b2, activation=activation)  # (2^D, N, d_out)
    _, node_logits, _ = tree_descend(x, W_node, b_node, beta=1.2)
    expected_prob = np.prod(np.where(node_logits >= 0, F.sigmoid(node_logits), 1.0 - F.sigmoid(node_logits)), axis=1)
    np.testing.assert_allclose(path_prob, expected_prob, rtol=1e-12, err_msg="path probability")
    expected = path_prob[:, None] * every_leaf[leaf_index, np.arange(N)]
    np.testing.assert_allclose(y, expected, rtol=1e-12, err_msg="hard output against every leaf evaluated then picked")


@pytest.mark.ex4_3
def test_hard_predict_single_leaf():
    x, W_node, b_node, *experts = _tree(3, N=12)
    b_node = np.full(7, 100.0)  # every node sends every sample right
    y, leaf_index, _ = hard_tree_predict(x, W_node, b_node, *experts)
    assert np.all(leaf_index == 7), f"expected every sample in the rightmost leaf 7, got leaves {np.unique(leaf_index)}"
    W1, b1, W2, b2 = experts
    alone, _ = L.mlp_forward(x, W1[7], b1[7], W2[7], b2[7])
    np.testing.assert_allclose(y, alone, rtol=1e-12, err_msg="with path probability 1 the output is the one leaf's")


@pytest.mark.ex4_4
@pytest.mark.parametrize("depth", [1, 2, 3])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_hard_tree_pair_gradient(depth, activation):
    report = check_function(
        hard_tree_forward,
        hard_tree_backward,
        *_tree(depth, N=12),
        forward_kwargs={"beta": 1.3, "activation": activation},
        choices=_hard_choices,
    )
    assert report.max_rel_error <= 1e-7, str(report)
    assert [t.name for t in report.tensors] == ["x", "W_node", "b_node", "W1", "b1", "W2", "b2"]
    assert all(t.n_checked > 0 for t in report.tensors), str(report)


def _hard_tree_with_routing_outputs(x, W_node, b_node, W1, b1, W2, b2):
    """Expose the visited node logits and the reach as outputs, so their extra gradients are checked."""
    y, cache = hard_tree_forward(x, W_node, b_node, W1, b1, W2, b2, beta=0.9, activation="gelu")
    return (y, cache.node_logits, cache.reach), cache


def _hard_tree_with_routing_outputs_backward(upstream, cache):
    dy, dnode_logits, dreach = upstream
    return hard_tree_backward(dy, cache, dnode_logits=dnode_logits, dreach=dreach)


@pytest.mark.ex4_4
def test_hard_tree_extra_gradients():
    report = check_function(
        _hard_tree_with_routing_outputs,
        _hard_tree_with_routing_outputs_backward,
        *_tree(3, N=12),
        choices=lambda out, cache: cache.node_index,
    )
    assert report.max_rel_error <= 1e-7, str(report)


@pytest.mark.ex4_4
def test_hard_tree_unvisited_leaves_zero():
    x, W_node, b_node, *experts = _tree(2, N=8)
    b_node = np.array([-100.0, 100.0, 0.0])  # root sends everyone left, node 1 then right: leaf 1 only
    y, cache = hard_tree_forward(x, W_node, b_node, *experts)
    _, _, _, dW1, db1, dW2, db2 = hard_tree_backward(np.ones_like(y), cache)
    assert np.all(cache.leaf_index == 1), f"expected every sample in leaf 1, got {np.unique(cache.leaf_index)}"
    for grad, name in zip((dW1, db1, dW2, db2), ("dW1", "db1", "dW2", "db2")):
        assert np.all(grad[[0, 2, 3]] == 0), f"{name} of leaves no sample reached must be zero"
        assert np.any(grad[1] != 0), f"{name} of the reached leaf must not be zero"


@pytest.mark.ex4_4
def test_hard_tree_backward_keeps_inputs():
    x, *weights = _tree(3, N=12)
    y, cache = hard_tree_forward(x, *weights)
    dy = np.random.default_rng(4).standard_normal(y.shape)
    dreach = np.random.default_rng(5).standard_normal(cache.reach.shape)
    saved = (dy.copy(), dreach.copy(), cache.reach.copy(), cache.branch.copy(), cache.leaf_out.copy())
    hard_tree_backward(dy, cache, dreach=dreach)
    current = (dy, dreach, cache.reach, cache.branch, cache.leaf_out)
    for before, after, name in zip(saved, current, ("dy", "dreach", "reach", "branch", "leaf_out")):
        np.testing.assert_array_equal(after, before, err_msg=f"backward modified {name}")


@pytest.mark.ex4_4
def test_hard_tree_finite_at_extreme_logits():
    x, W_node, *rest = _tree(3, N=12)
    y, cache = hard_tree_forward(x, W_node * 1e4, *rest)
    assert np.abs(cache.node_logits).max() > 1e3, "the node logits should be extreme in this test"
    grads = hard_tree_backward(np.ones_like(y), cache)
    assert np.all(np.isfinite(y)), "hard tree output is not finite at logits of 1e4"
    for grad, name in zip(grads, ("dx", "dW_node", "db_node", "dW1", "db1", "dW2", "db2")):
        assert np.all(np.isfinite(grad)), f"{name} is not finite at logits of 1e4"
