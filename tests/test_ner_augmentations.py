"""Augmentations of the labeled batch (``augmentation.labeled``) and the NER augmentations of Dai & Adel
2020 that keep every word's tag: mention replacement, synonyms of O words, shuffles within segments.
Hand-computed views, determinism, the refusals, the seam in the loop (views reach the model with
their rewritten tags, run ids, checkpoints), compositions of tagged examples."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_checkpoints import saved, untimed
from test_ner import NER, TAGS, ner

from conftest import FAST, TIME_FIELDS
from testbed import Augmenter, Texts, UserError
from testbed.config import parse_overrides, resolve, run_id
from testbed.loop import prepare, train
from testbed.views import LabeledViews, build

O, B_PER, I_PER, B_ORG, I_ORG, B_LOC, I_LOC, B_MISC, I_MISC = range(9)  # noqa: E741  (O: the tag's own name)
# the labeled set the augmenters are fitted on: PER mentions "Peter Blackburn" and "Mary", ORG "EU", LOC "Bonn"
LABELED = Texts(["Peter Blackburn visited Bonn .", "Mary spoke to EU officials"], np.full(2, -1),
                [np.array([B_PER, I_PER, O, B_LOC, O]), np.array([B_PER, O, O, B_ORG, O])])


def fitted(spec, labeled=LABELED, names=TAGS, registry=None) -> Augmenter:
    return build(spec, registry, labeled=labeled, label_names=names)[0]


def views(augmenter, text, tags, seeds=range(40)):
    """{(view, its tags)} over ``seeds``: the views one text gets."""
    out = augmenter.tagged([text] * len(seeds), [np.asarray(tags)] * len(seeds), np.asarray(list(seeds)))
    return {(view, tuple(t.tolist())) for view, t in zip(*out)}


# --------------------------------------------------------------------------- mention replacement


def test_mention_replace_builds_its_dictionary_from_the_labeled_set(registry):
    mr = fitted({"name": "mention_replace"}, registry=registry)
    assert mr.mentions == {"PER": [("Peter", "Blackburn"), ("Mary",)], "LOC": [("Bonn",)], "ORG": [("EU",)]}


def test_a_mention_is_swapped_for_another_of_its_type_and_its_tags_rewritten_for_the_new_length(registry):
    mr = fitted({"name": "mention_replace", "p": 1.0}, registry=registry)
    # "Mary" (1 word) -> "Peter Blackburn" (2 words, B-PER I-PER); EU is the only ORG: it stays
    assert views(mr, "Mary spoke to EU officials", [B_PER, O, O, B_ORG, O]) == {
        ("Peter Blackburn spoke to EU officials", (B_PER, I_PER, O, O, B_ORG, O))}
    # "Peter Blackburn" (2 words) -> "Mary" (1 word): the I-PER goes with it; Bonn is the only LOC
    assert views(mr, "Peter Blackburn visited Bonn .", [B_PER, I_PER, O, B_LOC, O]) == {
        ("Mary visited Bonn .", (B_PER, O, B_LOC, O))}
    # two adjacent mentions (B-PER I-PER B-PER): each is replaced on its own, by one of the other PER mentions
    assert views(mr, "John Smith Mary met", [B_PER, I_PER, B_PER, O]) == {
        ("Peter Blackburn Peter Blackburn met", (B_PER, I_PER, B_PER, I_PER, O)),
        ("Mary Peter Blackburn met", (B_PER, B_PER, I_PER, O))}
    # a type the labeled set has no mention of (MISC) stays as it is
    assert views(mr, "German beer", [B_MISC, O]) == {("German beer", (B_MISC, O))}


def test_mention_replace_replaces_each_mention_with_probability_p(registry):
    mr = fitted({"name": "mention_replace", "p": 0.3}, registry=registry)
    out, _ = mr.tagged(["Mary spoke"] * 2000, [np.array([B_PER, O])] * 2000, np.arange(2000))
    assert np.mean([view != "Mary spoke" for view in out]) == pytest.approx(0.3, abs=0.04)
    never = fitted({"name": "mention_replace", "p": 0.0}, registry=registry)
    assert views(never, "Mary spoke", [B_PER, O]) == {("Mary spoke", (B_PER, O))}


def test_mention_replace_refuses_tags_that_are_not_iob2(registry):
    with pytest.raises(UserError, match="mention_replace needs IOB2 tag names"):
        fitted("mention_replace", Texts(["a b"], np.full(1, -1), [np.array([0, 1])]), ("NOUN", "VERB"), registry)


# --------------------------------------------------------------------------- segment shuffle


def test_segment_shuffle_moves_words_only_within_their_segment_and_keeps_the_tags(registry):
    shuffle = fitted({"name": "segment_shuffle", "p": 1.0}, registry=registry)
    text = "the big red dog Peter Blackburn Smith ran . Mary Bonn"
    tags = [O, O, O, O, B_PER, I_PER, I_PER, O, O, B_PER, B_LOC]
    # segments: [the big red dog] [Peter Blackburn Smith] [ran .] [Mary] [Bonn]
    seen = views(shuffle, text, tags, range(200))
    segments = [(0, 4), (4, 7), (7, 9), (9, 10), (10, 11)]
    words = text.split()
    for view, view_tags in seen:
        assert view_tags == tuple(tags)
        out = view.split()
        for start, end in segments:
            assert sorted(out[start:end]) == sorted(words[start:end])
    # p = 1: every segment of two or more words is shuffled; the three are shuffled independently
    for start, end in segments[:3]:
        assert len({tuple(view.split()[start:end]) for view, _ in seen}) == {4: 24, 3: 6, 2: 2}[end - start]
    # two mentions of one type side by side (B-PER B-PER) are two segments: never mixed
    assert views(shuffle, "Peter Mary", [B_PER, B_PER]) == {("Peter Mary", (B_PER, B_PER))}
    never = fitted({"name": "segment_shuffle", "p": 0.0}, registry=registry)
    assert views(never, text, tags) == {(text, tuple(tags))}


def test_segment_shuffle_runs_of_one_tag_for_tags_that_are_not_iob2(registry):
    shuffle = fitted({"name": "segment_shuffle", "p": 1.0}, Texts(["a"], np.full(1, -1), [np.array([0])]), ("NOUN", "VERB"), registry)
    for view, tags in views(shuffle, "cat dog runs", [0, 0, 1]):
        assert tags == (0, 0, 1) and view.split()[2] == "runs" and sorted(view.split()[:2]) == ["cat", "dog"]


# --------------------------------------------------------------------------- synonyms of O words


@pytest.fixture
def synonyms_file(tmp_path):
    path = tmp_path / "synonyms.json"
    # "peter" and "bonn" have synonyms too: they are entity words, so they must never be replaced
    path.write_text(json.dumps({"market": ["marketplace", "food market"], "peter": ["rock"], "bonn": ["city"], "the": ["a"]}))
    return str(path)


def test_o_synonym_replaces_o_words_only_and_tags_a_multi_word_synonyms_extra_words_o(registry, synonyms_file):
    sr = fitted({"name": "o_synonym", "p": 1.0, "synonyms": synonyms_file}, registry=registry)
    # "Peter" and "Bonn" are entities; "the" is a stop word; "Market," keeps its capital and comma
    assert views(sr, "Peter sold the Market, in Bonn", [B_PER, O, O, O, O, B_LOC]) == {
        ("Peter sold the Marketplace, in Bonn", (B_PER, O, O, O, O, B_LOC)),
        ("Peter sold the Food market, in Bonn", (B_PER, O, O, O, O, O, B_LOC))}
    never = fitted({"name": "o_synonym", "p": 0.0, "synonyms": synonyms_file}, registry=registry)
    assert views(never, "the market", [O, O]) == {("the market", (O, O))}


def test_o_synonym_with_wordnet_never_touches_entity_words(registry, data_root):
    from testbed_plugins._resources import find_wordnet

    if find_wordnet() is None:
        pytest.skip("WordNet is not installed (python -m nltk.downloader wordnet)")
    from testbed.data import load_dataset_dir

    data = load_dataset_dir(data_root / "conll2003")
    texts, tags = data.train.texts[:60], data.train.tags[:60]
    sr = fitted({"name": "o_synonym", "p": 1.0}, Texts(texts, np.full(60, -1), tags), data.label_names, registry)
    out, out_tags = sr.tagged(texts, tags, np.arange(60))
    changed = 0
    for text, tag, view, view_tag in zip(texts, tags, out, out_tags):
        assert len(view.split()) == len(view_tag)
        entities = [(w, t) for w, t in zip(text.split(), tag.tolist()) if data.label_names[t] != "O"]
        assert [(w, t) for w, t in zip(view.split(), view_tag.tolist()) if data.label_names[t] != "O"] == entities
        changed += view != text
    assert changed > 30  # most sentences have an O word with a WordNet synonym


# --------------------------------------------------------------------------- determinism, API, compositions


@pytest.mark.parametrize("spec", [{"name": "mention_replace", "p": 0.5}, {"name": "segment_shuffle", "p": 0.5},
                                  {"name": "one_of", "choices": ["identity", "mention_replace"]}], ids=lambda s: s["name"])
def test_a_view_depends_only_on_its_text_tags_and_seed(registry, spec):
    texts = ["John Smith Mary met the big red dog", "Mary spoke to EU officials"] * 20
    tags = [np.array([B_PER, I_PER, B_PER, O, O, O, O, O]), np.array([B_PER, O, O, B_ORG, O])] * 20
    seeds = np.arange(40) * 7919
    a = fitted(spec, registry=registry).tagged(texts, tags, seeds)
    b = fitted(spec, registry=registry).tagged(texts[::-1], tags[::-1], seeds[::-1])  # another batch order, fresh augmenter
    assert a[0] == b[0][::-1] and [t.tolist() for t in a[1]] == [t.tolist() for t in b[1][::-1]]
    assert len(set(a[0])) > 2  # the seeds give different views


def test_one_of_identity_and_mention_replace_augments_about_half_the_draws(registry):
    either = fitted({"name": "one_of", "choices": ["identity", {"name": "mention_replace", "p": 1.0}]}, registry=registry)
    assert either.tag_aware and either.needs_tags and not either.keeps_words
    out, tags = either.tagged(["Mary spoke"] * 1000, [np.array([B_PER, O])] * 1000, np.arange(1000))
    replaced = [view == "Peter Blackburn spoke" and t.tolist() == [B_PER, I_PER, O] for view, t in zip(out, tags)]
    assert set(out) == {"Mary spoke", "Peter Blackburn spoke"} and np.mean(replaced) == pytest.approx(0.5, abs=0.05)


def test_sequence_passes_tagged_examples_through_each_step(registry):
    steps = fitted({"name": "sequence", "steps": [{"name": "mention_replace", "p": 1.0}, {"name": "word_mask", "p": 1.0}]},
                   registry=registry)
    (view,), (tags,) = steps.tagged(["Mary spoke to EU officials"], [np.array([B_PER, O, O, B_ORG, O])], np.array([3]))
    assert tags.tolist() == [B_PER, I_PER, O, O, B_ORG, O] and len(view.split()) == 6 and "[MASK]" in view
    # a step that neither keeps words nor rewrites tags: the sequence cannot serve tagged examples
    assert not fitted({"name": "sequence", "steps": ["word_swap", "mention_replace"]}, registry=registry).serves_tags


def test_word_keeping_augmenters_keep_the_tags_and_tag_aware_ones_are_declared(registry):
    mask = fitted({"name": "word_mask", "p": 1.0}, registry=registry)
    (view,), (tags,) = mask.tagged(["Mary spoke to EU officials"], [np.array([B_PER, O, O, B_ORG, O])], np.array([1]))
    assert view != "Mary spoke to EU officials" and tags.tolist() == [B_PER, O, O, B_ORG, O]
    with pytest.raises(ValueError, match="neither keeps every word in place nor rewrites tags"):
        fitted("word_swap", registry=registry).tagged(["a b"], [np.array([0, 0])], np.array([1]))
    reverse = Augmenter(tagged=lambda texts, tags, seeds: ([" ".join(t.split()[::-1]) for t in texts], [t[::-1] for t in tags]),
                        needs_tags=True)  # a third-party tag-aware augmentation, as plugins write one
    assert reverse.tag_aware and reverse.serves_tags and not reverse.keeps_words
    assert [t.tolist() for t in reverse.tagged(["Mary spoke"], [np.array([B_PER, O])], np.array([0]))[1]] == [[O, B_PER]]
    with pytest.raises(UserError, match="needs gold tags"):
        reverse(["Mary spoke"], np.array([0]))


# --------------------------------------------------------------------------- config and refusals


def test_augmentation_labeled_at_its_default_leaves_run_ids_as_they_were(registry):
    for overrides in ([*FAST, "method=fixmatch"], [*NER, "method=flexmatch"]):
        cfg = resolve(parse_overrides(overrides), registry)
        assert cfg.resolved["augmentation"]["labeled"] == {"name": "identity"}
        older = json.loads(json.dumps(cfg.resolved))
        del older["augmentation"]["labeled"]  # a config.json written before the key existed
        assert run_id(older) == cfg.run_id
        assert resolve(parse_overrides([*overrides, "augmentation.labeled=mention_replace"]), registry).run_id != cfg.run_id
    with pytest.raises(UserError, match="Unknown config key 'augmentation.labelled'.*'labeled'"):
        resolve(parse_overrides(["augmentation.labelled=identity"]), registry)


def test_a_token_task_refuses_a_labeled_augmentation_that_loses_the_tags_naming_those_that_work(registry):
    with pytest.raises(UserError) as error:
        prepare(resolve(ner("augmentation.labeled=drop_swap"), registry), registry)
    message = str(error.value)
    assert "augmentation.labeled = 'drop_swap' neither keeps every word in place nor rewrites the tags" in message
    assert "identity, mention_replace, mlm_substitute, o_synonym, segment_shuffle, span_mask, token_mask, word_mask" in message
    with pytest.raises(UserError, match="augmentation.labeled = 'sequence' neither keeps"):
        prepare(resolve(ner("augmentation.labeled.name=sequence", 'augmentation.labeled.steps=["word_swap","mention_replace"]'),
                        registry), registry)


@pytest.mark.parametrize("view", ["augmentation.strong=mention_replace", "augmentation.weak=segment_shuffle",
                                  'augmentation.strong={name="one_of", choices=["identity", "mention_replace"]}'])
def test_a_tag_reading_augmentation_as_a_view_of_unlabeled_texts_is_refused(registry, view):
    with pytest.raises(UserError, match=r"augmentation\.(strong|weak) = '\w+' needs gold tags.*use it as augmentation.labeled"):
        prepare(resolve(ner("method=fixmatch", view), registry), registry)


def test_a_sentence_task_refuses_tag_reading_augmentations_and_takes_any_other(registry):
    with pytest.raises(UserError, match="augmentation.labeled = 'mention_replace' needs gold tags.*dataset 'trec' has a label per text"):
        prepare(resolve(parse_overrides([*FAST, "augmentation.labeled=mention_replace"]), registry), registry)
    cfg = resolve(parse_overrides([*FAST, "augmentation.labeled=drop_swap"]), registry)
    parts = prepare(cfg, registry)
    batch, rows = parts.labeled_views.draw(np.array([0, 1, 2, 0]))
    labeled = parts.split.labeled
    assert batch.labels.tolist() == labeled.labels[[0, 1, 2, 0]].tolist() and rows.tolist() == [0, 1, 2, 3]
    assert all(view != labeled.texts[i] for view, i in zip(batch.texts, [0, 1, 2, 0]))  # drop_swap changed every one
    assert batch.texts[0] != batch.texts[3]  # the second draw of example 0: another seed, another view
    assert prepare(resolve(parse_overrides(FAST), registry), registry).labeled_views is None  # identity: no machinery


# --------------------------------------------------------------------------- the loop


def test_labeled_views_are_seeded_per_draw_and_resume_from_their_counts(registry):
    def stream():
        return LabeledViews(fitted({"name": "mention_replace", "p": 0.5}, registry=registry), {"name": "mention_replace"}, LABELED, seed=0)

    first = stream()
    draws = [first.draw(np.array([1, 1, 0])) for _ in range(3)]
    state = json.loads(json.dumps(first.state_dict()))  # as a checkpoint holds it
    draws += [first.draw(np.array([1, 1, 0])) for _ in range(3)]
    batch, rows = draws[0]
    assert rows.tolist() == [0, 1, 2] and batch.tags is not None and [len(t) for t in batch.tags] == [len(x.split()) for x in batch.texts]
    assert state == {"draws": [3, 6]} and first.state_dict() == {"draws": [6, 12]}
    # each draw of "Mary spoke to EU officials" has its own seed: both of its views appear
    assert {b.texts[j] for b, _ in draws for j in (0, 1)} == {"Mary spoke to EU officials", "Peter Blackburn spoke to EU officials"}
    again = stream()
    assert [again.draw(np.array([1, 1, 0]))[0].texts for _ in range(6)] == [b.texts for b, _ in draws]  # the same seeds
    resumed = stream()
    resumed.load_state_dict(state)
    assert [resumed.draw(np.array([1, 1, 0]))[0].texts for _ in range(3)] == [b.texts for b, _ in draws[3:]]


def trained_on(cfg, registry):
    """Train ``cfg``; (its result, the parts, the labeled batches' (view, tags) that are not labeled
    texts themselves, every text the task encoded for the model)."""
    parts = prepare(cfg, registry)
    task, labeled = parts.task, parts.split.labeled
    encoded, supervised = [], []
    encode, labels = task.encode, task.labels
    task.encode = lambda tokenizer, texts, max_length: encoded.extend(texts) or encode(tokenizer, texts, max_length)
    task.labels = lambda examples, rows, inputs: supervised.append((examples, rows)) or labels(examples, rows, inputs)
    result = train(cfg, parts, progress=False).result
    assert len(supervised) == cfg.train.steps
    new = [(examples.texts[i], examples.tags[i]) for examples, rows in supervised for i in rows if examples.texts[i] not in labeled.texts]
    return result, parts, new, set(encoded)


def test_augmented_labeled_sentences_reach_the_model_with_their_rewritten_tags(registry):
    cfg = resolve(ner("augmentation.labeled=mention_replace", "augmentation.labeled.p=1.0"), registry)
    result, parts, new, encoded = trained_on(cfg, registry)
    assert result["task"] == "token" and 0 <= result["test_entity_f1"] <= 1
    assert new, "no augmented labeled sentence was trained on"
    assert all(len(text.split()) == len(tags) for text, tags in new)
    assert {text for text, _ in new} <= encoded  # the student saw them
    names, labeled = parts.split.label_names, parts.split.labeled
    mentions = {(w, names[t][2:]) for x, ts in zip(labeled.texts, labeled.tags) for w, t in zip(x.split(), ts) if names[t] != "O"}
    for text, tags in new:  # every entity word of a view is a word of a mention of the labeled set, with its type
        assert {(w, names[t][2:]) for w, t in zip(text.split(), tags) if names[t] != "O"} <= mentions


def test_the_frozen_backbone_encodes_augmented_labeled_sentences(registry):
    from test_frozen import ner_config

    from testbed_plugins.frozen import ENCODED

    before = sum(ENCODED.values())
    result, _, new, encoded = trained_on(ner_config(registry, "augmentation.labeled=mention_replace", "augmentation.labeled.p=1.0"),
                                         registry)
    assert result["task"] == "token" and 0 <= result["test_entity_f1"] <= 1
    assert new and {text for text, _ in new} <= encoded and sum(ENCODED.values()) > before


def test_identity_trains_on_the_labeled_examples_themselves(registry):
    cfg = resolve(ner(), registry)
    parts = prepare(cfg, registry)
    seen = []
    labels = parts.task.labels
    parts.task.labels = lambda examples, rows, inputs: seen.append(examples) or labels(examples, rows, inputs)
    train(cfg, parts, progress=False)
    assert parts.labeled_views is None and all(examples is parts.split.labeled for examples in seen)


def test_a_run_with_labeled_augmentation_resumed_from_a_checkpoint_ends_with_the_same_numbers(registry):
    cfg = resolve(ner("method=fixmatch", "selector.threshold=0.3", "train.steps=6", "train.checkpoint_every=2",
                      'augmentation.labeled={name="one_of", choices=["identity", "mention_replace", "segment_shuffle"]}'), registry)
    states, records = [], []
    full = train(cfg, prepare(cfg, registry), on_evaluation=records.append, progress=False,
                 checkpoint=lambda state: states.append(saved(state)))
    assert [state["step"] for state in states] == [2, 4] and sum(states[0]["labeled_views"]["draws"]) == 2 * cfg.train.batch_size
    resumed_records = []
    resumed = train(cfg, prepare(cfg, registry), on_evaluation=resumed_records.append, progress=False, resume=states[0])
    assert untimed(resumed) == untimed(full)
    drop = lambda rs: [{k: v for k, v in r.items() if k not in TIME_FIELDS} for r in rs]  # noqa: E731
    assert drop(resumed_records) == drop(records)[1:]
    other = resolve(ner("method=fixmatch", "selector.threshold=0.3", "train.steps=6", "train.checkpoint_every=2"), registry)
    assert untimed(train(other, prepare(other, registry), progress=False)) != untimed(full)  # the augmentation changed the run


def test_testbed_plugins_lists_them_with_their_summaries():
    from click.testing import CliRunner

    from testbed.cli import main

    listing = CliRunner().invoke(main, ["plugins", "-v"])
    assert listing.exit_code == 0, listing.output
    for name, summary in (("mention_replace", "each entity mention replaced"), ("o_synonym", "each O word replaced"),
                          ("segment_shuffle", "the words of each same-label segment shuffled")):
        assert f"augmentation  {name}: NER (augmentation.labeled): {summary}" in listing.output
    assert "  augmentation  mention_replace, o_synonym, segment_shuffle" in CliRunner().invoke(main, ["plugins"]).output


def test_the_time_spent_augmenting_the_labeled_batch_counts_in_augment_seconds(registry):
    import time

    cfg = resolve(ner("augmentation.labeled=segment_shuffle"), registry)
    parts = prepare(cfg, registry)
    draw = parts.labeled_views.draw
    parts.labeled_views.draw = lambda idx: time.sleep(0.05) or draw(idx)  # a slow augmentation, 0.05 s a batch
    result = train(cfg, parts, progress=False).result
    assert result["augment_seconds"] >= 0.05 * cfg.train.steps  # supervised: no unlabeled views, only the labeled ones
