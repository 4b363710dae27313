"""Top-k gating (both conventions) and noisy router logits: behaviour and gradients."""

import numpy as np
import pytest

from tinycond import functional as F
from tinycond.gradcheck import check_function
from tinycond.moe.gating import (
    GATINGS,
    noisy_logits_backward,
    noisy_logits_forward,
    select_top_k,
    topk_gating_backward,
    topk_gating_forward,
)

pytestmark = pytest.mark.lesson3


def separated_logits(rng, n_tokens, n_experts, gap=0.05):
    """Draw logits whose sorted entries differ by at least ``gap`` in every row, away from top-k ties."""
    while True:
        logits = rng.standard_normal((n_tokens, n_experts))
        ordered = np.sort(logits, axis=1)
        if np.min(np.diff(ordered, axis=1)) > gap:
            return logits


def choices_of_gating(out, cache):
    return cache.expert_index


@pytest.mark.parametrize("top_k", [1, 2, 3])
def test_select_top_k_picks_largest(top_k):
    logits = np.random.default_rng(0).standard_normal((20, 6))
    expert_index = select_top_k(logits, top_k)
    expected = np.argsort(logits, axis=1)[:, ::-1][:, :top_k]
    assert np.array_equal(expert_index, expected), f"selected {expert_index[:3]}, expected {expected[:3]}"


def test_select_top_k_ties_go_to_lower_index():
    logits = np.array([[1.0, 2.0, 2.0, 2.0, 0.0]])
    expert_index = select_top_k(logits, 2)
    assert expert_index.tolist() == [[1, 2]], f"ties broke as {expert_index.tolist()}, expected [[1, 2]]"


def test_select_top_k_batch_equals_single_tokens():
    logits = np.random.default_rng(1).standard_normal((9, 7))
    batch = select_top_k(logits, 3)
    single = np.concatenate([select_top_k(logits[t : t + 1], 3) for t in range(len(logits))])
    assert np.array_equal(batch, single), "routing a batch differs from routing each token alone"


@pytest.mark.ex3_1
@pytest.mark.parametrize("top_k", [1, 2, 4])
def test_topk_softmax_gates_sum_to_one(top_k):
    logits = np.random.default_rng(2).standard_normal((15, 6))
    gates, _ = topk_gating_forward(logits, top_k=top_k, gating="topk_softmax")
    sums = gates.sum(axis=1)
    assert np.allclose(sums, 1.0, rtol=0, atol=1e-14), f"gate sums range from {sums.min()} to {sums.max()}"


@pytest.mark.ex3_1
def test_topk_softmax_equals_renormalised_full_softmax():
    logits = np.random.default_rng(3).standard_normal((10, 5))
    gates, cache = topk_gating_forward(logits, top_k=2, gating="topk_softmax")
    kept = np.take_along_axis(F.softmax(logits), cache.expert_index, axis=1)
    expected = kept / kept.sum(axis=1, keepdims=True)
    assert np.allclose(gates, expected, rtol=1e-13, atol=0), f"max difference {np.abs(gates - expected).max():.2e}"


@pytest.mark.ex3_1
def test_softmax_topk_gates_are_full_probabilities():
    logits = np.random.default_rng(4).standard_normal((10, 5))
    gates, cache = topk_gating_forward(logits, top_k=2, gating="softmax_topk")
    expected = np.take_along_axis(F.softmax(logits), cache.expert_index, axis=1)
    assert np.allclose(gates, expected, rtol=1e-13, atol=0), f"max difference {np.abs(gates - expected).max():.2e}"
    assert np.all(gates.sum(axis=1) < 1.0), "kept probabilities of 2 of 5 experts must sum to less than one"


@pytest.mark.ex3_1
def test_topk_gates_are_sorted_descending():
    logits = np.random.default_rng(5).standard_normal((12, 6))
    for gating in GATINGS:
        gates, _ = topk_gating_forward(logits, top_k=3, gating=gating)
        assert np.all(np.diff(gates, axis=1) <= 0), f"{gating} gates are not largest first"


