"""A sweep's report: tables, plots and markdown, from its runs as read back from MLflow.

``sweep_report`` rebuilds a sweep's comparison from MLflow alone (nothing from the cache
folders; ``bertpipe.tracking.sweeps`` finds the runs by their tags): final held-out MLM/NSP
figures, parameter counts and downstream scores are grouped per variant into mean ± std over
seeds, and written as
``report.md``, ``runs.csv``, ``summary.csv``, ``metrics.png`` (each metric per variant with
error bars) and ``curves.png`` (held-out MLM loss against steps, all runs overlaid; a run
served from cache is drawn from the run that trained it). Trade-off: std is the sample
standard deviation over however many seeds finished; with n=1 it is reported as 0.

Every other variant is compared with the sweep's baseline (the spec's ``baseline``, else its
first variant): the difference of means with a 95% interval over seeds, paired by seed when
both ran the same seeds, else Welch (``bertpipe.experiments.stats``), in ``differences.csv``
and a table that marks an interval including zero "n.d." (not distinguishable).
``rows_from_csv`` reads a report's ``runs.csv`` back, so the tables (not the curves, which
only MLflow holds) can be rebuilt without the tracking store: ``bertpipe report --from-csv``.
"""

from __future__ import annotations

import csv
import statistics
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from bertpipe.experiments.stats import Difference, compare_examples, compare_seeds, format_difference  # noqa: E402
from bertpipe.tracking.sweeps import SweepRuns, collect_sweep, metric_names  # noqa: E402

LOWER_IS_BETTER = ("final_mlm_loss",)
NO_DIFFERENCE = ("parameters",)  # fixed by the architecture, the same for every seed: nothing to test


def summarize(rows: list[dict[str, Any]], names: list[str]) -> list[dict[str, Any]]:
    """Per variant (first-seen order): its seeds, the runs not finished, and per metric (mean, std) over the seeds that have it."""
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        entry = out.setdefault(r["variant"], {"variant": r["variant"], "seeds": [], "unfinished": []})
        entry["seeds"].append(r["seed"])
        if r.get("status", "FINISHED") != "FINISHED":
            entry["unfinished"].append(f"{r['seed']}: {r['status']}")
    for v, entry in out.items():
        for m in names:
            vals = [r["metrics"][m] for r in rows if r["variant"] == v and m in r["metrics"]]
            if vals:  # one value has no spread: std None, shown without ±
                entry[m] = (statistics.mean(vals), statistics.stdev(vals) if len(vals) > 1 else None)
    return list(out.values())


def _fmt(m: str, mean: float, std: float | None) -> str:
    if m == "parameters":
        return f"{mean / 1e6:.3f}M"
    return f"{mean:.3f}" if std is None else f"{mean:.3f} ± {std:.3f}"


def baseline_of(data: SweepRuns) -> str:
    """The variant every other is compared with: the sweep's named baseline if it ran, else the first variant."""
    variants = list(dict.fromkeys(r["variant"] for r in data.rows))
    return data.baseline if data.baseline in variants else variants[0]


def _by_seed(rows: list[dict[str, Any]], variant: str, metric: str) -> dict[int, float]:
    return {r["seed"]: r["metrics"][metric] for r in rows if r["variant"] == variant and metric in r["metrics"]}


def differences(rows: list[dict[str, Any]], names: list[str], baseline: str) -> dict[str, dict[str, Difference]]:
    """variant → metric → variant − baseline over the seeds that have the metric (every
    variant but the baseline, first-seen order; a metric either side lacks is left out)."""
    out: dict[str, dict[str, Difference]] = {}
    for v in dict.fromkeys(r["variant"] for r in rows):
        if v == baseline:
            continue
        out[v] = {}
        for m in names:
            mine, base = _by_seed(rows, v, m), _by_seed(rows, baseline, m)
            if mine and base and m not in NO_DIFFERENCE:
                d = compare_seeds(mine, base)
                if d.low is None:  # one seed a side: bootstrap over the test examples where both have them
                    d = _over_examples(rows, v, baseline, m) or d
                out[v][m] = d
    return out


def _over_examples(rows: list[dict[str, Any]], variant: str, baseline: str, metric: str) -> Difference | None:
    """A downstream metric (``<task>_<metric>``) compared over the test examples of the two
    variants' single fine-tunings (``examples`` of their rows); None when either lacks them."""
    def examples(v: str) -> dict[str, Any]:
        return next((r.get("examples", {}) for r in rows if r["variant"] == v), {})

    mine, base = examples(variant), examples(baseline)
    for task in mine.keys() & base.keys():
        if metric.startswith(task + "_"):
            return compare_examples(mine[task], base[task], metric[len(task) + 1:])
    return None


