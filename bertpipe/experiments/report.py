"""A sweep's report: tables, plots and markdown, from its runs as read back from MLflow.

``sweep_report`` rebuilds a sweep's comparison from MLflow alone (nothing from the cache
folders; ``bertpipe.tracking.sweeps`` finds the runs by their tags): final held-out MLM/NSP
figures, parameter counts and downstream scores are grouped per variant into mean ± std over
seeds, and written as
``report.md``, ``runs.csv``, ``summary.csv``, ``metrics.png`` (each metric per variant with
error bars) and ``curves.png`` (held-out MLM loss against steps, all runs overlaid; a run
served from cache is drawn from the run that trained it). Trade-off: std is the sample
standard deviation over however many seeds finished; with n=1 it is reported as 0.
"""

from __future__ import annotations

import csv
import statistics
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from bertpipe.tracking.sweeps import SweepRuns, collect_sweep, metric_names  # noqa: E402

LOWER_IS_BETTER = ("final_mlm_loss",)


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


def _seeds_cell(s: dict[str, Any]) -> str:
    """A summary entry's seeds; a run not (yet) finished is marked, e.g. ``1,2 (2: RUNNING)``."""
    return ",".join(map(str, s["seeds"])) + (f" ({'; '.join(s['unfinished'])})" if s["unfinished"] else "")


def write_sweep_report(data: SweepRuns, out_dir: Path, paper: str = "", command: str = "") -> dict[str, Path]:
    """report.md, runs.csv, summary.csv, metrics.png and curves.png in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    names = metric_names(data.rows)
    summary = summarize(data.rows, names)
    paths = {k: out_dir / f for k, f in (("markdown", "report.md"), ("runs", "runs.csv"), ("summary", "summary.csv"),
                                         ("metrics_plot", "metrics.png"), ("curves_plot", "curves.png"))}
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
    _plot_metrics(summary, names, paths["metrics_plot"])
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
    md = [f"# Sweep `{data.name}` (MLflow experiment `{data.experiment}`, run `{data.sweep_run}`)", ""]
    if data.description:
        md += [data.description, ""]
    md += ["Mean ± sample std over seeds. `final_*`: held-out pretraining metrics at the last step; "
           "other columns: downstream eval scores (task_metric); `parameters`: the model's, embeddings included.", "",
           *lines, "", "![metrics](metrics.png)", "", "![held-out MLM loss](curves.png)", ""]
    if progress:
        md += ["## Downstream score against pretraining steps", "", "Mean ± sample std over seeds.", ""]
        for m, by_variant in progress.items():
            steps = sorted({st for pts in by_variant.values() for st in pts})
            md += [f"`{m}`", "", "| variant | " + " | ".join(f"step {st}" for st in steps) + " |",
                   "|" + "---|" * (len(steps) + 1)]
            md += ["| " + v + " | " + " | ".join(_fmt(m, *pts[st]) if st in pts else "–" for st in steps) + " |"
                   for v, pts in by_variant.items()]
            md.append("")
        md += ["![downstream score against pretraining steps](progress.png)", ""]
    if paper:
        md += ["## The paper", "", paper, ""]
    if command:
        md += ["Regenerate: `" + command + "`", ""]
    paths["markdown"].write_text("\n".join(md))
    return paths


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
    if paper is None:
        paper = load_sweep(data.name).paper if data.name in sweep_names() else ""
    cmd = f"bertpipe report {experiment} --run {data.sweep_run}"
    paths = write_sweep_report(data, Path(out_dir), paper, cmd)
    if log_to_mlflow:
        for p in paths.values():
            client.log_artifact(data.sweep_run, str(p), "report")
    return paths


def sweep_markdown(client, experiment: str, out_dir: Path, sweep_run: str, paper: str) -> str:
    """``sweep_report``, logged to the sweep run; returns the markdown."""
    return sweep_report(client, experiment, out_dir, sweep_run, paper)["markdown"].read_text()
