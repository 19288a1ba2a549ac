"""Augmentations that run a language model: contextual substitution with a masked LM
(``mlm_substitute``) and paraphrase with a causal LM (``paraphrase``).

Both take any Hugging Face model by local path or hub id, load it on first use (a run whose
views are all cached never loads it), run a batch at a time, and sample each text with its own
``torch.Generator`` seeded from the text's seed, so the random draws of a view do not depend on
the rest of the batch. Loading and sampling never touch torch's global random state, so a run gives
the same numbers whether its views were computed or read from the cache.

The model's logits for a text do depend on its batch in the last bits (the padded length and the
number of rows pick BLAS kernels; see plugins/frozen.py). A sampled token changes only where two
candidates' perturbed scores tie within ~1e-6, so two runs computing the same view in different
batches agree almost always, not always. Not fixed as the frozen encoder is (fixed-shape calls):
texts rarely share a length, so fixed-row batches would multiply the model's work several times.
The view cache keeps the first computation and every later run reads it.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import re
from dataclasses import dataclass

import numpy as np

from testbed import Augmentation, Augmenter, UserError, hookimpl
from testbed_plugins._text import check_at_least, check_probability, path_fingerprint, uniforms
from testbed_plugins.token_augmentations import replace_spans

WORD = re.compile(r"\S+")
PLACEHOLDER = re.compile(r"^(\[[^\]]*\]|<[^>]*>)$")  # [unused7], <extra_id_0>, ...: never a substitute


def in_batches(batch, size: int):
    """augment(texts, seeds) that runs ``batch`` on chunks of ``size`` texts: one model forward each."""
    def augment(texts, seeds):
        out = []
        for start in range(0, len(texts), size):
            out.extend(batch(texts[start : start + size], seeds[start : start + size]))
        return out

    return augment


@contextlib.contextmanager
def quiet_and_isolated():
    """No Hugging Face chatter, and torch's global random state as it was (random heads)."""
    import torch
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        with torch.random.fork_rng(devices=[]):
            yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def check_model_name(model: str, what: str) -> None:
    """Fail at set-up, not mid-run, when the model's config cannot be found."""
    from transformers import AutoConfig

    if not model:
        raise UserError(f"{what}: set the model option to a local model directory or a Hugging Face hub id.")
    try:
        with quiet_and_isolated():
            AutoConfig.from_pretrained(model)
    except (OSError, ValueError) as exc:
        raise UserError(f"{what}: could not find model {model!r}: {str(exc).strip()[:300]}. Use a local directory, "
                        "or go online (HF_HUB_OFFLINE=0) for a hub id.") from None


@functools.lru_cache(maxsize=2)
def load_model(model: str, kind: str):
    import transformers

    auto = {"masked": transformers.AutoModelForMaskedLM, "causal": transformers.AutoModelForCausalLM}[kind]
    try:
        with quiet_and_isolated():
            tokenizer = transformers.AutoTokenizer.from_pretrained(model)
            network = auto.from_pretrained(model)
    except (OSError, ValueError) as exc:
        raise UserError(f"Could not load {kind} language model {model!r}: {str(exc).strip()[:300]}.") from None
    network.eval()
    return network, tokenizer


def gumbel_pick(scores, generator):
    """argmax(scores + Gumbel noise) over the last axis: a sample from softmax(scores)."""
    import torch

    u = torch.rand(scores.shape, generator=generator, dtype=torch.float64).clamp_(1e-12, 1 - 1e-12)
    return (scores.double() - torch.log(-torch.log(u))).argmax(-1)


def torch_seed(seed) -> int:
    return int(seed) & 0x7FFFFFFFFFFFFFFF


# --------------------------------------------------------------------------- masked LM


@dataclass(frozen=True)
class MlmOptions:
    model: str = "distilbert-base-uncased"  # a masked LM: local directory or hub id
    p: float = 0.15  # each word is replaced with this probability (at least one; one-word texts stay as they are)
    top_k: int = 50  # sample among the k likeliest tokens (0 = the whole vocabulary)
    temperature: float = 1.0
    max_length: int = 256  # tokens the model sees; words past it stay as they are
    batch_size: int = 32  # texts per forward pass

    def __post_init__(self):
        check_probability(self, "p")
        check_at_least(self, "top_k", 0)
        check_at_least(self, "max_length", 8)
        check_at_least(self, "batch_size", 1)
        if self.temperature <= 0:
            raise ValueError(f"augmentation option temperature must be positive, got {self.temperature}")


def allowed_tokens(tokenizer, size: int):
    """Whole-word, non-special tokens: a substitute for a word is one token that starts a word."""
    import torch

    allowed = torch.zeros(size, dtype=torch.bool)
    vocab = tokenizer.convert_ids_to_tokens(list(range(min(size, len(tokenizer)))))
    allowed[: len(vocab)] = torch.tensor([bool(t) and not t.startswith("##") and not PLACEHOLDER.match(t) for t in vocab])
    allowed[[i for i in tokenizer.all_special_ids if i < size]] = False
    return allowed


