"""Adaptive computation time: the halting rule, the forward pass, the backward pass and the layer."""

import numpy as np
import pytest

from tinycond.act import ACT, act_backward, act_forward, halting_margin, halting_step
from tinycond.functional import sigmoid
from tinycond.gradcheck import DEFAULT_TOLERANCE, check_function, check_module

pytestmark = pytest.mark.lesson5

# Distance from the threshold 1 - epsilon that every compared cumulative
# halting sum keeps in the finite-difference checks. The checker moves a
# parameter by at most 2e-4, which moves a cumulative sum by far less here; the
# checker's guard would still catch a flip. A sample that halts at step 1 is
# always within epsilon of the threshold, so the margin must stay below it.
KINK_MARGIN = 0.002


def _params(rng, d_in, d_hidden, halting_bias=0.0, halting_scale=2.0):
    """Return ``(W_x, W_s, b, w_h, b_h)`` with a spread of halting steps."""
    W_x = rng.standard_normal((d_in + 1, d_hidden)) / np.sqrt(d_in + 1)
    W_s = rng.standard_normal((d_hidden, d_hidden)) / np.sqrt(d_hidden)
    b = 0.1 * rng.standard_normal(d_hidden)
    w_h = halting_scale * rng.standard_normal(d_hidden)
    b_h = np.array([halting_bias])
    return W_x, W_s, b, w_h, b_h


def _inputs_away_from_kinks(rng, params, shape, max_steps, margin=KINK_MARGIN):
    """Draw inputs of ``shape``, redrawing the samples whose halting sums come near the threshold."""
    x = rng.standard_normal(shape)
    for _ in range(200):
        _, cache = act_forward(x, *params, max_steps=max_steps)
        close = halting_margin(cache) < margin
        if not close.any():
            return x
        x[close] = rng.standard_normal((int(close.sum()),) + shape[1:])
    raise RuntimeError("could not draw inputs away from the halting threshold; change the seed")


def _reference_act(x, W_x, W_s, b, w_h, b_h, max_steps, epsilon):
    """Run adaptive computation time one sample, one input step and one ponder step at a time."""
    N, T, _ = x.shape
    d_hidden = W_s.shape[0]
    states = np.zeros((N, T, d_hidden))
    n_steps = np.zeros((N, T), dtype=int)
    remainder = np.zeros((N, T))
    for i in range(N):
        state_before = np.zeros(d_hidden)
        for t in range(T):
            state = state_before
            total = 0.0
            mixed = np.zeros(d_hidden)
            for n in range(1, max_steps + 1):
                features = np.append(x[i, t], 1.0 if n == 1 else 0.0)
                state = np.tanh(features @ W_x + state @ W_s + b)
                h = 1.0 / (1.0 + np.exp(-(state @ w_h + b_h[0])))
                if n == max_steps or total + h >= 1.0 - epsilon:
                    mixed += (1.0 - total) * state
                    n_steps[i, t], remainder[i, t] = n, 1.0 - total
                    break
                total += h
                mixed += h * state
            states[i, t] = mixed
            state_before = mixed
    return states, n_steps, remainder


def _assert_check_passed(report):
    """Assert that every tensor was checked, none skipped a halting change, and all passed."""
    for tensor in report.tensors:
        assert tensor.n_checked > 0, f"{tensor.name}: no entry was checked"
        assert not tensor.skipped, f"{tensor.name}: entries {tensor.skipped} changed a halting step"
    assert report.max_rel_error <= DEFAULT_TOLERANCE, f"max relative error {report.max_rel_error:.2e}"


# The halting rule

HALTING_CASES = [
    # cumulative, halting_probability, last, epsilon, halted, step_weight
    pytest.param(0.0, 0.5, False, 0.25, False, 0.5, id="below-threshold-continues"),
    pytest.param(0.5, 0.25, False, 0.25, True, 0.5, id="exactly-at-threshold-halts"),
    pytest.param(0.5, 0.5, False, 0.25, True, 0.5, id="above-threshold-halts"),
    pytest.param(0.25, 0.125, True, 0.25, True, 0.75, id="last-step-halts"),
    pytest.param(0.0, 1.0, False, 0.01, True, 1.0, id="first-step-remainder-is-one"),
]


