"""Check that the tests work as exercises: student copies, stubs, reset and grading.

The slow part is running pytest in a student copy, one subprocess per run,
so each test keeps to a few runs over the unit tests that matter to it and
never runs the notebooks.
"""

import ast
import hashlib
import json
import re
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tinycond.exercises import EXERCISES
from tinycond.exercises.__main__ import main
from tinycond.exercises.build import TEACHER_ONLY, build_student_copy, reset_regions
from tinycond.exercises.files import PROJECT_ROOT, project_files
from tinycond.exercises.grade import grade, grade_lesson, run_lesson_tests
from tinycond.exercises.project import scan_project, solution_leaks
from tinycond.exercises.regions import STUB_MESSAGE, RegionError, fill_text, is_blank, parse_regions
from tinycond.exercises.table import Exercise, exercise_by_id, prerequisites


def _tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in project_files(root):
        digest.update(path.encode())
        digest.update((root / path).read_bytes())
    return digest.hexdigest()


def _test_files_naming(copy: Path, markers) -> list:
    """Return the test files of ``copy`` whose text names one of ``markers``.

    A test carries a marker only if its own file names it, so passing these
    files to pytest selects the same tests as collecting everything, faster.
    """
    return [
        path for path in project_files(copy)
        if path.startswith("tests/test_") and any(m in (copy / path).read_text(encoding="utf-8") for m in markers)
    ]


def _results(events):
    return [e for e in events if e["event"] == "result"]


def _exercise_levels():
    """Group exercise ids so that no exercise in a group needs another of the same group."""
    levels = {}

    def level(exercise_id):
        if exercise_id not in levels:
            levels[exercise_id] = 1 + max((level(r) for r in exercise_by_id(exercise_id).requires), default=-1)
        return levels[exercise_id]

    groups = {}
    for exercise in EXERCISES:
        groups.setdefault(level(exercise.id), []).append(exercise.id)
    return [groups[k] for k in sorted(groups)]


# A student copy fails where it is blank, passes elsewhere, and passes again when filled


def test_student_copy_round_trip(tmp_path):
    copy = tmp_path / "copy"
    result = build_student_copy(copy, [2], source=PROJECT_ROOT)
    blanked_ids = {r.exercise_id for r in result.blanked}
    assert blanked_ids == {e.id for e in EXERCISES if e.lesson == 2}, f"lesson 2 build blanked {sorted(blanked_ids)}"

    files = _test_files_naming(copy, ["lesson1", "lesson2"])
    gradebook = grade(copy, [1, 2], time_limit=300, pytest_args=files)
    lesson1, lesson2 = gradebook["lessons"]
    for lesson in (lesson1, lesson2):
        assert Path(lesson["package"]).resolve().is_relative_to(copy.resolve()), (
            f"lesson {lesson['lesson']} tests imported tinycond from {lesson['package']}, not from the copy {copy}"
        )
    assert lesson1["status"] == "ok", f"lesson 1 run: {lesson1['status']} {lesson1['detail']}"
    assert lesson1["total"] > 0, "lesson 1 has no tests"
    assert lesson1["passed"] == lesson1["total"], f"lesson 1 is not blanked but passed {lesson1['passed']}/{lesson1['total']}"
    assert lesson1["points"] == lesson1["max_points"], f"lesson 1 scored {lesson1['points']}/{lesson1['max_points']}"
    for exercise in lesson2["exercises"]:
        assert exercise["total"] > 0, f"{exercise['id']} has no tests"
        assert exercise["points"] == 0, f"blank {exercise['id']} scored {exercise['points']} points: {exercise['status']}"
    failing = [t for t in lesson2["tests"] if t["outcome"] not in ("passed", "skipped")]
    assert failing, "no lesson 2 test failed although lesson 2 is blank"
    for test in failing:
        assert test["outcome"] in ("not implemented", "blocked"), f"{test['nodeid']} failed without naming a stub: {test['message']}"
        assert test["stub"] in blanked_ids, f"{test['nodeid']} hit the stub of {test['stub']}, which lesson 2 did not blank"

    for path in sorted({r.path for r in result.blanked}):
        filled = fill_text((copy / path).read_text(encoding="utf-8"), (PROJECT_ROOT / path).read_text(encoding="utf-8"), path)
        (copy / path).write_text(filled, encoding="utf-8")
        assert filled == (PROJECT_ROOT / path).read_text(encoding="utf-8"), f"{path} differs from its source after filling"
    (refilled,) = grade(copy, [2], time_limit=300, pytest_args=files)["lessons"]
    assert refilled["total"] == lesson2["total"], f"lesson 2 ran {refilled['total']} tests after filling, {lesson2['total']} before"
    assert refilled["passed"] == refilled["total"], f"filled lesson 2 passed {refilled['passed']}/{refilled['total']}"
    assert refilled["points"] == refilled["max_points"], f"filled lesson 2 scored {refilled['points']}/{refilled['max_points']}"


