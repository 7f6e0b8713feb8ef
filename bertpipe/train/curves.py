"""A pretraining run's curves: its ``metrics.jsonl`` read back, and plotted (matplotlib, headless).

``plot_training_curves`` writes ``loss.png`` (train and held-out MLM/NSP cross-entropy) and
``accuracy.png`` against steps; the pretrain stage puts them in its output's ``plots/``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

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


def last_records(path: Path) -> dict[str, dict[str, Any] | None]:
    """The last train and eval records of a run (None where it has none)."""
    recs = read_metrics(path)
    return {split: (recs[split][-1] if recs[split] else None) for split in ("train", "eval")}
