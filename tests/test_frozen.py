"""The frozen-encoder backbone (plugins/frozen.py): only the head trains, features depend on a
text's token ids alone, and the feature cache makes warm runs identical to cold ones."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from conftest import FAST, TIME_FIELDS, read_jsonl
from testbed import TextBatch, resources
from testbed import store as store_module
from testbed.cli import main
from testbed.config import parse_overrides, resolve
from testbed.errors import UserError
from testbed.loop import backbone_context, prepare, train
from testbed.model import tokenize
from testbed.runs import execute
from testbed_plugins import frozen as frozen_plugin

# FAST's data and loop settings; the encoder is `tiny` with its default size (its own options are
# not keys of the frozen backbone). A head-sized learning rate, so the head visibly moves.
FROZEN = [*(o for o in FAST if not o.startswith("backbone.")), "backbone.name=frozen", "backbone.encoder=tiny",
          "backbone.max_length=32", "train.lr=1e-2"]
# Fields of result.json that measure time or the machine, so differ between identical runs.
UNTIMED_RESULT = {"wall_seconds", "train_seconds", "eval_seconds", "augment_seconds", "started_at", "finished_at", "machine"}


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch) -> Path:
    """A fresh, empty cache for every test."""
    monkeypatch.setenv(resources.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


def config(registry, *extra):
    return resolve(parse_overrides([*FROZEN, *extra]), registry)


def numbers(run_dir: Path) -> tuple[dict, list[dict], dict]:
    """result.json, metrics.jsonl and predictions.npz of a run, without the fields that measure time."""
    result = json.loads((run_dir / "result.json").read_text())
    metrics = [{k: v for k, v in r.items() if k not in TIME_FIELDS} for r in read_jsonl(run_dir / "metrics.jsonl")]
    with np.load(run_dir / "predictions.npz") as z:
        predictions = {k: z[k].tolist() for k in z.files}
    return {k: v for k, v in result.items() if k not in UNTIMED_RESULT}, metrics, predictions


def shards(cache_dir: Path) -> set[str]:
    return {str(p.relative_to(cache_dir)) for p in (cache_dir / "features").glob("*/shard-*.npz")}


# --------------------------------------------------------------------------- what trains


def test_only_the_head_trains_and_teachers_share_the_encoder(registry, monkeypatch):
    optimized = []

    class RecordingAdamW(torch.optim.AdamW):
        def __init__(self, params, **kwargs):
            params = list(params)
            optimized.append(params)
            super().__init__(params, **kwargs)

    monkeypatch.setattr(torch.optim, "AdamW", RecordingAdamW)
    cfg = config(registry, "method=fixmatch", "selector.threshold=0.0")
    parts = prepare(cfg, registry)
    student, store = parts.student, parts.student.store
    assert [name for name, _ in student.named_parameters()] == ["classifier.weight", "classifier.bias"]
    assert set(student.state_dict()) == {"classifier.weight", "classifier.bias"}
    encoder_before = {k: v.clone() for k, v in store.encoder.state_dict().items()}
    head_before = student.classifier.weight.detach().clone()

    train(cfg, parts, progress=False)

    (params,) = optimized
    assert [tuple(p.shape) for p in params] == [(6, 128), (6,)]  # TREC's 6 classes on tiny's 128 hidden units
    assert all(p is q for p, q in zip(params, student.parameters()))
    assert not torch.equal(head_before, student.classifier.weight)  # the head trained ...
    after = store.encoder.state_dict()
    assert all(torch.equal(encoder_before[k], after[k]) for k in encoder_before)  # ... the encoder did not
    assert not any(p.requires_grad for p in store.encoder.parameters()) and not store.encoder.training

    twin = copy.deepcopy(student)  # what EMA and snapshot teachers do
    assert twin.store is store and twin.store.encoder is store.encoder
    assert twin.classifier.weight is not student.classifier.weight
    assert torch.equal(twin.classifier.weight, student.classifier.weight)


def test_the_same_seed_gives_the_same_head_and_another_seed_another_encoder_entry(registry):
    heads, entries = [], []
    for seed in (0, 0, 1):
        torch.manual_seed(seed)  # as the loop does before building the backbone
        model, _ = frozen_plugin.frozen(frozen_plugin.FrozenOptions(encoder="tiny"), backbone_context(registry, 3))
        heads.append(model.classifier.weight.detach().clone())
        entries.append(model.store.entry)
    assert torch.equal(heads[0], heads[1]) and not torch.equal(heads[0], heads[2])
    # `tiny` is random per seed: its weights, not its name, pick the cache entry
    assert entries[0] == entries[1] != entries[2]


# --------------------------------------------------------------------------- features


def test_a_texts_features_do_not_depend_on_its_batch(registry):
    short = "What is the capital of France ?"
    longer = ["How far is it from Denver to Aspen , and how long does the drive take in winter ?",
              "Who wrote the novel that the film with the longest title in history was based on ?"]
    stores, models = [], []
    for _ in range(2):  # two stores with the same weights and empty memories: each computes on its own
        torch.manual_seed(0)
        model, tokenizer = frozen_plugin.frozen(frozen_plugin.FrozenOptions(encoder="tiny"), backbone_context(registry, 3))
        stores.append(model.store)
        models.append(model)
    alone_tokens = tokenize(tokenizer, [short], 32)
    batch_tokens = tokenize(tokenizer, [longer[0], short, longer[1]], 32)  # `short` padded to the longest
    assert batch_tokens["attention_mask"][1].sum() < batch_tokens["input_ids"].shape[1]

    alone = stores[0].features(alone_tokens["input_ids"], alone_tokens["attention_mask"])[0]
    batched = stores[1].features(batch_tokens["input_ids"], batch_tokens["attention_mask"])[1]
    assert torch.equal(alone, batched)  # bit for bit
    assert frozen_plugin.token_keys(alone_tokens["input_ids"], alone_tokens["attention_mask"])[0][0] == \
        frozen_plugin.token_keys(batch_tokens["input_ids"], batch_tokens["attention_mask"])[0][1]

    # mean pooling is the mean of the last hidden layer over the text's own tokens
    with torch.no_grad():
        hidden = stores[0].encoder(input_ids=alone_tokens["input_ids"]).last_hidden_state[0]
    assert torch.allclose(alone, hidden.mean(0), atol=1e-6)
    models[0].eval()
    with torch.no_grad():  # the model's logits are the head on those features
        logits = models[0](**batch_tokens).logits
    assert torch.allclose(logits[1], models[0].classifier(alone), atol=1e-6)


class RowCountSensitiveEncoder(torch.nn.Module):
    """An encoder that rounds like a BLAS library: the number of rows in a call picks the kernel,
    here the order in which each output's sum is accumulated, so a row's output depends on how
    many rows share its call (never on their contents or its position). Real kernels do this too
    (tests below), but only on some CPUs for some shapes; this one does it everywhere."""

    config = type("Config", (), {"hidden_size": 24})()

    def __init__(self):
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.embedding = torch.nn.Parameter(torch.randn(500, 24, generator=generator))
        self.weight = torch.nn.Parameter(torch.randn(24, 24, generator=generator) * 10)

    def forward(self, input_ids, attention_mask=None):
        x = self.embedding[input_ids]  # [R, T, H]
        chunk = 1 + len(input_ids) % 5  # the "kernel" of this row count: sums over chunks of this many terms
        out = torch.zeros(*x.shape[:2], self.weight.shape[1])
        for start in range(0, x.shape[-1], chunk):
            out = out + x[..., start : start + chunk] @ self.weight[start : start + chunk]
        return type("Output", (), {"last_hidden_state": out})()


def encode_in_batches(encoder, ids: torch.Tensor, sizes: list[int], order: list[int], mask: torch.Tensor | None = None,
                      per_token: bool = False) -> torch.Tensor:
    """Features of the rows ``ids`` with an empty store, asked for in batches of ``sizes`` rows,
    the rows taken in ``order``: rows computed in other batches, beside other rows, at other positions.
    ``per_token``: a token task's features, [rows, T, hidden], each batch cut to its longest row (so a
    row is padded by another amount in each batching)."""
    store = frozen_plugin.FeatureStore(encoder, "mean", "test", root=None, per_token=per_token)
    mask = torch.ones_like(ids) if mask is None else mask
    features = torch.zeros(*(ids.shape if per_token else ids.shape[:1]), encoder.config.hidden_size)
    start = 0
    for size in sizes:
        rows = order[start : start + size]
        if per_token:
            width = int(mask[rows].sum(1).max())
            features[rows, :width] = store.features(ids[rows, :width], mask[rows, :width])
        else:
            features[rows] = store.features(ids[rows], mask[rows])
        start += size
    assert start == len(ids)
    return features


BATCHINGS = [([1] * 11, list(range(11))), ([11], list(range(11))), ([2, 3, 6], list(range(11))),
             ([7, 4], list(range(10, -1, -1))), ([5, 1, 5], [3, 9, 0, 7, 1, 10, 2, 8, 4, 6, 5])]


def test_row_counts_that_change_an_encoders_rounding_do_not_change_features():
    encoder = RowCountSensitiveEncoder().eval()
    ids = torch.randint(0, 500, (11, 6), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():  # the encoder does round differently by row count: the provocation is real
        alone, batched = (encoder(ids[:n]).last_hidden_state[0] for n in (1, 2))
    assert not torch.equal(alone, batched)
    reference = encode_in_batches(encoder, ids, *BATCHINGS[0])
    for sizes, order in BATCHINGS[1:]:
        assert torch.equal(encode_in_batches(encoder, ids, sizes, order), reference), sizes


@pytest.mark.parametrize("encoder_name", ["tiny", pytest.param("minilm", marks=pytest.mark.slow)])
def test_real_encoders_give_the_same_features_however_texts_are_batched(registry, encoder_name):
    """Texts of 3 tokens, where oneDNN on an AVX-512 AMD EPYC rounds a call of 1 row differently
    from calls of 2 or more (both encoders), and longer texts, where a Xeon rounds 8 rows
    differently from 1 or 7 (MiniLM, issue 10); with 1 and with 2 torch threads."""
    torch.manual_seed(0)
    model, _ = backbone_context(registry, 2).load_backbone(encoder_name)
    encoder = model.base_model.eval()
    generator = torch.Generator().manual_seed(2)
    threads = torch.get_num_threads()
    try:
        for length in (3, 12):
            ids = torch.randint(1000, 20000, (11, length), generator=generator)
            torch.set_num_threads(1)  # grid workers sharing a cache run with different thread counts
            reference = encode_in_batches(encoder, ids, *BATCHINGS[0])
            torch.set_num_threads(2)
            for sizes, order in BATCHINGS[1:]:
                assert torch.equal(encode_in_batches(encoder, ids, sizes, order), reference), (length, sizes)
    finally:
        torch.set_num_threads(threads)


def test_texts_are_padded_to_their_bucket_and_a_text_at_the_position_limit_never_shares_a_call():
    calls = []

    class Recording(RowCountSensitiveEncoder):
        config = type("Config", (), {"hidden_size": 24, "max_position_embeddings": 20})()

        def forward(self, input_ids, attention_mask=None):
            calls.append((tuple(input_ids.shape), attention_mask.bool().all(-1).tolist()))
            return super().forward(input_ids, attention_mask)

    assert [frozen_plugin.bucket_length(n) for n in (1, 15, 16, 17)] == [16, 16, 32, 32]
    store = frozen_plugin.FeatureStore(Recording().eval(), "mean", "test", root=None)
    lengths = [3, 15, 16, 20, 20, 9]  # 20 = the encoder's limit: no room for a pad
    ids = torch.zeros(len(lengths), 20, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, n in enumerate(lengths):
        ids[i, :n], mask[i, :n] = torch.arange(1 + i, 1 + i + n), 1
    store.features(ids, mask)
    assert sorted(calls) == [((8, 16), [False] * 8), ((8, 20), [False] * 8), ((8, 20), [True] * 8)]


def test_fixed_rows_fills_a_short_batch_with_its_last_row():
    assert frozen_plugin.fixed_rows(["a", "b"], 4) == ["a", "b", "b", "b"]
    assert frozen_plugin.fixed_rows(list("abcd"), 4) == list("abcd")
    for bad in ([], list("abcde")):
        with pytest.raises(ValueError, match="expected 1 to 4 rows"):
            frozen_plugin.fixed_rows(bad, 4)


def test_features_of_another_format_are_another_cache_entry(monkeypatch):
    encoder = RowCountSensitiveEncoder()
    now = frozen_plugin.FeatureStore(encoder, "mean", "test", root=None).entry
    monkeypatch.setattr(frozen_plugin, "FORMAT", 1)
    assert frozen_plugin.FeatureStore(encoder, "mean", "test", root=None).entry != now


def test_cls_pooling_is_the_first_tokens_state(registry):
    torch.manual_seed(0)
    model, tokenizer = frozen_plugin.frozen(frozen_plugin.FrozenOptions(encoder="tiny", pooling="cls"), backbone_context(registry, 3))
    tokens = tokenize(tokenizer, ["a short question ?"], 32)
    with torch.no_grad():
        hidden = model.store.encoder(input_ids=tokens["input_ids"]).last_hidden_state[0]
    cls = model.store.features(tokens["input_ids"], tokens["attention_mask"])[0]
    assert torch.allclose(cls, hidden[0], atol=1e-6) and not torch.allclose(cls, hidden.mean(0), atol=1e-3)  # (padded: not bit for bit)
    mean = frozen_plugin.FeatureStore(model.store.encoder, "mean", "tiny", root=None)
    assert model.store.cache.meta["key"]["pooling"] == "cls" and mean.entry != model.store.entry  # an entry of its own


# --------------------------------------------------------------------------- the cache


@pytest.mark.slow
def test_warm_cache_runs_read_features_and_match_the_cold_run(registry, tmp_path, cache_dir):
    cfg = config(registry, "method=fixmatch", "selector.threshold=0.3")
    cold_dir, _, _ = execute(cfg, registry, tmp_path / "cold", progress=False)
    (entry,) = (cache_dir / "features").iterdir()
    meta = json.loads((entry / "meta.json").read_text())
    assert meta["key"]["encoder"] == "tiny" and meta["key"]["pooling"] == "mean" and meta["key"]["format"] == frozen_plugin.FORMAT
    assert meta["items"] == {"shape": [128], "dtype": "float32"} and entry.name.startswith("tiny-")
    computed = frozen_plugin.ENCODED[entry.name]
    on_disk = shards(cache_dir)
    assert computed > 0 and on_disk

    warm_dir, _, _ = execute(cfg, registry, tmp_path / "warm", progress=False)  # a new model, reading the cache
    assert frozen_plugin.ENCODED[entry.name] == computed  # nothing encoded again
    assert shards(cache_dir) == on_disk  # nothing new to write
    assert numbers(warm_dir) == numbers(cold_dir)

    # a second process reads the entry too: it writes no shard (it computed nothing) and gets the same numbers
    overrides = [*FROZEN, "method=fixmatch", "selector.threshold=0.3"]
    env = {**os.environ, resources.CACHE_ENV: str(cache_dir), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "testbed.cli", "run", *overrides, "--out", str(tmp_path / "process"),
                           "--quiet"], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    assert shards(cache_dir) == on_disk
    assert numbers(tmp_path / "process" / cfg.run_id) == numbers(cold_dir)


def test_a_partly_warm_cache_gives_the_numbers_of_a_cold_one(registry, tmp_path, cache_dir, monkeypatch):
    """A longer run on the features of a shorter one (its other texts computed in other batches)
    equals the same run on an empty cache, with evaluation batches of another size too."""
    cfg = config(registry, "method=fixmatch", "selector.threshold=0.3")
    cold_dir, _, _ = execute(cfg, registry, tmp_path / "cold", progress=False)
    monkeypatch.setenv(resources.CACHE_ENV, str(tmp_path / "other-cache"))
    execute(config(registry, "method=fixmatch", "selector.threshold=0.3", "train.steps=2", "train.eval_every=2",
                   "train.eval_batch_size=7"), registry, tmp_path / "short", progress=False)
    partly_dir, _, _ = execute(cfg, registry, tmp_path / "partly", progress=False)
    assert numbers(partly_dir) == numbers(cold_dir)


def test_features_are_written_when_the_student_returns_from_an_evaluation(registry):
    cfg = config(registry, "method=fixmatch")
    parts = prepare(cfg, registry)
    student, store = parts.student, parts.student.store
    tokens = tokenize(parts.tokenizer, parts.split.pool_texts[:5], 32)
    student(**tokens)  # training mode: computed, kept in memory, not yet on disk
    assert len(store.cache.pending) == 5 and not list(store.cache.dir.glob("shard-*.npz"))
    copy.deepcopy(student).eval().train()  # a teacher's copy changing modes writes nothing
    assert len(store.cache.pending) == 5
    student.eval()
    student.train()  # back from an evaluation
    assert not store.cache.pending and len(list(store.cache.dir.glob("shard-*.npz"))) == 1
    reread = frozen_plugin.FeatureStore(store.encoder, "mean", "tiny", store.cache.dir.parent)
    assert set(reread.table) == set(store.table)
    assert all(np.array_equal(reread.table[k], store.table[k]) for k in store.table)


def test_many_shards_are_merged_on_reading(registry, monkeypatch):
    torch.manual_seed(0)
    model, tokenizer = frozen_plugin.frozen(frozen_plugin.FrozenOptions(encoder="tiny"), backbone_context(registry, 3))
    store, texts = model.store, [f"question number {i} ?" for i in range(store_module.COMPACT_AT)]
    for text in texts:  # one shard per text
        store.features(**{k: v for k, v in tokenize(tokenizer, [text], 32).items() if k != "token_type_ids"})
        store.flush()
    assert len(list(store.cache.dir.glob("shard-*.npz"))) == store_module.COMPACT_AT
    reread = frozen_plugin.FeatureStore(store.encoder, "mean", "tiny", store.cache.dir.parent)
    assert len(list(store.cache.dir.glob("shard-*.npz"))) == 1 and len(reread.table) == len(texts)
    assert all(np.array_equal(reread.table[k], store.table[k]) for k in store.table)


def test_testbed_cache_lists_and_clears_feature_entries(registry, tmp_path, cache_dir):
    execute(config(registry, "method=supervised"), registry, tmp_path / "runs", progress=False)
    runner = CliRunner()
    listing = runner.invoke(main, ["cache"])
    assert listing.exit_code == 0, listing.output
    assert "features: 1 entry" in listing.output
    line = next(line for line in listing.output.splitlines() if line.strip().startswith("tiny"))
    assert line.split()[1:3] == ["mean", "128"]
    (entry,) = json.loads(runner.invoke(main, ["cache", "--json"]).output)["entries"]
    assert entry["kind"] == "features" and entry["encoder"] == "tiny" and entry["texts"] > 0 and entry["bytes"] > 0

    assert "Nothing cached under 'minilm'. Cached: tiny (features)." in runner.invoke(main, ["cache", "clear", "minilm"]).output
    cleared = runner.invoke(main, ["cache", "clear", "tiny"])
    assert cleared.exit_code == 0 and "features: removed 1 entry" in cleared.output
    assert not (cache_dir / "features").exists()
    execute(config(registry, "method=supervised", "seed=1"), registry, tmp_path / "runs", progress=False)
    assert "features: removed 1 entry" in runner.invoke(main, ["cache", "clear", "--all"]).output
    assert not (cache_dir / "features").exists()


def test_the_cache_is_never_inside_the_shared_data(registry, data_root, monkeypatch):
    monkeypatch.setenv(resources.CACHE_ENV, str(data_root / "cache"))
    with pytest.raises(UserError, match="inside the shared data directory"):
        frozen_plugin.frozen(frozen_plugin.FrozenOptions(encoder="tiny"), backbone_context(registry, 3))


# --------------------------------------------------------------------------- teachers and selectors


def test_an_ema_teacher_averages_its_own_head_on_the_shared_encoder(registry):
    cfg = config(registry, "method=meanteacher")
    parts = prepare(cfg, registry)
    teacher, student = parts.teacher.model, parts.student
    assert teacher.store is student.store
    assert [name for name, _ in teacher.named_parameters()] == ["classifier.weight", "classifier.bias"]
    before = teacher.classifier.weight.detach().clone()
    result = train(cfg, parts, progress=False).result
    assert not torch.equal(before, teacher.classifier.weight)  # the EMA moved ...
    assert not torch.equal(teacher.classifier.weight, student.classifier.weight)  # ... behind the student
    assert result["steps"] == 6 and result["mask_rate"] == 1.0  # Mean Teacher's `none` selector keeps everything


def test_mc_dropout_passes_differ_and_the_uncertainty_selector_runs(registry):
    cfg = config(registry, "method=fixmatch", "selector.name=uncertainty", "selector.passes=3", "selector.threshold=0.0",
                 "selector.max_uncertainty=1.0")
    parts = prepare(cfg, registry)
    batch = TextBatch(parts.split.pool_texts[:16], lambda texts: tokenize(parts.tokenizer, texts, 32))
    first, second = (parts.teacher.probs(batch, stochastic=True) for _ in range(2))
    assert not torch.equal(first, second)  # dropout in the head makes the passes differ
    result = train(cfg, parts, progress=False).result
    assert result["mask_rate"] == 1.0  # τ = 0, κ = 1: every pseudo-label selected, through K passes


# --------------------------------------------------------------------------- token tasks (NER)

def ner_config(registry, *extra):
    """test_ner's CoNLL-2003 slices with the frozen backbone on the `tiny` encoder (its default size)."""
    from test_ner import NER

    frozen = [*(o for o in NER if not o.startswith("backbone.")), "backbone.name=frozen", "backbone.encoder=tiny",
              "backbone.max_length=48", "train.lr=1e-2"]
    return resolve(parse_overrides([*frozen, *extra]), registry)