@pytest.mark.ex5_1
@pytest.mark.parametrize("cumulative, probability, last, epsilon, halted, weight", HALTING_CASES)
def test_halting_step_cases(cumulative, probability, last, epsilon, halted, weight):
    got_halted, got_weight = halting_step(np.array([cumulative]), np.array([probability]), last=last, epsilon=epsilon)
    assert got_halted.dtype == bool, f"halted must be a bool array, got dtype {got_halted.dtype}"
    assert bool(got_halted[0]) == halted, f"halted is {got_halted[0]}, expected {halted}"
    assert got_weight[0] == weight, f"step weight is {got_weight[0]}, expected {weight}"


@pytest.mark.ex5_1
def test_halting_step_vectorised():
    cumulative = np.array([0.0, 0.3, 0.6, 0.9])
    probability = np.array([0.2, 0.2, 0.5, 0.05])
    halted, weight = halting_step(cumulative, probability, last=False, epsilon=0.01)
    assert halted.tolist() == [False, False, True, False], f"halted is {halted.tolist()}"
    np.testing.assert_allclose(weight, [0.2, 0.2, 0.4, 0.05], rtol=0, atol=1e-15)


# Forward pass


@pytest.fixture
def small_act():
    rng = np.random.default_rng(3)
    params = _params(rng, d_in=4, d_hidden=6)
    x = rng.standard_normal((20, 3, 4))
    return x, params


@pytest.mark.ex5_2
def test_act_forward_matches_reference(small_act):
    x, params = small_act
    (states, ponder_cost), cache = act_forward(x, *params, max_steps=5)
    ref_states, ref_steps, ref_remainder = _reference_act(x, *params, max_steps=5, epsilon=0.01)
    np.testing.assert_array_equal(cache.n_steps, ref_steps)
    np.testing.assert_allclose(cache.remainder, ref_remainder, rtol=0, atol=1e-12)
    np.testing.assert_allclose(states, ref_states, rtol=0, atol=1e-12)
    assert len(np.unique(cache.n_steps)) >= 3, f"the fixture should give varied halting steps, got {np.unique(cache.n_steps)}"


@pytest.mark.ex5_2
def test_act_forward_step_weights_are_a_distribution(small_act):
    x, params = small_act
    _, cache = act_forward(x, *params, max_steps=5)
    assert cache.step_weights.min() >= 0.0, f"a step weight is negative: {cache.step_weights.min()}"
    total = cache.step_weights.sum(axis=-1)
    np.testing.assert_allclose(total, 1.0, rtol=0, atol=1e-12)


@pytest.mark.ex5_2
def test_act_forward_weights_stop_at_halting_step(small_act):
    x, params = small_act
    _, cache = act_forward(x, *params, max_steps=5)
    after = np.arange(1, 6) > cache.n_steps[..., None]  # (N, T, max_steps)
    assert np.all(cache.step_weights[after] == 0.0), "a sample has weight on a step after it halted"
    assert np.all(cache.halting_probability[after] == 0.0), "a sample has a halting probability after it halted"
    last = np.take_along_axis(cache.step_weights, cache.n_steps[..., None] - 1, axis=-1)[..., 0]
    np.testing.assert_array_equal(last, cache.remainder)


@pytest.mark.ex5_2
def test_act_forward_ponder_is_steps_plus_remainder(small_act):
    x, params = small_act
    (_, ponder_cost), cache = act_forward(x, *params, max_steps=5)
    np.testing.assert_array_equal(ponder_cost, cache.n_steps + cache.remainder)
    before = np.arange(1, 6) < cache.n_steps[..., None]
    expected_remainder = 1.0 - np.where(before, cache.halting_probability, 0.0).sum(axis=-1)
    np.testing.assert_allclose(cache.remainder, expected_remainder, rtol=0, atol=1e-12)


