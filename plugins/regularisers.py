"""Regularisers: batch-level loss terms added to the objective, loss += regulariser.loss(batch).

- ``none``: nothing (the default; a run without a regulariser computes exactly what it did before the seam).
- ``saf``: FreeMatch's self-adaptive fairness term (Wang et al. 2023), on the FreeMatch selector's EMAs.
- ``entropy``: entropy minimisation (Grandvalet & Bengio 2005) on the unlabeled batch.
- ``mlm``: a masked-language-model loss on the unlabeled texts, trained jointly with the classifier on
  the shared encoder (the seed's "joint learning"), with a decoder tied to the input embeddings.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from testbed import BaseRegulariser, Regulariser, UserError, hookimpl


def _check_weight(weight: float) -> None:
    if weight < 0:
        raise ValueError(f"regulariser.weight must be 0 or more, got {weight}")


class NoRegulariser(BaseRegulariser):
    """Adds nothing: the loop's loss, optimizer and numbers are those of a run without the seam."""

    def loss(self, batch):
        return None


# --------------------------------------------------------------------------- FreeMatch's self-adaptive fairness


@dataclass(frozen=True)
class SafOptions:
    # λ_f: USB's ent_loss_ratio in its NLP FreeMatch configs, 0.001 in every one of
    # config/usb_nlp/freematch/*.yaml (e.g. freematch_ag_news_40_0.yaml, freematch_yelp_review_250_0.yaml);
    # the code's own default (freematch.py, --ent_loss_ratio) is 0.01, the vision setting
    weight: float = 0.001

    def __post_init__(self):
        _check_weight(self.weight)


def replace_inf_to_zero(values):
    """1/0 -> 0, as USB's helper of the same name: a class absent from a histogram gets no weight."""
    return torch.where(torch.isinf(values), torch.zeros_like(values), values)


def self_adaptive_fairness(mask, logits_s, p_model, label_hist):
    """FreeMatch's L_f on the unlabeled examples ``mask`` selects, as USB computes it
    (microsoft/Semi-supervised-learning, semilearn/algorithms/freematch/freematch.py, ``entropy_loss``;
    later versions moved it to freematch/utils.py):

        p         = softmax(logits_s[mask])                                     (student, strong view)
        hist_s    = histogram of argmax p, normalised to sum 1
        mod_p     = SumNorm(p_model · inf→0(1 / label_hist))                    (no gradient)
        mod_mean  = SumNorm(mean_b p · inf→0(1 / hist_s))
        L_f       = Σ_c mod_p(c) · log(mod_mean(c) + 1e-12)

    None when ``mask`` selects nothing (USB then adds 0)."""
    mask = mask.bool()
    if not bool(mask.any()):
        return None
    logits_s = logits_s[mask]
    prob_s = logits_s.softmax(-1)
    hist_s = torch.bincount(prob_s.argmax(-1), minlength=logits_s.shape[-1]).to(logits_s.dtype)
    hist_s = hist_s / hist_s.sum()
    p_model = p_model.reshape(1, -1).to(logits_s.dtype)
    label_hist = label_hist.reshape(1, -1).to(logits_s.dtype)
    mod_prob_model = p_model * replace_inf_to_zero(1 / label_hist).detach()
    mod_prob_model = mod_prob_model / mod_prob_model.sum(-1, keepdim=True)
    mod_mean_prob_s = prob_s.mean(0, keepdim=True) * replace_inf_to_zero(1 / hist_s).detach()
    mod_mean_prob_s = mod_mean_prob_s / mod_mean_prob_s.sum(-1, keepdim=True)
    return (mod_prob_model * torch.log(mod_mean_prob_s + 1e-12)).sum(-1).mean()


class SelfAdaptiveFairness(BaseRegulariser):
    """FreeMatch's self-adaptive fairness (Wang et al. 2023, ICLR), weight λ_f: ``weight · L_f``
    (``self_adaptive_fairness``) over the unlabeled examples the selector kept (weight > 0), the
    student's probabilities on the strong view against the selector's EMAs p̃_t (``p_model``) and h̃_t
    (``label_hist``), read from the run's FreeMatch selector at every step. It encourages the student
    to spread its predictions over the classes as the EMAs say the teacher does, instead of
    collapsing onto a few. 0 when the selector kept nothing; nothing at a step without an unlabeled
    batch."""

    def __init__(self, options: SafOptions, context):
        selector = context.selector
        if not (hasattr(selector, "p_model") and hasattr(selector, "label_hist")):
            raise UserError(f"regulariser 'saf' (FreeMatch's self-adaptive fairness) reads the FreeMatch selector's EMAs "
                            f"p_model and label_hist, which this run's selector ({type(selector).__name__}) does not keep. "
                            "Set selector.name=freematch (or method=freematch), or choose another regulariser.")
        self.weight = options.weight

    def loss(self, batch):
        if batch.unlabeled_logits is None:
            return None
        logits = batch.unlabeled_logits.float()
        term = self_adaptive_fairness(batch.selection.weights > 0, logits, batch.selector.p_model, batch.selector.label_hist)
        return logits.new_zeros(()) if term is None else self.weight * term