@pytest.mark.ex3_1
@pytest.mark.parametrize("gating", GATINGS)
@pytest.mark.parametrize("top_k", [1, 2, 3, 5])
def test_topk_gating_gradcheck(gating, top_k):
    rng = np.random.default_rng(6)
    logits = separated_logits(rng, 8, 5)
    report = check_function(
        topk_gating_forward,
        topk_gating_backward,
        logits,
        forward_kwargs={"top_k": top_k, "gating": gating},
        choices=choices_of_gating,
        rng=rng,
    )
    assert report["router_logits"].n_checked == logits.size, f"only {report['router_logits'].n_checked} entries checked"


@pytest.mark.ex3_1
def test_topk_softmax_unselected_logits_get_zero_gradient():
    rng = np.random.default_rng(7)
    logits = rng.standard_normal((10, 6))
    gates, cache = topk_gating_forward(logits, top_k=2, gating="topk_softmax")
    dlogits = topk_gating_backward(rng.standard_normal(gates.shape), cache)
    selected = np.zeros(logits.shape, dtype=bool)
    np.put_along_axis(selected, cache.expert_index, True, axis=1)
    assert np.all(dlogits[~selected] == 0.0), f"largest unselected gradient {np.abs(dlogits[~selected]).max():.2e}"


@pytest.mark.ex3_1
def test_softmax_topk_unselected_logits_get_gradient():
    rng = np.random.default_rng(8)
    logits = rng.standard_normal((10, 6))
    gates, cache = topk_gating_forward(logits, top_k=1, gating="softmax_topk")
    dlogits = topk_gating_backward(rng.standard_normal(gates.shape), cache)
    selected = np.zeros(logits.shape, dtype=bool)
    np.put_along_axis(selected, cache.expert_index, True, axis=1)
    assert np.all(dlogits[~selected] != 0.0), "the shared normaliser must pass gradient to every unselected logit"


@pytest.mark.ex3_1
def test_topk_softmax_all_experts_is_softmax():
    logits = np.random.default_rng(9).standard_normal((6, 4))
    gates, cache = topk_gating_forward(logits, top_k=4, gating="topk_softmax")
    full = np.take_along_axis(F.softmax(logits), cache.expert_index, axis=1)
    assert np.allclose(gates, full, rtol=1e-13, atol=0), f"max difference {np.abs(gates - full).max():.2e}"


@pytest.mark.ex3_1
@pytest.mark.parametrize("gating", GATINGS)
def test_topk_gating_extreme_logits_stay_finite(gating):
    logits = np.array([[1e4, -1e4, 0.0, 5e3], [-1e4, -1e4, -1e4, 1e4]])
    gates, cache = topk_gating_forward(logits, top_k=2, gating=gating)
    dlogits = topk_gating_backward(np.ones_like(gates), cache)
    assert np.all(np.isfinite(gates)), f"gates {gates}"
    assert np.all(np.isfinite(dlogits)), f"dlogits {dlogits}"


@pytest.mark.ex3_1
@pytest.mark.parametrize("gating", GATINGS)
def test_topk_gating_backward_leaves_inputs_unchanged(gating):
    rng = np.random.default_rng(10)
    gates, cache = topk_gating_forward(rng.standard_normal((5, 4)), top_k=2, gating=gating)
    dgates = rng.standard_normal(gates.shape)
    saved_dgates, saved_gates = dgates.copy(), cache.gates.copy()
    topk_gating_backward(dgates, cache)
    assert np.array_equal(dgates, saved_dgates), "backward modified dgates in place"
    assert np.array_equal(cache.gates, saved_gates), "backward modified the cached gates in place"


def noisy_inputs(rng, n_tokens=7, d_model=3, n_experts=5):
    x = rng.standard_normal((n_tokens, d_model))
    W_gate = rng.standard_normal((d_model, n_experts))
    W_noise = 0.5 * rng.standard_normal((d_model, n_experts))
    noise = rng.standard_normal((n_tokens, n_experts))
    return x, W_gate, W_noise, noise


@pytest.mark.ex3_2
@pytest.mark.parametrize("noise_std", [1.0, 0.3])
def test_noisy_logits_gradcheck(noise_std):
    rng = np.random.default_rng(11)
    x, W_gate, W_noise, noise = noisy_inputs(rng)
    report = check_function(
        noisy_logits_forward,
        noisy_logits_backward,
        x,
        W_gate,
        W_noise,
        forward_kwargs={"noise": noise, "noise_std": noise_std},
        rng=rng,
    )
    for name in ("x", "W_gate", "W_noise"):
        assert report[name].n_checked > 0, f"{name} was not checked"


