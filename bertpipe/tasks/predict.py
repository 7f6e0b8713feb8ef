"""A fine-tuned model as a predictor: raw text in, the task's answer out.

``FineTuned.load(folder)`` reads a fine-tuning's output (``model.safetensors`` and
``head.json``, written by ``bertpipe.tasks.finetune``) together with the pretrained
checkpoint's ``config.json`` and ``vocab.txt`` (``bundle`` copies the four into one folder,
which is what the MLflow model holds), and ``predict(rows)`` answers a list of plain dicts:

- classify: ``{"text"}`` → ``{"label", "probability"}`` (or ``{"score"}`` for regression)
- pair: ``{"text", "text_pair"}`` → the same
- tag: ``{"text"}`` (words split on whitespace) → ``{"tags"}``, one tag per word, space-joined
- qa: ``{"question", "context"}`` → ``{"answer"}`` (empty when no span fits)

It encodes, runs and decodes with the very functions fine-tuning evaluated with (the task's
``TaskSpec``), so a served prediction is the one the metrics counted. Trade-off: rows are
encoded as one batch at the fine-tuning's ``max_seq_length``; for large offline jobs, write
a task file and use the evaluation path instead.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file

from bertpipe.tasks import data as taskdata
from bertpipe.tasks.config import FinetuneConfig
from bertpipe.tasks.finetune import build_model, load_tokenizer, predict
from bertpipe.tasks.specs import best_spans, decode_tags, spec_for

FILES_FROM_FINETUNE = ("model.safetensors", "head.json")
FILES_FROM_CHECKPOINT = ("config.json", "vocab.txt")
# Input columns of each task type (what ``predict`` reads from a row).
INPUTS = {"classify": ("text",), "pair": ("text", "text_pair"), "tag": ("text",), "qa": ("question", "context")}


def bundle(finetuned: str | Path, checkpoint: str | Path, out: str | Path) -> Path:
    """One folder with everything ``FineTuned.load`` needs: the fine-tuned weights and head,
    and the checkpoint's architecture and vocabulary (not its weights: the fine-tuned model
    holds the whole encoder)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name in FILES_FROM_FINETUNE:
        shutil.copy2(Path(finetuned) / name, out / name)
    for name in FILES_FROM_CHECKPOINT:
        shutil.copy2(Path(checkpoint) / name, out / name)
    return out


@dataclass
class FineTuned:
    """A fine-tuned task model, ready to answer rows of raw text (see the module docstring)."""

    cfg: FinetuneConfig
    labels: list[str] | None
    model: torch.nn.Module
    folder: Path

    @classmethod
    def load(cls, folder: str | Path) -> FineTuned:
        folder = Path(folder)
        head = json.loads((folder / "head.json").read_text())
        # the encoder comes from the fine-tuned weights, so build it at random and load them all
        cfg = FinetuneConfig.model_validate(head["config"]).model_copy(update={"init": "random", "device": "cpu"})
        model = build_model(cfg, folder, spec_for(cfg).n_outputs(head["labels"]), seed=0)
        model.load_state_dict(load_file(folder / "model.safetensors"))
        return cls(cfg=cfg, labels=head["labels"], model=model.eval(), folder=folder)

    @property
    def task(self) -> str:
        return self.cfg.task

    def predict(self, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """The task's answer for each row (keys: ``INPUTS[task]``)."""
        missing = {k for row in rows for k in INPUTS[self.task] if row.get(k) is None}
        if missing:
            raise ValueError(f"a {self.task} model reads {', '.join(INPUTS[self.task])}; rows lack {', '.join(sorted(missing))}")
        if not rows:
            return []
        spec, tok = spec_for(self.cfg), load_tokenizer(self.folder, self.cfg.cased)
        examples = self._examples(rows)
        arrays = spec.encode(self.cfg, tok, examples, self.labels)
        out = predict(self.cfg, self.model, arrays, torch.device("cpu"))
        if self.task == "qa":
            answers = best_spans(out, arrays, examples, self.cfg.max_answer_length)
            return [{"answer": answers.get(ex.qid, "")} for ex in examples]
        if self.task == "tag":
            return [{"tags": " ".join(tags)} for tags in decode_tags(out, arrays, examples, self.labels)]
        if self.labels is None:  # regression
            return [{"score": float(s)} for s in out.reshape(-1)]
        probs = torch.softmax(torch.as_tensor(out, dtype=torch.float32), -1).numpy()
        best = probs.argmax(-1)
        return [{"label": self.labels[int(k)], "probability": float(p[k])} for k, p in zip(best, probs, strict=True)]

    def _examples(self, rows: Sequence[dict[str, Any]]) -> list:
        """Rows as the task's example records, with placeholder labels (encoders need one)."""
        if self.task == "qa":
            return [taskdata.QAExample(qid=str(i), question=str(r["question"]), context=str(r["context"]), answers=[])
                    for i, r in enumerate(rows)]
        if self.task == "tag":
            outside = "O" if "O" in self.labels else self.labels[0]
            return [taskdata.TagExample(tokens=(words := str(r["text"]).split()), tags=[outside] * len(words), line=i + 1)
                    for i, r in enumerate(rows)]
        label: str | float = self.labels[0] if self.labels else 0.0
        return [taskdata.TextExample(text_a=str(r["text"]), text_b=None if self.task == "classify" else str(r["text_pair"]),
                                     label=label, line=i + 1) for i, r in enumerate(rows)]


def as_rows(table: Any) -> list[dict[str, Any]]:
    """A pandas DataFrame, a dict of columns or a list of dicts, as a list of dicts."""
    if hasattr(table, "to_dict"):
        return table.to_dict(orient="records")
    if isinstance(table, dict):
        columns = {k: list(np.asarray(v).reshape(-1)) for k, v in table.items()}
        n = len(next(iter(columns.values()), []))
        return [{k: v[i] for k, v in columns.items()} for i in range(n)]
    return list(table)
