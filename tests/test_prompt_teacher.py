"""The prompt teacher (teacher.name=prompt) on a tiny random causal LM against hand computations
from its logits; the llm-distill preset end to end; one slow test with the real SmolLM2."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from conftest import FAST, read_jsonl
from testbed import TeacherContext, TextBatch, Texts, UserError, resources
from testbed.cli import main
from testbed.config import parse_overrides, resolve
from testbed.runs import execute
from testbed_plugins import prompt_teacher as pt

# a chat template in ChatML (SmolLM2's layout) for the WordPiece test tokenizer, which has none
CHATML = ("{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
          "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")
VERBALIZERS = ("negative", "very positive")
TEXTS = ["what a nice day", "this is terrible and long " * 6, "ok", "{braces} and n/a here", "a second short one"]


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: conftest.one_thread


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """Every test starts from an empty cache directory of its own."""
    monkeypatch.setenv(resources.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def chat_model(tmp_path_factory) -> str:
    """The ``tiny`` random Llama saved with a chat template: a local path, as a user would give one."""
    model, tokenizer, _ = pt.load_causal_lm(pt.TINY)
    tokenizer = type(tokenizer).from_pretrained(tokenizer.name_or_path)  # a copy: the shared one stays template-free
    tokenizer.chat_template = CHATML
    path = tmp_path_factory.mktemp("chat-llm")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def labeled(n: int = 12) -> Texts:
    return Texts([f"labeled example number {i} is {'good' if i % 2 else 'bad'}" for i in range(n)], np.arange(n) % 2)


def make(seed: int = 0, context=None, **options) -> pt.PromptTeacher:
    options = {"model": pt.TINY, "verbalizers": VERBALIZERS, **options}
    context = context or TeacherContext(num_classes=2, pool_size=0, steps=1, seed=seed, labeled=labeled())
    return pt.PromptTeacher(pt.PromptOptions(**options), context)


def hand_log_probs(teacher: pt.PromptTeacher, text: str) -> list[list[float]]:
    """Per class, the log-probability of each verbalizer token: one unpadded forward of the whole
    sequence prefix + text + suffix + verbalizer, with nothing cached or batched."""
    out = []
    for v in teacher.verbalizer_ids:
        ids = teacher.prefix_ids + teacher._text_ids(text) + v
        with torch.no_grad():
            lp = teacher.model(input_ids=torch.tensor([ids])).logits[0].double().log_softmax(-1)
        start = len(ids) - len(v)
        out.append([lp[start - 1 + j, v[j]].item() for j in range(len(v))])
    return out


# --------------------------------------------------------------------------- distributions


@pytest.mark.parametrize("options", [{}, {"scoring": "mean"}, {"scoring": "first", "verbalizers": ("bad", "good")},
                                     {"calibrate": True}, {"temperature": 3.0, "shots": 2}, {"reuse_prefix": False}],
                         ids=["sum", "mean", "first", "calibrated", "tempered-2shot", "full-prompt"])
def test_distributions_sum_to_one_per_text(options):
    teacher = make(**options)
    probs = teacher.probs(TextBatch(TEXTS, None))
    assert probs.shape == (len(TEXTS), 2) and probs.dtype == torch.float32
    assert torch.allclose(probs.sum(-1), torch.ones(len(TEXTS)), atol=1e-6) and (probs > 0).all()
    assert not torch.allclose(probs[0], probs[1])  # the texts differ, so do their distributions
    assert torch.equal(teacher.probs(TextBatch(TEXTS, None), stochastic=True), probs)  # deterministic: stochastic is ignored


@pytest.mark.parametrize("chat", [False, True], ids=["plain", "chat"])
def test_verbalizer_scores_match_a_hand_computation_from_the_logits(chat, chat_model):
    teacher = make(model=chat_model if chat else pt.TINY, shots=2)
    assert teacher.chat is chat and [len(v) for v in teacher.verbalizer_ids] == [1, 2]  # one- and two-token names
    raw = teacher.raw_scores(TEXTS)
    hand = [hand_log_probs(teacher, text) for text in TEXTS]
    total = np.array([[sum(c) for c in h] for h in hand])
    first = np.array([[c[0] for c in h] for h in hand])
    np.testing.assert_allclose(raw[:, 0], total, atol=2e-5)
    np.testing.assert_allclose(raw[:, 1], first, atol=2e-5)
    np.testing.assert_allclose(teacher.scores(TEXTS), total, atol=2e-5)  # the default: the verbalizer's log-likelihood
    expected = np.exp(total) / np.exp(total).sum(-1, keepdims=True)
    np.testing.assert_allclose(teacher.probabilities(TEXTS), expected, atol=1e-5)
    for scoring, column in (("mean", total / np.array([1, 2])), ("first", first)):
        np.testing.assert_allclose(make(model=teacher.options.model, shots=2, scoring=scoring).scores(TEXTS), column, atol=2e-5)


def test_the_prompt_is_laid_out_as_documented():
    teacher = make(shots=2)
    (a, ya), (b, yb) = teacher.shots
    prompt = teacher.tokenizer.decode(teacher.prefix_ids + teacher._text_ids("the text") + teacher.verbalizer_ids[1])
    words = lambda s: s.lower().replace(":", " : ").replace(".", " . ").split()  # noqa: E731 (WordPiece spacing)
    expected = (f"Classify the text into one of these categories: negative, very positive.\n\nText: {a}\nCategory: "
                f"{VERBALIZERS[ya]}\n\nText: {b}\nCategory: {VERBALIZERS[yb]}\n\nText: the text\nCategory: very positive")
    assert words(prompt) == words(expected)


def test_the_chat_template_puts_the_instruction_and_shots_in_turns(chat_model):
    teacher = make(model=chat_model, shots=1)
    (a, ya), = teacher.shots
    prefix = teacher.tokenizer.decode(teacher.prefix_ids)
    assert prefix.startswith("< | system | > classify the text")
    assert f"< | user | > text : {a} category : < | assistant | > {VERBALIZERS[ya]} < | user | > text :" in prefix
    assert teacher.continuations == list(VERBALIZERS)  # after the assistant header's newline: no space before the answer
    assert make(model=chat_model, chat_template=False).chat is False


def test_calibration_by_hand():
    content_free = ("N/A", "[MASK]", "")
    plain, calibrated = make(shots=2), make(shots=2, calibrate=True, content_free=content_free, temperature=2.0)
    softmax = lambda s: np.exp(s) / np.exp(s).sum(-1, keepdims=True)  # noqa: E731
    p = softmax(plain.scores(TEXTS).astype(np.float64))
    p_cf = softmax(plain.scores(list(content_free)).astype(np.float64)).mean(0)  # Zhao et al.: the mean over content-free inputs
    q = p / p_cf
    q /= q.sum(-1, keepdims=True)  # W = diag(p_cf)^-1, b = 0, renormalised
    tempered = softmax(np.log(q) / 2.0)
    np.testing.assert_allclose(calibrated.probabilities(TEXTS), tempered, atol=1e-5)
    np.testing.assert_allclose(make(shots=2, calibrate=True, content_free=content_free).probabilities(TEXTS), q, atol=1e-5)
    assert not np.allclose(q, p, atol=1e-3)  # calibration moved the distributions
    assert calibrated.cache.id == plain.cache.id  # raw scores are cached: calibration and temperature apply on top


# --------------------------------------------------------------------------- shots


def test_shots_are_seeded_stable_and_the_same_for_every_text():
    first, again, other = make(seed=0, shots=4), make(seed=0, shots=4), make(seed=1, shots=4)
    assert first.shots == again.shots and first.prefix_ids == again.prefix_ids and first.cache.id == again.cache.id
    assert first.shots != other.shots and first.cache.id != other.cache.id  # another seed, another prompt, another entry
    pool = labeled()
    assert len({t for t, _ in first.shots}) == 4
    assert all(pool.texts.index(t) % 2 == y for t, y in first.shots)  # real labeled examples with their own labels
    prefix = first.tokenizer.decode(first.prefix_ids)
    positions = [prefix.index(first.tokenizer.decode(first._ids(t))) for t, _ in first.shots]
    assert positions == sorted(positions)  # in draw order, before every text
    assert pt.draw_shots(pool, 4, 0) == first.shots


def test_more_shots_than_labeled_examples_is_a_clear_error():
    with pytest.raises(UserError, match=r"teacher.shots=13 asks for 13 labeled examples, but the labeled set has 12"):
        make(shots=13)


# --------------------------------------------------------------------------- cache and batching


def test_the_cache_gives_the_same_numbers_warm_and_cold_and_is_listed(own_cache):
    cold = make(shots=2)
    scores = cold.raw_scores(TEXTS)
    assert cold.stats()["scored"] == len(TEXTS)
    cold.flush()
    warm = make(shots=2)  # a new teacher reads the entry from disk
    assert np.array_equal(warm.raw_scores(TEXTS), scores)
    assert warm.stats()["scored"] == 0 and warm.stats()["cached"] == len(TEXTS)
    assert list(own_cache.glob("teacher/prompt-tiny-*/shard-*.npz"))

    runner = CliRunner()
    listing = runner.invoke(main, ["cache"])
    assert listing.exit_code == 0, listing.output
    assert "teacher: 1 entry" in listing.output and "prompted LLM scores" in listing.output
    (entry,) = json.loads(runner.invoke(main, ["cache", "--json"]).output)["entries"]
    assert entry["kind"] == "teacher" and entry["name"] == "prompt-tiny" and entry["texts"] == len(TEXTS)
    assert entry["shots"] == 2 and entry["classes"] == 2
    cleared = runner.invoke(main, ["cache", "clear", "prompt-tiny"])
    assert cleared.exit_code == 0 and "teacher: removed 1 entry" in cleared.output


def test_a_texts_scores_do_not_depend_on_the_texts_batched_with_it():
    together = make(shots=2).raw_scores(TEXTS)
    for i, text in enumerate(TEXTS):
        alone = make(shots=2)
        alone.cache.items.clear()
        assert np.array_equal(alone.raw_scores([text])[0], together[i]), text  # bit for bit: fixed-shape calls
    shuffled = make(shots=2)
    shuffled.cache.items.clear()
    order = [3, 0, 4, 2, 1]
    assert np.array_equal(shuffled.raw_scores([TEXTS[i] for i in order]), together[order])


def test_the_runs_autocast_does_not_reach_the_teachers_scores():
    plain = make(shots=2).raw_scores(TEXTS)
    teacher = make(shots=2)
    teacher.cache.items.clear()
    with torch.autocast("cpu", dtype=torch.bfloat16):  # as the loop calls teachers with train.precision=bf16
        assert np.array_equal(teacher.raw_scores(TEXTS), plain)  # the cache holds float32 scores only


@pytest.mark.parametrize("chat", [False, True], ids=["plain", "chat"])
def test_reusing_the_prefix_equals_running_the_full_prompt(chat, chat_model):
    model = chat_model if chat else pt.TINY
    reused, full = make(model=model, shots=3), make(model=model, shots=3, reuse_prefix=False)
    texts = [*TEXTS, "word " * 40]  # several length buckets
    a, b = reused.raw_scores(texts), full.raw_scores(texts)
    np.testing.assert_allclose(a, b, rtol=0, atol=2e-5)
    assert reused._prefix_cache is not None and full._prefix_cache is None  # the paths did differ
    assert reused.cache.id != full.cache.id  # they differ in the last bits, so they never share an entry


# --------------------------------------------------------------------------- verbalizers and options


@dataclass(frozen=True)
class NamedContext(TeacherContext):
    """A run context that carries the dataset's label names (not in TeacherContext today)."""

    label_names: tuple = ()