def test_noisy_logits_follow_formula():
    rng = np.random.default_rng(12)
    x, W_gate, W_noise, noise = noisy_inputs(rng)
    (noisy, clean, scale), _ = noisy_logits_forward(x, W_gate, W_noise, noise=noise, noise_std=0.5)
    expected_scale = 0.5 * np.log1p(np.exp(x @ W_noise))
    assert np.allclose(clean, x @ W_gate, rtol=1e-14, atol=1e-14), "clean logits differ from x @ W_gate"
    assert np.allclose(scale, expected_scale, rtol=1e-14, atol=0), "noise scale differs from noise_std * softplus(x @ W_noise)"
    assert np.allclose(noisy, clean + noise * expected_scale, rtol=1e-14, atol=1e-14), "noisy logits differ from clean + noise * scale"


def test_noisy_logits_zero_std_are_clean():
    rng = np.random.default_rng(13)
    x, W_gate, W_noise, noise = noisy_inputs(rng)
    (noisy, clean, _), _ = noisy_logits_forward(x, W_gate, W_noise, noise=noise, noise_std=0.0)
    assert np.array_equal(noisy, clean), "noise_std=0 must leave the logits clean"


@pytest.mark.ex3_2
def test_noisy_logits_backward_accepts_missing_gradients():
    rng = np.random.default_rng(14)
    x, W_gate, W_noise, noise = noisy_inputs(rng)
    (noisy, _, _), cache = noisy_logits_forward(x, W_gate, W_noise, noise=noise)
    dnoisy = rng.standard_normal(noisy.shape)
    with_none = noisy_logits_backward((dnoisy, None, None), cache)
    with_zeros = noisy_logits_backward((dnoisy, np.zeros_like(dnoisy), np.zeros_like(dnoisy)), cache)
    for name, a, b in zip(("dx", "dW_gate", "dW_noise"), with_none, with_zeros):
        assert np.array_equal(a, b), f"{name} differs between None and zero upstream gradients"


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"top_k": 0}, "top_k"),
        ({"top_k": 6}, "top_k"),
        ({"top_k": 2, "gating": "softmax"}, "gating"),
    ],
)
def test_topk_gating_rejects_bad_options(kwargs, match):
    logits = np.zeros((3, 5))
    with pytest.raises(ValueError, match=match):
        topk_gating_forward(logits, **kwargs)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_topk_gating_rejects_non_finite_logits(bad):
    logits = np.zeros((3, 4))
    logits[1, 2] = bad
    with pytest.raises(ValueError, match="router_logits contains 1 NaN or infinite"):
        topk_gating_forward(logits, top_k=2)


def test_topk_gating_rejects_integer_logits():
    with pytest.raises(TypeError, match="router_logits must have a floating-point dtype"):
        topk_gating_forward(np.zeros((3, 4), dtype=int), top_k=2)


def test_noisy_logits_reject_negative_noise_std():
    x, W_gate, W_noise, noise = noisy_inputs(np.random.default_rng(15))
    with pytest.raises(ValueError, match=r"noise_std must be a finite number >= 0, got -0.5"):
        noisy_logits_forward(x, W_gate, W_noise, noise=noise, noise_std=-0.5)


def test_noisy_logits_reject_wrong_noise_shape():
    x, W_gate, W_noise, noise = noisy_inputs(np.random.default_rng(16))
    with pytest.raises(ValueError, match=r"noise must have shape \(N, E\) = \(7, 5\), got \(7, 4\)"):
        noisy_logits_forward(x, W_gate, W_noise, noise=noise[:, :4])


def test_noisy_logits_reject_mismatched_weights():
    x, W_gate, W_noise, noise = noisy_inputs(np.random.default_rng(17))
    with pytest.raises(ValueError, match="W_gate and W_noise must both have shape"):
        noisy_logits_forward(x, W_gate[:2], W_noise, noise=noise)
