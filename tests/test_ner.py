"""Token classification (NER) on the same seams: the task record chosen by the rows, word-to-subword
alignment, rows of [B, T, C] outputs, selectors per token and per sentence, strict IOB2 entity F1
against seqeval's own examples, and CoNLL-2003 end to end through the presets and the CLI."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from conftest import TIME_FIELDS, write_jsonl
from testbed import Encoded, RunContext, TaskContext, TextBatch, Texts, UserError
from testbed.cli import main
from testbed.config import parse_overrides, resolve, run_id
from testbed.data import load_dataset_dir, make_split
from testbed.loop import prepare, train, whole_examples
from testbed.views import ViewStream

TAGS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC")
# a few steps of a 1-layer, 32-wide BERT on slices of CoNLL-2003, single-threaded
NER = ["dataset.name=conll2003", "dataset.labeled_size=20", "dataset.validation_size=20", "dataset.unlabeled_limit=60",
       "dataset.test_limit=30", "backbone.name=tiny", "backbone.layers=1", "backbone.hidden=32", "backbone.heads=2",
       "backbone.intermediate=64", "backbone.max_length=48", "train.steps=4", "train.batch_size=4", "train.eval_every=2",
       "train.threads=1"]


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from testbed_plugins.backbones import minilm_path

    return AutoTokenizer.from_pretrained(minilm_path())


def token_task(registry, pool=(), labels=TAGS):
    record = registry.get("task", "token")
    return record.factory(record.options(), TaskContext(label_names=tuple(labels), pool_texts=list(pool)))


def ner(*extra):
    return parse_overrides([*NER, *extra])


# --------------------------------------------------------------------------- alignment


def test_the_first_subword_of_each_word_is_its_row_and_the_others_are_masked(registry, tokenizer):
    task = token_task(registry)
    texts = ["EU rejects 1996-08-22 lamb .", "Peter Blackburn"]
    encoded = task.encode(tokenizer, texts, 64)
    assert isinstance(encoded, Encoded) and set(encoded) == {"input_ids", "token_type_ids", "attention_mask"}
    # independently: [CLS], then each word's subwords (tokenizer.tokenize), [SEP], padding
    for i, text in enumerate(texts):
        expected, position = [-1], 1
        for w, word in enumerate(text.split()):
            pieces = tokenizer.tokenize(word)
            expected += [w] + [-1] * (len(pieces) - 1)
            position += len(pieces)
        expected += [-1] * (encoded.words.shape[1] - len(expected))
        assert encoded.words[i].tolist() == expected
    assert len(tokenizer.tokenize("1996-08-22")) == 5  # one word, five subwords: one row
    assert encoded.words[0].tolist()[:9] == [-1, 0, 1, 2, -1, -1, -1, -1, 3]
    examples = Texts(texts, np.full(2, -1), [np.array([3, 0, 0, 0, 0]), np.array([1, 2])])
    assert task.labels(examples, np.array([0, 1]), encoded).tolist() == [3, 0, 0, 0, 0, 1, 2]
    assert task.labels(examples, np.array([1, 0]), task.encode(tokenizer, texts[::-1], 64)).tolist() == [1, 2, 3, 0, 0, 0, 0]


def test_truncation_drops_the_words_past_max_length_from_rows_labels_and_scores(registry, tokenizer):
    task = token_task(registry)
    text = "EU rejects 1996-08-22 lamb ."
    # 8 tokens: [CLS] eu rejects 1996 - 08 - [SEP]: the date keeps its first subword, "lamb" and "." are cut
    encoded = task.encode(tokenizer, [text], 8)
    assert encoded.words[0].tolist() == [-1, 0, 1, 2, -1, -1, -1, -1]
    examples = Texts([text], np.full(1, -1), [np.array([3, 0, 7, 0, 0])])
    assert task.labels(examples, np.array([0]), encoded).tolist() == [3, 0, 7]
    assert [k.tolist() for k in task.kept_words(tokenizer, [text], 8)] == [[0, 1, 2]]
    assert task.gold(examples, tokenizer, 8).tolist() == [3, 0, 7]
    probs = np.eye(9, dtype=np.float32)[[3, 0, 7]]  # every kept word right
    assert task.score(probs, examples, tokenizer, 8)["entity_f1"] == 1.0


def test_rows_of_token_outputs_and_back(registry, tokenizer):
    task = token_task(registry)
    encoded = task.encode(tokenizer, ["EU 1996-08-22", "Peter Blackburn lamb"], 16)
    words = encoded.words  # [[-1, 0, 1, -1, -1, -1, -1, -1, ...], [-1, 0, 1, 2, -1, ...]]
    outputs = torch.arange(words.numel() * 2, dtype=torch.float32).reshape(*words.shape, 2)
    rows = task.rows(outputs, encoded)
    owners, which = task.row_words(encoded)
    assert owners.tolist() == [0, 0, 1, 1, 1] and which.tolist() == [0, 1, 0, 1, 2]
    positions = [(0, 1), (0, 2), (1, 1), (1, 2), (1, 3)]  # where each row's word starts
    assert torch.equal(rows, torch.stack([outputs[b, t] for b, t in positions]))
    back = torch.zeros_like(outputs)  # rows back into [B, T, C] at their positions
    back[words >= 0] = rows
    assert torch.equal(back[words >= 0], rows) and back[words < 0].abs().sum() == 0
    with pytest.raises(UserError, match=r"per-token outputs \[B, T, C\]"):
        task.rows(torch.zeros(2, 9), encoded)


def test_the_two_views_give_the_same_rows_and_rows_are_word_positions_in_the_pool(registry, tokenizer):
    pool = ["a b c", "EU rejects 1996-08-22 lamb", "Peter Blackburn"]
    task = token_task(registry, pool)
    assert task.offsets.tolist() == [0, 3, 7]
    tokens = lambda texts: task.encode(tokenizer, texts, 8)  # noqa: E731
    # the weak view keeps the date (5 subwords: "lamb" is cut), the strong one masks it (1 subword: "lamb" stays)
    weak = TextBatch(["Peter Blackburn", "EU rejects 1996-08-22 lamb"], tokens)
    strong = TextBatch(["Peter [MASK]", "EU rejects [MASK] lamb"], tokens)
    rows, owners = task.unlabeled_rows(np.array([2, 1]), weak, strong)
    assert rows.tolist() == [7, 8, 3, 4, 5] and owners.tolist() == [0, 0, 1, 1, 1]  # "lamb" (pool row 6) is in one view only
    assert task.rows(torch.zeros(*weak.inputs.words.shape, 9), weak.inputs).shape == (5, 9)
    assert task.rows(torch.zeros(*strong.inputs.words.shape, 9), strong.inputs).shape == (5, 9)
    with pytest.raises(UserError, match="weak and strong views of pool text 1 have 4 and 3 words"):
        task.unlabeled_rows(np.array([1]), TextBatch(["EU rejects 1996-08-22 lamb"], tokens), TextBatch(["EU rejects lamb"], tokens))


# --------------------------------------------------------------------------- selectors per token and per sentence

# pool: sentence 0 "a b c" (rows 0-2), sentence 1 "d e" (rows 3, 4); a batch of both, sentence 1 first
POOL = ["a b c", "d e"]
ROW_PROBS = torch.tensor([[0.96, 0.02, 0.02],   # row 3 (d): confident O
                          [0.10, 0.85, 0.05],   # row 4 (e): class 1, not confident
                          [0.97, 0.02, 0.01],   # row 0 (a): confident O
                          [0.02, 0.96, 0.02],   # row 1 (b): confident 1
                          [0.50, 0.20, 0.30]])  # row 2 (c): unconfident O


def pool_rows(registry, tokenizer):
    task = token_task(registry, POOL, labels=("O", "B-PER", "I-PER"))
    tokens = lambda texts: task.encode(tokenizer, texts, 32)  # noqa: E731
    texts = [POOL[1], POOL[0]]
    return task.unlabeled_rows(np.array([1, 0]), TextBatch(texts, tokens), TextBatch(texts, tokens))


def test_the_threshold_selector_per_token(registry, tokenizer):
    rows, owners = pool_rows(registry, tokenizer)
    assert rows.tolist() == [3, 4, 0, 1, 2] and owners.tolist() == [0, 0, 1, 1, 1]
    record = registry.get("selector", "threshold")
    chosen = record.factory(record.options(threshold=0.95), RunContext(num_classes=3, pool_size=5, steps=10, seed=0)).select(
        ROW_PROBS, torch.as_tensor(rows), 1)
    assert chosen.weights.tolist() == [1.0, 0.0, 1.0, 1.0, 0.0]
    assert torch.equal(chosen.targets, torch.eye(3)[[0, 1, 0, 1, 0]])


def test_flexmatch_learns_per_tag_from_the_words_of_the_pool(registry, tokenizer):
    rows, _ = pool_rows(registry, tokenizer)
    record = registry.get("selector", "flexmatch")
    ctx = RunContext(num_classes=3, pool_size=5, steps=100, seed=0)  # pool_size: the pool's words
    flex = record.factory(record.options(threshold=0.95, warmup="off", mapping="linear"), ctx)
    first = flex.select(ROW_PROBS, torch.as_tensor(rows), 1)
    assert first.weights.tolist() == [1.0] * 5  # nothing learned yet: every T_c = 0
    # confident words: d (row 3) and a (row 0) as O, b (row 1) as tag 1; e and c unconfident
    assert flex.memory.tolist() == [0, 1, -1, 0, -1]
    # σ = [2, 1, 0]: β = [1, 0.5, 0], linear mapping, τ = 0.95 -> T = [0.95, 0.475, 0]
    stats = flex.stats()
    assert [stats[f"threshold/class_{c}"] for c in range(3)] == pytest.approx([0.95, 0.475, 0.0])
    second = flex.select(torch.tensor([[0.90, 0.05, 0.05], [0.3, 0.5, 0.2], [0.1, 0.1, 0.8]]), torch.tensor([2, 4, 3]), 2)
    assert second.weights.tolist() == [0.0, 1.0, 1.0]  # 0.90 < 0.95 (O); 0.5 >= 0.475 (tag 1); tag 2's threshold is 0
    assert flex.stats()["seen_fraction"] == 1.0


def test_class_balanced_top_k_ranks_the_words_of_each_tag_among_themselves(registry, tokenizer):
    """The entity-aware choice: a tag's words compete with each other, not with the O words, so an
    entity word under a global threshold can be kept while a confident O word is dropped."""
    rows, _ = pool_rows(registry, tokenizer)
    record = registry.get("selector", "topk")
    ctx = RunContext(num_classes=3, pool_size=5, steps=10, seed=0)
    # "count": k = ceil(1.0 · 5 words / 3 tags) = 2 per tag. O's words by confidence: a 0.97, d 0.96,
    # c 0.50 -> a, d; tag 1's: b 0.96, e 0.85 -> both (e is under 0.95); tag 2 has none
    count = record.factory(record.options(fraction=1.0), ctx).select(ROW_PROBS, torch.as_tensor(rows), 1)
    assert count.weights.tolist() == [1.0, 1.0, 1.0, 1.0, 0.0]
    assert torch.equal(count.targets, torch.eye(3)[[0, 1, 0, 1, 0]])
    # CBST's "proportion" 0.5: floor(0.5 · 3) = 1 O word (a) and floor(0.5 · 2) = 1 tag-1 word (b)
    cbst = record.factory(record.options(fraction=0.5, per_class="proportion"), ctx).select(ROW_PROBS, torch.as_tensor(rows), 1)
    assert cbst.weights.tolist() == [0.0, 0.0, 1.0, 1.0, 0.0]


def test_sentence_level_selection_keeps_a_sentence_only_when_all_its_tokens_pass():
    weights = torch.tensor([1.0, 0.5, 0.0, 1.0, 1.0, 0.25])
    owners = np.array([0, 0, 0, 1, 1, 2])
    assert whole_examples(weights, owners).tolist() == [0.0, 0.0, 0.0, 1.0, 1.0, 0.25]
    # one row per example (sentence classification): nothing changes
    assert torch.equal(whole_examples(weights, np.arange(6)), weights)


# --------------------------------------------------------------------------- entity F1 against seqeval's own examples


def score_sequences(registry, tokenizer, labels, y_true, y_pred):
    """Scores of predicted tag sequences through the token task's scorer (one-hot probabilities)."""
    task = token_task(registry, labels=labels)
    index = {name: i for i, name in enumerate(labels)}
    texts = [" ".join(f"w{j}" for j in range(len(seq))) for seq in y_true]
    examples = Texts(texts, np.full(len(texts), -1), [np.array([index[t] for t in seq]) for seq in y_true])
    probs = np.eye(len(labels), dtype=np.float32)[[index[t] for seq in y_pred for t in seq]]
    return task.score(probs, examples, tokenizer, 64)


