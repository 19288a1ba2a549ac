"""The one exception type for mistakes a user can fix (config, data, plugin names).

The CLI prints these as a single ``Error: ...`` line without a traceback; anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """Something in the user's config, data or plugins is wrong; the message says how to fix it."""


def did_you_mean(word: str, choices: Iterable[str], what: str) -> str:
    """A sentence naming the closest valid choices, e.g. "Did you mean 'kl'? Valid distances: ce, kl, l1"."""
    choices = sorted(set(choices))
    close = difflib.get_close_matches(word, choices, n=3, cutoff=0.5)
    hint = f"Did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
    return f"{hint}Valid {what}: {', '.join(choices) if choices else '(none registered)'}."


STORAGE_HINTS = {
    "ENOSPC": "The disk is full: free some space",
    "EDQUOT": "Your disk quota is used up: free some space",
    "EFBIG": "The file is over a file-size limit (`ulimit -f`) or the file system's largest file: raise the limit or "
             "write elsewhere (--out, $TESTBED_CACHE)",
    "EROFS": "The file system is read-only: pass --out (or set $TESTBED_CACHE to) a writable directory",
    "EACCES": "You may not write there: pass --out (or set $TESTBED_CACHE to) a directory you can write to",
    "EPERM": "You may not write there: pass --out (or set $TESTBED_CACHE to) a directory you can write to",
}


class StorageError(UserError, OSError):
    """Writing ``path`` failed for a reason outside the testbed: a full disk or quota, a file-size limit,
    a read-only or foreign directory. An ``OSError`` (code that tolerates a failed write, as the cache
    does, still catches it) and a ``UserError`` (the CLI prints it as one line: what, where, the fix)."""

    def __init__(self, path, error: OSError, action: str = "write"):
        super().__init__(error.errno, error.strerror, str(path))
        self.message = (f"Could not {action} {path}: {storage_reason(error)}, then run the command again: finished runs are "
                        "kept, and an unfinished run goes on from its last checkpoint.")

    def __str__(self) -> str:
        return self.message

    def __reduce__(self):  # picklable (a grid worker's outcome crosses processes)
        return (_storage_error, (self.filename, self.errno, self.strerror, self.message))


def _storage_error(path, errno, strerror, message):
    error = StorageError(path, OSError(errno, strerror))
    error.message = message
    return error


def storage_reason(error: OSError) -> str:
    """"No space left on device (ENOSPC). The disk is full: free some space": what the OS said, and the fix."""
    import errno as codes

    name = codes.errorcode.get(error.errno or 0, "")
    return f"{error.strerror or error} ({name or type(error).__name__}). {STORAGE_HINTS.get(name, 'Check the disk and the directory')}"


def is_storage_error(error: BaseException) -> bool:
    """An OSError that says the disk or the directory refused a write (full, too large, read-only, not ours)."""
    import errno as codes

    return isinstance(error, OSError) and codes.errorcode.get(error.errno or 0, "") in STORAGE_HINTS


class TrainingError(UserError):
    """A run failed inside the training loop for a reason the user can act on: a plugin raised, or the
    loss went non-finite. The message names the seam, the plugin and the step; ``error_file``, when
    set, the error.json that holds the traceback."""

    def __init__(self, message: str):
        super().__init__(message)
        self.error_file = None

    def __str__(self) -> str:
        text = super().__str__()
        return f"{text} Traceback: {self.error_file}." if self.error_file is not None else text