@pytest.mark.ex5_2
def test_act_forward_computes_only_active_rows(small_act):
    x, params = small_act
    _, cache = act_forward(x, *params, max_steps=5)
    for t, steps in enumerate(cache.steps):
        computed = sum(step.rows.size for step in steps)
        expected = int(cache.n_steps[:, t].sum())
        assert computed == expected, f"input step {t} computed {computed} rows, expected sum of N(t) = {expected}"
        for n, step in enumerate(steps):
            running = int(np.sum(cache.n_steps[:, t] > n))
            assert step.rows.size == running, f"ponder step {n + 1} of input {t} ran {step.rows.size} rows, {running} active"


@pytest.mark.ex5_2
def test_act_forward_batch_matches_single_samples(small_act):
    x, params = small_act
    (states, _), cache = act_forward(x, *params, max_steps=5)
    for i in (0, 7, 19):
        (alone, _), alone_cache = act_forward(x[i : i + 1], *params, max_steps=5)
        np.testing.assert_allclose(alone[0], states[i], rtol=0, atol=1e-12)
        np.testing.assert_array_equal(alone_cache.n_steps[0], cache.n_steps[i])


@pytest.mark.ex5_2
@pytest.mark.parametrize("max_steps", [1, 3, 8])
def test_act_forward_huge_bias_halts_at_once(max_steps):
    rng = np.random.default_rng(0)
    params = _params(rng, d_in=3, d_hidden=4, halting_bias=1e4)
    (states, ponder_cost), cache = act_forward(rng.standard_normal((10, 2, 3)), *params, max_steps=max_steps)
    assert np.all(cache.n_steps == 1), f"halting steps {np.unique(cache.n_steps)}, expected all 1"
    assert np.all(cache.remainder == 1.0), f"remainders {np.unique(cache.remainder)}, expected all 1"
    assert np.all(ponder_cost == 2.0), f"ponder costs {np.unique(ponder_cost)}, expected N + R = 2"
    assert np.all(np.isfinite(states)), "states are not finite"


@pytest.mark.ex5_2
@pytest.mark.parametrize("max_steps", [1, 3, 8])
def test_act_forward_negative_bias_runs_max_steps(max_steps):
    rng = np.random.default_rng(0)
    params = _params(rng, d_in=3, d_hidden=4, halting_bias=-1e4)
    (states, ponder_cost), cache = act_forward(rng.standard_normal((10, 2, 3)), *params, max_steps=max_steps)
    assert np.all(cache.n_steps == max_steps), f"halting steps {np.unique(cache.n_steps)}, expected all {max_steps}"
    assert np.all(cache.remainder == 1.0), f"remainders {np.unique(cache.remainder)}, expected all 1"
    assert np.all(ponder_cost == max_steps + 1.0), f"ponder costs {np.unique(ponder_cost)}, expected {max_steps + 1}"
    assert np.all(np.isfinite(states)), "states are not finite"


def _extreme_forward():
    rng = np.random.default_rng(1)
    params = _params(rng, d_in=3, d_hidden=4, halting_scale=1e4)
    x = 1e4 * rng.standard_normal((8, 2, 3))
    out, cache = act_forward(x, *params, max_steps=4)
    return rng, out, cache


@pytest.mark.ex5_2
def test_act_forward_finite_at_extreme_inputs():
    _, (states, ponder_cost), _ = _extreme_forward()
    assert np.all(np.isfinite(states)), "states are not finite at inputs and halting weights of magnitude 1e4"
    assert np.all(np.isfinite(ponder_cost)), "ponder costs are not finite at inputs and halting weights of magnitude 1e4"


@pytest.mark.ex5_3
def test_act_backward_finite_at_extreme_inputs():
    rng, (states, ponder_cost), cache = _extreme_forward()
    grads = act_backward((rng.standard_normal(states.shape), rng.standard_normal(ponder_cost.shape)), cache)
    for name, grad in zip(("dx", "dW_x", "dW_s", "db", "dw_h", "db_h"), grads):
        assert np.all(np.isfinite(grad)), f"{name} is not finite at inputs and halting weights of magnitude 1e4"


# Backward pass


GRADCHECK_CASES = [
    # T, max_steps, halting_bias
    pytest.param(1, 4, 0.0, id="one-input-step"),
    pytest.param(3, 4, 0.0, id="three-input-steps"),
    pytest.param(2, 1, 0.0, id="max-steps-1"),
    pytest.param(2, 6, 0.0, id="max-steps-6"),
    pytest.param(2, 4, 4.0, id="some-halt-at-step-1"),
]


