"""Figure output folder and the shared figure helpers.

Figures land in the ``figures/`` folder at the top of the repository. The
environment variable ``TINYCOND_FIGURES`` overrides the folder, which the
tests use so that running them leaves the repository unchanged.
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

if "MPLBACKEND" not in os.environ and not os.environ.get("JPY_PARENT_PID"):
    # A script on a machine with no display must not try to open a window.
    matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent


def figures_dir(out_dir=None) -> Path:
    """Return the folder for figures, creating it if needed.

    Order of precedence: the ``out_dir`` argument, then ``TINYCOND_FIGURES``,
    then ``figures/`` at the repository root.
    """
    if out_dir is None:
        out_dir = os.environ.get("TINYCOND_FIGURES") or REPO_ROOT / "figures"
    path = Path(out_dir)
    path.mkdir(parents=True, exist_ok=True)
    return path


def save_figure(fig, name: str, out_dir=None) -> Path:
    """Save ``fig`` as ``<figures>/<name>.png`` at 110 dpi and return the path."""
    path = figures_dir(out_dir) / f"{name}.png"
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


__all__ = ["figures_dir", "save_figure", "plt"]