def test_entity_f1_is_seqevals_on_its_readme_example(registry, tokenizer):
    # seqeval README (v1.2.2), "Usage": f1_score 0.50; MISC P = R = F1 = 0, PER 1, support 1 each (default and strict IOB2)
    y_true = [["O", "O", "O", "B-MISC", "I-MISC", "I-MISC", "O"], ["B-PER", "I-PER", "O"]]
    y_pred = [["O", "O", "B-MISC", "I-MISC", "I-MISC", "I-MISC", "O"], ["B-PER", "I-PER", "O"]]
    scores = score_sequences(registry, tokenizer, TAGS, y_true, y_pred)
    assert scores["entity_f1"] == pytest.approx(0.50)
    assert scores["entity_precision"] == pytest.approx(0.50) and scores["entity_recall"] == pytest.approx(0.50)
    assert scores["entity_per_type"] == {"MISC": {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1},
                                         "PER": {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1}}
    assert scores["token_accuracy"] == pytest.approx(8 / 10) == scores["accuracy"]  # two tokens of ten differ


def test_entity_f1_is_strict_iob2_on_seqevals_minimum_case(registry, tokenizer):
    # seqeval README: [I-NP, I-NP, O] against [B-NP, I-NP, O] is an entity by default (conlleval), none in strict IOB2
    scores = score_sequences(registry, tokenizer, ("O", "B-NP", "I-NP"), [["B-NP", "I-NP", "O"]], [["I-NP", "I-NP", "O"]])
    assert scores["entity_f1"] == 0.0 and scores["entity_per_type"]["NP"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0,
                                                                               "support": 1}
    exact = score_sequences(registry, tokenizer, ("O", "B-NP", "I-NP"), [["B-NP", "I-NP", "O"]], [["B-NP", "I-NP", "O"]])
    assert exact["entity_f1"] == 1.0


