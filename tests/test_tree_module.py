"""TreeMoE: the module's gradients, modes, attributes, penalties and bad input."""

import numpy as np
import pytest

from tinycond.gradcheck import check_module
from tinycond.tree import TreeMoE

pytestmark = pytest.mark.lesson4

PARAMETERS = {"x", "W_node", "b_node", "W1", "b1", "W2", "b2"}


def _module(depth=3, mode="soft", seed=0, **options):
    """Return a small TreeMoE with non-zero node biases, and an input batch."""
    options = {"d_out": 2, "rng": seed, "beta": 1.4, **options}
    module = TreeMoE(3, 4, depth, mode=mode, **options)
    rng = np.random.default_rng(seed + 100)
    module.params["b_node"][:] = 0.5 * rng.standard_normal(module.n_nodes)
    module.params["b1"][:] = 0.1 * rng.standard_normal(module.params["b1"].shape)
    return module, rng.standard_normal((12, 3))


GRADIENT_CASES = [
    pytest.param("soft", "relu", 0.0, 0.0, marks=pytest.mark.ex4_2, id="soft-relu"),
    pytest.param("soft", "gelu", 0.0, 0.0, marks=pytest.mark.ex4_2, id="soft-gelu"),
    pytest.param("hard", "relu", 0.0, 0.0, marks=pytest.mark.ex4_4, id="hard-relu"),
    pytest.param("hard", "gelu", 0.0, 0.0, marks=pytest.mark.ex4_4, id="hard-gelu"),
    pytest.param("soft", "gelu", 0.3, 0.2, marks=pytest.mark.ex4_5, id="soft-gelu-penalties"),
    pytest.param("soft", "relu", 0.5, 0.5, marks=pytest.mark.ex4_5, id="soft-relu-penalties"),
    pytest.param("hard", "gelu", 0.3, 0.2, marks=pytest.mark.ex4_5, id="hard-gelu-penalties"),
    pytest.param("hard", "relu", 0.5, 0.5, marks=pytest.mark.ex4_5, id="hard-relu-penalties"),
]


@pytest.mark.parametrize("mode, activation, balance_coef, hardening_coef", GRADIENT_CASES)
@pytest.mark.parametrize("depth", [1, 3])
def test_module_gradient(mode, activation, balance_coef, hardening_coef, depth):
    module, x = _module(depth, mode, activation=activation, balance_coef=balance_coef, hardening_coef=hardening_coef)
    report = check_module(module, x)
    assert report.max_rel_error <= 1e-7, str(report)
    assert {t.name for t in report.tensors} == PARAMETERS
    assert all(t.n_checked > 0 for t in report.tensors), str(report)


def test_module_hard_mode_guards_the_path():
    module, x = _module(3, "hard")
    module.forward(x)
    choices = module.choices()
    np.testing.assert_array_equal(choices["node_index"], module.cache.node_index, err_msg="own_choices must expose the hard path")
    assert "positive" in choices, "ReLU signs of the leaf experts must be guarded too"


@pytest.mark.ex4_1
def test_module_leaf_probs_sum_to_one():
    module, x = _module(4, "soft")
    module.forward(50.0 * x)
    assert module.leaf_probs.shape == (12, 16), f"leaf_probs shape {module.leaf_probs.shape}, expected (12, 16)"
    worst = np.abs(module.leaf_probs.sum(axis=1) - 1.0).max()
    assert worst <= 1e-14, f"leaf probabilities sum to 1 within {worst:.1e}"
    np.testing.assert_array_equal(module.leaf_index, np.argmax(module.leaf_probs, axis=1), err_msg="soft leaf_index is the most probable leaf")


@pytest.mark.parametrize("mode", ["soft", "hard"])
def test_module_attribute_shapes(mode):
    module, x = _module(3, mode)
    y = module.forward(x)
    assert y.shape == (12, 2), f"output shape {y.shape}, expected (12, 2)"
    assert module.leaf_index.shape == (12,), f"leaf_index shape {module.leaf_index.shape}"
    assert module.leaf_index.dtype.kind == "i", f"leaf_index dtype {module.leaf_index.dtype}"
    assert module.path_prob.shape == (12,), f"path_prob shape {module.path_prob.shape}"
    assert module.params["W_node"].shape == (7, 3), f"W_node shape {module.params['W_node'].shape}"
    assert module.params["W1"].shape == (8, 3, 4), f"W1 shape {module.params['W1'].shape}"
    assert (module.leaf_probs is None) == (mode == "hard"), "leaf_probs exists in soft mode only"