def _digits(rows: list[dict[str, Any]], metric: str) -> int:
    """Decimals for a metric's differences: 2 for scores in percent (SQuAD), else 3, as in the table."""
    return 2 if any(abs(r["metrics"].get(metric, 0.0)) >= 10 for r in rows) else 3


def difference_table(diffs: dict[str, dict[str, Difference]], names: list[str], baseline: str,
                     digits: dict[str, int] | None = None) -> list[str]:
    """Markdown rows: one per variant, its method (the usual one; a cell computed otherwise says
    so) and each metric's difference with its interval."""
    shown = [m for m in names if any(m in d for d in diffs.values())]
    lines = ["| variant − " + baseline + " | method | " + " | ".join(shown) + " |", "|" + "---|" * (len(shown) + 2)]
    for v, by_metric in diffs.items():
        labels = [d.method_label() for d in by_metric.values()]
        usual = max(labels, key=labels.count) if labels else "–"
        cells = []
        for m in shown:
            d = by_metric.get(m)
            cell = format_difference(d, (digits or {}).get(m, 3)) if d else "–"
            cells.append(cell + (f" ({d.method_label()})" if d and d.method_label() != usual else ""))
        lines.append(f"| {v} | {usual} | " + " | ".join(cells) + " |")
    return lines


def _write_differences(diffs: dict[str, dict[str, Difference]], baseline: str, path: Path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["variant", "baseline", "metric", "difference", "ci95_low", "ci95_high", "method", "n_variant",
                    "n_baseline", "df", "distinguishable"])
        for v, by_metric in diffs.items():
            for m, d in by_metric.items():
                w.writerow([v, baseline, m, d.diff, "" if d.low is None else d.low, "" if d.high is None else d.high,
                            d.method, d.n_variant, d.n_baseline, "" if d.df is None else d.df,
                            "" if d.distinguishable is None else str(d.distinguishable).lower()])


def _seeds_cell(s: dict[str, Any]) -> str:
    """A summary entry's seeds; a run not (yet) finished is marked, e.g. ``1,2 (2: RUNNING)``."""
    return ",".join(map(str, s["seeds"])) + (f" ({'; '.join(s['unfinished'])})" if s["unfinished"] else "")


