"""Build the lesson notebooks from their text sources, and check they match.

Each lesson is written as a plain Python file in the "percent" format under
``lessons/src/``: a line ``# %%`` starts a code cell and ``# %% [markdown]``
starts a Markdown cell whose lines are comments. The committed
``lessons/NN_name.ipynb`` is generated from it, without outputs, so diffs stay
readable and notebooks never hold stale results.

Usage::

    python -m tinycond.notebooks build    # regenerate every .ipynb
    python -m tinycond.notebooks build 03 # regenerate lesson 3 only
    python -m tinycond.notebooks check    # exit 1 if any .ipynb is out of date
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

LESSONS_DIR = Path(__file__).resolve().parent.parent / "lessons"
SOURCE_DIR = LESSONS_DIR / "src"


def parse_percent(text: str):
    """Split percent-format source into a list of ``(kind, source)`` cells."""
    cells = []
    kind, lines = None, []

    def flush():
        if kind is not None:
            body = "\n".join(lines).strip("\n")
            if body:
                cells.append((kind, body))

    for line in text.splitlines():
        if line.startswith("# %%"):
            flush()
            kind = "markdown" if "[markdown]" in line else "code"
            lines = []
            continue
        if kind is None:
            continue
        if kind == "markdown":
            if line.startswith("# "):
                line = line[2:]
            elif line.startswith("#"):
                line = line[1:]
        lines.append(line)
    flush()
    return cells


def build_notebook(source: Path):
    """Return the notebook object for one percent-format source file."""
    import nbformat  # imported here: it is slow to import and most callers never need it

    nb = nbformat.v4.new_notebook()
    for kind, body in parse_percent(source.read_text(encoding="utf-8")):
        if kind == "markdown":
            nb.cells.append(nbformat.v4.new_markdown_cell(body))
        else:
            nb.cells.append(nbformat.v4.new_code_cell(body))
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i}"  # stable ids keep rebuilds byte-identical
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    nb.metadata["language_info"] = {"name": "python"}
    return nb


def notebook_path(source: Path) -> Path:
    """Return the .ipynb path generated from a source file."""
    return LESSONS_DIR / f"{source.stem}.ipynb"


def render(source: Path) -> str:
    """Return the JSON text of the notebook generated from ``source``."""
    import nbformat

    return nbformat.writes(build_notebook(source)) + "\n"


def sources():
    """Return the lesson sources in teaching order."""
    return sorted(SOURCE_DIR.glob("[0-9][0-9]_*.py"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tinycond.notebooks", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("build", "check"), help="build: write the .ipynb files; check: report stale ones")
    parser.add_argument("lessons", nargs="*", help="lesson numbers or name prefixes to limit to, for example 03 (default: all)")
    args = parser.parse_args(argv)
    chosen = [s for s in sources() if not args.lessons or any(s.stem.startswith(p.zfill(2)) for p in args.lessons)]
    if not chosen:
        parser.error(f"no lesson source in {SOURCE_DIR} matches {' '.join(args.lessons)}")
    stale = []
    for source in chosen:
        target = notebook_path(source)
        text = render(source)
        if args.command == "build":
            target.write_text(text, encoding="utf-8")
            print(f"wrote {target.relative_to(LESSONS_DIR.parent)}")
        elif not target.exists() or target.read_text(encoding="utf-8") != text:
            stale.append(target.name)
    if stale:
        print("out of date (run python -m tinycond.notebooks build): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
