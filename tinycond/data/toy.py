"""Small 2-D tasks where different regions of the input want different experts.

Every generator takes an explicit ``rng`` (a Generator or an integer seed) and
returns float64 inputs of shape ``(n, 2)`` in the square ``[-1, 1]^2``.
"""

from __future__ import annotations

import numpy as np

from tinycond._checks import as_generator, check_positive_int


def checkerboard(n, *, cells=4, rng):
    """Sample a ``cells`` x ``cells`` checkerboard classification task.

    Returns
    -------
    x : ndarray of shape (n, 2)
        Uniform in ``[-1, 1]^2``.
    y : int ndarray of shape (n,)
        0 or 1 by the colour of the square that contains the point.
    """
    n = check_positive_int(n, "n")
    cells = check_positive_int(cells, "cells")
    rng = as_generator(rng)
    x = rng.uniform(-1.0, 1.0, size=(n, 2))
    index = np.floor((x + 1.0) / 2.0 * cells).clip(0, cells - 1).astype(int)
    return x, (index.sum(axis=1) % 2).astype(np.int64)


def piecewise_regression(n, *, noise=0.05, rng):
    """Sample a regression target that follows a different simple rule in each quadrant.

    The four rules are a plane, a sine ridge, a bowl and a constant, so a
    single small network must compromise while a mixture can give one rule
    to each expert.

    Returns
    -------
    x : ndarray of shape (n, 2)
    y : ndarray of shape (n, 1)
    """
    n = check_positive_int(n, "n")
    rng = as_generator(rng)
    x = rng.uniform(-1.0, 1.0, size=(n, 2))
    a, b = x[:, 0], x[:, 1]
    plane = 1.5 * a - b
    ridge = np.sin(4.0 * np.pi * a)
    bowl = 4.0 * (a**2 + b**2) - 2.0
    constant = np.full(n, -1.0)
    quadrant = (a >= 0).astype(int) + 2 * (b >= 0).astype(int)
    y = np.choose(quadrant, [plane, ridge, bowl, constant])
    y = y + noise * rng.standard_normal(n)
    return x, y[:, None]


def gaussian_blobs(n, *, centers=4, spread=0.15, rng):
    """Sample ``centers`` Gaussian clusters on a circle, labelled by cluster.

    Returns
    -------
    x : ndarray of shape (n, 2)
    y : int ndarray of shape (n,)
    """
    n = check_positive_int(n, "n")
    centers = check_positive_int(centers, "centers")
    rng = as_generator(rng)
    labels = rng.integers(0, centers, size=n)
    angle = 2.0 * np.pi * labels / centers
    means = 0.6 * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    x = np.clip(means + spread * rng.standard_normal((n, 2)), -1.0, 1.0)
    return x, labels.astype(np.int64)
