"""Load-balancing losses: values the math fixes, and gradients by finite differences."""

import math

import numpy as np
import pytest

from tinycond import functional as F
from tinycond.gradcheck import check_function
from tinycond.moe.balancing import (
    cv_squared_backward,
    cv_squared_forward,
    importance_loss_backward,
    importance_loss_forward,
    switch_loss_backward,
    switch_loss_forward,
    z_loss_backward,
    z_loss_forward,
)
from tinycond.moe.gating import select_top_k
from tinycond.moe.load import load_loss_backward, load_loss_forward, normal_cdf, normal_pdf

pytestmark = pytest.mark.lesson3


def uniform_assignments(n_tokens, n_experts, top_k):
    """Return an (N, k) expert_index in which every expert appears equally often."""
    flat = np.arange(n_tokens * top_k) % n_experts
    return flat.reshape(n_tokens, top_k)


# Squared coefficient of variation


def test_cv_squared_of_equal_values_is_zero():
    loss, _ = cv_squared_forward(np.full(5, 3.0))
    assert loss == 0.0, f"CV^2 of equal values is {loss}, expected 0"


def test_cv_squared_one_hot():
    # Population variance of (1, 0, ..., 0) over E entries is (E - 1) / E^2 and the mean is 1 / E.
    for n_experts in (2, 4, 16):
        values = np.zeros(n_experts)
        values[0] = 7.0
        loss, _ = cv_squared_forward(values)
        assert loss == pytest.approx(n_experts - 1, rel=1e-14), f"E={n_experts}: CV^2 {loss}, expected {n_experts - 1}"


def test_cv_squared_gradcheck():
    values = np.random.default_rng(0).uniform(0.5, 2.0, size=6)
    check_function(cv_squared_forward, cv_squared_backward, values)


def test_cv_squared_rejects_zero_mean():
    with pytest.raises(ValueError, match="positive mean"):
        cv_squared_forward(np.zeros(4))


# Switch loss


@pytest.mark.ex3_3
@pytest.mark.parametrize("top_k", [1, 2, 4])
def test_switch_loss_uniform_router_is_one(top_k):
    n_tokens, n_experts = 16, 8
    loss, _ = switch_loss_forward(np.zeros((n_tokens, n_experts)), uniform_assignments(n_tokens, n_experts, top_k))
    assert loss == pytest.approx(1.0, rel=1e-14), f"uniform router with k={top_k} gives {loss}, expected exactly 1"


@pytest.mark.ex3_3
@pytest.mark.parametrize("n_experts", [2, 4, 16])
def test_switch_loss_collapsed_router_is_n_experts(n_experts):
    logits = np.zeros((10, n_experts))
    logits[:, 0] = 1e4  # softmax puts probability 1.0 on expert 0
    loss, _ = switch_loss_forward(logits, np.zeros((10, 1), dtype=int))
    assert loss == pytest.approx(n_experts, rel=1e-14), f"collapsed router gives {loss}, expected E={n_experts}"


@pytest.mark.ex3_3
@pytest.mark.parametrize("top_k", [1, 2])
def test_switch_loss_gradcheck(top_k):
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((12, 5))
    check_function(switch_loss_forward, switch_loss_backward, logits, select_top_k(logits, top_k), rng=rng)


@pytest.mark.ex3_3
def test_switch_loss_gradient_treats_fraction_as_constant():
    rng = np.random.default_rng(2)
    logits = rng.standard_normal((9, 4))
    expert_index = select_top_k(logits, 1)
    _, cache = switch_loss_forward(logits, expert_index)
    dlogits = switch_loss_backward(1.0, cache)
    fraction = np.bincount(expert_index[:, 0], minlength=4) / 9
    probs = F.softmax(logits)
    expected = F.softmax_backward(np.broadcast_to(4 * fraction / 9, probs.shape), F.SoftmaxCache(probs))
    assert np.allclose(dlogits, expected, rtol=1e-13, atol=1e-16), f"max difference {np.abs(dlogits - expected).max():.2e}"


