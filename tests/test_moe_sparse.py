"""Capacity, dispatch and the sparse mixture-of-experts layer: behaviour and gradients."""

import tracemalloc

import numpy as np
import pytest

from tinycond import layers as L
from tinycond.gradcheck import check_function, check_module
from tinycond.moe import DenseMoE, SparseMoE, sparse_moe_backward, sparse_moe_forward
from tinycond.moe.dense import init_expert_weights
from tinycond.moe.dispatch import (
    combine_slots,
    expert_capacity,
    grouped_mlp_backward,
    grouped_mlp_forward,
    plan_dispatch,
)
from tinycond.moe.gating import select_top_k

pytestmark = pytest.mark.lesson3


# Capacity


@pytest.mark.ex3_5
@pytest.mark.parametrize(
    "capacity_factor, n_tokens, top_k, n_experts, expected",
    [
        (1.1, 100, 1, 2, 55),  # 1.1 * 100 / 2 is 55.000000000000007 in floating point
        (1.0, 4096, 2, 16, 512),
        (1.25, 4096, 2, 16, 640),
        (1.0, 10, 1, 3, 4),  # ceil(3.33)
        (0.01, 10, 1, 4, 1),  # a positive factor always leaves room for one
        (8.0, 10, 2, 2, 10),  # clamped to N: an expert takes each token at most once
    ],
)
def test_expert_capacity_table(capacity_factor, n_tokens, top_k, n_experts, expected):
    capacity = expert_capacity(capacity_factor, n_tokens, top_k, n_experts)
    assert capacity == expected, f"capacity({capacity_factor}, N={n_tokens}, k={top_k}, E={n_experts}) = {capacity}, expected {expected}"


def test_expert_capacity_none_means_no_limit():
    assert expert_capacity(None, 10, 2, 4) is None, "capacity_factor=None must give no capacity limit"


@pytest.mark.parametrize("capacity_factor", [0.0, -1.0, float("inf"), float("nan")])
def test_expert_capacity_rejects_bad_factor(capacity_factor):
    with pytest.raises(ValueError, match="capacity_factor must be a finite number > 0"):
        expert_capacity(capacity_factor, 10, 1, 2)


# Dispatch plan


@pytest.mark.ex3_5
def test_plan_groups_every_assignment_once():
    expert_index = select_top_k(np.random.default_rng(0).standard_normal((20, 6)), 2)
    plan = plan_dispatch(expert_index, 6)
    assert plan.n_dropped == 0, f"{plan.n_dropped} assignments dropped without a capacity"
    assert sorted(plan.flat_position.tolist()) == list(range(40)), "some (token, slot) place is missing or repeated"
    experts = expert_index.reshape(-1)[plan.flat_position]
    assert np.all(np.diff(experts) >= 0), "assignments are not grouped by expert in increasing order"
    for e in range(6):
        start, stop = plan.group_offsets[e], plan.group_offsets[e + 1]
        assert stop - start == np.sum(expert_index == e), f"expert {e} slice has {stop - start} rows"


@pytest.mark.ex3_5
def test_plan_position_priority_order():
    # Expert 0 is the first choice of tokens 2 and 4 and the second choice of tokens 0 and 1.
    expert_index = np.array([[1, 0], [2, 0], [0, 1], [1, 2], [0, 2]])
    plan = plan_dispatch(expert_index, 3, capacity=3)
    kept_by_zero = sorted(plan.token[plan.group_offsets[0] : plan.group_offsets[1]].tolist())
    assert kept_by_zero == [0, 2, 4], f"expert 0 kept tokens {kept_by_zero}, expected first choices 2, 4 then token 0"
    assert not plan.kept[1, 1], "token 1's second choice should be dropped"
    assert plan.n_dropped == 1, f"{plan.n_dropped} dropped, expected 1"


@pytest.mark.ex3_5
def test_plan_gate_priority_keeps_largest_top_gates():
    expert_index = np.zeros((4, 1), dtype=int)
    gates = np.array([[0.2], [0.9], [0.5], [0.7]])
    plan = plan_dispatch(expert_index, 2, capacity=2, priority="gate", gates=gates)
    kept = sorted(plan.token.tolist())
    assert kept == [1, 3], f"kept tokens {kept}, expected the two largest gates, tokens 1 and 3"


