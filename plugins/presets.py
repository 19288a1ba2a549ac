"""Named methods as data: seam choices and their options."""

from testbed import Preset, hookimpl

PRESETS = {
    "supervised": (
        "labeled data only: the consistency weight λ is 0, so no unlabeled batch is drawn",
        {"schedule": {"name": "constant", "weight": 0.0}},
    ),
    "fixmatch": (
        "FixMatch (Sohn et al. 2020): hard pseudo-labels from the weak view where confidence >= 0.95, "
        "cross-entropy on the strong view",
        {
            "augmentation": {"weak": {"name": "identity"}, "strong": {"name": "drop_swap"}},
            "teacher": {"name": "self"},
            "selector": {"name": "threshold", "threshold": 0.95, "soft": False},
            "distance": {"name": "ce"},
            "schedule": {"name": "constant", "weight": 1.0},
        },
    ),
}


@hookimpl
def testbed_presets():
    return [Preset(name=name, summary=summary, settings=settings) for name, (summary, settings) in PRESETS.items()]