def write_sweep_report(data: SweepRuns, out_dir: Path, paper: str = "", command: str = "") -> dict[str, Path]:
    """report.md, runs.csv, summary.csv, differences.csv, metrics.png and curves.png (when
    any run has a held-out curve) in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    names = metric_names(data.rows)
    summary = summarize(data.rows, names)
    baseline = baseline_of(data)
    diffs = differences(data.rows, names, baseline)
    has_curves = any(data.curves.get(r["run_id"]) for r in data.rows)
    paths = {k: out_dir / f for k, f in (("markdown", "report.md"), ("runs", "runs.csv"), ("summary", "summary.csv"),
                                         ("differences", "differences.csv"), ("metrics_plot", "metrics.png"),
                                         ("curves_plot", "curves.png")) if k != "curves_plot" or has_curves}
    with open(paths["runs"], "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["variant", "seed", "run_id", *names])
        for r in data.rows:
            w.writerow([r["variant"], r["seed"], r["run_id"], *(r["metrics"].get(m, "") for m in names)])
    with open(paths["summary"], "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["variant", "n", *(c for m in names for c in (f"{m}_mean", f"{m}_std"))])
        for s in summary:
            w.writerow([s["variant"], len(s["seeds"]), *(x for m in names for x in s.get(m, ("", "")))])
    _write_differences(diffs, baseline, paths["differences"])
    _plot_metrics(summary, names, paths["metrics_plot"])
    if has_curves:
        _plot_curves(data, paths["curves_plot"])
    progress = _progress_table(data)
    if progress:
        paths["progress_plot"] = out_dir / "progress.png"
        _plot_progress(progress, paths["progress_plot"])
    head = ["variant", "seeds", *names]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in summary:
        cells = [s["variant"], _seeds_cell(s)]
        cells += [_fmt(m, *s[m]) if m in s else "–" for m in names]
        lines.append("| " + " | ".join(cells) + " |")
    source = f"MLflow experiment `{data.experiment}`, run `{data.sweep_run}`" if data.sweep_run else "from its runs.csv"
    md = [f"# Sweep `{data.name}` ({source})", ""]
    if data.description:
        md += [data.description, ""]
    md += ["Mean ± sample std over seeds. `final_*`: held-out pretraining metrics at the last step; "
           "other columns: downstream eval scores (task_metric); `parameters`: the model's, embeddings included.", "",
           *lines, ""]
    if diffs:
        digits = {m: _digits(data.rows, m) for m in names}
        md += [f"## Differences from `{baseline}`", "", DIFFERENCES_NOTE, "",
               *difference_table(diffs, names, baseline, digits), ""]
    md += ["![metrics](metrics.png)", ""] + (["![held-out MLM loss](curves.png)", ""] if has_curves else [])
    if progress:
        md += ["## Downstream score against pretraining steps", "", "Mean ± sample std over seeds.", ""]
        for m, by_variant in progress.items():
            steps = sorted({st for pts in by_variant.values() for st in pts})
            md += [f"`{m}`", "", "| variant | " + " | ".join(f"step {st}" for st in steps) + " |",
                   "|" + "---|" * (len(steps) + 1)]
            md += ["| " + v + " | " + " | ".join(_fmt(m, *pts[st]) if st in pts else "–" for st in steps) + " |"
                   for v, pts in by_variant.items()]
            md.append("")
            step_diffs = _progress_differences(data, m, baseline)
            if step_diffs:
                md += [f"Difference from `{baseline}`, 95% interval:", "",
                       *difference_table(step_diffs, [f"step {st}" for st in steps], baseline,
                                         dict.fromkeys((f"step {st}" for st in steps), _digits(data.rows, m))), ""]
        md += ["![downstream score against pretraining steps](progress.png)", ""]
    if paper:
        md += ["## The paper", "", paper, ""]
    if command:
        md += ["Regenerate: `" + command + "`", ""]
    paths["markdown"].write_text("\n".join(md))
    return paths


DIFFERENCES_NOTE = ("Variant mean − baseline mean with its 95% confidence interval over seeds: a paired t interval "
                    "when both ran the same seeds (a seed fixes the initialization and data order of every variant), "
                    "else Welch's t interval. **Bold**: the interval excludes 0. n.d.: not distinguishable, the "
                    "interval includes 0. With 2–3 seeds the t quantile is 12.7 (df 1) or 4.3 (df 2), so only "
                    "large or very consistent differences are distinguishable.")


def _progress_differences(data: SweepRuns, metric: str, baseline: str) -> dict[str, dict[str, Difference]]:
    """variant → "step N" → difference from the baseline at that pretraining step (paired by seed where possible)."""
    rows = []
    for r in data.rows:  # one pseudo-row per step, its score as metric "step N"
        pts = data.progress.get(r["run_id"], {}).get(metric, [])
        if pts:
            rows.append({"variant": r["variant"], "seed": r["seed"], "metrics": {f"step {st}": v for st, v in pts}})
    if not rows or baseline not in {r["variant"] for r in rows}:
        return {}
    steps = sorted({k for r in rows for k in r["metrics"]}, key=lambda k: int(k.split()[1]))
    return differences(rows, steps, baseline)


def rows_from_csv(path: Path) -> list[dict[str, Any]]:
    """A report's ``runs.csv`` (variant, seed, run_id, one column per metric; empty = absent) as report rows."""
    rows = []
    with open(path, newline="") as f:
        for rec in csv.DictReader(f):
            metrics = {k: float(v) for k, v in rec.items() if k not in ("variant", "seed", "run_id") and v not in ("", None)}
            rows.append({"variant": rec["variant"], "seed": int(rec["seed"]), "run_id": rec["run_id"],
                         "status": "FINISHED", "metrics": metrics})
    if not rows:
        raise ValueError(f"{path} holds no runs")
    return rows


def report_from_csv(path: Path, out_dir: Path, name: str | None = None, baseline: str | None = None) -> dict[str, Path]:
    """The report of a sweep from its exported ``runs.csv`` alone (tables, differences, metrics
    plot; no curves). ``name`` defaults to the file's ``<sweep>-runs.csv`` prefix; a known
    sweep's baseline and paper quote are used unless ``baseline`` is given."""
    from bertpipe.experiments.sweep import load_sweep, sweep_names

    path = Path(path)
    name = name or path.stem.removesuffix("-runs").removesuffix("runs").rstrip("-") or "sweep"
    spec = load_sweep(name) if name in sweep_names() else None
    data = SweepRuns("", "", name, spec.description if spec else "", rows_from_csv(path), {}, {},
                     baseline or (baseline_name(spec) if spec else ""))
    return write_sweep_report(data, Path(out_dir), spec.paper if spec else "", f"bertpipe report --from-csv {path}")


