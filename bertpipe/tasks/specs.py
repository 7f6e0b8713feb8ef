"""The four task types as data: one ``TaskSpec`` per type, so fine-tuning has no task switches.

A spec says, for classify (single sentences), pair (sentence pairs), qa (extractive spans) and
tag (token tagging), how to read a task file, whether the task has a label vocabulary, how to
encode examples into arrays, which head to build (fine-tuned, or on frozen features), the
loss of a batch, how one batch's outputs become numpy arrays at the arrays' full width, how
predictions are scored and which metric ranks runs, and the per-example columns its metrics
are sums or means of (``per_example`` with ``recipes``, so an evaluation can be bootstrapped
over its examples). ``spec_for(cfg)`` picks the spec for a
config; ``regression=True`` on classify/pair picks the regression variant (float labels, one
output, MSE, Pearson), as before it is ignored for qa and tag.

Trade-off: a frozen dataclass of plain functions rather than a class hierarchy. Each variant
is one ``SPECS`` entry and a new task type is one more, built from existing pieces with
``dataclasses.replace``; the price is that a spec's functions share one loose signature
(``cfg`` comes along even where only one field of it is used).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch.nn.functional as F
from tokenizers import Tokenizer
from torch import Tensor, nn

from bertpipe.model.bert import BertConfig
from bertpipe.tasks import data as taskdata
from bertpipe.tasks import heads, metrics
from bertpipe.tasks.config import FinetuneConfig, Task
from bertpipe.tasks.data import IGNORE_INDEX
from bertpipe.tasks.heads import SpanLogits

Arrays = dict[str, np.ndarray]  # an encoded task file (``bertpipe.tasks.data`` encoders)
Batch = dict[str, Tensor]  # rows of ``Arrays`` as tensors
Prediction = Any  # np.ndarray (B, C) or (B, T, C); SpanLogits of (B, T) arrays for qa
SPAN_PAD = -1e4  # qa score of padding positions: never an answer
HeadBuilder = Callable[[BertConfig, int, FinetuneConfig], nn.Module]


def pad_width(x: np.ndarray, width: int, value: float) -> np.ndarray:
    """Per-position outputs (B, t[, C]) of a cut batch back to the arrays' full width."""
    pad = [(0, 0), (0, width - x.shape[1])] + [(0, 0)] * (x.ndim - 2)
    return np.pad(x, pad, constant_values=value)


def concat_outputs(outs: Sequence[Prediction]) -> Prediction:
    """The per-batch outputs of ``TaskSpec.collect`` joined along the rows."""
    if isinstance(outs[0], SpanLogits):
        return SpanLogits(start=np.concatenate([o.start for o in outs]), end=np.concatenate([o.end for o in outs]))
    return np.concatenate(outs)


def take_rows(pred: Prediction, rows: np.ndarray) -> Prediction:
    """The rows ``rows`` of a prediction, in that order."""
    if isinstance(pred, SpanLogits):
        return SpanLogits(start=pred.start[rows], end=pred.end[rows])
    return pred[rows]


@dataclass(frozen=True)
class TaskSpec:
    """What differs between task types (see the module docstring)."""

    name: Task
    read: Callable[[FinetuneConfig, Path], list]  # the examples of a task file
    labelled: bool  # the labels form a vocabulary (the training file's, sorted)
    encode: Callable[[FinetuneConfig, Tokenizer, Sequence, list[str] | None], Arrays]
    head: HeadBuilder  # the fine-tuned head on the encoder
    feature_head: HeadBuilder | None  # the head on frozen features; None: the task has no feature-based route
    loss: Callable[[Any, Batch], Tensor]  # (model output, batch) -> scalar
    collect: Callable[[Any, int], Prediction]  # one batch's model output -> numpy at the arrays' full width
    score: Callable[[FinetuneConfig, Prediction, Arrays, Sequence, list[str] | None], dict[str, float]]
    main_metric: str  # the metric that ranks seeds' means across a grid
    outputs: int | None = None  # a fixed number of outputs (regression: 1); None: one per label
    # Per-example columns of the eval set (same signature as ``score``), and how each metric
    # follows from them: metric -> (kind, columns), kind "mean" (of one column), "ratio"
    # (sum / sum) or "f1" (2 sum(correct) / (sum(true) + sum(predicted))). Metrics that are
    # not such sums (MCC, macro F1, Pearson) have no recipe.
    per_example: Callable[[FinetuneConfig, Prediction, Arrays, Sequence, list[str] | None], dict[str, np.ndarray]] | None = None
    recipes: dict[str, tuple[str, tuple[str, ...]]] = field(default_factory=dict)

    def n_outputs(self, labels: list[str] | None) -> int:
        return self.outputs if self.outputs is not None else len(labels or [])

    def build_head(self, bcfg: BertConfig, n_outputs: int, cfg: FinetuneConfig) -> nn.Module:
        """The task model, randomly initialized: fine-tuned, or on ``cfg.features`` of a frozen encoder."""
        if cfg.features is None:
            return self.head(bcfg, n_outputs, cfg)
        if self.feature_head is None:
            raise _no_feature_head(self.name, cfg.features)
        return self.feature_head(bcfg, n_outputs, cfg)


