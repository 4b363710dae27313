"""Grade a student copy: run each lesson's tests in its own interpreter and score them.

Each lesson runs as ``python -m pytest -m "lessonN and not notebook"`` in a
subprocess whose working directory and ``PYTHONPATH`` are the copy, so the
copy's own package is tested. A lesson scores 0 points when its run exceeds
the time limit, ends without finishing (a crash), or cannot import one of
its test files. The other lessons are unaffected, because each runs alone.

Scores: each exercise earns ``points * passed / total`` over the tests marked
with its id; a lesson's score is the sum over its exercises, and the total is
the sum over lessons. Skipped and expected-to-fail tests count in neither
``passed`` nor ``total``.

NOTE: the grader runs the tests found in the copy, with the grader's user
rights and no sandbox. A student can edit those tests, so for marks that
count, copy the student's ``tinycond/`` into a fresh student copy first.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tinycond.exercises.table import EXERCISES, lessons_with_exercises

DEFAULT_TIME_LIMIT = 120.0  # seconds per lesson; the reference solutions need a few
_UNGRADED = ("skipped", "xfailed")


@dataclass
class ExerciseScore:
    """Score of one exercise."""

    id: str
    title: str
    passed: int = 0
    total: int = 0
    points: float = 0.0
    max_points: int = 0
    status: str = "no tests"


@dataclass
class LessonScore:
    """Score of one lesson's run."""

    lesson: int
    status: str = "ok"  # ok, timed out, crashed, collection error, wrong package, no tests
    detail: str = ""
    passed: int = 0
    total: int = 0
    points: float = 0.0
    max_points: int = 0
    seconds: float = 0.0
    package: str = ""
    exercises: list = field(default_factory=list)
    tests: list = field(default_factory=list)


