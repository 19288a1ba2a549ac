"""The presets against the published values, written out here independently of plugins/presets.py.

Each value below was read from a stored copy of the source named beside it (repository, path and
the commit of the copy read) and typed in by hand, so a wrong number in a preset fails here instead
of being compared with itself (tests/test_presets.py checks that a preset resolves to its own
table; this module checks the table against the papers' code). The text settings come from USB's
NLP configs where USB has the method (microsoft/Semi-supervised-learning, config/usb_nlp/<method>/
<method>_ag_news_40_0.yaml; the two other datasets' files checked, uda_aclImdb_20_0 and
meanteacher_yelp_review_250_0, have the same algorithm settings) and from
the method's own code otherwise. Where a preset deliberately differs, the entry gives the value we
use instead and why, the test asserts the difference, and README's method table calls it a variant.
Values are given as this testbed's config keys; the source's own flag is in the comment.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from testbed.config import parse_overrides, resolve

USB = "microsoft/Semi-supervised-learning"
USB_TRAIN = f"{USB} train.py @0670313e"
USB_FIXMATCH = f"{USB} config/usb_nlp/fixmatch/fixmatch_ag_news_40_0.yaml @69a2afc8"
USB_FLEXMATCH = f"{USB} config/usb_nlp/flexmatch/flexmatch_ag_news_40_0.yaml @50bafa5c"
USB_FLEXMATCH_HOOK = f"{USB} semilearn/algorithms/flexmatch/utils.py @36b7d084"  # the `# convex` mask line
USB_FREEMATCH = f"{USB} config/usb_nlp/freematch/freematch_ag_news_40_0.yaml @69a2afc8"
USB_SOFTMATCH = f"{USB} config/usb_nlp/softmatch/softmatch_ag_news_40_0.yaml @69a2afc8"
USB_PSEUDOLABEL = f"{USB} config/usb_nlp/pseudolabel/pseudolabel_ag_news_40_0.yaml @5d09751f"
USB_PSEUDOLABEL_CODE = f"{USB} semilearn/algorithms/pseudolabel/pseudolabel.py @167842af"  # clip(it / (0.4 N), 0, 1)
USB_PIMODEL = f"{USB} config/usb_nlp/pimodel/pimodel_ag_news_40_0.yaml @50bafa5c"
USB_MEANTEACHER = f"{USB} config/usb_nlp/meanteacher/meanteacher_ag_news_40_0.yaml @218304f1"
USB_UDA = f"{USB} config/usb_nlp/uda/uda_ag_news_40_0.yaml @69a2afc8"
UDA_MAIN = "google-research/uda text/main.py @1862464b"
UDA_SCRIPT = "google-research/uda text/scripts/run_base_uda.sh @1862464b"
MT_CLI = "CuriousAI/mean-teacher pytorch/mean_teacher/cli.py @621b5371"
MT_MAIN = "CuriousAI/mean-teacher pytorch/main.py @516ce352"  # train(): model.train(); ema_model.train()
MT_RAMPS = "CuriousAI/mean-teacher pytorch/mean_teacher/ramps.py @621b5371"  # sigmoid_rampup: exp(-5 (1 - x)^2)
TEMPENS = "s-laine/tempens config.py @0f0a7673"  # Laine & Aila's code (the Π-model)
# USB's 'mse' is F.mse_loss(probs, targets).mean(dim=1), a mean over classes: semilearn/algorithms/utils/loss.py @32d207a2

SAME = object()  # the preset uses the published value


class Published(NamedTuple):
    method: str
    key: str  # dotted key of the resolved config
    published: Any  # as read from the source, in the testbed's terms
    source: str
    ours: Any = SAME  # the deliberate variant, where the preset differs
    why: str = ""


PUBLISHED = [
    # FixMatch: USB's text config (google-research/fixmatch fixmatch.py @3ae68002 has the same confidence 0.95
    # and wu 1 for images, with uratio 7)
    Published("fixmatch", "selector.threshold", 0.95, USB_FIXMATCH),  # p_cutoff: 0.95
    Published("fixmatch", "selector.soft", False, USB_FIXMATCH),  # hard_label: True
    Published("fixmatch", "distance.name", "ce", USB_FIXMATCH),  # fixmatch.py: consistency_loss(..., 'ce')
    Published("fixmatch", "schedule.name", "constant", USB_FIXMATCH),
    Published("fixmatch", "schedule.weight", 1.0, USB_FIXMATCH),  # ulb_loss_ratio: 1.0
    Published("fixmatch", "train.unlabeled_ratio", 1, USB_FIXMATCH),  # uratio: 1
    # Pseudo-Label: hard labels above p_cutoff, λ ramped linearly over the first 40% of the iterations
    Published("pseudolabel", "selector.threshold", 0.95, USB_PSEUDOLABEL),  # p_cutoff: 0.95
    Published("pseudolabel", "selector.soft", False, USB_PSEUDOLABEL_CODE),  # use_hard_label=True
    Published("pseudolabel", "distance.name", "ce", USB_PSEUDOLABEL_CODE),
    Published("pseudolabel", "schedule.name", "linear", USB_PSEUDOLABEL_CODE),  # np.clip(it / (warm_up · N), 0, 1)
    Published("pseudolabel", "schedule.ramp", 0.4, USB_PSEUDOLABEL),  # unsup_warm_up: 0.4
    Published("pseudolabel", "schedule.weight", 1.0, USB_PSEUDOLABEL),  # ulb_loss_ratio: 1.0
    # Π-model: squared error, a ramp-up over 40% (USB); the sigmoid shape is Laine & Aila's
    Published("pimodel", "distance.name", "l2", USB_PIMODEL),  # consistency_loss(..., 'mse'); tempens: squared error
    Published("pimodel", "schedule.name", "sigmoid", MT_RAMPS),  # "Exponential rampup from arXiv:1610.02242"
    Published("pimodel", "schedule.ramp", 0.4, USB_PIMODEL),  # unsup_warm_up: 0.4 (TEMPENS: rampup_length 80 of 300 epochs)
    Published("pimodel", "schedule.weight", 10.0, USB_PIMODEL, ours=1.0,  # ulb_loss_ratio: 10 (TEMPENS: unsup_weight_max 100)
              why="λ_max = 1 as every consistency preset here; USB's squared error is a mean over classes, ours a sum"),
    # Mean Teacher: the official code, USB for the ramp length
    Published("meanteacher", "teacher.name", "ema", MT_CLI),
    Published("meanteacher", "teacher.dropout", True, MT_MAIN),  # the EMA teacher predicts in train mode: noised
    Published("meanteacher", "distance.name", "l2", MT_CLI),  # --consistency-type default "mse"
    Published("meanteacher", "schedule.name", "sigmoid", MT_RAMPS),
    Published("meanteacher", "schedule.ramp", 0.4, USB_MEANTEACHER),  # unsup_warm_up: 0.4 (linear in USB)
    Published("meanteacher", "teacher.decay", 0.999, MT_CLI, ours=None,  # --ema-decay default 0.999
              why="budget-aware decay 1 - 1/max(10, steps/100): 0.999 needs ~10^5 steps (USB's text config: ema_m 0.0)"),
    Published("meanteacher", "schedule.weight", 50.0, USB_MEANTEACHER, ours=1.0,  # ulb_loss_ratio: 50
              why="λ_max = 1 as every consistency preset here; USB's squared error is a mean over classes, ours a sum"),
    # UDA: the text code and its IMDB script for the loss, USB's UDA for sharpening and masking
    Published("uda", "distance.name", "kl", UDA_MAIN),  # uda.py kl_for_log_probs(target, augmented)
    Published("uda", "selector.soft", True, USB_UDA),  # semilearn/algorithms/uda/uda.py @2d13929a: use_hard_label=False
    Published("uda", "schedule.weight", 1.0, UDA_SCRIPT),  # --uda_coeff=1 (USB: ulb_loss_ratio 1.0)
    Published("uda", "tsa.name", "tsa_linear", UDA_SCRIPT),  # --tsa=linear_schedule
    Published("uda", "tsa.name", "tsa_exp", USB_UDA, ours="tsa_linear",  # tsa_schedule: exp
              why="UDA's own text script uses the linear schedule"),
    Published("uda", "selector.temperature", 0.4, USB_UDA),  # T: 0.4
    Published("uda", "selector.threshold", 0.8, USB_UDA),  # p_cutoff: 0.8
    Published("uda", "selector.temperature", 1.0, UDA_MAIN, ours=0.4,  # uda_softmax_temp default -1: plain softmax
              why="USB's T; the UDA README suggests tuning it for very few labels"),
    Published("uda", "selector.threshold", 0.0, UDA_MAIN, ours=0.8,  # uda_confidence_thresh default -1: no mask
              why="USB's p_cutoff; the UDA README suggests tuning it for very few labels"),
    Published("uda", "train.unlabeled_ratio", 1, USB_UDA),  # uratio: 1
    Published("uda", "train.unlabeled_ratio", 3, UDA_SCRIPT, ours=1,  # --unsup_ratio=3
              why="USB's uratio 1, the testbed's default train.unlabeled_ratio for every method"),
    # FlexMatch
    Published("flexmatch", "selector.threshold", 0.95, USB_FLEXMATCH),  # p_cutoff: 0.95
    Published("flexmatch", "selector.mapping", "convex", USB_FLEXMATCH_HOOK),  # p_cutoff · β / (2 - β)
    Published("flexmatch", "selector.soft", False, USB_FLEXMATCH),  # hard_label: True
    Published("flexmatch", "distance.name", "ce", USB_FLEXMATCH),
    Published("flexmatch", "schedule.weight", 1.0, USB_FLEXMATCH),  # ulb_loss_ratio: 1.0
    Published("flexmatch", "selector.warmup", "pool", USB_FLEXMATCH, ours="seen",  # thresh_warmup: True
              why="the whole-pool warm-up keeps every threshold near 0 for a short run (DESIGN.md)"),
    # FreeMatch
    Published("freematch", "distance.name", "ce", USB_FREEMATCH),  # hard_label: True
    Published("freematch", "schedule.weight", 1.0, USB_TRAIN),  # --ulb_loss_ratio default 1.0, not set in the yaml
    Published("freematch", "regulariser.name", "saf", USB_FREEMATCH),  # the fairness term (freematch.py entropy_loss)
    Published("freematch", "regulariser.weight", 0.001, USB_FREEMATCH),  # ent_loss_ratio: 0.001 (code default 0.01)
    Published("freematch", "selector.ema_momentum", 0.999, USB_FREEMATCH, ours=None,  # ema_p: 0.999
              why="budget-aware momentum 1 - 1/max(10, steps/100)"),
    # SoftMatch
    Published("softmatch", "selector.n_sigma", 2.0, USB_SOFTMATCH),  # n_sigma: 2
    Published("softmatch", "selector.distribution_alignment", True, USB_SOFTMATCH),  # dist_align: True, dist_uniform: True
    Published("softmatch", "selector.soft", False, USB_SOFTMATCH),  # hard_label: True
    Published("softmatch", "distance.name", "ce", USB_SOFTMATCH),
    Published("softmatch", "schedule.weight", 1.0, USB_SOFTMATCH),  # ulb_loss_ratio: 1.0
    Published("softmatch", "selector.ema_momentum", 0.999, USB_SOFTMATCH, ours=None,  # ema_p: 0.999
              why="budget-aware momentum 1 - 1/max(10, steps/100)"),
]
VARIANTS = {p.method for p in PUBLISHED if p.ours is not SAME}


def lookup(resolved: dict, key: str):
    value = resolved
    for part in key.split("."):
        value = value[part]
    return value


@pytest.mark.parametrize("entry", PUBLISHED, ids=lambda p: f"{p.method}:{p.key}={p.published!r}")
def test_preset_has_the_published_value_or_its_stated_variant(registry, entry):
    resolved = resolve(parse_overrides([f"method={entry.method}"]), registry).resolved
    if entry.ours is SAME:
        assert lookup(resolved, entry.key) == entry.published, f"{entry.method} should have {entry.key} = {entry.published!r} ({entry.source})"
    else:
        assert entry.why and entry.ours != entry.published
        assert lookup(resolved, entry.key) == entry.ours, f"{entry.method}: the stated variant of {entry.key} ({entry.why})"


def readme_rows() -> dict[str, str]:
    """The rows of README's method table (the section "## Methods"), by preset name."""
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = text.split("\n## Methods\n", 1)[1].split("\n## ", 1)[0]
    return {m.group(1): m.group(0) for m in re.finditer(r"^\| `([\w-]+)`[^\n]*", section, re.M)}


@pytest.mark.parametrize("method", sorted({p.method for p in PUBLISHED}))
def test_readme_method_table_says_as_published_or_variant(method):
    row = readme_rows()[method]
    if method in VARIANTS:
        assert "variant" in row, row
    else:
        assert "as published" in row and "variant" not in row, row