@pytest.mark.ex3_5
def test_plan_gate_priority_uses_top_gate_at_second_choice():
    # Expert 2 is the second choice of both tokens and has room for one.
    # Token 1 has the larger top gate (0.9 > 0.6) but the smaller second gate
    # (0.05 < 0.4), so ranking by the assignment's own gate, or by position,
    # would keep token 0 instead.
    expert_index = np.array([[0, 2], [1, 2]])
    gates = np.array([[0.6, 0.4], [0.9, 0.05]])
    plan = plan_dispatch(expert_index, 3, capacity=1, priority="gate", gates=gates)
    kept_by_two = plan.token[plan.group_offsets[2] : plan.group_offsets[3]].tolist()
    assert kept_by_two == [1], f"expert 2 kept tokens {kept_by_two}, expected [1], the larger top gate 0.9"
    assert not plan.kept[0, 1], "token 0's second choice (own gate 0.4, top gate 0.6) should be dropped"


@pytest.mark.ex3_5
@pytest.mark.parametrize("priority", ["position", "gate"])
def test_plan_respects_capacity(priority):
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((30, 4)) + np.array([2.0, 0.0, 0.0, -1.0])  # expert 0 is popular
    expert_index = select_top_k(logits, 2)
    gates = rng.uniform(size=(30, 2))
    plan = plan_dispatch(expert_index, 4, capacity=10, priority=priority, gates=gates)
    sizes = np.diff(plan.group_offsets)
    assert sizes.max() <= 10, f"an expert took {sizes.max()} assignments over capacity 10"
    assert plan.n_dropped == int(np.sum(np.maximum(plan.expert_counts - 10, 0))), "dropped count disagrees with the counts"
    assert plan.n_dropped == int(np.sum(~plan.kept)), "dropped count disagrees with the kept mask"


@pytest.mark.ex3_5
def test_combine_slots_matches_add_at():
    rng = np.random.default_rng(2)
    expert_index = select_top_k(rng.standard_normal((12, 5)), 3)
    plan = plan_dispatch(expert_index, 5, capacity=6)
    values = rng.standard_normal((len(plan.token), 4))
    expected = np.zeros((12, 4))
    np.add.at(expected, plan.token, values)
    combined = combine_slots(values, plan, 12)
    assert np.allclose(combined, expected, rtol=1e-14, atol=1e-15), f"max difference {np.abs(combined - expected).max():.2e}"


def grouped_inputs(rng, n_experts=3, d_model=4, d_hidden=5, d_out=3):
    sizes = np.array([4, 0, 3])[:n_experts]
    W1, b1, W2, b2 = init_expert_weights(n_experts, d_model, d_hidden, d_out, rng)
    b1 = b1 + 0.1 * rng.standard_normal(b1.shape)
    x_sorted = rng.standard_normal((sizes.sum(), d_model))
    offsets = np.concatenate(([0], np.cumsum(sizes)))
    return x_sorted, W1, b1, W2, b2, offsets


@pytest.mark.ex3_6
def test_grouped_mlp_matches_each_expert():
    x_sorted, W1, b1, W2, b2, offsets = grouped_inputs(np.random.default_rng(3))
    y_sorted, _ = grouped_mlp_forward(x_sorted, W1, b1, W2, b2, group_offsets=offsets)
    for e in range(3):
        rows = slice(offsets[e], offsets[e + 1])
        expected, _ = L.mlp_forward(x_sorted[rows], W1[e], b1[e], W2[e], b2[e])
        assert np.allclose(y_sorted[rows], expected, rtol=1e-14, atol=1e-14), f"expert {e} output differs"