# ---------------------------------------------------------------- reading and encoding


def _read_single(cfg: FinetuneConfig, path: Path) -> list[taskdata.TextExample]:
    return taskdata.read_single_tsv(path, float_labels=cfg.regression)


def _read_pair(cfg: FinetuneConfig, path: Path) -> list[taskdata.TextExample]:
    return taskdata.read_pair_tsv(path, cfg.pair_layout, float_labels=cfg.regression)


def _read_squad(cfg: FinetuneConfig, path: Path) -> list[taskdata.QAExample]:
    return taskdata.read_squad(path)


def _read_conll(cfg: FinetuneConfig, path: Path) -> list[taskdata.TagExample]:
    return taskdata.read_conll(path)


def _encode_pairs(cfg: FinetuneConfig, tok: Tokenizer, examples: Sequence, labels: list[str] | None) -> Arrays:
    return taskdata.encode_pairs(tok, examples, cfg.max_seq_length, labels)


def _encode_tags(cfg: FinetuneConfig, tok: Tokenizer, examples: Sequence, labels: list[str] | None) -> Arrays:
    return taskdata.encode_tags(tok, examples, labels, cfg.max_seq_length)


def _encode_squad(cfg: FinetuneConfig, tok: Tokenizer, examples: Sequence, labels: list[str] | None) -> Arrays:
    return taskdata.encode_squad(tok, examples, cfg.max_seq_length, cfg.doc_stride, cfg.max_query_length)


# ---------------------------------------------------------------- heads and losses


def _sequence_head(bcfg: BertConfig, n: int, cfg: FinetuneConfig) -> nn.Module:
    return heads.SequenceClassifier(bcfg, n, pooling=cfg.pooling)


def _sequence_features_head(bcfg: BertConfig, n: int, cfg: FinetuneConfig) -> nn.Module:
    return heads.MLPClassifier(bcfg, n, cfg.features, pooling=cfg.pooling)


def _span_head(bcfg: BertConfig, n: int, cfg: FinetuneConfig) -> nn.Module:
    return heads.SpanExtractor(bcfg)


def _token_head(bcfg: BertConfig, n: int, cfg: FinetuneConfig) -> nn.Module:
    return heads.TokenTagger(bcfg, n)


def _token_features_head(bcfg: BertConfig, n: int, cfg: FinetuneConfig) -> nn.Module:
    return heads.BiLSTMTagger(bcfg, n, cfg.features)


def _class_loss(logits: Tensor, b: Batch) -> Tensor:
    return F.cross_entropy(logits, b["labels"])  # logits (B, C)


def _regression_loss(out: Tensor, b: Batch) -> Tensor:
    return F.mse_loss(out.squeeze(-1), b["labels"].float())  # out (B, 1)


def _token_loss(logits: Tensor, b: Batch) -> Tensor:
    return F.cross_entropy(logits.flatten(0, 1), b["labels"].flatten(), ignore_index=IGNORE_INDEX)  # logits (B, T, C)


def _span_loss(out: SpanLogits, b: Batch) -> Tensor:
    return (F.cross_entropy(out.start, b["start_positions"]) + F.cross_entropy(out.end, b["end_positions"])) / 2


# ---------------------------------------------------------------- prediction


def _per_sequence(out: Tensor, width: int) -> np.ndarray:
    return out.float().cpu().numpy()  # (B, C)


def _per_token(out: Tensor, width: int) -> np.ndarray:
    return pad_width(out.float().cpu().numpy(), width, 0.0)  # (B, width, C)


def _per_span(out: SpanLogits, width: int) -> SpanLogits:
    return SpanLogits(*(pad_width(o.float().cpu().numpy(), width, SPAN_PAD) for o in out))  # (B, width) each


# ---------------------------------------------------------------- scoring