def test_tags_that_are_not_iob2_get_token_scores_only(registry, tokenizer):
    task = token_task(registry, labels=("NOUN", "VERB"))
    assert task.primary == "accuracy" and "entity_f1" not in task.metrics
    assert score_sequences(registry, tokenizer, ("NOUN", "VERB"), [["NOUN", "VERB"]], [["NOUN", "NOUN"]]) == {
        "accuracy": 0.5, "macro_f1": pytest.approx(1 / 3), "token_accuracy": 0.5}


# --------------------------------------------------------------------------- data and config


def test_token_rows_load_as_words_joined_by_spaces_with_a_tag_per_word(tmp_path):
    d = tmp_path / "ner"
    rows = [{"tokens": ["Peter", "Blackburn", "said"], "tags": ["B-PER", "I-PER", "O"]}, {"tokens": ["Bonn"], "tags": ["B-LOC"]}]
    write_jsonl(d / "train.jsonl", rows * 3)
    write_jsonl(d / "test.jsonl", rows)
    write_jsonl(d / "unlabeled.jsonl", [{"tokens": ["Hi", "there"]}])
    data = load_dataset_dir(d)
    assert data.label_names == ["B-LOC", "B-PER", "I-PER", "O"]  # no labels.json: sorted names
    assert data.train.texts[:2] == ["Peter Blackburn said", "Bonn"] and data.unlabeled == ["Hi there"]
    assert [t.tolist() for t in data.train.tags[:2]] == [[1, 2, 3], [0]] and data.train.labels.tolist() == [-1] * 6
    split = make_split(data, 10, 10, seed=0, labeled_size=2, validation_size=1)
    assert len(split.labeled) == 2 and len(split.validation) == 1 and len(split.pool_texts) == 3 + 1
    assert len(split.pool_gold) == sum(len(t.split()) for t in split.pool_texts) and split.pool_gold[-2:].tolist() == [-1, -1]
    write_jsonl(d / "train.jsonl", [{"tokens": ["New York"], "tags": ["B-LOC"]}])
    with pytest.raises(UserError, match="token 'New York' is empty or holds whitespace"):
        load_dataset_dir(d)


