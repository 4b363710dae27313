"""Check a whole project: the exercise table, every marker, and what a copy leaks.

:func:`scan_project` is the gate every command passes before it reads or
writes a region: it raises :class:`~tinycond.exercises.regions.RegionError`
listing each problem as ``path:line: problem``.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

from tinycond.exercises.files import project_files
from tinycond.exercises.regions import (
    _EXERCISE_ID,
    _FUNCTION_NAME,
    _MARKER_LIKE,
    BEGIN_PREFIX,
    PACKAGE,
    RegionError,
    _body_lines,
    _SyntaxIndex,
    is_blank,
    parse_regions,
)
from tinycond.exercises.table import EXERCISES


# The exercise table


def check_table(exercises=EXERCISES) -> list:
    """Return one problem string per inconsistent entry of the exercise table."""
    problems = []
    seen = set()
    ids = {exercise.id for exercise in exercises}
    for exercise in exercises:
        where = f"tinycond/exercises/table.py: {exercise.id!r}"
        match = _EXERCISE_ID.match(exercise.id)
        if not match:
            problems.append(f"{where}: an id must read ex<lesson>_<number>, for example ex3_2")
        elif int(match.group(1)) != exercise.lesson:
            problems.append(f"{where}: the id names lesson {match.group(1)} but the entry says lesson {exercise.lesson}")
        if exercise.id in seen:
            problems.append(f"{where}: the id appears more than once")
        seen.add(exercise.id)
        if not exercise.functions:
            problems.append(f"{where}: lists no functions")
        for name in exercise.functions:
            if not _FUNCTION_NAME.match(name):
                problems.append(f"{where}: function {name!r} must read 'package.module:function'")
        if isinstance(exercise.points, bool) or not isinstance(exercise.points, int) or exercise.points < 1:
            problems.append(f"{where}: points must be a positive integer, got {exercise.points!r}")
        for required in exercise.requires:
            if required not in ids:
                problems.append(f"{where}: requires unknown exercise {required!r}")
            elif required == exercise.id:
                problems.append(f"{where}: requires itself")
    problems.extend(_requirement_cycles(exercises, ids))
    return problems


def _requirement_cycles(exercises, ids) -> list:
    requires = {e.id: [r for r in e.requires if r in ids and r != e.id] for e in exercises}
    state = {}

    def visit(node, trail):
        state[node] = "open"
        for nxt in requires.get(node, ()):
            if state.get(nxt) == "open":
                return trail + [node, nxt]
            if nxt not in state:
                cycle = visit(nxt, trail + [node])
                if cycle:
                    return cycle
        state[node] = "done"
        return None

    for exercise_id in requires:
        if exercise_id not in state:
            cycle = visit(exercise_id, [])
            if cycle:
                return [f"tinycond/exercises/table.py: requirements form a cycle: {' -> '.join(cycle)}"]
    return []



# Whole project


def scan_project(root, exercises=EXERCISES, files=None):
    """Return every solution region under ``root``, or raise :class:`RegionError`.

    Checks the table, each marker (balanced, alone on its line, inside a
    function, after the docstring, naming an exercise whose table entry
    lists that function) and that every function the table lists has a
    region of its exercise. Markers outside the package are rejected
    because lessons and tests hold no solution code.
    """
    root = Path(root)
    files = project_files(root) if files is None else files
    problems = check_table(exercises)
    regions = []
    for path in files:
        if path.endswith(".py"):
            text = (root / path).read_text(encoding="utf-8")
            found, file_problems = parse_regions(text, path, exercises)
            if (found or file_problems) and not path.startswith(PACKAGE + "/"):
                problems.append(f"{path}: has solution markers; regions belong in the {PACKAGE}/ package, never in lessons or tests")
                continue
            regions.extend(found)
            problems.extend(file_problems)
        elif path.endswith(".ipynb"):
            problems.extend(_notebook_markers(root / path, path))
    regions_by_function = {(r.exercise_id, r.function) for r in regions}
    for exercise in exercises:
        for function in exercise.functions:
            if (exercise.id, function) not in regions_by_function:
                module = function.split(":", 1)[0]
                problems.append(
                    f"{module.replace('.', '/')}.py: the table lists {function} for {exercise.id}, "
                    f"but that function has no region '{BEGIN_PREFIX}{exercise.id}'"
                )
    if problems:
        raise RegionError(problems)
    return regions


def blank_functions(root, exercise_ids, exercises=EXERCISES) -> dict:
    """Return ``{exercise_id: [(path, function_name), ...]}`` for the functions still blank in ``root``.

    A function is blank when its region is the stub of its exercise, as
    ``list`` reports it. Only the files of the given exercises are read. An
    exercise with no blank function, or whose file is missing or does not
    parse, is left out. Functions keep the table's order.
    """
    root = Path(root)
    ids = set(exercise_ids)
    files = {}  # path -> (text, regions), or None when the file is missing
    blank = {}
    for exercise in exercises:
        if exercise.id not in ids:
            continue
        for function in exercise.functions:
            base = function.split(":", 1)[0].replace(".", "/")
            for path in (f"{base}.py", f"{base}/__init__.py"):
                if path not in files:
                    files[path] = _read_regions(root, path, exercises)
                if files[path] is None:
                    continue
                text, regions = files[path]
                if any(r.exercise_id == exercise.id and r.function == function and is_blank(r, text) for r in regions):
                    blank.setdefault(exercise.id, []).append((path, function.split(":", 1)[1]))
    return blank


def _read_regions(root: Path, path: str, exercises):
    """Return ``(text, regions)`` of the file ``root / path``, or None if it cannot be read."""
    try:
        text = (root / path).read_text(encoding="utf-8")
    except OSError:
        return None
    regions, _ = parse_regions(text, path, exercises)  # a broken marker leaves its region out
    return text, regions


def _notebook_markers(file: Path, path: str) -> list:
    try:
        notebook = json.loads(file.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        return [f"{path}: cannot read the notebook: {error}"]
    problems = []
    for number, cell in enumerate(notebook.get("cells", [])):
        source = cell.get("source", "")
        source = "".join(source) if isinstance(source, list) else source
        if cell.get("cell_type") == "code" and any(_MARKER_LIKE.match(line.strip()) for line in source.splitlines()):
            problems.append(f"{path}: cell {number} has a solution marker; lessons import the package and hold no solution code")
    return problems


def solution_leaks(copy_text: str, source_text: str, regions, path: str) -> list:
    """Return the solution lines of blanked ``regions`` that still appear in ``copy_text``.

    A line counts when it appears in the copy's version of the region's
    function and appears in the source function only inside the region.
    """
    copy_functions = _function_lines(copy_text)
    source_lines = source_text.splitlines()
    source_functions = _function_spans(source_text)
    leaks = []
    for region in regions:
        qualname = region.function_name
        solution = {line.strip() for line in _body_lines(region, source_lines) if _is_code(line)}
        start, stop = source_functions[qualname]
        outside = {
            line.strip()
            for number, line in enumerate(source_lines[start - 1 : stop], start=start)
            if not region.begin <= number <= region.end
        }
        for line in sorted((solution - outside) & copy_functions.get(qualname, set())):
            leaks.append(f"{path}: {region.exercise_id} solution line still in {qualname}: {line}")
    return leaks


def _is_code(line: str) -> bool:
    stripped = line.strip()
    return bool(stripped) and not stripped.startswith("#")


def _function_spans(text: str) -> dict:
    index = _SyntaxIndex(ast.parse(text))
    return {
        index.qualname(node): (node.lineno, node.end_lineno)
        for node in index.statements
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
    }


def _function_lines(text: str) -> dict:
    lines = text.splitlines()
    return {name: {line.strip() for line in lines[start - 1 : stop]} for name, (start, stop) in _function_spans(text).items()}
