"""testbed: a research testbed for semi-supervised text classification.

The public API for plugins is what this module exports; see ``testbed.hookspecs``.
"""

from testbed.errors import UserError
from testbed.hookspecs import (
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
    hookimpl,
)

__version__ = "0.1.0"

__all__ = [
    "Augmentation", "AugmentationContext", "AugmentationSpec", "Backbone", "BaseExecutor", "BaseSelector", "BaseTeacher", "Dataset", "DatasetSplits", "Distance",
    "Executor", "ExecutorContext",
    "NoOptions", "Preset", "ReportContext", "ReportFigure", "ReportSection", "RunContext", "Schedule", "Selection", "Selector", "Teacher", "TextBatch", "Texts",
    "UserError", "hookimpl", "__version__",
]