def _score_classes(cfg: FinetuneConfig, pred: np.ndarray, data: Arrays, examples: Sequence,
                   labels: list[str] | None) -> dict[str, float]:
    y, p = data["labels"], pred.argmax(-1)
    out = {"accuracy": metrics.accuracy(y, p), "mcc": metrics.matthews_corrcoef(y, p), "macro_f1": metrics.macro_f1(y, p)}
    if len(labels) == 2:
        out["f1"] = metrics.f1_binary(y, p, positive=1)
    return out


def _score_regression(cfg: FinetuneConfig, pred: np.ndarray, data: Arrays, examples: Sequence,
                      labels: list[str] | None) -> dict[str, float]:
    y, p = data["labels"], pred.squeeze(-1)
    return {"pearson": float(np.corrcoef(p, y)[0, 1]), "mse": float(np.mean((p - y) ** 2))}


def decode_tags(pred: np.ndarray, data: Arrays, examples: Sequence[taskdata.TagExample], labels: list[str]) -> list[list[str]]:
    """One predicted tag per word: the argmax at the word's first piece; words cut by truncation are ``O``."""
    ids = pred.argmax(-1)  # (N, T)
    out = []
    for i, ex in enumerate(examples):
        first_piece = data["labels"][i] != IGNORE_INDEX  # (T,): the first piece of each kept word
        tags = ["O"] * len(ex.tokens)
        for word, tag_id in zip(data["word_ids"][i][first_piece].tolist(), ids[i][first_piece].tolist(), strict=True):
            tags[word] = labels[tag_id]
        out.append(tags)
    return out


def _score_tags(cfg: FinetuneConfig, pred: np.ndarray, data: Arrays, examples: Sequence,
                labels: list[str] | None) -> dict[str, float]:
    true_seqs, pred_seqs = [ex.tags for ex in examples], decode_tags(pred, data, examples, labels)
    flat_true = [t for s in true_seqs for t in s]
    flat_pred = [t for s in pred_seqs for t in s]
    return metrics.entity_scores(true_seqs, pred_seqs) | {"accuracy": metrics.accuracy(flat_true, flat_pred)}


def best_spans(pred: SpanLogits, data: Arrays, examples: Sequence[taskdata.QAExample], max_answer_length: int,
               top: int = 20) -> dict[str, str]:
    """Each answered question's best span over its windows (question id -> text): start <= end,
    length <= ``max_answer_length`` pieces, both inside the context and at max-context positions,
    among the ``top`` starts and ends; the text is cut from the context by the pieces' offsets."""
    char_start, char_end = data["offsets"][..., 0], data["offsets"][..., 1]  # (F, T) each; -1 outside the context
    best: dict[int, tuple[float, str]] = {}  # example index -> (score, text)
    for f in range(len(pred.start)):
        x = int(data["example_index"][f])
        candidates = np.nonzero(data["max_context"][f] & (char_start[f] >= 0))[0]
        if not len(candidates):
            continue
        starts = candidates[np.argsort(-pred.start[f][candidates])[:top]]
        ends = candidates[np.argsort(-pred.end[f][candidates])[:top]]
        for s, e in itertools.product(starts, ends):
            if e < s or e - s + 1 > max_answer_length:
                continue
            score = float(pred.start[f][s] + pred.end[f][e])
            if x not in best or score > best[x][0]:
                best[x] = (score, examples[x].context[char_start[f, s] : char_end[f, e]])
    return {examples[x].qid: text for x, (_, text) in best.items()}


def _score_spans(cfg: FinetuneConfig, pred: SpanLogits, data: Arrays, examples: Sequence,
                 labels: list[str] | None) -> dict[str, float]:
    answers = {e.qid: [text for text, _ in e.answers] for e in examples}
    return metrics.squad_scores(best_spans(pred, data, examples, cfg.max_answer_length), answers)


# ---------------------------------------------------------------- per-example columns


def _examples_classes(cfg: FinetuneConfig, pred: np.ndarray, data: Arrays, examples: Sequence,
                      labels: list[str] | None) -> dict[str, np.ndarray]:
    return {"correct": (pred.argmax(-1) == data["labels"]).astype(np.int8)}


def _examples_regression(cfg: FinetuneConfig, pred: np.ndarray, data: Arrays, examples: Sequence,
                         labels: list[str] | None) -> dict[str, np.ndarray]:
    return {"squared_error": (pred.squeeze(-1) - data["labels"]) ** 2}