def test_verbalizers_default_to_label_names_and_are_overridable_per_class():
    context = NamedContext(num_classes=2, pool_size=0, steps=1, seed=0, labeled=labeled(), label_names=("neg", "pos"))
    assert make(context=context, verbalizers=()).verbalizers == ["neg", "pos"]
    assert make(context=context, verbalizers=("", "positive")).verbalizers == ["neg", "positive"]


@pytest.mark.parametrize(("options", "message"), [
    ({"verbalizers": ()}, r"needs a word for each of the 2 classes.*set teacher.verbalizers=\[\"class 0\", \"class 1\"\]"),
    ({"verbalizers": ("a", "b", "c")}, r"teacher.verbalizers has 3 entries for 2 classes"),
    ({"verbalizers": ("same", "same")}, r"must differ between classes"),
    ({"verbalizers": ("very bad", "very good"), "scoring": "first"}, r"scoring='first' cannot tell"),
    ({"template": "Text {text} {text}"}, r"teacher.template must contain \{text\} exactly once"),
    ({"template": "{text}", "chat_template": False}, r"leaves no token to predict the label from"),
], ids=["no-names", "count", "duplicates", "shared-first-token", "template", "empty-row"])
def test_bad_verbalizers_and_templates_say_what_to_set(options, message):
    with pytest.raises((UserError, ValueError), match=message):
        make(**options).raw_scores([""])


