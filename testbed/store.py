"""One content-addressed store for what the testbed computes from texts and keeps on disk:
augmentation views (testbed.views), frozen-encoder features (plugins/frozen.py), and whatever a
plugin adds (a teacher's predictions, token features).

An entry holds what one producer made. Its ``key`` is a dict of everything the items depend on
(producer name, options, fingerprint of weights or files, seed, role, format) and names its
directory, ``<cache dir>/<kind>/<name>-<sha256 of the key>``: a run with the same producer finds
the entry, any other producer never does. Its items are keyed by a 64-bit digest (of a text, of
token ids), or by a (digest, variant) pair, and are strings or numpy rows of one shape and dtype.
Only digests reach the disk, never positions in a pool, so runs with different pools share the
items of the texts they have in common.

On disk an entry is ``meta.json`` (the key, and what ``testbed cache`` shows) and
``shard-<uuid>.npz`` files: ``digest`` uint64 [N], ``variant`` uint32 [N] (variant-keyed
entries), and ``rows`` [N, *shape] or ``offsets`` int64 [N+1] + ``blob`` (the strings as UTF-8).
A shard is written to a temporary file and renamed, so processes filling one entry at once only
ever add complete shards, and since an item is a function of its key, two shards never disagree.
A reader that finds COMPACT_AT shards merges them into one, one process at a time (flock). A
shard that cannot be read, or whose rows have another shape, is skipped with a warning and its
items are computed again. New items wait in memory until ``flush`` (or ``flush_every`` of them);
a write that fails costs the cache, with a warning, never the run.

``list_entries``, ``cache_report`` and ``clear_cache`` (``testbed cache``) read every entry's
meta.json, which names its kind, producer and columns, so they show stores they do not know.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import itertools
import json
import shutil
import uuid
import warnings
import zipfile
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from testbed.atomic import atomic_write
from testbed.errors import UserError, is_storage_error, storage_reason
from testbed.resources import cache_dir, refuse_shared_data

COMPACT_AT = 16  # shards in one entry before a reader merges them
# what a damaged or foreign shard raises from np.load and the checks below
UNREADABLE = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile)


def store_root() -> Path:
    """The cache directory, ``$TESTBED_CACHE`` (default ``~/.cache/testbed``); never inside the shared data."""
    root = cache_dir()
    refuse_shared_data(root, "The cache directory", "Point $TESTBED_CACHE somewhere else.")
    return root


def store_dir(kind: str) -> Path:
    """Where entries of one kind live (``views``, ``features``, ...): ``<cache dir>/<kind>``."""
    return store_root() / kind


def weights_fingerprint(model) -> str:
    """sha256 over a torch model's class and every state_dict tensor (name, dtype, shape, bytes): the
    key of caches of what a model computed. A name or path does not identify weights (a re-saved or
    re-quantised checkpoint, a random test model drawn from a seed)."""
    import torch

    digest = hashlib.sha256(type(model).__name__.encode())
    for name, tensor in model.state_dict().items():
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}:{flat.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(flat.view(torch.uint8).numpy())
    return digest.hexdigest()


def text_digests(texts: Sequence[str]) -> np.ndarray:
    """64-bit BLAKE2b digest of each text (uint64): the text's identity in the store."""
    return np.fromiter((int.from_bytes(hashlib.blake2b(t.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")
                        for t in texts), dtype=np.uint64, count=len(texts))


class CacheEntry:
    """The items of one producer (``key``), in memory (``items``) and, unless ``root`` is None, on disk
    under ``root`` (normally ``store_dir(kind)``).

    ``name`` is the producer's name (``testbed cache clear NAME`` removes its entries) and starts the
    directory's name; ``description`` says what the kind's items are; ``columns`` are what
    ``testbed cache`` shows per entry (in order; dicts and lists last). Items are strings, or rows of
    ``shape`` and ``dtype``; with ``variants`` they are keyed by (digest, variant), else by digest.
    """

    def __init__(self, root: Path | None, key: dict, *, name: str, description: str, columns: dict | None = None,
                 shape: tuple[int, ...] | None = None, dtype: Any = "float32", variants: bool = False,
                 flush_every: int = 50_000):
        self.shape, self.dtype = (None, None) if shape is None else (tuple(shape), np.dtype(dtype))
        self.variants, self.flush_every = variants, flush_every
        blob = json.dumps(key, sort_keys=True, separators=(",", ":"), default=str)
        safe = "".join(c if c.isalnum() or c in "_-." else "_" for c in name)
        self.id = f"{safe}-{hashlib.sha256(blob.encode()).hexdigest()[:20]}"
        self.dir = None if root is None else Path(root) / self.id
        self.meta = {"kind": None if root is None else Path(root).name, "name": name, "description": description,
                     "columns": columns or {}, "key": key, "variants": variants,
                     "items": "text" if shape is None else {"shape": list(self.shape), "dtype": self.dtype.name}}
        self._meta_checked = False
        self.items: dict[Hashable, Any] = self._load() if self.dir is not None else {}
        self.pending: dict[Hashable, Any] = {}

    def add(self, items: dict) -> None:
        """New items: kept in memory, and on disk at the next ``flush`` (or when ``flush_every`` wait)."""
        self.items.update(items)
        if self.dir is not None:
            self.pending.update(items)
            if len(self.pending) >= self.flush_every:
                self.flush()

    def flush(self) -> None:
        """Write the pending items as one new shard. A failed write costs the cache, never the run."""
        pending, self.pending = self.pending, {}
        if not pending or self.dir is None:
            return
        try:
            self._write_meta()
            self._write_shard(pending)
        except OSError as exc:  # a StorageError too (full, a size limit, read-only): no half-written shard is left
            reason = storage_reason(exc) if is_storage_error(exc) else str(exc)
            warnings.warn(f"Could not write the cache entry {self.dir}: {reason}. The run goes on; these items are computed "
                          "again when they are needed.", stacklevel=2)

    # ------------------------------------------------------------------ shards

    def _load(self) -> dict:
        items: dict = {}
        loaded = []
        for path in sorted(self.dir.glob("shard-*.npz")):
            try:
                items.update(self._read_shard(path))
            except FileNotFoundError:
                continue  # merged away by another process meanwhile: its items are computed again if needed, identically
            except UNREADABLE as exc:  # cut short, garbage, another shape: never used. Shards appear by an atomic
                # rename, so this is no shard half-written by another process: remove it, its items are computed again
                # (a shard the OS would not read, e.g. another user's, is only skipped)
                damaged = not isinstance(exc, OSError) or isinstance(exc, zipfile.BadZipFile)
                if damaged:
                    with contextlib.suppress(OSError):
                        path.unlink()
                warnings.warn(f"Skipping unreadable cache shard {path}{' (removed)' if damaged else ''}; its items are computed "
                              f"again: {' '.join(str(exc).split())}", stacklevel=3)
                continue
            loaded.append(path)
        if len(loaded) >= COMPACT_AT:
            self._compact(items, loaded)
        return items

    def _read_shard(self, path: Path) -> dict:
        with np.load(path, allow_pickle=False) as z:
            keys = z["digest"].tolist()
            if self.variants:
                variants = z["variant"].tolist()
                if len(variants) != len(keys):
                    raise ValueError(f"{len(variants)} variants for {len(keys)} digests")
                keys = list(zip(keys, variants))
            if self.shape is None:
                offsets = z["offsets"].tolist()
                text = z["blob"].tobytes().decode("utf-8", "surrogatepass")
                if len(offsets) != len(keys) + 1 or offsets[-1] != len(text):
                    raise ValueError(f"{len(offsets)} offsets for {len(keys)} strings")
                values = [text[a:b] for a, b in itertools.pairwise(offsets)]
            else:
                values = z["rows"]
                if values.shape != (len(keys), *self.shape) or values.dtype != self.dtype:
                    raise ValueError(f"rows of shape {values.shape} and dtype {values.dtype}, expected "
                                     f"{[len(keys), *self.shape]} and {self.dtype}")
        return dict(zip(keys, values))

    def _write_shard(self, items: dict) -> None:
        keys = list(items)
        arrays = {"digest": np.asarray([k[0] for k in keys] if self.variants else keys, dtype=np.uint64)}
        if self.variants:
            arrays["variant"] = np.asarray([k[1] for k in keys], dtype=np.uint32)
        values = list(items.values())
        if self.shape is None:
            offsets = np.zeros(len(values) + 1, dtype=np.int64)
            np.cumsum([len(v) for v in values], out=offsets[1:])
            arrays["offsets"] = offsets
            arrays["blob"] = np.frombuffer("".join(values).encode("utf-8", "surrogatepass"), dtype=np.uint8)
        else:
            arrays["rows"] = np.stack(values).astype(self.dtype, copy=False)
        atomic_write(self.dir / f"shard-{uuid.uuid4().hex[:16]}.npz", lambda handle: np.savez(handle, **arrays))

    def _write_meta(self) -> None:
        """meta.json, unless it already says exactly this (an older testbed's is replaced)."""
        if self._meta_checked:
            return
        path = self.dir / "meta.json"
        text = json.dumps(self.meta, indent=2, default=str)
        try:
            current = path.read_text(encoding="utf-8")
        except OSError:
            current = None
        if current != text:
            atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))
        self._meta_checked = True

    def _compact(self, items: dict, shards: list[Path]) -> None:
        """Merge ``shards`` (whose items are ``items``) into one; one process at a time, the others skip.
        A shard is deleted only once a shard holding its items is in place, so readers never lose one."""
        try:
            with open(self.dir / ".lock", "a") as lock:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return
                self._write_shard(items)
                for path in shards:
                    path.unlink(missing_ok=True)
        except OSError as exc:
            warnings.warn(f"Could not merge the shards of the cache entry {self.dir}: {exc}", stacklevel=3)