def mask_position_logits(network, inputs, positions):
    """Logits at the masked positions only, [M, V]: the output layer sees just those rows
    (a [B, L, V] tensor for a 30k vocabulary would be large); any model where that trick does
    not apply gets its full logits gathered instead."""
    output_layer = network.get_output_embeddings()
    if output_layer is not None:
        hook = output_layer.register_forward_pre_hook(lambda module, args: (args[0][positions],))
        try:
            logits = network(**inputs).logits
            if logits.dim() == 2 and logits.shape[0] == int(positions.sum()):
                return logits
        except (RuntimeError, IndexError, ValueError):
            pass
        finally:
            hook.remove()
    return network(**inputs).logits[positions]


def with_masks(text: str, spans, mask: str) -> tuple[str, dict[int, int]]:
    """``text`` with each span replaced by ``mask``, and where each mask now starts -> its span's index."""
    starts, shift = {}, 0
    for k, (start, end) in enumerate(spans):
        starts[start + shift] = k
        shift += len(mask) - (end - start)
    return replace_spans(text, spans, mask), starts


def mlm_substitute(options: MlmOptions, context):
    o = options
    check_model_name(o.model, "mlm_substitute")
    state: dict = {}

    def batch(texts, seeds):
        import torch

        if not state:
            state["network"], state["tokenizer"] = load_model(o.model, "masked")
        network, tokenizer = state["network"], state["tokenizer"]
        if tokenizer.mask_token is None or not tokenizer.is_fast:
            raise UserError(f"mlm_substitute: the tokenizer of {o.model!r} needs a mask token and offsets (a fast "
                            "tokenizer); is it a masked LM?")
        spans = [[m.span() for m in WORD.finditer(t)] for t in texts]
        flat, starts = uniforms(seeds, [len(s) for s in spans], salt=3)
        chosen, masked, inserted = [], [], []
        for text, words, start in zip(texts, spans, starts.tolist()):
            u = np.asarray(flat[start : start + len(words)])
            pick = np.flatnonzero(u < o.p) if len(words) >= 2 else []  # one word: nothing left to give context
            if len(words) >= 2 and not len(pick):
                pick = np.array([int(u.argmin())])
            chosen.append([words[k] for k in pick])
            masked_text, mask_starts = with_masks(text, chosen[-1], tokenizer.mask_token)
            masked.append(masked_text)
            inserted.append(mask_starts)
        todo = [i for i, c in enumerate(chosen) if c]
        out = list(texts)
        if not todo:
            return out
        inputs = tokenizer([masked[i] for i in todo], truncation=True, max_length=o.max_length, padding=True,
                           return_offsets_mapping=True, return_tensors="pt")
        offsets = inputs.pop("offset_mapping")[..., 0].tolist()
        # our masks only (a text may already hold the mask token); masks cut off by max_length are absent
        mask_id = tokenizer.mask_token_id
        slot = [[inserted[i].get(start, -1) if token == mask_id else -1 for token, start in zip(row, offs)]
                for i, row, offs in zip(todo, inputs["input_ids"].tolist(), offsets)]
        positions = torch.tensor(slot) >= 0
        with torch.no_grad(), quiet_and_isolated():
            logits = mask_position_logits(network, dict(inputs), positions)
        if "allowed" not in state:
            state["allowed"] = allowed_tokens(tokenizer, logits.shape[-1])
        scores = (logits.float() / o.temperature).masked_fill(~state["allowed"], float("-inf"))
        if o.top_k:  # per row, so the same for a text whatever else is in the batch
            scores, candidates = scores.topk(min(o.top_k, scores.shape[-1]), dim=-1)
        row = 0
        for b, i in enumerate(todo):
            which = [k for k in slot[b] if k >= 0]
            if not which:
                continue
            rows = slice(row, row + len(which))
            row += len(which)
            ids = gumbel_pick(scores[rows], torch.Generator().manual_seed(torch_seed(seeds[i])))
            if o.top_k:
                ids = candidates[rows].gather(1, ids[:, None]).squeeze(1)
            words = [tokenizer.convert_tokens_to_string([t]).strip() for t in tokenizer.convert_ids_to_tokens(ids.tolist())]
            spans_i = [chosen[i][k] for k in which]
            new = [w or texts[i][s:e] for w, (s, e) in zip(words, spans_i)]
            out[i] = replace_spans(texts[i], spans_i, new)
        return out

    # a chosen word is replaced by one vocabulary token, stripped of spaces: every word stays in place (token tasks)
    return Augmenter(in_batches(batch, o.batch_size), fingerprint=path_fingerprint(o.model), keeps_words=True)


# --------------------------------------------------------------------------- paraphrase


