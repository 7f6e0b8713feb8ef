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
