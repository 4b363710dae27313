"""The tiny language model: configuration, whole-model gradients, training, sampling, save and load."""

import numpy as np
import pytest

from tinycond.data.text import CHAR_CLASSES, build_corpus
from tinycond.gradcheck import check_module
from tinycond.lm import (
    LMConfig,
    TinyLM,
    evaluate_bpc,
    expert_usage,
    ffn_flops_per_token,
    ffn_weights,
    generate,
    load_checkpoint,
    sample_next,
    save_checkpoint,
    train_lm,
)

pytestmark = pytest.mark.lesson6

ROUTER_CASES = [
    pytest.param({"router": "dense"}, id="dense"),
    pytest.param({"router": "topk", "n_experts": 4, "top_k": 2}, id="topk"),
    pytest.param({"router": "tree", "depth": 2, "tree_mode": "hard"}, id="tree-hard"),
    pytest.param({"router": "tree", "depth": 2, "tree_mode": "soft"}, id="tree-soft"),
]


def tiny_config(**changes):
    settings = dict(vocab_size=7, context=5, d_model=8, n_heads=2, n_layers=2, d_hidden=8, router="dense")
    settings.update(changes)
    return LMConfig(**settings)


TEXT = "the cat sat on the mat. 12 dogs ran, 3 cats hid!\n" * 30


@pytest.mark.parametrize("settings", ROUTER_CASES)
def test_model_whole_backward(settings):
    model = TinyLM(tiny_config(**settings), rng=1)
    ids = np.random.default_rng(2).integers(0, 7, size=(2, 5))
    report = check_module(model, ids, max_entries=15, rng=3)
    checked = sum(t.n_checked for t in report.tensors)
    skipped = sum(len(t.skipped) for t in report.tensors)
    assert checked >= 250, f"only {checked} entries checked ({skipped} skipped as kinks)"
    assert report.max_rel_error <= 1e-7, str(report)


@pytest.mark.parametrize("settings", ROUTER_CASES)
def test_model_aux_loss_by_router(settings):
    model = TinyLM(tiny_config(**settings), rng=1)
    model.forward(np.zeros((1, 5), dtype=np.int64))
    has_aux = settings["router"] != "dense"
    assert (model.total_aux_loss() > 0) == has_aux, f"aux loss {model.total_aux_loss()} for router {settings['router']}"


@pytest.mark.parametrize("settings", ROUTER_CASES)
def test_model_is_causal(settings):
    model = TinyLM(tiny_config(**settings), rng=1).eval()
    ids = np.random.default_rng(0).integers(0, 7, size=(3, 5))
    changed = ids.copy()
    changed[:, 3:] = (changed[:, 3:] + 1) % 7
    before, after = model.forward(ids)[:, :3], model.forward(changed)[:, :3]
    # Not bit-exact: changing later tokens changes which rows share an
    # expert's matmul, and BLAS may round a row differently in another batch.
    moved = np.abs(before - after).max()
    assert moved < 1e-12, f"logits before position 3 moved by {moved} when only later tokens changed"


def test_model_logits_shape():
    model = TinyLM(tiny_config(), rng=0)
    logits = model.forward(np.zeros((3, 4), dtype=np.int64))
    assert logits.shape == (3, 4, 7), f"logits shape {logits.shape}"


def test_model_rejects_long_input():
    model = TinyLM(tiny_config(), rng=0)
    with pytest.raises(ValueError, match="more than the model's context of 5"):
        model.forward(np.zeros((1, 6), dtype=np.int64))


def test_model_same_seed_same_weights():
    first = dict(TinyLM(tiny_config(router="topk", n_experts=4), rng=5).parameters())
    second = dict(TinyLM(tiny_config(router="topk", n_experts=4), rng=5).parameters())
    for name, value in first.items():
        assert np.array_equal(value, second[name]), f"{name} differs between two models built with seed 5"


