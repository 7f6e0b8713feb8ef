"""Sweep report formatting: spreads over seeds, single values, unfinished runs (no MLflow needed)."""

import csv
import statistics

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
