"""Exercises: the table of what learners write, and the student-copy tools."""

from tinycond.exercises.table import EXERCISES, Exercise, exercise_by_id

__all__ = ["EXERCISES", "Exercise", "exercise_by_id"]
