"""The frozen-encoder backbone: a classifier head trained on cached outputs of a frozen encoder.

``backbone.name=frozen backbone.encoder=minilm`` gives the loop a model whose only parameters are
dropout + Linear(hidden, C). Its input is the pooled last hidden layer of the encoder (any backbone
name, local path or hub id), computed once per text and kept in memory and on disk, so a grid of
head-only runs pays for the encoder once. The loop is unchanged: it tokenizes, calls
``student(**tokens).logits``, deep-copies the student for teachers and optimizes
``student.parameters()``; the encoder and its features live in a ``FeatureStore`` that is neither a
parameter nor a submodule and that ``copy.deepcopy`` shares instead of copying.

A feature is a function of the text's token ids alone, bit for bit, on one machine with one set of
library versions: rows are keyed by a digest of their ids (padding removed) and every encoder call
has the shape [ENCODE_ROWS, the text's length bucket]: the text is padded (masked) to the next
multiple of BUCKET above its length, and a short batch is filled by repeating its last row. BLAS and
oneDNN pick their kernels, and so the rounding of every sum, by the shapes they are given: padding
to the longest text of a batch changes a row's output in the last bits (about 5e-7 for MiniLM), and
so does the number of rows (up to 5e-6 between batches of 8 and of 1 or 7 rows on a Xeon with
AVX-512; 1 row against 2 or more for 3-token texts on an AMD EPYC with AVX-512). With the shape
fixed, a row's output depends neither on the other rows nor on its position among them, their
lengths and masks included (measured on both), so a run never depends on what its cache already
held. Buckets rather than exact lengths: texts rarely share a length, and 8-row calls of one
length each cost 2-3x the encoding (0.30x the texts/s of 64-row exact-length calls on AG News,
0.53x on TREC, MiniLM, 1 thread); buckets of 16 give 0.75x and 0.77x. Another CPU or library version
may choose other kernels: the cache entry is keyed by the weights, not the machine, so do not share
one cache directory between machines and expect bit-identical runs.

Token tasks (the task's ``head`` is ``token``, e.g. NER): the head is the same dropout + Linear,
applied to every position, so the model's logits are [B, T, C] at the positions of the task's own
encoding (its pre-split words: the task reads each word's first subword, as it does with a
fine-tuned token classifier). A token feature is the last hidden state at one position of a text,
computed in the same [ENCODE_ROWS, bucket] calls, so it too depends on the text's token ids alone.
The model sees token ids, not the task's word alignment, so every position of a text is kept (its
special tokens and later subwords too), not only the first subwords the task reads: 1.38 rows per
word of CoNLL-2003's train split with MiniLM's tokenizer (1.24 subwords a word, [CLS] and [SEP]).

Cache: one entry of the store (``testbed.CacheEntry``, kind ``features``: ``$TESTBED_CACHE/features``)
per (encoder, pooling, weights fingerprint, FORMAT), holding float32 [hidden] rows by token-id
digest; token features are entries of their own (key ``features = "token"``, TOKEN_FORMAT, no
pooling), their rows keyed by (token-id digest, position: ``testbed cache`` counts the positions as
its variants), so one is never read as the other. New features are written when the student comes
back from an evaluation, when FLUSH_EVERY rows are pending (a token entry's rows are tokens), and
when the model is garbage-collected or the process exits.
``testbed cache`` lists the entries and ``testbed cache clear ENCODER`` removes them.
"""

from __future__ import annotations

import hashlib
import weakref
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from testbed import Backbone, CacheEntry, UserError, hookimpl, store_dir, weights_fingerprint

POOLINGS = ("mean", "cls")
ENCODE_ROWS = 8  # rows of every encoder call (a short batch repeats its last row): a fixed shape, so fixed kernels
BUCKET = 16  # texts are padded (masked) to the next multiple of this: a text's call shape depends on its length alone
FLUSH_EVERY = 16_384  # pending features written without waiting for an evaluation
FORMAT = 3  # 3: [8, length bucket] calls; 2: [8, exact length]; 1: up to 64 rows of one length. Their features differ in the last bits
TOKEN_FORMAT = 1  # token features (one row per position of a text): 1: [8, length bucket] calls, as FORMAT 3

ENCODED = Counter()  # texts run through an encoder in this process, by cache entry name: tests and benchmarks read it


@dataclass(frozen=True)
class FrozenOptions:
    encoder: str = "minilm"  # the backbone whose encoder is frozen: a registered name, local path or hub id
    pooling: str = "mean"  # "mean": mean of the last hidden layer over the text's tokens (what sentence-transformers
    #                         models such as MiniLM were trained for); "cls": the first token's last hidden state.
    #                         Sentence tasks only: a token task's head reads every token's own last hidden state

    def __post_init__(self):
        if self.pooling not in POOLINGS:
            raise ValueError(f"backbone.pooling must be one of {', '.join(map(repr, POOLINGS))}, got {self.pooling!r}")
        if not self.encoder or self.encoder == "frozen":
            raise ValueError(f"backbone.encoder must name another backbone (e.g. 'minilm'), a local path or a hub id, "
                             f"got {self.encoder!r}")


