"""Atomic writes: a reader sees the old file or the whole new one, never a part of it. Every file
the testbed writes (results, predictions, grid copies, cache shards) goes through here."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from testbed.errors import StorageError, is_storage_error


def atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """``write(handle)`` into a temporary file beside ``path``, fsync, rename into place: readers
    see the old file or the whole new one, never a part. A write the disk or the directory refuses
    (full, a file-size limit, read-only) leaves no temporary file and raises ``StorageError``."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        if is_storage_error(exc):
            raise StorageError(path, exc) from exc
        raise
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        cause = _os_error(exc)
        if cause is not None and not isinstance(exc, StorageError):
            raise StorageError(path, cause) from exc
        raise


def _os_error(exc: BaseException) -> OSError | None:
    """The storage OSError behind ``exc``: itself, or what a library (torch.save, zipfile) wrapped."""
    while exc is not None:
        if is_storage_error(exc):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def atomic_write_npz(path: Path, arrays: dict) -> None:
    """``numpy.savez_compressed``, atomically; None values are left out."""
    import numpy as np

    atomic_write(path, lambda handle: np.savez_compressed(handle, **{k: v for k, v in arrays.items() if v is not None}))