def _gradcheck_inputs(T, max_steps, halting_bias):
    rng = np.random.default_rng(10 * T + max_steps)
    params = _params(rng, d_in=3, d_hidden=5, halting_bias=halting_bias)
    x = _inputs_away_from_kinks(rng, params, (8, T, 3), max_steps)
    return rng, x, params


@pytest.mark.ex5_3
@pytest.mark.parametrize("T, max_steps, halting_bias", GRADCHECK_CASES)
def test_act_backward_gradcheck(T, max_steps, halting_bias):
    rng, x, params = _gradcheck_inputs(T, max_steps, halting_bias)
    report = check_function(
        act_forward,
        act_backward,
        x,
        *params,
        forward_kwargs={"max_steps": max_steps},
        choices=lambda out, cache: cache.n_steps,
        rng=rng,
    )
    _assert_check_passed(report)


@pytest.mark.ex5_2
def test_act_gradcheck_cases_cover_every_halting_path():
    # The checks above are only as strong as the halting steps they see:
    # between them, samples must halt at step 1, in the middle and at max_steps.
    paths = set()
    for case in GRADCHECK_CASES:
        T, max_steps, halting_bias = case.values
        _, x, params = _gradcheck_inputs(T, max_steps, halting_bias)
        _, cache = act_forward(x, *params, max_steps=max_steps)
        for n in np.unique(cache.n_steps).tolist():
            if n == max_steps:
                paths.add("max_steps")
            elif n == 1:
                paths.add("first")
            else:
                paths.add("middle")
    assert paths == {"first", "middle", "max_steps"}, f"halting paths covered: {sorted(paths)}"


# With w_h = 0 every halting probability is sigmoid(b_h), so N is the same
# for every sample: the smallest n with n * sigmoid(b_h) >= 1 - epsilon.
CONSTANT_HALTING_CASES = [
    # b_h, expected N
    pytest.param(6.0, 1, id="halts-at-step-1"),
    pytest.param(0.0, 2, id="halts-at-step-2"),
    pytest.param(-1.0, 4, id="halts-at-step-4"),
    pytest.param(-1e4, 6, id="runs-max-steps"),
]


@pytest.mark.ex5_3
@pytest.mark.parametrize("halting_bias, expected_steps", CONSTANT_HALTING_CASES)
def test_act_backward_ponder_gradient_via_remainder(halting_bias, expected_steps):
    rng = np.random.default_rng(5)
    W_x, W_s, b, _, b_h = _params(rng, d_in=3, d_hidden=4, halting_bias=halting_bias)
    w_h = np.zeros(4)
    x = rng.standard_normal((7, 2, 3))
    (states, ponder_cost), cache = act_forward(x, W_x, W_s, b, w_h, b_h, max_steps=6)
    assert np.all(cache.n_steps == expected_steps), f"halting steps {np.unique(cache.n_steps)}, expected {expected_steps}"

    # Only the ponder cost has an upstream gradient, tau for every sample.
    tau = 0.3
    dx, dW_x, dW_s, db, dw_h, db_h = act_backward((np.zeros_like(states), np.full_like(ponder_cost, tau)), cache)

    # dR/dh^n = -1 for n < N and N has no gradient, so the halting logit of
    # every step before the last receives -tau * h (1 - h), and the last none.
    h = sigmoid(halting_bias)
    expected = -tau * x.shape[0] * x.shape[1] * (expected_steps - 1) * h * (1.0 - h)
    assert db_h[0] == pytest.approx(expected, rel=1e-12, abs=1e-300), f"db_h = {db_h[0]}, expected {expected}"
    # With w_h = 0 the states do not reach the ponder cost.
    for name, grad in (("dx", dx), ("dW_x", dW_x), ("dW_s", dW_s), ("db", db)):
        assert np.all(grad == 0.0), f"{name} should be zero when only the ponder cost has a gradient, max |{name}| = {np.abs(grad).max()}"