def test_the_token_split_is_seeded_with_validation_from_dev(registry, data_root):
    data = load_dataset_dir(data_root / "conll2003")
    assert data.train.tags is not None and len(data.train) == 14041 and len(data.dev) == 3250 and len(data.test) == 3453
    a = make_split(data, 10, 10, seed=0, labeled_size=50, validation_size=100, test_limit=200, unlabeled_limit=1000)
    b = make_split(data, 10, 10, seed=0, labeled_size=50, validation_size=100, test_limit=200, unlabeled_limit=1000)
    c = make_split(data, 10, 10, seed=1, labeled_size=50, validation_size=100, test_limit=200, unlabeled_limit=1000)
    assert a.labeled.texts == b.labeled.texts != c.labeled.texts and a.test.texts == c.test.texts  # test: the same sample
    assert set(a.validation.texts) <= set(data.dev.texts) and len(a.pool_texts) == 1000
    assert a.pool_gold.tolist() == np.concatenate(a.pool_tags).tolist()
    with pytest.raises(UserError, match="set its label budget in labeled sentences, e.g. dataset.labeled_size=50"):
        make_split(data, 10, 10, seed=0)


def test_the_task_is_chosen_by_the_rows_and_a_mismatch_is_an_error(registry):
    with pytest.raises(UserError, match=r"dataset 'trec' has text \+ label rows .* but task 'token' reads tokens \+ tags rows"):
        prepare(resolve(parse_overrides(["dataset.name=trec", "dataset.task=token", "backbone.name=tiny"]), registry), registry)
    with pytest.raises(UserError, match="dataset.labeled_size .* is for token-classification datasets"):
        prepare(resolve(parse_overrides(["dataset.name=trec", "dataset.labeled_size=50", "backbone.name=tiny"]), registry), registry)
    with pytest.raises(UserError, match="dataset.labeled_size=50"):
        prepare(resolve(parse_overrides(["dataset.name=conll2003", "backbone.name=tiny"]), registry), registry)