# Markers are sound, and a copy contains no solution


def test_markers_sound_and_copy_clean(tmp_path):
    regions = scan_project(PROJECT_ROOT)  # raises RegionError listing every broken marker
    assert {r.exercise_id for r in regions} == {e.id for e in EXERCISES}, "an exercise in the table has no region"

    copy = tmp_path / "copy"
    result = build_student_copy(copy, source=PROJECT_ROOT)
    assert len(result.blanked) == len(regions), f"blanked {len(result.blanked)} of {len(regions)} regions"
    for name in TEACHER_ONLY:
        assert not (copy / name).exists(), f"the student copy contains the teacher-only file {name}"
    assert not (copy / ".git").exists(), "the student copy contains the git history, which holds the solutions"
    for path in project_files(copy):
        if path.endswith(".py") and path.startswith(("tinycond/", "tests/")):
            compile((copy / path).read_text(encoding="utf-8"), path, "exec")
        if path.endswith(".ipynb"):
            cells = json.loads((copy / path).read_text(encoding="utf-8"))["cells"]
            assert not any(c.get("outputs") for c in cells), f"{path} in the copy has outputs"
    copied_regions = scan_project(copy, files=[p for p in project_files(copy) if p.startswith("tinycond/")])
    for region in copied_regions:
        assert is_blank(region, (copy / region.path).read_text(encoding="utf-8")), f"{region.path}:{region.begin} is not blank"
    for path in sorted({r.path for r in regions}):
        own = [r for r in regions if r.path == path]
        leaks = solution_leaks((copy / path).read_text(encoding="utf-8"), (PROJECT_ROOT / path).read_text(encoding="utf-8"), own, path)
        assert not leaks, "solution text in the copy:\n" + "\n".join(leaks)


# Stub messages name the quantity in plain words

# Type names, which never name the quantity a learner computes.
TYPE_WORDS = {"ndarray", "tuple", "float", "int", "bool", "list", "dict"}


def _stub_messages(copy: Path) -> dict:
    """Return ``{(path, function): message}`` for every ``raise NotImplementedError("exN_M ...")`` in ``copy``."""
    messages = {}
    for path in project_files(copy):
        if not (path.startswith("tinycond/") and path.endswith(".py")):
            continue
        for node in ast.walk(ast.parse((copy / path).read_text(encoding="utf-8"))):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for statement in ast.walk(node):
                call = statement.exc if isinstance(statement, ast.Raise) else None
                if isinstance(call, ast.Call) and getattr(call.func, "id", None) == "NotImplementedError" and call.args:
                    argument = call.args[0]
                    if isinstance(argument, ast.Constant) and STUB_MESSAGE.match(str(argument.value)):
                        messages[(path, node.name)] = argument.value
    return messages


def test_stub_messages_plain(tmp_path):
    copy = tmp_path / "copy"
    result = build_student_copy(copy, source=PROJECT_ROOT)
    messages = _stub_messages(copy)
    expected = {(r.path, r.function_name.rsplit(".", 1)[-1]) for r in result.blanked}
    assert set(messages) == expected, f"stubs found {sorted(set(messages) ^ expected)} differ from the blanked regions"
    for (path, function), message in sorted(messages.items()):
        assert "`" not in message, f"{function}: backticks in {message!r}"
        assert ":math:" not in message, f"{function}: reST math role in {message!r}"
        assert ":func:" not in message, f"{function}: reST cross-reference in {message!r}"
        assert "\\" not in message, f"{function}: LaTeX in {message!r}"
        assert "compute return" not in message.lower(), f"{function}: 'compute return' in {message!r}"
        named = re.search(rf" in (\w+\.)*{function} \({re.escape(path)}\)", message)
        assert named, f"{function}: the message does not name {function} in {path}: {message!r}"
        quantity = re.search(r": compute (.+?) in [\w.]+ \(", message)
        assert quantity, f"{function}: no 'compute ... in' phrase in {message!r}"
        first_word = quantity.group(1).split()[0].strip(",")
        assert first_word.lower() not in TYPE_WORDS, f"{function}: the quantity starts with a type name: {message!r}"
        assert not first_word[:1].isupper(), f"{function}: the quantity starts with a class name: {message!r}"


