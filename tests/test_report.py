"""testbed report: statistics on known answers, synthetic run directories, and a real tiny grid."""

from __future__ import annotations

import html
import json
import math
import os
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from scipy import stats

from conftest import FAST
from testbed.cli import main
from testbed.errors import UserError
from testbed.report import render_report
from testbed.report_stats import CI_NEEDS, calibration, factorial_anova, friedman, holm, paired_test, summarize, verdict

# --------------------------------------------------------------------------- statistics


def test_summary_of_seeds_is_a_t_interval_and_one_seed_has_no_ci():
    s = summarize([0.80, 0.82, 0.84])
    assert s.n == 3 and s.mean == pytest.approx(0.82) and s.std == pytest.approx(0.02)
    half = stats.t.ppf(0.975, 2) * 0.02 / math.sqrt(3)
    assert (s.ci_low, s.ci_high) == (pytest.approx(0.82 - half), pytest.approx(0.82 + half))
    one = summarize([0.8])
    assert one.n == 1 and one.std is None and one.ci_low is None


def test_a_clear_winner_is_better_with_a_small_p():
    base = np.array([0.70, 0.72, 0.71, 0.69, 0.70])
    result = paired_test(base + np.array([0.10, 0.11, 0.09, 0.10, 0.12]), base)
    assert result.test == "paired t" and result.p < 0.001 and result.effect > 5
    assert verdict(result.mean_diff, result.p) == "better"
    worse = paired_test(base, base + 0.1 + np.array([0, 0.01, -0.01, 0.02, 0]))
    assert verdict(worse.mean_diff, worse.p) == "worse"


def test_six_or_more_pairs_use_wilcoxon():
    rng = np.random.default_rng(0)
    base = rng.normal(0.7, 0.02, 8)
    result = paired_test(base + 0.05 + rng.normal(0, 0.005, 8), base)
    assert result.test == "Wilcoxon signed-rank"
    assert result.p == pytest.approx(2 / 2**8)  # exact: all 8 differences positive
    assert verdict(result.mean_diff, result.p) == "better"


def test_identical_methods_show_no_detectable_difference():
    a = [0.7, 0.8, 0.75]
    result = paired_test(a, a)
    assert result.p == 1.0 and verdict(result.mean_diff, result.p) == "no detectable difference"
    noisy = paired_test([0.70, 0.81, 0.74, 0.77], [0.71, 0.80, 0.75, 0.76])
    assert verdict(noisy.mean_diff, noisy.p) == "no detectable difference"
    assert paired_test([0.7], [0.6]).p is None


def test_holm_on_known_p_values():
    # sorted 0.01, 0.02, 0.03, 0.04 with m = 4: 0.04, 0.06, 0.06 (monotone), 0.06
    assert holm([0.04, 0.01, 0.03, 0.02]) == pytest.approx([0.06, 0.04, 0.06, 0.06])
    assert holm([0.5, None, 0.01]) == [pytest.approx(0.5), None, pytest.approx(0.02)]
    assert holm([0.6, 0.7]) == [pytest.approx(1.0), pytest.approx(1.0)]


def test_friedman_and_average_ranks_on_a_known_table():
    import pandas as pd

    table = pd.DataFrame({"a": [0.9, 0.8, 0.85, 0.7], "b": [0.8, 0.7, 0.80, 0.6], "c": [0.7, 0.6, 0.75, 0.5]})
    ranking = friedman(table)
    assert ranking.names == ["a", "b", "c"] and ranking.average_ranks == [1.0, 2.0, 3.0]
    # chi2 = 12 / (N k (k+1)) * sum R_j^2 - 3 N (k+1) = 12/48 * (16+64+144) - 48 = 8
    assert ranking.statistic == pytest.approx(8.0) and ranking.p == pytest.approx(math.exp(-4))
    assert ranking.cd == pytest.approx(2.3437 * math.sqrt(3 * 4 / (6 * 4)), abs=1e-3)  # Demšar's q_0.05 for k = 3
    ties = friedman(pd.DataFrame({"a": [0.5, 0.5], "b": [0.5, 0.5], "c": [0.5, 0.5]}))
    assert ties.average_ranks == [2.0, 2.0, 2.0] and ties.p == 1.0


def test_calibration_error_of_a_known_case():
    probs = np.array([[0.9, 0.1]] * 10)
    labels = np.array([0] * 8 + [1] * 2)  # confidence 0.9, accuracy 0.8
    ece, conf, acc, count = calibration(probs, labels)
    assert ece == pytest.approx(0.1) and count.sum() == 10


# --------------------------------------------------------------------------- synthetic run directories


def fake_run(out: Path, run_id: str, method: str, seed: int, acc: float, *, dataset="trec", status="done", extra=None):
    d = out / run_id
    d.mkdir(parents=True)
    config = {"method": method, "seed": seed, "dataset": {"name": dataset, "labels_per_class": 10},
              "train": {"steps": 10, "batch_size": 8, "unlabeled_ratio": 2}, **(extra or {})}
    (d / "config.json").write_text(json.dumps(config))
    records = [{"step": s, "test_accuracy": acc * s / 10, "val_accuracy": acc * s / 10, "mask_rate": None if method == "supervised" else 1.0,
                "pseudo_label_accuracy": None if method == "supervised" else 0.5, **({} if method == "supervised" else
                {"selector/threshold/class_0": 0.5 + s / 100, "selector/threshold/class_1": 0.6})} for s in (5, 10)]
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    if status == "failed":
        (d / "error.json").write_text(json.dumps({"error": "RuntimeError: boom"}))
        return
    rng = np.random.default_rng(seed)
    labels = np.arange(20) % 2
    probs = np.where(rng.random(20) < acc, labels, 1 - labels)
    probs = np.stack([1 - probs, probs], 1) * 0.8 + 0.1
    np.savez(d / "predictions.npz", test_probs_last=probs, test_probs_best_val=probs, test_labels=labels)
    result = {"run_id": run_id, "method": method, "seed": seed, "test_accuracy": acc, "test_accuracy_best_val": acc,
              "test_macro_f1": acc - 0.05, "test_macro_f1_best_val": acc - 0.05, "val_accuracy_best": acc, "best_val_step": 10,
              "mask_rate": None if method == "supervised" else 1.0, "pseudo_label_accuracy": None if method == "supervised" else 0.5,
              "steps": 10, "wall_seconds": 20.0, "train_seconds": 18.0, "augment_seconds": 1.5, "labeled_size": 20,
              "started_at": f"2025-01-01T00:0{seed}:00+00:00", "finished_at": f"2025-01-01T00:0{seed}:20+00:00",
              "machine": {"cpus": 2, "torch_threads": 1}, "testbed_version": "0.1.0", "label_names": ["neg", "pos"],
              "pseudo_label_per_class": None if method == "supervised" else {"selected": [5, 5], "correct": [4, 3], "gold": [6, 6]}}
    (d / "result.json").write_text(json.dumps(result))


