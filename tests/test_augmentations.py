"""The augmentations: identity, word and token level, EDA, language-model ones, precomputed views, compositions."""

# Each is seeded per text (same seeds, same views, whatever the batch), passes bad input through and
# counts it, and rejects unknown options; FixMatch runs end to end with several of them as strong view.

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from conftest import FAST, read_jsonl, write_jsonl
from testbed import resources
from testbed.config import parse_overrides, resolve
from testbed.errors import UserError
from testbed.runs import execute
from testbed.views import build_augmentation
from testbed_plugins import _resources as nltk_resources

NO_SYNONYMS = {"name": "eda", "alpha_sr": 0.0, "alpha_ri": 0.0}
NATIVE = {
    "drop_swap": "drop_swap",
    "word_delete": "word_delete",
    "word_swap": "word_swap",
    "word_mask": "word_mask",
    "eda_swap_delete": NO_SYNONYMS,
    "strong": "strong",
    "token_mask": "token_mask",
    "span_mask": "span_mask",
    "token_dropout": "token_dropout",
    "sequence": {"name": "sequence", "steps": [{"name": "drop_swap", "p_delete": 0.2}, {"name": "token_mask", "p": 0.1}]},
    "one_of": {"name": "one_of", "choices": ["word_swap", "span_mask"]},
    "randaugment": "randaugment",
}
LONG = " ".join(f"word{i % 97}" for i in range(10_000))
BAD = ["", "   ", "\n\t ", LONG, "Съешь же ещё этих мягких французских булок", "这是一个没有空格的中文句子", "🙂🚀 ✨ 🎉",
       "مرحبا بالعالم هذا نص عربي", "x"]


