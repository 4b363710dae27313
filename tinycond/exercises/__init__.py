"""Exercises: the table of what learners write, and the tools that use it.

``python -m tinycond.exercises`` has four commands:

* ``build DIR [--lessons N,...]`` writes a student copy with the solution
  regions of those lessons replaced by ``NotImplementedError`` stubs.
* ``reset ID ... | --lessons N,... | --all`` blanks regions in place, for a
  learner working in their own checkout.
* ``grade DIR [--json PATH]`` runs a copy's tests lesson by lesson, in
  separate interpreters with a time limit, and scores them.
* ``list`` shows each exercise and whether it is written or blank.

Modules: :mod:`~tinycond.exercises.table` (the one list of exercises),
:mod:`~tinycond.exercises.regions` (parsing, checking and blanking solution
regions in one file), :mod:`~tinycond.exercises.project` (the checks over a
whole project), :mod:`~tinycond.exercises.build` (student copy and reset),
:mod:`~tinycond.exercises.grade` and its pytest plugin
:mod:`~tinycond.exercises.pytest_report`.
"""

from tinycond.exercises.table import EXERCISES, Exercise, exercise_by_id

__all__ = ["EXERCISES", "Exercise", "exercise_by_id"]
