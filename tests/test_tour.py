"""The tour, python -m tinycond, on a tiny budget."""

import numpy as np
import pytest

from tinycond.lm.tour import build_parser, main, run

pytestmark = pytest.mark.lesson6

TEXT = "Lists hold items; x[0] is the first. Tuples are immutable, 3 or 4 of them.\n" * 20


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("text") / "corpus.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


def tour(*options, out):
    lines = []
    args = build_parser().parse_args([*options, "--out", str(out), "--sample-chars", "30"])
    return run(args, log=lines.append), lines


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, text_file):
    """One three-step run of the default top-k tour, saved to a checkpoint: (result, lines, out folder, checkpoint)."""
    out = tmp_path_factory.mktemp("tour")
    checkpoint = out / "model.npz"
    result, lines = tour("--text", str(text_file), "--steps", "3", "--seed", "7", "--save", str(checkpoint), out=out)
    return result, lines, out, checkpoint


def test_tour_help_lists_options_with_units(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--help"])
    assert stop.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for option in ("--text", "--steps", "--router", "--experts", "--top-k", "--depth", "--seed", "--save", "--load", "--out"):
        assert option in text, f"--help does not mention {option}"
    for unit in ("characters", "count", "levels", "PNG", ".npz"):
        assert unit in text, f"--help does not state the unit {unit!r}"


def test_tour_tiny_run_prints_results(tiny_run):
    result, lines, _, _ = tiny_run
    output = "\n".join(lines)
    for part in ("bits/char", "tokens/s", "validation bits per character", "active / total",
                 "FLOPs per token", "utilisation", "sample"):
        assert part in output, f"tour output lacks {part!r}:\n{output}"
    assert np.isfinite(result.val_bpc), f"validation bits per character {result.val_bpc}"
    assert result.active_params < result.total_params, f"{result.active_params} active of {result.total_params}"
    assert result.active_flops < result.dense_same_total_flops


def test_tour_writes_figures(tiny_run):
    result, _, out, _ = tiny_run
    names = sorted(path.name for path in out.glob("*.png"))
    assert names == ["tour_experts_by_character.png", "tour_training.png"], f"figures written: {names}"
    assert sorted(path.name for path in result.figures) == names


def test_tour_utilisation_sums_to_one(tiny_run):
    result = tiny_run[0]
    assert result.utilisation.shape == (2, 8), f"utilisation shape {result.utilisation.shape}"
    assert np.allclose(result.utilisation.sum(axis=1), 1.0), f"per-layer sums {result.utilisation.sum(axis=1)}"


def test_tour_same_seed_same_numbers(tmp_path, text_file, tiny_run):
    first = tiny_run[0]
    second, _ = tour("--text", str(text_file), "--steps", "3", "--seed", "7", out=tmp_path)
    assert first.val_bpc == second.val_bpc, f"{first.val_bpc} != {second.val_bpc}"
    assert np.array_equal(first.history.train_loss, second.history.train_loss)
    assert first.sample == second.sample, f"{first.sample!r} != {second.sample!r}"


@pytest.mark.parametrize("router, unit", [("tree", "leaf utilisation"), ("dense", "none: the dense MLP")])
def test_tour_other_routers(tmp_path, text_file, router, unit):
    result, lines = tour("--text", str(text_file), "--steps", "2", "--router", router, "--depth", "2", out=tmp_path)
    assert any(unit in line for line in lines), f"no line with {unit!r}"
    if router == "dense":
        assert result.active_params == result.total_params
        assert result.active_flops == result.dense_same_total_flops


def test_tour_save_then_load(tmp_path, text_file, tiny_run):
    saved, _, _, path = tiny_run
    loaded, _ = tour("--text", str(text_file), "--steps", "0", "--load", str(path), out=tmp_path)
    assert loaded.val_bpc == saved.val_bpc, f"loaded model gives {loaded.val_bpc}, saved one {saved.val_bpc}"
    assert loaded.history is None, "--steps 0 must skip training"


def test_tour_load_other_router_names_it(tmp_path, text_file, tiny_run, capsys):
    path = tiny_run[3]
    status = main(["--text", str(text_file), "--steps", "0", "--router", "dense", "--load", str(path), "--out", str(tmp_path)])
    error = capsys.readouterr().err
    assert status == 2, f"exit status {status}"
    assert "router: file has 'topk', this model has 'dense'" in error, error


def test_tour_missing_text_file(tmp_path, capsys):
    status = main(["--text", str(tmp_path / "absent.txt"), "--out", str(tmp_path)])
    error = capsys.readouterr().err
    assert status == 2, f"exit status {status}"
    assert "absent.txt" in error, error
    assert "does not exist" in error, error


def test_tour_too_short_text(tmp_path, capsys):
    path = tmp_path / "short.txt"
    path.write_text("too short", encoding="utf-8")
    status = main(["--text", str(path), "--out", str(tmp_path)])
    error = capsys.readouterr().err
    assert status == 2, f"exit status {status}"
    assert "minimum of" in error, error


@pytest.mark.parametrize("options, message", [(["--top-k", "3"], "must divide"), (["--experts", "1"], "at most --experts"),
                                              (["--steps", "-1"], "0 or more")])
def test_tour_rejects_bad_options(tmp_path, capsys, options, message):
    with pytest.raises(SystemExit) as stop:
        main([*options, "--out", str(tmp_path)])
    assert stop.value.code == 2
    assert message in capsys.readouterr().err
