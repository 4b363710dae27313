"""Register one pytest marker per exercise, read from the exercise table."""

from tinycond.exercises import EXERCISES


def pytest_configure(config):
    for exercise in EXERCISES:
        config.addinivalue_line("markers", f"{exercise.id}: lesson {exercise.lesson}, {exercise.title}")
