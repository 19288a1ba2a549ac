"""The built-in sections of ``testbed report``: runs left out, leaderboard, paired comparisons,
ranks across datasets, ablation effects, training dynamics, calibration, cost and provenance.

A plugin like any other: ``testbed_report_sections(results, context)`` returns ReportSection
records built from the runs table and the ReportContext (every run's metrics and predictions,
already read; groups, cells best first, baseline cells, colors, the paired comparisons), with the
statistics and plot helpers that ``testbed`` exports. The ``order`` of each section places it;
a plugin's own section with order 15 lands between the leaderboard and the comparisons.

Token-task groups (NER: ``context.primary_metric(group) == "entity_f1"``) are shown, compared and
ranked on entity F1 where sentence groups use accuracy, with a per-type table in the leaderboard and
pseudo-labels per tag; a report without them renders as it did before token tasks existed.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np

from testbed import (
    ALPHA,
    PAIRED_RULE,
    ReportDetails,
    ReportFigure,
    ReportSection,
    __version__,
    calibration,
    cd_diagram,
    factorial_anova,
    format_ci,
    format_effect,
    format_mean_std,
    format_number,
    format_p,
    format_value,
    friedman,
    git_commit,
    heatmap,
    holm,
    hookimpl,
    line_plot,
    per_class_f1,
    reliability_plot,
    summarize,
    threshold_plot,
)

CHECKPOINTS = {"last": ("test_accuracy", "test_macro_f1"), "best on validation": ("test_accuracy_best_val", "test_macro_f1_best_val")}
MAX_FIGURE_CELLS = 10  # lines per plot; more cells are plotted as the best ones on the leaderboard
ENTITY_F1 = "entity_f1"  # the primary metric of token-task groups (NER): ReportContext.primary_metric
METRIC_NAMES = {"accuracy": "accuracy", ENTITY_F1: "entity F1"}


def _token_groups(context) -> list[str]:
    """The groups ranked on entity F1 (token tasks, NER); the others on accuracy."""
    return [g for g in context.groups if context.primary_metric(g) == ENTITY_F1]


def _metric_name(context, group: str) -> str:
    return METRIC_NAMES.get(context.primary_metric(group), context.primary_metric(group))


def _with_primary(results, context):
    """``results`` with ``_primary``: each run's test value of its group's metric (last checkpoint)."""
    values = results["test_accuracy"].copy()
    for group in _token_groups(context):
        inside = results["group"] == group
        values[inside] = results.loc[inside, context.primary_columns(group)[0]]
    return results.assign(_primary=values)


def _hashable(value) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _short(key: str) -> str:
    return key[: -len(".name")] if key.endswith(".name") else key


def _runs(results, group: str):
    return results[(results.status == "done") & (results.group == group)]


# --------------------------------------------------------------------------- not included


def findings_section(results, context) -> ReportSection:
    lines = context.findings()
    blocks = ("\n".join(f"- {line}" for line in lines),) if lines else ("No finished runs to compare yet.",)
    note = (f"Last checkpoint; the leader is the highest mean, and *better*/*worse* are the paired comparisons against "
            f"the baseline below at α = {ALPHA} after Holm's correction.")
    # the grid files `testbed grid` kept in the runs directories: what was run, with the commands in their comments
    grids = [ReportDetails(summary=f"grid file {p.name} ({p.parent})", text=p.read_text(encoding="utf-8", errors="replace"),
                           language="toml")
             for p in sorted(p for d in context.runs_dirs for p in Path(d).glob("*.toml"))]
    return ReportSection(name="findings", title="Findings", blocks=(*blocks, note, *grids), order=1)


def runs_section(results, context) -> ReportSection:
    import pandas as pd

    blocks: list = []
    if "set" in results and results["set"].nunique() > 1:  # testbed report RUNS_DIR... --compare-to DIR...
        dirs = lambda label: ", ".join(sorted(set(results.loc[results["set"] == label, "runs_dir"])))  # noqa: E731
        blocks.append(f"Two sets of runs side by side: *runs* ({dirs('runs')}) and *compare* ({dirs('compare')}). Each cell's "
                      "name ends in its set, the paired comparisons are against the baseline cell of the compare set where it "
                      "has one, and a run found in both sets counts in each (in the compare set its id ends in \"(compare)\").")
    bad = results[results.status != "done"]
    if len(bad):
        table = bad[["runs_dir", "run_id", "status", "group", "cell", "seed" if "seed" in bad else "run_id", "error"]].copy()
        table["error"] = table["error"].map(lambda e: "–" if e is None or (isinstance(e, float) and math.isnan(e)) else str(e)[:300])
        blocks += [f"{len(bad)} of {len(results)} runs are not finished and are left out of every statistic below:",
                   table.rename(columns={"runs_dir": "runs directory", "run_id": "run"})]
    else:
        blocks.append(f"All {len(results)} runs finished.")
    if context.duplicates:
        blocks += [f"{len(context.duplicates)} runs appear in more than one runs directory; each is counted once:",
                   pd.DataFrame(list(context.duplicates))]
    gaps = []
    for group in context.groups:
        runs = _runs(results, group)
        seeds = sorted(set(runs["seed"].tolist())) if "seed" in runs else []
        for cell in context.cells[group]:
            have = set(runs[runs.cell == cell]["seed"].tolist())
            lacking = [s for s in seeds if s not in have]
            if lacking:
                gaps.append({"group": group, "cell": cell, "finished seeds": ", ".join(map(str, sorted(have))),
                             "missing seeds": ", ".join(map(str, lacking))})
    if gaps:
        blocks += ["Cells without a finished run for every seed of their group (paired comparisons use the common seeds):",
                   pd.DataFrame(gaps)]
    return ReportSection(name="runs", title="Runs", blocks=tuple(blocks), order=5)


# --------------------------------------------------------------------------- leaderboard


def leaderboard_section(results, context) -> ReportSection:
    import pandas as pd

    blocks: list = ["Test accuracy over seeds: mean ± standard deviation and the 95% confidence interval of the mean "
                    "(t-interval, shown clipped to [0, 1]). *Last* is the checkpoint at the end of training; *best on validation* is the "
                    "evaluation with the highest validation accuracy of the reported model (the first such, on ties). Error rate = 1 − accuracy "
                    "(last). The reported model is the student, except for teachers that keep a model the papers evaluate "
                    "(Mean Teacher's EMA weights; `train.evaluate`): there *student accuracy* gives the student's own, last. "
                    "*Teacher accuracy*, for cells whose teacher is a separate, fixed model: the teacher's own predictions on the "
                    "same test set."]
    tokens = _token_groups(context)
    if tokens:
        blocks.append(f"Token-classification groups ({'; '.join(tokens)}: NER) are ranked on **entity F1** instead: entity-level "
                      "micro F1 in the strict IOB2 sense (seqeval; an entity counts when its type and both boundaries match), mean "
                      "± standard deviation and the 95% confidence interval over seeds; *best on validation* there is the "
                      "evaluation with the highest *validation entity F1*; token accuracy (per word) beside it. Their paired "
                      "comparisons, ranks, ablation means and cost use entity F1 too. Below each, precision, recall and F1 per "
                      "entity type (last checkpoint, mean over seeds).")
    for group in context.groups:
        runs = _runs(results, group)
        if group in tokens:
            blocks += [f"**{group}**", *_token_leaderboard(runs, context, group)]
            continue
        rows = []
        for cell in context.cells[group]:
            sub = runs[runs.cell == cell]
            last, best = summarize(sub.test_accuracy.tolist()), summarize(sub.test_accuracy_best_val.tolist())
            rows.append({"cell": cell, "seeds": last.n, "accuracy, last": format_mean_std(last), "95% CI, last": format_ci(last),
                         "error rate, last": format_number(1 - last.mean),
                         "macro-F1, last": format_mean_std(summarize(sub.test_macro_f1.tolist())),
                         "accuracy, best on val": format_mean_std(best), "95% CI, best on val": format_ci(best),
                         "macro-F1, best on val": format_mean_std(summarize(sub.test_macro_f1_best_val.tolist()))})
            reported = sub["evaluated_model"].tolist() if "evaluated_model" in sub else []
            student = sub["student_test_accuracy"].dropna().tolist() if "student_test_accuracy" in sub else []
            if student and "teacher" in reported:  # the teacher's model is reported (Mean Teacher): the student beside it
                rows[-1]["student accuracy"] = format_mean_std(summarize(student))
            teacher = sub["teacher_test_accuracy"].dropna().tolist() if "teacher_test_accuracy" in sub else []
            if teacher and "teacher" not in reported:  # a fixed teacher (distillation, a prompted LLM): its own predictions
                rows[-1]["teacher accuracy"] = format_mean_std(summarize(teacher))
        blocks += [f"**{group}**", pd.DataFrame(rows).fillna("")]
    return ReportSection(name="leaderboard", title="Leaderboard", blocks=tuple(blocks), order=10)


def _token_leaderboard(runs, context, group: str) -> list:
    """A token-task group's leaderboard (entity F1, last and best on validation, token accuracy beside
    it) and its per-type table (from result.json's ``test_entity_per_type``)."""
    import pandas as pd

    values = lambda sub, key: sub[key].dropna().tolist() if key in sub else []  # noqa: E731
    rows, types = [], []
    for cell in context.cells[group]:
        sub = runs[runs.cell == cell]
        last, best = summarize(sub.test_entity_f1.tolist()), summarize(sub.test_entity_f1_best_val.tolist())
        rows.append({"cell": cell, "seeds": last.n, "entity F1, last": format_mean_std(last), "95% CI, last": format_ci(last),
                     "token accuracy, last": format_mean_std(summarize(sub.test_accuracy.tolist())),
                     "entity F1, best on val": format_mean_std(best), "95% CI, best on val": format_ci(best),
                     "token accuracy, best on val": format_mean_std(summarize(sub.test_accuracy_best_val.tolist()))})
        reported = sub["evaluated_model"].tolist() if "evaluated_model" in sub else []
        student, teacher = values(sub, "student_test_entity_f1"), values(sub, "teacher_test_entity_f1")
        if student and "teacher" in reported:  # the teacher's model is reported (Mean Teacher): the student beside it
            rows[-1]["student entity F1"] = format_mean_std(summarize(student))
        if teacher and "teacher" not in reported:  # a fixed teacher (distillation): its own predictions
            rows[-1]["teacher entity F1"] = format_mean_std(summarize(teacher))
        tables = [t for t in sub["test_entity_per_type"] if isinstance(t, dict)] if "test_entity_per_type" in sub else []
        for kind in sorted({k for table in tables for k in table}):
            scores = [table[kind] for table in tables if isinstance(table.get(kind), dict)]
            precision, recall, f1 = (summarize([score[key] for score in scores]) for key in ("precision", "recall", "f1"))
            types.append({"cell": cell, "type": kind, "seeds": f1.n, "precision": format_number(precision.mean),
                          "recall": format_number(recall.mean), "F1": format_mean_std(f1),
                          "support": format_value(scores[0].get("support")) if scores else "–"})
    blocks = [pd.DataFrame(rows).fillna("")]
    if types:
        blocks += ["Per entity type (test, last checkpoint): precision, recall and F1 (mean ± std) over seeds; support = "
                   "gold entities of the type in the test set.", pd.DataFrame(types)]
    return blocks


# --------------------------------------------------------------------------- paired comparisons


def comparisons_section(results, context) -> ReportSection:
    import pandas as pd

    tokens = _token_groups(context)
    metric = "test accuracy" if not tokens else f"test accuracy (entity F1 in the token-classification groups: {'; '.join(tokens)})"
    blocks: list = [f"Each cell against the baseline **{context.baseline}**, on {metric}. {PAIRED_RULE}"]
    missing = [g for g in context.groups if g not in context.baseline_cells]
    if missing:
        blocks.append(f"No baseline runs (`method = {context.baseline}`, or a cell of that name) in: {'; '.join(missing)}. "
                      "Choose another with `--baseline`.")
    for group in context.groups:
        for checkpoint in CHECKPOINTS:
            family = [r for r in context.comparisons if r["group"] == group and r["checkpoint"] == checkpoint]
            if not family:
                continue
            table = pd.DataFrame([{
                "cell": r["cell"], "pairs": r["pairs"], "difference (points)": format_number(100 * r["mean_diff"], "+.2f"),
                "95% CI (points)": "needs ≥ 2 pairs" if r["ci95_low"] is None else
                f"[{100 * r['ci95_low']:+.2f}, {100 * r['ci95_high']:+.2f}]",
                "test": r["test"], "p": format_p(r["p"]), "p (Holm)": format_p(r["p_holm"]),
                "effect d_z": format_effect(r["effect_dz"]), "verdict": r["verdict"]} for r in family])
            on = ", on entity F1" if group in tokens else ""
            blocks += [f"**{group}**, {checkpoint} checkpoint, vs {family[0]['baseline']}{on}", table]
    return ReportSection(name="comparisons", title="Paired comparisons", blocks=tuple(blocks), order=20)


# --------------------------------------------------------------------------- across datasets


def across_section(results, context) -> ReportSection:
    import pandas as pd

    done = _with_primary(results[results.status == "done"], context)  # a token group's cells ranked on entity F1
    section = lambda *blocks: ReportSection(name="across", title="Across datasets", blocks=blocks, order=30)  # noqa: E731
    if len(context.groups) >= 2:
        kind = "datasets and label budgets"
        table = done.groupby(["group", "cell"])["_primary"].mean().unstack("cell")
    elif context.groups:
        kind = "seeds (one dataset and budget here: this ranks the cells within it, not across datasets)"
        table = done[done.group == context.groups[0]].pivot_table(index="seed", columns="cell", values="_primary", aggfunc="mean")
    else:
        return section("No finished runs.")
    complete = table.dropna(axis=1, how="any")
    dropped = sorted(set(table.columns) - set(complete.columns))
    if complete.shape[1] < 2 or complete.shape[0] < 1:
        return section("Ranking needs at least 2 cells with results in every block.")
    ranking = friedman(complete[sorted(complete.columns)])
    order = np.argsort(ranking.average_ranks, kind="stable")
    tokens = _token_groups(context)
    metric = "test accuracy (" if not tokens else f"test accuracy (entity F1 in the token-classification groups: {'; '.join(tokens)}; "
    blocks: list = [f"Blocks: {ranking.blocks} {kind}; in each block the cells are ranked by mean {metric}last "
                    "checkpoint; 1 = best, ties share the average rank)."]
    if dropped:
        blocks.append(f"Left out (no result in every block): {'; '.join(dropped)}.")
    blocks.append(pd.DataFrame([{"cell": ranking.names[i], "average rank": f"{ranking.average_ranks[i]:.2f}"} for i in order]))
    if ranking.statistic is None:
        blocks.append("Friedman test: needs ≥ 3 cells and ≥ 2 blocks.")
    else:
        blocks.append(f"Friedman test: χ² = {ranking.statistic:.3f}, p = {format_p(ranking.p)} "
                      f"({'the cells differ' if ranking.p < ALPHA else 'no detectable difference among the cells'} at α = {ALPHA}).")
    if ranking.cd is not None:
        blocks.append(f"Nemenyi critical difference (α = {ALPHA}, {len(ranking.names)} cells, {ranking.blocks} blocks): "
                      f"CD = {ranking.cd:.3f}; cells whose average ranks differ by less than CD are joined by a bar.")
        blocks.append(ReportFigure(name="critical-difference", figure=cd_diagram(ranking), caption="Critical-difference diagram"))
    return section(*blocks)


# --------------------------------------------------------------------------- ablation effects


def ablation_section(results, context) -> ReportSection:
    import pandas as pd

    blocks: list = ["Marginal mean test accuracy (last checkpoint) of each value of each varied axis, pooled over the "
                    "other axes and the seeds; the CI is the t-interval over those runs."]
    tokens = _token_groups(context)
    if tokens:
        blocks.append(f"In the token-classification groups ({'; '.join(tokens)}) the means, the analysis and the heatmaps are of "
                      "entity F1 instead.")
    any_axis = False
    for gi, group in enumerate(context.groups):
        column, name = context.primary_columns(group)[0], _metric_name(context, group)
        runs, note = _without_outside_baseline(_runs(results, group), context.baseline_cells.get(group), context.cell_keys)
        axes = [k for k in context.cell_keys if k in runs and len({_hashable(v) for v in runs[k]}) > 1]
        if not axes:
            continue
        any_axis = True
        blocks += [f"**{group}**", *([note] if note else [])]
        for axis in axes:
            rows = []
            for _, sub in sorted(runs.groupby(runs[axis].map(_hashable)), key=lambda kv: kv[0]):
                s = summarize(sub[column].tolist())
                rows.append({_short(axis): format_value(sub[axis].iloc[0]), "runs": s.n, f"mean {name}": format_number(s.mean),
                             "95% CI": format_ci(s)})
            blocks.append(pd.DataFrame(rows))
        if len(axes) >= 2:
            blocks += _factor_table(runs, axes, column, "test accuracy" if name == "accuracy" else name)
        for ai, (a, b) in enumerate([(a, b) for i, a in enumerate(axes) for b in axes[i + 1:]][:6]):
            pivot = runs.assign(_a=runs[a].map(format_value), _b=runs[b].map(format_value)).pivot_table(
                index="_a", columns="_b", values=column, aggfunc="mean")
            blocks.append(ReportFigure(name=f"interaction-{gi}-{ai}", figure=heatmap(pivot, _short(a), _short(b)),
                                       caption=f"{group}: mean test {name} by {_short(a)} × {_short(b)} (blank: no runs)"))
    if not any_axis:
        blocks.append("No axis varies within a dataset and budget.")
    return ReportSection(name="ablation", title="Ablation effects", blocks=tuple(blocks), order=40)


def _without_outside_baseline(runs, baseline: str | None, keys) -> tuple:
    """The group's runs without the baseline cell when it lies outside the grid (an extra cell, e.g.
    supervised beside a grid of augmentation × distance × selector: its values are none of the axes'
    levels on two axes or more), so the axes' means and the factorial analysis describe the grid."""
    if baseline is None or not (runs.cell == baseline).any():
        return runs, ""
    inside, base = runs[runs.cell != baseline], runs[runs.cell == baseline]
    outside = [k for k in keys if k in runs and not {_hashable(v) for v in base[k]} <= {_hashable(v) for v in inside[k]}]
    if len(outside) < 2:
        return runs, ""
    return inside, f"The baseline cell ({baseline}) lies outside the grid's axes and is left out of this section."


def _factor_table(runs, axes: list[str], column: str = "test_accuracy", name: str = "test accuracy") -> list:
    """Which axes matter: the factorial ANOVA of test accuracy (``column``, called ``name``: a token
    task's entity F1; main effects, two-way interactions, the seed as a block), Holm-corrected over
    the terms; a sentence naming the largest real effect."""
    import pandas as pd

    analysis = factorial_anova(runs.assign(seed=runs["seed"].map(str)), axes, column, block="seed")
    if isinstance(analysis, str):
        return [f"Which factors matter: not computed, {analysis}."]
    effects, residual_df = analysis
    tested = [e for e in effects if e.p is not None]
    adjusted = dict(zip((e.term for e in tested), holm([e.p for e in tested])))
    rows = [{"term": " × ".join(_short(t) for t in e.term.split(" × ")), "df": e.df, "share of variance (η²)": format_number(e.share, ".3f"),
             "F": format_number(e.f, ".2f"), "p": format_p(e.p), "p (Holm)": format_p(adjusted.get(e.term)),
             "verdict": "" if e.p is None else "matters" if adjusted[e.term] < ALPHA else "no detectable effect"}
            for e in sorted(effects, key=lambda e: -e.share)]
    real = [e for e in sorted(tested, key=lambda e: -e.share) if adjusted[e.term] < ALPHA]
    if real:
        names = ", ".join(f"{' × '.join(_short(t) for t in e.term.split(' × '))} (η² = {e.share:.3f})" for e in real)
        headline = f"Terms with a real effect, largest first: {names}."
    else:
        headline = "No axis or pair of axes has a detectable effect at α = 0.05 (Holm)."
    intro = (f"Which factors matter: a fixed-effects ANOVA of {name} (last) on each axis and each pair of axes, the "
             f"seed as a block, {residual_df} residual degrees of freedom (the higher interactions and the noise); η² is the "
             "share of the runs' variance a term explains; p-values Holm-corrected over the terms. " + headline)
    return [intro, pd.DataFrame(rows)]


# --------------------------------------------------------------------------- training dynamics


def _mean_curve(context, runs, key: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(steps, mean over ``runs`` of ``key`` at each step) from metrics.jsonl; None without values."""
    per_step: dict[int, list[float]] = {}
    for run_id in runs.run_id:
        for rec in context.metrics(run_id):
            if rec.get(key) is not None:
                per_step.setdefault(rec["step"], []).append(float(rec[key]))
    if not per_step:
        return None
    steps = np.array(sorted(per_step))
    return steps, np.array([np.mean(per_step[s]) for s in steps])


def _curves(results, context, group: str, key: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """cell -> (steps, mean over seeds of ``key``), for the best MAX_FIGURE_CELLS cells."""
    runs = _runs(results, group)
    curves = {cell: _mean_curve(context, runs[runs.cell == cell], key) for cell in context.cells[group][:MAX_FIGURE_CELLS]}
    return {cell: curve for cell, curve in curves.items() if curve is not None}


def dynamics_section(results, context) -> ReportSection:
    blocks: list = [f"From metrics.jsonl, mean over seeds at each evaluation (at most {MAX_FIGURE_CELLS} cells per plot, "
                    "best first)."]
    for gi, group in enumerate(context.groups):
        blocks.append(f"**{group}**")
        metric, name = context.primary_metric(group), _metric_name(context, group)  # a token group: entity F1
        test, val = _curves(results, context, group, f"test_{metric}"), _curves(results, context, group, f"val_{metric}")
        if test:
            blocks.append(ReportFigure(name=f"learning-curves-{gi}", figure=line_plot(
                [(f"test {name}", test), (f"validation {name}", val)], "step", name, dict(context.colors)),
                caption=f"{group}: test and validation {name} vs step"))
        mask = _curves(results, context, group, "mask_rate")
        if mask:
            quality = _curves(results, context, group, "pseudo_label_accuracy")
            blocks.append(ReportFigure(name=f"pseudo-labels-{gi}", figure=line_plot(
                [("mask rate (share selected)", mask), ("accuracy of selected pseudo-labels", quality)], "step", "share",
                dict(context.colors)), caption=f"{group}: pseudo-label quantity vs quality over training"))
            never = [c for c, (_, m) in mask.items() if len(m) and np.all(m >= 0.999)]
            if never:
                blocks.append(f"Selected every pseudo-label at every evaluation (the selector never engaged): {'; '.join(never)}.")
            idle = [c for c, (_, m) in mask.items() if len(m) and np.all(m < 0.01)]
            if idle:
                blocks.append("Selected under 1% of pseudo-labels at every evaluation (the unlabeled loss hardly "
                              f"acted; close to supervised training): {'; '.join(idle)}.")
        blocks += _thresholds(results, context, group, gi)
        blocks += _pseudo_label_classes(results, context, group, token=group in _token_groups(context))
    return ReportSection(name="dynamics", title="Training dynamics", blocks=tuple(blocks), order=50)


def _thresholds(results, context, group: str, gi: int) -> list:
    blocks = []
    runs = _runs(results, group)
    for ci, cell in enumerate(context.cells[group][:6]):
        sub = runs[runs.cell == cell]
        keys = sorted({k for run_id in sub.run_id for rec in context.metrics(run_id) for k in rec
                       if re.fullmatch(r"selector/threshold/class_\d+", k)}, key=lambda k: int(k.rsplit("_", 1)[1]))
        if not keys:
            continue
        curves = [(context.class_name(group, int(key.rsplit("_", 1)[1])), *curve) for key in keys
                  if (curve := _mean_curve(context, sub, key)) is not None]
        if not curves:
            continue
        blocks.append(ReportFigure(name=f"thresholds-{gi}-{ci}", figure=threshold_plot(curves),
                                   caption=f"{group}, {cell}: per-class thresholds over training (mean over seeds)"))
    return blocks


def _pseudo_label_classes(results, context, group: str, token: bool = False) -> list:
    """Per class (per tag, ``token``: a token task's pseudo-labels are words) precision / recall of the
    selected pseudo-labels, from result.json's ``pseudo_label_per_class``; columns named by the classes."""
    import pandas as pd

    rows = []
    runs = _runs(results, group)
    for cell in context.cells[group]:
        counts = [r for r in runs[runs.cell == cell]["pseudo_label_per_class"] if isinstance(r, dict)]
        if not counts:
            continue
        selected = np.sum([c["selected"] for c in counts], 0)
        correct = np.sum([c["correct"] for c in counts], 0)
        gold = np.sum([c["gold"] for c in counts], 0)
        row = {"cell": cell}
        for c in range(len(selected)):
            precision = format_number(correct[c] / selected[c], ".2f") if selected[c] else "–"
            recall = format_number(correct[c] / gold[c], ".2f") if gold[c] else "–"
            row[context.class_name(group, c)] = f"{precision} / {recall}"
        rows.append(row)
    if not rows:
        return []
    if token:
        return ["Pseudo-labels per tag over the whole run (a pseudo-label is a word's tag), precision / recall against the "
                "hidden gold tags (selected words tagged t that are right / unlabeled words of tag t that were selected as t), "
                "counts summed over seeds:", pd.DataFrame(rows).fillna("–")]
    return ["Pseudo-labels per class over the whole run, precision / recall against the hidden gold labels "
            "(selected pseudo-labels of class c that are right / unlabeled examples of class c that were selected "
            "as c), counts summed over seeds:", pd.DataFrame(rows).fillna("–")]


# --------------------------------------------------------------------------- calibration


def calibration_section(results, context) -> ReportSection:
    import pandas as pd

    blocks: list = ["Expected calibration error (15 equal-width confidence bins) of the test-set probabilities saved "
                    "in predictions.npz, mean over seeds; the reliability diagram pools the seeds (last checkpoint)."]
    tokens = _token_groups(context)
    if tokens:
        blocks.append(f"In the token-classification groups ({'; '.join(tokens)}) a prediction is a word's tag: calibration and "
                      "the per-class F1 (per tag) are per word; entity-level scores are in the leaderboard.")
    for gi, group in enumerate(context.groups):
        runs = _runs(results, group)
        rows, curves, f1_rows = [], {}, []
        for cell in context.cells[group]:
            eces = {"last": [], "best": []}
            pooled_p, pooled_y, f1s = [], [], []
            for run_id in runs[runs.cell == cell].run_id:
                pred = context.predictions(run_id)
                if not pred or "test_labels" not in pred:
                    continue
                y = pred["test_labels"]
                for name, key in (("last", "test_probs_last"), ("best", "test_probs_best_val")):
                    if key in pred:
                        eces[name].append(calibration(pred[key], y)[0])
                if "test_probs_last" in pred:
                    pooled_p.append(pred["test_probs_last"])
                    pooled_y.append(y)
                    f1s.append(per_class_f1(pred["test_probs_last"], y, pred["test_probs_last"].shape[1])[2])
            if not eces["last"]:
                continue
            last, best = summarize(eces["last"]), summarize(eces["best"])
            rows.append({"cell": cell, "seeds": last.n, "ECE, last": format_mean_std(last), "95% CI, last": format_ci(last),
                         "ECE, best on val": format_mean_std(best)})
            _, conf, acc, _ = calibration(np.concatenate(pooled_p), np.concatenate(pooled_y))
            curves[cell] = (conf, acc)
            f1_rows.append({"cell": cell, **{context.class_name(group, c): format_number(v, ".3f") for c, v in enumerate(np.mean(f1s, 0))}})
        if not rows:
            blocks.append(f"**{group}**: no predictions.npz (runs from before it was saved).")
            continue
        blocks += [f"**{group}**", pd.DataFrame(rows)]
        blocks.append(ReportFigure(name=f"reliability-{gi}", figure=reliability_plot(dict(list(curves.items())[:MAX_FIGURE_CELLS]),
                                                                                      dict(context.colors)),
                                   caption=f"{group}: reliability diagram (last checkpoint)"))
        blocks += ["Per-class test F1 (last checkpoint, mean over seeds):", pd.DataFrame(f1_rows)]
    return ReportSection(name="calibration", title="Calibration and per-class metrics", blocks=tuple(blocks), order=60)


# --------------------------------------------------------------------------- cost


def cost_section(results, context) -> ReportSection:
    import pandas as pd

    blocks: list = [f"Means over seeds. Examples/s: labeled + unlabeled examples per training second (steps × batch × "
                    f"(1 + unlabeled ratio) / train seconds; labeled only for runs without an unlabeled batch). Gain per "
                    f"CPU-hour: accuracy points over **{context.baseline}** divided by the run's CPU-hours (wall time × torch "
                    "threads)."]
    tokens = _token_groups(context)
    if tokens:
        blocks.append(f"In the token-classification groups ({'; '.join(tokens)}) an example is a sentence and the gain is in "
                      "entity F1 points.")
    for group in context.groups:
        runs = _runs(results, group)
        column = context.primary_columns(group)[0]
        base = context.baseline_cells.get(group)
        base_acc = runs[runs.cell == base][column].mean() if base else math.nan
        rows = []
        for cell in context.cells[group]:
            sub = runs[runs.cell == cell]
            examples = []
            for r in sub.itertuples():
                train = (r.config if isinstance(r.config, dict) else {}).get("train", {})
                unlabeled = train.get("unlabeled_ratio", 0) if not math.isnan(r.mask_rate) else 0
                per_step = train.get("batch_size", 0) * (1 + unlabeled)
                examples.append(r.steps * per_step / r.train_seconds if r.train_seconds else math.nan)
            threads = [(m.get("torch_threads") if isinstance(m, dict) else None) or 1 for m in sub.machine]
            cpu_hours = float(np.mean([w * t / 3600 for w, t in zip(sub.wall_seconds, threads)]))
            gain = 100 * (sub[column].mean() - base_acc)
            augment = [a for a in sub.augment_seconds if a is not None and not math.isnan(a)]
            rows.append({"cell": cell, "device": _distinct(sub.device, "cpu"), "precision": _distinct(sub.precision, "fp32"),
                         "wall s": format_number(sub.wall_seconds.mean(), ".1f"),
                         "train s": format_number(sub.train_seconds.mean(), ".1f"),
                         "examples/s": format_number(float(np.nanmean(examples)) if examples else None, ".1f"),
                         "augment s": format_number(float(np.mean(augment)) if augment else None, ".2f"),
                         "gain vs baseline (points)": "–" if cell == base or math.isnan(gain) else format_number(gain, "+.2f"),
                         "gain per CPU-hour": "–" if cell == base or math.isnan(gain) or not cpu_hours
                         else format_number(gain / cpu_hours, "+.1f")})
        blocks += [f"**{group}**", pd.DataFrame(rows)]
    return ReportSection(name="cost", title="Cost", blocks=tuple(blocks), order=70)


def _distinct(values, before: str) -> str:
    """The values of a column, once each; runs from before devices were recorded ran on the CPU in fp32."""
    return ", ".join(sorted({v if isinstance(v, str) else before for v in values}))


# --------------------------------------------------------------------------- provenance


def provenance_section(results, context) -> ReportSection:
    import pandas as pd

    versions = sorted({v for v in results.testbed_version if isinstance(v, str)})
    commits = sorted({v for v in results.git_commit if isinstance(v, str)})
    machines = sorted({_hashable(m) for m in results.machine if isinstance(m, dict)})
    started = sorted(v for v in results.started_at if isinstance(v, str))
    finished = sorted(v for v in results.finished_at if isinstance(v, str))
    grids = sorted(str(p) for d in context.runs_dirs for p in Path(d).glob("*.toml"))
    blocks: list = [pd.DataFrame([
        {"what": "testbed version (report)", "value": __version__},
        {"what": "testbed versions (runs)", "value": ", ".join(versions) or "–"},
        {"what": "git commit (report)", "value": git_commit() or "unknown (not a git checkout)"},
        {"what": "git commits (runs)", "value": ", ".join(commits) or "not recorded by these runs"},
        {"what": "runs directories", "value": ", ".join(str(d) for d in context.runs_dirs)},
        *([{"what": "compared to (--compare-to)", "value": ", ".join(sorted(set(results.loc[results["set"] == "compare", "runs_dir"])))}]
          if "set" in results and (results["set"] == "compare").any() else []),
        {"what": "grid files", "value": ", ".join(grids) or "none found in the runs directories"},
        {"what": "cell keys", "value": ", ".join(context.cell_keys) or "–"},
        {"what": "first run started", "value": started[0] if started else "–"},
        {"what": "last run finished", "value": finished[-1] if finished else "–"},
        {"what": "devices (runs)", "value": _distinct(results.device, "cpu") or "–"},
        {"what": "precisions (runs)", "value": _distinct(results.precision, "fp32") or "–"},
        *({"what": "machine", "value": m} for m in machines)])]
    for r in results.itertuples():
        blocks.append(ReportDetails(summary=f"{r.run_id} · {r.status} · {r.group} · {r.cell} · seed {format_value(getattr(r, 'seed', None))}",
                                    text=json.dumps(r.config, indent=2, sort_keys=True, default=str)))
    return ReportSection(name="provenance", title="Provenance", blocks=tuple(blocks), order=100)


SECTIONS = (findings_section, runs_section, leaderboard_section, comparisons_section, across_section, ablation_section, dynamics_section,
            calibration_section, cost_section, provenance_section)


@hookimpl
def testbed_report_sections(results, context):
    return [section(results, context) for section in SECTIONS]