@pytest.mark.ex4_3
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_module_eval_equals_hard_training(activation):
    module, x = _module(3, "hard", activation=activation)
    y_train = module.forward(x)
    path = module.leaf_index.copy()
    module.eval()
    y_eval = module.forward(x)
    np.testing.assert_array_equal(y_eval, y_train, err_msg="eval-mode hard inference differs from hard training")
    np.testing.assert_array_equal(module.leaf_index, path)
    assert module.aux_loss == 0.0, f"eval mode must not add a penalty, got aux_loss {module.aux_loss}"


def test_module_eval_has_no_backward():
    module, x = _module(2, "soft")
    module.eval()
    y = module.forward(x)
    with pytest.raises(RuntimeError, match=r"module.train\(\)"):
        module.backward(np.ones_like(y))


@pytest.mark.parametrize("mode", ["soft", "hard"])
def test_module_aux_loss_scaled_sum(mode):
    module, x = _module(3, mode, balance_coef=0.3, hardening_coef=0.05)
    module.forward(x)
    expected = 0.3 * module.penalties["balance"] + 0.05 * module.penalties["hardening"]
    assert module.aux_loss == pytest.approx(expected, rel=1e-15), f"aux_loss {module.aux_loss}, expected {expected}"
    assert module.total_aux_loss() == pytest.approx(expected, rel=1e-15)


@pytest.mark.parametrize("mode", ["soft", "hard"])
def test_module_backward_adds_into_grads(mode):
    module, x = _module(2, mode, balance_coef=0.1)
    dy = np.random.default_rng(7).standard_normal((12, 2))
    module.forward(x)
    module.zero_grad()
    module.backward(dy)
    once = {name: grad.copy() for name, grad in module.gradients()}
    module.forward(x)
    module.backward(dy)
    for name, grad in module.gradients():
        np.testing.assert_allclose(grad, 2 * once[name], rtol=1e-14, err_msg=f"{name} was overwritten, not accumulated")


def test_module_backward_leaves_dy_unchanged():
    module, x = _module(3, "hard", hardening_coef=0.1)
    dy = np.random.default_rng(8).standard_normal((12, 2))
    saved = dy.copy()
    module.forward(x)
    module.backward(dy)
    np.testing.assert_array_equal(dy, saved, err_msg="backward modified dy")


def test_module_soft_predict_matches_forward():
    module, x = _module(3, "soft", activation="gelu")
    y = module.forward(x)
    np.testing.assert_allclose(module.soft_predict(x), y, rtol=1e-12, err_msg="soft_predict differs from the soft forward")


def test_module_same_seed_same_parameters():
    first = TreeMoE(4, 3, 3, rng=11)
    second = TreeMoE(4, 3, 3, rng=np.random.default_rng(11))
    for (name, a), (_, b) in zip(first.parameters(), second.parameters()):
        np.testing.assert_array_equal(a, b, err_msg=f"{name} differs between two modules built from seed 11")


@pytest.mark.parametrize("mode", ["soft", "hard"])
def test_module_finite_at_extreme_logits(mode):
    module, x = _module(3, mode, balance_coef=1.0, hardening_coef=1.0)
    module.params["W_node"] *= 1e4
    y = module.forward(x)
    assert np.isfinite(module.aux_loss), f"aux_loss {module.aux_loss} is not finite at node logits of 1e4"
    dx = module.backward(np.ones_like(y))
    assert np.all(np.isfinite(y)), "output is not finite at node logits of 1e4"
    assert np.all(np.isfinite(dx)), "dx is not finite at node logits of 1e4"
    for name, grad in module.gradients():
        assert np.all(np.isfinite(grad)), f"gradient of {name} is not finite at node logits of 1e4"


def test_module_d_out_defaults_to_d_model():
    module = TreeMoE(5, 3, 2, rng=0)
    assert module.forward(np.zeros((2, 5))).shape == (2, 5)


