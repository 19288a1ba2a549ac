"""Comparison reports: ``testbed report RUNS_DIR ... -o reports/NAME`` -> index.md, index.html
(plots as PNG files beside it), summary.csv and comparisons.csv, from the run directories alone
(result.json, metrics.jsonl, predictions.npz; no model is loaded).

A *group* is a dataset and label budget (the dataset's name, ``testbed.results.dataset_name``: a path's
directory, or ``dataset.label``; and ``dataset.labels_per_class``); a *cell*
is what is compared within a group: the config keys that vary across the runs (seed excluded;
``--group-by`` chooses them), e.g. the method. Seeds are the replicates. A group's cells are
ordered, ranked and compared on test accuracy, or, for token-task runs (NER; result.json ``task``
is ``token``), on entity F1 (``ReportContext.primary_metric``).

This module reads the runs (each file once), decides groups, cells, order and colors, computes the
leaderboard and the paired comparisons (summary.csv, comparisons.csv), and renders. Every section,
the built-in ones included, is a ReportSection from the ``testbed_report_sections`` hook, which
gets the runs table and that ReportContext.

    >>> from testbed.report import render_report
    >>> render_report(["runs"], "reports/first", baseline="supervised")
"""

from __future__ import annotations

import dataclasses
import html
import json
import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from testbed.errors import UserError
from testbed.report_stats import format_value, holm, paired_test, summarize, verdict
from testbed.resources import refuse_shared_data
from testbed.types import ReportContext, ReportDetails, ReportFigure, ReportSection

DATASET = "dataset"  # the column of each run's dataset name (testbed.results.dataset_name of its config)
GROUP_KEYS = (DATASET, "dataset.labels_per_class")
LABELED_SIZE = "dataset.labeled_size"  # a token task's label budget (labeled sentences), where labels_per_class does not apply


def group_label(dataset, labels_per_class, labeled_size) -> str:
    """``trec · 10 labels/class``; a token task's ``conll2003 · 50 labeled sentences``."""
    if isinstance(labeled_size, (int, float)) and labeled_size == labeled_size and labeled_size > 0:
        return f"{format_value(dataset)} · {format_value(int(labeled_size))} labeled sentences"
    return f"{format_value(dataset)} · {format_value(labels_per_class)} labels/class"
CHECKPOINTS = {"last": ("test_accuracy", "test_macro_f1"), "best on validation": ("test_accuracy_best_val", "test_macro_f1_best_val")}
EXTRA_RESULT_KEYS = ("augment_seconds", "eval_seconds", "labeled_size", "unlabeled_size", "test_size", "started_at",
                     "finished_at", "machine", "pseudo_label_per_class", "testbed_version", "git_commit", "label_names",
                     "device", "precision", "evaluated_model",
                     # token tasks (NER): the task, and what their leaderboard shows beside entity F1
                     "task", "test_entity_per_type", "student_test_entity_f1", "teacher_test_entity_f1")
RUNS_SET, COMPARE_SET = "runs", "compare"  # the set column: RUNS_DIR... and --compare-to DIR...
COMPARE_SUFFIX = " (compare)"  # run id of a compare-set run that is also in the runs set
COMPARISON_COLUMNS = ["group", "checkpoint", "cell", "baseline", "pairs", "mean_diff", "ci95_low", "ci95_high", "test", "p",
                      "effect_dz", "p_holm", "verdict"]
METRIC_COLUMN = "metric"  # comparisons.csv: what was compared (accuracy, entity_f1); a column only when a token group is there
ENTITY_F1 = "entity_f1"  # the primary metric of token-task groups with IOB2 tags (NER)


def primary_metric(runs) -> str:
    """The metric a group's runs are ranked and compared on: entity F1 when they are token-task runs
    that have it (IOB2 tags), else test accuracy."""
    token = "task" in runs and any(task == "token" for task in runs["task"])
    return ENTITY_F1 if token and "test_entity_f1" in runs and runs["test_entity_f1"].notna().any() else "accuracy"


# --------------------------------------------------------------------------- loading


