"""Is a difference distinguishable from noise? Confidence intervals for variant − baseline.

Two sources of spread, two methods:

- **Over seeds** (``compare_seeds``): a t interval for the difference of means. When both
  sides ran the same seed values (a sweep trains every variant with the same pretraining
  seeds, so a seed fixes the initialization and the data order for all of them) the runs are
  paired by seed and the interval is the one-sample t interval of the per-seed differences
  (df = n − 1). Otherwise Welch's interval, which does not assume equal variances, with the
  Welch–Satterthwaite df. With fewer than two values on a side there is no interval.
- **Over test examples** (``bootstrap_difference``): for one seed per side, the percentile
  bootstrap of the metric's difference, resampling the evaluation examples with a seeded
  numpy Generator; paired (the same resampled examples for both) when both models were
  scored on the same examples. It measures test-set sampling noise only, not seed noise, so
  it is narrower than a seed interval would be: a single-seed verdict is weaker evidence.

A difference is "not distinguishable" when its 95% interval includes zero. Trade-off: with 2–3
seeds the t quantile is large (12.7 at df 1, 4.3 at df 2), so intervals are honest but wide.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

LEVEL = 0.95
# Bootstrap resamples: the 2.5th/97.5th percentiles of 10,000 resamples move by well under a
# tenth of the interval's width between generator seeds; more buys little.
RESAMPLES = 10_000
BOOTSTRAP_SEED = 0  # the default Generator seed, so a report is the same on every rebuild
NO_INTERVAL = "one seed: no interval"


@dataclass(frozen=True)
class Difference:
    """variant − baseline, with its interval (``low``/``high`` None when there is none)."""

    diff: float
    low: float | None
    high: float | None
    method: str  # "paired t", "Welch t", "paired bootstrap", "bootstrap" or NO_INTERVAL
    n_variant: int  # seeds (t) or examples (bootstrap) on each side
    n_baseline: int
    df: float | None = None  # t methods only

    @property
    def distinguishable(self) -> bool | None:
        """True when the interval excludes zero, False when it includes it, None without one."""
        if self.low is None or self.high is None:
            return None
        return not (self.low <= 0.0 <= self.high)

    @property
    def verdict(self) -> str:
        return {True: "distinguishable", False: "not distinguishable", None: "no interval"}[self.distinguishable]

    def method_label(self) -> str:
        """The method with its sample sizes, e.g. ``paired t, n=3`` or ``Welch t, 3 vs 2``."""
        if self.method == "paired t":
            return f"paired t, n={self.n_variant}"
        if self.method == "Welch t":
            return f"Welch t, {self.n_variant} vs {self.n_baseline}"
        if self.method.endswith("bootstrap"):
            return f"{self.method}, {self.n_variant} examples"
        return self.method


# ---------------------------------------------------------------- the t distribution


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (fractional df allowed)."""
    from scipy import stats  # installed with mlflow; imported here so configs load without it

    if not 0.0 < p < 1.0 or df <= 0:
        raise ValueError(f"t_quantile needs 0 < p < 1 and df > 0, got p={p}, df={df}")
    return float(stats.t.ppf(p, df))


# ---------------------------------------------------------------- intervals over seeds


def paired_t(variant: Sequence[float], baseline: Sequence[float], level: float = LEVEL) -> Difference:
    """The t interval of the mean of the per-pair differences ``variant[i] − baseline[i]``."""
    if len(variant) != len(baseline) or len(variant) < 2:
        raise ValueError(f"paired_t needs two or more pairs, got {len(variant)} and {len(baseline)} values")
    d = [v - b for v, b in zip(variant, baseline, strict=True)]
    n, mean = len(d), statistics.fmean(d)
    half = t_quantile(0.5 + level / 2.0, n - 1) * statistics.stdev(d) / math.sqrt(n)
    return Difference(mean, mean - half, mean + half, "paired t", n, n, float(n - 1))


def welch_t(variant: Sequence[float], baseline: Sequence[float], level: float = LEVEL) -> Difference:
    """Welch's interval for mean(variant) − mean(baseline), from the raw values."""
    if len(variant) < 2 or len(baseline) < 2:
        raise ValueError(f"welch_t needs two or more values per side, got {len(variant)} and {len(baseline)}")
    return welch_from_summary(statistics.fmean(variant), statistics.stdev(variant), len(variant),
                              statistics.fmean(baseline), statistics.stdev(baseline), len(baseline), level)


def welch_from_summary(mean_v: float, sd_v: float, n_v: int, mean_b: float, sd_b: float, n_b: int,
                       level: float = LEVEL) -> Difference:
    """Welch's interval from each side's mean, sample std and count (for tables that keep only those)."""
    if n_v < 2 or n_b < 2:
        raise ValueError(f"Welch needs two or more values per side, got {n_v} and {n_b}")
    a, b = sd_v**2 / n_v, sd_b**2 / n_b
    diff = mean_v - mean_b
    if a + b == 0.0:  # no spread on either side: the difference is exact
        return Difference(diff, diff, diff, "Welch t", n_v, n_b, math.inf)
    df = (a + b) ** 2 / (a**2 / (n_v - 1) + b**2 / (n_b - 1))  # Welch–Satterthwaite
    half = t_quantile(0.5 + level / 2.0, df) * math.sqrt(a + b)
    return Difference(diff, diff - half, diff + half, "Welch t", n_v, n_b, df)


