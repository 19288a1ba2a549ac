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
