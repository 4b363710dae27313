"""Test configuration that turns the tests into exercises.

* One pytest marker per exercise, read from the exercise table, beside the
  ``lessonN`` markers of pyproject.toml.
* ``-m`` naming a marker that does not exist is an error listing the valid
  ones, instead of a silent "no tests ran".
* A ``NotImplementedError`` from a blanked solution region is reported per
  exercise: "not implemented" when the test checks that exercise, "blocked"
  when the test checks another one that calls it. A summary at the end names
  each missing exercise once, with every function of it still blank and the
  command that checks it. It also lists the blank prerequisites of the
  failing tests' exercises, which no test may have reached yet.
* The tests must import tinycond from this checkout, which pyproject.toml
  puts first on ``sys.path``. Anything else is an error, because a student
  copy would otherwise be tested against the installed solution. For the
  same reason the checkout is put first on ``PYTHONPATH`` for the processes
  tests start, such as the notebooks' kernels.
"""

import os
import re
from collections import Counter, defaultdict
from pathlib import Path

import pytest

import tinycond
from tinycond.exercises import EXERCISES
from tinycond.exercises.project import blank_functions
from tinycond.exercises.regions import STUB_MESSAGE
from tinycond.exercises.table import prerequisites

_EXERCISES = {exercise.id: exercise for exercise in EXERCISES}
_ORDER = {exercise.id: number for number, exercise in enumerate(EXERCISES)}
_KEYWORDS = {"and", "or", "not"}
_SAVED_PYTHONPATH = pytest.StashKey()
# A stub's error as it appears in text, such as a notebook cell's traceback.
_STUB_IN_TEXT = re.compile(r"NotImplementedError: ((ex\d+_\d+) \(lesson \d+\): [^\n]*)")


def pytest_configure(config):
    for exercise in EXERCISES:
        config.addinivalue_line("markers", f"{exercise.id}: lesson {exercise.lesson}, {exercise.title}")
    package_root = Path(tinycond.__file__).resolve().parent.parent
    if package_root != Path(config.rootpath).resolve():
        raise pytest.UsageError(
            f"the tests import tinycond from {package_root}, not from this checkout {config.rootpath}; "
            f"run pytest from the checkout's root, whose pyproject.toml puts it first on sys.path"
        )
    config.stash[_SAVED_PYTHONPATH] = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(package_root), os.environ.get("PYTHONPATH")]))


def pytest_unconfigure(config):
    if _SAVED_PYTHONPATH not in config.stash:
        return
    saved = config.stash[_SAVED_PYTHONPATH]
    if saved is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = saved


def pytest_sessionstart(session):
    expression = session.config.option.markexpr
    if not expression:
        return
    registered = [line.split(":", 1)[0].split("(", 1)[0].strip() for line in session.config.getini("markers")]
    unknown = [name for name in _marker_names(expression) if name not in registered]
    if unknown:
        lessons = sorted({n for n in registered if re.fullmatch(r"lesson\d+", n)}, key=_natural_key)
        raise pytest.UsageError(
            f"unknown marker{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} in -m {expression!r}; "
            f"lesson markers: {', '.join(lessons)}; exercise markers: {', '.join(_EXERCISES)}; "
            f"pytest --markers lists every marker"
        )


def _marker_names(expression: str) -> list:
    """Return the marker names an ``-m`` expression uses."""
    expression = re.sub(r"\([^()]*=[^()]*\)", " ", expression)  # keyword arguments, as in name(key=value)
    return [token for token in re.findall(r"[^\s()]+", expression) if token not in _KEYWORDS]


def _natural_key(name: str):
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


# Reporting stubs by exercise