@pytest.mark.ex5_3
def test_act_backward_leaves_inputs_unchanged(small_act):
    x, params = small_act
    out, cache = act_forward(x, *params, max_steps=5)
    rng = np.random.default_rng(0)
    dy = (rng.standard_normal(out[0].shape), rng.standard_normal(out[1].shape))
    dy_copy = tuple(d.copy() for d in dy)
    steps_copy = [[tuple(a.copy() for a in step) for step in steps] for steps in cache.steps]
    arrays_copy = {name: getattr(cache, name).copy() for name in ("x", "W_x", "W_s", "w_h", "states", "step_weights")}
    act_backward(dy, cache)
    for before, after in zip(dy_copy, dy):
        np.testing.assert_array_equal(after, before)
    for name, before in arrays_copy.items():
        np.testing.assert_array_equal(getattr(cache, name), before, err_msg=f"backward changed cache.{name}")
    for steps_before, steps_after in zip(steps_copy, cache.steps):
        for step_before, step_after in zip(steps_before, steps_after):
            for a, b in zip(step_before, step_after):
                np.testing.assert_array_equal(b, a, err_msg="backward changed a stored ponder step")


# The layer


def _model_away_from_kinks(rng, *, T=2, max_steps=4, tau=0.05):
    model = ACT(3, 5, 2, max_steps=max_steps, tau=tau, halting_bias=0.0, rng=rng)
    model.params["w_h"][:] = rng.standard_normal(5)
    p = model.params
    params = (p["W_x"], p["W_s"], p["b"], p["w_h"], p["b_h"])
    x = _inputs_away_from_kinks(rng, params, (6, T, 3), max_steps)
    return model, x


@pytest.mark.ex5_3
@pytest.mark.parametrize("tau", [0.0, 0.05])
def test_act_module_gradcheck(tau):
    rng = np.random.default_rng(8)
    model, x = _model_away_from_kinks(rng, tau=tau)
    report = check_module(model, x, rng=rng)
    names = [t.name for t in report.tensors]
    assert names == ["x", "W_x", "W_s", "b", "w_h", "b_h", "head.W", "head.b"], f"checked tensors {names}"
    _assert_check_passed(report)


@pytest.mark.ex5_2
def test_act_module_aux_loss_value():
    rng = np.random.default_rng(2)
    model, x = _model_away_from_kinks(rng, tau=0.05)
    model.forward(x)
    expected = 0.05 * model.ponder_cost.sum() / x.shape[0]
    assert model.aux_loss == pytest.approx(expected, rel=1e-14), f"aux_loss {model.aux_loss}, expected {expected}"
    assert model.choices()["n_steps"] is model.n_steps, "own_choices must return the halting steps"


@pytest.mark.ex5_2
def test_act_module_output_mixes_step_outputs():
    rng = np.random.default_rng(4)
    model, x = _model_away_from_kinks(rng)
    y = model.forward(x)
    W, b = model.head.params["W"], model.head.params["b"]
    expected = np.zeros_like(y)
    for t, steps in enumerate(model.cache.steps):
        for step in steps:
            expected[step.rows, t] += step.step_weight[:, None] * (step.state @ W + b)
    np.testing.assert_allclose(y, expected, rtol=0, atol=1e-12)


@pytest.mark.ex5_2
def test_act_module_same_seed_same_result():
    x = np.random.default_rng(0).standard_normal((5, 2, 3))
    outputs = [ACT(3, 4, 2, max_steps=3, tau=0.01, rng=7).forward(x) for _ in range(2)]
    np.testing.assert_array_equal(outputs[0], outputs[1])


def test_act_module_default_halting_bias_is_one():
    model = ACT(3, 4, 2, max_steps=3, tau=0.01, rng=0)
    assert model.params["b_h"].tolist() == [1.0], f"b_h starts at {model.params['b_h']}, expected [1.0]"


# Bad input

