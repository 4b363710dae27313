"""SGD with momentum and Adam move parameters downhill."""

import numpy as np
import pytest

from tinycond.nn import Linear
from tinycond.optim import SGD, Adam

pytestmark = pytest.mark.lesson1


def _fit(optimizer_cls, steps=200, **options):
    """Fit y = x W_true with a Linear layer; return the final mean squared error."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 3))
    y = x @ rng.standard_normal((3, 2))
    layer = Linear(3, 2, rng=1)
    optimizer = optimizer_cls(layer, **options)
    for _ in range(steps):
        optimizer.zero_grad()
        diff = layer.forward(x) - y
        layer.backward(2 * diff / diff.size)
        optimizer.step()
    return float(np.mean((layer.forward(x) - y) ** 2))


@pytest.mark.parametrize(
    "optimizer_cls, options",
    [(SGD, {"lr": 0.1}), (SGD, {"lr": 0.05, "momentum": 0.9}), (Adam, {"lr": 0.05})],
    ids=["sgd", "sgd momentum", "adam"],
)
def test_optimizer_fits_linear(optimizer_cls, options):
    error = _fit(optimizer_cls, **options)
    assert error < 1e-6, f"{optimizer_cls.__name__} {options} left mean squared error {error:.2e}"


def test_sgd_step_value():
    layer = Linear(1, 1, rng=0)
    layer.params["W"][...] = 1.0
    layer.grads["W"][...] = 0.5
    SGD(layer, lr=0.1).step()
    assert layer.params["W"][0, 0] == pytest.approx(0.95), "one SGD step is W - lr * grad"


def test_adam_first_step_is_lr_sized():
    layer = Linear(1, 1, rng=0)
    layer.params["W"][...] = 1.0
    layer.grads["W"][...] = 123.0
    Adam(layer, lr=0.01).step()
    assert layer.params["W"][0, 0] == pytest.approx(0.99, abs=1e-9), "bias-corrected Adam's first step has size lr"


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda m: SGD(m, lr=0.0), "lr must be a finite number > 0, got 0.0"),
        (lambda m: SGD(m, lr=0.1, momentum=1.0), r"momentum must be in \[0, 1\), got 1.0"),
        (lambda m: Adam(m, betas=(0.9, 1.5)), r"betas\[1\] must be in \[0, 1\)"),
        (lambda m: Adam(m, lr=float("nan")), "lr must be a finite number"),
    ],
)
def test_optimizer_bad_options(make, match):
    with pytest.raises(ValueError, match=match):
        make(Linear(2, 2, rng=0))
