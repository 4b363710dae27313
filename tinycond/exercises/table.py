"""The one table of exercises.

Every exercise is a solution region in the package, delimited by
``### BEGIN SOLUTION <id>`` and ``### END SOLUTION`` inside the listed
functions. The student-copy generator, the tests (one pytest marker per id),
the grader and the lessons all read this table, and nothing else lists
exercises.
"""

from __future__ import annotations

from typing import NamedTuple


class Exercise(NamedTuple):
    """One exercise.

    Attributes
    ----------
    id : str
        Marker name, ``ex<lesson>_<number>``.
    title : str
        What the learner builds, in a few words.
    lesson : int
        Lesson number.
    functions : tuple of str
        ``module:function`` names whose solution regions belong to the exercise.
    points : int
        Weight in the grade.
    requires : tuple of str
        Exercises whose code this one calls, so their stubs block its tests.
    """

    id: str
    title: str
    lesson: int
    functions: tuple
    points: int
    requires: tuple = ()


EXERCISES = (
    Exercise("ex1_1", "central-difference gradient", 1, ("tinycond.gradcheck.core:numerical_gradient",), 1),
    Exercise("ex1_2", "linear layer backward", 1, ("tinycond.layers:linear_backward",), 2),
    Exercise(
        "ex1_3",
        "activation backward passes",
        1,
        ("tinycond.functional:relu_backward", "tinycond.functional:sigmoid_backward", "tinycond.functional:gelu_backward"),
        2,
    ),
    Exercise(
        "ex1_4",
        "softmax and cross-entropy backward",
        1,
        ("tinycond.functional:softmax_backward", "tinycond.functional:log_softmax_backward", "tinycond.functional:cross_entropy_backward"),
        3,
    ),
    Exercise("ex1_5", "layer normalisation backward", 1, ("tinycond.layers:layer_norm_backward",), 3),
    Exercise("ex1_6", "MLP and embedding backward", 1, ("tinycond.layers:mlp_backward", "tinycond.layers:embedding_backward"), 2, ("ex1_2", "ex1_3")),
    Exercise("ex2_1", "dense mixture forward", 2, ("tinycond.moe.dense:dense_moe_forward",), 2, ("ex1_6",)),
    Exercise("ex2_2", "dense mixture backward", 2, ("tinycond.moe.dense:dense_moe_backward",), 3, ("ex1_4", "ex1_6")),
)


def exercise_by_id(exercise_id: str) -> Exercise:
    """Return the exercise with this id, or raise ``KeyError`` listing the valid ids."""
    for exercise in EXERCISES:
        if exercise.id == exercise_id:
            return exercise
    raise KeyError(f"unknown exercise {exercise_id!r}; valid ids: {', '.join(e.id for e in EXERCISES)}")
