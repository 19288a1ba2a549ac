"""Native word-level text augmentations. Each takes a batch of texts and one seed per text, so a
text's view depends only on the text, its seed and the options, never on the rest of the batch.

Words are whitespace-separated tokens; a view that changes something is re-joined with single
spaces, and a text an augmentation cannot change (empty, too short, nothing to replace) comes
back exactly as it was and is counted in the augment callable's ``unchanged`` attribute.

For token tasks (each word has a tag) only ``identity`` and ``word_mask`` (with a mask token, one
per masked word) keep every word in place (``keeps_words``); deletion, swaps, insertion, EDA and
``strong`` do not.

- ``drop_swap``, ``word_delete``, ``word_swap``, ``word_mask``: one or two cheap operations.
- ``eda``: Easy Data Augmentation (Wei & Zou 2019): synonym replacement, random insertion, random
  swap, random deletion with their α parameters. EDA makes each augmented sentence with ONE of
  the four operations; here each seed is one such sentence (``ops_per_view`` chains more).
  Synonyms come from WordNet (nltk) or a JSON file; swap and deletion need neither.
- ``strong``: deletion, swaps and span masking in one pass, a back-translation-free strong view
  fast enough to compute on the fly.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from testbed import Augmentation, Augmenter, UserError, hookimpl
from testbed_plugins._text import check_at_least, check_probability, text_random, uniforms

PUNCT = "\"'`.,;:!?()[]{}<>«»“”‘’…—–-*&%$#@/\\|~^_+="
MAX_SPAN = 10

# The stop words of the EDA reference implementation (jasonwei20/eda_nlp): never replaced by synonyms.
STOP_WORDS = frozenset([
    "i", "me", "my", "myself", "we", "our", "ours", "ourselves", "you", "your", "yours", "yourself",
    "yourselves", "he", "him", "his", "himself", "she", "her", "hers", "herself", "it", "its", "itself", "they",
    "them", "their", "theirs", "themselves", "what", "which", "who", "whom", "this", "that", "these", "those",
    "am", "is", "are", "was", "were", "be", "been", "being", "have", "has", "had", "having", "do", "does",
    "did", "doing", "a", "an", "the", "and", "but", "if", "or", "because", "as", "until", "while", "of", "at",
    "by", "for", "with", "about", "against", "between", "into", "through", "during", "before", "after", "above",
    "below", "to", "from", "up", "down", "in", "out", "on", "off", "over", "under", "again", "further", "then",
    "once", "here", "there", "when", "where", "why", "how", "all", "any", "both", "each", "few", "more", "most",
    "other", "some", "such", "no", "nor", "not", "only", "own", "same", "so", "than", "too", "very", "s", "t",
    "can", "will", "just", "don", "should", "now",
])


def identity(options, context):
    return Augmenter(lambda texts, seeds: list(texts), passthrough=True)


def per_text(fn, keeps_words: bool = False):
    """augment from ``fn(words, rng, text) -> new words | None`` (None or no change: the text as it was);
    ``keeps_words``: ``fn`` never changes the number or order of the words (Augmenter.keeps_words)."""

    def augment(texts, seeds):
        out = []
        for text, seed in zip(texts, seeds.tolist()):
            words = text.split()
            new = fn(words, text_random(seed), text) if words else None
            out.append(text if new is None or new == words else " ".join(new))
        return out

    return Augmenter(augment, keeps_words=keeps_words)


# --------------------------------------------------------------------------- single operations


def delete_words(words: list[str], us: list[float], p: float, rng) -> list[str]:
    """Each word goes with probability p (``us``: one uniform per word); at least one word stays."""
    kept = [w for w, u in zip(words, us) if u >= p]
    return kept or [words[int(rng.random() * len(words))]]


def swap_words(words: list[str], n: int, rng) -> list[str]:
    """n swaps of two distinct random positions."""
    words = list(words)
    size = len(words)
    if size < 2:
        return words
    for _ in range(n):
        i = int(rng.random() * size)
        j = int(rng.random() * (size - 1))
        j += j >= i
        words[i], words[j] = words[j], words[i]
    return words


def mask_spans(words: list[str], p: float, span: float, token: str, rng) -> list[str]:
    """Spans of geometric length (mean ``span``, at most 10 words) start at each word with
    probability p/span, so about a fraction p of the words is masked; each masked word becomes
    ``token`` ("" drops it)."""
    if p <= 0:
        return words
    start, go_on = p / span, 1.0 - 1.0 / span
    out, i, size = [], 0, len(words)
    while i < size:
        if rng.random() < start:
            length = 1
            while length < MAX_SPAN and rng.random() < go_on:
                length += 1
            if token:
                out.extend([token] * min(length, size - i))
            i += length
        else:
            out.append(words[i])
            i += 1
    return out


@dataclass(frozen=True)
class DropSwapOptions:
    p_delete: float = 0.1  # each word is deleted with this probability (at least one word stays)
    p_swap: float = 0.1  # round(p_swap · words) random pairs of words are swapped (at least one)

    def __post_init__(self):
        check_probability(self, "p_delete", "p_swap")


def drop_swap(options: DropSwapOptions, context):
    """Random word deletion then random swaps (EDA's RD and RS, Wei & Zou 2019)."""

    def augment_one(text: str, seed: int) -> str:
        words = text.split()
        if len(words) < 2 or options.p_delete == options.p_swap == 0:
            return text  # nothing to delete or swap without losing the text
        rng = np.random.default_rng(seed)
        kept = [w for w, drop in zip(words, rng.random(len(words)) < options.p_delete) if not drop]
        words = kept or [words[rng.integers(len(words))]]
        if options.p_swap > 0 and len(words) >= 2:
            for _ in range(max(1, round(options.p_swap * len(words)))):
                i, j = rng.choice(len(words), size=2, replace=False)
                words[i], words[j] = words[j], words[i]
        return " ".join(words)

    return Augmenter(lambda texts, seeds: [augment_one(t, int(s)) for t, s in zip(texts, seeds)])


@dataclass(frozen=True)
class WordDeleteOptions:
    p: float = 0.1  # each word is deleted with this probability (at least one word stays)

    def __post_init__(self):
        check_probability(self, "p")


def word_delete(options: WordDeleteOptions, context):
    """Random deletion, vectorised: every word's coin of the batch is drawn in one pass."""
    p = options.p

    def augment(texts, seeds):
        split = [t.split() for t in texts]
        flat, starts = uniforms(seeds, [len(w) for w in split], salt=1)
        out = []
        for text, words, start, seed in zip(texts, split, starts.tolist(), seeds.tolist()):
            if len(words) < 2 or p == 0:
                out.append(text)
                continue
            kept = delete_words(words, flat[start : start + len(words)], p, text_random(seed))
            out.append(text if len(kept) == len(words) else " ".join(kept))
        return out

    return Augmenter(augment)


@dataclass(frozen=True)
class WordSwapOptions:
    p: float = 0.1  # round(p · words) swaps of two random words (at least one when p > 0)

    def __post_init__(self):
        check_probability(self, "p")


def word_swap(options: WordSwapOptions, context):
    def swap(words, rng, text):
        if len(words) < 2 or options.p == 0:
            return None
        return swap_words(words, max(1, round(options.p * len(words))), rng)

    return per_text(swap)


@dataclass(frozen=True)
class WordMaskOptions:
    p: float = 0.15  # about this fraction of the words is masked, in spans
    span: float = 1.0  # mean span length in words (geometric; 1 = single words)
    mask_token: str = "[MASK]"  # a masked word becomes this ("" drops it); "[MASK]" is BERT's mask token

    def __post_init__(self):
        check_probability(self, "p")
        check_at_least(self, "span", 1.0)


def word_mask(options: WordMaskOptions, context):
    def mask(words, rng, text):
        if len(words) < 2 or options.p == 0:
            return None
        return mask_spans(words, options.p, options.span, options.mask_token, rng) or words[:1]

    # each masked word becomes one mask token: the words stay in place unless the token is "" (drops them) or holds spaces
    return per_text(mask, keeps_words=len(options.mask_token.split()) == 1 and options.mask_token.strip() == options.mask_token)


# --------------------------------------------------------------------------- strong


@dataclass(frozen=True)
class StrongOptions:
    p_delete: float = 0.1  # each word is deleted with this probability
    p_swap: float = 0.1  # round(p_swap · words) swaps of two random words (at least one)
    p_mask: float = 0.15  # about this fraction of the words is masked, in spans
    span: float = 2.0  # mean span length of the masking
    mask_token: str = "[MASK]"  # a masked word becomes this ("" drops it)

    def __post_init__(self):
        check_probability(self, "p_delete", "p_swap", "p_mask")
        check_at_least(self, "span", 1.0)


def strong(options: StrongOptions, context):
    """Deletion, then swaps, then span masking: a strong view without a translation model."""
    o = options

    def augment(words, rng, text):
        if len(words) < 2:
            return None
        if o.p_delete:
            words = delete_words(words, [rng.random() for _ in words], o.p_delete, rng)
        if o.p_swap:
            words = swap_words(words, max(1, round(o.p_swap * len(words))), rng)
        return mask_spans(words, o.p_mask, o.span, o.mask_token, rng) or words[:1]

    return per_text(augment)


# --------------------------------------------------------------------------- EDA


@dataclass(frozen=True)
class EdaOptions:
    alpha_sr: float = 0.1  # synonym replacement: n = max(1, int(α·words)) words get a synonym
    alpha_ri: float = 0.1  # random insertion: n synonyms of random words inserted at random places
    alpha_rs: float = 0.1  # random swap: n swaps of two random words
    p_rd: float = 0.1  # random deletion: each word deleted with this probability
    ops_per_view: int = 1  # operations per view, chosen at random among those with α > 0 (EDA: 1)
    synonyms: str = "wordnet"  # "wordnet" (nltk's WordNet) or a JSON file {"word": ["synonym", ...]}

    def __post_init__(self):
        check_probability(self, "alpha_sr", "alpha_ri", "alpha_rs", "p_rd")
        if not 1 <= self.ops_per_view <= 4:
            raise ValueError(f"augmentation option ops_per_view must be 1 to 4, got {self.ops_per_view}")


def _key(word: str) -> str:
    return word.strip(PUNCT).lower()


def _restore(synonym: str, word: str) -> str:
    """The synonym dressed like the word it replaces: its punctuation and a capital initial."""
    core = word.strip(PUNCT)
    if not core:
        return word
    start = word.index(core)
    if core[0].isupper():
        synonym = synonym[:1].upper() + synonym[1:]
    return word[:start] + synonym + word[start + len(core):]


_LEMMA_OK = re.compile(r"^[^\W\d_]+(?:[ '-][^\W\d_]+)*$")


@functools.cache
def wordnet_synonyms():
    """word -> WordNet synonyms (EDA's get_synonyms), memoised per word."""
    from testbed_plugins._resources import require_wordnet

    try:
        require_wordnet("eda with alpha_sr or alpha_ri > 0 (synonym replacement / insertion)", tagger=False)
        from nltk.corpus import wordnet

        wordnet.ensure_loaded()
    except UserError as exc:
        raise UserError(f"{exc} Or use eda without synonyms (alpha_sr = alpha_ri = 0: swap and deletion only), "
                        "or point eda's synonyms option at a JSON file {\"word\": [\"synonym\", ...]}.") from None
    except LookupError as exc:
        raise UserError(f"eda could not load WordNet through nltk: {str(exc).strip()[:300]}") from None
    memo: dict[str, list[str]] = {}

    def synonyms(word: str) -> list[str]:
        if word not in memo:
            found = dict.fromkeys(
                lemma.name().replace("_", " ").lower() for synset in wordnet.synsets(word) for lemma in synset.lemmas())
            memo[word] = [s for s in found if s != word and _LEMMA_OK.match(s)]
        return memo[word]

    return synonyms


@functools.lru_cache(maxsize=16)
def file_synonyms(path: str):
    try:
        table = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"eda synonyms file {path!r} could not be read as JSON: {exc}. "
                        "Use 'wordnet' or a JSON object {\"word\": [\"synonym\", ...]}.") from None
    if not isinstance(table, dict) or not all(isinstance(v, list) for v in table.values()):
        raise UserError(f"eda synonyms file {path!r} must hold a JSON object {{\"word\": [\"synonym\", ...]}}.")
    lowered = {str(k).lower(): [str(s) for s in v if str(s).lower() != str(k).lower()] for k, v in table.items()}
    return lambda word: lowered.get(word, [])


