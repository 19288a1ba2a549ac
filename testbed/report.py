"""Comparison reports: ``testbed report RUNS_DIR ... -o reports/NAME`` -> index.md, index.html
(plots as PNG files beside it), summary.csv and comparisons.csv, from the run directories alone
(result.json, metrics.jsonl, predictions.npz; no model is loaded).

A *group* is a dataset and label budget (``dataset.name``, ``dataset.labels_per_class``); a *cell*
is what is compared within a group: the config keys that vary across the runs (seed excluded;
``--group-by`` chooses them), e.g. the method. Seeds are the replicates. Sections are
ReportSection records (testbed.types); plugins add their own with ``testbed_report_sections``.

    >>> from testbed.report import render_report
    >>> render_report(["runs"], "reports/first", baseline="supervised")
"""

from __future__ import annotations

import html
import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from testbed import __version__
from testbed.errors import UserError
from testbed.types import ReportContext, ReportFigure, ReportSection
from testbed.resources import git_commit, refuse_shared_data
from testbed.report_stats import (ALPHA, CI_NEEDS, PAIRED_RULE, calibration, friedman, holm, paired_test, per_class_f1,
                                  summarize, verdict)

GROUP_KEYS = ("dataset.name", "dataset.labels_per_class")
CHECKPOINTS = {"last": ("test_accuracy", "test_macro_f1"), "best on validation": ("test_accuracy_best_val", "test_macro_f1_best_val")}
EXTRA_RESULT_KEYS = ("augment_seconds", "eval_seconds", "labeled_size", "unlabeled_size", "test_size", "started_at",
                     "finished_at", "machine", "pseudo_label_per_class", "testbed_version", "git_commit", "label_names")
MAX_FIGURE_CELLS = 10  # lines per plot; more cells are plotted as the best ones on the leaderboard



@dataclass(frozen=True)
class Details:
    """A collapsed block: <details><summary>summary</summary><pre>text</pre></details>."""

    summary: str
    text: str


# --------------------------------------------------------------------------- loading