@pytest.mark.parametrize(("override", "message"), [
    ("teacher.scoring=max", r"teacher.scoring must be one of 'mean', 'sum', 'first', got 'max'"),
    ("teacher.shots=-1", r"teacher.shots must be 0 or more"),
    ("teacher.temperature=0", r"teacher.temperature must be positive"),
    ("teacher.verbalizers=3", r"teacher.verbalizers"),
])
def test_bad_options_stop_at_config_time(registry, override, message):
    with pytest.raises(UserError, match=message):
        resolve(parse_overrides(["method=llm-distill", override]), registry)


def test_a_missing_model_says_how_to_fix_it(tmp_path):
    with pytest.raises(UserError, match=r"could not load teacher.model=.*as a causal LM"):
        make(model=str(tmp_path / "nowhere"))


# --------------------------------------------------------------------------- registration and the preset


def test_testbed_plugins_lists_the_prompt_teacher_and_presets_lists_llm_distill():
    result = CliRunner().invoke(main, ["plugins", "--json"])
    assert result.exit_code == 0, result.output
    by_name = {row["name"]: row for row in json.loads(result.stdout)}
    assert by_name["prompt_teacher"]["provides"] == {"teacher": ["prompt"]}
    presets = {p["name"]: p for p in json.loads(CliRunner().invoke(main, ["presets", "--json"]).output)}
    assert presets["llm-distill"]["settings"]["teacher"]["name"] == "prompt"


