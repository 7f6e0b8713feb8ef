"""Plots and tables of training runs (matplotlib, headless).

``plot_training_curves`` turns a run's ``metrics.jsonl`` into PNGs: loss (train and held-out
MLM/NSP) and accuracy against steps. Used by the flows to attach curves to MLflow runs and
by the benchmark notes.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read_metrics(path: Path) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {"train": [], "eval": []}
    for line in Path(path).read_text().splitlines():
        rec = json.loads(line)
        if rec.get("split") in out:
            out[rec["split"]].append(rec)
    return out


def plot_training_curves(metrics: Path, out_dir: Path) -> list[Path]:
    """loss.png and accuracy.png from a pretraining run's metrics.jsonl."""
    recs = read_metrics(metrics)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, keys, ylabel in (("loss", ("mlm_loss", "nsp_loss"), "cross-entropy"), ("accuracy", ("mlm_acc", "nsp_acc"), "accuracy")):
        fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
        for split, style in (("train", "-"), ("eval", "o--")):
            for key in keys:
                pts = [(r["step"], r[key]) for r in recs[split] if r.get(key) is not None]
                if pts:
                    ax.plot(*zip(*pts, strict=True), style, label=f"{split} {key}", markersize=4)
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        path = out_dir / f"{name}.png"
        fig.savefig(path)
        plt.close(fig)
        paths.append(path)
    return paths


METRICS = ("final_mlm_loss", "final_mlm_acc", "final_nsp_loss", "final_nsp_acc", "parameters")


def compare_runs(client, run_ids: list[str], param_keys: list[str]) -> list[dict]:
    """One row per pipeline run, read back from MLflow: the swept params and final metrics."""
    rows = []
    for rid in run_ids:
        run = client.get_run(rid)
        row = {"run_id": rid, "run_name": run.info.run_name}
        row |= {k: run.data.params.get(k) for k in param_keys}
        row |= {m: run.data.metrics.get(m) for m in METRICS}
        rows.append(row)
    return rows


def write_comparison(rows: list[dict], param_keys: list[str], out_dir: Path) -> dict[str, Path]:
    """comparison.md, comparison.csv and comparison.png (held-out MLM loss per variant)."""
    import csv

    out_dir.mkdir(parents=True, exist_ok=True)
    cols = ["run_id", *param_keys, *METRICS]
    paths = {"csv": out_dir / "comparison.csv", "markdown": out_dir / "comparison.md", "plot": out_dir / "comparison.png"}
    with open(paths["csv"], "w", newline="") as f:
        w = csv.DictWriter(f, cols, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)

    def fmt(v) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in cols) + " |" for r in rows]
    paths["markdown"].write_text("# Sweep comparison\n\n" + "\n".join(lines) + "\n")
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    labels = ["\n".join(f"{k.split('.')[-1]}={r.get(k)}" for k in param_keys) for r in rows]
    ax.bar(range(len(rows)), [r.get("final_mlm_loss") or 0 for r in rows])
    ax.set_xticks(range(len(rows)), labels, fontsize=7)
    ax.set_ylabel("held-out MLM loss")
    fig.tight_layout()
    fig.savefig(paths["plot"])
    plt.close(fig)
    return paths