def _hashable(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _show(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    from testbed.grid import show

    return show(value)


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


def load_report_table(runs_dirs: Sequence[str | Path], group_by: Sequence[str] = ()):
    """The runs of every directory as one DataFrame: load_results columns (all config keys), the
    extra result.json fields, ``runs_dir``, ``group`` and ``cell`` labels; and the cell keys."""
    import pandas as pd

    from testbed.results import METRICS, load_results, scan_runs

    frames, extras = [], {}
    for d in runs_dirs:
        frame = load_results(d, all_columns=True)
        frame.insert(2, "runs_dir", str(d))
        frames.append(frame)
        for run in scan_runs(d):
            extras[(str(d), run["run_id"])] = {k: run["result"].get(k) for k in EXTRA_RESULT_KEYS} | {"config": run["config"]}
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if frame.empty:
        raise UserError(f"No runs found in {', '.join(map(str, runs_dirs))}.")
    # a run (same run id: same config) found in several directories counts once: a finished copy
    # first, then the first directory given
    rank = frame.status.map(lambda s: 0 if s == "done" else 1)
    keep = frame.assign(_rank=rank).sort_values(["_rank"], kind="stable").drop_duplicates("run_id").index
    dropped = frame.drop(index=keep)
    frame = frame.loc[sorted(keep)].reset_index(drop=True)
    duplicates = [{"run": r.run_id, "counted from": frame.loc[frame.run_id == r.run_id, "runs_dir"].iloc[0],
                   "also in": r.runs_dir} for r in dropped.itertuples()]
    for key in EXTRA_RESULT_KEYS + ("config",):
        frame[key] = [extras.get((r.runs_dir, r.run_id), {}).get(key) for r in frame.itertuples()]
    fixed = {"run_id", "status", "runs_dir", "error", *METRICS, *EXTRA_RESULT_KEYS, "config"}
    config_keys = [c for c in frame.columns if c not in fixed]
    for key in config_keys:
        frame[key] = frame[key].astype(object).where(frame[key].notna(), None)
    varied = [k for k in config_keys if k != "train.threads" and len({_hashable(v) for v in frame[k]}) > 1]
    if group_by:
        unknown = [k for k in group_by if k not in config_keys]
        if unknown:
            raise UserError(f"--group-by {unknown[0]!r} is not a config key of these runs; e.g. {', '.join(varied[:5])}.")
        cell_keys = list(group_by)
    else:
        cell_keys = implied_keys_dropped(frame, [k for k in varied if k not in (*GROUP_KEYS, "seed")])
    for key in GROUP_KEYS:
        if key not in frame.columns:
            frame[key] = None
    frame["group"] = [f"{_show(r[0])} · {_show(r[1])} labels/class" for r in zip(frame[GROUP_KEYS[0]], frame[GROUP_KEYS[1]])]
    # a cell's name leaves out keys its method fixes (supervised's strong augmentation, when the
    # others vary it): they say nothing about that method's cells
    varies_within = {}
    if "method" in cell_keys and not group_by:
        by_method = frame.groupby(frame["method"].map(_hashable))
        varies_within = {k: by_method[k].agg(lambda s: len({_hashable(v) for v in s})).to_dict() for k in cell_keys if k != "method"}
    frame["cell"] = [", ".join(f"{_short(k)}={_show(v)}" if k != "method" or len(cell_keys) > 1 else _show(v)
                               for k, v in zip(cell_keys, values)
                               if k not in varies_within or varies_within[k][_hashable(values[0])] > 1) or "(all runs)"
                     for values in zip(*(frame[k] for k in cell_keys))] if cell_keys else "(all runs)"
    frame.attrs["duplicates"] = duplicates
    return frame, cell_keys


def _read_metrics(runs_dir: str, run_id: str) -> list[dict]:
    path = Path(runs_dir) / run_id / "metrics.jsonl"
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue  # a line cut by an interrupt
    return out


def _read_predictions(runs_dir: str, run_id: str) -> dict | None:
    path = Path(runs_dir) / run_id / "predictions.npz"
    if not path.is_file():
        return None
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


# --------------------------------------------------------------------------- formatting


def _f(x: float | None, spec: str = ".4f") -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def _pm(s) -> str:
    return f"{_f(s.mean)} ± {_f(s.std)}" if s.std is not None else f"{_f(s.mean)} (1 seed)"


def _ci(s, spec: str = ".4f") -> str:
    """The interval of a metric in [0, 1], clipped to that range (summary.csv keeps the raw bounds)."""
    if s.ci_low is None:
        return CI_NEEDS
    return f"[{_f(max(0.0, s.ci_low), spec)}, {_f(min(1.0, s.ci_high), spec)}]"


def _p(p: float | None) -> str:
    if p is None:
        return "–"
    return "< 0.0001" if p < 1e-4 else f"{p:.4f}"


def _effect(x: float | None) -> str:
    if x is None:
        return "–"
    return ("∞" if x > 0 else "−∞") if math.isinf(x) else f"{x:.2f}"


# --------------------------------------------------------------------------- sections


class Builder:
    """Builds the built-in sections from the runs table."""

    def __init__(self, frame, cell_keys: list[str], baseline: str, runs_dirs: Sequence[Path]):
        self.frame, self.cell_keys, self.baseline, self.runs_dirs = frame, cell_keys, baseline, runs_dirs
        self.done = frame[frame.status == "done"]
        self.groups = sorted(self.done["group"].unique().tolist(), key=self._group_sort)
        self._metrics: dict[tuple[str, str], list[dict]] = {}
        # a cell keeps its color in every plot of the report
        self.colors = {cell: f"C{i % 10}" for i, cell in enumerate(sorted(self.done["cell"].unique().tolist()))}

    def _group_sort(self, group: str):
        row = self.done[self.done.group == group].iloc[0]
        return (str(row[GROUP_KEYS[0]]), row[GROUP_KEYS[1]] if row[GROUP_KEYS[1]] is not None else -1)

    def metrics(self, runs_dir: str, run_id: str) -> list[dict]:
        key = (runs_dir, run_id)
        if key not in self._metrics:
            self._metrics[key] = _read_metrics(runs_dir, run_id)
        return self._metrics[key]

    def runs(self, group: str):
        return self.done[self.done.group == group]

    def cells(self, group: str) -> list[str]:
        """Cells of a group, best mean last-checkpoint accuracy first (ties by name)."""
        runs = self.runs(group)
        means = runs.groupby("cell")["test_accuracy"].mean()
        return sorted(means.index.tolist(), key=lambda c: (-means[c] if not math.isnan(means[c]) else math.inf, c))

    def class_name(self, group: str, index: int) -> str:
        """The class's name from result.json (``label_names``), else "class <index>"."""
        names = next((n for n in self.runs(group).get("label_names", []) if isinstance(n, list)), None)
        return str(names[index]) if names and 0 <= index < len(names) else f"class {index}"

    def baseline_cell(self, group: str) -> str | None:
        runs = self.runs(group)
        cells = sorted(runs[runs["method"] == self.baseline]["cell"].unique().tolist()) if "method" in runs else []
        if not cells:
            cells = [c for c in runs["cell"].unique().tolist() if c == self.baseline]
        return cells[0] if cells else None

    # ---- not included
    def missing(self) -> ReportSection:
        blocks: list = []
        bad = self.frame[self.frame.status != "done"]
        if len(bad):
            table = bad[["runs_dir", "run_id", "status", "group", "cell", "seed" if "seed" in bad else "run_id", "error"]].copy()
            table["error"] = table["error"].map(lambda e: "–" if e is None or (isinstance(e, float) and math.isnan(e)) else str(e)[:300])
            blocks += [f"{len(bad)} of {len(self.frame)} runs are not finished and are left out of every statistic below:",
                       table.rename(columns={"runs_dir": "runs directory", "run_id": "run"})]
        else:
            blocks.append(f"All {len(self.frame)} runs finished.")
        duplicates = self.frame.attrs.get("duplicates") or []
        if duplicates:
            import pandas as pd

            blocks += [f"{len(duplicates)} runs appear in more than one runs directory; each is counted once:",
                       pd.DataFrame(duplicates)]
        gaps = []
        for group in self.groups:
            runs = self.runs(group)
            seeds = sorted(set(runs["seed"].tolist())) if "seed" in runs else []
            for cell in self.cells(group):
                have = set(runs[runs.cell == cell]["seed"].tolist())
                lacking = [s for s in seeds if s not in have]
                if lacking:
                    gaps.append({"group": group, "cell": cell, "finished seeds": ", ".join(map(str, sorted(have))),
                                 "missing seeds": ", ".join(map(str, lacking))})
        if gaps:
            import pandas as pd

            blocks += ["Cells without a finished run for every seed of their group (paired comparisons use the common seeds):",
                       pd.DataFrame(gaps)]
        return ReportSection(name="runs", title="Runs", blocks=tuple(blocks), order=5)

    # ---- leaderboard
    def leaderboard_rows(self) -> list[dict]:
        rows = []
        for group in self.groups:
            runs = self.runs(group)
            for cell in self.cells(group):
                sub = runs[runs.cell == cell]
                first = sub.iloc[0]
                for checkpoint, (acc, f1) in CHECKPOINTS.items():
                    for metric, column in (("accuracy", acc), ("macro_f1", f1)):
                        s = summarize(sub[column].tolist())
                        rows.append({"dataset": first[GROUP_KEYS[0]], "labels_per_class": first[GROUP_KEYS[1]], "cell": cell,
                                     "checkpoint": checkpoint, "metric": metric, "n_seeds": s.n, "mean": s.mean, "std": s.std,
                                     "ci95_low": s.ci_low, "ci95_high": s.ci_high})
        return rows

    def leaderboard(self) -> ReportSection:
        import pandas as pd

        blocks: list = ["Test accuracy over seeds: mean ± standard deviation and the 95% confidence interval of the mean "
                        "(t-interval, shown clipped to [0, 1]). *Last* is the checkpoint at the end of training; *best on validation* is the "
                        "evaluation with the highest validation accuracy. Error rate = 1 − accuracy (last)."]
        for group in self.groups:
            runs = self.runs(group)
            rows = []
            for cell in self.cells(group):
                sub = runs[runs.cell == cell]
                last, best = summarize(sub.test_accuracy.tolist()), summarize(sub.test_accuracy_best_val.tolist())
                rows.append({"cell": cell, "seeds": last.n, "accuracy, last": _pm(last), "95% CI, last": _ci(last),
                             "error rate, last": _f(1 - last.mean), "macro-F1, last": _pm(summarize(sub.test_macro_f1.tolist())),
                             "accuracy, best on val": _pm(best), "95% CI, best on val": _ci(best),
                             "macro-F1, best on val": _pm(summarize(sub.test_macro_f1_best_val.tolist()))})
            blocks += [f"**{group}**", pd.DataFrame(rows)]
        return ReportSection(name="leaderboard", title="Leaderboard", blocks=tuple(blocks), order=10)

    # ---- paired comparisons
    def comparison_rows(self) -> list[dict]:
        rows = []
        for group in self.groups:
            base = self.baseline_cell(group)
            if base is None:
                continue
            runs = self.runs(group)
            for checkpoint, (acc, _) in CHECKPOINTS.items():
                family = []
                # the mean per seed: with --group-by a cell can pool several configs run with one seed
                reference = runs[runs.cell == base].groupby("seed")[acc].mean()
                for cell in self.cells(group):
                    if cell == base:
                        continue
                    other = runs[runs.cell == cell].groupby("seed")[acc].mean()
                    seeds = sorted(set(reference.index) & set(other.index))
                    result = paired_test([other[s] for s in seeds], [reference[s] for s in seeds])
                    family.append({"group": group, "checkpoint": checkpoint, "cell": cell, "baseline": base, "pairs": len(seeds),
                                   "mean_diff": result.mean_diff, "ci95_low": result.ci_low, "ci95_high": result.ci_high,
                                   "test": result.test, "p": result.p, "effect_dz": result.effect})
                for row, adjusted in zip(family, holm([r["p"] for r in family])):
                    row["p_holm"] = adjusted
                    row["verdict"] = verdict(row["mean_diff"], adjusted)
                rows += family
        return rows

    def comparisons(self, rows: list[dict]) -> ReportSection:
        import pandas as pd

        blocks: list = [f"Each cell against the baseline **{self.baseline}**, on test accuracy. {PAIRED_RULE}"]
        missing = [g for g in self.groups if self.baseline_cell(g) is None]
        if missing:
            blocks.append(f"No baseline runs (`method = {self.baseline}`, or a cell of that name) in: {'; '.join(missing)}. "
                          "Choose another with `--baseline`.")
        for group in self.groups:
            for checkpoint in CHECKPOINTS:
                family = [r for r in rows if r["group"] == group and r["checkpoint"] == checkpoint]
                if not family:
                    continue
                table = pd.DataFrame([{
                    "cell": r["cell"], "pairs": r["pairs"], "difference (points)": _f(100 * r["mean_diff"], "+.2f"),
                    "95% CI (points)": "needs ≥ 2 pairs" if r["ci95_low"] is None else
                    f"[{100 * r['ci95_low']:+.2f}, {100 * r['ci95_high']:+.2f}]",
                    "test": r["test"], "p": _p(r["p"]), "p (Holm)": _p(r["p_holm"]), "effect d_z": _effect(r["effect_dz"]),
                    "verdict": r["verdict"]} for r in family])
                blocks += [f"**{group}**, {checkpoint} checkpoint, vs {family[0]['baseline']}", table]
        return ReportSection(name="comparisons", title="Paired comparisons", blocks=tuple(blocks), order=20)

    # ---- across datasets
    def across(self) -> ReportSection:
        import pandas as pd

        blocks: list = []
        if len(self.groups) >= 2:
            kind = "datasets and label budgets"
            table = self.done.groupby(["group", "cell"])["test_accuracy"].mean().unstack("cell")
        elif self.groups:
            kind = "seeds (one dataset and budget here: this ranks the cells within it, not across datasets)"
            runs = self.runs(self.groups[0])
            table = runs.pivot_table(index="seed", columns="cell", values="test_accuracy", aggfunc="mean")
        else:
            return ReportSection(name="across", title="Across datasets", blocks=("No finished runs.",), order=30)
        complete = table.dropna(axis=1, how="any")
        dropped = sorted(set(table.columns) - set(complete.columns))
        if complete.shape[1] < 2 or complete.shape[0] < 1:
            blocks.append("Ranking needs at least 2 cells with results in every block.")
            return ReportSection(name="across", title="Across datasets", blocks=tuple(blocks), order=30)
        complete = complete[sorted(complete.columns)]
        ranking = friedman(complete)
        order = np.argsort(ranking.average_ranks, kind="stable")
        blocks.append(f"Blocks: {ranking.blocks} {kind}; in each block the cells are ranked by mean test accuracy (last "
                      "checkpoint; 1 = best, ties share the average rank).")
        if dropped:
            blocks.append(f"Left out (no result in every block): {'; '.join(dropped)}.")
        blocks.append(pd.DataFrame([{"cell": ranking.names[i], "average rank": f"{ranking.average_ranks[i]:.2f}"} for i in order]))
        if ranking.statistic is None:
            blocks.append("Friedman test: needs ≥ 3 cells and ≥ 2 blocks.")
        else:
            blocks.append(f"Friedman test: χ² = {ranking.statistic:.3f}, p = {_p(ranking.p)} "
                          f"({'the cells differ' if ranking.p < ALPHA else 'no detectable difference among the cells'} at α = {ALPHA}).")
        if ranking.cd is not None:
            blocks.append(f"Nemenyi critical difference (α = {ALPHA}, {len(ranking.names)} cells, {ranking.blocks} blocks): "
                          f"CD = {ranking.cd:.3f}; cells whose average ranks differ by less than CD are joined by a bar.")
            blocks.append(ReportFigure(name="critical-difference", figure=cd_diagram(ranking), caption="Critical-difference diagram"))
        return ReportSection(name="across", title="Across datasets", blocks=tuple(blocks), order=30)

    # ---- ablation effects
    def ablation(self) -> ReportSection:
        import pandas as pd

        blocks: list = ["Marginal mean test accuracy (last checkpoint) of each value of each varied axis, pooled over the "
                        "other axes and the seeds; the CI is the t-interval over those runs."]
        any_axis = False
        for gi, group in enumerate(self.groups):
            runs = self.runs(group)
            axes = [k for k in self.cell_keys if k in runs and len({_hashable(v) for v in runs[k]}) > 1]
            if not axes:
                continue
            any_axis = True
            blocks.append(f"**{group}**")
            for axis in axes:
                rows = []
                for value, sub in sorted(runs.groupby(runs[axis].map(_hashable)), key=lambda kv: kv[0]):
                    s = summarize(sub.test_accuracy.tolist())
                    rows.append({_short(axis): _show(sub[axis].iloc[0]), "runs": s.n, "mean accuracy": _f(s.mean), "95% CI": _ci(s)})
                blocks.append(pd.DataFrame(rows))
            for ai, (a, b) in enumerate([(a, b) for i, a in enumerate(axes) for b in axes[i + 1:]][:6]):
                pivot = runs.assign(_a=runs[a].map(_show), _b=runs[b].map(_show)).pivot_table(
                    index="_a", columns="_b", values="test_accuracy", aggfunc="mean")
                blocks.append(ReportFigure(name=f"interaction-{gi}-{ai}", figure=heatmap(pivot, _short(a), _short(b)),
                                           caption=f"{group}: mean test accuracy by {_short(a)} × {_short(b)} (blank: no runs)"))
        if not any_axis:
            blocks.append("No axis varies within a dataset and budget.")
        return ReportSection(name="ablation", title="Ablation effects", blocks=tuple(blocks), order=40)

    # ---- training dynamics
    def _curves(self, group: str, key: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """cell -> (steps, mean over seeds of ``key``) from metrics.jsonl."""
        out = {}
        runs = self.runs(group)
        for cell in self.cells(group)[:MAX_FIGURE_CELLS]:
            per_step: dict[int, list[float]] = {}
            for r in runs[runs.cell == cell].itertuples():
                for rec in self.metrics(r.runs_dir, r.run_id):
                    if rec.get(key) is not None:
                        per_step.setdefault(rec["step"], []).append(float(rec[key]))
            if per_step:
                steps = np.array(sorted(per_step))
                out[cell] = (steps, np.array([np.mean(per_step[s]) for s in steps]))
        return out

    def dynamics(self) -> ReportSection:
        blocks: list = [f"From metrics.jsonl, mean over seeds at each evaluation (at most {MAX_FIGURE_CELLS} cells per plot, "
                        "best first)."]
        for gi, group in enumerate(self.groups):
            blocks.append(f"**{group}**")
            test, val = self._curves(group, "test_accuracy"), self._curves(group, "val_accuracy")
            if test:
                blocks.append(ReportFigure(name=f"learning-curves-{gi}", figure=line_plot(
                    [("test accuracy", test), ("validation accuracy", val)], "step", "accuracy", self.colors),
                    caption=f"{group}: test and validation accuracy vs step"))
            mask, quality = self._curves(group, "mask_rate"), self._curves(group, "pseudo_label_accuracy")
            if mask:
                blocks.append(ReportFigure(name=f"pseudo-labels-{gi}", figure=line_plot(
                    [("mask rate (share selected)", mask), ("accuracy of selected pseudo-labels", quality)], "step", "share", self.colors),
                    caption=f"{group}: pseudo-label quantity vs quality over training"))
                never = [c for c, (_, m) in mask.items() if len(m) and np.all(m >= 0.999)]
                if never:
                    blocks.append(f"Selected every pseudo-label at every evaluation (the selector never engaged): {'; '.join(never)}.")
                idle = [c for c, (_, m) in mask.items() if len(m) and np.all(m < 0.01)]
                if idle:
                    blocks.append("Selected under 1% of pseudo-labels at every evaluation (the unlabeled loss hardly "
                                  f"acted; close to supervised training): {'; '.join(idle)}.")
            blocks += self._thresholds(group, gi)
            blocks += self._pseudo_label_classes(group)
        return ReportSection(name="dynamics", title="Training dynamics", blocks=tuple(blocks), order=50)

    def _thresholds(self, group: str, gi: int) -> list:
        blocks = []
        runs = self.runs(group)
        for ci, cell in enumerate(self.cells(group)[:6]):
            keys = sorted({k for r in runs[runs.cell == cell].itertuples() for rec in self.metrics(r.runs_dir, r.run_id)
                           for k in rec if re.fullmatch(r"selector/threshold/class_\d+", k)}, key=lambda k: int(k.rsplit("_", 1)[1]))
            if not keys:
                continue
            self_curves = []
            for key in keys:
                per_step: dict[int, list[float]] = {}
                for r in runs[runs.cell == cell].itertuples():
                    for rec in self.metrics(r.runs_dir, r.run_id):
                        if rec.get(key) is not None:
                            per_step.setdefault(rec["step"], []).append(float(rec[key]))
                steps = np.array(sorted(per_step))
                self_curves.append((self.class_name(group, int(key.rsplit('_', 1)[1])), steps, np.array([np.mean(per_step[s]) for s in steps])))
            blocks.append(ReportFigure(name=f"thresholds-{gi}-{ci}", figure=threshold_plot(self_curves),
                                       caption=f"{group}, {cell}: per-class thresholds over training (mean over seeds)"))
        return blocks

    def _pseudo_label_classes(self, group: str) -> list:
        import pandas as pd

        rows = []
        runs = self.runs(group)
        for cell in self.cells(group):
            counts = [r for r in runs[runs.cell == cell]["pseudo_label_per_class"] if isinstance(r, dict)]
            if not counts:
                continue
            selected = np.sum([c["selected"] for c in counts], 0)
            correct = np.sum([c["correct"] for c in counts], 0)
            gold = np.sum([c["gold"] for c in counts], 0)
            row = {"cell": cell}
            for c in range(len(selected)):
                precision = _f(correct[c] / selected[c], ".2f") if selected[c] else "–"
                recall = _f(correct[c] / gold[c], ".2f") if gold[c] else "–"
                row[self.class_name(group, c)] = f"{precision} / {recall}"
            rows.append(row)
        if not rows:
            return []
        return ["Pseudo-labels per class over the whole run, precision / recall against the hidden gold labels "
                "(selected pseudo-labels of class c that are right / unlabeled examples of class c that were selected "
                "as c), counts summed over seeds:", pd.DataFrame(rows).fillna("–")]

    # ---- calibration
    def calibration(self) -> ReportSection:
        import pandas as pd

        blocks: list = ["Expected calibration error (15 equal-width confidence bins) of the test-set probabilities saved "
                        "in predictions.npz, mean over seeds; the reliability diagram pools the seeds (last checkpoint)."]
        for gi, group in enumerate(self.groups):
            runs = self.runs(group)
            rows, curves, f1_rows = [], {}, []
            for cell in self.cells(group):
                eces = {"last": [], "best": []}
                pooled_p, pooled_y, f1s = [], [], []
                for r in runs[runs.cell == cell].itertuples():
                    pred = _read_predictions(r.runs_dir, r.run_id)
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
                rows.append({"cell": cell, "seeds": last.n, "ECE, last": _pm(last), "95% CI, last": _ci(last),
                             "ECE, best on val": _pm(best)})
                _, conf, acc, count = calibration(np.concatenate(pooled_p), np.concatenate(pooled_y))
                curves[cell] = (conf, acc)
                f1_rows.append({"cell": cell, **{self.class_name(group, c): _f(v, ".3f") for c, v in enumerate(np.mean(f1s, 0))}})
            if not rows:
                blocks.append(f"**{group}**: no predictions.npz (runs from before it was saved).")
                continue
            blocks += [f"**{group}**", pd.DataFrame(rows)]
            blocks.append(ReportFigure(name=f"reliability-{gi}", figure=reliability_plot(dict(list(curves.items())[:MAX_FIGURE_CELLS]), self.colors),
                                       caption=f"{group}: reliability diagram (last checkpoint)"))
            blocks += ["Per-class test F1 (last checkpoint, mean over seeds):", pd.DataFrame(f1_rows)]
        return ReportSection(name="calibration", title="Calibration and per-class metrics", blocks=tuple(blocks), order=60)

    # ---- cost
    def cost(self) -> ReportSection:
        import pandas as pd

        blocks: list = [f"Means over seeds. Examples/s: labeled + unlabeled examples per training second (steps × batch × "
                        f"(1 + unlabeled ratio) / train seconds; labeled only for runs without an unlabeled batch). Gain per "
                        f"CPU-hour: accuracy points over **{self.baseline}** divided by the run's CPU-hours (wall time × torch "
                        "threads)."]
        for group in self.groups:
            runs = self.runs(group)
            base = self.baseline_cell(group)
            base_acc = runs[runs.cell == base].test_accuracy.mean() if base else math.nan
            rows = []
            for cell in self.cells(group):
                sub = runs[runs.cell == cell]
                examples = []
                for r in sub.itertuples():
                    train = (r.config if isinstance(r.config, dict) else {}).get("train", {})
                    unlabeled = train.get("unlabeled_ratio", 0) if not math.isnan(r.mask_rate) else 0
                    per_step = train.get("batch_size", 0) * (1 + unlabeled)
                    examples.append(r.steps * per_step / r.train_seconds if r.train_seconds else math.nan)
                threads = [(m.get("torch_threads") if isinstance(m, dict) else None) or 1 for m in sub.machine]
                cpu_hours = float(np.mean([w * t / 3600 for w, t in zip(sub.wall_seconds, threads)]))
                gain = 100 * (sub.test_accuracy.mean() - base_acc)
                augment = [a for a in sub.augment_seconds if a is not None and not math.isnan(a)]
                rows.append({"cell": cell, "wall s": _f(sub.wall_seconds.mean(), ".1f"), "train s": _f(sub.train_seconds.mean(), ".1f"),
                             "examples/s": _f(float(np.nanmean(examples)) if examples else None, ".1f"),
                             "augment s": _f(float(np.mean(augment)) if augment else None, ".2f"),
                             "gain vs baseline (points)": "–" if cell == base or math.isnan(gain) else _f(gain, "+.2f"),
                             "gain per CPU-hour": "–" if cell == base or math.isnan(gain) or not cpu_hours else _f(gain / cpu_hours, "+.1f")})
            blocks += [f"**{group}**", pd.DataFrame(rows)]
        return ReportSection(name="cost", title="Cost", blocks=tuple(blocks), order=70)

    # ---- provenance
    def provenance(self) -> ReportSection:
        import pandas as pd

        versions = sorted({v for v in self.frame.testbed_version if isinstance(v, str)})
        commits = sorted({v for v in self.frame.git_commit if isinstance(v, str)})
        machines = sorted({_hashable(m) for m in self.frame.machine if isinstance(m, dict)})
        started = sorted(v for v in self.frame.started_at if isinstance(v, str))
        finished = sorted(v for v in self.frame.finished_at if isinstance(v, str))
        grids = sorted(str(p) for d in self.runs_dirs for p in Path(d).glob("*.toml"))
        blocks: list = [pd.DataFrame([
            {"what": "testbed version (report)", "value": __version__},
            {"what": "testbed versions (runs)", "value": ", ".join(versions) or "–"},
            {"what": "git commit (report)", "value": git_commit() or "unknown (not a git checkout)"},
            {"what": "git commits (runs)", "value": ", ".join(commits) or "not recorded by these runs"},
            {"what": "runs directories", "value": ", ".join(str(d) for d in self.runs_dirs)},
            {"what": "grid files", "value": ", ".join(grids) or "none found in the runs directories"},
            {"what": "cell keys", "value": ", ".join(self.cell_keys) or "–"},
            {"what": "first run started", "value": started[0] if started else "–"},
            {"what": "last run finished", "value": finished[-1] if finished else "–"},
            *({"what": "machine", "value": m} for m in machines)])]
        for r in self.frame.itertuples():
            blocks.append(Details(summary=f"{r.run_id} · {r.status} · {r.group} · {r.cell} · seed {_show(getattr(r, 'seed', None))}",
                                  text=json.dumps(r.config, indent=2, sort_keys=True, default=str)))
        return ReportSection(name="provenance", title="Provenance", blocks=tuple(blocks), order=100)


# --------------------------------------------------------------------------- plots


def _figure(width: float = 7.0, height: float = 4.0):
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100)


def line_plot(panels: list[tuple[str, dict]], xlabel: str, ylabel: str, colors: dict[str, str] | None = None):
    fig = _figure(5.0 * len(panels), 3.8)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    colors = dict(colors or {})  # one color per cell in every panel
    for _, curves in panels:
        for cell in curves:
            colors.setdefault(cell, f"C{len(colors) % 10}")
    for ax, (title, curves) in zip(axes, panels):
        for cell, (x, y) in curves.items():
            ax.plot(x, y, marker="o", markersize=3, color=colors[cell], label=cell)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    for ax in axes:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig


def threshold_plot(curves: list[tuple[str, np.ndarray, np.ndarray]]):
    fig = _figure(5.5, 3.5)
    ax = fig.subplots()
    for i, (label, x, y) in enumerate(curves):
        ax.plot(x, y, color=f"C{i % 10}", label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("threshold")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def reliability_plot(curves: dict[str, tuple[np.ndarray, np.ndarray]], colors: dict[str, str] | None = None):
    fig = _figure(4.8, 4.4)
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], color="gray", linestyle="--", linewidth=1, label="perfect calibration")
    for i, (cell, (conf, acc)) in enumerate(curves.items()):
        keep = ~np.isnan(conf)
        ax.plot(conf[keep], acc[keep], marker="o", markersize=3, color=(colors or {}).get(cell, f"C{i % 10}"), label=cell)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def heatmap(pivot, row_label: str, column_label: str):
    fig = _figure(1.6 + 1.1 * pivot.shape[1], 1.2 + 0.5 * pivot.shape[0])
    ax = fig.subplots()
    values = pivot.to_numpy(dtype=float)
    image = ax.imshow(values, cmap="viridis", aspect="auto")
    ax.set_xticks(range(pivot.shape[1]), [str(c) for c in pivot.columns], rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(pivot.shape[0]), [str(i) for i in pivot.index], fontsize=8)
    ax.set_xlabel(column_label)
    ax.set_ylabel(row_label)
    for (i, j), v in np.ndenumerate(values):
        if not math.isnan(v):
            ax.text(j, i, f"{v:.3f}", ha="center", va="center", fontsize=7, color="white")
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    return fig


def cd_diagram(ranking):
    """Demšar's critical-difference diagram: the rank axis, each cell at its average rank, a bar of
    length CD, and thick lines joining cells that are not significantly different (Nemenyi)."""
    k = len(ranking.names)
    order = list(np.argsort(ranking.average_ranks, kind="stable"))
    ranks = [ranking.average_ranks[i] for i in order]
    names = [ranking.names[i] for i in order]
    fig = _figure(7.5, 1.6 + 0.3 * k)
    ax = fig.subplots()
    ax.set_xlim(0.5, k + 0.5)
    ax.set_ylim(-(k // 2 + 2) * 0.5 - 0.5, 1.6)
    ax.axis("off")
    ax.hlines(0, 1, k, color="black", linewidth=1)
    for r in range(1, k + 1):
        ax.vlines(r, 0, 0.12, color="black", linewidth=1)
        ax.text(r, 0.2, str(r), ha="center", va="bottom", fontsize=8)
    if ranking.cd is not None:
        ax.hlines(1.2, 1, 1 + ranking.cd, color="black", linewidth=2)
        ax.text(1 + ranking.cd / 2, 1.3, f"CD = {ranking.cd:.2f}", ha="center", va="bottom", fontsize=8)
    half = (k + 1) // 2
    for i, (r, name) in enumerate(zip(ranks, names)):
        left = i < half
        level = -(i if left else k - 1 - i) * 0.5 - 0.6
        x_text = 0.6 if left else k + 0.4
        ax.plot([r, r, x_text], [0, level, level], color="black", linewidth=0.8)
        ax.text(x_text, level, f"{name} ({r:.2f})", ha="right" if left else "left", va="center", fontsize=8)
    cliques = []
    for i in range(k):
        j = i
        while j + 1 < k and ranks[j + 1] - ranks[i] < (ranking.cd or 0):
            j += 1
        if j > i and not any(a <= i and j <= b for a, b in cliques):
            cliques.append((i, j))
    for n, (i, j) in enumerate(cliques):
        y = -0.25 - 0.12 * n
        ax.hlines(y, ranks[i] - 0.03, ranks[j] + 0.03, color="C3", linewidth=3)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- rendering


def _md_cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _md_table(frame) -> str:
    columns = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(_md_cell(c) for c in columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(_md_cell(_show(v) if not isinstance(v, str) else v) for v in row) + " |")
    return "\n".join(lines)


def _html_table(frame) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(v if isinstance(v, str) else _show(v))}</td>" for v in row) + "</tr>\n"
                   for row in frame.itertuples(index=False))
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}</tbody>\n</table>"


