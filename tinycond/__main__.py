"""``python -m tinycond``: the tour, which trains a tiny conditional language model on real text.

The code lives in :mod:`tinycond.lm.tour`; ``python -m tinycond --help`` lists the options.
"""

import os
import sys

if __name__ == "__main__":
    # The model's matrices are small (about 2048 x 64 by 64 x 192), so BLAS
    # threads save little, and on a busy machine their contention costs a lot.
    # On a 2-core machine a top-k training step took 0.063 s with one thread
    # and 0.069 s with OpenBLAS's default when idle, but 0.28 s against 2.0 s
    # while other jobs shared the cores. The variables act only if set
    # before NumPy is first imported, which is why they are set here. A value
    # the user exported wins.
    for variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(variable, "1")

    from tinycond.lm.tour import main

    sys.exit(main())
