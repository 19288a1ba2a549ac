"""Where the testbed keeps what is not a run: the cache directory, the commit of the running code,
and the guard that keeps outputs out of the shared data. (WordNet, the POS tagger and GloVe, which
only augmentations read, are found by plugins/_resources.py.)

- ``cache_dir()``: ``$TESTBED_CACHE``, else ``$XDG_CACHE_HOME/testbed``, else ``~/.cache/testbed``.
- ``git_commit()``: the commit of the running testbed checkout, for runs' provenance.
- ``refuse_shared_data(path, what, fix)``: outputs and caches never go into the shared data.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from testbed.errors import UserError

CACHE_ENV = "TESTBED_CACHE"


def cache_dir() -> Path:
    """The testbed's cache for derived data (fitted models, views); never under the shared data."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "testbed"


def git_commit() -> str | None:
    """The commit of the testbed checkout that is running, "+dirty" if its code (testbed/,
    plugins/, pyproject.toml; not reports or data) differs from it; None when testbed is not
    installed from a git checkout (or git is missing)."""
    checkout = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=checkout, capture_output=True, text=True, timeout=10)
        if head.returncode != 0 or not head.stdout.strip():
            return None
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "testbed", "plugins",
                                 "pyproject.toml"], cwd=checkout, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("+dirty" if status.stdout.strip() else "")


def shared_data_dirs() -> list[Path]:
    """The data directory and ``../shared`` beside the checkout: read-only for the testbed."""
    from testbed.data import data_dir

    shared = Path(__file__).resolve().parents[2] / "shared"
    return [p.resolve() for p in (data_dir(), shared) if p is not None]


def refuse_shared_data(path: str | Path, what: str, fix: str) -> None:
    """A UserError when ``path`` is (inside) the shared data, which may be read but never written."""
    resolved = Path(path).resolve()
    for protected in shared_data_dirs():
        if resolved == protected or protected in resolved.parents:
            raise UserError(f"{what} {path} is inside the shared data directory {protected}, which the testbed only "
                            f"reads. {fix}")