def run_lesson_tests(copy, marker_expression, time_limit=DEFAULT_TIME_LIMIT, pytest_args=()):
    """Run pytest in ``copy`` with ``-m marker_expression`` in a subprocess.

    ``pytest_args`` are appended to the pytest command line.

    Returns
    -------
    events : list of dict
        The JSON lines written by :mod:`tinycond.exercises.pytest_report`.
    returncode : int or None
        None if the run was stopped at the time limit.
    output : str
        The run's standard output and error.
    seconds : float
        Wall-clock time of the run.
    """
    copy = Path(copy).resolve()
    with tempfile.TemporaryDirectory(prefix="tinycond-grade-") as scratch:
        report = Path(scratch) / "report.jsonl"
        command = [
            sys.executable, "-m", "pytest", "-q", "-m", marker_expression,
            "-p", "tinycond.exercises.pytest_report", f"--exercise-report={report}",
            "-p", "no:cacheprovider", "--continue-on-collection-errors", f"--rootdir={copy}", *pytest_args,
        ]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(copy), *filter(None, [env.get("PYTHONPATH")])])
        env["PYTHONDONTWRITEBYTECODE"] = "1"  # leave no __pycache__ in the student's directory
        env["MPLBACKEND"] = "Agg"
        env["TINYCOND_FIGURES"] = scratch  # figures from tests go to scratch, not into the copy
        output_path = Path(scratch) / "output.txt"
        start = time.perf_counter()
        with open(output_path, "wb") as output:
            # A new session, so a timeout can stop any processes the student's code started too.
            process = subprocess.Popen(command, cwd=copy, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
            try:
                returncode = process.wait(timeout=time_limit)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                returncode = None
        seconds = time.perf_counter() - start
        events = []
        if report.exists():
            for line in report.read_text(encoding="utf-8").splitlines():
                try:
                    events.append(json.loads(line))
                except ValueError:
                    break  # the last line was cut off when the process died
        output_text = output_path.read_text(encoding="utf-8", errors="replace")
    return events, returncode, output_text, seconds


def grade_lesson(copy, lesson, time_limit=DEFAULT_TIME_LIMIT, exercises=EXERCISES, pytest_args=()) -> LessonScore:
    """Run one lesson's tests in ``copy`` and score them; ``pytest_args`` extend the pytest command."""
    copy = Path(copy).resolve()
    events, returncode, output, seconds = run_lesson_tests(copy, f"lesson{lesson} and not notebook", time_limit, pytest_args)
    score = LessonScore(lesson=lesson, seconds=round(seconds, 2))
    score.tests = [{k: v for k, v in e.items() if k != "event"} for e in events if e["event"] == "result"]
    started = [e for e in events if e["event"] == "start"]
    finished = [e for e in events if e["event"] == "finish"]
    running = [e["nodeid"] for e in events if e["event"] == "test"]
    score.package = started[0]["package"] if started else ""

    if returncode is None:
        where = f" while running {running[-1]}" if running else ""
        score.status, score.detail = "timed out", f"stopped after the {time_limit:g} s limit{where}"
    elif not finished:
        where = f" while running {running[-1]}" if running else ""
        ending = f"was killed by signal {-returncode}" if returncode < 0 else f"exited with code {returncode}"
        score.status, score.detail = "crashed", f"pytest {ending} before finishing{where}; last output: {_tail(output)}"
    elif score.package and copy not in Path(score.package).resolve().parents:
        score.status, score.detail = "wrong package", f"the tests imported tinycond from {score.package}, not from the copy"
    else:
        errors = [e for e in events if e["event"] == "collect_error" and _belongs_to(copy, e["nodeid"], lesson)]
        if errors:
            score.status = "collection error"
            score.detail = "; ".join(f"{e['nodeid']}: {_last_line(e['message'])}" for e in errors)
        elif not score.tests:
            score.status, score.detail = "no tests", f"no test is marked lesson{lesson}"

    for exercise in exercises:
        if exercise.lesson != lesson:
            continue
        result = ExerciseScore(exercise.id, exercise.title, max_points=exercise.points)
        tests = [t for t in score.tests if exercise.id in t["exercises"] and t["outcome"] not in _UNGRADED]
        result.total = len(tests)
        result.passed = sum(t["outcome"] == "passed" for t in tests)
        if result.total and score.status == "ok":
            result.points = round(exercise.points * result.passed / result.total, 2)
        result.status = _exercise_status(exercise.id, tests, score.status)
        score.exercises.append(result)
        score.max_points += exercise.points
        score.points += result.points
    score.points = round(score.points, 2)
    graded = [t for t in score.tests if t["outcome"] not in _UNGRADED]
    score.total = len(graded)
    score.passed = sum(t["outcome"] == "passed" for t in graded)
    return score


def grade(copy, lessons=None, time_limit=DEFAULT_TIME_LIMIT, progress=None, exercises=EXERCISES, pytest_args=()) -> dict:
    """Grade the lessons of a student copy one after the other; return the gradebook.

    ``progress``, if given, is called with a line of text before and after
    each lesson; ``pytest_args`` extend every pytest command.
    """
    copy = Path(copy).resolve()
    if not (copy / "tinycond").is_dir() or not (copy / "tests").is_dir():
        raise ValueError(f"{copy} has no tinycond/ and tests/; pass the directory of a student copy")
    lessons = sorted(lessons_with_exercises() if lessons is None else lessons)
    scores = []
    for lesson in lessons:
        if progress:
            progress(f"lesson {lesson}: running its tests (time limit {time_limit:g} s)")
        score = grade_lesson(copy, lesson, time_limit, exercises, pytest_args)
        if progress:
            progress(f"lesson {lesson}: {score.passed}/{score.total} tests passed in {score.seconds:.1f} s, {score.status}")
        scores.append(score)
    points = round(sum(s.points for s in scores), 2)
    max_points = sum(s.max_points for s in scores)
    return {
        "copy": str(copy),
        "time_limit_seconds": time_limit,
        "graded_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "lessons": [asdict(s) for s in scores],
        "total": {"points": points, "max_points": max_points, "percent": round(100.0 * points / max_points, 1) if max_points else 0.0},
    }


def format_gradebook(gradebook: dict) -> str:
    """Return the gradebook as a table: one row per lesson, one indented row per exercise."""
    rows = [("lesson", "exercise", "title", "tests", "points", "status")]
    for lesson in gradebook["lessons"]:
        status = lesson["status"] + (f": {lesson['detail']}" if lesson["detail"] else "")
        rows.append((str(lesson["lesson"]), "", "", f"{lesson['passed']}/{lesson['total']}", _points(lesson), status))
        for exercise in lesson["exercises"]:
            tests = f"{exercise['passed']}/{exercise['total']}"
            rows.append(("", exercise["id"], exercise["title"], tests, _points(exercise), exercise["status"]))
    total = gradebook["total"]
    passed = sum(lesson["passed"] for lesson in gradebook["lessons"])
    count = sum(lesson["total"] for lesson in gradebook["lessons"])
    rows.append(("total", "", "", f"{passed}/{count}", _points(total), f"{total['percent']:.1f}%"))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = []
    for row in rows:
        cells = [row[0].ljust(widths[0]), row[1].ljust(widths[1]), row[2].ljust(widths[2]), row[3].rjust(widths[3]), row[4].rjust(widths[4]), row[5]]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _points(entry) -> str:
    return f"{entry['points']:.1f}/{entry['max_points']}"


def _exercise_status(exercise_id, tests, lesson_status) -> str:
    if lesson_status != "ok":
        return f"0 points: lesson {lesson_status}"
    if not tests:
        return "no tests"
    failing = [t for t in tests if t["outcome"] != "passed"]
    if not failing:
        return "passed"
    if any(t["outcome"] == "not implemented" and t["stub"] == exercise_id for t in failing):
        return "not implemented"
    if all(t["outcome"] == "blocked" for t in failing):
        return f"blocked by {', '.join(sorted({t['stub'] for t in failing}))}"
    return f"{len(failing)} failing"


def _belongs_to(copy: Path, nodeid: str, lesson: int) -> bool:
    """Return True if a test file that failed to import is marked with ``lesson`` (or with no lesson)."""
    path = copy / nodeid.split("::", 1)[0]
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return True
    lessons = {int(n) for n in re.findall(r"pytest\.mark\.lesson(\d+)", text)}
    return not lessons or lesson in lessons


def _last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def _tail(output: str) -> str:
    """Return the last output line with words in it, skipping pytest's progress dots."""
    lines = [line.strip() for line in output.splitlines() if re.search(r"[A-Za-z]{2}", line)]
    return lines[-1] if lines else "no output"
