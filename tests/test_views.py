"""The view cache (testbed.views): variants per draw, computed once and read back, keyed by every
option, safe under concurrent writers, listed and cleared by `testbed cache`; runs give the same
numbers with the cache cold or warm; the diversity/fidelity summary."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import warnings
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import FAST, TIME_FIELDS, read_jsonl
from testbed import Augmenter, resources, store, views
from testbed.cli import main
from testbed.config import parse_overrides, resolve
from testbed.errors import UserError
from testbed.loop import backbone_context
from testbed.plugins import load_plugins
from testbed.runs import execute

# An augmentation that logs how many texts it computed, and whose views show their seed.
SPY_PLUGIN = '''
from dataclasses import dataclass
from testbed import Augmentation, hookimpl

@dataclass(frozen=True)
class SpyOptions:
    log: str = ""
    tag: str = "v"

def spy(options, context):
    def augment(texts, seeds):
        with open(options.log, "a") as handle:
            handle.write(f"{len(texts)}\\n")
        return [f"{text} {options.tag}{int(seed) % 100000}" for text, seed in zip(texts, seeds)]
    return augment

@hookimpl
def testbed_augmentations():
    return [Augmentation(name="spy", summary="logs what it computes", factory=spy, options=SpyOptions)]
'''


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv(resources.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def spy(tmp_path):
    directory = tmp_path / "plugins"
    directory.mkdir()
    (directory / "spy.py").write_text(SPY_PLUGIN, encoding="utf-8")
    log = tmp_path / "spy.log"
    return load_plugins(plugins_dirs=[directory]), log


def view_entries() -> list[dict]:
    return [e for e in store.list_entries() if e["kind"] == "views"]


def computed(log: Path) -> int:
    return sum(int(line) for line in log.read_text().split()) if log.exists() else 0


def untimed(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIME_FIELDS} for r in records]


def run(cfg, registry, out: Path):
    run_dir, result, ran = execute(cfg, registry, out, progress=False)
    assert ran
    return run_dir, result


# --------------------------------------------------------------------------- variants


def spy_views(spy_registry, log, variants: int, pool, seed: int = 0, root=None, tag: str = "v"):
    cfg = resolve(parse_overrides([*FAST, "method=fixmatch", "augmentation.strong.name=spy", f"augmentation.strong.log={log}",
                                   f"augmentation.strong.tag={tag}", f"train.view_variants={variants}", f"seed={seed}"]),
                  spy_registry)
    return views.open_views(cfg, pool, spy_registry)


def test_the_nth_draw_of_a_text_uses_variant_n_mod_k(spy):
    registry, log = spy
    pool = ["alpha text", "beta text", "gamma text"]
    v = spy_views(registry, log, 3, pool)
    draws = [v.draw([0, 1])[1] for _ in range(7)]
    first = [d[0] for d in draws]
    assert len(set(first[:3])) == 3 and first[3:6] == first[:3] and first[6] == first[0]
    assert all(d[0].startswith("alpha text ") and d[1].startswith("beta text ") for d in draws)
    assert v.draw([0])[0] == [pool[0]]  # the weak view (identity)
    assert computed(log) == 6  # 3 variants x 2 texts, each computed once
    twice = v.draw([2, 2])[1]  # a text drawn twice in one batch gets two variants
    assert twice[0] != twice[1]
    # a fresh view every draw with K = 0, never cached
    fresh = spy_views(registry, log, 0, pool)
    assert len({fresh.draw([0])[1][0] for _ in range(6)}) == 6
    assert fresh.strong.entry is None


def test_a_view_depends_on_the_text_not_its_position_and_on_the_seed(spy):
    registry, log = spy
    first = spy_views(registry, log, 2, ["x one", "y two", "z three"])
    a = first.draw([2])[1]
    first.flush()  # what an evaluation does
    b = spy_views(registry, log, 2, ["z three", "w four"]).draw([0])[1]
    assert a == b  # another pool, same text: same view, read back
    assert computed(log) == 1
    c = spy_views(registry, log, 2, ["z three"], seed=1).draw([0])[1]
    assert c != a and computed(log) == 2


def test_weak_and_strong_views_of_one_spec_differ(spy):
    registry, log = spy
    cfg = resolve(parse_overrides([*FAST, "method=pimodel", "augmentation.weak.name=spy", f"augmentation.weak.log={log}",
                                   "augmentation.strong.name=spy", f"augmentation.strong.log={log}"]), registry)
    weak, strong = views.open_views(cfg, ["one text", "two text"], registry).draw([0, 1])
    assert weak[0] != strong[0] and weak[1] != strong[1]


def test_the_fingerprint_of_a_file_an_augmentation_reads_joins_the_key(registry, tmp_path):
    path = tmp_path / "views.jsonl"
    path.write_text(json.dumps({"text": "a", "aug_0": "b"}) + "\n", encoding="utf-8")
    nested = {"name": "sequence", "steps": ["word_swap", {"name": "precomputed", "path": str(path)}]}
    before = [views.build(spec, registry)[2] for spec in ({"name": "precomputed", "path": str(path)}, nested)]
    path.write_text(json.dumps({"text": "a", "aug_0": "c"}) + "\n", encoding="utf-8")
    after = [views.build(spec, registry)[2] for spec in ({"name": "precomputed", "path": str(path)}, nested)]
    assert all(before) and before[0] != after[0] and before[1] != after[1]
    assert views.build("word_swap", registry)[2] == ""


# --------------------------------------------------------------------------- the cache


def test_views_are_computed_once_and_runs_match_cold_and_warm(spy, tmp_path, cache_dir):
    registry, log = spy
    cfg = resolve(parse_overrides([*FAST, "method=fixmatch", "selector.threshold=0.3", "augmentation.strong.name=spy",
                                   f"augmentation.strong.log={log}"]), registry)
    cold_dir, cold = run(cfg, registry, tmp_path / "cold")
    first = computed(log)
    assert first == 6 * 8  # 6 steps x 8 unlabeled texts, all new: computed once each
    warm_dir, warm = run(cfg, registry, tmp_path / "warm")
    assert computed(log) == first  # the second run read every view back
    assert untimed(read_jsonl(cold_dir / "metrics.jsonl")) == untimed(read_jsonl(warm_dir / "metrics.jsonl"))
    assert cold["test_accuracy"] == warm["test_accuracy"] and cold["mask_rate"] == warm["mask_rate"]
    # a longer run computes only the views it has not drawn before
    longer = resolve(parse_overrides([*FAST, "method=fixmatch", "selector.threshold=0.3", "augmentation.strong.name=spy",
                                      f"augmentation.strong.log={log}", "train.steps=9"]), registry)
    run(longer, registry, tmp_path / "longer")
    assert computed(log) == first + 3 * 8
    (entry,) = view_entries()
    assert entry["augmentation"] == "spy" and entry["role"] == "strong" and entry["texts"] == 72 and entry["seed"] == 0
    assert not any("identity" in p.name for p in (cache_dir / "views").iterdir())  # identity never touches the cache


def test_a_changed_option_is_a_new_entry(registry, tmp_path):
    for k, p in enumerate((0.1, 0.2, 0.1)):
        cfg = resolve(parse_overrides([*FAST, "method=fixmatch", f"augmentation.strong.p_delete={p}"]), registry)
        run(cfg, registry, tmp_path / f"runs-{k}")
    entries = view_entries()
    assert sorted(e["options"]["p_delete"] for e in entries) == [0.1, 0.2]
    assert all(e["augmentation"] == "drop_swap" and e["texts"] > 0 for e in entries)


def test_same_config_and_seed_reproduce_with_a_cached_strong_view(registry, tmp_path):
    overrides = [*FAST, "method=fixmatch", "selector.threshold=0.3", "augmentation.strong=strong"]
    cfg = resolve(parse_overrides(overrides), registry)
    a, _ = run(cfg, registry, tmp_path / "a")
    b, _ = run(cfg, registry, tmp_path / "b")
    assert untimed(read_jsonl(a / "metrics.jsonl")) == untimed(read_jsonl(b / "metrics.jsonl"))
    other, _ = run(resolve(parse_overrides([*overrides, "train.view_variants=1"]), registry), registry, tmp_path / "c")
    assert other.name != a.name  # K is part of the run


def test_unchanged_views_are_recorded_per_evaluation(registry, tmp_path):
    cfg = resolve(parse_overrides([*FAST, "method=fixmatch", "augmentation.weak=word_delete", "augmentation.weak.p=0.0",
                                   "augmentation.strong=token_mask"]), registry)
    run_dir, _ = run(cfg, registry, tmp_path / "runs")
    for record in read_jsonl(run_dir / "metrics.jsonl"):
        assert record["views_unchanged/weak"] == 1.0 and record["views_unchanged/strong"] == 0.0


def fill(root: str, start, barrier, rounds: int) -> None:
    """A worker: computes the views of 40 texts in chunks, writing a shard after each, while the
    other worker does the same and readers merge shards."""
    store.COMPACT_AT = 3  # merge often, to race merging against writing
    pool = [f"text number {i}" for i in range(40)]
    barrier.wait()
    for r in range(rounds):
        stream = views.ViewStream(lambda texts, seeds: [t.upper() + f" {int(s)}" for t, s in zip(texts, seeds)],
                                  {"name": "upper"}, "", "strong", pool, 0, 2, Path(root))
        chunk = np.arange(start + r * 4, start + r * 4 + 4) % 40
        stream.draw(chunk, np.full(4, r % 2))
        stream.flush()


def test_two_processes_filling_one_entry_leave_a_valid_entry(tmp_path):
    root = tmp_path / "views"
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(2)
    workers = [context.Process(target=fill, args=(str(root), start, barrier, 10)) for start in (0, 2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert [w.exitcode for w in workers] == [0, 0]
    pool = [f"text number {i}" for i in range(40)]
    stream = views.ViewStream(lambda texts, seeds: pytest.fail("everything should be cached"), {"name": "upper"}, "", "strong",
                              pool, 0, 2, root)
    expected = {(int(d), v): f"{pool[i].upper()} {int(s)}" for i in range(40) for v in (0, 1)
                for d, s in [(views.text_digests([pool[i]])[0], views.view_seeds(views.text_digests([pool[i]]), 0, "strong", [v])[0])]}
    drawn = {key: stream.table[key] for key in stream.table}
    assert {k: drawn[k] for k in drawn} == {k: expected[k] for k in drawn}  # nothing corrupt or mixed up
    assert len(drawn) == len({(i % 40, r % 2) for start in (0, 2) for r in range(10) for i in range(start + r * 4, start + r * 4 + 4)})
    (entry,) = root.iterdir()
    assert not [p for p in entry.iterdir() if p.name.endswith(".tmp")]  # no half-written files


def test_a_passthrough_augmenter_never_touches_the_cache(tmp_path):
    """Not its name: the augmenter's ``passthrough`` declaration (identity's) skips cache, digests and statistics."""
    augment = Augmenter(lambda texts, seeds: pytest.fail("a passthrough augmenter is never called"), passthrough=True)
    stream = views.ViewStream(augment, {"name": "mine"}, "", "strong", ["a", "b"], 0, 2, tmp_path / "views")
    assert stream.draw(np.array([1, 0]), np.array([0, 1])) == ["b", "a"]
    stream.flush()
    assert stream.entry is None and stream.digests is None and stream.take_unchanged() is None
    assert not (tmp_path / "views").exists()


def test_view_entries_written_before_the_store_are_read_back(tmp_path):
    """Same directory name (sha256 of the old meta.json) and shard layout: a cache filled by an older
    testbed keeps its views; its meta.json is brought up to date on the next write."""
    spec, digests = {"name": "upper"}, views.text_digests(["one", "two"])
    old_meta = {"format": views.FORMAT, "augmentation": "upper", "spec": spec, "fingerprint": "", "seed": 0, "role": "strong"}
    blob = json.dumps(old_meta, sort_keys=True, separators=(",", ":"))
    directory = tmp_path / "views" / f"upper-{hashlib.sha256(blob.encode()).hexdigest()[:20]}"
    directory.mkdir(parents=True)
    (directory / "meta.json").write_text(json.dumps(old_meta, indent=2, sort_keys=True))
    np.savez(directory / "shard-0123456789abcdef.npz", digest=digests, variant=np.array([0, 1], dtype=np.uint32),
             offsets=np.array([0, 3, 6]), blob=np.frombuffer(b"ONETWO", dtype=np.uint8))
    stream = views.ViewStream(lambda texts, seeds: pytest.fail("everything should be cached"), spec, "", "strong",
                              ["two", "one"], 0, 2, tmp_path / "views")
    assert stream.entry.dir == directory and stream.draw(np.array([1, 0]), np.array([0, 1])) == ["ONE", "TWO"]
    stream.entry.add({(7, 0): "seven"})
    stream.flush()
    (entry,) = store.list_entries(tmp_path)
    assert entry["augmentation"] == "upper" and entry["texts"] == 3 and entry["variants"] == 2


def test_the_cache_is_never_inside_the_shared_data(monkeypatch, data_root):
    monkeypatch.setenv(resources.CACHE_ENV, str(data_root / "cache"))
    with pytest.raises(UserError, match="inside the shared data directory"):
        views.cache_root()


def test_testbed_cache_lists_and_clears(registry, tmp_path, cache_dir):
    for strong in ("drop_swap", "word_swap"):
        run(resolve(parse_overrides([*FAST, "method=fixmatch", f"augmentation.strong={strong}"]), registry), registry,
            tmp_path / strong)
    runner = CliRunner()
    listing = runner.invoke(main, ["cache"])
    assert listing.exit_code == 0, listing.output
    assert f"cache directory: {cache_dir}" in listing.output and "views: 2 entries" in listing.output
    line = next(line for line in listing.output.splitlines() if line.strip().startswith("drop_swap"))
    assert line.split()[1:4] == ["strong", "0", "1"] and '"p_delete": 0.1' in line
    as_json = json.loads(runner.invoke(main, ["cache", "--json"]).output)
    assert as_json["cache_dir"] == str(cache_dir) and as_json["kinds"]["views"]["bytes"] > 0
    assert {e["augmentation"] for e in as_json["entries"]} == {"drop_swap", "word_swap"}
    assert all(e["kind"] == "views" and e["texts"] == 48 and e["variants"] == 1 for e in as_json["entries"])  # 6 x 8 drawn once

    refused = runner.invoke(main, ["cache", "clear"])
    assert refused.exit_code == 1 and "--all" in refused.output
    cleared = runner.invoke(main, ["cache", "clear", "drop_swap"])
    assert cleared.exit_code == 0 and "views: removed 1 entry" in cleared.output
    assert [e["augmentation"] for e in view_entries()] == ["word_swap"]
    assert "Nothing cached under 'eda'. Cached: word_swap (views)." in runner.invoke(main, ["cache", "clear", "eda"]).output
    assert "views: removed 1 entry" in runner.invoke(main, ["cache", "clear", "--all"]).output
    assert view_entries() == [] and "nothing cached" in runner.invoke(main, ["cache"]).output
    assert not (cache_dir / "views").exists()


# --------------------------------------------------------------------------- diversity and fidelity


def levenshtein_and_lcs(a, b):
    lev = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    lcs = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(len(a) + 1):
        for j in range(len(b) + 1):
            if i == 0 or j == 0:
                lev[i][j] = i + j
                continue
            same = a[i - 1] == b[j - 1]
            lev[i][j] = min(lev[i - 1][j] + 1, lev[i][j - 1] + 1, lev[i - 1][j - 1] + (not same))
            lcs[i][j] = lcs[i - 1][j - 1] + 1 if same else max(lcs[i - 1][j], lcs[i][j - 1])
    return lev[-1][-1], lcs[-1][-1]


def test_word_edit_stats_match_the_textbook_dynamic_programme():
    rng = np.random.default_rng(0)
    for _ in range(200):
        a = list(rng.choice(list("abcde"), size=rng.integers(0, 9)))
        b = list(rng.choice(list("abcde"), size=rng.integers(0, 9)))
        assert views.word_edit_stats(a, b) == levenshtein_and_lcs(a, b), (a, b)


def test_summarize_augmentation(registry, data_root):
    from testbed_plugins.backbones import tiny

    with open(data_root / "ag_news" / "train.jsonl", encoding="utf-8") as lines:
        texts = [json.loads(line)["text"] for _, line in zip(range(60), lines)]
    options = registry.get("backbone", "tiny").options(layers=1, hidden=32, heads=2, intermediate=64)
    model, tokenizer = tiny(options, backbone_context(registry, 4))
    same = views.summarize_augmentation("identity", texts, registry=registry, model=model, tokenizer=tokenizer, max_length=32)
    assert same["unchanged"] == 1.0 and same["tokens_changed"] == 0.0 and same["edit_distance"] == 0.0
    assert same["agreement"] == 1.0 and same["length_ratio"] == 1.0
    half = views.summarize_augmentation({"name": "word_delete", "p": 0.5}, texts, registry=registry)
    assert 0.4 < half["tokens_changed"] < 0.6 and 0.4 < half["edit_distance"] < 0.6 and 0.4 < half["length_ratio"] < 0.6
    assert half["agreement"] is None and half["sentences_per_second"] > 0 and json.loads(half["spec"]) == {"name": "word_delete", "p": 0.5}
    swapped = views.summarize_augmentation({"name": "word_swap", "p": 0.2}, texts, registry=registry)
    assert swapped["length_ratio"] == 1.0 and swapped["tokens_changed"] > 0.05 and swapped["unchanged"] < 0.05
    table = views.summarize_augmentations(["identity", "word_swap"], texts[:10], registry=registry)
    assert list(table["augmentation"]) == ["identity", "word_swap"]


def test_augmentations_with_fit_are_fitted_on_the_run_pool():
    """tf-idf learns its word statistics from the run's unlabeled pool: the same pool shares
    cached views, another pool does not, and no fitting on a first batch happens."""
    pool_a = [f"the market rallied on {w} news today" for w in ("oil", "tech", "bank", "trade")] * 5
    pool_b = [f"the team won the {w} final again" for w in ("cup", "league", "open", "derby")] * 5
    augment_a, _, fingerprint_a = views.build({"name": "tfidf"}, pool=pool_a)
    _, _, fingerprint_again = views.build({"name": "tfidf"}, pool=list(pool_a))
    _, _, fingerprint_b = views.build({"name": "tfidf"}, pool=pool_b)
    assert fingerprint_a == fingerprint_again != fingerprint_b
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "fitting the tf-idf model on the ... first batch" would raise
        augmented = augment_a(pool_a[:4], np.arange(4))
    assert len(augmented) == 4 and augmented != pool_a[:4]
