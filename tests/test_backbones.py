"""The backbones: a Hugging Face model from a local directory, and a missing one; decoders (last-token
pooling, padding), LoRA adapters through peft, gradient checkpointing."""

import re

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from conftest import FAST, read_jsonl
from testbed import BackboneContext, UserError
from testbed.cli import main
from testbed.config import parse_overrides, resolve
from testbed.loop import backbone_context, prepare, train


def test_backbone_from_a_local_model_directory(tmp_path, registry):
    tiny = registry.get("backbone", "tiny")
    model, tokenizer = tiny.factory(tiny.options(layers=1, hidden=32, heads=2, intermediate=64), BackboneContext(6, None))
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")

    args = [a for a in FAST if not a.startswith("backbone.")] + [f"backbone.name={tmp_path / 'model'}", "backbone.max_length=32"]
    result = CliRunner().invoke(main, ["run", *args, "--out", str(tmp_path / "runs"), "--quiet"])
    assert result.exit_code == 0, result.output
    (run_dir,) = (p for p in (tmp_path / "runs").iterdir() if not p.name.startswith("."))  # .locks/ beside it
    config = (run_dir / "config.json").read_text()
    assert '"name": "huggingface"' in config and str(tmp_path / "model") in config


def test_missing_local_model_is_one_clear_error(tmp_path):
    args = [a for a in FAST if not a.startswith("backbone.")]
    result = CliRunner().invoke(main, ["run", *args, f"backbone.name={tmp_path}/nope/model", "--out", str(tmp_path / "runs")])
    assert result.exit_code != 0
    assert f"Error: Backbone path '{tmp_path}/nope/model' not found" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "runs").exists()


# --------------------------------------------------------------------------- decoders and LoRA

# FAST with the tiny-decoder backbone: the same sizes (1 layer, 32 hidden, 2 heads), a Llama
DECODER = [*(a for a in FAST if not a.startswith("backbone.name")), "backbone.name=tiny-decoder"]
TEXTS = ["a short one", "a much longer text, with several words and some punctuation in it!", "x"]


def build(registry, *overrides: str, num_labels: int = 3):
    """(model, tokenizer) of the backbone the overrides resolve to, as a run builds it."""
    choice = resolve(parse_overrides(list(overrides)), registry).choices["backbone"]
    torch.manual_seed(0)
    return choice.record.factory(choice.options, backbone_context(registry, num_labels))


