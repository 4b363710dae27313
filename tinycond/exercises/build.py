"""Write a student copy of the project, and blank regions in place for self-learners."""

from __future__ import annotations

import json
import shutil
from collections import defaultdict
from pathlib import Path
from typing import NamedTuple

from tinycond.exercises.files import PROJECT_ROOT, project_files
from tinycond.exercises.project import scan_project, solution_leaks
from tinycond.exercises.regions import RegionError, blank_text, is_blank
from tinycond.exercises.table import EXERCISES, lessons_with_exercises

# Files a student copy leaves out: the test of this generator builds a copy of
# its own project and puts the solutions back, which a copy cannot do.
TEACHER_ONLY = ("tests/test_exercises.py",)


class BuildResult(NamedTuple):
    """Summary of the files :func:`build_student_copy` wrote."""

    destination: Path
    n_files: int
    blanked: tuple  # the Region objects replaced by stubs
    cleared_notebooks: tuple  # paths whose outputs were removed


def parse_lessons(text: str, exercises=EXERCISES) -> tuple:
    """Return the lesson numbers in ``"2,3"``, checked against the table."""
    available = sorted({e.lesson for e in exercises})
    lessons = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit():
            raise ValueError(f"lessons must be numbers separated by commas, such as 2,3; got {text!r}")
        if int(part) not in available:
            raise ValueError(f"lesson {part} has no exercises; lessons with exercises: {', '.join(map(str, available))}")
        lessons.append(int(part))
    return tuple(sorted(set(lessons)))


def build_student_copy(destination, lessons=None, *, force=False, source=PROJECT_ROOT, exercises=EXERCISES) -> BuildResult:
    """Write a complete copy of the project with the regions of ``lessons`` blanked.

    Parameters
    ----------
    destination : path
        Directory to write; created if missing. It must be empty unless ``force``.
    lessons : iterable of int, optional
        Lessons whose regions become stubs; default every lesson in the table.
        Regions of other lessons keep their solution.
    force : bool
        Write into a non-empty directory, replacing files of the same name
        (other files there are left as they are).
    source : path
        Project to copy; default the checkout this package was imported from.

    Returns
    -------
    BuildResult

    Raises
    ------
    RegionError
        If any marker in the source is broken; nothing is written.
    ValueError
        If ``destination`` is the source, a file, or not empty without ``force``.
    """
    source = Path(source).resolve()
    destination = Path(destination).resolve()
    lessons = set(lessons_with_exercises() if lessons is None else lessons)
    if destination == source:
        raise ValueError(f"the student copy cannot be written over its source {source}; choose another directory")
    if destination.exists() and not destination.is_dir():
        raise ValueError(f"{destination} is a file; the student copy needs a directory")
    if destination.is_dir() and any(destination.iterdir()) and not force:
        raise ValueError(f"{destination} is not empty; choose a new or empty directory, or pass --force to overwrite files in it")

    files = [p for p in project_files(source, exclude=destination) if p not in TEACHER_ONLY]
    regions = scan_project(source, exercises, files)
    to_blank = defaultdict(list)
    for region in regions:
        if _lesson_of(region, exercises) in lessons:
            to_blank[region.path].append(region)

    # Prepare every blanked text before writing anything, so a failure leaves no partial copy.
    blanked_texts = {}
    for path, file_regions in to_blank.items():
        text = (source / path).read_bytes().decode("utf-8")
        blanked = blank_text(text, file_regions, exercises)
        compile(blanked, path, "exec")  # a stub that does not compile is a bug here, not the learner's
        leaks = solution_leaks(blanked, text, file_regions, path)
        if leaks:
            raise RegionError(leaks)
        blanked_texts[path] = blanked

    cleared = []
    destination.mkdir(parents=True, exist_ok=True)
    for path in files:
        target = destination / path
        target.parent.mkdir(parents=True, exist_ok=True)
        if path in blanked_texts:
            target.write_bytes(blanked_texts[path].encode("utf-8"))
            shutil.copymode(source / path, target)
        elif path.endswith(".ipynb"):
            data = (source / path).read_bytes()
            clean = clear_outputs(data)
            if clean != data:
                cleared.append(path)
            target.write_bytes(clean)
        else:
            shutil.copyfile(source / path, target)
            shutil.copymode(source / path, target)
    blanked = tuple(r for path in sorted(to_blank) for r in to_blank[path])
    return BuildResult(destination, len(files), blanked, tuple(cleared))


def clear_outputs(data: bytes) -> bytes:
    """Return notebook bytes with every code cell's outputs and execution count removed.

    A notebook that has none is returned byte for byte, so committed clean
    notebooks stay identical to their generated form.
    """
    notebook = json.loads(data)
    changed = False
    for cell in notebook.get("cells", []):
        if cell.get("cell_type") == "code" and (cell.get("outputs") or cell.get("execution_count") is not None):
            cell["outputs"] = []
            cell["execution_count"] = None
            changed = True
    if not changed:
        return data
    # The layout nbformat writes (one-space indent, sorted keys), without
    # importing nbformat, which takes seconds.
    return (json.dumps(notebook, indent=1, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def reset_regions(exercise_ids, root=PROJECT_ROOT, exercises=EXERCISES) -> list:
    """Blank the regions of ``exercise_ids`` in place under ``root``.

    Returns
    -------
    list of (Region, bool)
        Each region of those exercises and whether it was changed (False if
        it was already a stub).
    """
    root = Path(root).resolve()
    if not (root / "pyproject.toml").is_file() or not (root / "tinycond").is_dir():
        raise ValueError(
            f"{root} is not a tinycond checkout (no pyproject.toml and tinycond/ there); "
            f"reset edits the package in a checkout, so pass its directory with --root"
        )
    wanted = set(exercise_ids)
    regions = [r for r in scan_project(root, exercises) if r.exercise_id in wanted]
    by_path = defaultdict(list)
    for region in regions:
        by_path[region.path].append(region)
    outcome = []
    for path, file_regions in sorted(by_path.items()):
        text = (root / path).read_bytes().decode("utf-8")
        pending = [r for r in file_regions if not is_blank(r, text)]
        outcome.extend((r, r in pending) for r in file_regions)
        if pending:
            blanked = blank_text(text, pending, exercises)
            compile(blanked, path, "exec")
            (root / path).write_bytes(blanked.encode("utf-8"))
    return outcome


def _lesson_of(region, exercises) -> int:
    return next(e.lesson for e in exercises if e.id == region.exercise_id)
