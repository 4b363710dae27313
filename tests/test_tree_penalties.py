"""Tree penalties: the Frosst-Hinton balance penalty and the hardening (entropy) penalty."""

import numpy as np
import pytest

from tinycond import functional as F
from tinycond.gradcheck import check_function
from tinycond.tree import (
    balance_penalty_backward,
    balance_penalty_forward,
    hardening_penalty_backward,
    hardening_penalty_forward,
    init_tree_weights,
    tree_descend,
    tree_path_forward,
)
from tinycond.tree.hard import branch_probabilities

pytestmark = pytest.mark.lesson4


def _soft_routing(depth, N=8, seed=0):
    """Return node probabilities and the reach of the inner nodes of a soft tree."""
    node_probs = np.random.default_rng(seed).uniform(0.1, 0.9, size=(N, 2**depth - 1))
    reach, _ = tree_path_forward(node_probs)
    return node_probs, reach[:, : 2**depth - 1]


def _hard_routing(depth, N=12, seed=0):
    """Return (node_probs, reach, node_index) of the nodes visited on hard paths, each (N, D)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, 3))
    W_node, b_node, *_ = init_tree_weights(depth, 3, 2, 2, rng)
    node_index, node_logits, _ = tree_descend(x, W_node, b_node + 0.3 * rng.standard_normal(b_node.shape))
    reach = np.cumprod(np.concatenate([np.ones((N, 1)), branch_probabilities(node_logits)[:, :-1]], axis=1), axis=1)
    return F.sigmoid(node_logits), reach, node_index


@pytest.mark.parametrize("depth", [1, 2, 4])
def test_balance_even_split_gives_depth_log2(depth):
    node_probs = np.full((5, 2**depth - 1), 0.5)
    reach, _ = tree_path_forward(node_probs)
    penalty, _ = balance_penalty_forward(node_probs, reach[:, : 2**depth - 1])
    assert penalty == pytest.approx(depth * np.log(2), rel=1e-14), f"penalty {penalty}, expected D log 2 = {depth * np.log(2)}"


def test_balance_known_value_for_one_node():
    node_probs = np.array([[0.9], [0.7]])
    penalty, cache = balance_penalty_forward(node_probs, np.ones((2, 1)))
    assert cache.alpha[0] == pytest.approx(0.8, rel=1e-15), f"alpha {cache.alpha[0]}, expected the mean 0.8"
    expected = -0.5 * (np.log(0.8) + np.log(0.2))
    assert penalty == pytest.approx(expected, rel=1e-14), f"penalty {penalty}, expected {expected}"


def test_balance_alpha_is_right_share():
    depth = 3
    node_probs, inner_reach = _soft_routing(depth)
    reach, _ = tree_path_forward(node_probs)
    _, cache = balance_penalty_forward(node_probs, inner_reach)
    nodes = np.arange(2**depth - 1)
    expected = reach[:, 2 * nodes + 2].sum(axis=0) / reach[:, nodes].sum(axis=0)
    np.testing.assert_allclose(cache.alpha, expected, rtol=1e-13, err_msg="alpha against right-child reach over node reach")


def test_balance_deeper_nodes_weigh_half_as_much():
    # Depth 2: the same imbalance at the root, or at both level-1 nodes, costs the same.
    skewed = np.array([0.9, 0.5, 0.5])
    deeper = np.array([0.5, 0.9, 0.9])
    penalties = []
    for probs in (skewed, deeper):
        node_probs = np.tile(probs, (4, 1))
        reach, _ = tree_path_forward(node_probs)
        penalties.append(balance_penalty_forward(node_probs, reach[:, :3])[0])
    assert penalties[0] == pytest.approx(penalties[1], rel=1e-14), f"root skew {penalties[0]}, level-1 skew {penalties[1]}"


@pytest.mark.ex4_5
@pytest.mark.parametrize("depth", [1, 2, 3])
def test_balance_soft_gradient(depth):
    report = check_function(balance_penalty_forward, balance_penalty_backward, *_soft_routing(depth))
    assert report.max_rel_error <= 1e-7, str(report)
    assert all(t.n_checked > 0 for t in report.tensors), str(report)


@pytest.mark.ex4_5
@pytest.mark.parametrize("depth", [2, 4])
def test_balance_hard_path_gradient(depth):
    node_probs, reach, node_index = _hard_routing(depth)
    report = check_function(
        balance_penalty_forward,
        balance_penalty_backward,
        node_probs,
        reach,
        forward_kwargs={"node_index": node_index, "n_nodes": 2**depth - 1},
    )
    assert report.max_rel_error <= 1e-7, str(report)


def test_balance_skips_unreached_nodes():
    depth = 4
    node_probs, reach, node_index = _hard_routing(depth, N=6)
    unreached = np.setdiff1d(np.arange(15), node_index)
    assert unreached.size > 0, "this test needs a node that no sample visits"
    penalty, cache = balance_penalty_forward(node_probs, reach, node_index=node_index, n_nodes=15)
    assert np.isfinite(penalty), f"penalty {penalty} is not finite with unreached nodes"
    assert np.all(cache.dpenalty_dalpha[unreached] == 0), "unreached nodes must not take part"


@pytest.mark.ex4_5
def test_balance_finite_at_one_sided_node():
    node_probs = np.array([[0.0, 0.3, 0.5], [0.0, 0.6, 0.5]])  # the root sends both samples left, exactly
    reach, _ = tree_path_forward(node_probs)
    penalty, cache = balance_penalty_forward(node_probs, reach[:, :3])
    dnode_probs, dreach = balance_penalty_backward(1.0, cache)
    assert np.isfinite(penalty), f"penalty {penalty} is not finite at alpha = 0"
    assert np.all(np.isfinite(dnode_probs)), "dnode_probs is not finite at alpha = 0"
    assert np.all(np.isfinite(dreach)), "dreach is not finite at alpha = 0"


def test_balance_rejects_node_index_without_n_nodes():
    node_probs, reach, node_index = _hard_routing(2)
    with pytest.raises(ValueError, match="n_nodes is required"):
        balance_penalty_forward(node_probs, reach, node_index=node_index)


def test_balance_rejects_node_index_of_other_shape():
    node_probs, reach, node_index = _hard_routing(2)
    with pytest.raises(ValueError, match=r"node_index must have the shape of node_probs"):
        balance_penalty_forward(node_probs, reach, node_index=node_index[:, :1], n_nodes=3)


def test_hardening_coin_flips_give_log2():
    penalty, _ = hardening_penalty_forward(np.zeros((4, 7)))
    assert penalty == pytest.approx(np.log(2), rel=1e-15), f"penalty {penalty}, expected log 2"


@pytest.mark.parametrize("z", [-3.0, -0.4, 0.2, 1.0, 6.0])
def test_hardening_matches_entropy_formula(z):
    s = F.sigmoid(np.array(z))
    expected = -s * np.log(s) - (1 - s) * np.log(1 - s)
    penalty, _ = hardening_penalty_forward(np.full((2, 3), z))
    assert penalty == pytest.approx(expected, rel=1e-12), f"entropy at z={z}: {penalty}, expected {expected}"


def test_hardening_falls_as_decisions_harden():
    values = [hardening_penalty_forward(np.full((1, 3), z))[0] for z in (0.0, 1.0, 5.0, 40.0)]
    assert all(a > b for a, b in zip(values, values[1:])), f"entropy must fall as |z| grows, got {values}"
    assert values[-1] < 1e-15, f"entropy at z=40 is {values[-1]}, expected below 1e-15"


@pytest.mark.ex4_5
def test_hardening_gradient():
    node_logits = np.random.default_rng(0).normal(0.0, 2.0, size=(6, 7))
    report = check_function(hardening_penalty_forward, hardening_penalty_backward, node_logits)
    assert report.max_rel_error <= 1e-7, str(report)


@pytest.mark.ex4_5
def test_hardening_finite_at_extreme_logits():
    node_logits = np.array([[1e4, -1e4, 0.0, 745.0, -800.0]])
    penalty, cache = hardening_penalty_forward(node_logits)
    dnode_logits = hardening_penalty_backward(1.0, cache)
    assert penalty == pytest.approx(np.log(2) / 5, rel=1e-12), f"only z=0 contributes, got {penalty}"
    assert np.all(np.isfinite(dnode_logits)), f"gradient not finite: {dnode_logits}"
