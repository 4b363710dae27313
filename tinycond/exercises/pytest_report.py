"""A pytest plugin that writes one JSON line per event, for the grader.

Loaded with ``-p tinycond.exercises.pytest_report --exercise-report PATH``.
Each line is flushed as soon as it is written, so when the student's code
hangs or kills the interpreter the grader can still read which test was
running and which had finished.
"""

from __future__ import annotations

import json
import sys

import pytest

from tinycond.exercises.table import EXERCISES

_IDS = {exercise.id for exercise in EXERCISES}


def pytest_addoption(parser):
    parser.addoption("--exercise-report", metavar="PATH", help="write the grader's JSON-lines test report to PATH")


class _Report:
    def __init__(self, path):
        self.file = open(path, "w", encoding="utf-8")
        self.outcomes = {}
        self.markers = {}

    def write(self, **event):
        self.file.write(json.dumps(event) + "\n")
        self.file.flush()

    def pytest_sessionstart(self, session):
        import tinycond

        self.write(event="start", package=tinycond.__file__, python=sys.version.split()[0])

    def pytest_collectreport(self, report):
        if report.failed:
            self.write(event="collect_error", nodeid=report.nodeid, message=_first_lines(report.longreprtext))

    def pytest_runtest_logstart(self, nodeid, location):
        self.write(event="test", nodeid=nodeid)

    def pytest_runtest_logreport(self, report):
        outcome = _outcome(report)
        if outcome is None:
            return
        current = self.outcomes.get(report.nodeid)
        # The first phase that did not pass decides: a failing setup or call
        # outranks a later teardown.
        if current is None or current["outcome"] == "passed":
            self.outcomes[report.nodeid] = {
                "outcome": outcome,
                "stub": getattr(report, "exercise_stub", None),
                "message": "" if outcome == "passed" else _first_lines(report.longreprtext),
            }

    def pytest_runtest_logfinish(self, nodeid, location):
        result = self.outcomes.pop(nodeid, None)
        if result is not None:
            self.write(event="result", nodeid=nodeid, **result, exercises=self.markers.pop(nodeid, []))

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, items):
        self.markers = {item.nodeid: sorted({m.name for m in item.iter_markers()} & _IDS) for item in items}

    def pytest_sessionfinish(self, session, exitstatus):
        self.write(event="finish", exitstatus=int(exitstatus))
        self.file.close()


def _outcome(report):
    """Return the test's outcome for this phase, or None for a setup or teardown that passed."""
    status = getattr(report, "exercise_status", None)
    if status is not None:
        return status  # "not implemented" or "blocked", set by tests/conftest.py
    if report.skipped:
        return "xfailed" if hasattr(report, "wasxfail") else "skipped"
    if report.failed:
        return "failed" if report.when == "call" else "error"
    if report.when == "call":
        return "passed"
    return None


def _first_lines(text: str, count: int = 12) -> str:
    lines = text.strip().splitlines()
    return "\n".join(lines[-count:])


def pytest_configure(config):
    path = config.getoption("--exercise-report")
    if path:
        config.pluginmanager.register(_Report(path), "exercise-report")
