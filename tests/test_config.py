"""Config: TOML + dotted overrides + presets, key and type checking, routing, run ids."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest

from testbed.config import (
    BackboneConfig,
    DatasetConfig,
    TrainConfig,
    load_toml,
    merge,
    parse_overrides,
    parse_value,
    resolve,
    run_id,
)
from testbed.errors import UserError
from testbed.loop import prepare

# options every Hugging Face backbone has (plugins/backbones.py): LoRA off, no gradient checkpointing
HF_MODEL_DEFAULTS = {"lora": {"r": 0, "alpha": 16.0, "dropout": 0.05, "target_modules": ""}, "gradient_checkpointing": False}


def cfg_of(registry, *overrides: str, toml: dict | None = None):
    return resolve(merge(toml or {}, parse_overrides(list(overrides))), registry)


# --------------------------------------------------------------------------- reading


@pytest.mark.parametrize("text, value", [
    ("0.95", 0.95), ("3", 3), ("true", True), ("false", False), ("[1, 2]", [1, 2]),
    ("abc", "abc"), ('"quoted"', "quoted"), ("some/hub-id", "some/hub-id"),
])
def test_parse_value(text, value):
    parsed = parse_value(text)
    assert parsed == value and type(parsed) is type(value)


def test_parse_overrides_nests_dotted_keys():
    assert parse_overrides(["selector.threshold=0.7", "selector.soft=true", "seed=3", "augmentation.weak.name=identity"]) == {
        "selector": {"threshold": 0.7, "soft": True}, "seed": 3, "augmentation": {"weak": {"name": "identity"}}}


def test_parse_overrides_shorthand_then_option():
    assert parse_overrides(["augmentation.strong=drop_swap", "augmentation.strong.p_delete=0.2"]) == {
        "augmentation": {"strong": {"name": "drop_swap", "p_delete": 0.2}}}


def test_override_order_does_not_matter(registry):
    one = cfg_of(registry, "method=fixmatch", "augmentation.strong=drop_swap", "augmentation.strong.p_delete=0.2")
    other = cfg_of(registry, "method=fixmatch", "augmentation.strong.p_delete=0.2", "augmentation.strong=drop_swap")
    assert one.resolved["augmentation"]["strong"]["p_delete"] == 0.2
    assert other.resolved == one.resolved


@pytest.mark.parametrize("item", ["selector.threshold", "=3", " =x"])
def test_override_without_key_value_is_a_user_error(item):
    with pytest.raises(UserError, match="not key=value"):
        parse_overrides([item])


def test_override_below_a_value_is_a_user_error():
    with pytest.raises(UserError, match="'seed' is a value"):
        parse_overrides(["seed=1", "seed.x=2"])


def test_merge_is_deep_and_does_not_mutate():
    base = {"a": {"b": 1, "c": 2}, "d": 1}
    over = {"a": {"b": 3}, "e": {"f": 4}}
    assert merge(base, over) == {"a": {"b": 3, "c": 2}, "d": 1, "e": {"f": 4}}
    assert base == {"a": {"b": 1, "c": 2}, "d": 1} and over == {"a": {"b": 3}, "e": {"f": 4}}


def test_toml_file_and_overrides(tmp_path, registry):
    path = tmp_path / "exp.toml"
    path.write_text('method = "fixmatch"\nseed = 4\n[selector]\nthreshold = 0.8\nsoft = true\n'
                    '[train]\nsteps = 7\n[augmentation.strong]\nname = "drop_swap"\np_delete = 0.3\n', encoding="utf-8")
    toml = load_toml(path)
    assert toml["selector"] == {"threshold": 0.8, "soft": True}
    cfg = resolve(merge(toml, parse_overrides(["selector.threshold=0.6", "train.lr=0.001"])), registry)
    assert cfg.method == "fixmatch" and cfg.seed == 4
    assert cfg.choices["selector"].options.threshold == 0.6  # override beats the file
    assert cfg.choices["selector"].options.soft is True  # the file beats the preset
    assert cfg.train.steps == 7 and cfg.train.lr == 0.001
    assert cfg.choices["augmentation.strong"].options.p_delete == 0.3
    assert cfg.choices["distance"].name == "ce"  # from the preset
    assert cfg.train.batch_size == TrainConfig.batch_size  # from the defaults


def test_toml_shorthand_for_a_seam(tmp_path, registry):
    path = tmp_path / "exp.toml"
    path.write_text('method = "fixmatch"\nselector = "none"\ndistance = "kl"\n', encoding="utf-8")
    cfg = resolve(load_toml(path), registry)
    assert cfg.resolved["selector"] == {"name": "none"}
    assert cfg.resolved["distance"] == {"name": "kl", "temperature": 1.0}


def test_malformed_toml_names_the_file(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("method = \n[train\n", encoding="utf-8")
    with pytest.raises(UserError, match=re.escape(str(path)) + ".*not valid TOML"):
        load_toml(path)


def test_missing_config_file(tmp_path):
    with pytest.raises(UserError, match="nope.toml.*not found"):
        load_toml(tmp_path / "nope.toml")


# --------------------------------------------------------------------------- presets


def test_explicit_keys_override_the_preset(registry):
    cfg = cfg_of(registry, "method=fixmatch", "selector.threshold=0.7")
    assert cfg.choices["selector"].name == "threshold"
    assert cfg.choices["selector"].options.threshold == 0.7
    assert cfg.resolved["selector"] == {"name": "threshold", "threshold": 0.7, "soft": False, "temperature": 1.0}
    # the rest of the preset stays
    assert cfg.choices["augmentation.strong"].name == "drop_swap"
    assert cfg.resolved["schedule"] == {"name": "constant", "weight": 1.0}


def test_changing_a_seam_away_from_the_preset_drops_its_options(registry):
    cfg = cfg_of(registry, "method=fixmatch", "selector.name=none")
    assert cfg.resolved["selector"] == {"name": "none"}
    cfg = cfg_of(registry, "method=fixmatch", "augmentation.strong=identity")
    assert cfg.resolved["augmentation"]["strong"] == {"name": "identity"}


def test_same_seam_name_keeps_the_preset_options(registry):
    cfg = cfg_of(registry, "method=fixmatch", "selector.name=threshold", "selector.soft=true")
    assert cfg.choices["selector"].options.threshold == 0.95
    assert cfg.choices["selector"].options.soft is True


def test_presets_are_not_mutated_by_resolving(registry):
    before = json.dumps(registry.get("preset", "fixmatch").settings, sort_keys=True)
    cfg_of(registry, "method=fixmatch", "selector.name=none", "augmentation.strong=identity")
    assert json.dumps(registry.get("preset", "fixmatch").settings, sort_keys=True) == before
    assert cfg_of(registry, "method=fixmatch").choices["selector"].options.threshold == 0.95


def test_supervised_preset_turns_the_consistency_weight_off(registry):
    cfg = cfg_of(registry)  # method defaults to supervised
    assert cfg.method == "supervised"
    assert cfg.choices["schedule"].options.weight == 0.0


# --------------------------------------------------------------------------- checking


@pytest.mark.parametrize("override, suggestion", [
    ("selector.treshold=0.5", "'selector.threshold'"),
    ("trian.steps=3", "'train'"),
    ("train.step=3", "'train.steps'"),
    ("augmentation.strogn=identity", "'strong'"),
    ("dataset.labels_per_clas=5", "'dataset.labels_per_class'"),
])
def test_unknown_key_is_an_error_with_did_you_mean(registry, override, suggestion):
    with pytest.raises(UserError, match="Unknown config key") as info:
        cfg_of(registry, "method=fixmatch", override)
    assert f"Did you mean {suggestion}" in str(info.value)


def test_option_of_another_strategy_is_unknown(registry):
    # the supervised preset's selector is 'none', which has no threshold
    with pytest.raises(UserError, match=r"Unknown config key 'selector.threshold' \(for selector 'none'\)"):
        cfg_of(registry, "selector.threshold=0.5")


@pytest.mark.parametrize("override, key", [
    ("train.steps=abc", "train.steps"),
    ("train.steps=1.5", "train.steps"),
    ("train.steps=true", "train.steps"),
    ("train.lr=fast", "train.lr"),
    ("selector.soft=1", "selector.soft"),
    ("seed=1.5", "seed"),
])
def test_wrong_type_is_a_user_error(registry, override, key):
    with pytest.raises(UserError, match=f"'{re.escape(key)}' must be"):
        cfg_of(registry, "method=fixmatch", override)


def test_ints_are_accepted_for_floats(registry):
    cfg = cfg_of(registry, "method=fixmatch", "selector.threshold=1")
    assert cfg.choices["selector"].options.threshold == 1.0
    assert isinstance(cfg.choices["selector"].options.threshold, float)
    assert run_id(cfg.resolved) == cfg_of(registry, "method=fixmatch", "selector.threshold=1.0").run_id


@pytest.mark.parametrize("override", ["selector.threshold=1.5", "selector.temperature=0", "distance.temperature=-1"])
def test_option_validation_is_a_user_error(registry, override):
    extra = ["distance=kl"] if override.startswith("distance") else []
    with pytest.raises(UserError, match="Invalid value in section"):
        cfg_of(registry, "method=fixmatch", *extra, override)


@pytest.mark.parametrize("override", ["train.steps=0", "train.eval_every=0", "train.batch_size=0"])
def test_nonsense_train_values_are_user_errors_before_training(fast_config, override):
    with pytest.raises(UserError):
        prepare(fast_config(override))


def test_unknown_preset_lists_the_valid_ones(registry):
    with pytest.raises(UserError, match=r"Unknown preset 'fixmath'\. Did you mean 'fixmatch'.*Valid presets: .*fixmatch, .*supervised.*`testbed presets`"):
        cfg_of(registry, "method=fixmath")


def test_unknown_dataset_lists_the_valid_ones(registry):
    with pytest.raises(UserError) as info:
        cfg_of(registry, "dataset.name=treck")
    message = str(info.value)
    assert "Unknown dataset 'treck'" in message and "Did you mean 'trec'" in message
    for name in ("ag_news", "imdb", "sst2", "trec", "mr", "sms_spam", "files", "hub"):
        assert name in message


def test_misspelled_backbone_suggests_the_registered_one(registry):
    with pytest.raises(UserError, match=r"Unknown backbone 'minlm'\. Did you mean 'minilm'\?"):
        cfg_of(registry, "backbone.name=minlm")


def test_hub_id_routes_to_the_huggingface_backbone(registry):
    cfg = cfg_of(registry, "backbone.name=some/hub-id")
    assert cfg.backbone.name == "huggingface"
    assert cfg.choices["backbone"].record.name == "huggingface"
    assert cfg.choices["backbone"].options.model == "some/hub-id"
    assert cfg.resolved["backbone"] == {"name": "huggingface", "max_length": 128, "model": "some/hub-id", **HF_MODEL_DEFAULTS}


def test_dataset_path_routes_to_the_files_dataset(registry, tiny_dataset_dir):
    cfg = cfg_of(registry, f"dataset.name={tiny_dataset_dir}")
    assert cfg.dataset.name == "files"
    assert cfg.choices["dataset"].options.path == str(tiny_dataset_dir)


# --------------------------------------------------------------------------- resolved config and run id


def test_resolved_config_has_every_option_with_its_default(registry):
    resolved = cfg_of(registry, "method=fixmatch", "backbone.name=tiny").resolved
    assert set(resolved) == {"method", "seed", "dataset", "backbone", "train", "augmentation",
                             "teacher", "selector", "distance", "schedule", "tsa", "regulariser"}
    assert resolved["method"] == "fixmatch" and resolved["seed"] == 0
    assert resolved["train"] == dataclasses.asdict(TrainConfig())
    assert resolved["dataset"] == dataclasses.asdict(DatasetConfig())  # trec has no options
    assert resolved["backbone"] == {**dataclasses.asdict(BackboneConfig(name="tiny")),
                                    "layers": 2, "hidden": 128, "heads": 2, "intermediate": 512,
                                    **HF_MODEL_DEFAULTS}
    assert resolved["augmentation"] == {"weak": {"name": "identity"},
                                        "strong": {"name": "drop_swap", "p_delete": 0.1, "p_swap": 0.1},
                                        "labeled": {"name": "identity"}}
    assert resolved["teacher"] == {"name": "self", "dropout": True}
    assert resolved["selector"] == {"name": "threshold", "threshold": 0.95, "soft": False, "temperature": 1.0}
    assert resolved["distance"] == {"name": "ce"}
    assert resolved["schedule"] == {"name": "constant", "weight": 1.0}
    assert resolved["regulariser"] == {"name": "none"}
    assert json.loads(json.dumps(resolved)) == resolved  # plain data, saved as config.json


def test_run_id_is_stable_and_short(registry):
    a = cfg_of(registry, "method=fixmatch", "selector.threshold=0.7", "seed=2")
    b = cfg_of(registry, "seed=2", "selector.threshold=0.7", "method=fixmatch")
    c = cfg_of(registry, toml={"method": "fixmatch", "seed": 2, "selector": {"threshold": 0.7}})
    assert a.run_id == b.run_id == c.run_id == run_id(json.loads(json.dumps(a.resolved)))
    assert re.fullmatch(r"[0-9a-f]{12}", a.run_id)


def test_run_id_names_the_defaults_too(registry):
    explicit = cfg_of(registry, "method=fixmatch", "selector.threshold=0.95", "train.steps=500", "teacher=self")
    assert explicit.run_id == cfg_of(registry, "method=fixmatch").run_id


@pytest.mark.parametrize("override", [
    "seed=1", "train.lr=0.0001", "train.steps=501", "selector.threshold=0.9", "selector.soft=true",
    "dataset.test_limit=50", "dataset.name=sst2", "backbone.max_length=64", "backbone.name=tiny",
    "augmentation.strong.p_delete=0.2", "teacher.dropout=false", "distance=kl", "method=supervised",
])
def test_run_id_differs_when_any_option_differs(registry, override):
    assert cfg_of(registry, "method=fixmatch", override).run_id != cfg_of(registry, "method=fixmatch").run_id


def test_run_id_ignores_threads(registry):
    base = cfg_of(registry, "method=fixmatch")
    threaded = cfg_of(registry, "method=fixmatch", "train.threads=3")
    assert threaded.train.threads == 3 and threaded.resolved["train"]["threads"] == 3
    assert threaded.run_id == base.run_id
    assert "threads" in threaded.resolved["train"]  # dropped from the hash only, not from the config


def test_keys_added_later_keep_the_run_ids_of_runs_made_before_them(registry):
    from testbed.config import run_id

    cfg = cfg_of(registry, "method=fixmatch", "backbone.name=tiny")
    older = json.loads(json.dumps(cfg.resolved))  # as a config.json written before these keys existed
    for section, key in (("backbone", "lora"), ("backbone", "gradient_checkpointing"), ("train", "device"),
                         ("train", "precision"), ("train", "checkpoint_every")):
        del older[section][key]
    assert run_id(older) == cfg.run_id
    assert cfg_of(registry, "method=fixmatch", "backbone.name=tiny", "backbone.gradient_checkpointing=true").run_id == cfg.run_id
    assert cfg_of(registry, "method=fixmatch", "backbone.name=tiny", "backbone.lora.r=4").run_id != cfg.run_id
    assert cfg_of(registry, "method=fixmatch", "backbone.name=tiny", "train.precision=bf16").run_id != cfg.run_id


def test_test_fraction_keeps_the_run_ids_of_local_data_made_before_it(registry, tiny_dataset_dir):
    cfg = cfg_of(registry, f"dataset.name={tiny_dataset_dir / 'train.jsonl'}", f"dataset.test={tiny_dataset_dir / 'test.jsonl'}")
    assert cfg.resolved["dataset"]["test_fraction"] == 0.0  # recorded in config.json, at its default
    older = json.loads(json.dumps(cfg.resolved))
    del older["dataset"]["test_fraction"]  # a config.json written before the key existed
    assert run_id(older) == cfg.run_id
    split = cfg_of(registry, f"dataset.name={tiny_dataset_dir / 'train.jsonl'}", "dataset.test_fraction=0.2")
    assert split.resolved["dataset"]["test_fraction"] == 0.2 and split.run_id != cfg.run_id


@pytest.mark.parametrize("method", ["fixmatch", "supervised", "uda"])
def test_the_regulariser_none_keeps_the_run_ids_of_runs_made_before_the_seam(registry, method):
    cfg = cfg_of(registry, f"method={method}")
    assert cfg.resolved["regulariser"] == {"name": "none"}
    older = {key: value for key, value in json.loads(json.dumps(cfg.resolved)).items() if key != "regulariser"}
    assert run_id(older) == cfg.run_id
    assert cfg_of(registry, f"method={method}", "regulariser=entropy").run_id != cfg.run_id
    saf = cfg_of(registry, "method=freematch")  # the preset's own regulariser is part of its id
    assert saf.resolved["regulariser"] == {"name": "saf", "weight": 0.001}
    assert saf.run_id != run_id({key: value for key, value in saf.resolved.items() if key != "regulariser"})


# --------------------------------------------------------------------------- names that read as numbers


@pytest.mark.parametrize("text", ["nan", "inf", "true", "1", "1e3"])
def test_a_name_valued_key_keeps_a_name_that_reads_as_a_number(text):
    nested = parse_overrides([f"distance.name={text}", f"method={text}", f"selector={text}", f"augmentation.strong={text}"])
    assert nested == {"distance": {"name": text}, "method": text, "selector": text, "augmentation": {"strong": text}}
    assert parse_overrides([f"selector.threshold={text}"])["selector"]["threshold"] != text  # options stay typed


def test_a_plugin_named_nan_can_be_chosen(registry):
    from testbed import Distance

    records = {kind: dict(records) for kind, records in registry.records.items()}
    records["distance"]["nan"] = (Distance(name="nan", summary="a plugin named nan", factory=registry.get("distance", "l2").factory), "test")
    extra = dataclasses.replace(registry, records=records)
    assert resolve(parse_overrides(["distance.name=nan"]), extra).choices["distance"].name == "nan"


def test_a_toml_name_that_is_a_number_says_to_quote_it(registry):
    import tomllib

    with pytest.raises(UserError, match=r"got nan\. In a TOML file, quote a name .*: name = \"nan\""):
        resolve(tomllib.loads("distance.name = nan"), registry)
    with pytest.raises(UserError, match=r"got True\. In a TOML file, quote"):
        resolve(tomllib.loads("selector.name = true"), registry)