def _stub_error(error):
    """Return ``(exercise_id, message)`` if a stub's NotImplementedError caused ``error``.

    Looks through the chain of causes, then through the error's text, where
    a notebook kernel's traceback arrives.
    """
    first = error
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, NotImplementedError) and error.args and isinstance(error.args[0], str):
            match = STUB_MESSAGE.match(error.args[0])
            if match:
                return match.group(1), error.args[0]
        error = error.__cause__ or error.__context__
    match = _STUB_IN_TEXT.search(re.sub(r"\x1b\[[0-9;]*m", "", str(first)))  # without terminal colour codes
    if match:
        return match.group(2), match.group(1)
    return None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if not report.failed or call.excinfo is None:
        return
    stub = _stub_error(call.excinfo.value)
    if stub is None:
        return
    exercise_id, message = stub
    own = sorted({marker.name for marker in item.iter_markers()} & _EXERCISES.keys())
    report.exercise_stub = exercise_id
    report.exercise_own = own
    if exercise_id in own:
        report.exercise_status = "not implemented"
        report.longrepr = f"not implemented yet: {message}"
    else:
        report.exercise_status = "blocked"
        report.longrepr = f"blocked by {exercise_id}, which is not implemented yet: {message}"


def pytest_report_teststatus(report, config):
    status = getattr(report, "exercise_status", None)
    if status == "not implemented":
        return "not implemented", "N", ("NOT IMPLEMENTED", {"yellow": True})
    if status == "blocked":
        return "blocked", "B", ("BLOCKED", {"yellow": True})
    return None


def pytest_terminal_summary(terminalreporter):
    reports = terminalreporter.stats.get("not implemented", []) + terminalreporter.stats.get("blocked", [])
    if not reports:
        return

    messages = {}
    own_counts = Counter()
    blocked = defaultdict(Counter)
    needed_by = defaultdict(set)  # blank exercise -> exercises of the failing tests that need it
    for report in reports:
        stub = report.exercise_stub
        messages[stub] = str(report.longrepr).split(": ", 1)[1]
        if report.exercise_status == "not implemented":
            own_counts[stub] += 1
        else:
            blocked[stub][", ".join(report.exercise_own) or "tests without an exercise marker"] += 1
        for own in report.exercise_own:
            needed_by.setdefault(own, set())  # the test's own exercise, listed if it is blank too
            for required in prerequisites(own):
                needed_by[required].add(own)

    # List every blank function of each exercise involved, not only the
    # first stub a test hit, so one run shows the whole to-do list.
    blank = blank_functions(terminalreporter.config.rootpath, set(messages) | set(needed_by))
    todo = set(messages) | set(blank)

    terminalreporter.section("exercises not implemented yet", sep="=", yellow=True)
    for exercise_id in sorted(todo, key=lambda e: _ORDER.get(e, len(_ORDER))):
        if exercise_id in blank:
            terminalreporter.line(f"{exercise_id} (lesson {_EXERCISES[exercise_id].lesson}): write {_functions_by_file(blank[exercise_id])}")
        else:
            terminalreporter.line(messages[exercise_id])  # the stub's own message, when its file could not be read

        parts = []
        if own_counts[exercise_id]:
            parts.append(f"{own_counts[exercise_id]} of its tests wait for it")
        if blocked[exercise_id]:
            waiting = ", ".join(f"{name}: {count}" for name, count in sorted(blocked[exercise_id].items()))
            parts.append(f"it blocks {sum(blocked[exercise_id].values())} tests of other exercises ({waiting})")
        elif needed_by[exercise_id]:
            needing = sorted(needed_by[exercise_id], key=_ORDER.get)
            verb = "needs" if len(needing) == 1 else "need"
            parts.append(f"{', '.join(needing)} {verb} it")
        terminalreporter.line(f"    {'; '.join(parts + [f'check it with: pytest -m {exercise_id}'])}")


def _functions_by_file(functions) -> str:
    """Return ``"f, g (path); h (path2)"`` for a list of ``(path, function_name)``."""
    by_path = defaultdict(list)
    for path, name in functions:
        by_path[path].append(name)
    return "; ".join(f"{', '.join(names)} ({path})" for path, names in by_path.items())
