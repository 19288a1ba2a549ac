"""testbed: a research testbed for semi-supervised text classification.

The public API is what this module exports: plugins (built-in or third-party) import
``from testbed import ...`` and nothing else (tests/test_public_api.py enforces it for plugins/).
The hooks are listed in ``testbed.hookspecs``.
"""

from testbed.data import (
    DATA_DIR_ENV,
    SUFFIXES,
    data_dir,
    infer_label_names,
    load_dataset_dir,
    load_dataset_files,
    read_rows,
    rows_to_texts,
    splits_from_rows,
)
from testbed.errors import UserError
from testbed.hookspecs import hookimpl
from testbed.report_plots import cd_diagram, heatmap, line_plot, new_figure, reliability_plot, threshold_plot
from testbed.report_stats import (
    ALPHA,
    CI_NEEDS,
    PAIRED_RULE,
    Effect,
    calibration,
    factorial_anova,
    format_ci,
    format_effect,
    format_mean_std,
    format_number,
    format_p,
    format_value,
    friedman,
    holm,
    paired_test,
    per_class_f1,
    summarize,
    verdict,
)
from testbed.resources import cache_dir, git_commit, refuse_shared_data
from testbed.results import flatten
from testbed.store import CacheEntry, store_dir, text_digests, weights_fingerprint
from testbed.types import (
    Augmentation,
    AugmentationContext,
    AugmentationSpec,
    Augmenter,
    Backbone,
    BackboneContext,
    BaseExecutor,
    BaseRegulariser,
    BaseSelector,
    BaseTask,
    BaseTeacher,
    Component,
    Dataset,
    DatasetContext,
    DatasetSplits,
    Distance,
    Encoded,
    Executor,
    ExecutorContext,
    NoOptions,
    Preset,
    Record,
    RegularisationBatch,
    Regulariser,
    RegulariserContext,
    ReportContext,
    ReportDetails,
    ReportFigure,
    ReportSection,
    RunContext,
    Sampler,
    Schedule,
    Selection,
    Selector,
    Task,
    TaskContext,
    Teacher,
    TeacherContext,
    TextBatch,
    Texts,
    Training,
)

__version__ = "0.1.0"

__all__ = [
    # the hooks' records, the contexts factories get, the interfaces of what they build
    "Augmentation", "AugmentationContext", "AugmentationSpec", "Augmenter", "Backbone", "BackboneContext", "BaseExecutor",
    "BaseRegulariser", "BaseSelector", "BaseTask", "BaseTeacher", "Component", "Dataset", "DatasetContext", "DatasetSplits", "Distance",
    "Encoded", "Executor", "ExecutorContext", "NoOptions", "Preset", "Record", "RegularisationBatch", "Regulariser",
    "RegulariserContext", "RunContext", "Sampler", "Schedule", "Selection", "Selector", "Task", "TaskContext", "Teacher",
    "TeacherContext", "TextBatch", "Texts", "Training", "UserError", "hookimpl", "__version__",
    # model helpers for tasks and backbones: the run's autocast, inputs on a device, accuracy and macro-F1 of rows
    "accuracy_and_macro_f1", "autocast", "to_device",
    # datasets and local data
    "DATA_DIR_ENV", "SUFFIXES", "data_dir", "infer_label_names", "load_dataset_dir", "load_dataset_files", "read_rows", "rows_to_texts",
    "splits_from_rows",
    # caches (one content-addressed store) and outputs
    "CacheEntry", "cache_dir", "flatten", "git_commit", "refuse_shared_data", "store_dir", "text_digests",
    "weights_fingerprint",
    # report sections: statistics, formatting, plots
    "ALPHA", "CI_NEEDS", "Effect", "PAIRED_RULE", "ReportContext", "ReportDetails", "ReportFigure", "ReportSection", "calibration",
    "cd_diagram", "factorial_anova", "format_ci", "format_effect", "format_mean_std", "format_number", "format_p", "format_value", "friedman",
    "heatmap", "holm", "line_plot", "new_figure", "paired_test", "per_class_f1", "reliability_plot", "summarize",
    "threshold_plot", "verdict",
    # the Python API for notebooks and scripts (testbed/api.py): the CLI's run, grid, report and results
    "grid", "load_results", "report", "run",
]

# Last, as it imports the core: testbed.grid and testbed.report are these functions; their modules stay
# importable by name (`from testbed.grid import expand`), and testbed.api imports them first, so that no
# later import of theirs rebinds the names.
from testbed.api import grid, load_results, report, run

# Names from modules that import torch, loaded when first used: `import testbed` (every CLI command) stays fast.
_LAZY = {"accuracy_and_macro_f1": "testbed.model", "autocast": "testbed.model", "to_device": "testbed.model"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'testbed' has no attribute {name!r}")