# --------------------------------------------------------------------------- entropy minimisation


@dataclass(frozen=True)
class EntropyOptions:
    # λ: Grandvalet & Bengio chose it by validation; 0.06 is the entropy-minimisation weight USB uses beside VAT
    # (semilearn/algorithms/vat/vat.py, --ent_loss_ratio 0.06), which its NLP configs do not override
    # (config/usb_nlp/vat/*.yaml)
    weight: float = 0.06

    def __post_init__(self):
        _check_weight(self.weight)


class EntropyMinimisation(BaseRegulariser):
    """Entropy minimisation (Grandvalet & Bengio 2005, NeurIPS): ``weight · mean_b H(softmax(z_b))``
    with H(p) = -Σ_c p_c log p_c, over every example of the unlabeled batch (strong view; no mask),
    pushing the decision boundary away from the unlabeled data. Nothing at a step without an
    unlabeled batch."""

    def __init__(self, options: EntropyOptions, context):
        self.weight = options.weight

    def loss(self, batch):
        if batch.unlabeled_logits is None:
            return None
        logits = batch.unlabeled_logits.float()
        entropy = -(logits.softmax(-1) * logits.log_softmax(-1)).sum(-1)
        return self.weight * entropy.mean()


# --------------------------------------------------------------------------- joint masked-language modelling


@dataclass(frozen=True)
class MlmOptions:
    # λ_mlm: no published value for this joint setting. The MLM loss starts near ln(vocabulary) (~10 for
    # BERT's 30,522 WordPieces) against ~ln(C) for the classifier; 0.1 brings it to the classifier loss's scale
    weight: float = 0.1
    probability: float = 0.15  # share of the eligible (non-special, non-pad) tokens masked, as BERT

    def __post_init__(self):
        _check_weight(self.weight)
        if not 0 < self.probability < 1:
            raise ValueError(f"regulariser.probability must be in (0, 1), got {self.probability}")


def token_encoder(student):
    """The student's token-level encoder (a Hugging Face model's ``base_model``: BertModel under a
    BertForSequenceClassification; under a LoRA/peft wrapper, that of the wrapped model), or None."""
    model = student.get_base_model() if hasattr(student, "get_base_model") else student
    encoder = getattr(model, "base_model", None)
    if not isinstance(encoder, nn.Module) or encoder is model or not hasattr(model, "get_input_embeddings"):
        return None, None
    return model, encoder


def mask_tokens(input_ids, eligible, probability: float, mask_id: int, vocab_size: int, generator: torch.Generator):
    """BERT's masking: each eligible token is chosen with ``probability``; a chosen token becomes
    ``mask_id`` (80%), a random token (10%) or stays (10%). Random numbers come from ``generator``
    on the CPU (the same masks on every device). -> (masked ids, labels: the original id at chosen
    positions, -100 elsewhere)."""
    shape = tuple(input_ids.shape)
    chosen = (torch.rand(shape, generator=generator) < probability).to(input_ids.device) & eligible
    replace = torch.rand(shape, generator=generator).to(input_ids.device)
    random_ids = torch.randint(vocab_size, shape, generator=generator).to(input_ids.device, input_ids.dtype)
    masked = torch.where(chosen & (replace < 0.8), torch.full_like(input_ids, mask_id), input_ids)
    masked = torch.where(chosen & (replace >= 0.8) & (replace < 0.9), random_ids, masked)
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, -100))
    return masked, labels


