"""A fine-tuned model answering raw text (``bertpipe.tasks.predict``): for every task type, its
answers on the eval file score exactly what the fine-tuning's evaluation recorded."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bertpipe.model.bert import BertConfig, BertForPreTraining
from bertpipe.model.hf import save_checkpoint
from bertpipe.tasks import metrics
from bertpipe.tasks.finetune import FinetuneConfig, finetune
from bertpipe.tasks.predict import FineTuned, as_rows, bundle
from bertpipe.tasks.specs import spec_for
from tests.conftest import ROOT, minilm_dir

TASKS = ROOT / "tests" / "fixtures" / "tasks"
FILES = {"classify": "finefoods.tsv", "pair": "bible.tsv", "qa": "squad.json", "tag": "wnut16.conll"}


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    torch.manual_seed(7)
    cfg = BertConfig(vocab_size=30522, hidden_size=36, num_hidden_layers=2, num_attention_heads=3, intermediate_size=60)
    out = tmp_path_factory.mktemp("ckpt") / "c"
    save_checkpoint(BertForPreTraining(cfg), out, minilm_dir() / "vocab.txt")
    return out


def rows_and_truth(cfg: FinetuneConfig):
    """The eval file as raw rows, and what each row's answer should be."""
    examples = spec_for(cfg).read(cfg, TASKS / FILES[cfg.task])
    if cfg.task == "qa":
        return [{"question": e.question, "context": e.context} for e in examples], [[a for a, _ in e.answers] for e in examples]
    if cfg.task == "tag":
        return [{"text": " ".join(e.tokens)} for e in examples], [e.tags for e in examples]
    return [{"text": e.text_a, "text_pair": e.text_b} for e in examples], [e.label for e in examples]


@pytest.mark.parametrize("task", ["classify", "pair", "qa", "tag", "regression"])
def test_answers_score_what_the_evaluation_recorded(ckpt, tmp_path, task):
    cfg = FinetuneConfig(task="pair" if task == "regression" else task, regression=task == "regression", lr=3e-3,
                         epochs=40 if task == "tag" else 4,  # the tagger needs longer to find any entity
                         batch_size=4, max_seq_length=96, doc_stride=32, max_query_length=16)
    f = TASKS / FILES[cfg.task]
    if task == "regression":  # the pair file's labels as numbers
        lines = f.read_text().splitlines()
        f = tmp_path / "scores.tsv"
        f.write_text("\n".join([lines[0], *("\t".join([str(float(l.split("\t")[0]) * 2.5), *l.split("\t")[1:]]) for l in lines[1:])]))
    m = finetune(cfg, ckpt, f, f, tmp_path / "ft")
    model = FineTuned.load(bundle(tmp_path / "ft", ckpt, tmp_path / "bundle"))
    rows, truth = rows_and_truth(cfg) if task != "regression" else (None, None)
    if task == "regression":
        examples = spec_for(cfg).read(cfg, f)
        rows, truth = [{"text": e.text_a, "text_pair": e.text_b} for e in examples], [e.label for e in examples]
    answers = model.predict(rows)
    assert len(answers) == len(rows)
    if task in ("classify", "pair"):
        assert json.loads((tmp_path / "ft" / "head.json").read_text())["labels"] == sorted(set(truth))
        assert np.mean([a["label"] == t for a, t in zip(answers, truth)]) == pytest.approx(m["accuracy"])
    elif task == "regression":
        assert np.corrcoef([a["score"] for a in answers], truth)[0, 1] == pytest.approx(m["pearson"], abs=1e-5)
    elif task == "tag":
        assert metrics.entity_scores(truth, [a["tags"].split() for a in answers])["entity_f1"] == pytest.approx(m["entity_f1"])
        assert m["entity_f1"] > 0  # entities were found, so a wrong decoding would show
    else:
        scores = metrics.squad_scores({str(i): a["answer"] for i, a in enumerate(answers)},
                                      {str(i): t for i, t in enumerate(truth)})
        assert scores["f1"] == pytest.approx(m["f1"]) and scores["exact_match"] == pytest.approx(m["exact_match"])


def test_rows_come_as_frames_dicts_or_lists_and_missing_columns_are_named(ckpt, tmp_path):
    import pandas as pd

    cfg = FinetuneConfig(task="pair", epochs=1, batch_size=4, max_seq_length=32)
    finetune(cfg, ckpt, TASKS / FILES["pair"], TASKS / FILES["pair"], tmp_path / "ft")
    model = FineTuned.load(bundle(tmp_path / "ft", ckpt, tmp_path / "b"))
    rows = [{"text": "in the beginning", "text_pair": "at first"}, {"text": "light", "text_pair": "dark"}]
    assert as_rows(pd.DataFrame(rows)) == rows == as_rows({"text": ["in the beginning", "light"], "text_pair": ["at first", "dark"]})
    assert model.predict(as_rows(pd.DataFrame(rows))) == model.predict(rows)
    with pytest.raises(ValueError, match="rows lack text_pair"):
        model.predict([{"text": "only one side"}])
