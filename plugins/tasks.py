"""Tasks: sentence classification and token classification (named-entity recognition).

The dataset's rows choose the task (``testbed.data``): ``text`` + ``label`` rows are ``sentence``,
``tokens`` + ``tags`` rows are ``token``. The loop asks the task for *rows*: teachers' probabilities,
selectors, distances, the supervised loss and the pseudo-label tallies see [N, C] rows, so every
seam works on both tasks unchanged.

``token``: an example's text is its words joined by single spaces. The words (``text.split()``)
go to the tokenizer as pre-split words (a fast tokenizer's ``word_ids``); the first subword of each
word carries the word's tag, its other subwords are not rows (the usual alignment of Hugging
Face's token-classification examples). A row is a word: its logits are those at its first subword,
its label its tag, and a pool row's position is the word's position among all the pool's words, so
selectors keep per-word state (FlexMatch's learning effect counts words). ``backbone.max_length``
truncates: a word whose first subword is cut off is not a row, in the loss or in the metrics (on
CoNLL-2003 with the MiniLM tokenizer, 5 of 20,744 sentences are longer than 128 tokens). The weak and strong
views of a text have the same words (augmentations that keep every word in place); where
truncation cuts them differently, only the words both keep are rows.

Scores of a token task: entity-level micro F1, precision and recall in the strict IOB2 sense
(seqeval, ``mode="strict", scheme=IOB2``: an entity counts when its type and both boundaries
match, and a predicted span that IOB2 does not allow, e.g. starting with I-, is no entity),
per-type precision/recall/F1/support (result.json only), token accuracy (also reported as
``accuracy``) and macro-F1 over tags. Tag names that are not IOB2 (O, B-TYPE, I-TYPE) get token
scores only, and "best on validation" then uses token accuracy.
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import torch

from testbed import BaseTask, Encoded, Task, UserError, accuracy_and_macro_f1, autocast, hookimpl, to_device

IOB2_TAG = re.compile(r"O|[BI]-.+")


class SentenceTask(BaseTask):
    """Sentence classification: one row per text, outputs [B, C]; accuracy and macro-F1."""


class TokenTask(BaseTask):
    """Token classification (NER): one row per word, at its first subword; outputs [B, T, C]; strict
    IOB2 entity F1 (seqeval), per-type scores, token accuracy."""

    head = "token"

    def __init__(self, options=None, context=None):
        super().__init__(options, context)
        counts = np.asarray([len(text.split()) for text in (context.pool_texts if context is not None else ())], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64) if len(counts) else counts  # first word of each text
        self.iob2 = bool(self.label_names) and all(IOB2_TAG.fullmatch(name) for name in self.label_names)
        entity = ("entity_f1", "entity_precision", "entity_recall") if self.iob2 else ()
        self.metrics = ("accuracy", "macro_f1", "token_accuracy", *entity)
        self.primary = "entity_f1" if self.iob2 else "accuracy"

    # ------------------------------------------------------------------ encoding and rows

    def encode(self, tokenizer, texts: list[str], max_length: int) -> Encoded:
        """The words of each text as pre-split words, padded to the longest; ``words`` [B, T] is the
        index of the word each position starts (its first subword), -1 elsewhere."""
        if not getattr(tokenizer, "is_fast", False):
            raise UserError(f"Token classification needs a fast (Rust) tokenizer, for its word ids; {type(tokenizer).__name__} is not one.")
        words = [text.split() for text in texts]
        try:
            encoded = tokenizer(words, is_split_into_words=True, padding="longest", truncation=True, max_length=max_length,
                                return_tensors="pt")
        except (ValueError, AssertionError) as exc:  # e.g. byte-level BPE tokenizers without add_prefix_space
            raise UserError(f"The backbone's tokenizer ({type(tokenizer).__name__}) cannot take pre-split words: {exc}") from None
        starts = torch.full(encoded["input_ids"].shape, -1, dtype=torch.long)
        for i in range(len(texts)):
            previous = None
            for position, word in enumerate(encoded.word_ids(i)):
                if word is not None and word != previous:
                    starts[i, position] = word
                previous = word
        return Encoded(dict(encoded), words=starts)

    @staticmethod
    def _words(inputs) -> torch.Tensor:
        words = getattr(inputs, "words", None)
        if words is None:
            raise ValueError("token-task rows need the inputs its encode() made (an Encoded with words); got plain model inputs")
        return words

    def rows(self, outputs, inputs):
        """[B, T, C] -> [N, C]: the positions that start a word, example by example, word by word."""
        if outputs.dim() != 3:
            raise UserError(f"A token task needs per-token outputs [B, T, C]; the model gave {tuple(outputs.shape)}. The backbone "
                            "must build the head BackboneContext.head asks for ('token': a token classifier).")
        return outputs[self._words(inputs).to(outputs.device) >= 0]

    def batch_rows(self, outputs, batch):
        return self.rows(outputs, batch.inputs)

    def row_words(self, inputs) -> tuple[np.ndarray, np.ndarray]:
        """(the example [N], the word [N]) of every row of ``inputs``, in row order."""
        words = self._words(inputs).cpu()
        starts = words >= 0
        return starts.nonzero()[:, 0].numpy(), words[starts].numpy()

    def labels(self, examples, indices, inputs) -> np.ndarray:
        owners, words = self.row_words(inputs)
        indices = np.asarray(indices)
        if not len(owners):
            return np.zeros(0, dtype=np.int64)
        return np.asarray([examples.tags[indices[b]][w] for b, w in zip(owners.tolist(), words.tolist())], dtype=np.int64)

    def unlabeled_rows(self, indices, weak, strong) -> tuple[np.ndarray, np.ndarray]:
        """Only the words that both views keep are rows (truncation may cut the two differently):
        the others get -1 in both encodings. Row positions in the pool: the word's position among
        all the pool's words."""
        indices = np.asarray(indices)
        for i, (a, b) in enumerate(zip(weak.texts, strong.texts)):
            if len(a.split()) != len(b.split()):
                raise UserError(f"The weak and strong views of pool text {int(indices[i])} have {len(a.split())} and "
                                f"{len(b.split())} words; a token task needs views that keep every word in place.")
        first, second = weak.inputs, strong.inputs
        wa, wb = self._words(first), self._words(second)
        width = int(max(int(wa.max()) if wa.numel() else -1, int(wb.max()) if wb.numel() else -1)) + 1
        common = _present(wa, width) & _present(wb, width)
        first.words, second.words = _keep(wa, common), _keep(wb, common)
        owners, words = self.row_words(first)
        return self.offsets[indices[owners]] + words, owners

    # ------------------------------------------------------------------ predictions and scores

    @torch.no_grad()
    def predict(self, model, tokenizer, texts, max_length, batch_size, precision="fp32") -> np.ndarray:
        """Probabilities of every kept word [N, C], text by text in the order of ``texts``; batches
        texts of similar length together, and brings the rows to the CPU once."""
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        order = np.argsort([len(t) for t in texts], kind="stable")
        batches, counts = [], np.zeros(len(texts), dtype=np.int64)
        for start in range(0, len(texts), batch_size):
            chunk = order[start : start + batch_size]
            inputs = self.encode(tokenizer, [texts[i] for i in chunk], max_length)
            counts[chunk] = (inputs.words >= 0).sum(1).numpy()
            inputs = to_device(inputs, device)
            with autocast(device, precision):
                logits = model(**inputs).logits
            batches.append(self.rows(logits.float().softmax(-1), inputs))
        model.train(was_training)
        if not batches:
            return np.zeros((0, len(self.label_names)), dtype=np.float32)
        rows = torch.cat(batches).cpu().numpy()  # in batch order: text order[0]'s words, then order[1]'s, ...
        starts = np.zeros(len(texts), dtype=np.int64)
        starts[order] = np.concatenate([[0], np.cumsum(counts[order])[:-1]])
        return rows[np.concatenate([np.arange(s, s + c) for s, c in zip(starts, counts)])].astype(np.float32)

    def kept_words(self, tokenizer, texts, max_length) -> list[np.ndarray]:
        """The words of each text that are rows after truncation (their indices)."""
        out = []
        for start in range(0, len(texts), 256):
            inputs = self.encode(tokenizer, texts[start : start + 256], max_length)
            out.extend(row[row >= 0].numpy() for row in inputs.words)
        return out

    def gold(self, examples, tokenizer, max_length) -> np.ndarray:
        kept = self.kept_words(tokenizer, examples.texts, max_length)
        parts = [tags[words] for tags, words in zip(examples.tags, kept)]
        return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, dtype=np.int64)

    def score(self, probs, examples, tokenizer, max_length) -> dict:
        kept = self.kept_words(tokenizer, examples.texts, max_length)
        gold = [tags[words] for tags, words in zip(examples.tags, kept)]
        lengths = [len(g) for g in gold]
        if sum(lengths) != len(probs):
            raise ValueError(f"{len(probs)} predicted rows for {sum(lengths)} kept words of {len(examples)} texts")
        flat = np.concatenate(gold) if gold else np.zeros(0, dtype=np.int64)
        accuracy, macro_f1 = accuracy_and_macro_f1(probs, flat, len(self.label_names))
        scores = {"accuracy": accuracy, "macro_f1": macro_f1, "token_accuracy": accuracy}
        if self.iob2:
            predicted = np.split(probs.argmax(-1), np.cumsum(lengths)[:-1]) if lengths else []
            scores.update(entity_scores(gold, predicted, self.label_names))
        return scores


