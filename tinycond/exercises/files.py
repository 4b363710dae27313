"""List the files that make up the project, for student copies and marker checks."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import tinycond

# The checkout this package was imported from (for an editable install).
PROJECT_ROOT = Path(tinycond.__file__).resolve().parent.parent

# Directories never copied when walking a tree that is not a git checkout:
# caches, virtual environments and build outputs.
_SKIPPED_DIRECTORIES = {"__pycache__", "build", "dist", "venv", "node_modules"}
_SKIPPED_SUFFIXES = (".pyc", ".pyo")


def project_files(root, exclude=None) -> list:
    """Return the project's files as sorted paths relative to ``root``, with ``/`` separators.

    In a git checkout these are the tracked files plus the untracked ones git
    does not ignore, as they are in the working tree. Elsewhere the tree is
    walked, skipping hidden directories (``.git``, ``.pytest_cache``),
    ``__pycache__``, ``*.egg-info``, ``build``, ``dist`` and virtual
    environments. Files under ``exclude`` (a directory) are left out.
    """
    root = Path(root).resolve()
    paths = _git_files(root) if (root / ".git").exists() else None
    if paths is None:
        paths = _walked_files(root)
    if exclude is not None:
        exclude = Path(exclude).resolve()
        if root in exclude.parents:
            prefix = exclude.relative_to(root).as_posix() + "/"
            paths = [p for p in paths if not p.startswith(prefix)]
    return sorted(p for p in paths if (root / p).is_file())


def _git_files(root: Path):
    command = ["git", "-C", str(root), "ls-files", "-z", "--cached", "--others", "--exclude-standard"]
    try:
        listed = subprocess.run(command, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None  # no git on this machine, or not a usable checkout: walk instead
    return sorted({p for p in listed.decode("utf-8").split("\0") if p})


def _walked_files(root: Path) -> list:
    paths = []
    for directory, subdirectories, names in os.walk(root):
        subdirectories[:] = [
            d for d in subdirectories
            if not d.startswith(".") and d not in _SKIPPED_DIRECTORIES and not d.endswith(".egg-info")
        ]
        relative = Path(directory).relative_to(root)
        paths.extend((relative / name).as_posix() for name in names if not name.endswith(_SKIPPED_SUFFIXES))
    return sorted(paths)