def test_presets_views_are_word_aligned_on_token_datasets_and_sentence_run_ids_are_unchanged(registry):
    fixmatch = resolve(ner("method=fixmatch"), registry)
    assert fixmatch.resolved["augmentation"]["strong"]["name"] == "word_mask"  # drop_swap would move words: the task's stand-in
    assert resolve(ner("method=meanteacher"), registry).resolved["augmentation"]["weak"]["name"] == "word_mask"
    chosen = resolve(ner("method=fixmatch", "augmentation.strong=span_mask"), registry)
    assert chosen.resolved["augmentation"]["strong"]["name"] == "span_mask"  # the user's choice stays
    trec = resolve(parse_overrides(["method=fixmatch", "dataset.name=trec"]), registry)
    assert trec.resolved["augmentation"]["strong"]["name"] == "drop_swap"
    legacy = json.loads(json.dumps(trec.resolved))
    for section, key in (("dataset", "labeled_size"), ("dataset", "validation_size"), ("dataset", "task"), ("train", "selection")):
        del legacy[section][key]
    assert trec.run_id == run_id(legacy)  # the new keys at their defaults leave sentence runs' ids as they were


def test_a_ner_directory_given_by_path_gets_the_stand_in_view_with_dataset_task(registry, tmp_path):
    d = tmp_path / "ner"
    rows = [{"tokens": ["Peter", "Blackburn", "said", "so"], "tags": [1, 2, 0, 0]}, {"tokens": ["Bonn", "."], "tags": [5, 0]}]
    write_jsonl(d / "train.jsonl", rows * 10)
    write_jsonl(d / "test.jsonl", rows)
    (d / "labels.json").write_text(json.dumps(TAGS))
    base = [o for o in NER if not o.startswith("dataset.")] + [f"dataset.name={d}", "dataset.labeled_size=4",
                                                               "dataset.validation_size=2", "method=fixmatch"]
    unknown = resolve(parse_overrides(base), registry)  # not read yet: the preset's drop_swap stays, and the run refuses it
    assert unknown.resolved["augmentation"]["strong"]["name"] == "drop_swap"
    with pytest.raises(UserError, match="augmentation.strong = 'drop_swap' does not keep every word in place"):
        prepare(unknown, registry)
    told = resolve(parse_overrides([*base, "dataset.task=token"]), registry)
    assert told.resolved["augmentation"]["strong"]["name"] == "word_mask"
    assert train(told, prepare(told, registry), progress=False).result["task"] == "token"