@pytest.mark.ex3_6
def test_grouped_mlp_gradcheck():
    rng = np.random.default_rng(4)
    x_sorted, W1, b1, W2, b2, offsets = grouped_inputs(rng)
    report = check_function(
        grouped_mlp_forward,
        grouped_mlp_backward,
        x_sorted, W1, b1, W2, b2,
        forward_kwargs={"group_offsets": offsets},
        choices=lambda out, cache: [c.activation.positive for c in cache.experts if c is not None],
        rng=rng,
    )
    assert np.all(report["W1"].n_checked > 0), "W1 was not checked"
    empty_expert = 1
    _, cache = grouped_mlp_forward(x_sorted, W1, b1, W2, b2, group_offsets=offsets)
    _, dW1, _, _, _ = grouped_mlp_backward(rng.standard_normal((len(x_sorted), 3)), cache)
    assert np.all(dW1[empty_expert] == 0.0), "an expert with no tokens must get zero gradient"


# The sparse layer as a pure pair


def pair_inputs(rng, n_tokens=10, d_model=4, d_hidden=5, n_experts=4, d_out=3, noisy=False):
    x = rng.standard_normal((n_tokens, d_model))
    W_gate = rng.standard_normal((d_model, n_experts))
    W1, b1, W2, b2 = init_expert_weights(n_experts, d_model, d_hidden, d_out, rng)
    b1 = b1 + 0.1 * rng.standard_normal(b1.shape)
    b2 = b2 + 0.1 * rng.standard_normal(b2.shape)
    inputs = [x, W_gate, W1, b1, W2, b2]
    if noisy:
        inputs.append(0.3 * rng.standard_normal((d_model, n_experts)))
    return inputs


def reference_output(x, W_gate, W1, b1, W2, b2, gates, expert_index, kept):
    """Compute sum over kept slots of gate * expert(x) with every expert run densely on every token."""
    all_out, _ = L.mlp_forward(x, W1, b1, W2, b2)  # (E, N, d_out)
    picked = all_out[expert_index, np.arange(len(x))[:, None]]  # (N, k, d_out)
    return np.sum((gates * kept)[:, :, None] * picked, axis=1)


@pytest.mark.ex3_6
@pytest.mark.parametrize("gating", ["topk_softmax", "softmax_topk"])
@pytest.mark.parametrize("capacity_factor", [None, 0.75])
def test_sparse_forward_matches_dense_reference(gating, capacity_factor):
    x, W_gate, W1, b1, W2, b2 = pair_inputs(np.random.default_rng(5))
    (y, _), cache = sparse_moe_forward(x, W_gate, W1, b1, W2, b2, top_k=2, gating=gating, capacity_factor=capacity_factor)
    expected = reference_output(x, W_gate, W1, b1, W2, b2, cache.gating.gates, cache.gating.expert_index, cache.plan.kept)
    assert np.allclose(y, expected, rtol=1e-13, atol=1e-14), f"max difference {np.abs(y - expected).max():.2e}"


@pytest.mark.ex3_6
def test_sparse_with_all_experts_equals_dense_mixture():
    dense = DenseMoE(4, 6, 3, rng=6)
    sparse = SparseMoE(4, 6, 3, top_k=3, rng=7)
    for name in ("W1", "b1", "W2", "b2"):
        sparse.params[name][...] = dense.params[name]
    sparse.params["W_gate"][...] = dense.params["W_gate"]
    x = np.random.default_rng(8).standard_normal((9, 4))
    difference = np.abs(sparse(x) - dense(x)).max()
    assert difference < 1e-13, f"top_k = E with softmax over the kept logits differs from the dense mixture by {difference:.2e}"


@pytest.mark.ex3_6
def test_sparse_dropped_tokens_output_zero():
    x, W_gate, W1, b1, W2, b2 = pair_inputs(np.random.default_rng(9), n_tokens=12)
    W_gate[:, 0] += 5.0 * np.sign(x.mean(axis=0))  # crowd expert 0
    (y, _), cache = sparse_moe_forward(x, W_gate, W1, b1, W2, b2, top_k=1, capacity_factor=0.5)
    dropped = ~cache.plan.kept[:, 0]
    assert dropped.any(), "the set-up should drop at least one token"
    assert np.all(y[dropped] == 0.0), "a dropped token must get a zero output"


def pair_choices(out, cache):
    positive = [c.activation.positive for c in cache.experts.experts if c is not None]
    return [cache.gating.expert_index, cache.plan.kept] + positive