def ragged_ids(lengths: list[int], generator: torch.Generator, low: int = 1000, high: int = 20000) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of random ids in [low, high) of ``lengths``, right-padded (0, masked) to the longest."""
    ids, mask = torch.zeros(len(lengths), max(lengths), dtype=torch.long), torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    for i, n in enumerate(lengths):
        ids[i, :n], mask[i, :n] = torch.randint(low, high, (n,), generator=generator), 1
    return ids, mask


TOKEN_LENGTHS = [3, 12, 5, 3, 20, 9, 17, 3, 14, 6, 11]  # buckets of 16 and 32; each batching pads a row otherwise


def test_row_counts_that_change_an_encoders_rounding_do_not_change_token_features():
    encoder = RowCountSensitiveEncoder().eval()
    ids, mask = ragged_ids(TOKEN_LENGTHS, torch.Generator().manual_seed(1), 1, 500)
    with torch.no_grad():  # per token too, the encoder rounds otherwise by row count: the provocation is real
        alone, batched = (encoder(ids[:n]).last_hidden_state[0] for n in (1, 2))
    assert not torch.equal(alone, batched)
    reference = encode_in_batches(encoder, ids, *BATCHINGS[0], mask=mask, per_token=True)
    assert reference.shape == (11, 20, 24) and reference[mask == 0].abs().sum() == 0  # padding: no feature
    for sizes, order in BATCHINGS[1:]:
        assert torch.equal(encode_in_batches(encoder, ids, sizes, order, mask=mask, per_token=True), reference), sizes


@pytest.mark.parametrize("encoder_name", ["tiny", pytest.param("minilm", marks=pytest.mark.slow)])
def test_real_encoders_give_the_same_token_features_however_texts_are_batched(registry, encoder_name):
    """The sentence test's batchings on texts of several lengths in one batch (each padded to its
    batch's longest), with 1 and 2 torch threads, through the token head's encoder."""
    torch.manual_seed(0)
    model, _ = backbone_context(registry, 2, "token").load_backbone(encoder_name)
    encoder = model.base_model.eval()
    ids, mask = ragged_ids(TOKEN_LENGTHS, torch.Generator().manual_seed(2))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        reference = encode_in_batches(encoder, ids, *BATCHINGS[0], mask=mask, per_token=True)
        torch.set_num_threads(2)
        for sizes, order in BATCHINGS[1:]:
            assert torch.equal(encode_in_batches(encoder, ids, sizes, order, mask=mask, per_token=True), reference), sizes
    finally:
        torch.set_num_threads(threads)


def test_a_token_head_gives_per_token_logits_of_the_tasks_encoding_whatever_the_batch(registry):
    from test_ner import token_task

    torch.manual_seed(0)
    model, tokenizer = frozen_plugin.frozen(frozen_plugin.FrozenOptions(encoder="tiny"), backbone_context(registry, 9, "token"))
    assert [name for name, _ in model.named_parameters()] == ["classifier.weight", "classifier.bias"]
    assert model.store.per_token and model.store.key["features"] == "token" and "pooling" not in model.store.key
    task = token_task(registry)
    short = "EU rejects German call to boycott British lamb ."
    longer = "Peter Blackburn said on Thursday that the commission disagreed with the German advice to consumers to shun lamb"
    alone, batch = task.encode(tokenizer, [short], 48), task.encode(tokenizer, [longer, short], 48)  # `short` padded in the batch
    assert batch["attention_mask"][1].sum() < batch["input_ids"].shape[1]
    model.eval()
    with torch.no_grad():
        logits_alone, logits_batch = model(**alone).logits, model(**batch).logits
    assert logits_alone.shape == (1, alone["input_ids"].shape[1], 9) and logits_batch.shape == (2, batch["input_ids"].shape[1], 9)
    rows_alone, rows_batch = task.rows(logits_alone, alone), task.rows(logits_batch, batch)
    assert len(rows_alone) == len(short.split()) and torch.equal(rows_batch[-len(rows_alone):], rows_alone)  # bit for bit
    # a token's feature is the encoder's last hidden state at its position (the text alone, unpadded)
    with torch.no_grad():
        hidden = model.store.encoder(input_ids=alone["input_ids"]).last_hidden_state[0]
    features = model.store.features(alone["input_ids"], alone["attention_mask"])[0]
    assert torch.allclose(features, hidden, atol=1e-5)
    assert torch.allclose(logits_alone[0], model.classifier(features), atol=1e-6)


def test_token_features_are_a_cache_entry_of_their_own(monkeypatch):
    encoder = RowCountSensitiveEncoder()
    sentence = frozen_plugin.FeatureStore(encoder, "mean", "test", root=None)
    token = frozen_plugin.FeatureStore(encoder, "mean", "test", root=None, per_token=True)
    assert token.entry != sentence.entry and token.key["format"] == frozen_plugin.TOKEN_FORMAT
    assert frozen_plugin.FeatureStore(encoder, "cls", "test", root=None, per_token=True).entry == token.entry  # pooling does not apply
    assert token.cache.meta["variants"] and not sentence.cache.meta["variants"]  # rows by (text digest, position)
    monkeypatch.setattr(frozen_plugin, "TOKEN_FORMAT", 99)
    assert frozen_plugin.FeatureStore(encoder, "mean", "test", root=None, per_token=True).entry != token.entry
    assert frozen_plugin.FeatureStore(encoder, "mean", "test", root=None).entry == sentence.entry


def test_a_frozen_token_run_reads_its_views_features_back_and_a_warm_cache_gives_its_numbers(registry, tmp_path, cache_dir):
    cfg = ner_config(registry, "method=fixmatch", "selector.threshold=0.3")
    assert cfg.resolved["augmentation"]["strong"]["name"] == "word_mask"  # a word-keeping view, encoded like any text
    cold_dir, _, _ = execute(cfg, registry, tmp_path / "cold", progress=False)
    result = json.loads((cold_dir / "result.json").read_text())
    assert result["task"] == "token" and 0 <= result["test_entity_f1"] <= 1 and result["mask_rate"] > 0
    (entry,) = (cache_dir / "features").iterdir()
    meta = json.loads((entry / "meta.json").read_text())
    assert meta["key"]["features"] == "token" and meta["variants"] and meta["columns"]["pooling"] == "per-token"
    computed = frozen_plugin.ENCODED[entry.name]

    parts = prepare(cfg, registry)  # every strong view the run drew (read back from the view cache) has its features on disk
    store, task = parts.student.store, parts.task
    views = list(parts.views.strong.table.values())
    assert views and any("[MASK]" in view for view in views)
    encoded = task.encode(parts.tokenizer, views, 48)
    keys, rows = frozen_plugin.token_keys(encoded["input_ids"], encoded["attention_mask"])
    assert all((key, p) in store.table for key, row in zip(keys, rows) for p in range(len(row)))

    warm_dir, _, _ = execute(cfg, registry, tmp_path / "warm", progress=False)  # a new model, reading the cache
    assert frozen_plugin.ENCODED[entry.name] == computed  # nothing encoded again
    assert numbers(warm_dir) == numbers(cold_dir)


@pytest.mark.parametrize("method", [["method=meanteacher"], ["method=fixmatch", "selector.name=uncertainty", "selector.passes=2",
                                                             "selector.threshold=0.0", "selector.max_uncertainty=1.0"]],
                         ids=["meanteacher", "mc-dropout"])
def test_teachers_share_the_token_features(registry, method):
    cfg = ner_config(registry, *method)
    parts = prepare(cfg, registry)
    result = train(cfg, parts, progress=False).result
    assert result["task"] == "token" and set(result["test_entity_per_type"]) == {"LOC", "MISC", "ORG", "PER"}
    model = getattr(parts.teacher, "model", None)
    if model is not None:
        assert model.store is parts.student.store


# --------------------------------------------------------------------------- options and registration


@pytest.mark.parametrize(("override", "message"), [
    ("backbone.pooling=max", r"backbone\.pooling must be one of 'mean', 'cls', got 'max'"),
    ("backbone.encoder=frozen", r"backbone\.encoder must name another backbone"),
    ("backbone.encoder=", r"backbone\.encoder must name another backbone"),
    ("backbone.layers=1", r"Unknown config key 'backbone\.layers'"),
])
def test_bad_options_name_the_key_and_the_allowed_values(registry, override, message):
    with pytest.raises(UserError, match=message):
        config(registry, override)


def test_an_unknown_encoder_stops_before_the_run(registry, tmp_path):
    with pytest.raises(UserError, match="backbone.encoder='minlm': Unknown backbone 'minlm'. Did you mean 'minilm'"):
        execute(config(registry, "backbone.encoder=minlm"), registry, tmp_path / "runs", progress=False)
    assert not (tmp_path / "runs").exists()


def test_testbed_plugins_lists_frozen():
    result = CliRunner().invoke(main, ["plugins", "--json"])
    assert result.exit_code == 0, result.output
    by_name = {row["name"]: row for row in json.loads(result.stdout)}
    assert by_name["frozen"]["provides"] == {"backbone": ["frozen"]}
    assert "entry point of testbed" in by_name["frozen"]["source"]
