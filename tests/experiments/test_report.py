"""Sweep report formatting: spreads over seeds, single values, unfinished runs (no MLflow needed)."""

import csv
import statistics

import pytest

from bertpipe.experiments.report import SweepRuns, summarize, write_sweep_report


def _rows():
    return [{"variant": "a", "seed": 1, "run_id": "r1", "status": "FINISHED", "metrics": {"final_mlm_loss": 5.0, "ff_accuracy": 0.7}},
            {"variant": "a", "seed": 2, "run_id": "r2", "status": "FINISHED", "metrics": {"final_mlm_loss": 4.0, "ff_accuracy": 0.8}},
            {"variant": "b", "seed": 1, "run_id": "r3", "status": "FINISHED", "metrics": {"final_mlm_loss": 6.0, "ff_accuracy": 0.6}},
            {"variant": "b", "seed": 2, "run_id": "r4", "status": "RUNNING", "metrics": {}}]


def test_summary_means_and_sample_std_and_a_single_value_has_no_spread():
    s = {e["variant"]: e for e in summarize(_rows(), ["final_mlm_loss", "ff_accuracy"])}
    assert s["a"]["ff_accuracy"] == (statistics.mean([0.7, 0.8]), statistics.stdev([0.7, 0.8]))
    assert s["b"]["ff_accuracy"] == (0.6, None)


def test_report_marks_unfinished_runs_and_omits_spread_of_one(tmp_path):
    data = SweepRuns("exp", "sweep1", "demo", "", _rows(), {r["run_id"]: [] for r in _rows()}, {})
    paths = write_sweep_report(data, tmp_path)
    md = paths["markdown"].read_text()
    assert "| a | 1,2 | 4.500 ± 0.707 | 0.750 ± 0.071 |" in md
    assert "| b | 1,2 (2: RUNNING) | 6.000 | 0.600 |" in md
    summary = {r["variant"]: r for r in csv.DictReader(open(paths["summary"]))}
    assert summary["b"]["ff_accuracy_std"] == "" and float(summary["a"]["ff_accuracy_std"]) > 0
    assert paths["metrics_plot"].stat().st_size > 5_000


def test_scores_against_pretraining_steps_show_their_spread_over_seeds(tmp_path):
    progress = {"r1": {"ff_accuracy": [(2, 0.6), (4, 0.7)]}, "r2": {"ff_accuracy": [(2, 0.8), (4, 0.8)]},
                "r3": {"ff_accuracy": [(2, 0.5), (4, 0.6)]}}
    data = SweepRuns("exp", "sweep1", "demo", "", _rows(), {r["run_id"]: [] for r in _rows()}, progress)
    paths = write_sweep_report(data, tmp_path)
    md = paths["markdown"].read_text()
    assert "| variant | step 2 | step 4 |" in md
    assert f"| a | 0.700 ± {statistics.stdev([0.6, 0.8]):.3f} | 0.750 ± {statistics.stdev([0.7, 0.8]):.3f} |" in md
    assert "| b | 0.500 | 0.600 |" in md  # one seed: no spread
    assert paths["progress_plot"].stat().st_size > 5_000


def _sweep_rows():
    """Three seeds per variant; "b" sits 0.1 above "a" on every seed (a distinguishable gain),
    "c" 0.01 above or below (noise); "d" ran other seeds."""
    a = {1: 0.60, 2: 0.70, 3: 0.65}
    rows = [{"variant": "a", "seed": s, "run_id": f"a{s}", "status": "FINISHED", "metrics": {"ff_accuracy": x}} for s, x in a.items()]
    rows += [{"variant": "b", "seed": s, "run_id": f"b{s}", "status": "FINISHED", "metrics": {"ff_accuracy": x + 0.1 + 0.002 * s}}
             for s, x in a.items()]
    rows += [{"variant": "c", "seed": s, "run_id": f"c{s}", "status": "FINISHED", "metrics": {"ff_accuracy": x + (0.01, -0.01, 0.015)[s - 1]}}
             for s, x in a.items()]
    rows += [{"variant": "d", "seed": s, "run_id": f"d{s}", "status": "FINISHED", "metrics": {"ff_accuracy": x}}
             for s, x in ((4, 0.80), (5, 0.82))]
    return rows


def test_differences_from_the_baseline_pair_by_seed_else_welch():
    from bertpipe.experiments.report import differences
    from bertpipe.experiments.stats import t_quantile

    diffs = differences(_sweep_rows(), ["ff_accuracy"], "a")
    assert list(diffs) == ["b", "c", "d"]
    b, c, d = (diffs[v]["ff_accuracy"] for v in "bcd")
    # b: per-seed differences 0.102, 0.104, 0.106 → mean 0.104, sd 0.002, df 2
    assert b.method == "paired t" and b.diff == pytest.approx(0.104)
    assert b.high - b.diff == pytest.approx(t_quantile(0.975, 2) * 0.002 / 3 ** 0.5)
    assert b.distinguishable is True and c.distinguishable is False
    # d ran seeds 4, 5: Welch between [0.80, 0.82] and [0.60, 0.70, 0.65]
    va, vd = statistics.variance([0.60, 0.70, 0.65]) / 3, statistics.variance([0.80, 0.82]) / 2
    assert d.method == "Welch t" and d.df == pytest.approx((va + vd) ** 2 / (va**2 / 2 + vd**2 / 1))


