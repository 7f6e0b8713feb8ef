"""The evaluation suite over the shared task sets: four downstream tasks, one per type.

Fine Food reviews (single-sentence classification), Bible paraphrase (pairs), WNUT-16 NER
(tagging) and WNUT-16 QA (extractive QA), at the fine-tuning defaults; presets and sweeps
that evaluate use the same files with their own learning rates (``tiny-shared``). Relative
paths resolve against the base directory (``bertpipe.core.settings``), so the default
``../shared/data`` is the data folder beside the project checkout.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bertpipe.tasks.config import EvalTask, FinetuneConfig

SHARED = "../shared/data"


@dataclass(frozen=True)
class SuiteTask:
    """One task of the suite: its type, its files (relative to the shared data folder) and how
    its fine-tuning differs from ``FinetuneConfig``'s defaults."""

    name: str
    task: str  # FinetuneConfig.task: classify, pair, tag or qa
    train: str
    eval: str
    changes: dict[str, Any] = field(default_factory=dict)

    def eval_task(self, root: str = SHARED, **changes: Any) -> EvalTask:
        return EvalTask(name=self.name, train=f"{root}/{self.train}", eval=f"{root}/{self.eval}",
                        config=FinetuneConfig(task=self.task, **(self.changes | changes)))


TASKS = {t.name: t for t in (
    SuiteTask("finefoods", "classify", "classify/finefoods/train.tsv", "classify/finefoods/test.tsv"),
    SuiteTask("bible-paraphrase", "pair", "pairs/bible-paraphrase/train.tsv", "pairs/bible-paraphrase/dev.tsv"),
    SuiteTask("wnut16-ner", "tag", "ner/wnut16/train.conll", "ner/wnut16/dev.conll"),
    SuiteTask("wnut16-qa", "qa", "qa/wnut16-qa/train.json", "qa/wnut16-qa/dev.json",
              {"max_seq_length": 384}),  # questions + contexts
)}


def shared_suite(root: str = SHARED) -> list[EvalTask]:
    """The four tasks with their files under ``root``."""
    return [t.eval_task(root) for t in TASKS.values()]