def _present(words: torch.Tensor, width: int) -> torch.Tensor:
    """[B, T] word starts -> [B, width + 1] bool: which words of each example are there (last column: none)."""
    present = torch.zeros(words.shape[0], width + 1, dtype=torch.bool, device=words.device)
    present.scatter_(1, torch.where(words >= 0, words, width), True)
    present[:, width] = False
    return present


def _keep(words: torch.Tensor, common: torch.Tensor) -> torch.Tensor:
    """``words`` with -1 where a word is not in ``common`` [B, width + 1]."""
    width = common.shape[1] - 1
    kept = common.gather(1, torch.where(words >= 0, words, width))
    return torch.where(kept, words, torch.full_like(words, -1))


def entity_scores(gold: list[np.ndarray], predicted: list[np.ndarray], label_names) -> dict:
    """Strict IOB2 entity scores (seqeval) of tag-id sequences: micro F1, precision and recall, and
    ``entity_per_type`` {type: {precision, recall, f1, support}}."""
    from seqeval.metrics import classification_report, f1_score, precision_score, recall_score
    from seqeval.scheme import IOB2

    names = list(label_names)
    y_true = [[names[t] for t in sentence] for sentence in gold]
    y_pred = [[names[t] for t in sentence] for sentence in predicted]
    strict = {"mode": "strict", "scheme": IOB2, "zero_division": 0}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no entity at all in gold or predictions: seqeval warns, the score is 0
        report = classification_report(y_true, y_pred, output_dict=True, **strict)
        scores = {"entity_f1": float(f1_score(y_true, y_pred, **strict)),
                  "entity_precision": float(precision_score(y_true, y_pred, **strict)),
                  "entity_recall": float(recall_score(y_true, y_pred, **strict))}
    per_type = {kind: {"precision": float(row["precision"]), "recall": float(row["recall"]), "f1": float(row["f1-score"]),
                       "support": int(row["support"])}
                for kind, row in sorted(report.items()) if not kind.endswith(" avg")}
    return {**scores, "entity_per_type": per_type}


@hookimpl
def testbed_tasks():
    return [
        Task(name="sentence", summary="sentence classification: a label per text; accuracy, macro-F1", factory=SentenceTask),
        Task(name="token", summary="token classification (NER): a tag per word, first subword labelled; strict IOB2 entity F1 "
             "(seqeval), token accuracy", factory=TokenTask, reads="tokens", aligned_view={"name": "word_mask"}),
    ]