@pytest.mark.parametrize(
    "depth, error, match",
    [
        (0, ValueError, r"depth must be an integer >= 1.*got 0"),
        (-2, ValueError, r"depth must be an integer >= 1.*got -2"),
        (2.0, TypeError, r"depth must be an integer >= 1, got 2.0 of type float"),
        (True, TypeError, r"depth must be an integer"),
    ],
)
def test_module_rejects_bad_depth(depth, error, match):
    with pytest.raises(error, match=match):
        TreeMoE(4, 3, depth, rng=0)


def test_depth_limit_names_largest_depth():
    # One leaf of d_model=128, d_hidden=32, d_out=128 has 8352 float64 numbers (66816 bytes).
    # 1 GiB fits 16070 such leaves, so depth 13 fits and depth 14 does not.
    TreeMoE(128, 32, 1, rng=0)
    with pytest.raises(ValueError, match=r"depth=14 .* 16384 leaf experts .* depth must be at most 13"):
        TreeMoE(128, 32, 14, rng=0)
    with pytest.raises(ValueError, match=r"depth must be at most 3"):
        TreeMoE(128, 32, 5, rng=0, max_leaf_bytes=8 * 66816)


@pytest.mark.parametrize("beta", [0.0, -1.0, float("inf")])
def test_module_rejects_bad_beta(beta):
    with pytest.raises(ValueError, match=rf"beta must be a finite number > 0, got {beta}"):
        TreeMoE(4, 3, 2, beta=beta, rng=0)


@pytest.mark.parametrize(
    "options, error, match",
    [
        ({"mode": "medium"}, ValueError, r"mode must be one of 'soft', 'hard', got 'medium'"),
        ({"activation": "tanh"}, ValueError, r"activation must be one of"),
        ({"balance_coef": -0.1}, ValueError, r"balance_coef must be a finite number >= 0, got -0.1"),
        ({"hardening_coef": -1.0}, ValueError, r"hardening_coef must be a finite number >= 0, got -1.0"),
        ({"d_out": 0}, ValueError, r"d_out must be a positive integer"),
        ({"rng": None}, TypeError, r"rng must be a numpy.random.Generator or an integer seed"),
    ],
)
def test_module_rejects_bad_options(options, error, match):
    with pytest.raises(error, match=match):
        TreeMoE(4, 3, 2, **{"rng": 0, **options})


@pytest.mark.parametrize("mode", ["soft", "hard"])
def test_module_rejects_wrong_input_width(mode):
    module = TreeMoE(4, 3, 2, mode=mode, rng=0)
    with pytest.raises(ValueError, match=r"x must have last dimension 4, got shape \(6, 5\)"):
        module.forward(np.zeros((6, 5)))
    module.eval()
    with pytest.raises(ValueError, match=r"x must have last dimension 4"):
        module.forward(np.zeros((6, 5)))


@pytest.mark.parametrize(
    "x, error, match",
    [
        (np.zeros(4), ValueError, r"x must have 2 dimensions, got shape \(4,\)"),
        (np.full((2, 4), np.nan), ValueError, r"x contains 8 NaN or infinite entries"),
        (np.zeros((2, 4), dtype=int), TypeError, r"x must have a floating-point dtype"),
    ],
)
def test_module_rejects_bad_input(x, error, match):
    with pytest.raises(error, match=match):
        TreeMoE(4, 3, 2, rng=0).forward(x)


@pytest.mark.parametrize("mode", ["soft", "hard"])
def test_module_float32_stays_float32(mode):
    module = TreeMoE(4, 3, 3, mode=mode, balance_coef=0.1, hardening_coef=0.1, rng=0, dtype=np.float32)
    x = np.random.default_rng(0).standard_normal((9, 4)).astype(np.float32)
    y = module.forward(x)
    dx = module.backward(np.ones_like(y))
    assert y.dtype == np.float32, f"output dtype {y.dtype}, expected float32"
    assert dx.dtype == np.float32, f"dx dtype {dx.dtype}, expected float32"
    for name, grad in module.gradients():
        assert grad.dtype == np.float32, f"gradient of {name} has dtype {grad.dtype}, expected float32"