def synonym_source(name: str):
    if name == "wordnet":
        return wordnet_synonyms()
    if not Path(name).is_file():
        raise UserError(f"eda's synonyms option must be 'wordnet' or an existing JSON file, got {name!r}.")
    return file_synonyms(str(Path(name).resolve()))


def synonym_replacement(words, n, rng, synonyms):
    candidates = list(dict.fromkeys(k for k in map(_key, words) if k and k not in STOP_WORDS))
    rng.shuffle(candidates)
    chosen: dict[str, str] = {}
    for key in candidates:
        options = synonyms(key)
        if options:
            chosen[key] = options[int(rng.random() * len(options))]
            if len(chosen) >= n:
                break
    if not chosen:
        return words
    return [_restore(chosen[k], w) if (k := _key(w)) in chosen else w for w in words]


def random_insertion(words, n, rng, synonyms):
    words = list(words)
    for _ in range(n):
        for _attempt in range(10):  # EDA tries ten random words for one that has synonyms
            options = synonyms(_key(words[int(rng.random() * len(words))]))
            if options:
                words.insert(int(rng.random() * (len(words) + 1)), options[int(rng.random() * len(options))])
                break
    return words


def eda(options: EdaOptions, context):
    o = options
    needs_synonyms = o.alpha_sr > 0 or o.alpha_ri > 0
    synonyms = synonym_source(o.synonyms) if needs_synonyms else None
    ops = [op for op, alpha in (("sr", o.alpha_sr), ("ri", o.alpha_ri), ("rs", o.alpha_rs), ("rd", o.p_rd)) if alpha > 0]

    def augment(words, rng, text):
        if not ops:
            return None
        chosen = [ops[int(rng.random() * len(ops))]] if o.ops_per_view == 1 else rng.sample(ops, min(o.ops_per_view, len(ops)))
        for op in chosen:
            size = len(words)
            if op == "rd":
                if size > 1:
                    words = delete_words(words, [rng.random() for _ in words], o.p_rd, rng)
            elif op == "rs":
                words = swap_words(words, max(1, int(o.alpha_rs * size)), rng)
            elif op == "sr":
                words = synonym_replacement(words, max(1, int(o.alpha_sr * size)), rng, synonyms)
            else:
                words = random_insertion(words, max(1, int(o.alpha_ri * size)), rng, synonyms)
        return words

    return per_text(augment)


@hookimpl
def testbed_augmentations():
    return [
        Augmentation(name="identity", summary="the text unchanged", factory=identity, keeps_words=True),
        Augmentation(name="drop_swap", summary="random word deletion + random word swaps (EDA RD+RS)",
                     factory=drop_swap, options=DropSwapOptions),
        Augmentation(name="word_delete", summary="each word deleted with probability p (vectorised)",
                     factory=word_delete, options=WordDeleteOptions),
        Augmentation(name="word_swap", summary="round(p · words) swaps of two random words",
                     factory=word_swap, options=WordSwapOptions),
        Augmentation(name="word_mask", summary="about a fraction p of the words replaced by [MASK], in spans",
                     factory=word_mask, options=WordMaskOptions, keeps_words=True),
        Augmentation(name="eda", summary="EDA (Wei & Zou 2019): one of synonym replacement (WordNet), random insertion, "
                     "swap, deletion per view", factory=eda, options=EdaOptions),
        Augmentation(name="strong", summary="deletion + swaps + span masking: a fast, translation-free strong view",
                     factory=strong, options=StrongOptions),
    ]