class MaskedLanguageModel(BaseRegulariser):
    """Joint masked-language modelling on the unlabeled texts (the weak view), on the student's own
    encoder: ``weight · CE(decoder(encoder(masked ids))[chosen], original ids)``, the mean over the
    chosen positions of the batch. Masking as BERT (Devlin et al. 2019): ``probability`` (15%) of the
    non-special, non-pad tokens, 80% [MASK] / 10% random / 10% kept, drawn from a private generator
    seeded from the run's seed (so the run's own random stream is untouched; it is checkpointed).

    The decoder is BERT's MLM head: dense + GELU + LayerNorm, then the input embeddings (tied, as
    the student's) plus a bias; the transform and the bias are the regulariser's own parameters
    (``parameters()``), optimized beside the student. The student needs a fine-tuned token-level
    encoder (a Hugging Face backbone: tiny, minilm, any encoder by path or hub id) and a tokenizer
    with a mask token. Stats: ``mask_rate`` (masked share of eligible tokens) and ``accuracy`` (of
    the decoder at the masked positions) since the last evaluation."""

    def __init__(self, options: MlmOptions, context):
        self.weight, self.probability = options.weight, options.probability
        self.model, self.encoder = token_encoder(context.student)
        if self.encoder is None:
            raise UserError(f"regulariser 'mlm' trains the student's token-level encoder, and this backbone "
                            f"({type(context.student).__name__}) has none that trains (the 'frozen' backbone's encoder is fixed). "
                            "mlm needs a fine-tuned backbone: backbone.name=tiny, minilm or a Hugging Face encoder.")
        tokenizer = context.tokenizer
        if getattr(tokenizer, "mask_token_id", None) is None:
            raise UserError("regulariser 'mlm' needs a tokenizer with a mask token (a BERT-style encoder's, e.g. backbone.name=minilm); "
                            f"this backbone's tokenizer ({type(tokenizer).__name__}) has none.")
        self.tokenize, self.mask_id = context.tokenize, tokenizer.mask_token_id
        self.special = torch.tensor(sorted(set(tokenizer.all_special_ids)), dtype=torch.long, device=context.device)
        embeddings = self.model.get_input_embeddings().weight  # [V, E]
        self.vocab_size, width = embeddings.shape
        hidden = self.model.config.hidden_size
        seeds = np.random.SeedSequence([context.seed, 0x6D6C6D]).generate_state(2)  # "mlm": apart from the run's streams
        init = torch.Generator().manual_seed(int(seeds[0]))
        with torch.random.fork_rng(devices=[]):  # nn.Linear's own initialisation would draw from the run's stream
            self.transform = nn.Sequential(nn.Linear(hidden, width), nn.GELU(), nn.LayerNorm(width, eps=1e-12))
        with torch.no_grad():  # BERT's initialisation (normal, std 0.02), from the private generator
            self.transform[0].weight.copy_(torch.randn(width, hidden, generator=init) * 0.02)
            self.transform[0].bias.zero_()
        self.transform.to(context.device)
        self.bias = nn.Parameter(torch.zeros(self.vocab_size, device=context.device))
        self.generator = torch.Generator().manual_seed(int(seeds[1]))
        self.eligible = self.masked = self.correct = 0

    def parameters(self):
        return [*self.transform.parameters(), self.bias]

    def loss(self, batch):
        if not batch.weak_texts:
            return None
        inputs = dict(self.tokenize(batch.weak_texts))
        ids = inputs["input_ids"]
        eligible = ~torch.isin(ids, self.special)
        if "attention_mask" in inputs:
            eligible &= inputs["attention_mask"].bool()
        inputs["input_ids"], labels = mask_tokens(ids, eligible, self.probability, self.mask_id, self.vocab_size, self.generator)
        chosen = labels != -100
        self.eligible += int(eligible.sum())
        self.masked += int(chosen.sum())
        if not bool(chosen.any()):
            return None
        hidden = self.encoder(**inputs).last_hidden_state[chosen]  # [M, H]: the masked positions only
        logits = self.transform(hidden) @ self.model.get_input_embeddings().weight.T + self.bias
        self.correct += int((logits.detach().argmax(-1) == labels[chosen]).sum())
        return self.weight * F.cross_entropy(logits.float(), labels[chosen])

    def stats(self):
        out = {"mask_rate": self.masked / self.eligible if self.eligible else None,
               "accuracy": self.correct / self.masked if self.masked else None}
        self.eligible = self.masked = self.correct = 0  # per evaluation, as the loop's tallies
        return out

    def state_dict(self):
        return {"transform": self.transform.state_dict(), "bias": self.bias.detach().clone(), "rng": self.generator.get_state(),
                "counts": [self.eligible, self.masked, self.correct]}

    def load_state_dict(self, state):
        self.transform.load_state_dict(state["transform"])
        with torch.no_grad():
            self.bias.copy_(state["bias"])
        self.generator.set_state(state["rng"])
        self.eligible, self.masked, self.correct = (int(v) for v in state["counts"])


@hookimpl
def testbed_regularisers():
    return [
        Regulariser(name="none", summary="no extra loss term", factory=lambda options, context: NoRegulariser()),
        Regulariser(name="saf", summary="FreeMatch self-adaptive fairness on the FreeMatch selector's EMAs (USB's entropy_loss)",
                    factory=SelfAdaptiveFairness, options=SafOptions),
        Regulariser(name="entropy", summary="entropy minimisation of the student on the unlabeled batch (Grandvalet & Bengio 2005)",
                    factory=EntropyMinimisation, options=EntropyOptions),
        Regulariser(name="mlm", summary="joint masked-language modelling of the unlabeled texts on the student's encoder, tied decoder",
                    factory=MaskedLanguageModel, options=MlmOptions),
    ]
