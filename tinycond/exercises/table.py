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
        Exercises whose code this one's tests call, so that their stubs
        block its tests; tests/test_exercises.py checks the list is complete.
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
    Exercise("ex2_1", "dense mixture forward", 2, ("tinycond.moe.dense:dense_moe_forward",), 2),
    Exercise("ex2_2", "dense mixture backward", 2, ("tinycond.moe.dense:dense_moe_backward",), 3, ("ex1_4", "ex1_6", "ex2_1")),
    Exercise(
        "ex3_1",
        "top-k gating, both conventions",
        3,
        ("tinycond.moe.gating:topk_gating_forward", "tinycond.moe.gating:topk_gating_backward"),
        3,
        ("ex1_4",),
    ),
    Exercise("ex3_2", "noisy router logits backward", 3, ("tinycond.moe.gating:noisy_logits_backward",), 2),
    Exercise(
        "ex3_3",
        "Switch loss and router z-loss",
        3,
        (
            "tinycond.moe.balancing:switch_loss_forward",
            "tinycond.moe.balancing:switch_loss_backward",
            "tinycond.moe.balancing:z_loss_forward",
            "tinycond.moe.balancing:z_loss_backward",
        ),
        2,
        ("ex1_4",),
    ),
    Exercise(
        "ex3_4",
        "importance loss and smooth load loss",
        3,
        (
            "tinycond.moe.balancing:importance_loss_forward",
            "tinycond.moe.balancing:importance_loss_backward",
            "tinycond.moe.load:load_loss_forward",
            "tinycond.moe.load:load_loss_backward",
        ),
        3,
    ),
    Exercise(
        "ex3_5",
        "expert capacity, dispatch plan and combine",
        3,
        ("tinycond.moe.dispatch:expert_capacity", "tinycond.moe.dispatch:plan_dispatch", "tinycond.moe.dispatch:combine_slots"),
        3,
    ),
    Exercise(
        "ex3_6",
        "grouped experts and the sparse layer backward",
        3,
        (
            "tinycond.moe.dispatch:grouped_mlp_forward",
            "tinycond.moe.dispatch:grouped_mlp_backward",
            "tinycond.moe.sparse:sparse_moe_backward",
        ),
        4,
        ("ex1_6", "ex2_1", "ex3_1", "ex3_2", "ex3_3", "ex3_4", "ex3_5"),
    ),
    Exercise("ex4_1", "tree path probabilities and their backward", 4, ("tinycond.tree.soft:tree_path_forward", "tinycond.tree.soft:tree_path_backward"), 3),
    Exercise("ex4_2", "soft decision tree backward", 4, ("tinycond.tree.soft:soft_tree_backward",), 3, ("ex1_3", "ex1_6", "ex4_1")),
    Exercise(
        "ex4_3",
        "hard descent and leaf-grouped inference",
        4,
        ("tinycond.tree.hard:tree_descend", "tinycond.tree.hard:hard_tree_forward"),
        2,
        ("ex3_5", "ex3_6", "ex4_1"),
    ),
    Exercise("ex4_4", "hard-path training backward", 4, ("tinycond.tree.hard:hard_tree_backward",), 3, ("ex3_6", "ex4_3")),
    Exercise(
        "ex4_5",
        "balance and hardening penalties backward",
        4,
        ("tinycond.tree.penalties:balance_penalty_backward", "tinycond.tree.penalties:hardening_penalty_backward"),
        2,
        ("ex4_2", "ex4_4"),
    ),
    Exercise("ex5_1", "halting rule and step weights", 5, ("tinycond.act.halting:halting_step",), 1),
    Exercise("ex5_2", "adaptive computation time forward", 5, ("tinycond.act.halting:act_forward",), 3, ("ex5_1",)),
    Exercise("ex5_3", "adaptive computation time backward", 5, ("tinycond.act.halting:act_backward",), 4, ("ex1_2", "ex5_2")),
    Exercise("ex6_1", "causal attention backward", 6, ("tinycond.attention:causal_attention_backward",), 4),
    Exercise(
        "ex6_2",
        "multi-head self-attention backward",
        6,
        ("tinycond.attention:causal_self_attention_backward",),
        3,
        ("ex1_2", "ex6_1"),
    ),
    Exercise("ex6_3", "temperature and top-k sampling", 6, ("tinycond.lm.generate:sample_next",), 2),
)


def exercise_by_id(exercise_id: str) -> Exercise:
    """Return the exercise with this id, or raise ``KeyError`` listing the valid ids."""
    for exercise in EXERCISES:
        if exercise.id == exercise_id:
            return exercise
    raise KeyError(f"unknown exercise {exercise_id!r}; valid ids: {', '.join(e.id for e in EXERCISES)}")


def lessons_with_exercises() -> tuple:
    """Return the lesson numbers that have at least one exercise, in order."""
    return tuple(sorted({exercise.lesson for exercise in EXERCISES}))


def exercises_of_lessons(lessons) -> tuple:
    """Return the exercises of the given lesson numbers, in table order."""
    wanted = set(lessons)
    return tuple(exercise for exercise in EXERCISES if exercise.lesson in wanted)


def prerequisites(exercise_id: str) -> frozenset:
    """Return every exercise that ``exercise_id`` needs, directly or through other exercises."""
    found = set()
    pending = list(exercise_by_id(exercise_id).requires)
    while pending:
        current = pending.pop()
        if current not in found:
            found.add(current)
            pending.extend(exercise_by_id(current).requires)
    return frozenset(found)
