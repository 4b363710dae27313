"""Causal self-attention: gradients, the mask, and behaviour from the math."""

import numpy as np
import pytest

from tinycond.attention import (
    CausalSelfAttention,
    causal_attention_backward,
    causal_attention_forward,
    causal_mask,
    causal_self_attention_backward,
    causal_self_attention_forward,
)
from tinycond.gradcheck import check_function, check_module

pytestmark = pytest.mark.lesson6


def _qkv(shape, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    return tuple(rng.standard_normal(shape) * scale for _ in range(3))


def _layer_weights(d_model, seed=0):
    rng = np.random.default_rng(seed)
    W_qkv = rng.standard_normal((d_model, 3 * d_model)) / np.sqrt(d_model)
    b_qkv = rng.standard_normal(3 * d_model) * 0.1
    W_out = rng.standard_normal((d_model, d_model)) / np.sqrt(d_model)
    b_out = rng.standard_normal(d_model) * 0.1
    return W_qkv, b_qkv, W_out, b_out


@pytest.mark.ex6_1
@pytest.mark.parametrize("shape", [(2, 3, 5, 4), (1, 1, 1, 2), (3, 6, 2), (2, 2, 7, 3), (5, 4)])
def test_attention_core_gradients(shape):
    report = check_function(causal_attention_forward, causal_attention_backward, *_qkv(shape), rng=1)
    for name in ("q", "k", "v"):
        assert report[name].n_checked >= min(np.prod(shape), 12), f"{name}: only {report[name].n_checked} entries checked"
    assert report.max_rel_error <= 1e-7, str(report)


@pytest.mark.ex6_1
def test_attention_core_backward_leaves_inputs_unchanged():
    q, k, v = _qkv((2, 2, 4, 3))
    out, cache = causal_attention_forward(q, k, v)
    dy = np.random.default_rng(1).standard_normal(out.shape)
    saved_dy, saved_cache = dy.copy(), [np.copy(a) for a in cache[:4]]
    causal_attention_backward(dy, cache)
    assert np.array_equal(dy, saved_dy), "backward changed dy in place"
    for name, before, after in zip(("q", "k", "v", "weights"), saved_cache, cache[:4]):
        assert np.array_equal(before, after), f"backward changed cache.{name} in place"


@pytest.mark.ex6_1
def test_attention_core_masked_gradient_is_zero():
    # The first query attends only to the first key, so the first key's gradient
    # comes only through it, and later keys never reach the first query.
    q, k, v = _qkv((1, 1, 4, 3))
    out, cache = causal_attention_forward(q, k, v)
    dy = np.zeros_like(out)
    dy[..., 0, :] = 1.0
    dq, dk, dv = causal_attention_backward(dy, cache)
    assert np.all(dk[..., 1:, :] == 0), f"later keys got gradient {dk[..., 1:, :]} from the first query"
    assert np.all(dv[..., 1:, :] == 0), f"later values got gradient {dv[..., 1:, :]} from the first query"


@pytest.mark.ex6_2
@pytest.mark.parametrize("n_heads", [1, 2, 4])
def test_self_attention_pair_gradients(n_heads):
    rng = np.random.default_rng(n_heads)
    x = rng.standard_normal((2, 5, 8))
    report = check_function(
        causal_self_attention_forward, causal_self_attention_backward, x, *_layer_weights(8, seed=n_heads),
        forward_kwargs={"n_heads": n_heads}, rng=2,
    )
    assert report["x"].n_checked == x.size, f"checked {report['x'].n_checked} of {x.size} entries of x"
    assert report.max_rel_error <= 1e-7, str(report)


@pytest.mark.ex6_2
def test_self_attention_module_gradients():
    layer = CausalSelfAttention(12, 3, rng=0)
    x = np.random.default_rng(1).standard_normal((3, 4, 12))
    report = check_module(layer, x, rng=3)
    assert {t.name for t in report.tensors} == {"x", "W_qkv", "b_qkv", "W_out", "b_out"}
    assert report.max_rel_error <= 1e-7, str(report)


def test_mask_is_lower_triangular():
    mask = causal_mask(4)
    assert mask.tolist() == [
        [True, False, False, False],
        [True, True, False, False],
        [True, True, True, False],
        [True, True, True, True],
    ]


def test_attention_weights_rows_sum_to_one():
    q, k, v = _qkv((2, 3, 6, 4))
    _, cache = causal_attention_forward(q, k, v)
    sums = cache.weights.sum(axis=-1)
    assert np.allclose(sums, 1.0, atol=1e-12), f"row sums range {sums.min()}..{sums.max()}"
    above = cache.weights[..., ~causal_mask(6)]
    assert np.all(above == 0.0), f"weights above the diagonal are not exactly zero: max {np.abs(above).max()}"


def test_attention_first_position_copies_first_value():
    q, k, v = _qkv((2, 2, 5, 3))
    out, _ = causal_attention_forward(q, k, v)
    assert np.allclose(out[..., 0, :], v[..., 0, :], atol=1e-14), "position 0 can only attend to itself"


def test_attention_zero_queries_give_running_mean():
    # With q = 0 every allowed score is 0, so position t averages v_0..v_t.
    _, k, v = _qkv((1, 1, 6, 3))
    out, _ = causal_attention_forward(np.zeros_like(k), k, v)
    running_mean = np.cumsum(v, axis=-2) / np.arange(1, 7)[:, None]
    assert np.allclose(out, running_mean, atol=1e-14), f"max deviation {np.abs(out - running_mean).max()}"


def test_attention_finite_at_extreme_logits():
    q, k, v = _qkv((1, 2, 5, 4), scale=100.0)  # scores around 1e4
    out, cache = causal_attention_forward(q, k, v)
    grads = causal_attention_backward(np.ones_like(out), cache)
    assert np.all(np.isfinite(out)), "output is not finite at scores near 1e4"
    for name, grad in zip(("dq", "dk", "dv"), grads):
        assert np.all(np.isfinite(grad)), f"{name} is not finite at scores near 1e4"


@pytest.mark.parametrize("position", [0, 3, 6])
def test_layer_output_ignores_later_tokens(position):
    layer = CausalSelfAttention(8, 2, rng=0)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 8, 8))
    changed = x.copy()
    changed[:, position + 1 :, :] = rng.standard_normal(changed[:, position + 1 :, :].shape)
    before = layer.forward(x)[:, : position + 1]
    after = layer.forward(changed)[:, : position + 1]
    assert np.array_equal(before, after), (
        f"outputs up to position {position} changed by {np.abs(before - after).max()} when only later tokens changed"
    )