def test_switch_loss_rejects_out_of_range_index():
    with pytest.raises(ValueError, match=r"expert_index must hold expert ids in \[0, 3\)"):
        switch_loss_forward(np.zeros((2, 3)), np.array([[0], [3]]))


# Router z-loss


@pytest.mark.ex3_3
def test_z_loss_zero_logits():
    loss, _ = z_loss_forward(np.zeros((5, 8)))
    assert loss == pytest.approx(math.log(8) ** 2, rel=1e-14), f"z-loss {loss}, expected log(8)^2"


@pytest.mark.ex3_3
def test_z_loss_is_mean_of_squares():
    logits = np.array([[0.0, 0.0], [3.0, 3.0]])
    loss, _ = z_loss_forward(logits)
    expected = (math.log(2) ** 2 + (3 + math.log(2)) ** 2) / 2
    assert loss == pytest.approx(expected, rel=1e-14), f"z-loss {loss}, expected the mean of squares {expected}"


@pytest.mark.ex3_3
def test_z_loss_gradcheck():
    check_function(z_loss_forward, z_loss_backward, np.random.default_rng(3).standard_normal((7, 5)))


@pytest.mark.ex3_3
def test_z_loss_extreme_logits_stay_finite():
    logits = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4]])
    loss, cache = z_loss_forward(logits)
    dlogits = z_loss_backward(1.0, cache)
    expected = (1e4**2 + (-1e4 + math.log(3)) ** 2) / 2
    assert loss == pytest.approx(expected, rel=1e-12), f"z-loss {loss}, expected {expected}"
    assert np.all(np.isfinite(dlogits)), f"dlogits {dlogits}"


# Importance loss


@pytest.mark.ex3_4
def test_importance_loss_uniform_is_zero():
    expert_index = uniform_assignments(12, 4, 2)
    loss, _ = importance_loss_forward(np.full((12, 2), 0.5), expert_index, n_experts=4)
    assert loss == pytest.approx(0.0, abs=1e-28), f"equal importance gives {loss}, expected 0"


@pytest.mark.ex3_4
def test_importance_loss_one_expert_is_e_minus_one():
    loss, _ = importance_loss_forward(np.ones((10, 1)), np.zeros((10, 1), dtype=int), n_experts=5)
    assert loss == pytest.approx(4.0, rel=1e-14), f"all importance on one of 5 experts gives {loss}, expected 4"


@pytest.mark.ex3_4
def test_importance_loss_gradcheck():
    rng = np.random.default_rng(4)
    logits = rng.standard_normal((10, 5))
    gates = rng.uniform(0.1, 1.0, size=(10, 2))
    check_function(
        importance_loss_forward, importance_loss_backward, gates, select_top_k(logits, 2), forward_kwargs={"n_experts": 5}, rng=rng
    )


# Smooth load loss


def test_normal_cdf_matches_math_erfc():
    z = np.concatenate([np.linspace(-36.0, 36.0, 7201), [-8.3, -2.83, -1.414, 0.0, 1.414, 2.83]])
    expected = np.array([0.5 * math.erfc(-v / math.sqrt(2.0)) for v in z])
    relative = np.abs(normal_cdf(z) - expected) / expected
    assert relative.max() < 1e-12, f"largest relative error {relative.max():.2e} at z={z[relative.argmax()]}"


def test_normal_pdf_is_cdf_derivative():
    z = np.linspace(-6.0, 6.0, 25)
    h = 1e-5
    numeric = (normal_cdf(z + h) - normal_cdf(z - h)) / (2 * h)
    # Round-off of the difference quotient is about eps / h = 2e-11, truncation about h^2 = 1e-10.
    assert np.allclose(numeric, normal_pdf(z), rtol=0, atol=1e-9), f"max difference {np.abs(numeric - normal_pdf(z)).max():.2e}"


def load_inputs(rng, n_tokens=10, n_experts=5, top_k=2, gap=0.05):
    """Draw clean logits, a noise scale and noisy logits whose top-k margins stay above ``gap``."""
    while True:
        clean = rng.standard_normal((n_tokens, n_experts))
        scale = rng.uniform(0.5, 1.5, size=(n_tokens, n_experts))
        noisy = clean + rng.standard_normal((n_tokens, n_experts)) * scale
        if np.min(np.diff(np.sort(noisy, axis=1), axis=1)) > gap:
            return clean, noisy, scale


