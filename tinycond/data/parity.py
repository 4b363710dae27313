r"""Graves's parity task: the parity of the +1 entries of a vector of -1, 0 and +1.

Each input has ``size`` entries. A random number of them, from 1 to ``size``,
are non-zero, at random positions and each +1 or -1 with equal probability.
The target is 1 when the count of +1 entries is odd and 0 when it is even.
The whole vector arrives in a single input step, so a recurrent network can
only gain computation by pondering.

Graves (2016) used vectors of 64 entries. The lesson uses 8 (see
``lessons/05_adaptive_computation_time.ipynb``) so that training finishes in
seconds.

References
----------
Graves (2016). Adaptive Computation Time for Recurrent Neural Networks.
"""

from __future__ import annotations

import numpy as np

from tinycond._checks import as_generator, check_positive_int


def parity(n, *, size, rng):
    """Sample ``n`` parity problems of vectors with ``size`` entries.

    Parameters
    ----------
    n : int
        Number of samples.
    size : int
        Entries per vector.
    rng : Generator or int

    Returns
    -------
    x : ndarray of shape (n, size)
        Entries in {-1, 0, +1}, with between 1 and ``size`` of them non-zero.
    y : int ndarray of shape (n,)
        1 if the number of +1 entries is odd, else 0.
    """
    n = check_positive_int(n, "n")
    size = check_positive_int(size, "size")
    rng = as_generator(rng)
    n_nonzero = rng.integers(1, size + 1, size=n)  # (n,)
    # Ranking uniform keys gives each row a random order of its positions;
    # the first n_nonzero positions of that order are the non-zero entries.
    rank = np.argsort(np.argsort(rng.random((n, size)), axis=1), axis=1)  # (n, size)
    nonzero = rank < n_nonzero[:, None]  # (n, size)
    signs = rng.choice(np.array([-1.0, 1.0]), size=(n, size))
    x = np.where(nonzero, signs, 0.0)
    y = (np.count_nonzero(x > 0, axis=1) % 2).astype(np.int64)
    return x, y