def _hashable(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _short(key: str) -> str:
    return key[: -len(".name")] if key.endswith(".name") else key


def implied_keys_dropped(frame, keys: list[str]) -> list[str]:
    """The keys that name a cell, without those that say nothing more: the seams a method preset
    sets (``selector.name`` when ``method`` varies) and the options of a strategy that come with
    its name (``augmentation.strong.alpha_ri`` when ``augmentation.strong.name`` varies over eda
    and drop_swap). Axes the user varied themselves stay."""
    hashed = frame[keys].map(_hashable) if keys else frame
    constant_within = lambda key, by: hashed.groupby(by)[key].nunique().max() <= 1  # noqa: E731
    kept = list(keys)
    if "method" in kept:
        kept = ["method"] + [k for k in kept if k != "method" and not constant_within(k, ["method"])]
    for key in sorted(kept, key=lambda k: k.count("."), reverse=True):
        named_by = key.rsplit(".", 1)[0] + ".name"
        if not key.endswith(".name") and named_by in kept and constant_within(key, [k for k in kept if k != key]):
            kept.remove(key)
    return kept


def _cell_value(value) -> str:
    """A value in a cell's name; a strategy spec (a dict with a name, or a list of them, as a
    composition's steps) as ``name(option=value, ...)``: short, and still telling two cells apart."""
    def spec(item) -> str:
        options = ", ".join(f"{k}={_cell_value(v)}" for k, v in sorted(item.items()) if k != "name")
        return f"{item['name']}({options})" if options else str(item["name"])

    if isinstance(value, dict) and "name" in value:
        return spec(value)
    if isinstance(value, list) and value and all(isinstance(v, dict) and "name" in v for v in value):
        return f"[{', '.join(spec(v) for v in value)}]"
    return format_value(value)


def _cell_name(keys: list[str], values: tuple, varies_within: dict) -> str:
    """``method=fixmatch, selector=flexmatch``; a lone ``method`` key is its bare value. Left out:
    keys that do not vary within this cell's method, and keys this cell does not set (``–``) when
    others name it."""
    shown = [(k, v) for k, v in zip(keys, values) if k not in varies_within or varies_within[k][_hashable(values[0])] > 1]
    if len(keys) == 1 and keys[0] == "method":
        return format_value(values[0])
    named = [(k, v) for k, v in shown if format_value(v) != "–"] or shown
    return ", ".join(f"{_short(k)}={_cell_value(v)}" for k, v in _names_first(named)) or "(all runs)"


def _names_first(pairs: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """A seam's name before its options (``selector=topk, selector.fraction=0.2``, not the
    alphabetical ``selector.fraction=0.2, selector=topk``); seams keep their order."""
    seam = lambda key: _short(key) if key.endswith(".name") else key.rsplit(".", 1)[0]  # noqa: E731
    first = {}
    for i, (key, _) in enumerate(pairs):
        first.setdefault(seam(key), i)
    return sorted(pairs, key=lambda kv: (first[seam(kv[0])], not kv[0].endswith(".name")))


def load_report_table(runs_dirs: Sequence[str | Path], group_by: Sequence[str] = (), compare_to: Sequence[str | Path] = ()):
    """The runs of every directory as one DataFrame: load_results columns (all config keys), the
    extra result.json fields, ``runs_dir``, ``set``, ``group`` and ``cell`` labels; and the cell keys.
    Runs found in several directories of one set are counted once and listed in
    ``frame.attrs["duplicates"]``.

    With ``compare_to``, its runs are a second set beside those of ``runs_dirs``: the ``set`` column
    says which (``runs`` | ``compare``; always ``runs`` without), every cell's label ends in its set
    (``fixmatch [runs]``, ``fixmatch [compare]``), ``set`` joins the cell keys, and a run found in
    both sets counts in each: in the compare set its ``run_id`` gets the suffix `` (compare)``, so
    that every row's id stays unique (``frame.attrs["run_dirs"]`` maps each id to its directory)."""
    import pandas as pd

    from testbed.results import METRICS, dataset_name, results_frame, scan_runs

    runs_dirs, compare_to = [Path(d) for d in runs_dirs], [Path(d) for d in compare_to]
    both = sorted({d.resolve() for d in runs_dirs} & {d.resolve() for d in compare_to})
    if both:
        raise UserError(f"{both[0]} is both a runs directory and a --compare-to directory: give it on one side only.")
    frames, extras = [], {}
    for d, label in [(d, RUNS_SET) for d in runs_dirs] + [(d, COMPARE_SET) for d in compare_to]:
        runs = scan_runs(d)
        frame = results_frame(runs, all_columns=True)  # one scan: config and result read once
        frame.insert(2, "runs_dir", str(d))
        frame.insert(3, "set", label)
        frames.append(frame)
        for run in runs:
            extras[(str(d), run["run_id"])] = {k: run["result"].get(k) for k in EXTRA_RESULT_KEYS} | {"config": run["config"]}
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if frame.empty:
        raise UserError(f"No runs found in {', '.join(map(str, [*runs_dirs, *compare_to]))}.")
    # a run (same run id: same config) found in several directories of a set counts once: a finished
    # copy first, then the first directory given
    rank = frame.status.map(lambda s: 0 if s == "done" else 1)
    keep = frame.assign(_rank=rank).sort_values(["_rank"], kind="stable").drop_duplicates(["set", "run_id"]).index
    dropped = frame.drop(index=keep)
    frame = frame.loc[sorted(keep)].reset_index(drop=True)
    duplicates = [{"run": r.run_id, "counted from": frame.loc[(frame.run_id == r.run_id) & (frame["set"] == r.set), "runs_dir"].iloc[0],
                   "also in": r.runs_dir} for r in dropped.itertuples()]
    for key in EXTRA_RESULT_KEYS + ("config",):
        frame[key] = [extras.get((r.runs_dir, r.run_id), {}).get(key) for r in frame.itertuples()]
    in_both = set(frame.run_id[frame["set"] == RUNS_SET]) & set(frame.run_id[frame["set"] == COMPARE_SET])
    keys = [f"{r.run_id}{COMPARE_SUFFIX}" if r.set == COMPARE_SET and r.run_id in in_both else r.run_id for r in frame.itertuples()]
    run_dirs = {key: Path(r.runs_dir) / r.run_id for key, r in zip(keys, frame.itertuples())}
    frame["run_id"] = keys
    fixed = {"run_id", "status", "runs_dir", "set", "error", *METRICS, *EXTRA_RESULT_KEYS, "config"}
    config_keys = [c for c in frame.columns if c not in fixed]
    for key in config_keys:
        frame[key] = frame[key].astype(object).where(frame[key].notna(), None)
    varied = [k for k in config_keys if k != "train.threads" and len({_hashable(v) for v in frame[k]}) > 1]
    frame[DATASET] = [dataset_name(config or {}) for config in frame["config"]]
    # the keys that say which data a run read (dataset.name, .path, .label, .hub_id) change with the dataset's name,
    # so with the group: they name no cell within it (two local datasets are two groups, not two cells of "files")
    by_dataset = frame.groupby(DATASET)
    naming = {k for k in varied if k.startswith("dataset.")
              and by_dataset[k].agg(lambda s: len({_hashable(v) for v in s})).max() <= 1}
    if group_by:
        unknown = [k for k in group_by if k not in config_keys]
        if unknown:
            raise UserError(f"--group-by {unknown[0]!r} is not a config key of these runs; e.g. {', '.join(varied[:5])}.")
        cell_keys = list(group_by)
    else:
        cell_keys = implied_keys_dropped(frame, [k for k in varied if k not in (*GROUP_KEYS, LABELED_SIZE, "seed", *naming)])
    for key in (*GROUP_KEYS, LABELED_SIZE):
        if key not in frame.columns:
            frame[key] = None
    frame["group"] = [group_label(*r) for r in zip(frame[GROUP_KEYS[0]], frame[GROUP_KEYS[1]], frame[LABELED_SIZE])]
    # a cell's name leaves out keys its method fixes (supervised's strong augmentation, when the
    # others vary it): they say nothing about that method's cells
    varies_within = {}
    if "method" in cell_keys and not group_by:
        by_method = frame.groupby(frame["method"].map(_hashable))
        varies_within = {k: by_method[k].agg(lambda s: len({_hashable(v) for v in s})).to_dict() for k in cell_keys if k != "method"}
    frame["cell"] = [_cell_name(cell_keys, values, varies_within) for values in zip(*(frame[k] for k in cell_keys))] \
        if cell_keys else "(all runs)"
    if compare_to:  # the two sets side by side: every cell says which it is, and the set is a cell key (an ablation axis)
        frame["cell"] = [label if cell == "(all runs)" else f"{cell} [{label}]" for cell, label in zip(frame["cell"], frame["set"])]
        cell_keys = [*cell_keys, "set"]
    frame.attrs["duplicates"] = duplicates
    frame.attrs["run_dirs"] = run_dirs
    frame.attrs["compare"] = bool(compare_to)
    return frame, cell_keys


class RunFiles:
    """metrics.jsonl and predictions.npz of the report's runs, each read at most once: when a section
    first asks for it. Every section gets the same objects; arrays are read-only."""

    def __init__(self, run_dirs: dict[str, Path]):
        self.run_dirs = run_dirs  # run_id -> its directory
        self._metrics: dict[str, list[dict]] = {}
        self._predictions: dict[str, dict | None] = {}

    def _dir(self, run_id: str) -> Path:
        try:
            return self.run_dirs[run_id]
        except KeyError:
            raise KeyError(f"Run {run_id!r} is not in this report (the run_id column of the results table lists its runs).") from None

    def metrics(self, run_id: str) -> list[dict]:
        if run_id not in self._metrics:
            path = self._dir(run_id) / "metrics.jsonl"
            records = []
            if path.is_file():
                for line in path.read_text(encoding="utf-8").splitlines():
                    try:
                        records.append(json.loads(line))
                    except ValueError:
                        continue  # a line cut by an interrupt
            self._metrics[run_id] = records
        return self._metrics[run_id]

    def predictions(self, run_id: str) -> dict | None:
        if run_id not in self._predictions:
            path = self._dir(run_id) / "predictions.npz"
            arrays = None
            if path.is_file():
                with np.load(path) as data:
                    arrays = {k: data[k] for k in data.files}
                for array in arrays.values():
                    array.setflags(write=False)
            self._predictions[run_id] = arrays
        return self._predictions[run_id]


def report_context(frame, cell_keys: Sequence[str], baseline: str, runs_dirs: Sequence[Path], out_dir: Path) -> ReportContext:
    """What every section gets: the groups in order, each group's cells best first, its baseline
    cell and class names, a color per cell, the leaderboard and the paired comparisons, and the
    run files behind ``metrics`` and ``predictions``."""
    done = frame[frame.status == "done"]

    def group_sort(group: str):
        row = done[done.group == group].iloc[0]
        return (str(row[GROUP_KEYS[0]]), row[GROUP_KEYS[1]] if row[GROUP_KEYS[1]] is not None else -1)

    groups = sorted(done["group"].unique().tolist(), key=group_sort)
    cells, baseline_cells, class_names, primary = {}, {}, {}, {}
    for group in groups:
        runs = done[done.group == group]
        primary[group] = primary_metric(runs)
        # best mean last-checkpoint accuracy (a token task's entity F1) first, ties by name
        means = runs.groupby("cell")[f"test_{primary[group]}"].mean()
        cells[group] = tuple(sorted(means.index.tolist(), key=lambda c: (-means[c] if not math.isnan(means[c]) else math.inf, c)))
        matches = runs[runs["method"] == baseline] if "method" in runs else runs.iloc[:0]
        if matches.empty:  # a cell label, with or without its set
            matches = runs[runs.cell.isin([baseline, *(f"{baseline} [{label}]" for label in (RUNS_SET, COMPARE_SET))])]
        preferred = matches[matches["set"] == COMPARE_SET] if "set" in matches else matches.iloc[:0]
        named = sorted((preferred if len(preferred) else matches)["cell"].unique().tolist())  # the compared set's baseline first
        if named:
            baseline_cells[group] = named[0]
        class_names[group] = tuple(next((n for n in runs["label_names"] if isinstance(n, list)), ()))
    files = RunFiles(frame.attrs.get("run_dirs") or {r.run_id: Path(r.runs_dir) / r.run_id for r in frame.itertuples()})
    context = ReportContext(
        runs_dirs=tuple(runs_dirs), out_dir=out_dir, baseline=baseline, cell_keys=tuple(cell_keys),
        metrics=files.metrics, predictions=files.predictions, groups=tuple(groups), cells=cells, baseline_cells=baseline_cells,
        class_names=class_names, duplicates=tuple(frame.attrs.get("duplicates") or ()), primary=primary,
        # a cell keeps its color in every plot of the report
        colors={cell: f"C{i % 10}" for i, cell in enumerate(sorted(done["cell"].unique().tolist()))})
    return dataclasses.replace(context, leaderboard=tuple(leaderboard_rows(frame, context)),
                               comparisons=tuple(comparison_rows(frame, context)))


def leaderboard_rows(frame, context: ReportContext) -> list[dict]:
    """Per group, cell, checkpoint and metric: seeds, mean, std and the 95% t-interval (summary.csv).
    Token-task groups (NER) have entity F1 first, then accuracy and macro-F1 per token, and their
    label budget in ``labeled_size`` (a column only when such a group is there)."""
    rows = []
    token_groups = any(context.primary_metric(g) == ENTITY_F1 for g in context.groups)
    for group in context.groups:
        runs = frame[(frame.status == "done") & (frame.group == group)]
        token = context.primary_metric(group) == ENTITY_F1
        for cell in context.cells[group]:
            sub = runs[runs.cell == cell]
            first = sub.iloc[0]
            budget = {"labels_per_class": None if token else first[GROUP_KEYS[1]]}
            if token_groups:
                budget["labeled_size"] = first[LABELED_SIZE] if token else None
            for checkpoint, (acc, f1) in CHECKPOINTS.items():
                suffix = "_best_val" if checkpoint != "last" else ""
                metrics = ((ENTITY_F1, f"test_{ENTITY_F1}{suffix}"),) if token else ()
                for metric, column in (*metrics, ("accuracy", acc), ("macro_f1", f1)):
                    s = summarize(sub[column].tolist())
                    rows.append({"group": group, "dataset": first[GROUP_KEYS[0]], **budget, "cell": cell,
                                 **({"set": first["set"]} if frame.attrs.get("compare") else {}),
                                 "checkpoint": checkpoint, "metric": metric, "n_seeds": s.n, "mean": s.mean, "std": s.std,
                                 "ci95_low": s.ci_low, "ci95_high": s.ci_high})
    return rows


def comparison_rows(frame, context: ReportContext) -> list[dict]:
    """Every cell against its group's baseline cell on test accuracy (a token task's entity F1: the
    group's primary metric), paired by seed, Holm-corrected within each group and checkpoint (comparisons.csv)."""
    rows = []
    for group in context.groups:
        base = context.baseline_cells.get(group)
        if base is None:
            continue
        runs = frame[(frame.status == "done") & (frame.group == group)]
        for checkpoint, acc in zip(CHECKPOINTS, context.primary_columns(group)):
            family = []
            # the mean per seed: with --group-by a cell can pool several configs run with one seed
            reference = runs[runs.cell == base].groupby("seed")[acc].mean()
            for cell in context.cells[group]:
                if cell == base:
                    continue
                other = runs[runs.cell == cell].groupby("seed")[acc].mean()
                seeds = sorted(set(reference.index) & set(other.index))
                result = paired_test([other[s] for s in seeds], [reference[s] for s in seeds])
                family.append({"group": group, "checkpoint": checkpoint, "cell": cell, "baseline": base, "pairs": len(seeds),
                               "mean_diff": result.mean_diff, "ci95_low": result.ci_low, "ci95_high": result.ci_high,
                               "test": result.test, "p": result.p, "effect_dz": result.effect,
                               METRIC_COLUMN: context.primary_metric(group)})
            for row, adjusted in zip(family, holm([r["p"] for r in family])):
                row["p_holm"] = adjusted
                row["verdict"] = verdict(row["mean_diff"], adjusted)
            rows += family
    return rows


def collect_sections(registry, frame, context: ReportContext, echo: Callable[[str], None]) -> list[ReportSection]:
    """Every plugin's sections (the built-in ones come from a plugin too), sorted by order, then name.
    One broken plugin costs its own sections, not the report."""
    sections = []
    for impl in sorted(registry.pm.hook.testbed_report_sections.get_hookimpls(), key=lambda i: i.plugin_name):
        try:
            found = list(impl.function(results=frame.copy(), context=context) or ())
            bad = [type(s).__name__ for s in found if not isinstance(s, ReportSection)]
            if bad:
                raise TypeError(f"returned {bad[0]}, not ReportSection")
        except Exception as exc:
            found = [ReportSection(name=f"failed-{impl.plugin_name}", title=f"Plugin section failed: {impl.plugin_name}",
                                   blocks=(f"The `testbed_report_sections` hook of plugin `{impl.plugin_name}` raised "
                                           f"{type(exc).__name__}: {exc}",), order=95)]
            echo(f"Warning: report section of plugin {impl.plugin_name!r} failed: {type(exc).__name__}: {exc}")
        sections.extend(found)
    return sorted(sections, key=lambda s: (s.order, s.name))


# --------------------------------------------------------------------------- rendering


def _as_text(frame):
    """The table with every cell as text: strings as they are, other values as config values."""
    text = frame.map(lambda v: v if isinstance(v, str) else format_value(v))
    text.columns = [str(c) for c in frame.columns]
    return text


def _md_table(frame) -> str:
    escape = lambda s: s.replace("|", "\\|").replace("\n", " ")  # noqa: E731 - a cell is one line of a pipe table
    text = _as_text(frame).map(escape)
    text.columns = [escape(c) for c in text.columns]
    # disable_numparse: tabulate would otherwise reformat numeric text ("0.7300" -> "0.73")
    return text.to_markdown(index=False, tablefmt="github", disable_numparse=True)


def _html_table(frame) -> str:
    return _as_text(frame).to_html(index=False, border=0)


def _html_text(text: str) -> str:
    """A Markdown paragraph, or a list when every line starts with "- ": bold, italics and code inline."""
    lines = text.splitlines()
    if lines and all(line.startswith("- ") for line in lines):
        return "<ul>" + "".join(f"<li>{_html_inline(line[2:])}</li>" for line in lines) + "</ul>"
    return f"<p>{_html_inline(text)}</p>"


def _html_inline(text: str) -> str:
    out = html.escape(text)
    out = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out)
    out = re.sub(r"\*(.+?)\*", r"<em>\1</em>", out)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", out)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


STYLE = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.2em;font-size:0.85em}th,td{border:1px solid #ccc;padding:3px 7px;text-align:left}
th{background:#f3f3f3}img{max-width:100%}figure{margin:0.8em 0}figcaption{font-size:0.85em;color:#555}
details{margin:0.2em 0}pre{background:#f7f7f7;padding:0.6em;overflow-x:auto;font-size:0.8em}nav a{margin-right:1em}"""


def render(sections: list[ReportSection], out_dir: Path, title: str) -> tuple[str, str]:
    """Markdown and HTML of ``sections``; saves each figure as ``out_dir/<name>.png``."""
    md = [f"# {title}", "", "Sections: " + " · ".join(f"[{s.title}](#{_slug(s.title)})" for s in sections), ""]
    body = [f"<h1>{html.escape(title)}</h1>",
            "<nav>" + "".join(f'<a href="#{_slug(s.title)}">{html.escape(s.title)}</a>' for s in sections) + "</nav>"]
    names: set[str] = set()
    for section in sections:
        md += [f"## {section.title}", ""]
        body.append(f'<h2 id="{_slug(section.title)}">{html.escape(section.title)}</h2>')
        for block in section.blocks:
            if isinstance(block, str):
                md += [block, ""]
                body.append(_html_text(block))
            elif isinstance(block, ReportFigure):
                if not re.fullmatch(r"[A-Za-z0-9_-]+", block.name) or block.name in names:
                    raise UserError(f"Report figure name {block.name!r} (section {section.name!r}) must be unique and use letters, digits, - and _.")
                names.add(block.name)
                file = f"{block.name}.png"
                block.figure.savefig(out_dir / file, format="png", metadata={"Software": None})
                md += [f"![{block.caption or block.name}]({file})", ""]
                body.append(f'<figure><img src="{file}" alt="{html.escape(block.caption or block.name)}">'
                            f"<figcaption>{html.escape(block.caption)}</figcaption></figure>")
            elif isinstance(block, ReportDetails):
                md += [f"<details><summary>{html.escape(block.summary)}</summary>", "", f"```{block.language}", block.text, "```", "", "</details>", ""]
                body.append(f"<details><summary>{html.escape(block.summary)}</summary><pre>{html.escape(block.text)}</pre></details>")
            elif hasattr(block, "itertuples"):
                md += [_md_table(block), ""]
                body.append(_html_table(block))
            else:
                raise UserError(f"Report section {section.name!r} has a block of type {type(block).__name__}: "
                                "use str, a pandas DataFrame, ReportFigure or ReportDetails.")
    page = (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{html.escape(title)}</title>\n'
            f"<style>{STYLE}</style>\n</head>\n<body>\n" + "\n".join(body) + "\n</body>\n</html>\n")
    return "\n".join(md).rstrip("\n") + "\n", page


def render_report(runs_dirs: Sequence[str | Path], out_dir: str | Path, *, baseline: str = "supervised",
                  group_by: Sequence[str] = (), registry=None, title: str | None = None,
                  echo: Callable[[str], None] = lambda line: None, compare_to: Sequence[str | Path] = ()) -> Path:
    """Write the report of ``runs_dirs`` into ``out_dir``; returns the path of index.html. With
    ``compare_to``, those directories' runs are a second set beside them (``load_report_table``),
    and the paired comparisons are against the baseline cell of that set where it has one."""
    import pandas as pd

    refuse_shared_data(out_dir, "The report directory", "Pass -o somewhere else, e.g. reports/NAME.")
    runs_dirs, compare_to = [Path(d) for d in runs_dirs], [Path(d) for d in compare_to]
    frame, cell_keys = load_report_table(runs_dirs, group_by, compare_to)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("*.png"):
        stale.unlink()
    if registry is None:
        from testbed.plugins import load_plugins

        registry = load_plugins()
    context = report_context(frame, cell_keys, baseline, [*runs_dirs, *compare_to], out)
    sections = collect_sections(registry, frame, context, echo)
    names = ", ".join(d.name for d in runs_dirs) + (f" vs {', '.join(d.name for d in compare_to)}" if compare_to else "")
    md, page = render(sections, out, title or f"Report: {names}")
    pd.DataFrame(list(context.leaderboard)).to_csv(out / "summary.csv", index=False, float_format="%.6g")
    columns = COMPARISON_COLUMNS + ([METRIC_COLUMN] if any(context.primary_metric(g) == ENTITY_F1 for g in context.groups) else [])
    pd.DataFrame(list(context.comparisons), columns=columns).to_csv(out / "comparisons.csv", index=False, float_format="%.6g")
    (out / "index.md").write_text(md, encoding="utf-8")
    (out / "index.html").write_text(page, encoding="utf-8")
    echo(f"{len(frame)} runs ({int((frame.status == 'done').sum())} finished) -> {out / 'index.html'}")
    for line in context.findings():
        echo(f"  {line}")
    return out / "index.html"