BAD_OPTIONS = [
    # keyword arguments, exception, words the message must contain
    pytest.param({"epsilon": 0.0}, ValueError, ["epsilon", "0.0", "(0, 1)"], id="epsilon-zero"),
    pytest.param({"epsilon": 1.0}, ValueError, ["epsilon", "1.0", "(0, 1)"], id="epsilon-one"),
    pytest.param({"epsilon": -0.5}, ValueError, ["epsilon", "-0.5"], id="epsilon-negative"),
    pytest.param({"epsilon": "small"}, TypeError, ["epsilon", "'small'"], id="epsilon-string"),
    pytest.param({"max_steps": 0}, ValueError, ["max_steps", "0", ">= 1"], id="max-steps-zero"),
    pytest.param({"max_steps": 2.5}, TypeError, ["max_steps", "2.5"], id="max-steps-float"),
    pytest.param({"tau": -0.1}, ValueError, ["tau", "-0.1", ">= 0"], id="tau-negative"),
    pytest.param({"halting_bias": float("nan")}, ValueError, ["halting_bias", "nan"], id="halting-bias-nan"),
]


@pytest.mark.parametrize("options, error, words", BAD_OPTIONS)
def test_act_module_rejects_bad_options(options, error, words):
    arguments = {"max_steps": 3, "tau": 0.01, "rng": 0, **options}
    with pytest.raises(error) as caught:
        ACT(3, 4, 2, **arguments)
    for word in words:
        assert word in str(caught.value), f"message {str(caught.value)!r} does not mention {word!r}"


BAD_INPUTS = [
    # shape, exception, words the message must contain
    pytest.param((5, 2, 4), ValueError, ["x", "last dimension 3", "(5, 2, 4)"], id="wrong-feature-size"),
    pytest.param((5, 3), ValueError, ["x", "3 dimensions", "(5, 3)"], id="missing-time-axis"),
]


@pytest.mark.parametrize("shape, error, words", BAD_INPUTS)
def test_act_module_rejects_bad_input(shape, error, words):
    model = ACT(3, 4, 2, max_steps=3, tau=0.01, rng=0)
    with pytest.raises(error) as caught:
        model.forward(np.zeros(shape))
    for word in words:
        assert word in str(caught.value), f"message {str(caught.value)!r} does not mention {word!r}"


def test_act_module_rejects_nan_input():
    model = ACT(3, 4, 2, max_steps=3, tau=0.01, rng=0)
    x = np.zeros((2, 1, 3))
    x[1, 0, 2] = np.nan
    with pytest.raises(ValueError, match="x contains 1 NaN"):
        model.forward(x)


@pytest.mark.parametrize(
    "options, error, words",
    [
        pytest.param({"max_steps": 0}, ValueError, ["max_steps", "0"], id="max-steps-zero"),
        pytest.param({"max_steps": 2, "epsilon": 1.5}, ValueError, ["epsilon", "1.5"], id="epsilon-too-large"),
    ],
)
def test_act_forward_rejects_bad_options(options, error, words):
    params = _params(np.random.default_rng(0), d_in=3, d_hidden=4)
    with pytest.raises(error) as caught:
        act_forward(np.zeros((2, 1, 3)), *params, **options)
    for word in words:
        assert word in str(caught.value), f"message {str(caught.value)!r} does not mention {word!r}"


def test_act_forward_rejects_mismatched_input_weights():
    params = _params(np.random.default_rng(0), d_in=3, d_hidden=4)
    with pytest.raises(ValueError) as caught:
        act_forward(np.zeros((2, 1, 5)), *params, max_steps=2)
    message = str(caught.value)
    for word in ("W_x", "d_in + 1 = 6", "(4, 4)"):
        assert word in message, f"message {message!r} does not mention {word!r}"


@pytest.mark.parametrize(
    "position, shape, words",
    [
        pytest.param(1, (5, 4), ["W_s", "(4, 4)", "(5, 4)"], id="recurrent-weights"),
        pytest.param(3, (3,), ["w_h", "(4,)", "(3,)"], id="halting-weights"),
        pytest.param(4, (), ["b_h", "(1,)", "()"], id="halting-bias"),
    ],
)
def test_act_forward_rejects_mismatched_weights(position, shape, words):
    params = list(_params(np.random.default_rng(0), d_in=3, d_hidden=4))
    params[position] = np.zeros(shape)
    with pytest.raises(ValueError) as caught:
        act_forward(np.zeros((2, 1, 3)), *params, max_steps=2)
    for word in words:
        assert word in str(caught.value), f"message {str(caught.value)!r} does not mention {word!r}"