@dataclass(frozen=True)
class ParaphraseOptions:
    model: str = "Qwen/Qwen2.5-0.5B-Instruct"  # a causal LM: local directory or hub id
    prompt: str = "Paraphrase the following text, keeping its meaning.\nText: {text}\nParaphrase:"
    chat: bool = True  # wrap the prompt in the tokenizer's chat template when it has one
    max_new_tokens: int = 64
    temperature: float = 0.8  # 0 = greedy
    top_p: float = 0.95  # nucleus sampling
    max_input_tokens: int = 256  # longer texts pass through unchanged (a paraphrase of a cut text loses content)
    stop: str = "\n"  # the paraphrase ends at the first occurrence ("" = only at end of sequence)
    batch_size: int = 16

    def __post_init__(self):
        if "{text}" not in self.prompt:
            raise ValueError("augmentation option prompt must contain {text}")
        check_probability(self, "top_p")
        for key in ("max_new_tokens", "max_input_tokens", "batch_size"):
            check_at_least(self, key, 1)
        check_at_least(self, "temperature", 0.0)


def sample_next(logits, generators, temperature: float, top_p: float):
    """One token per row: greedy at temperature 0, else nucleus sampling with the row's generator."""
    import torch

    if temperature == 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.double() / temperature, -1)
    sorted_probs, order = probs.sort(dim=-1, descending=True, stable=True)
    keep = (sorted_probs.cumsum(-1) - sorted_probs) < top_p  # the likeliest token always stays
    sorted_probs = sorted_probs * keep
    u = torch.stack([torch.rand((), generator=g, dtype=torch.float64) for g in generators]) * sorted_probs.sum(-1)
    pick = (sorted_probs.cumsum(-1) < u[:, None]).sum(-1).clamp(max=probs.shape[-1] - 1)
    return order.gather(1, pick[:, None]).squeeze(1)


def paraphrase(options: ParaphraseOptions, context):
    o = options
    check_model_name(o.model, "paraphrase")
    state: dict = {}

    def prompt_for(tokenizer, text: str) -> str:
        prompt = o.prompt.replace("{text}", text)
        if o.chat and getattr(tokenizer, "chat_template", None):
            return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                                 add_generation_prompt=True)
        return prompt

    def batch(texts, seeds):
        import torch

        if not state:
            network, tokenizer = load_model(o.model, "causal")
            tokenizer.padding_side = "left"
            if tokenizer.pad_token is None:
                tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
            state.update(network=network, tokenizer=tokenizer)
        network, tokenizer = state["network"], state["tokenizer"]
        out = list(texts)
        lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]]
        todo = [i for i, (t, n) in enumerate(zip(texts, lengths)) if t.strip() and n <= o.max_input_tokens]
        if not todo:
            return out
        inputs = tokenizer([prompt_for(tokenizer, texts[i]) for i in todo], return_tensors="pt", padding=True,
                           add_special_tokens=not o.chat or not getattr(tokenizer, "chat_template", None))
        generators = [torch.Generator().manual_seed(torch_seed(seeds[i])) for i in todo]
        eos = torch.tensor(sorted({t for t in (tokenizer.eos_token_id, network.config.eos_token_id) if isinstance(t, int)}))
        ids, attention = inputs["input_ids"], inputs["attention_mask"]
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        done = torch.zeros(len(todo), dtype=torch.bool)
        new_tokens = []
        cache_key = "cache" if "cache" in inspect.signature(network.forward).parameters else "past_key_values"
        with torch.no_grad(), quiet_and_isolated():
            result = network(input_ids=ids, attention_mask=attention, position_ids=positions, use_cache=True)
            for _ in range(o.max_new_tokens):
                token = sample_next(result.logits[:, -1, :], generators, o.temperature, o.top_p)
                token = torch.where(done, torch.full_like(token, tokenizer.pad_token_id or 0), token)
                new_tokens.append(token)
                done |= torch.isin(token, eos)
                if bool(done.all()):
                    break
                attention = torch.cat([attention, torch.ones_like(attention[:, :1])], 1)
                positions = positions[:, -1:] + 1
                result = network(input_ids=token[:, None], attention_mask=attention, position_ids=positions,
                                 use_cache=True, **{cache_key: result[cache_key]})
        generated = torch.stack(new_tokens, 1).tolist()
        for row, i in enumerate(todo):
            tokens = generated[row]
            cut = next((k for k, t in enumerate(tokens) if t in set(eos.tolist())), len(tokens))
            text = tokenizer.decode(tokens[:cut], skip_special_tokens=True).strip()
            if o.stop and o.stop in text:
                text = text.split(o.stop, 1)[0].strip()
            out[i] = text or texts[i]  # nothing generated: the original text
        return out

    return Augmenter(in_batches(batch, o.batch_size), fingerprint=path_fingerprint(o.model))


@hookimpl
def testbed_augmentations():
    return [
        Augmentation(name="mlm_substitute", summary="words replaced by a masked LM's samples in context (one forward pass "
                     "per batch; any local or hub MLM)", factory=mlm_substitute, options=MlmOptions, keeps_words=True),
        Augmentation(name="paraphrase", summary="a causal LM's sampled paraphrase (any local or hub model; batched, "
                     "seeded per text)", factory=paraphrase, options=ParaphraseOptions),
    ]
