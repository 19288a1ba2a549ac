"""Augmentations at the tokenizer level: mask tokens with the tokenizer's mask token, mask spans
of tokens, or drop tokens. The text is tokenized with offsets, the chosen tokens' characters are
replaced in the original text (everything else, case and spacing included, stays as it was), and
the student re-tokenizes the view as usual. Every token's coin for a whole batch is drawn in one
vectorised pass from the texts' seeds. Texts of fewer than two tokens pass through unchanged.

``tokenizer`` is ``minilm`` (the MiniLM WordPiece vocabulary, the default student's) or any
Hugging Face tokenizer by local path or hub id; it must be a fast tokenizer (offsets).

``token_mask`` and ``span_mask`` (without ``collapse``) keep the spaces between words, so every
word stays in place for token tasks (``keeps_words``); ``token_dropout`` can drop whole words.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from testbed import Augmentation, Augmenter, UserError, hookimpl
from testbed_plugins._text import check_at_least, check_probability, resolve_tokenizer_name, uniforms


@functools.lru_cache(maxsize=8)
def load_tokenizer(name: str, need_mask: bool = True):
    from transformers import AutoTokenizer

    path = resolve_tokenizer_name(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise UserError(f"Could not load tokenizer {name!r}: {str(exc).strip()[:300]}. Set the augmentation's tokenizer option "
                        "to 'minilm', a local tokenizer directory or (online) a hub id.") from None
    if not tokenizer.is_fast:
        raise UserError(f"Tokenizer {name!r} is not a fast (Rust) tokenizer; token-level augmentations need its offsets.")
    if need_mask and not tokenizer.mask_token:
        raise UserError(f"Tokenizer {name!r} has no mask token; use token_dropout, or word_mask with mask_token set.")
    return tokenizer


def token_offsets(tokenizer, texts: list[str]) -> list[list[tuple[int, int]]]:
    """Character spans of each text's tokens (no special tokens, no truncation)."""
    encoded = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True, return_attention_mask=False,
                        return_token_type_ids=False, verbose=False)
    return [[(s, e) for s, e in spans if e > s] for spans in encoded["offset_mapping"]]


def replace_spans(text: str, spans, replacement) -> str:
    """``text`` with each (start, end) span (sorted, disjoint) replaced by ``replacement`` (a string,
    or one string per span)."""
    pieces, position = [], 0
    for k, (start, end) in enumerate(spans):
        pieces.append(text[position:start])
        pieces.append(replacement if isinstance(replacement, str) else replacement[k])
        position = end
    pieces.append(text[position:])
    return "".join(pieces)


def runs(indices) -> list[tuple[int, int]]:
    """Consecutive integers grouped: [1, 2, 3, 7] -> [(1, 3), (7, 7)]."""
    out: list[tuple[int, int]] = []
    for i in indices:
        if out and i == out[-1][1] + 1:
            out[-1] = (out[-1][0], i)
        else:
            out.append((i, i))
    return out


def token_augmenter(options, choose, rebuild, need_mask: bool = True, keeps_words: bool = False):
    """augment() that tokenizes the batch, draws each token's uniforms (two per token) in one
    pass, lets ``choose(u1, u2) -> chosen token indices`` decide and ``rebuild`` write the view;
    ``keeps_words``: ``rebuild`` never touches the whitespace between words (Augmenter.keeps_words)."""
    tokenizer = load_tokenizer(options.tokenizer, need_mask)

    def augment(texts, seeds):
        offsets = token_offsets(tokenizer, texts)
        flat, starts = uniforms(seeds, [2 * len(o) for o in offsets], salt=2)
        out = []
        for text, spans, start in zip(texts, offsets, starts.tolist()):
            n = len(spans)
            if n < 2 or options.p == 0:
                out.append(text)
                continue
            u = np.asarray(flat[start : start + 2 * n])
            chosen = choose(u[:n], u[n:])
            out.append(rebuild(text, spans, chosen, tokenizer) if len(chosen) else text)
        return out

    return Augmenter(augment, keeps_words=keeps_words)