def _html_text(text: str) -> str:
    out = html.escape(text)
    out = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out)
    out = re.sub(r"\*(.+?)\*", r"<em>\1</em>", out)
    out = re.sub(r"`(.+?)`", r"<code>\1</code>", out)
    return f"<p>{out}</p>"


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
            elif isinstance(block, Details):
                md += [f"<details><summary>{html.escape(block.summary)}</summary>", "", "```json", block.text, "```", "", "</details>", ""]
                body.append(f"<details><summary>{html.escape(block.summary)}</summary><pre>{html.escape(block.text)}</pre></details>")
            elif hasattr(block, "itertuples"):
                md += [_md_table(block), ""]
                body.append(_html_table(block))
            else:
                raise UserError(f"Report section {section.name!r} has a block of type {type(block).__name__}: "
                                "use str, a pandas DataFrame or ReportFigure.")
    page = (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{html.escape(title)}</title>\n'
            f"<style>{STYLE}</style>\n</head>\n<body>\n" + "\n".join(body) + "\n</body>\n</html>\n")
    return "\n".join(md).rstrip("\n") + "\n", page


def render_report(runs_dirs: Sequence[str | Path], out_dir: str | Path, *, baseline: str = "supervised",
                  group_by: Sequence[str] = (), registry=None, title: str | None = None,
                  echo: Callable[[str], None] = lambda line: None) -> Path:
    """Write the report of ``runs_dirs`` into ``out_dir``; returns the path of index.html."""
    import pandas as pd

    refuse_shared_data(out_dir, "The report directory", "Pass -o somewhere else, e.g. reports/NAME.")
    runs_dirs = [Path(d) for d in runs_dirs]
    frame, cell_keys = load_report_table(runs_dirs, group_by)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("*.png"):
        stale.unlink()
    builder = Builder(frame, cell_keys, baseline, runs_dirs)
    comparison_rows = builder.comparison_rows()
    sections = [builder.missing(), builder.leaderboard(), builder.comparisons(comparison_rows), builder.across(),
                builder.ablation(), builder.dynamics(), builder.calibration(), builder.cost(), builder.provenance()]
    if registry is None:
        from testbed.plugins import load_plugins

        registry = load_plugins()
    context = ReportContext(runs_dirs=tuple(runs_dirs), out_dir=out, baseline=baseline, cell_keys=tuple(cell_keys),
                            metrics=lambda run_id: next((builder.metrics(r.runs_dir, r.run_id) for r in frame.itertuples()
                                                         if r.run_id == run_id), []))
    for impl in sorted(registry.pm.hook.testbed_report_sections.get_hookimpls(), key=lambda i: i.plugin_name):
        try:  # one broken plugin costs its own section, not the report
            found = list(impl.function(results=frame.copy(), context=context) or ())
            bad = [type(s).__name__ for s in found if not isinstance(s, ReportSection)]
            if bad:
                raise TypeError(f"returned {bad[0]}, not ReportSection")
        except Exception as exc:  # noqa: BLE001
            found = [ReportSection(name=f"failed-{impl.plugin_name}", title=f"Plugin section failed: {impl.plugin_name}",
                                   blocks=(f"The `testbed_report_sections` hook of plugin `{impl.plugin_name}` raised "
                                           f"{type(exc).__name__}: {exc}",), order=95)]
            echo(f"Warning: report section of plugin {impl.plugin_name!r} failed: {type(exc).__name__}: {exc}")
        sections.extend(found)
    sections.sort(key=lambda s: (s.order, s.name))
    md, page = render(sections, out, title or f"Report: {', '.join(d.name for d in runs_dirs)}")
    pd.DataFrame(builder.leaderboard_rows()).to_csv(out / "summary.csv", index=False, float_format="%.6g")
    pd.DataFrame(comparison_rows, columns=["group", "checkpoint", "cell", "baseline", "pairs", "mean_diff", "ci95_low",
                                           "ci95_high", "test", "p", "effect_dz", "p_holm", "verdict"]
                 ).to_csv(out / "comparisons.csv", index=False, float_format="%.6g")
    (out / "index.md").write_text(md, encoding="utf-8")
    (out / "index.html").write_text(page, encoding="utf-8")
    echo(f"{len(frame)} runs ({int((frame.status == 'done').sum())} finished) -> {out / 'index.html'}")
    return out / "index.html"