def baseline_name(spec) -> str:
    """A sweep spec's baseline variant: the one it names, else its first."""
    return spec.baseline or spec.expand()[0].name()


def _panels(n: int):
    """A figure with ``n`` small panels, three per row; returns (figure, the n axes)."""
    cols = min(3, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), dpi=100, squeeze=False)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    return fig, list(axes.flat)[:n]


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _plot_metrics(summary: list[dict[str, Any]], names: list[str], path: Path) -> None:
    shown = [m for m in names if m != "parameters"] or names
    fig, axes = _panels(len(shown))
    labels = [s["variant"] for s in summary]
    for ax, m in zip(axes, shown, strict=True):
        means = [s[m][0] if m in s else float("nan") for s in summary]
        stds = [(s[m][1] or 0.0) if m in s else 0.0 for s in summary]
        ax.errorbar(range(len(summary)), means, yerr=stds, fmt="o", capsize=4)
        ax.set_xticks(range(len(summary)), labels, rotation=25, ha="right", fontsize=7)
        ax.set_title(m + (" (lower is better)" if m in LOWER_IS_BETTER else ""), fontsize=9)
        ax.grid(alpha=0.3)
    _save(fig, path)


def _plot_curves(data: SweepRuns, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    variants = list(dict.fromkeys(r["variant"] for r in data.rows))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for r in data.rows:
        pts = data.curves.get(r["run_id"]) or []
        if pts:
            i = variants.index(r["variant"])
            first = r is next(x for x in data.rows if x["variant"] == r["variant"])
            ax.plot(*zip(*pts, strict=True), "o-", color=colors[i % len(colors)], alpha=0.7, markersize=3,
                    label=r["variant"] if first else None)
    ax.set_xlabel("step")
    ax.set_ylabel("held-out MLM loss")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


Progress = dict[str, dict[str, dict[int, tuple[float, float | None]]]]  # metric → variant → step → (mean, std)


def _progress_table(data: SweepRuns) -> Progress:
    """metric → variant → step → (mean, sample std or None for one seed), for scores logged at several steps."""
    acc: dict[str, dict[str, dict[int, list[float]]]] = {}
    for r in data.rows:
        for m, pts in data.progress.get(r["run_id"], {}).items():
            for st, val in pts:
                acc.setdefault(m, {}).setdefault(r["variant"], {}).setdefault(st, []).append(val)
    return {m: {v: {st: (statistics.mean(vals), statistics.stdev(vals) if len(vals) > 1 else None)
                    for st, vals in sorted(pts.items())} for v, pts in bv.items()}
            for m, bv in acc.items()}


def _plot_progress(progress: Progress, path: Path) -> None:
    fig, axes = _panels(len(progress))
    for ax, (m, by_variant) in zip(axes, progress.items(), strict=True):
        for v, pts in by_variant.items():
            means, stds = [mu for mu, _ in pts.values()], [sd or 0.0 for _, sd in pts.values()]
            ax.errorbar(list(pts), means, yerr=stds, fmt="o-", label=v, markersize=4, capsize=3)
        ax.set_title(m, fontsize=9)
        ax.set_xlabel("pretraining step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    _save(fig, path)


def sweep_report(client, experiment: str, out_dir: Path, sweep_run: str | None = None, paper: str | None = None,
                 log_to_mlflow: bool = True) -> dict[str, Path]:
    """Collect a sweep from MLflow, write the report, and log it as artifacts of the sweep run.
    ``paper`` defaults to the named sweep's own when it is a known one."""
    from bertpipe.experiments.sweep import load_sweep, sweep_names

    data = collect_sweep(client, experiment, sweep_run)
    known = data.name in sweep_names()
    if paper is None:
        paper = load_sweep(data.name).paper if known else ""
    if not data.baseline and known:  # a sweep run logged before baselines were recorded
        data.baseline = baseline_name(load_sweep(data.name))
    cmd = f"bertpipe report {experiment} --run {data.sweep_run}"
    paths = write_sweep_report(data, Path(out_dir), paper, cmd)
    if log_to_mlflow:
        for p in paths.values():
            client.log_artifact(data.sweep_run, str(p), "report")
    return paths


def sweep_markdown(client, experiment: str, out_dir: Path, sweep_run: str, paper: str) -> str:
    """``sweep_report``, logged to the sweep run; returns the markdown."""
    return sweep_report(client, experiment, out_dir, sweep_run, paper)["markdown"].read_text()
