"""testbed: a research testbed for semi-supervised text classification.

The public API is what this module exports: plugins (built-in or third-party) import
``from testbed import ...`` and nothing else (tests/test_public_api.py enforces it for plugins/).
The hooks are listed in ``testbed.hookspecs``.
"""

# --- records, data types and protocols of the seams
from testbed.errors import UserError
from testbed.hookspecs import hookimpl
from testbed.types import (
    Augmentation,
    AugmentationContext,
    AugmentationSpec,
    Backbone,
    BaseExecutor,
    BaseSelector,
    BaseTeacher,
    Dataset,
    DatasetSplits,
    Distance,
    Executor,
    ExecutorContext,
    NoOptions,
    Preset,
    ReportContext,
    ReportFigure,
    ReportSection,
    RunContext,
    Schedule,
    Selection,
    Selector,
    Teacher,
    Texts,
    TextBatch,
)

# --- helpers for plugins: data files, caches, models, writes

# --- helpers for report sections: loading results, statistics, plots

__version__ = "0.1.0"

__all__ = [
    # records, data types and protocols of the seams
    "Augmentation", "AugmentationContext", "AugmentationSpec", "Backbone", "BaseExecutor", "BaseSelector", "BaseTeacher",
    "Dataset", "DatasetSplits", "Distance", "Executor", "ExecutorContext", "NoOptions", "Preset", "ReportContext",
    "ReportFigure", "ReportSection", "RunContext", "Schedule", "Selection", "Selector", "Teacher", "TextBatch", "Texts",
    "UserError", "hookimpl", "__version__",
    # helpers for plugins: data files, caches, models, writes
    # helpers for report sections: loading results, statistics, plots
]
