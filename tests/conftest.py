"""Test configuration that turns the tests into exercises.

* One pytest marker per exercise, read from the exercise table, beside the
  ``lessonN`` markers of pyproject.toml.
* ``-m`` naming a marker that does not exist is an error listing the valid
  ones, instead of a silent "no tests ran".
* A ``NotImplementedError`` from a blanked solution region is reported per
  exercise: "not implemented" when the test checks that exercise, "blocked"
  when the test checks another one that calls it. A summary at the end names
  each missing exercise once, with the command that checks it.
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
from tinycond.exercises.regions import STUB_MESSAGE

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
    for report in reports:
        stub = report.exercise_stub
        messages[stub] = str(report.longrepr).split(": ", 1)[1]
        if report.exercise_status == "not implemented":
            own_counts[stub] += 1
        else:
            blocked[stub][", ".join(report.exercise_own) or "tests without an exercise marker"] += 1
    terminalreporter.section("exercises not implemented yet", sep="=", yellow=True)
    for stub in sorted(messages, key=lambda s: _ORDER.get(s, len(_ORDER))):
        terminalreporter.line(messages[stub])
        parts = []
        if own_counts[stub]:
            parts.append(f"{own_counts[stub]} of its tests wait for it")
        if blocked[stub]:
            waiting = ", ".join(f"{name}: {count}" for name, count in sorted(blocked[stub].items()))
            parts.append(f"it blocks {sum(blocked[stub].values())} tests of other exercises ({waiting})")
        terminalreporter.line(f"    {'; '.join(parts)}; check it with: pytest -m {stub}")