def test_llm_distill_runs_end_to_end(registry, tmp_path):
    words = '["description", "entity", "abbreviation", "person", "location", "number"]'  # TREC, in label order
    cfg = resolve(parse_overrides(["method=llm-distill", *FAST, "teacher.model=tiny", f"teacher.verbalizers={words}"]), registry)
    assert cfg.resolved["teacher"]["temperature"] == 2.0 and cfg.resolved["distance"] == {"name": "kl", "temperature": 2.0}
    assert cfg.resolved["selector"]["name"] == "none"
    run_dir, result, ran = execute(cfg, registry, tmp_path / "runs", progress=False)
    assert ran and result["steps"] == 6
    metrics = read_jsonl(run_dir / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [3, 6]
    for m in metrics:
        assert m["mask_rate"] == 1.0 and 0 <= m["teacher_accuracy"] <= 1 and np.isfinite(m["consistency_loss"])


def test_a_run_records_a_fixed_teachers_own_test_accuracy_and_takes_class_names_from_the_dataset(registry, tmp_path):
    from testbed.loop import prepare

    cfg = resolve(parse_overrides(["method=llm-distill", *FAST, "teacher.model=tiny"]), registry)  # no verbalizers: TREC's names
    parts = prepare(cfg, registry)
    assert parts.teacher.fixed and list(parts.teacher.verbalizers) == ["DESC", "ENTY", "ABBR", "HUM", "LOC", "NUM"]
    expected = parts.teacher.accuracy(parts.split.test.texts, parts.split.test.labels)  # its own scoring path
    _, result, _ = execute(cfg, registry, tmp_path / "runs", progress=False)
    assert result["teacher_test_accuracy"] == pytest.approx(expected) and 0 <= result["teacher_test_macro_f1"] <= 1
    fixmatch = resolve(parse_overrides(["method=fixmatch", *FAST]), registry)  # the student's own copy: nothing to record
    assert "teacher_test_accuracy" not in execute(fixmatch, registry, tmp_path / "runs", progress=False).result


# --------------------------------------------------------------------------- the real model


@pytest.mark.slow
def test_smollm2_labels_trec_questions(data_root):
    from testbed import load_dataset_dir

    splits = load_dataset_dir(data_root / "trec")
    pick = np.random.default_rng(0).choice(len(splits.test), 12, replace=False)
    texts, labels = [splits.test.texts[i] for i in pick], np.asarray(splits.test.labels)[pick]
    context = TeacherContext(num_classes=6, pool_size=0, steps=1, seed=0, labeled=splits.train)
    options = {"verbalizers": ("Description", "Entity", "Abbreviation", "Person", "Location", "Number"),
               "template": "Question: {text}\nAnswer Type:", "shots": 2}
    teacher = pt.PromptTeacher(pt.PromptOptions(**options), context)
    assert teacher.chat  # SmolLM2-Instruct's ChatML template
    probs = teacher.probabilities(texts)
    np.testing.assert_allclose(probs.sum(-1), 1, atol=1e-5)
    full = pt.PromptTeacher(pt.PromptOptions(**options, reuse_prefix=False), context)
    np.testing.assert_allclose(teacher.raw_scores(texts[:4]), full.raw_scores(texts[:4]), atol=1e-4)
    hand = np.array([[np.sum(c) for c in hand_log_probs(teacher, t)] for t in texts[:2]])
    np.testing.assert_allclose(teacher.scores(texts[:2]), hand, atol=1e-4)
    assert (probs.argmax(-1) == labels).mean() > 1 / 6  # better than a uniform guess on these 12 (measured: see README)