QUANTITIES = {
    "named returns": ('"""Return the gradients.\n\n    Returns\n    -------\n    dx : ndarray of shape (N, d)\n    dW, db : ndarray\n        Shapes of W and b.\n\n    Notes\n    -----\n    x : y\n    """', "dx, dW and db"),
    "one name": ('"""Run it.\n\n    Returns\n    -------\n    y : ndarray of shape (N, d)\n    """', "y"),
    "unnamed type, literal summary": ('"""Return ``(dx, dW)`` for the layer.\n\n    Returns\n    -------\n    tuple of ndarray\n    """', "dx and dW"),
    "literal summary with math": ('r"""Return ``dlogits`` of shape (N, E): :math:`\\frac{2}{N} z`."""', "dlogits"),
    "summary with markup": ('"""Compute the ``top_k`` gates of :func:`softmax`: one per token."""', "the top_k gates of softmax"),
    "unnamed type, plain summary": ('"""Returns the dispatch plan.\n\n    Returns\n    -------\n    DispatchPlan\n    """', "the dispatch plan"),
    "summary with another verb": ('"""Run every expert on every token."""', "the result of f"),
    "no docstring": ("", "the result of f"),
}


@pytest.mark.parametrize("case", QUANTITIES)
def test_stub_quantity_from_docstring(case):
    docstring, quantity = QUANTITIES[case]
    text = f"def f(x):\n    {docstring}\n    ### BEGIN SOLUTION ex1_2\n    return x\n    ### END SOLUTION\n"
    table = (Exercise("ex1_2", "a test exercise", 1, ("tinycond.layers:f",), 1),)
    regions, problems = parse_regions(text, "tinycond/layers.py", table)
    assert not problems, f"{case}: {problems}"
    assert regions[0].quantity == quantity, f"{case}: quantity {regions[0].quantity!r}, expected {quantity!r}"


def test_list_shows_file_of_each_function(capsys):
    assert main(["list"]) == 0
    output = capsys.readouterr().out
    for exercise in EXERCISES:
        for function in exercise.functions:
            module, name = function.split(":", 1)
            where = f"{module.replace('.', '/')}.py:{name}"
            assert re.search(rf"(^|\s){re.escape(where)}$", output, re.MULTILINE), f"list does not show {where}:\n{output}"


def _run_with_group_blank(tmp_path, number, group):
    """Build a copy with only the exercises in ``group`` blank and run their tests in it."""
    copy = tmp_path / f"group{number}"
    build_student_copy(copy, [], source=PROJECT_ROOT)
    reset_regions(group, root=copy)
    files = _test_files_naming(copy, group)
    expression = f"({' or '.join(group)}) and not notebook"
    return run_lesson_tests(copy, expression, time_limit=300, pytest_args=files)


def test_each_exercise_fails_alone(tmp_path):
    """Blank one group of independent exercises at a time: each must fail on its own stub.

    Also checks that no test marked with an exercise passes while it is
    blank (it would give points for nothing), and that a test is blocked
    only by exercises its table entry lists as prerequisites.
    """
    groups = _exercise_levels()
    # The runs wait on subprocesses, so threads overlap them.
    with ThreadPoolExecutor(max_workers=3) as pool:
        runs = list(pool.map(lambda item: _run_with_group_blank(tmp_path, *item), enumerate(groups)))
    problems = []
    for group, (events, returncode, output, _) in zip(groups, runs):
        assert returncode is not None, f"the run of {group} timed out:\n{output[-2000:]}"
        assert events and events[-1]["event"] == "finish", f"the run of {group} did not finish:\n{output[-2000:]}"
        results = _results(events)
        for exercise_id in group:
            own = [t for t in results if exercise_id in t["exercises"]]
            if not any(t["outcome"] == "not implemented" and t["stub"] == exercise_id for t in own):
                problems.append(f"{exercise_id}: no test marked {exercise_id} reaches its stub")
            for test in own:
                if test["outcome"] == "passed":
                    problems.append(f"{exercise_id}: {test['nodeid']} passes while {exercise_id} is blank")
                elif test["outcome"] == "blocked":
                    missing = [i for i in test["exercises"] if test["stub"] not in prerequisites(i)]
                    if missing:
                        problems.append(f"{test['nodeid']} calls {test['stub']}: add it to the requires of {', '.join(missing)}")
                elif test["outcome"] != "not implemented":
                    problems.append(f"{test['nodeid']} fails without naming a stub: {test['message'][-300:]}")
    assert not problems, "\n".join(problems)