@pytest.mark.ex3_6
@pytest.mark.parametrize(
    "options",
    [
        {},
        {"gating": "softmax_topk", "balance": "switch", "z_loss_coef": 0.1},
        {"capacity_factor": 0.75, "balance": "importance", "balance_coef": 0.5},
        {"capacity_factor": 1.0, "priority": "gate", "balance": "load", "noisy": True},
    ],
    ids=["plain", "switch-z", "capacity-importance", "noisy-load-gate"],
)
def test_sparse_pair_gradcheck(options):
    rng = np.random.default_rng(10)
    options = dict(options)
    inputs = pair_inputs(rng, noisy=options.pop("noisy", False))
    if len(inputs) == 7:
        options["noise"] = rng.standard_normal((10, 4))
    report = check_function(
        sparse_moe_forward, sparse_moe_backward, *inputs, forward_kwargs={"top_k": 2, **options}, choices=pair_choices, rng=rng
    )
    for tensor in report.tensors:
        assert tensor.n_checked > 0, f"{tensor.name} was not checked"


# The SparseMoE module


def module_and_input(options, n_tokens=12, d_model=4, seed=11):
    rng = np.random.default_rng(seed)
    layer = SparseMoE(d_model, 6, 5, options.pop("top_k", 2), d_out=3, rng=rng, **options)
    for name in ("b1", "b2"):
        layer.params[name] += 0.1 * rng.standard_normal(layer.params[name].shape)
    if layer.noisy:
        layer.params["W_noise"] += 0.3 * rng.standard_normal(layer.params["W_noise"].shape)
    return layer, rng.standard_normal((n_tokens, d_model)), rng


MODULE_CASES = [
    {"top_k": 1, "gating": "softmax_topk", "balance": "switch"},
    {"top_k": 2, "gating": "topk_softmax", "balance": "switch", "z_loss_coef": 1e-2},
    {"top_k": 2, "gating": "softmax_topk", "balance": "importance", "capacity_factor": 1.0},
    {"top_k": 2, "noisy": True, "balance": "load", "capacity_factor": 1.0, "balance_coef": 0.3},
    {"top_k": 3, "noisy": True, "noise_std": 0.5, "balance": "switch", "capacity_factor": 0.8, "priority": "gate"},
]


@pytest.mark.ex3_6
@pytest.mark.parametrize("options", MODULE_CASES, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()))
def test_sparse_module_gradcheck(options):
    layer, x, rng = module_and_input(dict(options))
    noise = {"noise": rng.standard_normal((len(x), 5))} if layer.noisy else None
    report = check_module(layer, x, forward_kwargs=noise, rng=rng)
    names = {tensor.name for tensor in report.tensors}
    expected = {"x", "W_gate", "W1", "b1", "W2", "b2"} | ({"W_noise"} if layer.noisy else set())
    assert names == expected, f"checked {sorted(names)}, expected {sorted(expected)}"
    for tensor in report.tensors:
        assert tensor.n_checked > 0, f"{tensor.name} was not checked"


@pytest.mark.ex3_6
def test_sparse_module_reports_choices():
    layer, x, _ = module_and_input({"top_k": 2, "capacity_factor": 0.6, "balance": "switch"})
    layer(x)
    assert layer.expert_index.shape == (12, 2), f"expert_index shape {layer.expert_index.shape}"
    assert layer.gates.shape == (12, 2), f"gates shape {layer.gates.shape}"
    assert layer.router_probs.shape == (12, 5), f"router_probs shape {layer.router_probs.shape}"
    assert layer.expert_counts.sum() == 24, f"expert_counts sum to {layer.expert_counts.sum()}, expected N k = 24"
    assert layer.n_dropped == int(np.sum(~layer.kept)), f"n_dropped {layer.n_dropped} disagrees with the kept mask"
    assert layer.n_dropped > 0, "capacity factor 0.6 should drop some assignments"
    choices = layer.own_choices()
    assert {"expert_index", "kept", "positive"} <= set(choices), f"own_choices has {sorted(choices)}"


