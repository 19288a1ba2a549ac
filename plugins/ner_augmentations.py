"""Augmentations of tagged examples for named-entity recognition, after Dai & Adel 2020 ("An Analysis
of Simple Data Augmentation for Named Entity Recognition", COLING). They read the gold tags, so they
augment the labeled batch of a token task only (``augmentation.labeled``; as a weak or strong view
of unlabeled texts they are refused), and every view comes back with a tag per word:

- ``mention_replace`` (MR): each entity mention, with probability p, becomes another mention of the
  same type from the run's labeled set; its tags are rewritten B-X I-X ... for the new length.
- ``o_synonym`` (SR on O words): each word tagged O (not a stop word), with probability p, becomes a
  WordNet synonym (the synonym machinery of ``eda``); the extra words of a multi-word synonym are O.
  Entity words are never touched (Dai & Adel's SR also replaces words inside mentions).
- ``segment_shuffle`` (SiS): a segment is a maximal run of words with the same entity or O label (a
  B- tag starts a new one); each segment of two or more words is shuffled with probability p. The
  tag sequence stays as it was.

Their p defaults to 0.3, the ``--replace_ratio`` default of the authors' code for all of them
(boschresearch/data-augmentation-coling2020, main.py). Words are whitespace-separated, as the token
task's texts are (words joined by single spaces); views are re-joined with single spaces. A view
depends only on the text, its tags, its seed, the options and (MR) the labeled set.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import numpy as np

from testbed import Augmentation, Augmenter, UserError, hookimpl
from testbed_plugins._text import check_probability, text_random
from testbed_plugins.augmentations import STOP_WORDS, _key, _restore, synonym_source

IOB2 = re.compile(r"([BI])-(.+)")


def tag_parts(label_names) -> list[tuple[str, str]]:
    """(B, I or "", the label's type: an entity type, or the name itself for O and other tags) per tag id."""
    out = []
    for name in label_names:
        match = IOB2.fullmatch(name)
        out.append((match.group(1), match.group(2)) if match else ("", name))
    return out


def segments(tags: np.ndarray, parts: list[tuple[str, str]]) -> list[tuple[int, int]]:
    """[start, end) of each maximal run of words with one label: a run of O words, or one mention
    (B-X then its I-X words; an I-X that follows another type starts one too, as conlleval reads it)."""
    out: list[tuple[int, int]] = []
    previous = None
    for i, tag in enumerate(tags.tolist()):
        prefix, kind = parts[tag]
        if previous is None or prefix == "B" or kind != previous:
            out.append((i, i + 1))
        else:
            out[-1] = (out[-1][0], i + 1)
        previous = kind
    return out


def is_entity(parts: list[tuple[str, str]], tag: int) -> bool:
    return parts[tag][0] != ""


class TaggedAugmenter(Augmenter):
    """An augmenter of tagged examples only: ``fit_labeled`` gives it the tag names; ``one(words, tags,
    rng) -> (words, tags) | None`` (None: unchanged) makes one view."""

    needs_tags = True

    def __init__(self, options):
        super().__init__()
        self.options, self.parts = options, None

    def fit_labeled(self, texts, tags, label_names) -> None:
        self.label_names = tuple(label_names)
        self.parts = tag_parts(label_names)

    def augment_tagged(self, texts, tags, seeds):
        if self.parts is None:
            raise ValueError(f"{type(self).__name__}.augment_tagged before fit_labeled: the tag names are not known yet")
        views, out = [], []
        for text, tag, seed in zip(texts, tags, seeds.tolist()):
            words = text.split()
            new = self.one(words, np.asarray(tag, dtype=np.int64), text_random(seed)) if words else None
            if new is None or new[0] == words:
                views.append(text)
                out.append(tag)
            else:
                views.append(" ".join(new[0]))
                out.append(np.asarray(new[1], dtype=np.int64))
        return views, out

    def one(self, words: list[str], tags: np.ndarray, rng):
        raise NotImplementedError


# --------------------------------------------------------------------------- mention replacement


@dataclass(frozen=True)
class MentionReplaceOptions:
    p: float = 0.3  # each mention is replaced with this probability (Dai & Adel's code: replace_ratio = 0.3)

    def __post_init__(self):
        check_probability(self, "p")


class MentionReplace(TaggedAugmenter):
    """MR: a mention becomes another mention of its type from the labeled set (uniformly among the
    distinct ones, itself left out), its tags B-X I-X ... for the new mention's length."""

    def fit_labeled(self, texts, tags, label_names) -> None:
        super().fit_labeled(texts, tags, label_names)
        if not any(prefix for prefix, _ in self.parts):
            raise UserError(f"mention_replace needs IOB2 tag names (O, B-TYPE, I-TYPE) to find mentions; this dataset's tags are "
                            f"{', '.join(self.label_names[:6])}. Use segment_shuffle or o_synonym as augmentation.labeled.")
        ids = {name: i for i, name in enumerate(self.label_names)}
        self.begin = {kind: ids.get(f"B-{kind}") for _, kind in self.parts}
        self.inside = {kind: ids.get(f"I-{kind}") for _, kind in self.parts}
        mentions: dict[str, dict[tuple[str, ...], None]] = {}  # type -> distinct mentions, in order of appearance
        for text, tag in zip(texts, tags):
            words, tag = text.split(), np.asarray(tag)
            for start, end in segments(tag, self.parts):
                if is_entity(self.parts, int(tag[start])):
                    mentions.setdefault(self.parts[int(tag[start])][1], {})[tuple(words[start:end])] = None
        self.mentions = {kind: list(found) for kind, found in mentions.items()}
        digest = hashlib.sha256(repr(sorted(self.mentions.items())).encode()).hexdigest()[:16]
        self.fingerprint = f"mentions:{digest}"  # views depend on the labeled set's mentions

    def replaceable(self, tag: int) -> bool:
        """A mention of this tag can be rewritten: an entity type with a B- tag (and an I- tag, which any type
        with a mention of several words in the labeled set has)."""
        return is_entity(self.parts, tag) and self.begin[self.parts[tag][1]] is not None

    def one(self, words, tags, rng):
        new_words, new_tags = [], []
        for start, end in segments(tags, self.parts):
            mention, tag = tuple(words[start:end]), int(tags[start])
            kind = self.parts[tag][1]
            # the paper replaces a mention by "another mention"; its code may draw the mention itself
            # (augment.py, generate_sentences_by_replace_mention): here only the others are candidates
            others = [m for m in self.mentions.get(kind, ()) if m != mention] if self.replaceable(tag) else []
            if others and rng.random() < self.options.p:
                mention = others[int(rng.random() * len(others))]
                tagged = [self.begin[kind]] + [self.inside[kind]] * (len(mention) - 1)
            else:
                tagged = tags[start:end].tolist()
            new_words.extend(mention)
            new_tags.extend(tagged)
        return new_words, new_tags


def mention_replace(options: MentionReplaceOptions, context):
    return MentionReplace(options)


# --------------------------------------------------------------------------- synonyms of O words


@dataclass(frozen=True)
class OSynonymOptions:
    p: float = 0.3  # each O word (not a stop word) gets a synonym with this probability (Dai & Adel: replace_ratio = 0.3)
    synonyms: str = "wordnet"  # "wordnet" (nltk's WordNet) or a JSON file {"word": ["synonym", ...]}, as eda's

    def __post_init__(self):
        check_probability(self, "p")


class OSynonym(TaggedAugmenter):
    """SR on O words: a replaced word's synonym keeps its punctuation and capital initial; a synonym
    of several words adds words tagged O."""

    def __init__(self, options):
        super().__init__(options)
        if options.synonyms == "wordnet":
            from testbed_plugins._resources import require_wordnet

            require_wordnet("o_synonym (synonyms of O words)", tagger=False)  # this augmentation's own how-to, not eda's
        self.synonyms = synonym_source(options.synonyms)

    def fit_labeled(self, texts, tags, label_names) -> None:
        super().fit_labeled(texts, tags, label_names)
        if "O" not in self.label_names:
            raise UserError(f"o_synonym replaces words tagged O, but this dataset's tags ({', '.join(self.label_names[:6])}) have "
                            "no O. Use segment_shuffle as augmentation.labeled.")
        self.outside = self.label_names.index("O")

    def one(self, words, tags, rng):
        new_words, new_tags = [], []
        for word, tag in zip(words, tags.tolist()):
            u = rng.random()  # a coin for every word, drawn whether or not it is O
            key = _key(word)
            candidates = self.synonyms(key) if tag == self.outside and u < self.options.p and key and key not in STOP_WORDS else []
            if candidates:
                replaced = _restore(candidates[int(rng.random() * len(candidates))], word).split()
                new_words.extend(replaced)
                new_tags.extend([self.outside] * len(replaced))
            else:
                new_words.append(word)
                new_tags.append(tag)
        return new_words, new_tags


def o_synonym(options: OSynonymOptions, context):
    return OSynonym(options)


# --------------------------------------------------------------------------- shuffle within segments


@dataclass(frozen=True)
class SegmentShuffleOptions:
    p: float = 0.3  # each segment of two or more words is shuffled with this probability (Dai & Adel: replace_ratio = 0.3)

    def __post_init__(self):
        check_probability(self, "p")


class SegmentShuffle(TaggedAugmenter):
    """SiS: words move within their segment only; the tags stay where they were."""

    def one(self, words, tags, rng):
        order = []
        for start, end in segments(tags, self.parts):
            span = list(range(start, end))
            if len(span) > 1 and rng.random() < self.options.p:
                rng.shuffle(span)
            order.extend(span)
        return [words[i] for i in order], tags


def segment_shuffle(options: SegmentShuffleOptions, context):
    return SegmentShuffle(options)


@hookimpl
def testbed_augmentations():
    return [
        Augmentation(name="mention_replace", summary="NER (augmentation.labeled): each entity mention replaced, with probability "
                     "p, by another of its type from the labeled set; tags rewritten (Dai & Adel 2020 MR)",
                     factory=mention_replace, options=MentionReplaceOptions, tagged=True, needs_tags=True),
        Augmentation(name="o_synonym", summary="NER (augmentation.labeled): each O word replaced, with probability p, by a "
                     "WordNet synonym; entity words untouched (Dai & Adel 2020 SR on O words)",
                     factory=o_synonym, options=OSynonymOptions, tagged=True, needs_tags=True),
        Augmentation(name="segment_shuffle", summary="NER (augmentation.labeled): the words of each same-label segment shuffled "
                     "with probability p; tags kept (Dai & Adel 2020 SiS)",
                     factory=segment_shuffle, options=SegmentShuffleOptions, tagged=True, needs_tags=True),
    ]
