"""Live progress on the Prefect flow-run page: a progress artifact per stage, and for training a
markdown artifact with the latest held-out figures and a link to the MLflow run.

Data stages report units done (``run_stage``'s ``on_unit``); pretraining reports steps from its
training records (``on_metrics``), throttled to whole percents so a long run makes a few hundred
API calls, not one per step. The terminal keeps its own progress bars and logs.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from prefect.artifacts import create_markdown_artifact, create_progress_artifact, update_progress_artifact


class StageProgress:
    """A stage's progress artifact, keyed ``<stage>-progress`` (one per stage of each flow run;
    Prefect keys take lowercase letters, digits and dashes only)."""

    def __init__(self, stage: str) -> None:
        self.stage, self.shown = re.sub(r"[^a-z0-9-]+", "-", stage.lower()), 0.0
        self.id = create_progress_artifact(0.0, key=f"{self.stage}-progress", description=f"{stage}: share done")

    def show(self, percent: float) -> None:
        if int(percent) > int(self.shown) or percent >= 100:
            self.shown = percent
            update_progress_artifact(self.id, min(100.0, percent))

    def units(self, done: int, total: int) -> None:
        self.show(100.0 * done / max(total, 1))

    def training(self, steps: int | None, link: str) -> Callable[[dict[str, Any]], None]:
        """``on_metrics`` for a training of ``steps`` steps (None: each record's ``steps``, as
        fine-tuning's over all its seeds): percent of steps, held-out figures with ``link`` (its MLflow run)."""

        def on_metrics(rec: dict[str, Any]) -> None:
            total = steps or rec.get("steps") or 1
            if rec.get("split") == "train":
                self.show(100.0 * rec["step"] / total)
            elif rec.get("split") == "eval":
                rows = "\n".join(f"| {k} | {v:.4f} |" for k, v in rec.items() if isinstance(v, float))
                create_markdown_artifact(f"### Held-out figures at step {rec['step']} of {total}\n\n| metric | value |\n"
                                         f"|---|---|\n{rows}\n\nMLflow run: {link or '-'}", key=f"{self.stage}-held-out",
                                         description=f"{self.stage}: latest held-out figures")

        return on_metrics
