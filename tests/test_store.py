"""The content-addressed store (testbed.store) on its own: items round trip, concurrent writers and
mergers leave complete shards, a damaged shard costs only its items, a failed write costs only the
cache, and `testbed cache` lists and clears a kind it has never heard of from its meta.json."""

from __future__ import annotations

import fcntl
import json
import multiprocessing
import warnings
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from testbed import CacheEntry, UserError, resources, store_dir
from testbed import store as store_module
from testbed.cli import main

TEXTS = ["", "plain", "émoji 🙂 中文 العربية", "line\nbreak\ttab", "lone \ud800 surrogate", "x" * 10000]


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv(resources.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


def rows_entry(root, name: str = "enc", hidden: int = 3, **key) -> CacheEntry:
    return CacheEntry(root, {"producer": name, **key}, name=name, description="test rows", columns={"hidden": hidden},
                      shape=(hidden,), dtype="float32")


def row(key: int, hidden: int = 3) -> np.ndarray:
    """The item of ``key``: a pure function of it, as every producer's items are."""
    return np.arange(hidden, dtype=np.float32) + np.float32(key)


def shards(entry: CacheEntry) -> list[Path]:
    return sorted(entry.dir.glob("shard-*.npz"))


def digests(shard: Path) -> list[int]:
    with np.load(shard) as z:
        return z["digest"].tolist()


def test_strings_and_rows_round_trip(tmp_path):
    texts = CacheEntry(tmp_path / "views", {"spec": "x"}, name="x", description="test views", variants=True)
    texts.add({(i, 3): t for i, t in enumerate(TEXTS)})
    assert not shards(texts)  # pending until a flush
    texts.flush()
    again = CacheEntry(tmp_path / "views", {"spec": "x"}, name="x", description="test views", variants=True)
    assert again.items == {(i, 3): t for i, t in enumerate(TEXTS)}

    rows = rows_entry(tmp_path / "rows")
    keys = [0, 1, 2**64 - 1]  # digests span all of uint64
    rows.add({k: row(k % 1000) for k in keys})
    rows.flush()
    back = rows_entry(tmp_path / "rows").items
    assert list(back) == keys and all(np.array_equal(back[k], row(k % 1000)) and back[k].dtype == np.float32 for k in keys)
    meta = json.loads((rows.dir / "meta.json").read_text())
    assert meta["kind"] == "rows" and meta["name"] == "enc" and meta["key"] == {"producer": "enc"}
    # another key is another entry, which holds none of these
    assert rows_entry(tmp_path / "rows", seed=1).items == {} and rows_entry(tmp_path / "rows", seed=1).dir != rows.dir


def test_a_memory_only_entry_never_writes(tmp_path):
    entry = rows_entry(None)
    entry.add({1: row(1)})
    entry.flush()
    assert entry.dir is None and 1 in entry.items and not entry.pending and not list(tmp_path.iterdir())


def test_a_damaged_or_mis_shaped_shard_is_skipped_with_a_warning_and_recomputed(tmp_path):
    entry = rows_entry(tmp_path)
    entry.add({1: row(1), 2: row(2)})
    entry.flush()
    entry.add({3: row(3)})
    entry.flush()
    damaged = next(p for p in shards(entry) if digests(p) == [3])
    damaged.write_bytes(damaged.read_bytes()[:40])  # cut short, as by a full disk
    np.savez(entry.dir / "shard-wide.npz", digest=np.array([4], dtype=np.uint64), rows=np.zeros((1, 5), np.float32))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reread = rows_entry(tmp_path)
    assert set(reread.items) == {1, 2}
    assert [name for name in (damaged.name, "shard-wide.npz") if any(name in str(w.message) for w in caught)] == \
        [damaged.name, "shard-wide.npz"]
    reread.add({3: row(3)})  # what a producer does for a missing item: compute it again
    reread.flush()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert set(rows_entry(tmp_path).items) == {1, 2, 3}


def test_many_shards_are_merged_on_reading_unless_another_process_merges(tmp_path):
    entry = rows_entry(tmp_path)
    for k in range(store_module.COMPACT_AT):
        entry.add({k: row(k)})
        entry.flush()
    assert len(shards(entry)) == store_module.COMPACT_AT
    with open(entry.dir / ".lock", "a") as lock:  # another process merging: this reader leaves the shards alone
        fcntl.flock(lock, fcntl.LOCK_EX)
        assert len(rows_entry(tmp_path).items) == store_module.COMPACT_AT
        assert len(shards(entry)) == store_module.COMPACT_AT
    merged = rows_entry(tmp_path)
    assert len(shards(entry)) == 1 and set(merged.items) == set(range(store_module.COMPACT_AT))
    assert all(np.array_equal(merged.items[k], row(k)) for k in merged.items)


def fill(root: str, start: int, barrier) -> None:
    """A worker: adds 4 items at a time, writing a shard after each, while the other worker does the
    same and readers (merging every 3 shards) race both."""
    store_module.COMPACT_AT = 3
    barrier.wait()
    for r in range(12):
        entry = rows_entry(Path(root))  # a reader too: merges what it finds
        entry.add({k: row(k) for k in range(start + 4 * r, start + 4 * r + 4)})
        entry.flush()


def test_concurrent_writers_and_mergers_leave_complete_shards(tmp_path):
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(2)
    workers = [context.Process(target=fill, args=(str(tmp_path), start, barrier)) for start in (0, 2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert [w.exitcode for w in workers] == [0, 0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no shard is unreadable
        items = rows_entry(tmp_path).items
    assert set(items) == set(range(0, 2 + 4 * 12))
    assert all(np.array_equal(items[k], row(k)) for k in items)
    (directory,) = tmp_path.iterdir()
    assert not [p for p in directory.iterdir() if p.name.endswith(".tmp")]  # no half-written files


def test_a_failed_write_costs_only_the_cache(tmp_path):
    (tmp_path / "blocked").write_text("a file where the entries' directory should be")
    entry = rows_entry(tmp_path / "blocked")
    entry.add({1: row(1)})
    with pytest.warns(UserWarning, match="Could not write the cache entry"):
        entry.flush()
    assert np.array_equal(entry.items[1], row(1)) and not entry.pending  # the run goes on with what it computed


def test_testbed_cache_lists_and_clears_a_kind_it_does_not_know(cache_dir):
    entry = CacheEntry(store_dir("teacher_outputs"), {"model": "llm-7b", "prompt": "p1"}, name="llm-7b",
                       description="an LLM teacher's class probabilities",
                       columns={"model": "llm-7b", "classes": 4, "prompt": {"template": "p1"}}, shape=(4,))
    entry.add({k: np.full(4, 0.25, dtype=np.float32) for k in range(5)})
    entry.flush()
    (cache_dir / "nltk_data" / "corpora").mkdir(parents=True)  # not the store's: never listed, never removed
    (cache_dir / "teacher_outputs" / "notes.txt").write_text("nor is this")
    runner = CliRunner()
    listing = runner.invoke(main, ["cache"]).output
    assert "teacher_outputs: 1 entry" in listing and "(an LLM teacher's class probabilities)" in listing
    header, line = listing.splitlines()[2:4]
    assert header.split() == ["model", "classes", "texts", "size", "entry", "prompt"]
    assert line.split()[:3] == ["llm-7b", "4", "5"] and line.endswith('{"template": "p1"}') and entry.id in line
    (row_,) = json.loads(runner.invoke(main, ["cache", "--json"]).output)["entries"]
    assert row_["kind"] == "teacher_outputs" and row_["name"] == "llm-7b" and row_["texts"] == 5 and row_["classes"] == 4

    assert "Nothing cached under 'gpt'. Cached: llm-7b (teacher_outputs)." in runner.invoke(main, ["cache", "clear", "gpt"]).output
    assert "teacher_outputs: removed 1 entry" in runner.invoke(main, ["cache", "clear", "--all"]).output
    assert not entry.dir.exists() and (cache_dir / "nltk_data" / "corpora").is_dir()
    assert (cache_dir / "teacher_outputs" / "notes.txt").is_file()
    assert "nothing cached" in runner.invoke(main, ["cache"]).output


def test_the_store_is_never_inside_the_shared_data(monkeypatch, data_root):
    monkeypatch.setenv(resources.CACHE_ENV, str(data_root / "cache"))
    with pytest.raises(UserError, match="inside the shared data directory"):
        store_dir("views")