def test_report_shows_each_difference_with_its_interval_and_marks_the_noise(tmp_path):
    data = SweepRuns("exp", "sweep1", "demo", "", _sweep_rows(), {}, {}, baseline="c")
    paths = write_sweep_report(data, tmp_path)
    md = paths["markdown"].read_text()
    assert "## Differences from `c`" in md and "| variant − c | method | ff_accuracy |" in md
    rows = {r["variant"]: r for r in csv.DictReader(open(paths["differences"]))}
    assert set(rows) == {"a", "b", "d"} and all(r["baseline"] == "c" for r in rows.values())
    assert rows["b"]["distinguishable"] == "true" and rows["a"]["distinguishable"] == "false"
    assert rows["d"]["method"] == "Welch t" and rows["b"]["method"] == "paired t"
    line = next(x for x in md.splitlines() if x.startswith("| a | paired t, n=3 |"))
    assert line.endswith(" n.d. |") and "**" not in line
    assert next(x for x in md.splitlines() if x.startswith("| b | paired t")).count("**") == 2
    assert "curves.png" not in md and "curves_plot" not in paths  # no run has a curve


def test_a_variant_with_one_seed_gets_no_interval(tmp_path):
    data = SweepRuns("exp", "sweep1", "demo", "", _rows(), {r["run_id"]: [] for r in _rows()}, {})
    md = write_sweep_report(data, tmp_path)["markdown"].read_text()
    assert "| b | one seed: no interval | +1.500 (one seed: no interval) | −0.150 (one seed: no interval) |" in md


def test_progress_differences_per_step(tmp_path):
    rows = _sweep_rows()[:6]
    progress = {r["run_id"]: {"ff_accuracy": [(2, r["metrics"]["ff_accuracy"] - 0.1), (4, r["metrics"]["ff_accuracy"])]}
                for r in rows}
    md = write_sweep_report(SweepRuns("exp", "s", "demo", "", rows, {}, progress), tmp_path)["markdown"].read_text()
    assert "| variant − a | method | step 2 | step 4 |" in md
    assert "| b | paired t, n=3 | **+0.104 [" in md


def test_tables_rebuild_from_the_exported_runs_csv(tmp_path):
    from bertpipe.experiments.report import report_from_csv, rows_from_csv

    rows = _sweep_rows()
    first = write_sweep_report(SweepRuns("exp", "s", "demo", "", rows, {}, {}), tmp_path / "mlflow")
    back = rows_from_csv(first["runs"])
    assert back == rows
    again = report_from_csv(first["runs"], tmp_path / "csv", name="demo")
    assert again["differences"].read_text() == first["differences"].read_text()
    assert again["summary"].read_text() == first["summary"].read_text()


def test_a_known_sweep_from_csv_takes_its_baseline_and_a_named_one_wins(tmp_path):
    from bertpipe.experiments.report import report_from_csv

    csv_path = tmp_path / "nsp-runs.csv"
    with open(csv_path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["variant", "seed", "run_id", "ff_accuracy"])
        for v, xs in (("MLM+NSP", (0.7, 0.72)), ("No NSP", (0.6, 0.61)), ("LTR & No NSP", (0.65, 0.69))):
            w.writerows([v, s, f"{v}{s}", x] for s, x in zip((1, 2), xs, strict=True))
    md = report_from_csv(csv_path, tmp_path / "a")["markdown"].read_text()
    assert "## Differences from `MLM+NSP`" in md and "Table 5" in md  # the nsp sweep's first variant and paper
    md = report_from_csv(csv_path, tmp_path / "b", baseline="No NSP")["markdown"].read_text()
    assert "## Differences from `No NSP`" in md


def test_cli_rebuilds_a_shipped_sweeps_tables_from_its_csv(tmp_path, capsys):
    from bertpipe.cli.main import main
    from tests.conftest import ROOT

    runs = ROOT / "docs" / "results" / "fusion-runs.csv"
    main(["report", "--from-csv", str(runs), "--out", str(tmp_path)])
    assert "## Differences from `embedding_fusion=sum`" in capsys.readouterr().out
    raw = list(csv.DictReader(open(runs)))
    by = {(r["variant"], r["seed"]): float(r["final_mlm_loss"]) for r in raw}
    per_seed = [by[("embedding_fusion=concat", s)] - by[("embedding_fusion=sum", s)] for s in "123"]
    row = next(r for r in csv.DictReader(open(tmp_path / "differences.csv")) if r["metric"] == "final_mlm_loss")
    assert float(row["difference"]) == pytest.approx(statistics.mean(per_seed)) and row["method"] == "paired t"


def _examples_doc(correct: list[int]) -> dict:
    import numpy as np

    return {"task": "classify", "eval_sha256": "same-file", "recipes": {"accuracy": ("mean", ("correct",))},
            "per_seed": [{"seed": 1, "columns": {"correct": np.array(correct)}}]}


def test_one_seed_a_side_is_bootstrapped_over_the_test_examples_when_they_were_logged(tmp_path):
    from bertpipe.experiments.stats import compare_examples

    a, b = _examples_doc([1, 0, 1, 1, 0, 1, 1, 1] * 25), _examples_doc([1, 0, 0, 1, 0, 1, 0, 1] * 25)
    rows = [{"variant": "a", "seed": 1, "run_id": "r1", "status": "FINISHED", "metrics": {"ff_accuracy": 0.75},
             "examples": {"ff": a}},
            {"variant": "b", "seed": 1, "run_id": "r2", "status": "FINISHED", "metrics": {"ff_accuracy": 0.5}, "examples": {"ff": b}}]
    data = SweepRuns("exp", "sweep1", "demo", "", rows, {"r1": [], "r2": []}, {})
    md = write_sweep_report(data, tmp_path)["markdown"].read_text()
    expected = compare_examples(b, a, "accuracy")
    assert expected.method == "paired bootstrap" and expected.distinguishable  # 50 of 200 examples flipped
    line = next(x for x in md.splitlines() if x.startswith("| b | paired bootstrap"))
    assert line.startswith("| b | paired bootstrap, 200 examples |") and f"{expected.low:+.3f}".replace("-", "−") in line
