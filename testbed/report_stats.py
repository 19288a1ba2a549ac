"""The statistics of ``testbed report``, on plain arrays so they can be tested on known answers:
seed summaries with t confidence intervals, paired tests by seed with Holm's correction,
average ranks with the Friedman test and Nemenyi's critical difference, calibration error; and how
the report writes them (``format_*``). Public through ``testbed`` for report sections, built-in or
not. scipy is imported inside the functions: ``import testbed`` stays fast for every command."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

ALPHA = 0.05
CI_NEEDS = "CI needs ≥ 2 seeds"
PAIRED_RULE = ("Runs are paired by seed. With 2–5 pairs: paired t-test (Wilcoxon's signed-rank test cannot reach "
               "p < 0.05 with fewer than 6 pairs); with 6 or more: Wilcoxon signed-rank test (no normality "
               "assumption). p-values are Holm-corrected within each table; the verdict is taken at α = 0.05 on "
               "the corrected p. Effect size: Cohen's d_z = mean difference / standard deviation of the differences.")
WILCOXON_FROM = 6


@dataclass(frozen=True)
class Summary:
    n: int
    mean: float
    std: float | None  # sample standard deviation (ddof 1); None for one value
    ci_low: float | None  # 95% t-interval of the mean over seeds; None below 2 values
    ci_high: float | None


def summarize(values, confidence: float = 0.95) -> Summary:
    """Mean, standard deviation and the t confidence interval of the mean of ``values`` (NaN dropped)."""
    from scipy import stats

    x = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    if len(x) == 0:
        return Summary(0, math.nan, None, None, None)
    if len(x) == 1:
        return Summary(1, float(x[0]), None, None, None)
    mean, std = float(x.mean()), float(x.std(ddof=1))
    if std == 0:
        return Summary(len(x), mean, 0.0, mean, mean)
    low, high = stats.t.interval(confidence, len(x) - 1, loc=mean, scale=std / math.sqrt(len(x)))
    return Summary(len(x), mean, std, float(low), float(high))


@dataclass(frozen=True)
class Paired:
    n: int
    mean_diff: float  # mean of a - b
    ci_low: float | None
    ci_high: float | None
    test: str  # "paired t", "Wilcoxon signed-rank", "none (identical)", or "not tested"
    p: float | None
    effect: float | None  # Cohen's d_z


def paired_test(a, b) -> Paired:
    """Compare paired samples ``a`` and ``b`` (same seeds, same order) with the rule of PAIRED_RULE."""
    from scipy import stats

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    d = a - b
    n = len(d)
    if n < 2:
        return Paired(n, float(d.mean()) if n else math.nan, None, None, "not tested (needs ≥ 2 paired seeds)", None, None)
    s = summarize(d)
    sd = float(d.std(ddof=1))
    effect = (float(d.mean()) / sd) if sd > 0 else (0.0 if d.mean() == 0 else math.copysign(math.inf, d.mean()))
    if np.all(d == 0):
        return Paired(n, 0.0, 0.0, 0.0, "none (identical)", 1.0, 0.0)
    if n < WILCOXON_FROM:
        if sd == 0:  # every pair differs by the same amount: t is undefined, and with few seeds it is chance, not proof
            return Paired(n, float(d.mean()), s.ci_low, s.ci_high, "not tested (every pair differs by the same amount)", None, effect)
        test = "paired t"
        p = float(stats.ttest_rel(a, b).pvalue)
    else:
        test = "Wilcoxon signed-rank"
        p = float(stats.wilcoxon(d).pvalue)
    return Paired(n, float(d.mean()), s.ci_low, s.ci_high, test, p, effect)


def holm(pvalues) -> list[float | None]:
    """Holm's step-down adjusted p-values (None entries stay None and do not count)."""
    indexed = [(p, i) for i, p in enumerate(pvalues) if p is not None]
    m = len(indexed)
    out: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, (p, i) in enumerate(sorted(indexed)):
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out


def verdict(mean_diff: float, p_adjusted: float | None, alpha: float = ALPHA) -> str:
    if p_adjusted is None:
        return "not tested"
    if p_adjusted < alpha and mean_diff != 0:
        return "better" if mean_diff > 0 else "worse"
    return "no detectable difference"


@dataclass(frozen=True)
class Ranking:
    names: list[str]
    average_ranks: list[float]  # 1 = best (highest score)
    blocks: int
    statistic: float | None  # Friedman chi-square; None below 3 methods or 2 blocks
    p: float | None
    cd: float | None  # Nemenyi critical difference at alpha


def friedman(table, alpha: float = ALPHA) -> Ranking:
    """``table``: 2-D array-like, rows = blocks (datasets), columns = methods, higher = better;
    a DataFrame keeps its column names. Average ranks, Friedman test, Nemenyi CD."""
    from scipy import stats

    names = [str(c) for c in getattr(table, "columns", range(np.shape(table)[1]))]
    x = np.asarray(table, dtype=float)
    n, k = x.shape
    ranks = np.vstack([stats.rankdata(-row) for row in x]) if n else np.zeros((0, k))
    average = ranks.mean(0).tolist() if n else [math.nan] * k
    statistic = p = None
    if k >= 3 and n >= 2:
        if np.all(x == x[:, :1]):  # every block ties all methods
            statistic, p = 0.0, 1.0
        else:
            result = stats.friedmanchisquare(*x.T)
            statistic, p = float(result.statistic), float(result.pvalue)
    cd = None
    if k >= 2 and n >= 1:
        q = stats.studentized_range.ppf(1 - alpha, k, np.inf) / math.sqrt(2)
        cd = float(q * math.sqrt(k * (k + 1) / (6.0 * n)))
    return Ranking(names, [float(r) for r in average], n, statistic, p, cd)