def token_keys(input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> tuple[list[int], list[np.ndarray]]:
    """Each row's token ids without padding, and a 64-bit digest of them (its cache key)."""
    ids = input_ids.cpu().numpy().astype(np.int64, copy=False)
    keep = np.ones(ids.shape, dtype=bool) if attention_mask is None else attention_mask.cpu().numpy().astype(bool)
    rows = [np.ascontiguousarray(row[mask]) for row, mask in zip(ids, keep)]
    keys = [int.from_bytes(hashlib.blake2b(row.tobytes(), digest_size=8).digest(), "little") for row in rows]
    return keys, rows


def bucket_length(tokens: int) -> int:
    """The padded length of a text of ``tokens`` tokens: the next multiple of BUCKET strictly above
    it, so texts of nearby lengths share encoder calls and every row has a masked pad (an all-ones
    mask may send attention down another kernel)."""
    return BUCKET * (tokens // BUCKET + 1)


def fixed_rows(rows: list, count: int) -> list:
    """``rows`` filled to exactly ``count`` by repeating the last one: a batch shape that does not
    depend on how many texts happened to need encoding together."""
    if not 0 < len(rows) <= count:
        raise ValueError(f"fixed_rows: expected 1 to {count} rows, got {len(rows)}")
    return [*rows, *[rows[-1]] * (count - len(rows))]


class FeatureStore:
    """Pooled encoder outputs by token-id digest: in memory, backed by one cache entry on disk.
    ``per_token``: the last hidden state of every position instead (token tasks), by (digest, position)."""

    def __init__(self, encoder: nn.Module, pooling: str | None, name: str, root: Path | None, per_token: bool = False):
        self.encoder, self.per_token = encoder.requires_grad_(False).eval(), per_token
        self.pooling = None if per_token else pooling
        self.hidden = encoder.config.hidden_size
        # features of another format are not bit-identical to these: FORMAT joins the key; token features
        # are another kind of row (a position's state, not a text's pooled one): their own key and format
        if per_token:
            self.key = {"format": TOKEN_FORMAT, "features": "token", "encoder": name, "fingerprint": weights_fingerprint(encoder)}
        else:
            self.key = {"format": FORMAT, "encoder": name, "pooling": pooling, "fingerprint": weights_fingerprint(encoder)}
        self.name, self.root, self.device = name, root, torch.device("cpu")
        self._open()
        self.owner = None  # weakref to the student built on this store; set by FrozenEncoderClassifier

    def _open(self) -> None:
        # A GPU's kernels round otherwise than the CPU's: features encoded there get their own entry
        # (the CPU's key is unchanged, so CPU caches written before devices existed stay valid)
        key = self.key if self.device.type == "cpu" else {**self.key, "device": self.device.type}
        # token features: variant = the token's position in its text
        self.cache = CacheEntry(self.root, key, name=self.name, description="frozen-encoder outputs",
                                columns={"encoder": self.name, "pooling": "per-token" if self.per_token else self.pooling,
                                         "hidden": self.hidden},
                                shape=(self.hidden,), dtype="float32", variants=self.per_token,
                                flush_every=FLUSH_EVERY)  # root None: memory only
        self.entry = self.cache.id

    def to(self, device: torch.device) -> None:
        """Encode on ``device`` from now on (the head's: the loop moves the student)."""
        if device.type != self.device.type:
            self.flush()
            self.device = device
            self._open()
        self.encoder.to(device)

    @property
    def table(self) -> dict[int, np.ndarray]:
        """Features by token-id digest: what the cache entry holds in memory."""
        return self.cache.items

    def __deepcopy__(self, memo):
        return self  # teachers' copies of the model share the encoder and the features

    def features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, device: torch.device | None = None) -> torch.Tensor:
        """Features [B, hidden] of a tokenized batch, on ``device``; the table stays numpy on the CPU.
        A ``per_token`` store: [B, T, hidden], each text's positions (those its mask keeps) in place, 0 at padding."""
        device = torch.device("cpu") if device is None else torch.device(device)
        if device != self.device:
            self.to(device)  # the encoder follows the head (the student), which the loop moved
        keys, rows = token_keys(input_ids, attention_mask)
        table = self.table
        if self.per_token:
            missing = {key: row for key, row in zip(keys, rows)
                       if len(row) and not all((key, p) in table for p in range(len(row)))}
        else:
            missing = {key: row for key, row in zip(keys, rows) if key not in table}
        if missing:
            self._encode(missing, device)
        if not self.per_token:
            return torch.from_numpy(np.stack([table[key] for key in keys])).to(device)
        out = np.zeros((*input_ids.shape, self.hidden), dtype=np.float32)
        keep = np.ones(input_ids.shape, dtype=bool) if attention_mask is None else attention_mask.cpu().numpy().astype(bool)
        for i, (key, row) in enumerate(zip(keys, rows)):
            if len(row):
                out[i, keep[i]] = np.stack([table[key, p] for p in range(len(row))])
        return torch.from_numpy(out).to(device)

    @torch.no_grad()
    def _encode(self, missing: dict[int, np.ndarray], device: torch.device) -> None:
        # Always fp32, even inside a bf16/fp16 run's autocast: the cache is shared by runs of every precision
        autocast_off = torch.autocast(device.type, enabled=False)
        new = {}
        by_bucket = defaultdict(list)
        limit = getattr(self.encoder.config, "max_position_embeddings", None)
        for key, row in missing.items():
            length = bucket_length(len(row)) if limit is None else min(bucket_length(len(row)), limit)
            # a text as long as the encoder allows has no pad, so it never shares a call with padded rows
            by_bucket[length, len(row) == length].append((key, row))
        for (length, _), items in sorted(by_bucket.items()):
            for start in range(0, len(items), ENCODE_ROWS):
                chunk = items[start : start + ENCODE_ROWS]
                rows = fixed_rows([row for _, row in chunk], ENCODE_ROWS)
                ids, mask = torch.zeros(ENCODE_ROWS, length, dtype=torch.long), torch.zeros(ENCODE_ROWS, length, dtype=torch.long)
                for i, row in enumerate(rows):  # padded after the text, masked: every row has at least one pad
                    ids[i, : len(row)], mask[i, : len(row)] = torch.from_numpy(row), 1
                ids, mask = ids.to(device), mask.to(device)
                with autocast_off:
                    hidden = self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
                if self.per_token:  # every position of the text's own tokens; copied, so the call's padding is not kept
                    states = hidden.float().cpu().numpy()
                    for i, (key, row) in enumerate(chunk):
                        own = np.array(states[i, : len(row)])
                        new.update(((key, p), own[p]) for p in range(len(row)))
                    continue
                if self.pooling == "mean":  # over the text's own tokens
                    pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
                else:
                    pooled = hidden[:, 0]
                for (key, _), feature in zip(chunk, pooled.float().cpu().numpy()):  # the filler rows' outputs are dropped
                    new[key] = feature
        self.cache.add(new)
        ENCODED[self.entry] += len(missing)

    def flush(self) -> None:
        """Write the features computed since the last flush. A failed write costs the cache, never the run."""
        self.cache.flush()


class FrozenOutput:
    """What the loop reads from a model call: ``.logits``."""

    def __init__(self, logits: torch.Tensor):
        self.logits = logits


class FrozenEncoderClassifier(nn.Module):
    """dropout(0.1) + Linear(hidden, num_labels) on the store's features; the head is all it trains.
    On a ``per_token`` store (token tasks) the same head on every position: logits [B, T, C]."""

    def __init__(self, store: FeatureStore, num_labels: int):
        super().__init__()
        self.store = store  # a plain attribute: not a submodule, so no parameters and no state_dict entries
        if store.owner is None:
            store.owner = weakref.ref(self)
        self.dropout = nn.Dropout(0.1)
        self.classifier = nn.Linear(store.hidden, num_labels)

    def forward(self, input_ids, attention_mask=None, **ignored) -> FrozenOutput:
        features = self.store.features(input_ids, attention_mask, self.classifier.weight.device)
        return FrozenOutput(self.classifier(self.dropout(features)))

    def train(self, mode: bool = True):
        # The student back from eval mode: an evaluation (``predict``) just ended, so persist what the run
        # computed since the last one. Teachers' copies (MC-dropout passes switch them every step) never
        # write; a `self` teacher without dropout toggles the student itself, so it writes a small shard a step.
        if mode and not self.training and self.store.owner() is self:
            self.store.flush()
        return super().train(mode)


HEADS = ("sequence", "token")  # BackboneContext.head: pooled features per text, or a feature per token


def frozen(options: FrozenOptions, context):
    head_kind = getattr(context, "head", "sequence")
    if head_kind not in HEADS:
        raise UserError(f"backbone 'frozen' builds the heads {', '.join(HEADS)}; the task asked for {head_kind!r}.")
    root = store_dir("features")  # never inside the shared data
    try:  # through the run's registry, so the encoder may come from --plugins-dir; a random `tiny` draws from the run's seed
        model, tokenizer = context.load_backbone(options.encoder)
    except UserError as exc:
        raise UserError(f"backbone.encoder={options.encoder!r}: {exc}") from None
    # a token task: a feature per position (backbone.pooling does not apply), the head on each
    store = FeatureStore(model.base_model, options.pooling, options.encoder, root, per_token=head_kind == "token")
    head = FrozenEncoderClassifier(store, context.num_labels)  # from the torch seed the loop set: same seed, same head
    weakref.finalize(head, store.flush)  # the last features, when the run's model goes away or the process exits
    return head, tokenizer


@hookimpl
def testbed_backbones():
    return [Backbone(name="frozen", summary="a classifier head on cached outputs of a frozen encoder (backbone.encoder; per token "
                     "for token tasks); give it a head-sized train.lr, about 1e-3",
                     factory=frozen, options=FrozenOptions)]