@pytest.fixture(autouse=True)
def _cache_and_threads(tmp_path, monkeypatch):
    """A temporary view cache; one torch thread (tiny models run faster and the same on a busy machine)."""
    monkeypatch.setenv(resources.CACHE_ENV, str(tmp_path / "cache"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def ag(data_root) -> list[str]:
    with open(data_root / "ag_news" / "train.jsonl", encoding="utf-8") as handle:
        return [json.loads(line)["text"] for _, line in zip(range(120), handle)]


@pytest.fixture(scope="module")
def trec(data_root) -> list[str]:
    with open(data_root / "trec" / "train.jsonl", encoding="utf-8") as handle:
        return [json.loads(line)["text"] for _, line in zip(range(60), handle)]


@pytest.fixture(scope="module")
def tiny_mlm(tmp_path_factory) -> str:
    """A randomly initialised 1-layer BertForMaskedLM with the MiniLM tokenizer, saved like a hub model."""
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

    from testbed_plugins.backbones import minilm_path

    path = tmp_path_factory.mktemp("tiny-mlm")
    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    torch.manual_seed(0)
    BertForMaskedLM(BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=64)).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def tiny_causal_lm(tmp_path_factory, ag) -> str:
    """A randomly initialised 1-layer GPT-2 with a byte-level BPE trained here on AG News texts."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    path = tmp_path_factory.mktemp("tiny-gpt2")
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(ag, vocab_size=400, min_frequency=1, special_tokens=["<|endoftext|>"], show_progress=False)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    tokenizer.save_pretrained(path)
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=512, n_embd=32, n_layer=1, n_head=2,
                        eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.eos_token_id)
    GPT2LMHeadModel(config).save_pretrained(path)
    return str(path)


def seeds(n: int, start: int = 0) -> np.ndarray:
    return np.arange(start, start + n, dtype=np.int64) * 7919 + 12345


def all_specs(tiny_mlm, tiny_causal_lm, precomputed_file):
    return {**NATIVE, "mlm_substitute": {"name": "mlm_substitute", "model": tiny_mlm},
            "paraphrase": {"name": "paraphrase", "model": tiny_causal_lm, "max_new_tokens": 8},
            "precomputed": {"name": "precomputed", "path": str(precomputed_file)}}


@pytest.fixture(scope="module")
def precomputed_file(tmp_path_factory, ag, trec):
    rows = [{"text": t, "aug_0": t.upper(), "aug_1": t[::-1]} for t in ag + trec]
    return write_jsonl(tmp_path_factory.mktemp("views") / "views.jsonl", rows)


# --------------------------------------------------------------------------- every augmentation


@pytest.mark.parametrize("name", [*NATIVE, "mlm_substitute", "paraphrase", "precomputed"])
def test_views_are_seeded_per_text_whatever_the_batch(name, registry, ag, trec, tiny_mlm, tiny_causal_lm, precomputed_file):
    spec = all_specs(tiny_mlm, tiny_causal_lm, precomputed_file)[name]
    texts = (ag[:20] + trec[:20]) if name != "paraphrase" else ag[:6] + trec[:6]
    augment = build_augmentation(spec, registry)
    s = seeds(len(texts))
    views = augment(texts, s)
    assert len(views) == len(texts) and all(isinstance(v, str) and v for v in views)
    changed = sum(v != t for v, t in zip(views, texts))
    assert changed >= 0.6 * len(texts), f"{name} changed only {changed} of {len(texts)} texts"
    assert augment(texts, s) == views  # same seeds, same views
    order = np.random.default_rng(0).permutation(len(texts))
    shuffled = augment([texts[i] for i in order], s[order])
    assert shuffled == [views[i] for i in order]  # a view depends on its text and seed, not on the batch
    assert [augment([texts[i]], s[i : i + 1])[0] for i in (0, len(texts) - 1)] == [views[0], views[-1]]
    others = augment(texts, s + 1)
    if name != "precomputed":  # two columns here: about half the seeds pick the same one
        assert sum(a != b for a, b in zip(others, views)) >= 0.5 * len(texts)


@pytest.mark.parametrize("name", [*NATIVE, "mlm_substitute", "paraphrase", "precomputed"])
def test_bad_input_passes_through_and_is_counted(name, registry, tiny_mlm, tiny_causal_lm, precomputed_file):
    augment = build_augmentation(all_specs(tiny_mlm, tiny_causal_lm, precomputed_file)[name], registry)
    views = augment(BAD, seeds(len(BAD)))
    assert len(views) == len(BAD) and all(isinstance(v, str) for v in views)
    assert views[:3] == BAD[:3]  # empty and whitespace-only: nothing to augment
    unchanged = sum(v == t for v, t in zip(views, BAD))
    assert augment.unchanged == unchanged >= 3 and augment.seen == len(BAD)
    if name not in ("paraphrase", "precomputed"):  # a paraphrase of a cut 10k-word text would lose it: passed through
        assert views[3] != LONG and len(views[3].split()) > 5_000  # the long text is augmented, not lost


@pytest.mark.parametrize("name", ["drop_swap", "word_delete", "word_swap", "word_mask", "eda", "strong", "token_mask",
                                  "span_mask", "token_dropout", "mlm_substitute", "paraphrase", "precomputed", "sequence",
                                  "one_of", "randaugment"])
def test_unknown_option_lists_the_valid_ones(name, registry):
    with pytest.raises(UserError, match=r"Unknown config key 'augmentation.strong.bogus'.*Valid keys: .*augmentation.strong.name"):
        resolve(parse_overrides(["method=fixmatch", f"augmentation.strong={name}", "augmentation.strong.bogus=1"]), registry)


def test_texts_an_augmenter_cannot_change_are_counted(registry):
    for spec in ("word_swap", "word_delete", "strong", NO_SYNONYMS, "token_dropout"):
        augment = build_augmentation(spec, registry)
        assert augment(["one", "two words"], seeds(2))[0] == "one"
        assert augment.unchanged >= 1
    nothing = build_augmentation({"name": "word_delete", "p": 0.0}, registry)
    assert nothing(["a b c", "d e f"], seeds(2)) == ["a b c", "d e f"] and nothing.unchanged == 2


# --------------------------------------------------------------------------- identity and drop_swap


def augmentation(registry, name, **options):
    return build_augmentation({"name": name, **options}, registry)


SENTENCE = "the quick brown fox jumps over the lazy dog while seven wizards quietly judge every boxer in town"


def test_identity_augmentation(registry):
    aug = augmentation(registry, "identity")
    texts = ["a b", "", SENTENCE]
    out = aug(texts, np.array([1, 2, 3]))
    assert out == texts and out is not texts


def test_drop_swap_is_seeded_per_text(registry):
    aug = augmentation(registry, "drop_swap")
    assert aug([SENTENCE], np.array([5])) == aug([SENTENCE], np.array([5]))
    outputs = {aug([SENTENCE], np.array([seed]))[0] for seed in range(5)}
    assert len(outputs) > 1 and SENTENCE not in outputs
    # the view of a text depends on the text and its seed only, not on the rest of the batch
    batch = aug(["other words here to change things", SENTENCE], np.array([9, 5]))
    assert batch[1] == aug([SENTENCE], np.array([5]))[0]


def test_drop_swap_only_drops_and_reorders_words(registry):
    words = SENTENCE.split()
    for seed in range(5):
        out = augmentation(registry, "drop_swap", p_delete=0.3, p_swap=0.2)([SENTENCE], np.array([seed]))[0].split()
        assert 1 <= len(out) < len(words) + 1
        assert not (set(out) - set(words))
    swapped = augmentation(registry, "drop_swap", p_delete=0.0, p_swap=0.5)([SENTENCE], np.array([3]))[0]
    assert sorted(swapped.split()) == sorted(words) and swapped != SENTENCE
    one_left = augmentation(registry, "drop_swap", p_delete=1.0, p_swap=0.0)([SENTENCE], np.array([3]))[0]
    assert len(one_left.split()) == 1 and one_left in words  # at least one word stays


@pytest.mark.parametrize("text", ["", "   ", "word", "  word  "])
def test_drop_swap_leaves_too_short_texts_alone(registry, text):
    aug = augmentation(registry, "drop_swap", p_delete=0.9, p_swap=0.9)
    assert aug([text], np.array([1])) == [text]


def test_drop_swap_with_zero_probabilities_is_the_identity(registry):
    aug = augmentation(registry, "drop_swap", p_delete=0.0, p_swap=0.0)
    texts = [SENTENCE, "two words", "What is the full form of .com ?"]
    assert aug(texts, np.array([1, 2, 3])) == texts


@pytest.mark.parametrize("override", ["augmentation.strong.p_delete=2", "augmentation.strong.p_swap=-0.1"])
def test_drop_swap_options_are_validated(registry, override):
    with pytest.raises(UserError, match=r"Invalid value in section 'augmentation.strong'.*must be in \[0, 1\]"):
        resolve(parse_overrides(["method=fixmatch", override]), registry)


# --------------------------------------------------------------------------- word level


def test_word_level_operations_do_what_they_say(registry, ag):
    texts, s = ag[:60], seeds(60)
    for text, view in zip(texts, build_augmentation({"name": "word_delete", "p": 0.3}, registry)(texts, s)):
        words, kept = text.split(), view.split()
        assert 1 <= len(kept) < len(words) and is_subsequence(kept, words)
    for text, view in zip(texts, build_augmentation({"name": "word_swap", "p": 0.2}, registry)(texts, s)):
        assert sorted(view.split()) == sorted(text.split()) and view != text
    masked = build_augmentation({"name": "word_mask", "p": 0.3, "span": 3.0, "mask_token": "<m>"}, registry)(texts, s)
    fractions = []
    for text, view in zip(texts, masked):
        words, out = text.split(), view.split()
        assert len(out) == len(words) and all(o in (w, "<m>") for o, w in zip(out, words))
        fractions.append(out.count("<m>") / len(out))
    assert 0.15 < np.mean(fractions) < 0.4
    for text, view in zip(texts, build_augmentation({"name": "strong", "mask_token": "<m>"}, registry)(texts, s)):
        assert set(view.split()) - {"<m>"} <= set(text.split())
    assert sum("<m>" in v for v in build_augmentation({"name": "strong", "mask_token": "<m>"}, registry)(texts, s)) > 40


def is_subsequence(short, long) -> bool:
    it = iter(long)
    return all(word in it for word in short)


SYNONYMS = {"quick": ["fast"], "brown": ["tan"], "fox": ["vixen"], "jumps": ["leaps"], "lazy": ["idle"], "dog": ["hound"],
            "near": ["by"], "river": ["stream"]}


@pytest.fixture
def synonyms_file(tmp_path):
    path = tmp_path / "synonyms.json"
    path.write_text(json.dumps(SYNONYMS), encoding="utf-8")
    return str(path)


def test_eda_operations_with_a_synonym_file(registry, synonyms_file):
    text = "The quick brown fox jumps over the lazy Dog, near the river."
    words = text.split()
    dressed = {"fast", "tan", "vixen", "leaps", "idle", "Hound,", "by", "stream."}  # punctuation and capital kept
    replace = build_augmentation({"name": "eda", "alpha_sr": 0.3, "alpha_ri": 0.0, "alpha_rs": 0.0, "p_rd": 0.0,
                                  "synonyms": synonyms_file}, registry)
    views = replace([text] * 20, seeds(20))
    for view in views:  # n = int(0.3 * 12) = 3 words replaced, in place
        new = view.split()
        assert len(new) == len(words) and sum(a != b for a, b in zip(new, words)) == 3
        assert set(new) - set(words) <= dressed
    assert len({v for v in views}) > 5
    insert = build_augmentation({"name": "eda", "alpha_sr": 0.0, "alpha_ri": 0.2, "alpha_rs": 0.0, "p_rd": 0.0,
                                 "synonyms": synonyms_file}, registry)
    for view in insert([text] * 10, seeds(10)):  # n = int(0.2 * 12) = 2 synonyms inserted
        added = view.split()
        assert len(added) == len(words) + 2 and is_subsequence(words, added)
        assert set(added) - set(words) <= {s for options in SYNONYMS.values() for s in options}
    # one operation per view: each view is either a pure swap or a pure deletion
    both = build_augmentation({**NO_SYNONYMS, "alpha_rs": 0.2, "p_rd": 0.3}, registry)
    kinds = set()
    for view in both([text] * 30, seeds(30)):
        if sorted(view.split()) == sorted(text.split()):
            kinds.add("swap")
        else:
            assert is_subsequence(view.split(), text.split())
            kinds.add("delete")
    assert kinds == {"swap", "delete"}


def test_eda_without_wordnet_says_how_to_get_it(registry, tmp_path, monkeypatch):
    from testbed_plugins import augmentations

    monkeypatch.setenv(nltk_resources.NLTK_DATA_ENV, str(tmp_path / "empty-nltk-data"))
    augmentations.wordnet_synonyms.cache_clear()
    try:
        with pytest.raises(UserError, match=r"(?s)WordNet.*nltk.*wordnet-base.*alpha_sr = alpha_ri = 0"):
            build_augmentation("eda", registry)
        # swap and deletion need no WordNet
        assert build_augmentation(NO_SYNONYMS, registry)(["a b c d e f"], seeds(1))[0] != "a b c d e f"
    finally:
        augmentations.wordnet_synonyms.cache_clear()


def test_eda_with_wordnet_replaces_words_by_synonyms(registry):
    if nltk_resources.find_wordnet() is None:
        pytest.skip("WordNet is not set up here (scripts/setup_nltk_data.py)")
    text = "The company reported strong quarterly profits despite the difficult market"
    augment = build_augmentation({"name": "eda", "alpha_sr": 0.3, "alpha_ri": 0.0, "alpha_rs": 0.0, "p_rd": 0.0}, registry)
    views = augment([text] * 10, seeds(10))
    assert sum(v != text for v in views) >= 8
    from nltk.corpus import wordnet

    lemma_words = {part for word in text.lower().split() for synset in wordnet.synsets(word) for lemma in synset.lemmas()
                   for part in lemma.name().replace("_", " ").replace("-", " ").lower().split()}
    for view in views:  # every new word comes from a WordNet lemma of a word of the text
        assert {w.lower() for w in view.split()} - set(text.lower().split()) <= lemma_words


# --------------------------------------------------------------------------- token level


def test_token_level_masking_and_dropout(registry, ag):
    from transformers import AutoTokenizer

    from testbed_plugins.backbones import minilm_path

    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    texts, s = ag[:80], seeds(80)
    count = lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])  # noqa: E731
    masked = build_augmentation("token_mask", registry)(texts, s)
    share = np.mean([v.count("[MASK]") / count(t) for t, v in zip(texts, masked)])
    assert 0.1 < share < 0.22  # p = 0.15, at least one per text
    for text, view in zip(texts, masked):  # only masked spans differ: the rest is the original, case included
        position = 0
        for piece in view.split("[MASK]"):
            position = text.index(piece, position) + len(piece)
        assert tokenizer.mask_token_id in tokenizer(view)["input_ids"]  # the student sees its mask token
    spans = build_augmentation({"name": "span_mask", "p": 0.3, "span": 3.0}, registry)(texts, s)
    runs = [len(r.split()) for v in spans for r in re.findall(r"\[MASK\](?:\s*\[MASK\])*", v)]
    assert np.mean(runs) > 1.8  # spans, not single tokens
    collapsed = build_augmentation({"name": "span_mask", "p": 0.3, "span": 3.0, "collapse": True}, registry)(texts, s)
    assert sum(v.count("[MASK]") for v in collapsed) < 0.7 * sum(v.count("[MASK]") for v in spans)
    dropped = build_augmentation({"name": "token_dropout", "p": 0.2}, registry)(texts, s)
    for text, view in zip(texts, dropped):
        original, kept = tokenizer.tokenize(text), tokenizer.tokenize(view)
        assert 0 < len(kept) < len(original)


def test_token_level_augmentations_need_a_mask_token_and_a_tokenizer(registry, tiny_causal_lm):
    with pytest.raises(UserError, match="has no mask token"):
        build_augmentation({"name": "token_mask", "tokenizer": tiny_causal_lm}, registry)
    assert build_augmentation({"name": "token_dropout", "tokenizer": tiny_causal_lm}, registry)(["a b c d"], seeds(1))[0] != "a b c d"
    with pytest.raises(UserError, match="Could not load tokenizer"):
        build_augmentation({"name": "token_mask", "tokenizer": "/no/such/tokenizer"}, registry)


# --------------------------------------------------------------------------- language models


def test_mlm_substitute_one_forward_pass_per_batch_and_only_chosen_words(registry, ag, tiny_mlm):
    from testbed_plugins.model_augmentations import load_model

    augment = build_augmentation({"name": "mlm_substitute", "model": tiny_mlm, "batch_size": 64}, registry)
    network, _ = load_model(tiny_mlm, "masked")
    calls = []
    hook = network.register_forward_hook(lambda module, args, output: calls.append(1))
    rng_before = torch.random.get_rng_state()
    try:
        views = augment(ag[:40], seeds(40))
    finally:
        hook.remove()
    assert len(calls) == 1  # the whole batch in one forward pass
    assert torch.equal(torch.random.get_rng_state(), rng_before)  # per-text generators, not the global one
    replaced = []
    for text, view in zip(ag[:40], views):
        words, out = text.split(), view.split()
        assert len(out) == len(words)  # each chosen word became one whole-word token of the vocabulary
        assert "[unused" not in view and "[MASK]" not in view and "##" not in view
        replaced.append(sum(a != b for a, b in zip(words, out)) / len(words))
    assert 0.05 < np.mean(replaced) < 0.3


def test_mlm_substitute_with_a_missing_model_fails_at_set_up(registry):
    with pytest.raises(UserError, match="mlm_substitute: could not find model"):
        build_augmentation({"name": "mlm_substitute", "model": "/no/such/model"}, registry)


def test_paraphrase_is_seeded_per_text_and_falls_back_to_the_text(registry, ag, tiny_causal_lm, monkeypatch):
    from testbed_plugins import model_augmentations

    spec = {"name": "paraphrase", "model": tiny_causal_lm, "max_new_tokens": 10}
    augment = build_augmentation(spec, registry)
    short_and_long = [ag[0][:40], ag[1]]  # different prompt lengths: left padding must not change a view
    together = augment(short_and_long, seeds(2))
    assert [augment([t], seeds(1, k))[0] for k, t in enumerate(short_and_long)] == together
    greedy = build_augmentation({**spec, "temperature": 0.0}, registry)
    assert greedy([ag[2]], seeds(1)) == greedy([ag[2]], seeds(1, 99))  # greedy ignores the seed
    # a model that only says end-of-text: the original text comes back, counted as unchanged
    monkeypatch.setattr(model_augmentations, "sample_next", lambda logits, generators, t, p: torch.zeros(len(generators), dtype=torch.long))
    silent = build_augmentation(spec, registry)
    assert silent(ag[:3], seeds(3)) == ag[:3] and silent.unchanged == 3


# --------------------------------------------------------------------------- precomputed


def test_precomputed_views_from_the_sat_file(registry, data_root):
    sat = data_root / "ag_news" / "sat_labeled_10pc_aug.jsonl"
    rows = read_jsonl(sat)
    augment = build_augmentation({"name": "precomputed", "path": str(sat), "columns": ["aug_back_translation"]}, registry)
    texts = [r["text"] for r in rows[:10]] + ["a text the file does not know"]
    views = augment(texts, seeds(len(texts)))
    assert views[:10] == [r["aug_back_translation"] for r in rows[:10]]
    assert views[10] == texts[10] and augment.missing == 1 and augment.unchanged == 1
    # relative to the data directory; every aug* column by default, one per seed
    every = build_augmentation({"name": "precomputed", "path": "ag_news/sat_labeled_10pc_aug.jsonl"}, registry)
    seen = {every([rows[0]["text"]], seeds(1, k))[0] for k in range(40)}
    assert seen == {rows[0][c] for c in ("aug_back_translation", "aug_synonym", "aug_random_delete", "aug_insert")}


def test_precomputed_reads_usb_json_and_explains_bad_files(registry, tmp_path):
    usb = tmp_path / "train.json"
    usb.write_text(json.dumps({"0": {"ori": "first  text", "aug_0": "first view a", "aug_1": "first view b", "label": 0},
                               "1": {"ori": "second text", "aug_0": "second view a", "aug_1": "", "label": 1}}))
    augment = build_augmentation({"name": "precomputed", "path": str(usb)}, registry)
    views = {augment(["first text", "second text"], seeds(2, k))[0] for k in range(20)}  # whitespace-normalised match
    assert views == {"first view a", "first view b"}
    assert {augment(["second text"], seeds(1, k))[0] for k in range(20)} == {"second view a"}  # an empty view is no view
    with pytest.raises(UserError, match=r"view column\(s\) \['aug_9'\] not in .*its columns: \['ori', 'aug_0', 'aug_1', 'label'\]"):
        build_augmentation({"name": "precomputed", "path": str(usb), "columns": ["aug_9"]}, registry)
    with pytest.raises(UserError, match="not found"):
        build_augmentation({"name": "precomputed", "path": str(tmp_path / "nope.jsonl")}, registry)
    with pytest.raises(UserError, match="set the path option"):
        build_augmentation("precomputed", registry)


# --------------------------------------------------------------------------- compositions


def test_sequence_one_of_and_randaugment(registry, ag):
    texts, s = ag[:40], seeds(40)
    seq = build_augmentation({"name": "sequence", "steps": [{"name": "word_delete", "p": 0.3},
                                                            {"name": "word_mask", "p": 0.3, "mask_token": "<m>"}]}, registry)
    for text, view in zip(texts, seq(texts, s)):
        words = view.split()
        assert len(words) < len(text.split()) and set(words) - {"<m>"} <= set(text.split())
    assert sum("<m>" in v for v in seq(texts, s)) > 30

    mark = lambda token: {"name": "word_mask", "p": 1.0, "mask_token": token}  # noqa: E731
    only_a = build_augmentation({"name": "one_of", "choices": [mark("<a>"), mark("<b>")], "weights": [1, 0]}, registry)
    assert all(set(v.split()) == {"<a>"} for v in only_a(texts, s))
    either = build_augmentation({"name": "one_of", "choices": [mark("<a>"), mark("<b>")]}, registry)
    kinds = [set(v.split()) for v in either(texts, s)]
    assert kinds.count({"<a>"}) + kinds.count({"<b>"}) == len(texts) and min(kinds.count({"<a>"}), kinds.count({"<b>"})) > 8

    one_op = build_augmentation({"name": "randaugment", "n": 1, "magnitude": 1.0, "ops": [mark("<a>"), "word_delete"]}, registry)
    kinds = [("mask" if set(v.split()) == {"<a>"} else "delete") for v in one_op(texts, s)]
    assert 8 < kinds.count("mask") < 32  # one op each, both drawn
    assert all(len(v.split()) == 1 for v, k in zip(one_op(texts, s), kinds) if k == "delete")  # magnitude 1 = p 1
    two_ops = build_augmentation({"name": "randaugment", "n": 2, "magnitude": 0.5,
                                  "ops": [{"name": "word_mask", "mask_token": "<m>"}, "word_delete"]}, registry)
    views = two_ops(texts, s)
    assert sum("<m>" in v.split() for v in views) >= 0.8 * len(texts)
    assert all(len(v.split()) < len(t.split()) for v, t in zip(views, texts))


COMPOSITION_TOML = '''
method = "fixmatch"
[augmentation.strong]
name = "sequence"
steps = [{name = "drop_swap", p_delete = 0.2}, {name = "token_mask", p = 0.1}]
'''


def test_composition_config_fills_nested_defaults(registry, tmp_path):
    from testbed.config import load_toml

    path = tmp_path / "c.toml"
    path.write_text(COMPOSITION_TOML, encoding="utf-8")
    cfg = resolve(load_toml(path), registry)
    assert cfg.resolved["augmentation"]["strong"] == {"name": "sequence", "steps": [
        {"name": "drop_swap", "p_delete": 0.2, "p_swap": 0.1}, {"name": "token_mask", "p": 0.1, "tokenizer": "minilm"}]}
    short = resolve(parse_overrides(["method=fixmatch", "augmentation.strong.name=sequence",
                                     'augmentation.strong.steps=[{name="drop_swap", p_delete=0.2, p_swap=0.1}, {name="token_mask", p=0.1}]']),
                    registry)
    assert short.run_id == cfg.run_id  # defaults spelt out or not: the same run


@pytest.mark.parametrize(("steps", "message"), [
    ('[{name="dorp_swap"}]', r"augmentation.strong.steps\[0\]: Unknown augmentation 'dorp_swap'. Did you mean 'drop_swap'"),
    ('["word_swap", {name="token_mask", pp=0.1}]',
     r"Unknown config key 'augmentation.strong.steps\[1\].pp' \(for augmentation.strong.steps\[1\] 'token_mask'\). "
     r"Did you mean 'augmentation.strong.steps\[1\].p'.*Valid keys: .*steps\[1\].tokenizer"),
    ('[{name="one_of", choices=["word_swap", {name="eda", bogus=1}]}]',
     r"Unknown config key 'augmentation.strong.steps\[0\].choices\[1\].bogus'.*Valid keys: .*alpha_sr"),
    ('[{name="drop_swap", p_delete=2}]', r"Invalid value in section 'augmentation.strong.steps\[0\]'.*must be in \[0, 1\]"),
    ('[3]', r"'augmentation.strong.steps\[0\]' must be an augmentation name or a table with 'name'"),
    ('[]', r"sequence needs steps"),
])
def test_nested_specs_are_checked_like_top_level_ones(registry, steps, message):
    with pytest.raises(UserError, match=message):
        resolve(parse_overrides(["method=fixmatch", "augmentation.strong.name=sequence", f"augmentation.strong.steps={steps}"]),
                registry)


# --------------------------------------------------------------------------- FixMatch end to end


@pytest.mark.parametrize("strong", ["eda", "token_mask", "sequence", "precomputed"])
def test_fixmatch_with_each_strong_view(strong, registry, tmp_path, data_root):
    extra = {"eda": ["augmentation.strong.alpha_sr=0.0", "augmentation.strong.alpha_ri=0.0"]
             if nltk_resources.find_wordnet() is None else [],
             "sequence": ['augmentation.strong.steps=[{name="drop_swap", p_delete=0.2}, {name="token_mask", p=0.1}]'],
             "precomputed": [f"augmentation.strong.path={tmp_path / 'trec_views.jsonl'}", "augmentation.strong.columns=[\"aug_0\"]"]}
    if strong == "precomputed":  # a view for every TREC training text
        rows = read_jsonl(data_root / "trec" / "train.jsonl")
        write_jsonl(tmp_path / "trec_views.jsonl", [{"text": r["text"], "aug_0": "PRE " + r["text"]} for r in rows])
    cfg = resolve(parse_overrides([*FAST, "method=fixmatch", "selector.threshold=0.0", f"augmentation.strong={strong}",
                                   *extra.get(strong, [])]), registry)
    run_dir, result, ran = execute(cfg, registry, tmp_path / "runs", progress=False)
    assert ran and result["steps"] == 6 and 0 <= result["test_accuracy"] <= 1
    metrics = read_jsonl(run_dir / "metrics.jsonl")
    for record in metrics:
        assert record["views_unchanged/weak"] is None  # identity
        assert 0.0 <= record["views_unchanged/strong"] < 0.5
    assert result["mask_rate"] == 1.0  # threshold 0: every strong view was trained on


@pytest.mark.slow
def test_fixmatch_runs_with_every_registered_augmentation_as_its_strong_view(registry, tmp_path, tiny_mlm,
                                                                              tiny_causal_lm, precomputed_file):
    """The issue's promise: any augmentation, built-in or nlpaug-backed, is one config key away."""
    needs = {"mlm_substitute": [f"augmentation.strong.model={tiny_mlm}"],
             "paraphrase": [f"augmentation.strong.model={tiny_causal_lm}", "augmentation.strong.max_new_tokens=8"],
             "precomputed": [f"augmentation.strong.path={precomputed_file}"],
             "sequence": ['augmentation.strong.steps=["word_swap", "ocr"]'],
             "one_of": ['augmentation.strong.choices=["word_delete", "keyboard"]'],
             "tfidf": []}
    names = registry.names("augmentation")
    assert len(names) >= 25
    for name in names:
        cfg = resolve(parse_overrides([*FAST, "method=fixmatch", "selector.threshold=0.0", "train.steps=2",
                                       "train.eval_every=2", f"augmentation.strong={name}", *needs.get(name, [])]), registry)
        if registry.get("augmentation", name).needs_tags:  # NER's mention_replace etc.: augmentation.labeled of a token task only
            with pytest.raises(UserError, match=f"augmentation.strong = '{name}' needs gold tags"):
                execute(cfg, registry, tmp_path / "runs", progress=False)
            continue
        run_dir, result, ran = execute(cfg, registry, tmp_path / "runs", progress=False)
        assert ran and result["steps"] == 2, name
        assert cfg.resolved["augmentation"]["strong"]["name"] == name