def test_an_augmentation_that_breaks_the_word_alignment_is_refused_naming_those_that_keep_it(registry):
    cfg = resolve(ner("method=fixmatch", "augmentation.strong=drop_swap"), registry)
    with pytest.raises(UserError) as error:
        prepare(cfg, registry)
    message = str(error.value)
    assert "augmentation.strong = 'drop_swap' does not keep every word in place" in message
    assert re.search(r"These keep them .*: identity, mlm_substitute, span_mask, token_mask, word_mask", message)
    for refused in ("word_mask augmentation.strong.mask_token=''", "span_mask augmentation.strong.collapse=true",
                    "sequence augmentation.strong.steps=[\"word_mask\",\"word_swap\"]"):
        name, option = refused.split(" ")
        with pytest.raises(UserError, match=f"augmentation.strong = '{name}' does not keep"):
            prepare(resolve(ner("method=fixmatch", f"augmentation.strong={name}", option), registry), registry)


def test_a_view_whose_word_count_differs_anyway_stops_the_run_naming_the_augmentation():
    liar = lambda texts, seeds: [t.split()[0] for t in texts]  # noqa: E731  (claims nothing, keeps one word)
    stream = ViewStream(liar, {"name": "liar"}, "", "strong", ["a b c"], 0, 0, None, keep_words=True)
    with pytest.raises(UserError, match=r"augmentation.strong = 'liar' changed a text's number of words \(3 -> 1\)"):
        stream.draw(np.array([0]), np.array([0]))


def test_the_cotraining_peer_takes_one_adamw_step_on_labeled_words_and_the_students_confident_words(registry):
    """The peer's loss, computed here by hand: CE on the labeled batch's words + the sum of CE on the
    unlabeled words where the student's confidence reaches the threshold, divided by all of that
    batch's words; one AdamW step on it gives the peer's new weights."""
    import copy

    import torch.nn.functional as F

    cfg = resolve(ner("method=cotraining", "teacher.batch_size=3"), registry)
    parts = prepare(cfg, registry)
    teacher, student, task = parts.teacher, parts.student, parts.task
    tokenize = lambda texts: task.encode(parts.tokenizer, texts, 48)  # noqa: E731
    batch = TextBatch(parts.split.pool_texts[:4], tokenize)
    teacher.probs(batch)  # the weak view the student is taught on: the peer remembers it
    peer, labeled = copy.deepcopy(teacher.peer), parts.split.labeled
    idx = copy.deepcopy(teacher.batches).next()
    optimizer = torch.optim.AdamW(peer.parameters(), lr=cfg.resolved["teacher"]["lr"])
    student.eval()
    with torch.no_grad():
        student_probs = student(**batch.inputs).logits.softmax(-1)
    words = batch.inputs.words >= 0
    confidence, pseudo = student_probs[words].max(-1)
    teacher.threshold = float(confidence.median())  # an untrained student is barely above 1/9 anywhere: half pass
    keep = confidence >= teacher.threshold
    assert 0 < int(keep.sum()) < int(words.sum())  # some words pass, some do not: the mask matters
    inputs = tokenize([labeled.texts[i] for i in idx])
    gold = torch.as_tensor(np.concatenate([labeled.tags[i] for i in idx]))  # no word is cut at 48 tokens here
    assert int((inputs.words >= 0).sum()) == len(gold)
    torch.manual_seed(7)
    peer.train()
    loss = F.cross_entropy(peer(**inputs).logits[inputs.words >= 0], gold)
    per_word = F.cross_entropy(peer(**batch.inputs).logits[words], pseudo, reduction="none")
    loss = loss + per_word[keep].sum() / int(words.sum())
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    torch.manual_seed(7)  # the same dropout masks
    teacher.update(student, 1, True)
    assert teacher.pseudo_labels == int(keep.sum()) and teacher.remembered is None
    for (name, mine), theirs in zip(peer.named_parameters(), teacher.peer.parameters()):
        torch.testing.assert_close(theirs, mine, msg=name)


def test_a_cotraining_peer_of_another_backbone_meets_the_students_words(registry):
    """A peer with its own backbone encodes the words itself: its probabilities come back at the
    student's positions of the same words, and the student's pseudo-labels reach it at its own."""
    cfg = resolve(ner("method=cotraining", "teacher.backbone=tiny", "teacher.threshold=0.0"), registry)
    parts = prepare(cfg, registry)
    assert parts.teacher.own_tokens
    result = train(cfg, parts, progress=False).result
    assert result["task"] == "token" and 0 <= result["test_entity_f1"] <= 1
    assert parts.teacher.pseudo_labels > 0  # threshold 0: every word the student encoded reached the peer