@pytest.mark.ex3_6
def test_sparse_module_aux_loss_is_scaled_sum():
    layer, x, _ = module_and_input({"balance": "switch", "balance_coef": 0.2, "z_loss_coef": 0.05})
    layer(x)
    expected = 0.2 * layer.balance_loss + 0.05 * layer.z_loss
    assert layer.aux_loss == pytest.approx(expected, rel=1e-14), f"aux_loss {layer.aux_loss}, expected {expected}"


@pytest.mark.ex3_6
def test_sparse_module_backward_adds_into_grads():
    layer, x, rng = module_and_input({"balance": "switch"})
    dy = rng.standard_normal((12, 3))
    layer.zero_grad()
    layer(x)
    layer.backward(dy)
    once = {name: grad.copy() for name, grad in layer.gradients()}
    layer(x)
    layer.backward(dy)
    for name, grad in layer.gradients():
        assert np.allclose(grad, 2 * once[name], rtol=1e-14, atol=0), f"{name} was overwritten instead of accumulated"


@pytest.mark.ex3_6
def test_sparse_module_backward_leaves_dy_unchanged():
    layer, x, rng = module_and_input({"noisy": True, "balance": "load"})
    layer(x)
    dy = rng.standard_normal((12, 3))
    saved = dy.copy()
    layer.backward(dy)
    assert np.array_equal(dy, saved), "backward modified dy in place"


def test_sparse_module_eval_draws_no_noise():
    layer, x, _ = module_and_input({"noisy": True})
    layer.eval()
    state = layer.rng.bit_generator.state
    first = layer(x)
    second = layer(x)
    assert layer.rng.bit_generator.state == state, "eval mode drew from the Generator"
    assert np.array_equal(first, second), "eval outputs differ between two calls"


def test_sparse_module_eval_skips_load_loss():
    layer, x, _ = module_and_input({"noisy": True, "balance": "load", "z_loss_coef": 0.1})
    layer.eval()
    layer(x)
    assert np.isnan(layer.balance_loss), f"load loss in eval mode reads {layer.balance_loss}, expected NaN"
    assert layer.aux_loss == pytest.approx(0.1 * layer.z_loss, rel=1e-14), "aux_loss should hold only the z-loss"


def test_sparse_module_training_noise_is_reproducible():
    outputs = []
    for _ in range(2):
        layer, x, _ = module_and_input({"noisy": True, "balance": "load"}, seed=12)
        outputs.append((layer(x), layer(x), layer.aux_loss))
    assert np.array_equal(outputs[0][0], outputs[1][0]), "same seed gave different first outputs"
    assert np.array_equal(outputs[0][1], outputs[1][1]), "same seed gave different second outputs"
    assert outputs[0][2] == outputs[1][2], "same seed gave different auxiliary losses"
    assert not np.array_equal(outputs[0][0], outputs[0][1]), "training mode should draw fresh noise on each call"


def test_sparse_forward_builds_no_per_expert_hidden_array():
    # A dense mixture keeps (E, N, d_hidden) hidden activations, the sparse path only (N k, d_hidden).
    n_tokens, d_model, d_hidden, n_experts = 512, 8, 64, 64
    layer = SparseMoE(d_model, d_hidden, n_experts, top_k=2, rng=13)
    x = np.random.default_rng(14).standard_normal((n_tokens, d_model))
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        baseline, _ = tracemalloc.get_traced_memory()
        layer(x)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    dense_hidden_bytes = n_experts * n_tokens * d_hidden * 8
    assert peak - baseline < dense_hidden_bytes / 4, (
        f"forward peak {peak - baseline} bytes, against {dense_hidden_bytes} for one (E, N, d_hidden) array"
    )


# Bad input