def compare_seeds(variant: Mapping[int, float], baseline: Mapping[int, float], level: float = LEVEL) -> Difference:
    """variant − baseline over seeds (seed → value): paired by seed when both ran the same
    seeds, else Welch; with one value on a side, the difference without an interval."""
    diff = statistics.fmean(variant.values()) - statistics.fmean(baseline.values())
    if len(variant) >= 2 and set(variant) == set(baseline):
        seeds = sorted(variant)
        return paired_t([variant[s] for s in seeds], [baseline[s] for s in seeds], level)
    if len(variant) >= 2 and len(baseline) >= 2:
        return welch_t(list(variant.values()), list(baseline.values()), level)
    return Difference(diff, None, None, NO_INTERVAL, len(variant), len(baseline))


# ---------------------------------------------------------------- intervals over test examples


@dataclass(frozen=True)
class Recipe:
    """How a metric follows from per-example columns: ``mean`` of one column (accuracy, SQuAD
    EM/F1), ``ratio`` Σa / Σb of two (token accuracy, entity precision/recall), or ``f1`` =
    2·Σcorrect / (Σtrue + Σpredicted) of three (micro entity F1); a zero denominator gives 0.
    The fine-tuning task specs name theirs (``TaskSpec.recipes``)."""

    kind: str  # "mean", "ratio" or "f1"
    columns: tuple[str, ...]

    def evaluate(self, cols: Mapping[str, np.ndarray], idx: np.ndarray | None = None) -> np.ndarray | float:
        """The metric over the examples ``idx`` (rows of a (resamples, n) index matrix), or all of them."""
        take = (lambda c: np.asarray(cols[c], dtype=np.float64)[idx]) if idx is not None else \
            (lambda c: np.asarray(cols[c], dtype=np.float64))
        if self.kind == "mean":
            return take(self.columns[0]).mean(axis=-1)
        if self.kind in ("ratio", "f1"):
            sums = [take(c).sum(axis=-1) for c in self.columns]
            num, den = (sums[0], sums[1]) if self.kind == "ratio" else (2.0 * sums[0], sums[1] + sums[2])
            return np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)
        raise ValueError(f"unknown recipe kind {self.kind!r}")


def bootstrap_difference(variant: Mapping[str, np.ndarray], baseline: Mapping[str, np.ndarray], recipe: Recipe,
                         rng: np.random.Generator | None = None, paired: bool = True, resamples: int = RESAMPLES,
                         level: float = LEVEL) -> Difference:
    """Percentile bootstrap interval of recipe(variant) − recipe(baseline) over test examples.

    ``paired``: both sides hold the same examples in the same order, and each resample takes
    the same examples from both (what makes it sensitive: per-example difficulty cancels);
    otherwise each side is resampled on its own. ``rng`` defaults to
    ``np.random.default_rng(BOOTSTRAP_SEED)``."""
    rng = rng if rng is not None else np.random.default_rng(BOOTSTRAP_SEED)
    n_v, n_b = (len(np.asarray(side[recipe.columns[0]])) for side in (variant, baseline))
    if paired and n_v != n_b:
        raise ValueError(f"a paired bootstrap needs the same examples on both sides, got {n_v} and {n_b}")
    point = float(recipe.evaluate(variant)) - float(recipe.evaluate(baseline))
    diffs = []
    for start in range(0, resamples, 1000):  # chunks bound the (chunk, n) index matrix
        k = min(1000, resamples - start)
        idx_v = rng.integers(0, n_v, size=(k, n_v))
        idx_b = idx_v if paired else rng.integers(0, n_b, size=(k, n_b))
        diffs.append(recipe.evaluate(variant, idx_v) - recipe.evaluate(baseline, idx_b))
    low, high = np.quantile(np.concatenate(diffs), [0.5 - level / 2.0, 0.5 + level / 2.0])
    return Difference(point, float(low), float(high), "paired bootstrap" if paired else "bootstrap", n_v, n_b)


def compare_examples(variant: Mapping, baseline: Mapping, metric: str, rng: np.random.Generator | None = None,
                     resamples: int = RESAMPLES, level: float = LEVEL) -> Difference | None:
    """Bootstrap of ``metric`` between two fine-tunings' per-example results (``read_examples``
    of each output folder), first seed of each: paired when both scored the same eval file
    (same hash and example count), else resampled independently. None when either lacks the
    metric's recipe (MCC, macro F1 and Pearson are not sums over examples)."""
    if metric not in variant["recipes"] or metric not in baseline["recipes"]:
        return None
    recipe = Recipe(variant["recipes"][metric][0], tuple(variant["recipes"][metric][1]))
    cols_v, cols_b = variant["per_seed"][0]["columns"], baseline["per_seed"][0]["columns"]
    same = variant["eval_sha256"] == baseline["eval_sha256"] and \
        len(cols_v[recipe.columns[0]]) == len(cols_b[recipe.columns[0]])
    return bootstrap_difference(cols_v, cols_b, recipe, rng, paired=same, resamples=resamples, level=level)


# ---------------------------------------------------------------- formatting


def format_difference(d: Difference, digits: int = 3) -> str:
    """``+0.013 [−0.021, +0.047] n.d.``: the difference, its interval, and "n.d." when the
    interval includes zero; a distinguishable difference in bold; without an interval the
    difference and why: ``+0.013 (one seed: no interval)``."""
    def f(x: float) -> str:
        text = f"{x:+.{digits}f}"
        return f"{0:.{digits}f}" if float(text) == 0 else text.replace("-", "−")  # no "−0.000"

    if d.distinguishable is None:
        return f"{f(d.diff)} ({d.method})"
    cell = f"{f(d.diff)} [{f(d.low)}, {f(d.high)}]"
    return f"**{cell}**" if d.distinguishable else f"{cell} n.d."