def test_summary_lists_every_blank_function(tmp_path):
    """The end-of-run summary lists each blank function of every exercise the failing tests need.

    ex2_2 needs ex1_4 (three functions) and, through ex1_6, ex1_2. Whichever
    stub the tests hit first, every blank function of the three exercises
    must be listed, and nothing that is written.
    """
    copy = tmp_path / "copy"
    build_student_copy(copy, [], source=PROJECT_ROOT)
    blanked = ["ex1_2", "ex1_4", "ex2_2"]
    reset_regions(blanked, root=copy)
    files = _test_files_naming(copy, ["ex2_2"])
    _, returncode, output, _ = run_lesson_tests(copy, "ex2_2", time_limit=300, pytest_args=files)
    assert returncode == 1, f"pytest -m ex2_2 exited with {returncode}, expected 1 (tests failed):\n{output[-2000:]}"
    assert "exercises not implemented yet" in output, f"no summary in the output:\n{output[-2000:]}"
    summary = output.split("exercises not implemented yet", 1)[1]
    listed = re.findall(r"^(ex\d+_\d+) \(lesson \d+\): write (.*)$", summary, re.MULTILINE)
    assert [exercise_id for exercise_id, _ in listed] == blanked, f"summary lists {listed}, expected {blanked}:\n{summary}"
    for exercise_id, functions in listed:
        for function in exercise_by_id(exercise_id).functions:
            name = function.split(":", 1)[1]
            assert re.search(rf"\b{name}\b", functions), f"{exercise_id}'s line lacks blank {name}: {functions!r}"
    assert "check it with: pytest -m ex1_4" in summary, f"no command for ex1_4 in the summary:\n{summary}"


def test_unknown_marker_lists_valid_ones(tmp_path):
    copy = tmp_path / "copy"
    build_student_copy(copy, [], source=PROJECT_ROOT)
    events, returncode, output, _ = run_lesson_tests(copy, "lesson99")
    assert returncode == 4, f"pytest -m lesson99 exited with {returncode}, expected 4 (usage error):\n{output[-1000:]}"
    assert "unknown marker 'lesson99'" in output, f"the error does not name the marker:\n{output[-1000:]}"
    assert "lesson markers: lesson1, " in output, f"the error does not list the lesson markers:\n{output[-1000:]}"
    assert f"exercise markers: {EXERCISES[0].id}, " in output, f"the error does not list the exercise markers:\n{output[-1000:]}"


# The generator refuses broken markers

BROKEN = {
    "unbalanced begin": ("def f(x):\n    ### BEGIN SOLUTION ex1_2\n    return x\n", 2, "has no END SOLUTION"),
    "end without begin": ("def f(x):\n    return x\n    ### END SOLUTION\n", 3, "without a BEGIN"),
    "nested": ("def f(x):\n    ### BEGIN SOLUTION ex1_2\n    ### BEGIN SOLUTION ex1_2\n    return x\n    ### END SOLUTION\n", 3, "inside the region"),
    "outside a function": ("### BEGIN SOLUTION ex1_2\nx = 1\n### END SOLUTION\n", 1, "not inside a function"),
    "unknown id": ("def f(x):\n    ### BEGIN SOLUTION ex9_9\n    return x\n    ### END SOLUTION\n", 2, "unknown exercise id 'ex9_9'"),
    "misspelt": ("def f(x):\n    ### BEGIN SOLUTION\n    return x\n    ### END SOLUTION\n", 2, "malformed marker"),
    "after code": ("def f(x):\n    y = x  ### BEGIN SOLUTION ex1_2\n    return y\n    ### END SOLUTION\n", 2, "alone on its line"),
    "empty": ("def f(x):\n    ### BEGIN SOLUTION ex1_2\n    ### END SOLUTION\n    return x\n", 2, "contains no code"),
    "docstring inside": ('def f(x):\n    ### BEGIN SOLUTION ex1_2\n    """Doc."""\n    return x\n    ### END SOLUTION\n', 2, "docstring"),
    "wrong indent": ("def f(x):\n    if x:\n        ### BEGIN SOLUTION ex1_2\n        x = 1\n    return x\n        ### END SOLUTION\n", 3, "indented like"),
    "splits statement": ("def f(x):\n    y = max(x,\n    ### BEGIN SOLUTION ex1_2\n        1)\n    return y\n    ### END SOLUTION\n", 3, "splits the statement"),
    "function not listed": ("def g(x):\n    ### BEGIN SOLUTION ex1_2\n    return x\n    ### END SOLUTION\n", 2, "does not list"),
}