def test_layer_output_depends_on_earlier_tokens():
    layer = CausalSelfAttention(8, 2, rng=0)
    x = np.random.default_rng(1).standard_normal((1, 5, 8))
    changed = x.copy()
    changed[:, 0, :] += 1.0
    difference = np.abs(layer.forward(x)[:, -1] - layer.forward(changed)[:, -1]).max()
    assert difference > 1e-3, f"the last position moved only {difference} when the first token changed"


def test_layer_keeps_float32():
    layer = CausalSelfAttention(8, 2, rng=0, dtype=np.float32)
    x = np.random.default_rng(1).standard_normal((2, 3, 8)).astype(np.float32)
    y = layer.forward(x)
    dx = layer.backward(np.ones_like(y))
    assert y.dtype == np.float32, f"output dtype {y.dtype}"
    assert dx.dtype == np.float32, f"dx dtype {dx.dtype}"


def test_layer_rejects_heads_not_dividing_width():
    with pytest.raises(ValueError, match="n_heads must divide d_model"):
        CausalSelfAttention(10, 3, rng=0)


def test_layer_rejects_wrong_width():
    layer = CausalSelfAttention(8, 2, rng=0)
    with pytest.raises(ValueError, match="last dimension 8"):
        layer.forward(np.zeros((2, 3, 6)))