def test_the_prompt_teacher_still_refuses_token_tasks_naming_those_that_do_them(registry):
    from testbed_plugins.prompt_teacher import PromptOptions, PromptTeacher

    context = RunContext(num_classes=len(TAGS), pool_size=0, steps=1, seed=0, task=token_task(registry))
    with pytest.raises(UserError, match="teacher 'prompt' does not do token classification yet .* self, ema, snapshot, model and cotrain"):
        PromptTeacher(PromptOptions(), context)


# --------------------------------------------------------------------------- end to end


@pytest.mark.parametrize("method", ["supervised", "pseudolabel", "pimodel", "meanteacher", "uda", "fixmatch", "flexmatch",
                                    "freematch", "softmatch", "noisy-student", "distillation", "cotraining"])
def test_presets_run_unchanged_on_conll2003(registry, method):
    low = "selector.threshold=0.3" if method in ("pseudolabel", "fixmatch", "uda", "noisy-student") else "seed=0"  # some pass
    extra = ["teacher.backbone=tiny", "teacher.steps=3"] if method == "distillation" else []  # a small teacher, quickly
    cfg = resolve(ner(f"method={method}", low, *extra), registry)
    records = []
    trained = train(cfg, prepare(cfg, registry), on_evaluation=records.append, progress=False)
    result = trained.result
    assert result["task"] == "token" and 0 <= result["test_entity_f1"] <= 1 and 0 <= result["test_entity_f1_best_val"] <= 1
    assert result["test_accuracy"] == result["test_token_accuracy"]
    assert set(result["test_entity_per_type"]) == {"LOC", "MISC", "ORG", "PER"}
    assert {"val_entity_f1", "test_entity_f1"} <= set(records[-1])
    best = max(records, key=lambda r: r["val_entity_f1"])  # best on validation: by entity F1 (the first on ties)
    assert result["best_val_step"] == best["step"] and result["test_entity_f1_best_val"] == best["test_entity_f1"]
    probs, labels = trained.predictions["test_probs_last"], trained.predictions["test_labels"]
    assert probs.shape == (len(labels), 9) and len(labels) > 30  # a row per test word
    if method != "supervised":
        assert records[-1]["mask_rate"] is not None  # pseudo-labels counted per word
    if method == "distillation":  # a fixed teacher is scored as the student is
        assert 0 <= result["teacher_test_entity_f1"] <= 1 and 0 <= result["teacher_test_accuracy"] <= 1


@pytest.mark.parametrize("selector", [["selector.name=uncertainty", "selector.passes=2", "selector.threshold=0.1", "selector.max_uncertainty=1.0"],
                                      ["selector.name=curriculum"], ["selector.name=topk", "selector.scope=round"]],
                         ids=lambda s: s[0].split("=")[1])
def test_every_selector_works_per_token(registry, selector):
    cfg = resolve(ner("method=fixmatch", *selector), registry)
    records = []
    train(cfg, prepare(cfg, registry), on_evaluation=records.append, progress=False)
    assert all(0 <= r["mask_rate"] <= 1 for r in records) and any(r["pseudo_labels_selected"] > 0 for r in records)


def test_sentence_level_selection_in_a_run(registry):
    rows = resolve(ner("method=fixmatch", "selector.threshold=0.2"), registry)
    sentences = resolve(ner("method=fixmatch", "selector.threshold=0.2", "train.selection=example"), registry)
    assert rows.run_id != sentences.run_id
    by_row = train(rows, prepare(rows, registry), progress=False).result["mask_rate"]
    by_sentence = train(sentences, prepare(sentences, registry), progress=False).result["mask_rate"]
    assert by_sentence <= by_row


def test_a_token_run_resumed_from_a_checkpoint_ends_with_the_numbers_of_an_uninterrupted_one(registry):
    from test_checkpoints import saved, untimed

    cfg = resolve(ner("method=flexmatch", "train.steps=6", "train.checkpoint_every=2", "selector.threshold=0.3"), registry)
    states, records = [], []
    full = train(cfg, prepare(cfg, registry), on_evaluation=records.append, progress=False,
                 checkpoint=lambda state: states.append(saved(state)))
    resumed_records = []
    resumed = train(cfg, prepare(cfg, registry), on_evaluation=resumed_records.append, progress=False, resume=states[0])
    assert untimed(resumed) == untimed(full) and "test_entity_per_type_best_val" in full.result
    drop = lambda rs: [{k: v for k, v in r.items() if k not in TIME_FIELDS} for r in rs]  # noqa: E731
    assert drop(resumed_records) == drop(records)[1:]