def test_tiny_decoder_runs_fixmatch_end_to_end(tmp_path):
    result = CliRunner().invoke(main, ["run", *DECODER, "method=fixmatch", "selector.threshold=0.0", "--out", str(tmp_path), "--quiet"])
    assert result.exit_code == 0, result.output
    (run_dir,) = (p for p in tmp_path.iterdir() if not p.name.startswith("."))
    assert '"name": "tiny-decoder"' in (run_dir / "config.json").read_text()
    metrics = read_jsonl(run_dir / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [3, 6] and all(m["mask_rate"] == 1.0 for m in metrics)


def gpt2_without_a_pad_token(path):
    """A local GPT-2 directory (random, 1 layer) with a word-level tokenizer that, like GPT-2's, has
    an end-of-text token and no pad token."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2ForSequenceClassification, PreTrainedTokenizerFast

    words = sorted({w for text in TEXTS for w in re.findall(r"\w+|[^\w\s]", text)})
    vocab = {w: i for i, w in enumerate(["<unk>", "<|endoftext|>", *words])}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", eos_token="<|endoftext|>",
                                        model_input_names=["input_ids", "attention_mask"])
    assert tokenizer.pad_token is None
    config = GPT2Config(vocab_size=len(vocab), n_embd=32, n_layer=1, n_head=2, n_positions=64, eos_token_id=1, bos_token_id=1)
    assert config.pad_token_id is None
    GPT2ForSequenceClassification(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.mark.parametrize("kind", ["tiny-decoder", "gpt2"])
def test_a_decoders_logits_do_not_depend_on_padding(registry, tmp_path, kind):
    """Last-token pooling with right padding: a text alone, padded among longer ones in a batch, or
    in a batch padded further still gives the same logits."""
    name = "tiny-decoder" if kind == "tiny-decoder" else gpt2_without_a_pad_token(tmp_path / "gpt2")
    model, tokenizer = build(registry, f"backbone.name={name}", "backbone.lora.r=4")
    assert tokenizer.pad_token is not None and tokenizer.padding_side == "right"
    assert model.config.pad_token_id == tokenizer.pad_token_id  # what the pooling skips is what the tokenizer pads with
    with torch.no_grad():  # a trained-looking model: the LoRA B matrices start at zero and would hide nothing
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    model.eval()
    batch = tokenizer(TEXTS, padding="longest", return_tensors="pt")
    assert (batch["attention_mask"] == 0).any(axis=1).sum() == 2  # two of the three rows are padded
    wide = tokenizer(TEXTS, padding="max_length", max_length=40, return_tensors="pt")
    with torch.no_grad():
        in_batch, in_wide = model(**batch).logits, model(**wide).logits
        for i, text in enumerate(TEXTS):
            alone = model(**tokenizer([text], return_tensors="pt")).logits[0]
            assert torch.allclose(alone, in_batch[i], atol=1e-5), (text, alone, in_batch[i])
            assert torch.allclose(alone, in_wide[i], atol=1e-5), text
    assert not torch.allclose(in_batch[0], in_batch[1], atol=1e-3)  # texts still differ: the test can fail


def trainable(model) -> dict[str, torch.Tensor]:
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("backbone,targets,head", [
    (["backbone.name=tiny-decoder"], ("q_proj", "v_proj"), "score"),
    (["backbone.name=tiny", "backbone.layers=1", "backbone.hidden=32", "backbone.heads=2", "backbone.intermediate=64"],
     ("query", "value"), "classifier"),
], ids=["tiny-decoder", "tiny"])
def test_lora_trains_only_the_adapters_and_the_head(registry, backbone, targets, head):
    cfg = resolve(parse_overrides([*FAST, *backbone, "backbone.lora.r=4", "method=fixmatch", "train.steps=3",
                                   "train.lr=0.01", "selector.threshold=0.0"]), registry)
    parts = prepare(cfg, registry)
    student = parts.student
    names = set(trainable(student))
    adapters = {n for n in names if ".lora_A." in n or ".lora_B." in n}
    heads = {n for n in names if f"{head}.modules_to_save." in n}
    assert names == adapters | heads and adapters and heads
    assert {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in adapters} == set(targets)  # the architecture's default modules
    # r x (in + out) for every adapted matrix (the decoder's v_proj is 32 -> 32: 2 key/value heads of 16)
    assert sum(p.numel() for n, p in student.named_parameters() if n in adapters) == \
        sum(4 * (m.in_features + m.out_features) for n, m in student.named_modules() if n.rsplit(".", 1)[-1] in targets)
    assert sum(p.numel() for n, p in student.named_parameters() if n in heads) == (32 + (head == "classifier")) * 6  # 6 classes, BERT's has a bias
    frozen = {n: p.detach().clone() for n, p in student.named_parameters() if not p.requires_grad}
    moving = {n: p.detach().clone() for n, p in trainable(student).items()}
    train(cfg, parts, progress=False)
    assert all(torch.equal(p, frozen[n]) for n, p in student.named_parameters() if n in frozen)  # the base never moves
    assert all(not torch.equal(p, moving[n]) for n, p in trainable(student).items() if ".lora_B." in n or ".modules_to_save." in n)


def test_lora_target_modules_that_match_nothing_are_one_clear_error(tmp_path):
    result = CliRunner().invoke(main, ["run", *DECODER, "backbone.lora.r=4", "backbone.lora.target_modules=q_proj,query",
                                       "--out", str(tmp_path / "runs")])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "backbone.lora.target_modules: query match" in result.output
    for module in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"):  # what to choose from
        assert module in result.output
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("override,message", [
    ("backbone.lora.rank=4", "unknown key(s) backbone.lora.rank; backbone.lora has r, alpha, dropout, target_modules"),
    ("backbone.lora.r=-1", "backbone.lora.r must be 0 (off) or a positive rank"),
    ("backbone.lora.r=2.5", "backbone.lora.r must be int"),
    ("backbone.lora.dropout=1.0", "backbone.lora.dropout must be in [0, 1)"),
    ("backbone.lora=4", "backbone.lora must be a table"),
])
def test_lora_options_are_checked_when_the_config_is_resolved(registry, override, message):
    with pytest.raises(UserError, match=re.escape(message)):
        resolve(parse_overrides([*DECODER, override]), registry)


def test_lora_options_have_one_canonical_form_in_the_run_id(registry):
    as_text = resolve(parse_overrides([*DECODER, "backbone.lora.r=4", "backbone.lora.target_modules=q_proj,o_proj"]), registry)
    as_list = resolve({**parse_overrides(DECODER), "backbone": {**parse_overrides(DECODER)["backbone"],
                                                                "lora": {"r": 4, "target_modules": ["q_proj", "o_proj"]}}}, registry)
    assert as_text.run_id == as_list.run_id
    assert as_text.resolved["backbone"]["lora"] == {"r": 4, "alpha": 16.0, "dropout": 0.05, "target_modules": "q_proj,o_proj"}
    model, _ = build(registry, *DECODER, "backbone.lora.r=4", "backbone.lora.target_modules=q_proj,o_proj")
    assert {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in trainable(model) if ".lora_" in n} == {"q_proj", "o_proj"}


def test_gradient_checkpointing_changes_no_number(registry):
    base = [*DECODER, "backbone.lora.r=4", "method=fixmatch", "train.steps=3", "selector.threshold=0.0"]
    runs = []
    for flag in ("false", "true"):
        cfg = resolve(parse_overrides([*base, f"backbone.gradient_checkpointing={flag}"]), registry)
        parts = prepare(cfg, registry)
        assert parts.student.get_base_model().is_activation_checkpointing == (flag == "true")
        runs.append(train(cfg, parts, progress=False).predictions["test_probs_last"])
    assert np.array_equal(runs[0], runs[1])


def test_plugins_lists_the_llm_backbones():
    result = CliRunner().invoke(main, ["plugins"])
    assert result.exit_code == 0, result.output
    assert "tiny-decoder" in result.output and "smollm2" in result.output


@pytest.mark.slow
def test_smollm2_is_a_lora_backbone_with_last_token_pooling(registry):
    """SmolLM2-135M-Instruct from its GGUF file (~30 s to load): a fresh head from the seed, LoRA on
    q_proj and v_proj, logits independent of padding."""
    model, tokenizer = build(registry, "backbone.name=smollm2", "backbone.lora.r=4", num_labels=4)
    assert model.get_base_model().config.model_type == "llama" and model.config.pad_token_id == tokenizer.pad_token_id
    names = trainable(model)
    assert sum(p.numel() for p in names.values()) == 30 * 4 * (576 + 576 + 576 + 192) + 4 * 576  # q: 576->576, v: 576->192 (3 kv heads)
    model.eval()
    with torch.no_grad():
        batch = model(**tokenizer(TEXTS, padding="longest", return_tensors="pt")).logits
        for i, text in enumerate(TEXTS):
            assert torch.allclose(model(**tokenizer([text], return_tensors="pt")).logits[0], batch[i], atol=1e-4)