def _examples_tags(cfg: FinetuneConfig, pred: np.ndarray, data: Arrays, examples: Sequence,
                   labels: list[str] | None) -> dict[str, np.ndarray]:
    """Per sentence: entities right, gold and predicted (as ``metrics.entity_scores`` counts
    them), words tagged right and words."""
    cols: dict[str, list[int]] = {"correct": [], "n_true": [], "n_pred": [], "words_correct": [], "words": []}
    for ex, guess in zip(examples, decode_tags(pred, data, examples, labels), strict=True):
        gold_spans, guess_spans = metrics.bio_spans(ex.tags), metrics.bio_spans(guess)
        for k, v in (("correct", len(gold_spans & guess_spans)), ("n_true", len(gold_spans)), ("n_pred", len(guess_spans)),
                     ("words_correct", sum(t == g for t, g in zip(ex.tags, guess, strict=True))), ("words", len(ex.tags))):
            cols[k].append(v)
    return {k: np.asarray(v, dtype=np.int32) for k, v in cols.items()}


def _examples_spans(cfg: FinetuneConfig, pred: SpanLogits, data: Arrays, examples: Sequence,
                    labels: list[str] | None) -> dict[str, np.ndarray]:
    """Per question, in percent as ``metrics.squad_scores`` averages them: exact match and F1 (0 unanswered)."""
    found = best_spans(pred, data, examples, cfg.max_answer_length)
    golds = [[text for text, _ in e.answers] for e in examples]
    em = [100.0 * metrics.exact_match(found[e.qid], g) if e.qid in found else 0.0 for e, g in zip(examples, golds, strict=True)]
    f1 = [100.0 * metrics.squad_f1(found[e.qid], g) if e.qid in found else 0.0 for e, g in zip(examples, golds, strict=True)]
    return {"exact_match": np.asarray(em), "f1": np.asarray(f1)}


# ---------------------------------------------------------------- the specs

_SENTENCE = dict(labelled=True, encode=_encode_pairs, head=_sequence_head, feature_head=_sequence_features_head,
                 loss=_class_loss, collect=_per_sequence, score=_score_classes, main_metric="accuracy",
                 per_example=_examples_classes, recipes={"accuracy": ("mean", ("correct",))})
SPECS: dict[Task, TaskSpec] = {
    "classify": TaskSpec(name="classify", read=_read_single, **_SENTENCE),
    "pair": TaskSpec(name="pair", read=_read_pair, **_SENTENCE),
    "qa": TaskSpec(name="qa", read=_read_squad, labelled=False, encode=_encode_squad, head=_span_head, feature_head=None,
                   loss=_span_loss, collect=_per_span, score=_score_spans, main_metric="f1", per_example=_examples_spans,
                   recipes={"exact_match": ("mean", ("exact_match",)), "f1": ("mean", ("f1",))}),
    "tag": TaskSpec(name="tag", read=_read_conll, labelled=True, encode=_encode_tags, head=_token_head,
                    feature_head=_token_features_head, loss=_token_loss, collect=_per_token, score=_score_tags,
                    main_metric="entity_f1", per_example=_examples_tags,
                    recipes={"entity_f1": ("f1", ("correct", "n_true", "n_pred")), "precision": ("ratio", ("correct", "n_pred")),
                             "recall": ("ratio", ("correct", "n_true")), "accuracy": ("ratio", ("words_correct", "words"))}),
}
# ``regression=True``: float labels, no vocabulary, one output trained with MSE, ranked by Pearson's r.
REGRESSION_SPECS: dict[Task, TaskSpec] = {
    name: replace(SPECS[name], labelled=False, loss=_regression_loss, score=_score_regression, main_metric="pearson", outputs=1,
                  per_example=_examples_regression, recipes={"mse": ("mean", ("squared_error",))})
    for name in ("classify", "pair")
}


def spec_for(cfg: FinetuneConfig) -> TaskSpec:
    """The spec for ``cfg``'s task (its regression variant with ``regression=True``, where there is one).

    A feature-based config for a task without a feature-based head is an error here, before any
    file is read."""
    spec = (REGRESSION_SPECS.get(cfg.task) if cfg.regression else None) or SPECS[cfg.task]
    if cfg.features is not None and spec.feature_head is None:
        raise _no_feature_head(cfg.task, cfg.features)
    return spec


def _no_feature_head(task: str, features: str | None) -> ValueError:
    covered = ", ".join(name for name, spec in SPECS.items() if spec.feature_head is not None)
    return ValueError(f"task {task!r} has no feature-based head (features={features!r}); the feature-based route covers {covered}")
