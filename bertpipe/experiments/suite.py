"""The evaluation suite over the shared task sets: four downstream tasks, one per type.

Fine Food reviews (single-sentence classification), Bible paraphrase (pairs), WNUT-16 NER
(tagging) and WNUT-16 QA (extractive QA), at the fine-tuning defaults; presets and sweeps
that evaluate use the same files with their own learning rates (``tiny-shared``). Relative
paths resolve against the base directory (``bertpipe.core.settings``), so the default
``../shared/data`` is the data folder beside the project checkout.
"""

from __future__ import annotations

from bertpipe.tasks.config import EvalTask, FinetuneConfig

SHARED = "../shared/data"

# name → (task type, train file, eval file, config changes from the defaults)
TASKS = {
    "finefoods": ("classify", "classify/finefoods/train.tsv", "classify/finefoods/test.tsv", {}),
    "bible-paraphrase": ("pair", "pairs/bible-paraphrase/train.tsv", "pairs/bible-paraphrase/dev.tsv", {}),
    "wnut16-ner": ("tag", "ner/wnut16/train.conll", "ner/wnut16/dev.conll", {}),
    "wnut16-qa": ("qa", "qa/wnut16-qa/train.json", "qa/wnut16-qa/dev.json", {"max_seq_length": 384}),  # questions + contexts
}


def shared_suite(root: str = SHARED) -> list[EvalTask]:
    """The four tasks with their files under ``root``."""
    return [EvalTask(name=name, train=f"{root}/{train}", eval=f"{root}/{ev}", config=FinetuneConfig(task=task, **changes))
            for name, (task, train, ev, changes) in TASKS.items()]
