"""Named methods as data: seam choices and their options. Nothing here is code.

Each preset keeps the published setting where it transfers to text and to short CPU runs,
and says where it does not. Options the preset leaves out take the strategy's default;
"budget-aware" defaults (EMA momenta, warm-ups, ramps) scale with ``train.steps`` instead of
assuming 10^5-10^6 iterations (see DESIGN.md, "A lesson measured on the peer").
Until text augmentations beyond ``drop_swap`` land, it stands in for back-translation and
RandAugment-style strong views; set ``augmentation.strong`` to change it.
"""

from testbed import Preset, hookimpl

IDENTITY = {"name": "identity"}
NOISE = {"name": "drop_swap"}
HARD_CE = {"distance": {"name": "ce"}}

PRESETS = {
    "supervised": (
        "labeled data only: the consistency weight λ is 0, so no unlabeled batch is drawn",
        {"schedule": {"name": "constant", "weight": 0.0}},
    ),
    "pseudolabel": (
        "Pseudo-Label (Lee 2013): hard labels of the model's own confident predictions (τ = 0.95 as in USB), "
        "λ ramped up linearly over the first 40% of training",
        {"augmentation": {"weak": IDENTITY, "strong": IDENTITY}, "teacher": {"name": "self"},
         "selector": {"name": "threshold", "threshold": 0.95}, **HARD_CE,
         "schedule": {"name": "linear", "weight": 1.0, "ramp": 0.4}},
    ),
    "pimodel": (
        "Π-model (Laine & Aila 2017): squared error between predictions on two noised views, sigmoid ramp-up",
        {"augmentation": {"weak": NOISE, "strong": NOISE}, "teacher": {"name": "self", "dropout": True},
         "selector": {"name": "none"}, "distance": {"name": "l2"},
         "schedule": {"name": "sigmoid", "weight": 1.0, "ramp": 0.4}},
    ),
    "meanteacher": (
        "Mean Teacher (Tarvainen & Valpola 2017): an EMA teacher's predictions, with dropout on as in the official code, "
        "as soft targets, squared error, sigmoid ramp-up; the EMA model is the one evaluated, as published; the EMA "
        "decay is budget-aware instead of 0.999",
        {"augmentation": {"weak": NOISE, "strong": NOISE}, "teacher": {"name": "ema", "dropout": True},
         "selector": {"name": "none"}, "distance": {"name": "l2"},
         "schedule": {"name": "sigmoid", "weight": 1.0, "ramp": 0.4}},
    ),
    "uda": (
        "UDA (Xie et al. 2020): KL to the weak view's targets, λ = 1 and linear TSA on the supervised loss as in "
        "google-research/uda's text script (text/scripts/run_base_uda.sh); sharpening T = 0.4 and confidence mask "
        "β = 0.8 are USB's UDA values (config/usb_nlp/uda), a deliberate choice: the UDA text code defaults to "
        "neither (text/main.py) and its README suggests tuning both for very few labels; 1 unlabeled per labeled "
        "example as USB (the UDA script: 3); USB's text configs use exp TSA",
        {"augmentation": {"weak": IDENTITY, "strong": NOISE}, "teacher": {"name": "self"},
         "selector": {"name": "threshold", "threshold": 0.8, "soft": True, "temperature": 0.4},
         "distance": {"name": "kl"}, "schedule": {"name": "constant", "weight": 1.0},
         "tsa": {"name": "tsa_linear"}},
    ),
    "fixmatch": (
        "FixMatch (Sohn et al. 2020): hard pseudo-labels from the weak view where confidence >= 0.95, "
        "cross-entropy on the strong view",
        {"augmentation": {"weak": IDENTITY, "strong": NOISE}, "teacher": {"name": "self"},
         "selector": {"name": "threshold", "threshold": 0.95, "soft": False}, **HARD_CE,
         "schedule": {"name": "constant", "weight": 1.0}},
    ),
    "flexmatch": (
        "FlexMatch (Zhang et al. 2021): FixMatch with class-wise curriculum thresholds τ·M(β_c), convex mapping; "
        "the warm-up counts unused examples among those seen so far, not the whole pool",
        {"augmentation": {"weak": IDENTITY, "strong": NOISE}, "teacher": {"name": "self"},
         "selector": {"name": "flexmatch", "threshold": 0.95, "mapping": "convex", "warmup": "seen"}, **HARD_CE,
         "schedule": {"name": "constant", "weight": 1.0}},
    ),
    "freematch": (
        "FreeMatch (Wang et al. 2023): self-adaptive global and class-wise thresholds from EMAs of the confidence "
        "(budget-aware momentum instead of 0.999) and the self-adaptive fairness term (λ_f = 0.001, USB's NLP setting)",
        {"augmentation": {"weak": IDENTITY, "strong": NOISE}, "teacher": {"name": "self"},
         "selector": {"name": "freematch"}, **HARD_CE, "schedule": {"name": "constant", "weight": 1.0},
         "regulariser": {"name": "saf"}},
    ),
    "softmatch": (
        "SoftMatch (Chen et al. 2023): Gaussian weights below the EMA mean confidence, uniform distribution "
        "alignment (budget-aware momentum instead of 0.999)",
        {"augmentation": {"weak": IDENTITY, "strong": NOISE}, "teacher": {"name": "self"},
         "selector": {"name": "softmatch", "distribution_alignment": True}, **HARD_CE,
         "schedule": {"name": "constant", "weight": 1.0}},
    ),
    "noisy-student": (
        "Noisy Student (Xie et al. 2020): the first quarter of the run trains the first teacher on the labeled data "
        "alone; then 3 rounds, each with a frozen, unnoised teacher (the previous round's student) and a student "
        "re-initialised (weights, optimizer and learning-rate warm-up) and trained on noised views of confident "
        "pseudo-labels",
        {"augmentation": {"weak": IDENTITY, "strong": NOISE},
         "teacher": {"name": "snapshot", "rounds": 4, "reinit_student": True, "dropout": False},
         "selector": {"name": "threshold", "threshold": 0.8}, **HARD_CE,
         "schedule": {"name": "delayed", "weight": 1.0, "start": 0.25}},  # start = 1 / teacher.rounds
    ),
    "distillation": (
        "Knowledge distillation (Hinton et al. 2015): a separately fine-tuned teacher (teacher.backbone, MiniLM by "
        "default) teaches the student with KL, both softened at temperature 2, on unlabeled text",
        {"augmentation": {"weak": IDENTITY, "strong": IDENTITY},
         "teacher": {"name": "model", "backbone": "minilm", "temperature": 2.0},
         "selector": {"name": "none"}, "distance": {"name": "kl", "temperature": 2.0},
         "schedule": {"name": "constant", "weight": 1.0}},
    ),
    "llm-distill": (
        "LLM distillation: a prompted causal LM (teacher.model, offline SmolLM2-135M-Instruct by default; zero-shot, "
        "teacher.shots for few-shot, then add teacher.calibrate=true) teaches the student with KL, both softened at "
        "temperature 2, on unlabeled text; give the class words with teacher.verbalizers",
        {"augmentation": {"weak": IDENTITY, "strong": IDENTITY},
         # uncalibrated: zero-shot, calibration cost smollm2 accuracy (AG News 0.65 -> 0.54, TREC 0.30 -> 0.17);
         # 4-shot it helped (0.16 -> 0.47, 0.15 -> 0.33): benchmarks/test_prompt_teacher.py
         "teacher": {"name": "prompt", "model": "smollm2", "calibrate": False, "temperature": 2.0},
         "selector": {"name": "none"}, "distance": {"name": "kl", "temperature": 2.0},
         "schedule": {"name": "constant", "weight": 1.0}},
    ),
    "cotraining": (
        "Co-training (Blum & Mitchell 1998; deep form after Qiao et al. 2018): a peer model and the student teach "
        "each other with confident hard pseudo-labels",
        {"augmentation": {"weak": IDENTITY, "strong": NOISE}, "teacher": {"name": "cotrain", "threshold": 0.95},
         "selector": {"name": "threshold", "threshold": 0.95}, **HARD_CE,
         "schedule": {"name": "constant", "weight": 1.0}},
    ),
}


@hookimpl
def testbed_presets():
    return [Preset(name=name, summary=summary, settings=settings) for name, (summary, settings) in PRESETS.items()]
