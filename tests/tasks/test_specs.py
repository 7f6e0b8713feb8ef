"""Task specs: which spec a config gets, the heads each builds, and the decoding behind the
tagging and QA scores on hand-made predictions (every expected figure worked out in comments)."""

from __future__ import annotations

import math
from typing import get_args

import numpy as np
import pytest
import torch

from bertpipe.model.bert import BertConfig
from bertpipe.tasks import heads
from bertpipe.tasks.config import FinetuneConfig, Task
from bertpipe.tasks.data import IGNORE_INDEX, QAExample, TagExample
from bertpipe.tasks.heads import SpanLogits
from bertpipe.tasks.specs import SPAN_PAD, SPECS, best_spans, decode_tags, spec_for

BERT = BertConfig(vocab_size=101, hidden_size=36, num_hidden_layers=3, num_attention_heads=3, intermediate_size=52)


def test_every_task_type_has_a_spec_under_its_name():
    assert set(SPECS) == set(get_args(Task))
    assert all(spec.name == name for name, spec in SPECS.items())
    assert {name: spec.main_metric for name, spec in SPECS.items()} == {
        "classify": "accuracy", "pair": "accuracy", "qa": "f1", "tag": "entity_f1"}


@pytest.mark.parametrize("task", ["classify", "pair"])
def test_regression_variant_has_one_output_no_vocabulary_and_mse(task):
    spec = spec_for(FinetuneConfig(task=task, regression=True))
    assert not spec.labelled and spec.n_outputs(None) == 1 and spec.main_metric == "pearson"
    out, y = torch.tensor([[1.0], [2.0], [3.0]]), torch.tensor([1.0, 2.0, 5.0])
    assert spec.loss(out, {"labels": y}).item() == pytest.approx(4 / 3)  # (0 + 0 + 2^2) / 3
    # p = 1, 2, 3 (mean 2), y = 1, 2, 5 (mean 8/3): cov sum = (-1)(-5/3) + 0 + (1)(7/3) = 4,
    # sum sq p = 2, sum sq y = 25/9 + 4/9 + 49/9 = 78/9, r = 4 / sqrt(2 * 78/9)
    scores = spec.score(FinetuneConfig(), out.numpy(), {"labels": y.numpy()}, [], None)
    assert scores["pearson"] == pytest.approx(4 / math.sqrt(2 * 78 / 9)) and scores["mse"] == pytest.approx(4 / 3)
    labelled = spec_for(FinetuneConfig(task=task))
    assert labelled.labelled and labelled.n_outputs(["a", "b", "c"]) == 3 and labelled.main_metric == "accuracy"


def test_regression_is_ignored_by_tasks_without_a_variant():
    assert spec_for(FinetuneConfig(task="tag", regression=True)) is SPECS["tag"]


@pytest.mark.parametrize("task,features,head", [
    ("classify", None, heads.SequenceClassifier), ("pair", "last", heads.MLPClassifier), ("qa", None, heads.SpanExtractor),
    ("tag", None, heads.TokenTagger), ("tag", "sum_all", heads.BiLSTMTagger)])
def test_each_spec_builds_its_head(task, features, head):
    cfg = FinetuneConfig(task=task, features=features, pooling="mean")
    model = spec_for(cfg).build_head(BERT, 3, cfg)
    assert type(model) is head
    if hasattr(model, "pooling"):
        assert model.pooling == "mean"


def test_qa_has_no_feature_based_head():
    cfg = FinetuneConfig(task="qa", features="last")
    with pytest.raises(ValueError, match="'qa' has no feature-based head.*covers classify, pair, tag"):
        spec_for(cfg)
    with pytest.raises(ValueError, match="'qa' has no feature-based head"):
        SPECS["qa"].build_head(BERT, 0, cfg)


def test_tag_decoding_reads_first_pieces_and_leaves_cut_words_o():
    labels = ["B-loc", "I-loc", "O"]
    ex = TagExample(tokens=["new", "york", "is", "big", "city"], tags=["B-loc", "I-loc", "O", "O", "B-loc"], line=1)
    # [CLS] new york is bi ##g [SEP]: "city" was cut; "##g" continues "big" and carries no label
    data = {"labels": np.array([[IGNORE_INDEX, 0, 1, 2, 2, IGNORE_INDEX, IGNORE_INDEX]]),
            "word_ids": np.array([[-1, 0, 1, 2, 3, 3, -1]])}
    pred = np.zeros((1, 7, 3))
    for pos, tag in enumerate([2, 0, 1, 2, 2, 0, 2]):  # argmax per position; "##g" would say B-loc
        pred[0, pos, tag] = 1.0
    assert decode_tags(pred, data, [ex], labels) == [["B-loc", "I-loc", "O", "O", "O"]]
    # true entities: loc "new york", loc "city"; predicted: loc "new york". P = 1/1, R = 1/2,
    # F1 = 2 * 1 * 0.5 / 1.5 = 2/3; words right: 4 of 5 ("city" predicted O)
    scores = SPECS["tag"].score(FinetuneConfig(task="tag"), pred, data, [ex], labels)
    assert scores == pytest.approx({"precision": 1.0, "recall": 0.5, "entity_f1": 2 / 3, "accuracy": 0.8})


def test_best_span_is_valid_in_context_and_short_enough():
    ctx = "the cat sat on mats"
    ex = QAExample(qid="q1", question="what?", context=ctx, answers=[("sat on", 8)])
    # [CLS] what [SEP] the cat sat on mats [SEP]; "mats" is at its max context in another window
    offsets = np.full((1, 9, 2), -1)
    offsets[0, 3:8] = [(0, 3), (4, 7), (8, 11), (12, 14), (15, 19)]
    max_context = np.zeros((1, 9), bool)
    max_context[0, 3:7] = True
    data = {"offsets": offsets, "max_context": max_context, "example_index": np.array([0])}
    start = np.full((1, 9), SPAN_PAD)
    end = np.full((1, 9), SPAN_PAD)
    start[0, 3:8] = [-5, 4, 3, 0, 9]
    end[0, 3:8] = [8, 0, 1, 3, 9]
    # best scores: mats..mats 18 (not max context), cat..the 12 (end before start),
    # cat..on 7 (3 pieces > 2), then sat..on 3 + 3 = 6
    assert best_spans(SpanLogits(start, end), data, [ex], max_answer_length=2) == {"q1": "sat on"}
    assert best_spans(SpanLogits(start, end), data, [ex], max_answer_length=3) == {"q1": "cat sat on"}
    scores = SPECS["qa"].score(FinetuneConfig(task="qa", max_answer_length=2), SpanLogits(start, end), data, [ex], None)
    assert scores == pytest.approx({"exact_match": 100.0, "f1": 100.0})


def test_batch_outputs_come_back_at_full_width():
    span = SPECS["qa"].collect(SpanLogits(torch.zeros(2, 3), torch.ones(2, 3)), 5)
    assert span.start.shape == span.end.shape == (2, 5)
    assert (span.start[:, 3:] == SPAN_PAD).all() and (span.end[:, :3] == 1).all()
    tags = SPECS["tag"].collect(torch.ones(2, 3, 4), 5)
    assert tags.shape == (2, 5, 4) and (tags[:, 3:] == 0).all() and (tags[:, :3] == 1).all()
    assert SPECS["pair"].collect(torch.ones(2, 3), 5).shape == (2, 3)  # one row per sequence: nothing to pad