def test_the_done_when_command_writes_test_entity_f1(tmp_path):
    """`testbed run method=fixmatch dataset.name=conll2003 dataset.labeled_size=50 backbone.name=tiny`, made short."""
    args = ["run", "method=fixmatch", "dataset.name=conll2003", "dataset.labeled_size=50", "backbone.name=tiny",
            "train.steps=4", "train.eval_every=2", "dataset.test_limit=50", "dataset.validation_size=20",
            "dataset.unlabeled_limit=100", "train.threads=1", "--out", str(tmp_path / "runs"), "--quiet"]
    ran = CliRunner().invoke(main, args)
    assert ran.exit_code == 0, ran.output
    assert re.search(r"entity F1 \d\.\d{4} \(last, strict IOB2\)", ran.output)
    (result_file,) = (tmp_path / "runs").glob("*/result.json")
    result = json.loads(result_file.read_text())
    assert 0 <= result["test_entity_f1"] <= 1 and result["labeled_size"] == 50 and result["task"] == "token"
    assert json.loads((result_file.parent / "config.json").read_text())["augmentation"]["strong"]["name"] == "word_mask"
    listing = CliRunner().invoke(main, ["results", str(tmp_path / "runs")])
    assert listing.exit_code == 0 and "test_entity_f1" in listing.output
    report = CliRunner().invoke(main, ["report", str(tmp_path / "runs"), "-o", str(tmp_path / "report")])
    assert report.exit_code == 0, report.output
    assert "conll2003 · 50 labeled sentences" in (tmp_path / "report" / "index.md").read_text()


@pytest.mark.slow  # reads every dataset (IMDB's 100k texts); tests/test_end_to_end.py checks the listing in the fast lane too
def test_testbed_datasets_lists_conll2003_as_token_classification():
    result = CliRunner().invoke(main, ["datasets"])
    assert result.exit_code == 0, result.output
    assert re.search(r"^conll2003\s+token\s+9\s+14041\s+3250\s+3453\s+0\s+O, B-PER, I-PER", result.output, re.M)
    assert re.search(r"^trec\s+sentence\s+6\s", result.output, re.M)
    rows = {row["name"]: row for row in json.loads(CliRunner().invoke(main, ["datasets", "--json"]).stdout)}
    assert rows["conll2003"]["task"] == "token" and rows["sst2"]["task"] == "sentence"


def test_a_distillation_teachers_words_land_at_the_students_positions():
    from testbed_plugins.teachers import in_student_positions

    probs = torch.tensor([[[0.0, 1.0], [0.9, 0.1], [0.2, 0.8], [0.3, 0.7]]])  # teacher: words 0, 1 at positions 1, 3
    own = torch.tensor([[-1, 0, -1, 1]])
    student = torch.tensor([[-1, 0, 1, 2, -1]])  # the student's positions 1, 2, 3 start words 0, 1, 2 (2: cut by the teacher)
    placed = in_student_positions(probs, own, student)
    assert placed.shape == (1, 5, 2)
    assert placed[0, 1].tolist() == pytest.approx([0.9, 0.1]) and placed[0, 2].tolist() == pytest.approx([0.3, 0.7])
    assert placed[0, 3].tolist() == [0.5, 0.5]


def test_token_heads_of_the_backbones(registry):
    from testbed.loop import backbone_context

    for name, options in (("tiny", {"layers": 1, "hidden": 32, "heads": 2, "intermediate": 64}), ("minilm", {}),
                          ("tiny-decoder", {}), ("tiny", {"layers": 1, "hidden": 32, "heads": 2, "intermediate": 64,
                                                          "lora": {"r": 2}})):
        record = registry.get("backbone", name)
        model, tokenizer = record.factory(record.options(**options), backbone_context(registry, 9, "token"))
        inputs = tokenizer(["Peter Blackburn said"], return_tensors="pt")
        assert model(**inputs).logits.shape == (1, inputs["input_ids"].shape[1], 9)
