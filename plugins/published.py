"""Published numbers set beside ours: the "Published references" section of ``testbed report``.

A :class:`PublishedTable` is data: error rates (%) keyed by (dataset, total labeled examples,
method), with the source they come from and how its setup differs from ours. A group of runs
matches a table's setting by its dataset name and its total labeled examples (``labeled_size``
in result.json); a cell matches a published row by its method preset. Another plugin adds its
own table the same way this one adds USB's::

    from testbed import hookimpl
    from testbed_plugins.published import PublishedTable, published_section

    MINE = PublishedTable(name="SAT", source="Chen et al. 2022, Table 2", setup="BERT-base",
                          seeds=5, error_rates={("ag_news", 40, "fixmatch"): (12.3, 0.4)})

    @hookimpl
    def testbed_report_sections(results, context):
        return [published_section(results, context, MINE, order=81)]
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from testbed import ReportSection, hookimpl, summarize


@dataclass(frozen=True)
class PublishedTable:
    name: str  # short name used in column headers, e.g. "USB"
    source: str  # paper and table, plus where the numbers were read
    setup: str  # how the published runs differ from ours (backbone, length, iterations)
    seeds: int  # seeds behind each published mean ± std
    error_rates: Mapping[tuple[str, int, str], tuple[float, float]]  # (dataset, labels, method) -> (mean %, std %)

    def settings(self) -> list[tuple[str, int]]:
        return sorted({(dataset, labels) for dataset, labels, _ in self.error_rates})


def _usb_nlp() -> dict[tuple[str, int, str], tuple[float, float]]:
    # results/usb_nlp.csv of microsoft/Semi-supervised-learning (commit 44995033c13f), columns
    # <dataset>_<labels>, cells "mean±std" error rate in %, here for the methods the testbed has
    # presets for plus fullysupervised (every label). Left out: the methods we do not implement
    # and remixmatch, whose row is exactly chance-level error with std 0 in every column
    # (placeholders, not runs). USB's aclImdb is our imdb.
    columns = ("imdb 20", "imdb 100", "ag_news 40", "ag_news 200", "amazon_review 250", "amazon_review 1000",
               "yahoo_answers 500", "yahoo_answers 2000", "yelp_review 250", "yelp_review 1000")
    rows = {
        "fullysupervised": "5.69±0.15 5.72±0.13 5.78±0.07 5.73±0.11 36.4±0.05 36.4±0.05 24.87±0.04 24.84±0.04 32.04±0.03 32.04±0.03",
        "supervised": "20.31±2.79 14.02±1.22 15.06±1.08 14.25±0.97 52.31±1.28 47.53±0.69 37.43±0.29 33.26±0.1 51.22±0.98 46.71±0.37",
        "pseudolabel": "45.45±4.43 19.67±1.01 19.49±3.07 14.69±1.88 53.45±1.9 47.0±0.79 37.7±0.65 32.72±0.31 54.51±0.82 47.33±0.2",
        "meanteacher": "20.06±2.51 13.97±1.49 15.17±1.21 13.93±0.65 52.14±0.52 47.66±0.84 37.09±0.18 33.43±0.28 50.6±0.62 47.21±0.31",
        "uda": "49.97±0.04 50.0±0.0 41.0±24.96 53.68±30.15 60.76±13.61 68.38±16.44 71.3±26.45 70.5±27.58 69.33±15.08 66.95±18.46",
        "fixmatch": "7.72±0.33 7.33±0.13 30.17±1.87 11.71±1.95 47.61±0.83 43.05±0.54 33.03±0.49 30.51±0.53 46.52±0.94 40.65±0.46",
        "flexmatch": "7.82±0.77 7.41±0.38 16.38±3.94 12.08±0.73 45.73±1.6 42.25±0.33 35.61±1.08 31.13±0.18 43.35±0.69 40.51±0.34",
        "freematch": "8.94±0.21 7.95±0.45 12.98±0.58 11.73±0.63 46.41±0.6 42.64±0.06 32.77±0.26 30.32±0.18 47.95±1.45 40.37±1.0",
        "softmatch": "7.76±0.58 7.97±0.72 11.9±0.27 11.72±1.58 45.29±0.95 42.21±0.2 33.07±0.31 30.44±0.62 44.09±0.5 39.76±0.13",
    }
    table = {}
    for method, cells in rows.items():
        for column, cell in zip(columns, cells.split(), strict=True):
            dataset, labels = column.split()
            mean, std = cell.split("±")
            table[(dataset, int(labels), method)] = (float(mean), float(std))
    return table


USB_NLP = PublishedTable(
    name="USB",
    source="Wang et al., *USB: A Unified Semi-supervised Learning Benchmark for Classification*, NeurIPS 2022 "
           "(arXiv:2208.07204), NLP results; numbers from results/usb_nlp.csv in github.com/microsoft/Semi-supervised-learning "
           "(commit 44995033c13f)",
    setup="USB fine-tunes bert-base-uncased on up to 512 tokens with 4 labeled + 4 unlabeled texts per step for thousands "
          "of iterations (config/usb_nlp in the same repository; its AG News uses title and description, its IMDB "
          "holds out 1,000 reviews per class for validation), so its error rates frame ours rather than rank them: "
          "compare the gains over supervised, not the error rates",
    seeds=3,
    error_rates=_usb_nlp(),
)


def _fmt(value: float, spec: str) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def published_section(results, context, table: PublishedTable, order: int = 80) -> ReportSection:
    """Our cells beside ``table`` wherever a group of runs matches one of its settings."""
    import pandas as pd

    settings = table.settings()
    blocks: list = [f"Source: {table.source}. Settings (dataset, labeled examples in total): "
                    + ", ".join(f"{d} {n}" for d, n in settings) + f". {table.setup}. Published numbers are mean ± std "
                    f"over {table.seeds} seeds. *Gain* = the supervised error rate minus the cell's (points; positive is "
                    "better), each table against its own supervised row."]
    done = results[results.status == "done"] if "status" in results else results
    matched = 0
    for group, runs in done.groupby("group", sort=True):
        dataset = str(runs["dataset.name"].iloc[0])
        sizes = runs["labeled_size"].dropna() if "labeled_size" in runs else pd.Series(dtype=float)
        if not len(sizes) or (dataset, int(sizes.iloc[0])) not in settings:
            continue
        labels = int(sizes.iloc[0])
        matched += 1
        errors = {cell: 100 * (1 - sub.test_accuracy.astype(float)) for cell, sub in runs.groupby("cell", sort=True)}
        methods = {cell: str(sub["method"].iloc[0]) for cell, sub in runs.groupby("cell", sort=True)}
        ours_supervised = next((e.mean() for c, e in errors.items() if methods[c] == "supervised"), math.nan)
        theirs = lambda method, key=(dataset, labels): table.error_rates.get((*key, method))  # noqa: E731
        theirs_supervised = (theirs("supervised") or (math.nan,))[0]
        rows = []
        for cell, error in errors.items():
            s, published = summarize(list(error)), theirs(methods[cell])
            rows.append({"cell": cell, "method": methods[cell], "seeds": s.n,
                         "our error rate (%)": f"{s.mean:.2f}" + (f" ± {s.std:.2f}" if s.std is not None else ""),
                         "our gain": _fmt(ours_supervised - s.mean, "+.2f") if methods[cell] != "supervised" else "–",
                         f"{table.name} error rate (%)": f"{published[0]:.2f} ± {published[1]:.2f}" if published else "not published",
                         f"{table.name} gain": _fmt(theirs_supervised - published[0], "+.2f")
                         if published and methods[cell] != "supervised" else "–"})
        full = theirs("fullysupervised")
        blocks += [f"**{group}** ({table.name} setting {dataset} {labels})", pd.DataFrame(rows)]
        if full:
            blocks.append(f"{table.name} with every training label (fully supervised): {full[0]:.2f} ± {full[1]:.2f}.")
    if not matched:
        blocks.append(f"No group of these runs matches a {table.name} setting (same dataset name and total labeled examples).")
    return ReportSection(name=f"references-{table.name.lower()}", title=f"Published references: {table.name}",
                         blocks=tuple(blocks), order=order)


@hookimpl
def testbed_report_sections(results, context):
    # USB's tables are sentence classification (error rates); a report of token-task runs only
    # (NER) has nothing to set beside them, so the section is left out rather than saying so.
    if "task" in results and len(results) and (results["task"] == "token").all():
        return []
    return [published_section(results, context, USB_NLP)]
