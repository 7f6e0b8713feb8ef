"""Confidence intervals for a variant against its baseline: the t quantile and the paired and
Welch intervals against textbook values, hand computations and scipy; pairing by seed; the
"not distinguishable" marking; the bootstrap over examples is seeded and covers a known difference."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest

from bertpipe.experiments.stats import (
    NO_INTERVAL,
    Difference,
    Recipe,
    bootstrap_difference,
    compare_seeds,
    format_difference,
    paired_t,
    t_quantile,
    welch_from_summary,
    welch_t,
)


@pytest.mark.parametrize("df,expected", [(1, 12.706), (2, 4.303), (3, 3.182), (4, 2.776), (10, 2.228), (30, 2.042)])
def test_t_quantile_matches_the_printed_table(df, expected):
    assert t_quantile(0.975, df) == pytest.approx(expected, abs=5e-4)
    assert t_quantile(0.025, df) == pytest.approx(-expected, abs=5e-4)


def test_paired_interval_by_hand():
    # per-seed differences 1, 2, 3: mean 2, sd 1, se 1/sqrt(3), df 2, t 4.3027
    d = paired_t([11.0, 22.0, 33.0], [10.0, 20.0, 30.0])
    half = 4.302653 / math.sqrt(3)
    assert (d.diff, d.df, d.method) == (pytest.approx(2.0), 2.0, "paired t")
    assert d.low == pytest.approx(2 - half, abs=1e-5) and d.high == pytest.approx(2 + half, abs=1e-5)
    assert d.distinguishable is False  # 2 ± 2.48: three consistent seeds are not enough at this spread


def test_welch_interval_by_hand():
    v, b = [0.80, 0.81, 0.83], [0.70, 0.68, 0.72, 0.75]
    a, c = statistics.variance(v) / 3, statistics.variance(b) / 4
    df = (a + c) ** 2 / (a**2 / 2 + c**2 / 3)
    d = welch_t(v, b)
    assert d.df == pytest.approx(df) and d.method == "Welch t" and (d.n_variant, d.n_baseline) == (3, 4)
    half = d.high - d.diff
    assert d.diff - d.low == pytest.approx(half)
    assert half == pytest.approx(t_quantile(0.975, df) * math.sqrt(a + c))


def test_intervals_match_scipy():
    scipy_stats = pytest.importorskip("scipy.stats")
    v, b = [0.745, 0.721, 0.760], [0.730, 0.729, 0.740]
    ci = scipy_stats.ttest_rel(v, b).confidence_interval(0.95)
    d = paired_t(v, b)
    assert (d.low, d.high) == (pytest.approx(ci.low), pytest.approx(ci.high))
    v2, b2 = [5.48, 5.37, 5.41], [5.38, 5.36, 5.21, 5.30]
    ci = scipy_stats.ttest_ind(v2, b2, equal_var=False).confidence_interval(0.95)
    d = welch_t(v2, b2)
    assert (d.low, d.high) == (pytest.approx(ci.low), pytest.approx(ci.high))


def test_welch_from_a_summary_equals_welch_from_the_values():
    v, b = [1.0, 2.0, 4.0], [0.5, 0.7]
    raw = welch_t(v, b)
    summ = welch_from_summary(statistics.mean(v), statistics.stdev(v), 3, statistics.mean(b), statistics.stdev(b), 2)
    assert (summ.low, summ.high, summ.df) == (pytest.approx(raw.low), pytest.approx(raw.high), pytest.approx(raw.df))


def test_same_seeds_are_paired_by_seed_value_not_by_order():
    # a strong seed effect shared by both sides: paired sees a consistent +0.01..0.02, Welch sees noise
    base = {1: 0.50, 2: 0.70, 3: 0.90}
    variant = {3: 0.915, 1: 0.51, 2: 0.72}  # other insertion order: pairing must go by seed
    d = compare_seeds(variant, base)
    assert d.method == "paired t" and d.df == 2.0
    assert d.diff == pytest.approx(0.015) and d.distinguishable is True
    assert d == paired_t([0.51, 0.72, 0.915], [0.50, 0.70, 0.90])
    w = welch_t(list(variant.values()), list(base.values()))
    assert w.distinguishable is False  # the same numbers unpaired: inside the noise


def test_other_seeds_get_welch_and_one_seed_gets_no_interval():
    d = compare_seeds({1: 0.8, 2: 0.82, 4: 0.81}, {1: 0.7, 2: 0.72, 3: 0.69})
    assert d.method == "Welch t" and d.method_label() == "Welch t, 3 vs 3"
    one = compare_seeds({1: 0.8}, {1: 0.7, 2: 0.72})
    assert (one.method, one.low, one.high, one.distinguishable) == (NO_INTERVAL, None, None, None)
    assert one.diff == pytest.approx(0.09)
    assert "one seed: no interval" in format_difference(one)


def test_an_interval_including_zero_is_marked_not_distinguishable():
    inside = Difference(0.01, -0.02, 0.04, "paired t", 3, 3, 2.0)
    outside = Difference(-0.11, -0.2, -0.02, "paired t", 3, 3, 2.0)
    touching = Difference(0.05, 0.0, 0.1, "paired t", 3, 3, 2.0)
    assert (inside.verdict, outside.verdict, touching.verdict) == ("not distinguishable", "distinguishable",
                                                                   "not distinguishable")
    assert format_difference(inside) == "+0.010 [−0.020, +0.040] n.d."
    assert format_difference(outside) == "**−0.110 [−0.200, −0.020]**"
    assert format_difference(Difference(-0.0001, -0.3, 0.2, "Welch t", 3, 3, 3.1), 2) == "0.00 [−0.30, +0.20] n.d."


def _flipped(n: int, base_correct: int, flips: int) -> tuple[dict, dict]:
    """Baseline right on the first ``base_correct`` of ``n`` examples; the variant also on the next ``flips``."""
    base = np.zeros(n)
    base[:base_correct] = 1
    var = base.copy()
    var[base_correct:base_correct + flips] = 1
    return {"correct": var}, {"correct": base}


def test_paired_bootstrap_is_seeded_and_covers_a_known_difference():
    var, base = _flipped(1000, 700, 100)  # exactly +0.100 accuracy
    acc = Recipe("mean", ("correct",))
    d = bootstrap_difference(var, base, acc, np.random.default_rng(7), resamples=4000)
    assert d.diff == pytest.approx(0.1) and d.low < 0.1 < d.high and d.distinguishable is True
    # the count of flipped examples is binomial: sd of the difference sqrt(0.1 * 0.9 / 1000) = 0.0095
    assert d.high - d.low == pytest.approx(2 * 1.96 * math.sqrt(0.09 / 1000), rel=0.15)
    assert d.method == "paired bootstrap" and d.n_variant == 1000


def test_bootstrap_is_deterministic_given_its_generator_seed():
    rng = np.random.default_rng(5)
    score = Recipe("mean", ("f1",))  # continuous per-example scores (SQuAD F1): quantiles move with the draws
    var, base = {"f1": rng.random(300) * 100}, {"f1": rng.random(300) * 100}
    runs = [bootstrap_difference(var, base, score, np.random.default_rng(s), resamples=2000) for s in (7, 7, 8)]
    assert runs[0] == runs[1] and (runs[2].low, runs[2].high) != (runs[0].low, runs[0].high)
    assert bootstrap_difference(var, base, score, resamples=2000) == bootstrap_difference(var, base, score, resamples=2000)


def test_unpaired_bootstrap_is_wider_when_examples_share_their_difficulty():
    var, base = _flipped(1000, 700, 30)
    acc = Recipe("mean", ("correct",))
    paired = bootstrap_difference(var, base, acc, np.random.default_rng(0), resamples=2000)
    unpaired = bootstrap_difference(var, base, acc, np.random.default_rng(0), paired=False, resamples=2000)
    assert paired.distinguishable is True and unpaired.distinguishable is False
    assert unpaired.method == "bootstrap" and unpaired.high - unpaired.low > 3 * (paired.high - paired.low)


def test_bootstrap_interval_covers_the_true_difference_about_95_percent_of_the_time():
    rng = np.random.default_rng(123)
    acc, hits, trials = Recipe("mean", ("correct",)), 0, 120
    for _ in range(trials):  # independent test sets drawn with true accuracies 0.75 vs 0.70
        u = rng.random(400)
        d = bootstrap_difference({"correct": (u < 0.75).astype(float)}, {"correct": (u < 0.70).astype(float)}, acc,
                                 rng, resamples=1000)
        hits += d.low <= 0.05 <= d.high
    assert 0.85 <= hits / trials <= 1.0


def test_f1_recipe_is_micro_f1_of_the_resampled_sentences():
    cols = {"correct": np.array([1, 0, 2]), "n_true": np.array([2, 1, 2]), "n_pred": np.array([1, 1, 3])}
    f1 = Recipe("f1", ("correct", "n_true", "n_pred"))
    assert f1.evaluate(cols) == pytest.approx(2 * 3 / (5 + 5))
    assert f1.evaluate(cols, np.array([[0, 0, 1], [2, 2, 2]])) == pytest.approx([2 * 2 / (5 + 3), 2 * 6 / (6 + 9)])
    assert f1.evaluate({k: np.zeros(2) for k in cols}) == 0.0  # no entity anywhere: F1 0, as entity_scores
