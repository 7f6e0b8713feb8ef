"""A task's training text without its labels: the corpus of task-adaptive pretraining (TAPT).

Gururangan et al. (2020, "Don't Stop Pretraining") continue masked-language-model
pretraining on the unlabelled text of a task's own training set before fine-tuning on it.
``task_corpus`` writes that text as a JSONL corpus that ingest reads like any other
(``{"text": ...}`` per line, one document per example): a sentence or review as it is, a
pair's two sentences one after the other, a tagged sentence's tokens joined by spaces, and a
QA set's contexts (each once) followed by their questions. Only the training file is read;
the evaluation file never reaches pretraining. The file is named by the training file's
content hash and written atomically, once, so it is a stable input for ingest's fingerprint.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from bertpipe.core.fingerprint import hash_file
from bertpipe.core.settings import resolve
from bertpipe.core.stagedir import commit_file
from bertpipe.tasks.config import EvalTask
from bertpipe.tasks.data import QAExample, TagExample, TextExample
from bertpipe.tasks.specs import spec_for

VERSION = 1  # of the text layout above; part of the file name


def task_documents(task: EvalTask) -> list[str]:
    """The training examples of ``task`` as documents, labels dropped, in file order."""
    examples = spec_for(task.config).read(task.config, resolve(task.train))
    docs: list[str] = []
    contexts: dict[str, list[str]] = {}
    for ex in examples:
        if isinstance(ex, TextExample):
            docs.append(ex.text_a if ex.text_b is None else f"{ex.text_a}\n{ex.text_b}")
        elif isinstance(ex, TagExample):
            docs.append(" ".join(ex.tokens))
        elif isinstance(ex, QAExample):
            contexts.setdefault(ex.context, []).append(ex.question)
    docs += [context + "\n" + "\n".join(questions) for context, questions in contexts.items()]
    return [d for d in docs if d.strip()]


def task_corpus(task: EvalTask, out_dir: Path) -> Path:
    """``out_dir/<name>-<hash>.jsonl`` with ``task``'s training text (written once)."""
    digest = hash_file(resolve(task.train))[:16]
    out = Path(out_dir) / f"{task.name}-{task.config.task}-v{VERSION}-{digest}.jsonl"
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            for doc in task_documents(task):
                f.write(json.dumps({"text": doc}, ensure_ascii=False) + "\n")
        commit_file(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out