@pytest.mark.parametrize("case", BROKEN)
def test_broken_marker_reported(case):
    text, line, message = BROKEN[case]
    if case != "function not listed":
        text = text.replace("def f(", "def linear_backward(").replace("def g(", "def linear_backward(")
    regions, problems = parse_regions(text, "tinycond/layers.py")
    assert regions == [], f"{case}: parsed {regions}"
    assert any(p.startswith(f"tinycond/layers.py:{line}: ") and message in p for p in problems), (
        f"{case}: expected a problem at line {line} containing {message!r}, got {problems}"
    )


def test_build_refuses_broken_source(tmp_path):
    source = tmp_path / "source"
    build_student_copy(source, [], source=PROJECT_ROOT)
    layers = source / "tinycond" / "layers.py"
    text = layers.read_text(encoding="utf-8")
    line = text.count("\n") + 3
    layers.write_text(text + "\ndef extra(x):\n    ### BEGIN SOLUTION ex1_2\n    return x\n", encoding="utf-8")
    with pytest.raises(RegionError, match=rf"tinycond/layers.py:{line}: BEGIN SOLUTION ex1_2 has no END SOLUTION"):
        build_student_copy(tmp_path / "copy", source=source)
    assert not (tmp_path / "copy").exists(), "a refused build still wrote the copy"


def test_build_from_plain_tree(tmp_path):
    """A tree without .git is walked; outputs are cleared; the source is never written."""
    source = tmp_path / "source"
    build_student_copy(source, [], source=PROJECT_ROOT)
    notebook = {
        "cells": [{"cell_type": "code", "execution_count": 3, "id": "c0", "metadata": {}, "outputs": [
            {"name": "stdout", "output_type": "stream", "text": "42\n"}], "source": "print(42)"}],
        "metadata": {}, "nbformat": 4, "nbformat_minor": 5,
    }
    (source / "lessons").mkdir(exist_ok=True)
    (source / "lessons" / "99_run.ipynb").write_text(json.dumps(notebook), encoding="utf-8")
    (source / "tinycond" / "__pycache__").mkdir(exist_ok=True)
    (source / "tinycond" / "__pycache__" / "stale.pyc").write_bytes(b"\0")
    before = _tree_digest(source)

    copy = tmp_path / "copy"
    result = build_student_copy(copy, [1], source=source)
    assert _tree_digest(source) == before, "building the copy changed the source tree"
    assert result.cleared_notebooks == ("lessons/99_run.ipynb",), f"cleared {result.cleared_notebooks}"
    cell = json.loads((copy / "lessons" / "99_run.ipynb").read_text(encoding="utf-8"))["cells"][0]
    assert cell["outputs"] == [], f"the copied notebook kept its outputs: {cell}"
    assert cell["execution_count"] is None, f"the copied notebook kept its execution count: {cell}"
    assert not (copy / "tinycond" / "__pycache__").exists(), "the copy contains __pycache__"
    assert {exercise_by_id(r.exercise_id).lesson for r in result.blanked} == {1}, "--lessons 1 blanked other lessons"

    with pytest.raises(ValueError, match="not empty"):
        build_student_copy(copy, [1], source=source)
    build_student_copy(copy, [1], source=source, force=True)
    with pytest.raises(ValueError, match="over its source"):
        build_student_copy(source, source=source)


