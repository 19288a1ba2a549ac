"""Speed of the native augmentations and of the view cache.

- sentences/s of every native augmentation through the testbed (``build_augmentation``, one
  batched call) on the same 1,000 AG News texts;
- native EDA (swap + deletion, the operations nlpaug's RandomWordAug has; with synonyms too when
  WordNet is set up) against nlpaug's RandomWordAug called per sentence, as nlpaug is used:
  the ratio must be at least 5;
- reading K = 4 cached variants of 10,000 texts back from the disk cache.

    HF_HUB_OFFLINE=1 python -m pytest benchmarks/test_native_augmentation_speed.py --benchmark-only
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from testbed import resources
from testbed.data import data_dir
from testbed.plugins import load_plugins
from testbed.views import ViewStream, build, build_augmentation, cache_root
from testbed_plugins import _resources as nltk_resources

NATIVE = {
    "drop_swap": "drop_swap",
    "word_delete": "word_delete",
    "word_swap": "word_swap",
    "word_mask": "word_mask",
    "eda (swap, deletion)": {"name": "eda", "alpha_sr": 0.0, "alpha_ri": 0.0},
    "eda (WordNet)": "eda",
    "strong": "strong",
    "token_mask": "token_mask",
    "span_mask": "span_mask",
    "token_dropout": "token_dropout",
    "sequence (drop_swap, token_mask)": {"name": "sequence", "steps": [{"name": "drop_swap", "p_delete": 0.2},
                                                                        {"name": "token_mask", "p": 0.1}]},
    "one_of (word_swap, span_mask)": {"name": "one_of", "choices": ["word_swap", "span_mask"]},
    "randaugment": "randaugment",
}


def read_texts(name: str, split: str, n: int) -> list[str]:
    with open(Path(data_dir()) / name / f"{split}.jsonl", encoding="utf-8") as handle:
        return [json.loads(line)["text"] for _, line in zip(range(n), handle)]


@pytest.fixture(scope="module")
def registry():
    return load_plugins()


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return read_texts("ag_news", "train", 1000)


def seeds(n: int) -> np.ndarray:
    return np.arange(n, dtype=np.int64) * 7919 + 1


@pytest.mark.parametrize("name", NATIVE)
def test_native_augmentation_speed(benchmark, name, registry, texts):
    if name == "eda (WordNet)" and nltk_resources.find_wordnet() is None:
        pytest.skip("WordNet is not set up (scripts/setup_nltk_data.py)")
    augment = build_augmentation(NATIVE[name], registry)
    augment(texts[:20], seeds(20))  # loads tokenizers / WordNet once, as a run does
    views = benchmark.pedantic(augment, args=(texts, seeds(len(texts))), rounds=3, iterations=1)
    rate = len(texts) / benchmark.stats.stats.min
    benchmark.extra_info.update(sentences_per_second=round(rate), unchanged=sum(v == t for v, t in zip(views, texts)))
    print(f"\n{name:<34} {rate:>10,.0f} sentences/s")
    assert len(views) == len(texts)


def best_of(fn, rounds: int = 3) -> float:
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def test_native_eda_is_at_least_5x_nlpaug_random_word(benchmark, registry, texts):
    import nlpaug.augmenter.word as naw  # lazily: this import alone takes seconds

    swap, delete = naw.RandomWordAug(action="swap"), naw.RandomWordAug(action="delete")
    eda = build_augmentation({"name": "eda", "alpha_sr": 0.0, "alpha_ri": 0.0}, registry)
    s = seeds(len(texts))
    timings = {}
    for _ in range(2):  # interleaved, best of: machine noise hits both alike
        timings["nlpaug swap"] = min(timings.get("nlpaug swap", 1e9), best_of(lambda: [swap.augment(t) for t in texts], 1))
        timings["nlpaug delete"] = min(timings.get("nlpaug delete", 1e9), best_of(lambda: [delete.augment(t) for t in texts], 1))
        timings["eda"] = min(timings.get("eda", 1e9), best_of(lambda: eda(texts, s), 2))
    benchmark.pedantic(eda, args=(texts, s), rounds=3, iterations=1)
    nlpaug_seconds = (timings["nlpaug swap"] + timings["nlpaug delete"]) / 2
    ratio = nlpaug_seconds / timings["eda"]
    info = {"eda_sentences_per_second": round(len(texts) / timings["eda"]),
            "nlpaug_swap_sentences_per_second": round(len(texts) / timings["nlpaug swap"]),
            "nlpaug_delete_sentences_per_second": round(len(texts) / timings["nlpaug delete"]), "ratio": round(ratio, 2)}
    if nltk_resources.find_wordnet() is not None:
        full = build_augmentation("eda", registry)
        full(texts, s)  # WordNet's synsets, memoised per word, as in a run
        info["eda_wordnet_sentences_per_second"] = round(len(texts) / best_of(lambda: full(texts, s)))
    benchmark.extra_info.update(info)
    print(f"\nEDA vs nlpaug RandomWordAug: {info}")
    assert ratio >= 5, f"native EDA is only {ratio:.1f}x nlpaug's RandomWordAug"


def test_reading_4_cached_variants_of_10000_texts(benchmark, registry, tmp_path, monkeypatch):
    monkeypatch.setenv(resources.CACHE_ENV, str(tmp_path / "cache"))
    pool = read_texts("ag_news", "train", 8000) + read_texts("ag_news", "test", 2000)
    augment, spec, fingerprint = build("word_swap", registry)
    k, everything = 4, np.arange(len(pool))
    writer = ViewStream(augment, spec, fingerprint, "strong", pool, 0, k, cache_root())
    for v in range(k):
        writer.draw(everything, np.full(len(pool), v))
    writer.flush()

    def read_back():
        reader = ViewStream(augment, spec, fingerprint, "strong", pool, 0, k, cache_root())
        out = [reader.draw(everything, np.full(len(pool), v)) for v in range(k)]
        assert reader.computed == 0
        return out

    views = benchmark.pedantic(read_back, rounds=3, iterations=1)
    seconds = benchmark.stats.stats.min
    size = sum(p.stat().st_size for p in cache_root().rglob("*") if p.is_file())
    benchmark.extra_info.update(seconds=round(seconds, 3), views=k * len(pool), cache_bytes=size)
    print(f"\nread {k} x {len(pool):,} cached views in {seconds:.3f} s ({size / 2**20:.1f} MiB on disk)")
    assert len(views) == k and all(len(v) == len(pool) for v in views)