# --------------------------------------------------------------------------- listing and clearing


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0


def _human(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(size)


def list_entries(root: Path | None = None) -> list[dict]:
    """Every entry under the cache directory (``<root>/<kind>/<entry>/meta.json``), from its meta.json
    and the digests in its shards: entry, kind, name, description, the producer's columns, texts
    (distinct digests), variants (variant-keyed entries), bytes, path. An entry whose meta.json does
    not say (written before this store) is listed by its directory's names."""
    root = root or store_root()
    rows = []
    for meta_path in sorted(root.glob("*/*/meta.json")):
        directory = meta_path.parent
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            meta = {}
        meta = meta if isinstance(meta, dict) else {}
        digests, variants = set(), set()
        for shard in directory.glob("shard-*.npz"):
            with contextlib.suppress(*UNREADABLE), np.load(shard, allow_pickle=False) as z:
                digests.update(z["digest"].tolist())
                if meta.get("variants"):
                    variants.update(z["variant"].tolist())
        columns = meta.get("columns") if isinstance(meta.get("columns"), dict) else {}
        rows.append({**columns, "entry": directory.name, "kind": directory.parent.name,
                     "name": meta.get("name") or directory.name, "description": meta.get("description") or "",
                     "texts": len(digests), **({"variants": len(variants)} if meta.get("variants") else {}),
                     "bytes": _size(directory), "path": str(directory)})
    return rows


def _by_kind(rows: list[dict]) -> dict[str, list[dict]]:
    kinds: dict[str, list[dict]] = {}
    for row in rows:
        kinds.setdefault(row["kind"], []).append(row)
    return kinds


FIXED = ("entry", "kind", "name", "description", "texts", "variants", "bytes", "path")  # the store's fields of a row


def _table(rows: list[dict]) -> list[str]:
    """One line per entry: its producer's scalar columns, the store's counts, size and entry, then its dicts and lists."""
    columns = list(dict.fromkeys(k for row in rows for k in row if k not in FIXED))
    wide = [c for c in columns if any(isinstance(row.get(c), (dict, list)) for row in rows)]
    header = [c for c in columns if c not in wide] + [c for c in ("variants", "texts") if any(c in row for row in rows)]
    header += ["size", "entry", *wide]
    cells = [[_cell(row, c) for c in header] for row in rows]
    widths = [max(len(c), *(len(line[i]) for line in cells)) for i, c in enumerate(header)]
    right = [c == "size" or all(isinstance(row.get(c), (int, float)) for row in rows) for c in header]

    def line(values):
        return "  " + "  ".join(v.rjust(w) if r else v.ljust(w) for v, w, r in zip(values, widths, right)).rstrip()

    return [line(header), *map(line, cells)]


def _cell(row: dict, column: str) -> str:
    value = _human(row["bytes"]) if column == "size" else row.get(column, "")
    return json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else str(value)


def cache_report(as_json: bool = False) -> str:
    """What ``testbed cache`` prints: the cache directory, then each kind's entries."""
    root = store_root()
    rows = list_entries(root)
    kinds = _by_kind(rows)
    if as_json:
        summary = {kind: {"dir": str(root / kind), "bytes": _size(root / kind), "entries": len(group),
                          "description": next((r["description"] for r in group if r["description"]), "")}
                   for kind, group in kinds.items()}
        return json.dumps({"cache_dir": str(root), "total_bytes": _size(root), "kinds": summary, "entries": rows},
                          indent=2, default=str)
    lines = [f"cache directory: {root}  ({_human(_size(root))} in all)"]
    for kind, group in kinds.items():
        description = next((r["description"] for r in group if r["description"]), "")
        lines.append(f"{kind}: {len(group)} entr{'y' if len(group) == 1 else 'ies'}, {_human(_size(root / kind))} in "
                     f"{root / kind}" + (f" ({description})" if description else ""))
        lines += _table(group)
    if not rows:
        lines.append("nothing cached")
    return "\n".join(lines)


def clear_cache(name: str | None = None, everything: bool = False) -> str:
    """Remove the entries of producer ``name`` (or entry directory ``name``), of any kind, or all entries."""
    if not everything and not name:
        raise UserError("Say what to clear: `testbed cache clear --all`, or `testbed cache clear NAME` with a name or "
                        "an entry from `testbed cache`.")
    root = store_root()
    rows = list_entries(root)
    chosen = rows if everything else [r for r in rows if name in (r["name"], r["entry"])]
    if not chosen:
        if everything:
            return f"Nothing to remove: no entries in {root}."
        cached = sorted({f"{r['name']} ({r['kind']})" for r in rows})
        return f"Nothing cached under {name!r}. Cached: {', '.join(cached) if cached else '(nothing)'}."
    messages = []
    for kind, group in _by_kind(chosen).items():
        for row in group:
            shutil.rmtree(row["path"], ignore_errors=True)
        with contextlib.suppress(OSError):
            (root / kind).rmdir()  # only when empty: what the store does not own stays
        freed = sum(r["bytes"] for r in group)
        messages.append(f"{kind}: removed {len(group)} entr{'y' if len(group) == 1 else 'ies'} ({_human(freed)}) "
                        f"from {root / kind}.")
    return " ".join(messages)


__all__ = ["COMPACT_AT", "CacheEntry", "cache_report", "clear_cache", "list_entries", "store_dir", "store_root",
           "text_digests"]