@dataclass(frozen=True)
class Effect:
    term: str  # a factor, "A × B" for a two-way interaction, or the block
    df: int
    sum_sq: float
    share: float  # η² = SS_term / SS_total: the share of the runs' variance the term explains
    f: float | None  # F = MS_term / MS_residual; None for the block and without residual degrees of freedom
    p: float | None


def factorial_anova(frame, factors: list[str], response: str, block: str | None = None) -> tuple[list[Effect], int] | str:
    """Which factors of a full factorial grid matter: a fixed-effects ANOVA of ``response`` on the
    main effects and two-way interactions of ``factors``, with ``block`` (the seed) as a block, from a
    DataFrame with one row per run. The residual is everything else (higher interactions, noise).
    Returns (effects, residual df), or why it cannot be computed: the design must be balanced (every
    combination of levels, blocks included, exactly once), so the sums of squares do not depend on
    the order of the terms. Sums of squares from cell means:
    SS_A = Σ_a n_a (ȳ_a − ȳ)², SS_AB = Σ_ab n_ab (ȳ_ab − ȳ_a − ȳ_b + ȳ)²."""
    from scipy import stats

    keys = [*factors, *([block] if block else [])]
    data = frame[keys + [response]].dropna(subset=[response])
    codes = {k: data[k].map(format_value) for k in keys}
    levels = {k: sorted(set(codes[k])) for k in keys}
    cells = math.prod(len(levels[k]) for k in keys)
    combos = set(zip(*(codes[k] for k in keys)))
    if len(data) != cells or len(combos) != cells:
        return (f"the design is not a complete grid ({len(data)} runs with a result for {cells} combinations of "
                f"{', '.join(keys)}): the analysis needs each combination exactly once")
    y = data[response].to_numpy(dtype=float)
    grand = y.mean()
    total = float(((y - grand) ** 2).sum())

    def main(k):
        means = data.groupby(codes[k])[response].transform("mean").to_numpy()
        return means - grand

    effects, explained, used = [], 0.0, 0
    terms = [(k,) for k in factors] + [(a, b) for i, a in enumerate(factors) for b in factors[i + 1:]]
    for term in terms + ([(block,)] if block else []):
        if len(term) == 1:
            deviation, df = main(term[0]), len(levels[term[0]]) - 1
        else:
            a, b = term
            cell = data.groupby([codes[a], codes[b]])[response].transform("mean").to_numpy()
            deviation, df = cell - main(a) - main(b) - grand, (len(levels[a]) - 1) * (len(levels[b]) - 1)
        sum_sq = float((deviation ** 2).sum())
        effects.append([" × ".join(term), df, sum_sq])
        explained += sum_sq
        used += df
    residual_df = len(y) - 1 - used
    residual = max(total - explained, 0.0)
    out = []
    for name, df, sum_sq in effects:
        f = p = None
        if name != block and residual_df > 0 and df > 0:
            f = (sum_sq / df) / (residual / residual_df) if residual > 0 else math.inf
            p = float(stats.f.sf(f, df, residual_df)) if residual > 0 else 0.0
        out.append(Effect(name, df, sum_sq, sum_sq / total if total else 0.0, f, p))
    return out, residual_df


def calibration(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """Expected calibration error with ``bins`` equal-width confidence bins, and per bin the mean
    confidence, the accuracy and the count (for a reliability diagram)."""
    confidence = probs.max(-1)
    correct = (probs.argmax(-1) == labels).astype(float)
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    count = np.bincount(which, minlength=bins).astype(float)
    conf = np.divide(np.bincount(which, confidence, bins), count, out=np.full(bins, np.nan), where=count > 0)
    acc = np.divide(np.bincount(which, correct, bins), count, out=np.full(bins, np.nan), where=count > 0)
    filled = count > 0
    ece = float(np.sum(count[filled] * np.abs(acc[filled] - conf[filled])) / max(count.sum(), 1))
    return ece, conf, acc, count


def per_class_f1(probs: np.ndarray, labels: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-class precision, recall and F1 of the argmax predictions."""
    predicted = probs.argmax(-1)
    tp = np.bincount(labels[predicted == labels], minlength=num_classes).astype(float)
    pred = np.bincount(predicted, minlength=num_classes).astype(float)
    gold = np.bincount(labels, minlength=num_classes).astype(float)
    precision = np.divide(tp, pred, out=np.zeros(num_classes), where=pred > 0)
    recall = np.divide(tp, gold, out=np.zeros(num_classes), where=gold > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(num_classes), where=(precision + recall) > 0)
    return precision, recall, f1


# --------------------------------------------------------------------------- how the report writes them


def format_number(x: float | None, spec: str = ".4f") -> str:
    """``x`` with ``spec``; "–" for None and NaN."""
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def format_mean_std(s: Summary) -> str:
    return f"{format_number(s.mean)} ± {format_number(s.std)}" if s.std is not None else f"{format_number(s.mean)} (1 seed)"


def format_ci(s: Summary, spec: str = ".4f") -> str:
    """The interval of a metric in [0, 1], clipped to that range (summary.csv keeps the raw bounds)."""
    if s.ci_low is None:
        return CI_NEEDS
    return f"[{format_number(max(0.0, s.ci_low), spec)}, {format_number(min(1.0, s.ci_high), spec)}]"


def format_p(p: float | None) -> str:
    if p is None:
        return "–"
    return "< 0.0001" if p < 1e-4 else f"{p:.4f}"


def format_effect(x: float | None) -> str:
    if x is None:
        return "–"
    return ("∞" if x > 0 else "−∞") if math.isinf(x) else f"{x:.2f}"


def format_value(value) -> str:
    """A config value as the command line writes it (strings bare); "–" for None and NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    from testbed.grid import show

    return show(value)
