"""Execute every lesson notebook top to bottom and keep the committed ones clean.

Figures go to a temporary folder (``TINYCOND_FIGURES``), so running the
tests leaves the repository unchanged.
"""

import json
import os
import re
import time
from pathlib import Path

import pytest

from tinycond import notebooks

LESSONS = sorted(notebooks.LESSONS_DIR.glob("[0-9][0-9]_*.ipynb"))
# A hard stop for a hung kernel, not a speed goal: lessons aim at under 60 s
# on 2 cores, and their measured times are recorded outside the tests.
CELL_TIMEOUT_SECONDS = 600


def _lesson_param(path: Path):
    number = int(path.name[:2])
    return pytest.param(path, id=path.stem, marks=[getattr(pytest.mark, f"lesson{number}"), pytest.mark.notebook])


@pytest.mark.parametrize("path", [_lesson_param(p) for p in LESSONS])
def test_notebook_executes(path, tmp_path, monkeypatch):
    # Imported here so that collecting the other tests stays fast.
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("TINYCOND_FIGURES", str(tmp_path))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=CELL_TIMEOUT_SECONDS, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    client.execute()
    elapsed = time.perf_counter() - start
    print(f"{path.name} executed in {elapsed:.1f} s")
    assert list(tmp_path.glob("*.png")), f"{path.name} wrote no figure to TINYCOND_FIGURES"


@pytest.mark.parametrize("path", [_lesson_param(p) for p in LESSONS])
def test_notebook_has_no_outputs(path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    for index, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "code":
            continue
        assert not cell.get("outputs"), f"{path.name} cell {index} has stored outputs; commit notebooks without outputs"
        assert cell.get("execution_count") is None, f"{path.name} cell {index} has an execution count"


@pytest.mark.parametrize("path", [_lesson_param(p) for p in LESSONS])
def test_notebook_matches_source(path):
    source = notebooks.SOURCE_DIR / f"{path.stem}.py"
    assert source.exists(), f"{path.name} has no text source {source.name} in lessons/src"
    assert path.read_text(encoding="utf-8") == notebooks.render(source), (
        f"{path.name} is out of date with lessons/src/{source.name}; run python -m tinycond.notebooks build"
    )


def test_lesson_sources_have_notebooks():
    for source in notebooks.sources():
        assert notebooks.notebook_path(source).exists(), f"{source.name} has no generated notebook; run python -m tinycond.notebooks build"


def test_lesson_names_are_numbered():
    for path in LESSONS:
        assert re.fullmatch(r"\d\d_[a-z0-9_]+\.ipynb", path.name), f"lesson file name {path.name} is not NN_name.ipynb"