@pytest.fixture
def synthetic(tmp_path):
    """supervised, fixmatch (clearly better), pseudolabel (same as supervised) x 4 seeds on trec, plus
    one seed of 'uda' only, and a failed fixmatch run."""
    out = tmp_path / "runs"
    base = [0.70, 0.72, 0.68, 0.71]
    n = 0
    for seed, acc in enumerate(base):
        for method, value in (("supervised", acc), ("fixmatch", acc + 0.1 + 0.005 * seed), ("pseudolabel", acc)):
            fake_run(out, f"{n:012x}", method, seed, value)
            n += 1
    fake_run(out, f"{n:012x}", "uda", 0, 0.75)
    fake_run(out, "deadbeef0000", "fixmatch", 9, 0.0, status="failed")
    return out


class Images(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs)["src"])


def test_synthetic_report_verdicts_missing_runs_html_and_determinism(synthetic, tmp_path):
    out = tmp_path / "report"
    index = render_report([synthetic], out)
    md = _md(out / "index.md")
    for title in ("## Runs", "## Leaderboard", "## Paired comparisons", "## Across datasets", "## Ablation effects",
                  "## Training dynamics", "## Calibration", "## Cost", "## Published references", "## Provenance"):
        assert title in md
    comparisons = {(r["cell"], r["checkpoint"]): r for r in _csv(out / "comparisons.csv")}
    assert comparisons[("fixmatch", "last")]["verdict"] == "better" and float(comparisons[("fixmatch", "last")]["p_holm"]) < 0.01
    assert comparisons[("pseudolabel", "last")]["verdict"] == "no detectable difference"
    assert comparisons[("uda", "last")]["verdict"] == "not tested"
    assert CI_NEEDS in md  # uda has one seed
    assert "deadbeef0000" in md and "failed" in md and "RuntimeError: boom" in md  # the failed run is listed
    assert "| trec · 10 labels/class | uda | 0 | 1, 2, 3 |" in md  # seeds missing from a cell are listed
    assert "never engaged" in md  # mask rate 1.0 all along
    assert "Selected under 1% of pseudo-labels" not in md
    assert "thresholds-0-0.png" in md
    assert "| cell | neg | pos |" in md and "| fixmatch | 0.80 / 0.67 | 0.60 / 0.50 |" in md  # per class, by name
    # the HTML parses and every image it references exists
    parser = Images()
    parser.feed(index.read_text())
    assert parser.images and all((out / src).is_file() for src in parser.images)
    # re-rendering gives identical files
    first = {p.name: p.read_bytes() for p in out.iterdir()}
    render_report([synthetic], out)
    second = {p.name: p.read_bytes() for p in out.iterdir()}
    assert first.keys() == second.keys()
    for name in ("index.md", "index.html", "summary.csv", "comparisons.csv"):
        assert first[name] == second[name], name
    assert all(first[n] == second[n] for n in first if n.endswith(".png"))


def _md(path: Path) -> str:
    """index.md with its tables unpadded (``| a | b |``), so that rows can be asserted as text."""
    return "\n".join(re.sub(r" *(?<!\\)\| *", " | ", line).strip() if line.startswith("|") else line
                     for line in path.read_text(encoding="utf-8").splitlines())


def _csv(path: Path) -> list[dict]:
    import csv

    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_summary_csv_has_the_leaderboard(synthetic, tmp_path):
    render_report([synthetic], tmp_path / "r")
    rows = {(r["cell"], r["checkpoint"], r["metric"]): r for r in _csv(tmp_path / "r" / "summary.csv")}
    fixmatch = rows[("fixmatch", "last", "accuracy")]
    assert int(fixmatch["n_seeds"]) == 4 and float(fixmatch["mean"]) == pytest.approx(0.8101, abs=1e-3)
    assert rows[("uda", "last", "accuracy")]["ci95_low"] == ""


