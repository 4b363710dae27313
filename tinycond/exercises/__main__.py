"""Command line for exercises: ``python -m tinycond.exercises build|reset|grade|list``."""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

from tinycond.exercises.build import build_student_copy, parse_lessons, reset_regions
from tinycond.exercises.files import PROJECT_ROOT
from tinycond.exercises.grade import DEFAULT_TIME_LIMIT, format_gradebook, grade
from tinycond.exercises.project import scan_project
from tinycond.exercises.regions import RegionError, is_blank
from tinycond.exercises.table import EXERCISES, exercise_by_id, exercises_of_lessons, lessons_with_exercises


def _lessons_argument(text):
    try:
        return parse_lessons(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _parser():
    parser = argparse.ArgumentParser(
        prog="python -m tinycond.exercises",
        description="Turn the tests into exercises: write a student copy, blank regions in place, grade a copy.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="{build,reset,grade,list}")

    build = commands.add_parser(
        "build",
        help="write a student copy with solution regions blanked",
        description="Write a complete copy of the project (package, lessons, tests, README, requirements) into DIR, "
        "with the solution regions of the chosen lessons replaced by NotImplementedError stubs and the notebooks' "
        "outputs cleared. Other lessons keep their solutions. The source tree is only read.",
    )
    build.add_argument("directory", metavar="DIR", type=Path, help="where to write the copy; created if missing, must be empty unless --force")
    build.add_argument("--lessons", type=_lessons_argument, metavar="N,...", help="lessons to blank, such as 2,3 (default: every lesson)")
    build.add_argument("--force", action="store_true", help="write into a non-empty DIR, replacing files of the same name")

    reset = commands.add_parser(
        "reset",
        help="blank regions in your own checkout (self-learners)",
        description="Replace the solution regions of the given exercises by stubs, in place. "
        "In a git checkout, 'git restore tinycond' brings the solutions back.",
    )
    reset.add_argument("ids", nargs="*", metavar="ID", help="exercise ids such as ex3_2")
    reset.add_argument("--all", action="store_true", help="blank every exercise")
    reset.add_argument("--lessons", type=_lessons_argument, metavar="N,...", help="blank every exercise of these lessons")
    reset.add_argument("--root", type=Path, default=PROJECT_ROOT, help=f"checkout to edit (default: {PROJECT_ROOT})")

    grade_command = commands.add_parser(
        "grade",
        help="run a student copy's tests and score each lesson",
        description="Run each lesson's unit tests (marker lessonN, notebooks excluded) in a separate interpreter with "
        "DIR as working directory and PYTHONPATH, then print passed/total and points per lesson and exercise. "
        "Each exercise earns its points times the fraction of its tests (marker exN_M) that pass. "
        "A lesson that exceeds the time limit, crashes the interpreter or has a test file that cannot be imported "
        "scores 0; the other lessons are unaffected.",
    )
    grade_command.add_argument("directory", metavar="DIR", type=Path, help="the student copy to grade")
    grade_command.add_argument("--lessons", type=_lessons_argument, metavar="N,...", help="lessons to grade (default: every lesson with exercises)")
    grade_command.add_argument(
        "--time-limit", type=float, default=DEFAULT_TIME_LIMIT, metavar="SECONDS",
        help=f"wall-clock limit for each lesson's tests, in seconds (default: {DEFAULT_TIME_LIMIT:g})",
    )
    grade_command.add_argument("--json", type=Path, metavar="PATH", help="also write the gradebook (every test's outcome) to PATH as JSON")

    listing = commands.add_parser("list", help="show the exercises and whether each is written or blank")
    listing.add_argument("--lessons", type=_lessons_argument, metavar="N,...", help="only these lessons")
    listing.add_argument("--root", type=Path, default=PROJECT_ROOT, help=f"checkout to inspect (default: {PROJECT_ROOT})")
    return parser


def main(argv=None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            return _build(args)
        if args.command == "reset":
            return _reset(args, parser)
        if args.command == "grade":
            return _grade(args)
        return _list(args)
    except RegionError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyError as error:  # an unknown exercise id; the message lists the valid ones
        print(f"error: {error.args[0]}", file=sys.stderr)
        return 2
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def _build(args) -> int:
    result = build_student_copy(args.directory, args.lessons, force=args.force)
    print(f"wrote {result.n_files} files to {result.destination}")
    by_lesson = defaultdict(set)
    for region in result.blanked:
        by_lesson[exercise_by_id(region.exercise_id).lesson].add(region.exercise_id)
    for lesson, ids in sorted(by_lesson.items()):
        print(f"lesson {lesson}: blanked {', '.join(sorted(ids))}")
    if result.cleared_notebooks:
        print(f"cleared the outputs of {', '.join(result.cleared_notebooks)}")
    if by_lesson:
        first = min(by_lesson)
        print(f"check it: cd {result.destination} && pytest -m lesson{first}")
    return 0


def _reset(args, parser) -> int:
    if args.all:
        ids = [e.id for e in EXERCISES]
    elif args.lessons:
        ids = [e.id for e in exercises_of_lessons(args.lessons)]
    elif args.ids:
        ids = [exercise_by_id(i).id for i in args.ids]
    else:
        parser.error("reset needs exercise ids, --lessons or --all")
    changed_paths = set()
    for region, changed in reset_regions(ids, args.root):
        where = f"{region.path}:{region.begin + 1} ({region.function_name})"
        print(f"{region.exercise_id}: {'blanked' if changed else 'already blank in'} {where}")
        if changed:
            changed_paths.add(region.path)
    if changed_paths and (Path(args.root) / ".git").exists():
        print(f"to bring the solutions back: git restore {' '.join(sorted(changed_paths))}")
    elif changed_paths:
        # A student copy made by build has no git history to restore from.
        print("this folder is not a git checkout, so the blanked solutions cannot be restored here")
    return 0


def _grade(args) -> int:
    if args.time_limit <= 0:
        raise ValueError(f"--time-limit must be a positive number of seconds, got {args.time_limit}")
    print(f"grading {args.directory.resolve()}: each lesson's tests get {args.time_limit:g} s; notebooks are not graded")
    gradebook = grade(args.directory, args.lessons, args.time_limit, progress=print)
    print()
    print(format_gradebook(gradebook))
    if args.json:
        args.json.write_text(json.dumps(gradebook, indent=2) + "\n", encoding="utf-8")
        print(f"wrote the gradebook to {args.json}")
    return 0


def _list(args) -> int:
    lessons = args.lessons or lessons_with_exercises()
    root = Path(args.root)
    regions = scan_project(root)
    texts = {}
    rows = [("id", "points", "status", "title", "functions")]
    for exercise in exercises_of_lessons(lessons):
        own = [r for r in regions if r.exercise_id == exercise.id]
        for region in own:
            texts.setdefault(region.path, (root / region.path).read_text(encoding="utf-8"))
        blank = sum(is_blank(r, texts[r.path]) for r in own)
        if blank == len(own):
            status = "blank"
        elif blank == 0:
            status = "written"
        else:
            status = "partly blank"
        paths = {r.function: r.path for r in own}
        for number, function in enumerate(exercise.functions):
            # scan_project has checked that every listed function has a region, so the path is known.
            where = f"{paths[function]}:{function.split(':', 1)[1]}"
            if number == 0:
                rows.append((exercise.id, str(exercise.points), status, exercise.title, where))
            else:
                rows.append(("", "", "", "", where))  # one function a line, under its exercise
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        cells = [row[0].ljust(widths[0]), row[1].rjust(widths[1]), row[2].ljust(widths[2]), row[3].ljust(widths[3]), row[4]]
        print("  ".join(cells).rstrip())
    print("check one exercise with: pytest -m ID; a whole lesson with: pytest -m lessonN")
    return 0


if __name__ == "__main__":
    sys.exit(main())