def load_choices(out, cache):
    return [cache.selected, cache.kth, cache.next_after_kth]


@pytest.mark.ex3_4
@pytest.mark.parametrize("top_k", [1, 2, 4])
def test_load_loss_gradcheck(top_k):
    rng = np.random.default_rng(5)
    clean, noisy, scale = load_inputs(rng, top_k=top_k)
    report = check_function(
        load_loss_forward, load_loss_backward, clean, noisy, scale, forward_kwargs={"top_k": top_k}, choices=load_choices, rng=rng
    )
    for name in ("clean_logits", "noisy_logits", "noise_scale"):
        assert report[name].n_checked > clean.size // 2, f"{name}: only {report[name].n_checked} entries checked"


@pytest.mark.ex3_4
def test_load_loss_two_experts_follow_formula():
    # With E = 2 and k = 1, the threshold for either expert is the other expert's noisy logit.
    rng = np.random.default_rng(6)
    clean, noisy, scale = load_inputs(rng, n_tokens=6, n_experts=2, top_k=1)
    probability = normal_cdf((clean - noisy[:, ::-1]) / scale)
    load = probability.sum(axis=0)
    expected = np.var(load) / np.mean(load) ** 2
    loss, _ = load_loss_forward(clean, noisy, scale, top_k=1)
    assert loss == pytest.approx(expected, rel=1e-13), f"load loss {loss}, expected {expected}"


def test_load_loss_rejects_zero_noise():
    clean, noisy, scale = load_inputs(np.random.default_rng(7))
    scale[0, 0] = 0.0
    with pytest.raises(ValueError, match="the load loss needs noise"):
        load_loss_forward(clean, noisy, scale, top_k=2)


def test_load_loss_rejects_full_top_k():
    clean, noisy, scale = load_inputs(np.random.default_rng(8), n_experts=3)
    with pytest.raises(ValueError, match="needs top_k < n_experts"):
        load_loss_forward(clean, noisy, scale, top_k=3)


@pytest.mark.ex3_4
def test_load_loss_extreme_logits_stay_finite():
    clean = np.array([[1e4, -1e4, 0.0, 5.0], [-1e4, 1e4, 1e4, 0.0]])
    scale = np.full(clean.shape, 0.7)
    noisy = clean + 0.3 * scale
    loss, cache = load_loss_forward(clean, noisy, scale, top_k=1)
    gradients = load_loss_backward(1.0, cache)
    assert np.isfinite(loss), f"load loss {loss}"
    for name, grad in zip(("dclean", "dnoisy", "dscale"), gradients):
        assert np.all(np.isfinite(grad)), f"{name} {grad}"


@pytest.mark.parametrize(
    "forward, backward, args",
    [
        (switch_loss_forward, switch_loss_backward, "switch"),
        (z_loss_forward, z_loss_backward, "z"),
        (importance_loss_forward, importance_loss_backward, "importance"),
        (load_loss_forward, load_loss_backward, "load"),
    ],
)
def test_balancing_backward_leaves_cache_unchanged(forward, backward, args):
    rng = np.random.default_rng(9)
    clean, noisy, scale = load_inputs(rng)
    calls = {
        "switch": ((noisy, select_top_k(noisy, 2)), {}),
        "z": ((noisy,), {}),
        "importance": ((rng.uniform(0.1, 1, (10, 2)), select_top_k(noisy, 2)), {"n_experts": 5}),
        "load": ((clean, noisy, scale), {"top_k": 2}),
    }
    positional, keywords = calls[args]
    _, cache = forward(*positional, **keywords)
    saved = [np.array(field, copy=True) for field in cache if isinstance(field, np.ndarray)]
    backward(1.0, cache)
    after = [field for field in cache if isinstance(field, np.ndarray)]
    for before, now in zip(saved, after):
        assert np.array_equal(before, now), f"{backward.__name__} modified its cache in place"
