"""Module convention, every basic layer's gradient, bad input and reproducibility."""

import numpy as np
import pytest

from tinycond import nn
from tinycond.gradcheck import check_module
from tinycond.optim import Adam

pytestmark = pytest.mark.lesson1


def _x(shape=(5, 4), seed=0):
    x = np.random.default_rng(seed).standard_normal(shape)
    return np.where(np.abs(x) < 0.05, 0.5, x)


MODULES = {
    "Linear": lambda: nn.Linear(4, 3, rng=1),
    "ReLU": nn.ReLU,
    "GELU": nn.GELU,
    "Sigmoid": nn.Sigmoid,
    "Softmax": nn.Softmax,
    "LogSoftmax": nn.LogSoftmax,
    "MLP relu": lambda: nn.MLP(4, 8, 3, rng=2),
    "MLP gelu": lambda: nn.MLP(4, 8, 3, activation="gelu", rng=2),
    "LayerNorm": lambda: nn.LayerNorm(4),
    "Sequential": lambda: nn.Sequential(nn.Linear(4, 6, rng=3), nn.GELU(), nn.LayerNorm(6), nn.Linear(6, 2, rng=4)),
}


@pytest.mark.parametrize("name", MODULES)
def test_module_gradient(name):
    module = MODULES[name]()
    report = check_module(module, _x(), rng=5)
    assert report.max_rel_error <= 1e-7, str(report)
    assert all(t.n_checked > 0 for t in report.tensors), str(report)


def test_embedding_module_gradient():
    module = nn.Embedding(6, 3, rng=0)
    report = check_module(module, np.array([[0, 5, 5], [2, 1, 0]]))
    assert [t.name for t in report.tensors] == ["W"], "integer ids get no gradient; only W is checked"
    assert report.max_rel_error <= 1e-7, str(report)


def test_parameters_have_dotted_names():
    model = nn.Sequential(nn.Linear(2, 3, rng=0), nn.ReLU(), nn.MLP(3, 4, 1, rng=1))
    names = [name for name, _ in model.parameters()]
    assert names == ["0.W", "0.b", "2.fc1.W", "2.fc1.b", "2.fc2.W", "2.fc2.b"], names
    assert [name for name, _ in model.gradients()] == names, "gradients() follows parameters() order"
    assert model.num_parameters() == 2 * 3 + 3 + 3 * 4 + 4 + 4 * 1 + 1


def test_backward_accumulates_and_zero_grad_clears():
    layer = nn.Linear(3, 2, rng=0)
    x = _x((4, 3))
    dy = np.ones((4, 2))
    layer.forward(x)
    layer.backward(dy)
    once = layer.grads["W"].copy()
    layer.forward(x)
    layer.backward(dy)
    np.testing.assert_allclose(layer.grads["W"], 2 * once, err_msg="backward must add into grads, not overwrite")
    layer.zero_grad()
    assert not np.any(layer.grads["W"]), "zero_grad leaves non-zero gradients"


def test_relu_choices_reported():
    model = nn.Sequential(nn.Linear(2, 3, rng=0), nn.ReLU())
    model.forward(_x((4, 2)))
    choices = model.choices()
    assert list(choices) == ["1.positive"], choices
    assert choices["1.positive"].shape == (4, 3)


def test_train_eval_propagates():
    model = nn.Sequential(nn.Linear(2, 3, rng=0), nn.ReLU())
    model.eval()
    assert not any(m.training for _, m in model.named_modules()), "eval() must reach every child"
    model.train()
    assert all(m.training for _, m in model.named_modules()), "train() must reach every child"


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda: nn.Linear(0, 3, rng=0), ValueError, "d_in must be a positive integer.*got 0"),
        (lambda: nn.Linear(2.5, 3, rng=0), TypeError, "d_in must be a positive integer, got 2.5"),
        (lambda: nn.MLP(2, -1, 3, rng=0), ValueError, "d_hidden must be a positive integer.*got -1"),
        (lambda: nn.MLP(2, 4, 3, activation="tanhh", rng=0), ValueError, "activation must be one of.*got 'tanhh'"),
        (lambda: nn.Embedding(5, 0, rng=0), ValueError, "d_model must be a positive integer.*got 0"),
        (lambda: nn.LayerNorm(0), ValueError, "d_model must be a positive integer.*got 0"),
        (lambda: nn.Linear(2, 3, rng=None), TypeError, "rng must be a numpy.random.Generator or an integer seed, got None"),
        (lambda: nn.Sequential(nn.ReLU(), "relu"), TypeError, "Module instances, got str at position 1"),
    ],
)
def test_bad_construction_rejected(make, error, match):
    with pytest.raises(error, match=match):
        make()


@pytest.mark.parametrize(
    "x, error, match",
    [
        (np.ones((2, 5)), ValueError, r"x must have last dimension 4, got shape \(2, 5\)"),
        (np.ones((2, 4), dtype=np.int64), TypeError, "x must have a floating-point dtype, got int64"),
        (np.array([[1.0, np.nan, 0.0, 0.0]]), ValueError, "x contains 1 NaN or infinite entries"),
        ([[1.0, 2.0, 3.0, 4.0]], TypeError, "x must be a numpy.ndarray, got list"),
    ],
)
def test_bad_input_rejected(x, error, match):
    with pytest.raises(error, match=match):
        nn.Linear(4, 2, rng=0).forward(x)


def test_embedding_bad_ids():
    with pytest.raises(ValueError, match=r"ids must be in \[0, 3\), got values from 0 to 3"):
        nn.Embedding(3, 2, rng=0).forward(np.array([0, 3]))


def _train_run(seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((32, 2))
    targets = (x[:, 0] * x[:, 1] > 0).astype(np.int64)
    model = nn.MLP(2, 16, 2, rng=rng)
    loss_fn = nn.CrossEntropyLoss()
    optimizer = Adam(model, lr=0.01)
    losses = []
    for _ in range(20):
        optimizer.zero_grad()
        losses.append(loss_fn(model.forward(x), targets))
        model.backward(loss_fn.backward())
        optimizer.step()
    return losses, [p.copy() for _, p in model.parameters()]


def test_same_seed_same_run():
    losses_a, params_a = _train_run(3)
    losses_b, params_b = _train_run(3)
    assert losses_a == losses_b, "two runs with the same seed gave different losses"
    for a, b in zip(params_a, params_b):
        assert np.array_equal(a, b), "two runs with the same seed gave different parameters"
    losses_c, _ = _train_run(4)
    assert losses_a != losses_c, "a different seed should give a different run"
    assert losses_a[-1] < losses_a[0], f"training did not reduce the loss: {losses_a[0]:.3f} -> {losses_a[-1]:.3f}"