def test_reset_blanks_in_place(tmp_path, capsys):
    root = tmp_path / "checkout"
    build_student_copy(root, [], source=PROJECT_ROOT)
    layers = root / "tinycond" / "layers.py"
    assert main(["reset", "ex1_2", "--root", str(root)]) == 0
    output = capsys.readouterr().out
    assert "ex1_2: blanked tinycond/layers.py" in output, output
    assert "not a git checkout" in output, f"a copy without .git must not suggest git restore: {output}"
    regions, problems = parse_regions(layers.read_text(encoding="utf-8"), "tinycond/layers.py")
    assert not problems, problems
    for region in regions:
        blank = is_blank(region, layers.read_text(encoding="utf-8"))
        assert blank == (region.exercise_id == "ex1_2"), f"{region.function} blank={blank} after reset ex1_2"
    assert all(changed is False for _, changed in reset_regions(["ex1_2"], root=root)), "a second reset changed a blank region"
    assert main(["reset", "ex9_9", "--root", str(root)]) == 2
    assert "unknown exercise 'ex9_9'" in capsys.readouterr().err


def test_reset_in_git_checkout_suggests_restore(tmp_path, capsys):
    root = tmp_path / "checkout"
    build_student_copy(root, [], source=PROJECT_ROOT)
    (root / ".git").mkdir()
    assert main(["reset", "ex1_2", "--root", str(root)]) == 0
    output = capsys.readouterr().out
    assert "git restore tinycond/layers.py" in output, output


def _write_minimal_project(root: Path) -> None:
    """Write a project whose lesson 1 test kills the interpreter, lesson 2 test passes and lesson 3 test hangs.

    Its tinycond package holds only what the grader's pytest plugin imports,
    so each run starts in about a second.
    """
    (root / "tests").mkdir(parents=True)
    (root / "tinycond" / "exercises").mkdir(parents=True)
    (root / "tinycond" / "__init__.py").write_text("", encoding="utf-8")
    for name in ("__init__.py", "table.py", "pytest_report.py"):
        source = PROJECT_ROOT / "tinycond" / "exercises" / name
        (root / "tinycond" / "exercises" / name).write_bytes(source.read_bytes())
    (root / "pyproject.toml").write_text(
        '[tool.pytest.ini_options]\nmarkers = ["lesson1: one", "lesson2: two", "lesson3: three"]\n', encoding="utf-8"
    )
    test_file = """
        import os

        import pytest


        @pytest.mark.lesson1
        def test_kills_interpreter():
            os._exit(3)


        @pytest.mark.lesson2
        def test_adds():
            assert sum([1, 2]) == 3


        @pytest.mark.lesson3
        def test_loops_forever():
            while True:
                pass
    """
    (root / "tests" / "test_grading.py").write_text(textwrap.dedent(test_file), encoding="utf-8")


def test_grade_isolates_crash_and_hang(tmp_path, capsys):
    project = tmp_path / "project"
    _write_minimal_project(project)
    report = tmp_path / "gradebook.json"
    assert main(["grade", str(project), "--lessons", "1,2", "--json", str(report)]) == 0
    output = capsys.readouterr().out
    table = output[output.index("lesson  exercise") :]
    for exercise in (e for e in EXERCISES if e.lesson in (1, 2)):
        assert re.search(rf"\n\s+{exercise.id}\s+{re.escape(exercise.title)}\s", table), f"no row for {exercise.id}:\n{table}"
    assert "\ntotal" in table, f"no total row:\n{table}"

    lesson1, lesson2 = json.loads(report.read_text(encoding="utf-8"))["lessons"]
    assert lesson1["status"] == "crashed", f"lesson 1: {lesson1['status']} {lesson1['detail']}"
    assert "test_kills_interpreter" in lesson1["detail"], f"the crash report does not name the test: {lesson1['detail']}"
    assert (lesson2["status"], lesson2["passed"], lesson2["total"]) == ("ok", 1, 1), f"lesson 2 after a crash: {lesson2}"

    # The limit must cover the interpreter's start, so the run reaches the test
    # that hangs; three times lesson 2's whole run allows for a loaded machine.
    hung = grade_lesson(project, 3, time_limit=max(4.0, 3 * lesson2["seconds"]))
    assert hung.status == "timed out", f"lesson 3: {hung.status} {hung.detail}"
    assert "test_loops_forever" in hung.detail, f"the time-out report does not name the test: {hung.detail}"
    assert hung.points == 0, f"a hung lesson scored {hung.points} points"