def test_ranks_across_datasets_and_a_plugin_section(tmp_path, synthetic):
    other = tmp_path / "runs2"
    for seed in range(2):
        for i, (method, acc) in enumerate((("supervised", 0.6), ("fixmatch", 0.7), ("pseudolabel", 0.65))):
            fake_run(other, f"f{seed}{i:010x}", method, seed, acc, dataset="sst2")
    plugin_dir = tmp_path / "plugins"
    plugin_dir.mkdir()
    (plugin_dir / "extra_section.py").write_text(
        "from testbed import hookimpl, ReportSection\n"
        "@hookimpl\n"
        "def testbed_report_sections(results, context):\n"
        "    return [ReportSection(name='mine', title='My section', blocks=(f'{len(results)} runs, baseline {context.baseline}',))]\n")
    result = CliRunner().invoke(main, ["--plugins-dir", str(plugin_dir), "report", str(synthetic), str(other), "-o", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    md = _md(tmp_path / "r" / "index.md")
    assert "Blocks: 2 datasets and label budgets" in md and "critical-difference.png" in md
    assert "## My section" in md and "20 runs, baseline supervised" in md
    (plugin_dir / "broken_section.py").write_text(
        "from testbed import hookimpl\n@hookimpl\ndef testbed_report_sections(results, context):\n    raise ValueError('oops')\n")
    result = CliRunner().invoke(main, ["--plugins-dir", str(plugin_dir), "report", str(synthetic), "-o", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    md = _md(tmp_path / "r" / "index.md")
    assert "## My section" in md and "## Plugin section failed: " in md and "ValueError: oops" in md


def test_ablation_axes_get_marginal_means_and_an_interaction_heatmap(tmp_path):
    out = tmp_path / "runs"
    n = 0
    for seed in range(2):
        for distance in ("kl", "l2"):
            for selector in ("threshold", "flexmatch"):
                acc = 0.6 + (0.1 if distance == "kl" else 0) + (0.05 if selector == "flexmatch" else 0) + 0.01 * seed
                fake_run(out, f"{n:012x}", "fixmatch", seed, acc, extra={"distance": {"name": distance}, "selector": {"name": selector}})
                n += 1
    render_report([out], tmp_path / "r")
    md = _md(tmp_path / "r" / "index.md")
    assert "| distance | runs | mean accuracy | 95% CI |" in md
    assert "| kl | 4 | 0.7300 |" in md and "| l2 | 4 | 0.6300 |" in md  # pooled over selectors and seeds
    assert "interaction-0-0.png" in md and (tmp_path / "r" / "interaction-0-0.png").is_file()
    assert "No baseline runs" in md  # no supervised runs here: said, not silently skipped


def test_published_references_sit_beside_matching_groups_only(tmp_path, synthetic):
    imdb = tmp_path / "imdb"  # fake runs have 20 labeled examples: USB's IMDB-20 setting
    for seed in range(3):
        fake_run(imdb, f"a{seed:011x}", "supervised", seed, 0.70, dataset="imdb")
        fake_run(imdb, f"b{seed:011x}", "fixmatch", seed, 0.80, dataset="imdb")
        fake_run(imdb, f"c{seed:011x}", "cotraining", seed, 0.75, dataset="imdb")
    render_report([imdb, synthetic], tmp_path / "r")
    md = _md(tmp_path / "r" / "index.md")
    section = md[md.index("## Published references: USB"):md.index("## Provenance")]
    # ours: error 30.00 -> 20.00 = +10.00; USB (results/usb_nlp.csv): 20.31 -> 7.72 = +12.59
    assert "| fixmatch | fixmatch | 3 | 20.00 ± 0.00 | +10.00 | 7.72 ± 0.33 | +12.59 |" in section
    assert "| supervised | supervised | 3 | 30.00 ± 0.00 | – | 20.31 ± 2.79 | – |" in section
    assert "| cotraining | cotraining | 3 | 25.00 ± 0.00 | +5.00 | not published | – |" in section
    assert "fully supervised): 5.69 ± 0.15" in section
    assert "trec" not in section.split("Settings")[1].split("\n\n", 1)[1]  # trec has no USB setting: no table for it


def test_published_table_from_a_third_party_plugin(tmp_path, synthetic):
    plugin_dir = tmp_path / "plugins"
    plugin_dir.mkdir()
    (plugin_dir / "my_paper.py").write_text(
        "from testbed import hookimpl\n"
        "from testbed_plugins.published import PublishedTable, published_section\n"
        "MINE = PublishedTable(name='Mine', source='Me et al. 2026, Table 1', setup='a larger model', seeds=5,\n"
        "                      error_rates={('trec', 20, 'supervised'): (40.0, 1.0), ('trec', 20, 'fixmatch'): (30.0, 2.0)})\n"
        "@hookimpl\n"
        "def testbed_report_sections(results, context):\n"
        "    return [published_section(results, context, MINE, order=81)]\n")
    result = CliRunner().invoke(main, ["--plugins-dir", str(plugin_dir), "report", str(synthetic), "-o", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    md = _md(tmp_path / "r" / "index.md")
    assert "No group of these runs matches a USB setting" in md
    mine = md[md.index("## Published references: Mine"):]
    assert "| Mine error rate (%) | Mine gain |" in mine and "| 30.00 ± 2.00 | +10.00 |" in mine


def test_a_run_in_two_directories_counts_once(tmp_path, synthetic):
    copy = tmp_path / "copy"
    shutil.copytree(synthetic, copy)
    render_report([synthetic, copy], tmp_path / "r")
    md = _md(tmp_path / "r" / "index.md")
    assert "runs appear in more than one runs directory; each is counted once" in md
    rows = {(r["cell"], r["checkpoint"], r["metric"]): r for r in _csv(tmp_path / "r" / "summary.csv")}
    assert int(rows[("fixmatch", "last", "accuracy")]["n_seeds"]) == 4


@pytest.fixture
def two_sets(tmp_path):
    """New runs beside committed baseline runs: the same configs (so the same run ids) with other numbers,
    and a cell only the new set has."""
    new, base = tmp_path / "new", tmp_path / "base"
    for seed in range(3):
        fake_run(base, f"a{seed:011x}", "supervised", seed, 0.70 + 0.01 * seed)
        fake_run(base, f"b{seed:011x}", "fixmatch", seed, 0.75 + 0.01 * seed)
        fake_run(new, f"a{seed:011x}", "supervised", seed, 0.72 + 0.01 * seed)
        fake_run(new, f"b{seed:011x}", "fixmatch", seed, 0.80 + 0.01 * seed)
        fake_run(new, f"c{seed:011x}", "pseudolabel", seed, 0.70 + 0.01 * seed)
    return new, base


def test_compare_to_reports_two_sets_side_by_side(tmp_path, two_sets):
    new, base = two_sets
    result = CliRunner().invoke(main, ["report", str(new), "--compare-to", str(base), "-o", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    rows = {(r["cell"], r["checkpoint"], r["metric"]): r for r in _csv(tmp_path / "r" / "summary.csv")}
    cells = {cell for cell, _, _ in rows}
    assert cells == {"supervised [runs]", "fixmatch [runs]", "pseudolabel [runs]", "supervised [compare]", "fixmatch [compare]"}
    assert all(int(r["n_seeds"]) == 3 for r in rows.values())  # a config in both sets counts in each
    assert rows[("fixmatch [compare]", "last", "accuracy")]["set"] == "compare"
    assert float(rows[("fixmatch [compare]", "last", "accuracy")]["mean"]) == pytest.approx(0.76)
    comparisons = {(r["cell"], r["checkpoint"]): r for r in _csv(tmp_path / "r" / "comparisons.csv")}
    assert {r["baseline"] for r in comparisons.values()} == {"supervised [compare]"}  # the compared set's baseline
    assert float(comparisons[("fixmatch [runs]", "last")]["mean_diff"]) == pytest.approx(0.10)
    assert float(comparisons[("supervised [runs]", "last")]["mean_diff"]) == pytest.approx(0.02)
    assert float(comparisons[("fixmatch [compare]", "last")]["mean_diff"]) == pytest.approx(0.05)
    md = _md(tmp_path / "r" / "index.md")
    assert md.startswith("# Report: new vs base") and f"*runs* ({new}) and *compare* ({base})" in md
    assert "more than one runs directory" not in md  # not duplicates: one run per set
    assert "a00000000000 (compare) · done" in md and f"| compared to (--compare-to) | {base} |" in md
    assert "| set | runs | mean accuracy | 95% CI |" in md  # the set is an axis of the ablation section
    help_text = CliRunner().invoke(main, ["report", "--help"]).output
    assert "--compare-to DIR" in help_text and "compare set's baseline" in " ".join(help_text.split())


def test_each_set_reads_its_own_run_files(tmp_path, two_sets):
    from testbed.report import load_report_table, report_context

    new, base = two_sets
    frame, keys = load_report_table([new], compare_to=[base])
    assert keys == ["method", "set"] and len(frame) == 15
    assert frame.attrs["run_dirs"]["a00000000000 (compare)"] == base / "a00000000000"
    assert frame.attrs["run_dirs"]["a00000000000"] == new / "a00000000000"
    context = report_context(frame, keys, "supervised", [new, base], tmp_path / "r")
    assert context.metrics("a00000000000")[-1]["test_accuracy"] == pytest.approx(0.72)
    assert context.metrics("a00000000000 (compare)")[-1]["test_accuracy"] == pytest.approx(0.70)
    pooled, _ = load_report_table([new, base])  # without --compare-to the same run ids count once
    assert len(pooled) == 9 and set(pooled["set"]) == {"runs"} and "[" not in "".join(pooled.cell)
    with pytest.raises(UserError, match="is both a runs directory and a --compare-to directory"):
        load_report_table([new], compare_to=[new])


def test_the_baseline_comes_from_the_main_set_when_the_compared_set_lacks_it(tmp_path, two_sets):
    new, base = two_sets
    for run in base.glob("a*"):
        shutil.rmtree(run)  # no supervised runs to compare to
    render_report([new], tmp_path / "r", compare_to=[base])
    assert {r["baseline"] for r in _csv(tmp_path / "r" / "comparisons.csv")} == {"supervised [runs]"}
    render_report([new], tmp_path / "r", compare_to=[base], baseline="fixmatch")  # a method: the compare set's cell of it
    assert {r["baseline"] for r in _csv(tmp_path / "r" / "comparisons.csv")} == {"fixmatch [compare]"}


def test_a_cell_pooling_several_configs_pairs_seed_means(tmp_path):
    out = tmp_path / "runs"
    for seed in range(3):
        fake_run(out, f"a{seed:011x}", "supervised", seed, 0.60 + 0.01 * seed)
        for i, (distance, gain) in enumerate((("kl", 0.10), ("l2", 0.20))):
            fake_run(out, f"b{i}{seed:010x}", "fixmatch", seed, 0.60 + 0.01 * seed + gain, extra={"distance": {"name": distance}})
    render_report([out], tmp_path / "r", group_by=["method"])
    row = next(r for r in _csv(tmp_path / "r" / "comparisons.csv") if r["cell"] == "fixmatch" and r["checkpoint"] == "last")
    assert int(row["pairs"]) == 3 and float(row["mean_diff"]) == pytest.approx(0.15)


def test_a_cell_has_one_color_in_every_plot(tmp_path):
    from testbed.report import load_report_table, report_context
    from testbed_plugins.report_sections import calibration_section, dynamics_section

    out = tmp_path / "runs"  # supervised leads and has no pseudo-label curve: the other cells shift
    for seed in range(2):
        for i, (method, acc) in enumerate((("supervised", 0.9), ("fixmatch", 0.8), ("pseudolabel", 0.7))):
            fake_run(out, f"{i}{seed:011x}", method, seed, acc)
    frame, keys = load_report_table([out])
    context = report_context(frame, keys, "supervised", [out], tmp_path / "r")
    figures = {b.name: b.figure for b in dynamics_section(frame, context).blocks if hasattr(b, "figure")}
    figures.update({b.name: b.figure for b in calibration_section(frame, context).blocks if hasattr(b, "figure")})
    colors: dict[str, set] = {}
    for name in ("learning-curves-0", "pseudo-labels-0", "reliability-0"):  # supervised is missing from the second
        for ax in figures[name].axes:
            for line in ax.get_lines():
                colors.setdefault(line.get_label(), set()).add(line.get_color())
    assert {"supervised", "fixmatch", "pseudolabel"} <= set(colors)
    assert all(len(c) == 1 for cell, c in colors.items() if cell != "perfect calibration"), colors


def test_built_in_sections_come_through_the_hook_like_a_plugin_s(synthetic, tmp_path):
    import dataclasses

    from testbed import ReportSection, hookimpl
    from testbed.plugins import load_plugins

    registry = load_plugins()
    plugins = {impl.plugin_name for impl in registry.pm.hook.testbed_report_sections.get_hookimpls()}
    assert {"report_sections", "published"} <= plugins
    builtin = registry.pm.get_plugin("report_sections")
    registry.pm.set_blocked("report_sections")  # without the plugin, no built-in section: none is hard-coded
    render_report([synthetic], tmp_path / "bare", registry=registry)
    md = _md(tmp_path / "bare" / "index.md")
    assert "## Published references" in md and "## Leaderboard" not in md and "## Provenance" not in md
    assert (tmp_path / "bare" / "summary.csv").is_file() and (tmp_path / "bare" / "comparisons.csv").is_file()

    class Replacement:  # sees the built-in sections, drops one, moves one, slots its own between two
        @hookimpl
        def testbed_report_sections(self, results, context):
            sections = {s.name: s for s in builtin.testbed_report_sections(results, context)}
            seen.update({name: s.order for name, s in sections.items()})
            del sections["cost"]
            return [dataclasses.replace(sections.pop("provenance"), order=0), *sections.values(),
                    ReportSection(name="mine", title="Mine", blocks=(f"baseline cells: {dict(context.baseline_cells)}",), order=15)]

    seen: dict[str, int] = {}
    registry.pm.register(Replacement(), name="replacement")
    render_report([synthetic], tmp_path / "r", registry=registry)
    assert seen == {"findings": 1, "runs": 5, "leaderboard": 10, "comparisons": 20, "across": 30, "ablation": 40, "dynamics": 50,
                    "calibration": 60, "cost": 70, "provenance": 100}
    titles = [line[3:] for line in _md(tmp_path / "r" / "index.md").splitlines() if line.startswith("## ")]
    assert titles == ["Provenance", "Findings", "Runs", "Leaderboard", "Mine", "Paired comparisons", "Across datasets", "Ablation effects",
                      "Training dynamics", "Calibration and per-class metrics", "Published references: USB"]
    assert "baseline cells: {'trec · 10 labels/class': 'supervised'}" in _md(tmp_path / "r" / "index.md")


def test_each_run_file_is_read_once_per_report(synthetic, tmp_path, monkeypatch):
    import builtins
    import io
    from collections import Counter

    from testbed import hookimpl
    from testbed.plugins import load_plugins

    class EveryRun:  # a second reader of every run's files, beside the built-in sections
        @hookimpl
        def testbed_report_sections(self, results, context):
            for run_id in results.run_id:
                context.metrics(run_id), context.predictions(run_id)
            return []

    registry = load_plugins()
    registry.pm.register(EveryRun(), name="every_run")
    opened: Counter = Counter()
    real_open = builtins.open

    def counting_open(file, *args, **kwargs):
        if isinstance(file, (str, Path)) and Path(file).name in ("metrics.jsonl", "predictions.npz"):
            opened[str(file)] += 1
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", counting_open)  # np.load opens with open()
    monkeypatch.setattr(io, "open", counting_open)  # Path.read_text with io.open
    render_report([synthetic], tmp_path / "r", registry=registry)
    files = {str(p) for name in ("metrics.jsonl", "predictions.npz") for p in synthetic.glob(f"*/{name}")}
    assert set(opened) == files and set(opened.values()) == {1}, opened


def test_report_plugins_import_only_the_public_api():
    import ast

    for name in ("report_sections.py", "published.py"):
        tree = ast.parse((Path(__file__).resolve().parents[1] / "plugins" / name).read_text(encoding="utf-8"))
        modules = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | \
                  {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert not {m for m in modules if m and m.startswith("testbed.")}, (name, modules)


def test_cells_are_named_by_the_varied_choices_not_the_options_that_come_with_them(tmp_path):
    from testbed.report import load_report_table

    out, more = tmp_path / "runs", tmp_path / "more"  # eda and drop_swap have different options
    for seed in range(2):
        for i, (strong, options) in enumerate((("drop_swap", {"p_delete": 0.1}), ("eda", {"alpha_rs": 0.1}))):
            for j, method in enumerate(("fixmatch", "freematch")):
                fake_run(out, f"{i}{j}{seed:010x}", method, seed, 0.7 + 0.01 * i + 0.02 * j,
                         extra={"augmentation": {"strong": {"name": strong, **options}},
                                "selector": {"name": "threshold" if method == "fixmatch" else "freematch"}})
        fake_run(out, f"s{seed:011x}", "supervised", seed, 0.7, extra={"augmentation": {"strong": {"name": "identity"}},
                                                                       "selector": {"name": "none"}})
        for k, p in enumerate((0.2, 0.3)):  # an option varied on purpose
            fake_run(more, f"f{k}{seed:010x}", "fixmatch", seed, 0.7,
                     extra={"augmentation": {"strong": {"name": "drop_swap", "p_delete": p}}, "selector": {"name": "threshold"}})
    frame, keys = load_report_table([out])
    assert keys == ["method", "augmentation.strong.name"]
    assert set(frame.cell) == {f"method={m}, augmentation.strong={a}" for m in ("fixmatch", "freematch") for a in ("eda", "drop_swap")
                               } | {"method=supervised"}  # its preset fixes the strong augmentation: not part of its name
    frame, keys = load_report_table([out, more])  # now p_delete names cells too
    assert keys == ["method", "augmentation.strong.name", "augmentation.strong.p_delete"]
    assert "method=fixmatch, augmentation.strong=drop_swap, augmentation.strong.p_delete=0.3" in set(frame.cell)


def test_a_seams_name_comes_before_its_options_in_a_cells_name(tmp_path):
    """``selector=topk, selector.fraction=0.2``: the name first, though "fraction" sorts before "name"."""
    from testbed.report import load_report_table

    for seed in range(2):
        for i, fraction in enumerate((0.2, 0.5)):
            fake_run(tmp_path, f"{i}{seed:011x}", "pseudolabel", seed, 0.7, extra={"selector": {"fraction": fraction, "name": "topk"}})
        fake_run(tmp_path, f"t{seed:011x}", "pseudolabel", seed, 0.7, extra={"selector": {"name": "threshold"}})
    frame, keys = load_report_table([tmp_path])
    assert keys == ["selector.fraction", "selector.name"]  # as config.json has them: the option first
    assert set(frame.cell) == {"selector=topk, selector.fraction=0.2", "selector=topk, selector.fraction=0.5", "selector=threshold"}


def test_damaged_run_files_are_listed_with_the_fix_not_counted(synthetic, tmp_path):
    (synthetic / "000000000000" / "result.json").write_text('{"test_accuracy": 0.5,')  # cut short by hand
    (synthetic / "000000000001" / "config.json").write_text("garbage")
    render_report([synthetic], tmp_path / "r")
    md = _md(tmp_path / "r" / "index.md")
    runs = md[md.index("## Runs"):md.index("## Leaderboard")]
    assert "| 000000000000 | damaged | trec · 10 labels/class | supervised | 0 | unreadable result.json (JSONDecodeError" in runs
    assert f"delete {synthetic / '000000000000'} to rerun" in runs
    assert "| 000000000001 | damaged |" in runs and "unreadable config.json" in runs
    rows = {(r["cell"], r["checkpoint"], r["metric"]): r for r in _csv(tmp_path / "r" / "summary.csv")}
    assert int(rows[("supervised", "last", "accuracy")]["n_seeds"]) == 3  # not counted


def test_a_selector_that_never_selects_is_called_out(tmp_path):
    out = tmp_path / "runs"
    for seed in range(2):
        fake_run(out, f"a{seed:011x}", "supervised", seed, 0.7)
        fake_run(out, f"b{seed:011x}", "fixmatch", seed, 0.7)
    for path in out.glob("b*/metrics.jsonl"):  # tau never reached: nothing selected
        records = [json.loads(line) for line in path.read_text().splitlines()]
        path.write_text("".join(json.dumps({**r, "mask_rate": 0.0}) + "\n" for r in records))
    render_report([out], tmp_path / "r")
    md = _md(tmp_path / "r" / "index.md")
    assert "Selected under 1% of pseudo-labels at every evaluation (the unlabeled loss hardly acted; close to supervised training): fixmatch." in md


# --------------------------------------------------------------------------- token tasks (NER)

TAGS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]
TYPES = ("LOC", "MISC", "ORG", "PER")


def fake_token_run(out: Path, run_id: str, method: str, seed: int, f1: float, accuracy: float):
    """A finished token-task run (result.json as a CoNLL-2003 run writes it): entity F1 ``f1``,
    token accuracy ``accuracy``, a per-type table whose F1 for PER is ``f1`` + 0.1, per-tag pseudo-label counts."""
    fake_run(out, run_id, method, seed, accuracy, dataset="conll2003")
    d = out / run_id
    config = json.loads((d / "config.json").read_text())
    config["dataset"]["labeled_size"] = 50
    (d / "config.json").write_text(json.dumps(config))
    records = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]
    (d / "metrics.jsonl").write_text("".join(json.dumps({**r, "test_entity_f1": f1 * r["step"] / 10, "val_entity_f1": f1 * r["step"] / 10})
                                             + "\n" for r in records))
    result = json.loads((d / "result.json").read_text())
    per_type = {kind: {"precision": f1 + (0.1 if kind == "PER" else 0), "recall": f1, "f1": f1 + (0.1 if kind == "PER" else 0),
                       "support": 100 + i} for i, kind in enumerate(TYPES)}
    result.update(task="token", label_names=TAGS, test_entity_f1=f1, test_entity_f1_best_val=f1 + 0.01, test_entity_per_type=per_type,
                  test_token_accuracy=accuracy, labeled_size=50,
                  pseudo_label_per_class=None if method == "supervised" else
                  {"selected": [50, 10, 4, 0, 0, 0, 0, 0, 0], "correct": [45, 5, 4, 0, 0, 0, 0, 0, 0], "gold": [60, 8, 4, 3, 0, 0, 0, 0, 0]})
    (d / "result.json").write_text(json.dumps(result))


@pytest.fixture
def token_runs(tmp_path):
    """supervised, fixmatch and pseudolabel × 3 seeds on CoNLL-2003, where token accuracy and entity F1
    disagree: fixmatch has the best entity F1 (+0.103 over supervised) and the worst token accuracy."""
    out = tmp_path / "ner"
    for seed in range(3):
        for i, (method, f1, accuracy) in enumerate((("supervised", 0.40, 0.90), ("fixmatch", 0.50, 0.80), ("pseudolabel", 0.41, 0.95))):
            fake_token_run(out, f"{i}{seed:011x}", method, seed, f1 + (0.01 + 0.003 * i) * seed, accuracy + 0.005 * seed)
    return out


def test_token_groups_are_ranked_and_compared_on_entity_f1(token_runs, tmp_path):
    render_report([token_runs], tmp_path / "r")
    md = _md(tmp_path / "r" / "index.md")
    board = md[md.index("## Leaderboard"):md.index("## Paired comparisons")]
    assert "best on validation* there is the evaluation with the highest *validation entity F1*" in board
    assert ("| cell | seeds | entity F1, last | 95% CI, last | token accuracy, last | entity F1, best on val | 95% CI, best on val | "
            "token accuracy, best on val |") in board
    rows = [line for line in board.splitlines() if line.startswith(("| fixmatch |", "| supervised |", "| pseudolabel |"))]
    assert [r.split(" | ")[0] for r in rows[:3]] == ["| fixmatch", "| pseudolabel", "| supervised"]  # by entity F1, not accuracy
    assert rows[0].startswith("| fixmatch | 3 | 0.5130 ± 0.0130 | [0.4807, 0.5453] | 0.8050 ± 0.0050 | 0.5230 ± 0.0130 |")
    # the per-type table: precision, recall, F1 by type, mean over seeds
    assert "| cell | type | seeds | precision | recall | F1 | support |" in board
    assert "| fixmatch | PER | 3 | 0.6130 | 0.5130 | 0.6130 ± 0.0130 | 103 |" in board
    assert "| supervised | LOC | 3 | 0.4100 | 0.4100 | 0.4100 ± 0.0100 | 100 |" in board
    # comparisons on entity F1: fixmatch is better by 10.3 points although its token accuracy is 10 points lower
    comparisons = {(r["cell"], r["checkpoint"]): r for r in _csv(tmp_path / "r" / "comparisons.csv")}
    assert comparisons[("fixmatch", "last")]["metric"] == "entity_f1"
    assert float(comparisons[("fixmatch", "last")]["mean_diff"]) == pytest.approx(0.103)
    assert comparisons[("fixmatch", "last")]["verdict"] == "better"
    assert float(comparisons[("pseudolabel", "best on validation")]["mean_diff"]) == pytest.approx(0.016)
    assert "on test accuracy (entity F1 in the token-classification groups: conll2003 · 50 labeled sentences)" in md
    assert "**conll2003 · 50 labeled sentences**, last checkpoint, vs supervised, on entity F1" in md
    # ranks: by entity F1 in each seed
    across = md[md.index("## Across datasets"):md.index("## Ablation effects")]
    assert "ranked by mean test accuracy (entity F1 in the token-classification groups" in across
    assert "| fixmatch | 1.00 |" in across and "| pseudolabel | 2.00 |" in across and "| supervised | 3.00 |" in across
    # per-tag pseudo-labels, named by the tags
    assert "Pseudo-labels per tag over the whole run" in md
    assert "| cell | O | B-PER | I-PER | B-ORG |" in md and "| fixmatch | 0.90 / 0.75 | 0.50 / 0.62 | 1.00 / 1.00 | – / 0.00 |" in md
    # summary.csv: entity F1 first, with the budget in labeled sentences
    summary = {(r["cell"], r["checkpoint"], r["metric"]): r for r in _csv(tmp_path / "r" / "summary.csv")}
    fixmatch = summary[("fixmatch", "best on validation", "entity_f1")]
    assert float(fixmatch["mean"]) == pytest.approx(0.523) and fixmatch["labeled_size"] == "50" and fixmatch["labels_per_class"] == ""
    assert float(summary[("fixmatch", "last", "accuracy")]["mean"]) == pytest.approx(0.805)
    cost = md[md.index("## Cost"):md.index("## Provenance")]
    assert "| fixmatch |" in cost and "+10.30" in cost  # gain in entity F1 points


def test_a_token_only_report_leaves_out_the_usb_references(token_runs, synthetic, tmp_path):
    render_report([token_runs], tmp_path / "ner")
    assert "Published references: USB" not in _md(tmp_path / "ner" / "index.md")
    render_report([synthetic, token_runs], tmp_path / "both")  # a sentence group: the section is back
    assert "## Published references: USB" in _md(tmp_path / "both" / "index.md")


def test_a_report_of_sentence_and_token_groups_keeps_each_groups_metric(token_runs, synthetic, tmp_path):
    render_report([synthetic], tmp_path / "sentence")
    render_report([synthetic, token_runs], tmp_path / "both")
    comparisons = _csv(tmp_path / "both" / "comparisons.csv")
    alone = {(r["cell"], r["checkpoint"]): r for r in _csv(tmp_path / "sentence" / "comparisons.csv")}
    for row in comparisons:
        if row["group"].startswith("trec"):  # the sentence group: accuracy, the numbers of its own report
            assert row["metric"] == "accuracy" and row["mean_diff"] == alone[(row["cell"], row["checkpoint"])]["mean_diff"]
        else:
            assert row["metric"] == "entity_f1"
    assert "metric" not in _csv(tmp_path / "sentence" / "comparisons.csv")[0]  # sentence-only reports keep their columns
    md = _md(tmp_path / "both" / "index.md")
    assert "| cell | seeds | accuracy, last |" in md and "| cell | seeds | entity F1, last |" in md
    assert "Blocks: 2 datasets and label budgets" in md


def test_testbed_results_shows_entity_f1_for_token_runs(token_runs):
    listing = CliRunner().invoke(main, ["results", str(token_runs)])
    assert listing.exit_code == 0, listing.output
    header, *lines = (line.split() for line in listing.output.splitlines())
    fixmatch = next(line for line in lines if line[2:4] == ["fixmatch", "1"])
    assert fixmatch[header.index("test_entity_f1")] == "0.5130" and fixmatch[header.index("test_entity_f1_best_val")] == "0.5230"
    assert fixmatch[header.index("test_accuracy")] == "0.8050"  # per token


def test_group_by_and_unknown_key(synthetic, tmp_path):
    result = CliRunner().invoke(main, ["report", str(synthetic), "-o", str(tmp_path / "r"), "--group-by", "nope"])
    assert result.exit_code == 1 and "--group-by 'nope'" in result.output
    result = CliRunner().invoke(main, ["report", str(synthetic), "-o", str(tmp_path / "r"), "--baseline", "pseudolabel"])
    assert result.exit_code == 0 and "vs pseudolabel" in _md(tmp_path / "r" / "index.md")


@pytest.mark.skipif(shutil.which("chromium") is None and not Path("/usr/bin/chromium").exists()
                    and not os.environ.get("TESTBED_REQUIRE_CHROMIUM"), reason="no chromium (CI installs Debian's)")
def test_report_opens_in_headless_chromium_without_errors(synthetic, tmp_path):
    import subprocess

    index = render_report([synthetic], tmp_path / "r")
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    # flags as the machine notes say: no background networking (refused connections flood the log)
    run = subprocess.run([chromium, "--headless", "--disable-gpu", "--no-sandbox", "--disable-quic", "--no-first-run",
                          "--disable-background-networking", "--disable-component-update", "--disable-sync",
                          f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0",
                          "--dump-dom", index.as_uri()], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and "Leaderboard" in run.stdout
    assert "Failed to load resource" not in run.stderr and "Uncaught" not in run.stderr


# --------------------------------------------------------------------------- a real tiny grid


def test_report_of_a_real_tiny_grid(tmp_path, registry):
    from testbed.grid import expand, load_grid, run_grid

    spec = load_grid(None, [*FAST, "method=supervised,fixmatch", "seed=0,1,2", "train.steps=4", "train.eval_every=2"])
    cells = expand(spec, registry)
    report = run_grid(cells, registry, tmp_path / "runs", executor="serial", progress=False)
    assert report.complete
    run_dir = next((tmp_path / "runs").glob("*/predictions.npz")).parent
    result = json.loads((run_dir / "result.json").read_text())
    assert result["augment_seconds"] >= 0
    with np.load(run_dir / "predictions.npz") as data:
        assert set(data.files) == {"test_probs_last", "test_probs_best_val", "test_labels"}
        assert data["test_probs_last"].shape == (result["test_size"], 6) and len(data["test_labels"]) == result["test_size"]
    fixmatch = [json.loads(p.read_text()) for p in (tmp_path / "runs").glob("*/result.json")]
    fixmatch = [r for r in fixmatch if r["method"] == "fixmatch"]
    counts = fixmatch[0]["pseudo_label_per_class"]
    assert set(counts) == {"selected", "correct", "gold"} and len(counts["gold"]) == 6
    assert all(c <= s for c, s in zip(counts["correct"], counts["selected"]))
    assert sum(counts["gold"]) > 0

    out = tmp_path / "report"
    result = CliRunner().invoke(main, ["report", str(tmp_path / "runs"), "-o", str(out)])
    assert result.exit_code == 0, result.output
    md = _md(out / "index.md")
    for title in ("Leaderboard", "Paired comparisons", "Across datasets", "Training dynamics", "Calibration", "Cost", "Provenance"):
        assert f"## {title}" in md
    assert "| fixmatch | 3 |" in md and "reliability-0.png" in md and "learning-curves-0.png" in md


@pytest.mark.parametrize("command", [
    ["report", "{runs}", "-o", "{shared}/report"],
    ["results", "{runs}", "--format", "csv", "--output", "{shared}/results.csv"],
    ["run", "method=supervised", "backbone.name=tiny", "--out", "{shared}/runs"],
    ["grid", "method=supervised", "backbone.name=tiny", "seed=0,1", "--out", "{shared}/runs"],
])
def test_nothing_is_written_into_the_shared_data(synthetic, data_root, command):
    before = sorted(p.name for p in data_root.iterdir())
    args = [a.format(runs=synthetic, shared=data_root) for a in command]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1 and "inside the shared data directory" in result.output, result.output
    assert sorted(p.name for p in data_root.iterdir()) == before


# --------------------------------------------------------------------------- which factors matter


def _factorial(seed: int = 0):
    """A full 3 × 2 × 3 grid × 3 seeds: a large effect of a, a small one of b, an a × b interaction, noise."""
    import itertools

    import pandas as pd

    rng = np.random.default_rng(seed)
    rows = []
    for a, b, c, s in itertools.product(["x", "y", "z"], ["p", "q"], ["k", "l", "m"], [0, 1, 2]):
        y = {"x": 0.0, "y": 0.10, "z": 0.20}[a] + (0.02 if b == "q" else 0) + (0.05 if (a, b) == ("z", "q") else 0)
        rows.append({"a": a, "b": b, "c": c, "seed": s, "acc": y + 0.01 * s + rng.normal(0, 0.01)})
    return pd.DataFrame(rows)


def _rss(frame, terms: list[tuple[str, ...]]) -> float:
    """The residual sum of squares of a least-squares fit with one dummy column per level combination
    of each term (an independent route to the sums of squares: SS_term = RSS without it − RSS with it)."""
    import pandas as pd

    columns = [np.ones(len(frame))]
    for term in terms:
        key = frame[list(term)].astype(str).agg("|".join, axis=1)
        columns += [c.to_numpy(dtype=float) for _, c in pd.get_dummies(key).items()]
    x = np.column_stack(columns)
    fitted = x @ np.linalg.lstsq(x, frame["acc"].to_numpy(), rcond=None)[0]
    return float(((frame["acc"].to_numpy() - fitted) ** 2).sum())


def test_factorial_anova_sums_of_squares_match_a_least_squares_fit():
    frame = _factorial()
    mains = [("a",), ("b",), ("c",), ("seed",)]
    pairs = [("a", "b"), ("a", "c"), ("b", "c")]
    full = mains + pairs
    effects, residual_df = factorial_anova(frame.assign(seed=frame.seed.map(str)), ["a", "b", "c"], "acc", block="seed")
    by_term = {e.term: e for e in effects}
    assert residual_df == 54 - 1 - (2 + 1 + 2 + 2 + 2 + 4 + 2)  # 40: the three-way term and the seed interactions
    residual = _rss(frame, full)
    for term in pairs:  # an interaction: drop it from the full model
        expected = _rss(frame, [t for t in full if t != term]) - residual
        assert by_term[" × ".join(term)].sum_sq == pytest.approx(expected, rel=1e-6, abs=1e-12)
    for term in mains:  # a main effect: drop it and its interactions (balanced: the same as type II)
        kept = [t for t in mains if t != term] + [t for t in pairs if term[0] not in t]
        expected = _rss(frame, kept) - _rss(frame, kept + [term])
        assert by_term[term[0]].sum_sq == pytest.approx(expected, rel=1e-6, abs=1e-12)
    f = (by_term["a"].sum_sq / 2) / (residual / residual_df)
    assert by_term["a"].f == pytest.approx(f) and by_term["a"].p == pytest.approx(stats.f.sf(f, 2, residual_df))
    assert by_term["a"].p < 1e-10 and by_term["a × b"].p < 1e-3 and by_term["c"].p > 0.01  # c has no effect
    assert by_term["seed"].p is None and sum(e.share for e in effects) < 1


def test_factorial_anova_refuses_an_incomplete_grid():
    frame = _factorial().iloc[1:]
    reason = factorial_anova(frame, ["a", "b", "c"], "acc", block="seed")
    assert isinstance(reason, str) and "53 runs with a result for 54 combinations" in reason


def test_the_report_says_which_axes_matter_and_shows_a_teachers_student(tmp_path):
    """A 2 × 2 grid × 3 seeds where only the distance moves accuracy: the ablation section's ANOVA
    names it; a cell that reports its EMA teacher shows the student's accuracy beside it."""
    out, n = tmp_path / "runs", 0
    for distance in ("l2", "kl"):
        for selector in ("threshold", "curriculum"):
            for seed in range(3):
                acc = 0.6 + (0.1 if distance == "kl" else 0.0) + 0.003 * seed + (0.002 if selector == "curriculum" and seed == 1 else 0)
                fake_run(out, f"{n:012x}", "fixmatch", seed, acc, extra={"distance": {"name": distance}, "selector": {"name": selector}})
                n += 1
    for seed in range(3):  # a baseline outside the grid (an include cell): left out of the analysis, which stays complete
        fake_run(out, f"{n + seed:012x}", "supervised", seed, 0.5)
    md = _md(render_report([out], tmp_path / "report") and tmp_path / "report" / "index.md")
    assert "The baseline cell (method=supervised) lies outside the grid's axes" in md
    assert "Terms with a real effect, largest first: distance (η² = 0.99" in md
    assert re.search(r"\| distance +\| 1 +\| 0\.99\d +\|.*\| matters +\|", md)
    assert re.search(r"\| selector +\| 1 +\|.*\| no detectable effect \|", md)

    teacher_runs = tmp_path / "mt"
    for seed in range(2):
        fake_run(teacher_runs, f"{seed:012x}", "meanteacher", seed, 0.7)
        result = json.loads((teacher_runs / f"{seed:012x}" / "result.json").read_text())
        result.update(evaluated_model="teacher", student_test_accuracy=0.6, teacher_test_accuracy=0.7)
        (teacher_runs / f"{seed:012x}" / "result.json").write_text(json.dumps(result))
    md = _md(render_report([teacher_runs], tmp_path / "mt-report") and tmp_path / "mt-report" / "index.md")
    assert "student accuracy" in md and "0.6000 ± 0.0000" in md and "teacher accuracy" not in md


def test_pairs_that_all_differ_by_the_same_amount_are_not_called_significant():
    """Two seeds each 0.8 points apart (a fixed-threshold method that never engaged, differing by a few test
    examples) make t infinite; that is not evidence of a difference."""
    result = paired_test([0.332, 0.434], [0.324, 0.426])
    assert result.p is None and result.test.startswith("not tested") and result.mean_diff == pytest.approx(0.008)
    assert verdict(result.mean_diff, None) == "not tested"


def test_findings_open_the_report_and_are_printed(synthetic, token_runs, tmp_path):
    """The leader and the verdicts, from the same numbers as the leaderboard and comparisons tables."""
    printed = []
    render_report([synthetic], tmp_path / "r", echo=printed.append)
    md = _md(tmp_path / "r" / "index.md")
    findings = md[md.index("## Findings"):md.index("## Runs")]
    # fixmatch: acc + 0.1 + 0.005 * seed over the 4 seeds: mean 0.7025 + 0.1075, +10.75 points over supervised
    trec = "trec · 10 labels/class: fixmatch leads, accuracy 0.8100 over 4 seeds; better than supervised: fixmatch +10.7 points (paired tests, Holm)."
    assert f"- {trec}" in findings and f"  {trec}" in printed
    assert f"<ul><li>{html.escape(trec)}</li></ul>" in (tmp_path / "r" / "index.html").read_text()  # a list in HTML too
    assert md.index("## Findings") < md.index("## Leaderboard")
    assert "grid file" not in findings  # none in these runs directories
    (synthetic / "mine-0a1b2c3d.toml").write_text("# testbed grid mine.toml --out runs\nseeds = [0, 1, 2, 3]\n")
    render_report([synthetic], tmp_path / "r")
    md = _md(tmp_path / "r" / "index.md")
    findings = md[md.index("## Findings"):md.index("## Runs")]
    assert "grid file mine-0a1b2c3d.toml" in findings and "```toml\n# testbed grid mine.toml --out runs" in findings
    render_report([token_runs], tmp_path / "t")
    md = _md(tmp_path / "t" / "index.md")
    # entity F1 (not token accuracy, where pseudolabel leads): fixmatch 0.50 + 0.013 * seed, seeds 0-2; pseudolabel
    # 0.41 + 0.016 * seed against supervised's 0.40 + 0.01 * seed differs by a steady 1.6 points on average
    assert ("- conll2003 · 50 labeled sentences: fixmatch leads, entity F1 0.5130 over 3 seeds; better than supervised: "
            "fixmatch +10.3, pseudolabel +1.6 points (paired tests, Holm).") in md


def test_findings_say_when_nothing_differs(tmp_path):
    out = tmp_path / "runs"
    for seed, acc in enumerate((0.70, 0.72, 0.68)):
        fake_run(out, f"a{seed:011x}", "supervised", seed, acc)
        fake_run(out, f"b{seed:011x}", "pseudolabel", seed, acc + (0.01, -0.01, 0.004)[seed])
    render_report([out], tmp_path / "r")
    md = _md(tmp_path / "r" / "index.md")
    # pseudolabel: 0.70 + 0.004 / 3 on average, with differences of +1, -1 and +0.4 points: no detectable difference
    assert "- trec · 10 labels/class: pseudolabel leads, accuracy 0.7013 over 3 seeds; none detectably differs from supervised" in md


def test_findings_rank_the_cells_across_groups(tmp_path):
    out = tmp_path / "runs"
    means = {"trec": {"supervised": 0.70, "fixmatch": 0.80, "pseudolabel": 0.75}, "sst2": {"supervised": 0.60, "fixmatch": 0.65, "pseudolabel": 0.65}}
    n = 0
    for dataset, cells in means.items():
        for method, mean in cells.items():
            for seed, offset in enumerate((0.01, -0.01, 0.0)):
                fake_run(out, f"{n:012x}", method, seed, mean + offset, dataset=dataset)
                n += 1
    render_report([out], tmp_path / "r")
    md = _md(tmp_path / "r" / "index.md")
    # ranks: trec fixmatch 1, pseudolabel 2, supervised 3; sst2 fixmatch and pseudolabel tie at 1.5, supervised 3
    assert "- Across the 2 groups, mean rank (1 = best): fixmatch 1.25, pseudolabel 1.75, supervised 3.00." in md


def test_a_key_added_later_is_its_default_in_older_runs_configs(tmp_path):
    """Runs from before augmentation.labeled and dataset.label existed ran as their defaults: they
    are the same cell as new runs that leave them at the defaults, and only the varied value names a cell."""
    out = tmp_path / "runs"
    for seed, acc in enumerate((0.70, 0.72, 0.68)):
        fake_run(out, f"a{seed:011x}", "supervised", seed, acc)  # an older run: neither key in config.json
        fake_run(out, f"b{seed:011x}", "supervised", seed, acc + 0.01)
        fake_run(out, f"c{seed:011x}", "supervised", seed, acc + 0.02)
        for prefix, labeled in (("b", {"name": "identity"}), ("c", {"name": "mention_replace", "p": 0.3})):
            path = out / f"{prefix}{seed:011x}" / "config.json"
            config = json.loads(path.read_text())
            config["dataset"]["label"], config["augmentation"] = "", {"labeled": labeled}
            path.write_text(json.dumps(config))
    from testbed.report import load_report_table

    frame, keys = load_report_table([out])
    assert keys == ["augmentation.labeled.name"]  # not dataset.label, nor the older runs' missing keys
    cells = frame.groupby("cell").run_id.apply(lambda ids: sorted(i[0] for i in ids)).to_dict()
    assert cells == {"augmentation.labeled=identity": ["a"] * 3 + ["b"] * 3, "augmentation.labeled=mention_replace": ["c"] * 3}
    # a composition's steps name a cell by their names and options, not as JSON
    for run, second in (("c00000000000", '{"name": "mention_replace", "p": 0.3}'), ("c00000000001", '{"name": "segment_shuffle"}')):
        path = out / run / "config.json"
        path.write_text(path.read_text().replace('{"name": "mention_replace", "p": 0.3}',
                                                 f'{{"name": "one_of", "choices": [{{"name": "identity"}}, {second}]}}'))
    frame, keys = load_report_table([out])
    assert {"augmentation.labeled=one_of, augmentation.labeled.choices=[identity, mention_replace(p=0.3)]",
            "augmentation.labeled=one_of, augmentation.labeled.choices=[identity, segment_shuffle]"} <= set(frame.cell)