@pytest.mark.parametrize("router", ["dense", "topk", "tree"])
def test_model_float32_stays_float32(router):
    model = TinyLM(tiny_config(router=router, n_experts=4, depth=2), rng=0, dtype=np.float32)
    logits = model.forward(np.zeros((2, 5), dtype=np.int64))
    model.backward(np.ones_like(logits))
    assert logits.dtype == np.float32, f"logits dtype {logits.dtype}"
    wrong = [name for name, grad in model.gradients() if grad.dtype != np.float32]
    assert not wrong, f"gradients not float32: {wrong}"


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"n_heads": 3}, "n_heads must divide d_model"),
        ({"router": "topk", "top_k": 3}, "top_k must divide d_hidden"),
        ({"router": "topk", "n_experts": 2, "top_k": 4}, "top_k must be at most n_experts"),
        ({"router": "moe"}, "router must be one of"),
        ({"d_model": 0}, "d_model must be a positive integer"),
    ],
)
def test_config_rejects_bad_settings(changes, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(**changes)


def test_config_dict_round_trip():
    config = tiny_config(router="tree", depth=3)
    assert LMConfig.from_dict(config.to_dict()) == config


def test_config_from_dict_rejects_unknown():
    with pytest.raises(ValueError, match="unknown LMConfig settings \\['colour'\\]"):
        LMConfig.from_dict({**tiny_config().to_dict(), "colour": "red"})


@pytest.mark.parametrize(
    "changes, active, total",
    [
        # d_model 8, d_hidden 8: one MLP has 2 * 8 * 8 = 128 weights.
        ({"router": "dense"}, 128, 128),
        # Router 8 * 4; two experts of width 4 (64 weights each) out of four.
        ({"router": "topk", "n_experts": 4, "top_k": 2}, 32 + 2 * 64, 32 + 4 * 64),
        # Two node vectors of 8 on the path out of three; one leaf of 128 out of four.
        ({"router": "tree", "depth": 2}, 2 * 8 + 128, 3 * 8 + 4 * 128),
    ],
)
def test_ffn_weights_from_shapes(changes, active, total):
    config = tiny_config(**changes)
    assert ffn_weights(config) == (active, total), f"got {ffn_weights(config)}, expected {(active, total)}"
    flops = ffn_flops_per_token(config)
    assert flops == (2 * active * 2, 2 * total * 2), f"two layers at 2 FLOPs per weight, got {flops}"


@pytest.mark.parametrize("router", ["dense", "topk", "tree"])
def test_ffn_weights_match_parameters(router):
    config = tiny_config(router=router, n_experts=4, depth=2)
    model = TinyLM(config, rng=0)
    ffn = model.blocks[0].ffn
    matrices = sum(value.size for name, value in ffn.parameters() if name.split(".")[-1].startswith("W"))
    assert ffn_weights(config)[1] == matrices, f"total weights {ffn_weights(config)[1]}, weight matrices hold {matrices}"


@pytest.mark.parametrize("router", ["dense", "topk", "tree"])
def test_parameter_counts(router):
    model = TinyLM(tiny_config(router=router, n_experts=4, depth=2), rng=0)
    active, total = model.parameter_counts()
    assert total == model.num_parameters(), f"total {total} != num_parameters {model.num_parameters()}"
    if router == "dense":
        assert active == total, f"a dense model uses every parameter, got {active} of {total}"
    else:
        assert active < total, f"a {router} model should leave parameters unused, got {active} of {total}"


def test_parameter_counts_topk_from_shapes():
    config = tiny_config(router="topk", n_experts=4, top_k=2)
    model = TinyLM(config, rng=0)
    active, total = model.parameter_counts()
    # Per layer, one expert has W1 8x4, b1 4, W2 4x8, b2 8 = 76; two of four are unused.
    assert total - active == 2 * 2 * 76, f"unused parameters {total - active}, expected {2 * 2 * 76}"


def test_evaluate_bpc_uniform_model():
    corpus = build_corpus(TEXT, context=8)
    model = TinyLM(tiny_config(vocab_size=corpus.vocab.size, context=8), rng=0)
    model.head.params["W"][...] = 0.0
    bpc = evaluate_bpc(model, corpus.val)
    expected = np.log2(corpus.vocab.size)
    assert abs(bpc - expected) < 1e-12, f"uniform logits give {bpc} bits, expected log2(V) = {expected}"


@pytest.mark.parametrize("router", ["dense", "topk", "tree"])
def test_training_lowers_loss(router):
    corpus = build_corpus(TEXT, context=16)
    config = LMConfig(vocab_size=corpus.vocab.size, context=16, d_model=16, n_heads=2, n_layers=1, d_hidden=16,
                      router=router, n_experts=4, depth=2)
    model = TinyLM(config, rng=0)
    before = evaluate_bpc(model, corpus.val)
    history = train_lm(model, corpus, steps=60, batch_size=8, lr=1e-2, rng=1, log=None)
    assert history.val_bpc[-1] < before - 1.0, f"validation bits per character went from {before:.3f} to {history.val_bpc[-1]:.3f}"


def test_training_same_seed_same_history():
    corpus = build_corpus(TEXT, context=8)
    config = tiny_config(vocab_size=corpus.vocab.size, context=8, router="topk", n_experts=4)
    runs = []
    for _ in range(2):
        model = TinyLM(config, rng=0)
        runs.append(train_lm(model, corpus, steps=5, batch_size=4, rng=1, log=None))
    assert np.array_equal(runs[0].train_loss, runs[1].train_loss), f"{runs[0].train_loss} != {runs[1].train_loss}"


def test_training_logs_progress():
    corpus = build_corpus(TEXT, context=8)
    model = TinyLM(tiny_config(vocab_size=corpus.vocab.size, context=8), rng=0)
    lines = []
    train_lm(model, corpus, steps=4, batch_size=2, eval_every=2, rng=0, log=lines.append)
    assert len(lines) == 2, f"expected a line at steps 2 and 4, got {lines}"
    for part in ("step", "train loss", "bits/char", "tokens/s"):
        assert part in lines[-1], f"progress line {lines[-1]!r} lacks {part!r}"


@pytest.mark.ex6_3
def test_sample_greedy_is_argmax():
    logits = np.random.default_rng(0).standard_normal((5, 9))
    ids = sample_next(logits, temperature=0.0, rng=0)
    assert np.array_equal(ids, logits.argmax(axis=1)), f"{ids} != {logits.argmax(axis=1)}"


@pytest.mark.ex6_3
def test_sample_top1_is_argmax():
    logits = np.random.default_rng(0).standard_normal((5, 9))
    ids = sample_next(logits, temperature=1.0, top_k=1, rng=0)
    assert np.array_equal(ids, logits.argmax(axis=1)), f"{ids} != {logits.argmax(axis=1)}"


@pytest.mark.ex6_3
def test_sample_top_k_stays_in_top_k():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((2000, 10))
    ids = sample_next(logits, top_k=3, rng=1)
    rank = (logits > logits[np.arange(2000), ids][:, None]).sum(axis=1)
    assert rank.max() < 3, f"drew an id of rank {rank.max()} with top_k=3"


@pytest.mark.ex6_3
@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
def test_sample_frequencies_match_softmax(temperature):
    logits = np.array([[2.0, 1.0, 0.0, -1.0]])
    n = 40_000
    ids = sample_next(np.repeat(logits, n, axis=0), temperature=temperature, rng=2)
    frequencies = np.bincount(ids, minlength=4) / n
    z = logits[0] / temperature
    expected = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    # Binomial standard error is at most 0.0025 at n = 40000; allow four of them.
    assert np.abs(frequencies - expected).max() < 0.01, (
        f"frequencies {frequencies}, reference softmax(logits / temperature) at temperature {temperature}: {expected}"
    )


def _top_k_probabilities(logits, top_k, temperature):
    """Return softmax(logits / temperature) over the ids whose logit ties or beats the k-th largest, zero elsewhere."""
    z = logits / temperature
    kept = logits >= np.sort(logits)[-top_k]
    weights = np.where(kept, np.exp(z - z.max()), 0.0)
    return weights / weights.sum()


def _assert_frequencies(ids, expected, n_sigma=5.0):
    """Assert each id's draw frequency is within n_sigma binomial standard deviations of its probability."""
    n = ids.size
    frequencies = np.bincount(ids, minlength=expected.size) / n
    for i, (frequency, p) in enumerate(zip(frequencies, expected)):
        tolerance = n_sigma * np.sqrt(p * (1.0 - p) / n)  # zero for an id that must never be drawn
        assert abs(frequency - p) <= tolerance, (
            f"id {i} drawn with frequency {frequency:.4f}, expected {p:.4f} +- {tolerance:.4f} ({n} draws)"
        )


@pytest.mark.ex6_3
@pytest.mark.parametrize("top_k, temperature", [(2, 1.0), (3, 1.0), (4, 0.7), (5, 2.0)])
def test_sample_top_k_frequencies(top_k, temperature):
    # Unsorted logits, so the top k are not the first k ids. Keeping k - 1 or
    # k + 1 ids moves at least one id's frequency away from its probability.
    logits = np.array([0.5, 2.0, -1.0, 1.0, 0.0, 1.5])
    n = 40_000
    ids = sample_next(np.tile(logits, (n, 1)), temperature=temperature, top_k=top_k, rng=np.random.default_rng(3))
    _assert_frequencies(ids, _top_k_probabilities(logits, top_k, temperature))


@pytest.mark.ex6_3
def test_sample_top_k_keeps_ties_with_kth():
    # With top_k=2 the k-th largest logit is 1.0, shared by ids 1 and 3, so
    # ids 0, 1 and 3 can be drawn and ids 1 and 3 equally often.
    logits = np.array([3.0, 1.0, 0.0, 1.0, -1.0])
    n = 40_000
    ids = sample_next(np.tile(logits, (n, 1)), top_k=2, rng=np.random.default_rng(4))
    counts = np.bincount(ids, minlength=5)
    assert counts[1] > 0, f"id 1 ties with the 2nd largest logit but was never drawn: counts {counts}"
    assert counts[3] > 0, f"id 3 ties with the 2nd largest logit but was never drawn: counts {counts}"
    _assert_frequencies(ids, _top_k_probabilities(logits, 2, 1.0))


@pytest.mark.ex6_3
def test_sample_finite_at_extreme_logits():
    logits = np.array([[1e4, -1e4, 0.0], [0.0, 1e4, 1e4 - 1.0]])
    ids = sample_next(logits, temperature=1.0, rng=0)
    assert ids.tolist()[0] == 0, f"the 1e4 logit should win, got {ids}"


def test_generate_length_and_choices():
    corpus = build_corpus(TEXT, context=8)
    model = TinyLM(tiny_config(vocab_size=corpus.vocab.size, context=8, router="topk", n_experts=4), rng=0)
    sample = generate(model, corpus.vocab, "the", 12, rng=0)
    assert len(sample.text) == 15, f"prompt 3 + 12 generated, got {len(sample.text)}: {sample.text!r}"
    assert sample.experts.shape == (12, 2, 2), f"experts shape {sample.experts.shape}, expected (12 chars, 2 layers, k=2)"
    assert sample.experts.min() >= 0, f"expert ids {sample.experts.min()}..{sample.experts.max()}"
    assert sample.experts.max() < 4, f"expert ids {sample.experts.min()}..{sample.experts.max()}"


def test_generate_dense_records_nothing():
    corpus = build_corpus(TEXT, context=8)
    model = TinyLM(tiny_config(vocab_size=corpus.vocab.size, context=8), rng=0)
    sample = generate(model, corpus.vocab, "a", 3, rng=0)
    assert sample.experts is None


def test_generate_same_seed_same_text():
    corpus = build_corpus(TEXT, context=8)
    model = TinyLM(tiny_config(vocab_size=corpus.vocab.size, context=8, router="tree", depth=2), rng=0)
    first = generate(model, corpus.vocab, "the ", 20, rng=4)
    second = generate(model, corpus.vocab, "the ", 20, rng=4)
    assert first.text == second.text, f"{first.text!r} != {second.text!r}"
    assert first.experts.shape == (20, 2, 1), f"a tree records one leaf per layer, got {first.experts.shape}"


def test_generate_rejects_empty_prompt():
    corpus = build_corpus(TEXT, context=8)
    model = TinyLM(tiny_config(vocab_size=corpus.vocab.size, context=8), rng=0)
    with pytest.raises(ValueError, match="prompt must be a non-empty str"):
        generate(model, corpus.vocab, "", 3, rng=0)


@pytest.mark.parametrize("router", ["topk", "tree"])
def test_expert_usage_counts_every_assignment(router):
    corpus = build_corpus(TEXT, context=8)
    config = tiny_config(vocab_size=corpus.vocab.size, context=8, router=router, n_experts=4, top_k=2, depth=2)
    model = TinyLM(config, rng=0)
    counts = expert_usage(model, corpus.val, corpus.vocab.char_classes(), max_windows=5)
    k = 2 if router == "topk" else 1
    assert counts.shape == (2, len(CHAR_CLASSES), 4), f"counts shape {counts.shape}"
    assert np.all(counts.sum(axis=(1, 2)) == 5 * 8 * k), f"per-layer totals {counts.sum(axis=(1, 2))}, expected {5 * 8 * k}"


def test_checkpoint_round_trip(tmp_path):
    corpus = build_corpus(TEXT, context=8)
    config = tiny_config(vocab_size=corpus.vocab.size, context=8, router="topk", n_experts=4)
    model = TinyLM(config, rng=0)
    path = save_checkpoint(tmp_path / "model.bin", model, corpus.vocab)
    assert path.name == "model.bin", f"saved to {path}, not to the name given"
    loaded, vocab = load_checkpoint(path)
    ids = corpus.train[:8][None, :]
    assert vocab == corpus.vocab
    assert np.array_equal(loaded.forward(ids), model.forward(ids)), "a loaded model gives other logits"


def test_checkpoint_loads_into_model(tmp_path):
    corpus = build_corpus(TEXT, context=8)
    config = tiny_config(vocab_size=corpus.vocab.size, context=8)
    path = save_checkpoint(tmp_path / "m.npz", TinyLM(config, rng=0), corpus.vocab)
    other = TinyLM(config, rng=1)
    load_checkpoint(path, other, corpus.vocab)
    assert np.array_equal(other.head.params["W"], TinyLM(config, rng=0).head.params["W"])


def test_checkpoint_has_no_pickled_arrays(tmp_path):
    corpus = build_corpus(TEXT, context=8)
    path = save_checkpoint(tmp_path / "m.npz", TinyLM(tiny_config(vocab_size=corpus.vocab.size, context=8), rng=0), corpus.vocab)
    with np.load(path, allow_pickle=False) as archive:
        kinds = {name: archive[name].dtype.kind for name in archive.files}
    assert "O" not in kinds.values(), f"object arrays in the checkpoint: {kinds}"


@pytest.mark.parametrize(
    "changes, setting",
    [({"router": "dense"}, "router"), ({"n_experts": 8}, "n_experts"), ({"d_model": 16}, "d_model"), ({"top_k": 1}, "top_k")],
)
def test_checkpoint_names_differing_setting(tmp_path, changes, setting):
    corpus = build_corpus(TEXT, context=8)
    config = tiny_config(vocab_size=corpus.vocab.size, context=8, router="topk", n_experts=4)
    path = save_checkpoint(tmp_path / "m.npz", TinyLM(config, rng=0), corpus.vocab)
    other = TinyLM(config.replace(**changes), rng=0)
    with pytest.raises(ValueError, match=f"{setting}: file has"):
        load_checkpoint(path, other)


def test_checkpoint_rejects_other_vocabulary(tmp_path):
    corpus = build_corpus(TEXT, context=8)
    other_corpus = build_corpus(TEXT.upper(), context=8)
    config = tiny_config(vocab_size=corpus.vocab.size, context=8)
    path = save_checkpoint(tmp_path / "m.npz", TinyLM(config, rng=0), corpus.vocab)
    with pytest.raises(ValueError, match="another vocabulary"):
        load_checkpoint(path, TinyLM(config, rng=0), other_corpus.vocab)


def test_checkpoint_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.npz"):
        load_checkpoint(tmp_path / "nothing.npz")


def test_checkpoint_rejects_other_npz(tmp_path):
    path = tmp_path / "other.npz"
    np.savez(path, weights=np.zeros(3))
    with pytest.raises(ValueError, match="not a tinycond language-model checkpoint"):
        load_checkpoint(path)