@pytest.mark.parametrize(
    "options, error, match",
    [
        ({"top_k": 0}, ValueError, r"top_k must be a positive integer \(>= 1\), got 0"),
        ({"top_k": 6}, ValueError, "top_k must be between 1 and n_experts=5, got 6"),
        ({"top_k": 1.5}, TypeError, "top_k must be a positive integer"),
        ({"capacity_factor": 0.0}, ValueError, "capacity_factor must be a finite number > 0, got 0.0"),
        ({"capacity_factor": -1.0}, ValueError, "capacity_factor must be a finite number > 0, got -1.0"),
        ({"noisy": True, "noise_std": -0.1}, ValueError, "noise_std must be a finite number >= 0, got -0.1"),
        ({"gating": "argmax"}, ValueError, "gating must be one of"),
        ({"balance": "cv"}, ValueError, "balance must be one of"),
        ({"priority": "random"}, ValueError, "priority must be one of"),
        ({"balance": "load"}, ValueError, "balance='load' needs noisy gating"),
        ({"balance": "load", "noisy": True, "top_k": 5}, ValueError, "needs top_k < n_experts"),
        ({"balance_coef": -1.0}, ValueError, "balance_coef must be a finite number >= 0"),
        ({"rng": None}, TypeError, "rng must be a numpy.random.Generator or an integer seed"),
    ],
)
def test_sparse_module_rejects_bad_options(options, error, match):
    arguments = {"rng": 0, **options}
    with pytest.raises(error, match=match):
        SparseMoE(4, 6, 5, **arguments)


def test_sparse_module_rejects_wrong_width():
    layer = SparseMoE(4, 6, 5, rng=0)
    with pytest.raises(ValueError, match=r"x must have last dimension 4, got shape \(3, 5\)"):
        layer(np.zeros((3, 5)))


def test_sparse_module_rejects_non_finite_router_logits():
    layer = SparseMoE(4, 6, 5, rng=0)
    layer.params["W_gate"][...] = 1.0
    x = np.full((3, 4), 1e308)  # finite, but each router logit sums to 4e308, past the float64 maximum
    with np.errstate(over="ignore", invalid="ignore"), pytest.raises(ValueError, match="router_logits contains .* NaN or infinite"):
        layer(x)


def test_sparse_module_rejects_nan_input():
    layer = SparseMoE(4, 6, 5, rng=0)
    x = np.zeros((3, 4))
    x[0, 0] = np.nan
    with pytest.raises(ValueError, match="x contains 1 NaN or infinite entries"):
        layer(x)


def test_sparse_module_rejects_noise_of_wrong_shape():
    layer = SparseMoE(4, 6, 5, noisy=True, rng=0)
    with pytest.raises(ValueError, match=r"noise must have shape \(N, E\) = \(3, 5\), got \(3, 4\)"):
        layer(np.zeros((3, 4)), noise=np.zeros((3, 4)))


def test_sparse_module_rejects_noise_without_noisy():
    layer = SparseMoE(4, 6, 5, rng=0)
    with pytest.raises(ValueError, match="noisy=False"):
        layer(np.zeros((3, 4)), noise=np.zeros((3, 5)))


def test_sparse_pair_rejects_load_without_noise():
    x, W_gate, W1, b1, W2, b2 = pair_inputs(np.random.default_rng(15))
    with pytest.raises(ValueError, match="balance='load' needs noisy routing"):
        sparse_moe_forward(x, W_gate, W1, b1, W2, b2, top_k=2, balance="load")


def test_sparse_pair_rejects_mismatched_weights():
    x, W_gate, W1, b1, W2, b2 = pair_inputs(np.random.default_rng(16))
    with pytest.raises(ValueError, match=r"W_gate must have shape \(d_model, E\)"):
        sparse_moe_forward(x[:, :3], W_gate, W1, b1, W2, b2, top_k=2)


@pytest.mark.parametrize("options", [{}, {"noisy": True, "balance": "load"}, {"balance": "switch", "z_loss_coef": 1e-3}])
def test_sparse_module_float32_keeps_dtype(options):
    layer = SparseMoE(4, 6, 5, top_k=2, rng=17, dtype=np.float32, **options)
    x = np.random.default_rng(18).standard_normal((10, 4)).astype(np.float32)
    y = layer(x)
    dx = layer.backward(np.ones_like(y))
    assert y.dtype == np.float32, f"output dtype {y.dtype}"
    assert dx.dtype == np.float32, f"dx dtype {dx.dtype}"
    for name, grad in layer.gradients():
        assert grad.dtype == np.float32, f"{name} gradient dtype {grad.dtype}"