@dataclass(frozen=True)
class TokenMaskOptions:
    p: float = 0.15  # each token is masked with this probability (at least one per text)
    tokenizer: str = "minilm"  # "minilm" or a Hugging Face tokenizer path / hub id; its mask token is used

    def __post_init__(self):
        check_probability(self, "p")


def token_mask(options: TokenMaskOptions, context):
    def choose(u, _):
        chosen = np.flatnonzero(u < options.p)
        return chosen if len(chosen) else np.array([int(u.argmin())])

    def rebuild(text, spans, chosen, tokenizer):
        return replace_spans(text, [spans[k] for k in chosen], tokenizer.mask_token)

    # a token's characters become the mask token; the spaces between words stay (a word may become "U[MASK]S.")
    return token_augmenter(options, choose, rebuild, keeps_words=_single_word(load_tokenizer(options.tokenizer).mask_token))


def _single_word(token: str | None) -> bool:
    return bool(token) and len(token.split()) == 1 and token.split()[0] == token


@dataclass(frozen=True)
class SpanMaskOptions:
    p: float = 0.15  # about this fraction of the tokens is masked (at least one span per text)
    span: float = 3.0  # mean span length in tokens (geometric, as SpanBERT)
    max_span: int = 10  # longest span
    collapse: bool = False  # one mask token per span instead of one per token
    tokenizer: str = "minilm"  # "minilm" or a Hugging Face tokenizer path / hub id

    def __post_init__(self):
        check_probability(self, "p")
        check_at_least(self, "span", 1.0)
        check_at_least(self, "max_span", 1)


def span_mask(options: SpanMaskOptions, context):
    o = options
    start_p = o.p / o.span
    log_go_on = math.log(1.0 - 1.0 / o.span) if o.span > 1 else None

    def choose(u, v):
        n = len(u)
        positions = np.arange(n)
        starts = u < start_p
        if not starts.any():
            starts[int(u.argmin())] = True
        if log_go_on is None:
            lengths = np.ones(n, dtype=np.int64)
        else:
            lengths = 1 + np.floor(np.log(np.maximum(v, 1e-300)) / log_go_on).astype(np.int64)
        lengths = np.minimum(lengths, o.max_span)
        ends = np.where(starts, positions + lengths, 0)
        return np.flatnonzero(np.maximum.accumulate(ends) > positions)

    def rebuild(text, spans, chosen, tokenizer):
        if o.collapse:
            merged = [(spans[a][0], spans[b][1]) for a, b in runs(chosen.tolist())]
            return replace_spans(text, merged, tokenizer.mask_token)
        return replace_spans(text, [spans[k] for k in chosen], tokenizer.mask_token)

    # one mask per token keeps the spaces between words; collapse merges a span across words into one mask
    return token_augmenter(o, choose, rebuild, keeps_words=not o.collapse and _single_word(load_tokenizer(o.tokenizer).mask_token))


@dataclass(frozen=True)
class TokenDropoutOptions:
    p: float = 0.1  # each token is dropped with this probability (at least one, never all)
    tokenizer: str = "minilm"  # "minilm" or a Hugging Face tokenizer path / hub id

    def __post_init__(self):
        check_probability(self, "p")


def token_dropout(options: TokenDropoutOptions, context):
    def choose(u, _):
        dropped = u < options.p
        if not dropped.any():
            dropped[int(u.argmin())] = True
        if dropped.all():
            dropped[int(u.argmax())] = False
        return np.flatnonzero(dropped)

    def rebuild(text, spans, chosen, tokenizer):
        return " ".join(replace_spans(text, [spans[k] for k in chosen], "").split())

    return token_augmenter(options, choose, rebuild, need_mask=False)


@hookimpl
def testbed_augmentations():
    return [
        Augmentation(name="token_mask", summary="each tokenizer token replaced by the mask token with probability p",
                     factory=token_mask, options=TokenMaskOptions, keeps_words=True),
        Augmentation(name="span_mask", summary="spans of tokens (geometric length) replaced by the mask token (SpanBERT-style)",
                     factory=span_mask, options=SpanMaskOptions, keeps_words=True),
        Augmentation(name="token_dropout", summary="each tokenizer token dropped with probability p",
                     factory=token_dropout, options=TokenDropoutOptions),
    ]
